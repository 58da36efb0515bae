package lease

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// What an operator does by hand: read and write the config as JSON,
// reserve a subnet for a node, release one. The data is the same as
// Acquire's, so flannel and `etcdctl` see the same thing.

var (
	// ErrNotFound is wrapped when a key an operation needs is absent.
	ErrNotFound = errors.New("not found")
	// ErrHeld is wrapped by Reserve when another PublicIP holds the
	// subnet, or a key overlaps it.
	ErrHeld = errors.New("subnet is taken")
	// ErrLeased is wrapped by Release when the key is on a live etcd
	// lease, that is, a node holds it now, and force is false.
	ErrLeased = errors.New("subnet is leased")
)

// ConfigJSON returns <prefix>/config as stored, valid or not. A missing
// key is an error wrapping ErrNotFound.
func (r *Registry) ConfigJSON(ctx context.Context) ([]byte, error) {
	key := r.ConfigKey()
	resp, err := r.cli.Get(ctx, key)
	if err != nil {
		return nil, fmt.Errorf("get %s: %w", key, err)
	}
	if len(resp.Kvs) == 0 {
		return nil, fmt.Errorf("no config at %s: %w", key, ErrNotFound)
	}
	return resp.Kvs[0].Value, nil
}

// PutConfigJSON checks b with ParseConfig and, only if it passes, writes
// it to <prefix>/config. It writes b itself (compacted), not Config's
// re-encoding, so fields vxrouter ignores but flannel reads (EnableIPv6,
// IPv6Network, Backend options) stay.
func (r *Registry) PutConfigJSON(ctx context.Context, b []byte) (*Config, error) {
	key := r.ConfigKey()
	c, err := ParseConfig(b)
	if err != nil {
		return nil, err
	}
	var compact bytes.Buffer
	if err := json.Compact(&compact, b); err != nil {
		return nil, fmt.Errorf("config: %w", err) // ParseConfig accepted it, so unreachable
	}
	if _, err := r.cli.Put(ctx, key, compact.String()); err != nil {
		return nil, fmt.Errorf("put %s: %w", key, err)
	}
	return c, nil
}

// Reserve makes subnet a reservation for the node at publicIP: a key with
// no etcd lease, which nobody else takes and which that node's Acquire
// prefers to anything else. The value is vxlan attrs with cfg's VNI and
// vtepMAC; a nil vtepMAC is taken from the key itself when it is already
// that node's, else from another lease of that node, else it is an error
// (peers need the MAC to reach the node before it starts).
//
// The subnet must be one cfg hands out. If the key exists it must belong
// to publicIP: a lease of that node becomes a reservation in place (the
// running node follows it; its old etcd lease is revoked if it holds
// nothing else). Another PublicIP's key, or any key overlapping subnet,
// is refused with an error wrapping ErrHeld. The write is a transaction
// on what was read, retried if the key changed meanwhile.
//
// In an IPv6-only overlay subnet and publicIP are IPv6; a dual-stack
// overlay's reservation holds a subnet of each family: ReserveLease.
func (r *Registry) Reserve(ctx context.Context, cfg *Config, subnet netip.Prefix, publicIP netip.Addr, vtepMAC net.HardwareAddr) (*Lease, error) {
	want := &Lease{Subnet: subnet, Attrs: Attrs{PublicIP: publicIP, VtepMAC: vtepMAC}}
	if subnet.IsValid() && subnet.Addr().Is6() {
		want = &Lease{IPv6Subnet: subnet, Attrs: Attrs{PublicIPv6: publicIP, VtepMAC: vtepMAC}}
	}
	return r.ReserveLease(ctx, cfg, want)
}

// ReserveLease is Reserve for want's subnets (one of each family cfg
// carries), for the node at want's PublicIP and PublicIPv6 (what a family
// needs), with want's VtepMAC for each family's VTEP (nil: as the node's
// current lease has them). The other fields of want are not used.
func (r *Registry) ReserveLease(ctx context.Context, cfg *Config, want *Lease) (*Lease, error) {
	name := want.KeyName()
	if !want.Subnet.IsValid() && !want.IPv6Subnet.IsValid() {
		return nil, errors.New("reserve: no subnet")
	}
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("reserve %s: %w", name, err)
	}
	if err := cfg.checkReservation(want); err != nil {
		return nil, fmt.Errorf("reserve %s: %w", name, err)
	}
	if mac := want.Attrs.VtepMAC; mac != nil && len(mac) != 6 {
		return nil, fmt.Errorf("reserve %s: VTEP MAC %s is not 6 bytes", name, mac)
	}
	for range maxAcquireAttempts {
		l, err := r.tryReserve(ctx, cfg, want)
		if errors.Is(err, errRace) {
			continue
		}
		return l, err
	}
	return nil, fmt.Errorf("reserve %s: the key kept changing under us; try again", name)
}

// checkReservation says what is wrong with want's subnets and addresses
// for cfg.
func (c *Config) checkReservation(want *Lease) error {
	for _, f := range []struct {
		on            bool
		subnet        netip.Prefix
		pool          pool
		family, field string
		network       netip.Prefix
		ip            netip.Addr
		is4           bool
	}{
		{c.IPv4Enabled(), want.Subnet, c.pool4(), "IPv4", "Network", c.Network, want.Attrs.PublicIP, true},
		{c.IPv6Enabled(), want.IPv6Subnet, c.pool6(), "IPv6", "IPv6Network", c.IPv6Network, want.Attrs.PublicIPv6, false},
	} {
		switch {
		case !f.on && f.subnet.IsValid():
			return fmt.Errorf("the config carries no %s, so the reservation can hold no %s subnet", f.family, f.family)
		case !f.on:
			continue
		case !f.subnet.IsValid():
			return fmt.Errorf("the config carries %s (%s %s): give an %s subnet too", f.family, f.field, f.network, f.family)
		case !f.pool.contains(f.subnet):
			return fmt.Errorf("%s is not a subnet the config hands out (/%d subnets of %s from %s to %s)",
				f.subnet, f.pool.bits, f.network, f.pool.min, f.pool.max)
		case !f.ip.IsValid() || f.ip.Is4() != f.is4 || f.ip.Is4In6() || f.ip.IsUnspecified() || f.ip.Zone() != "":
			what := "PublicIP"
			if !f.is4 {
				what = "PublicIPv6"
			}
			return fmt.Errorf("%s %v is not a usable %s address", what, f.ip, f.family)
		}
	}
	return nil
}

func (r *Registry) tryReserve(ctx context.Context, cfg *Config, want *Lease) (*Lease, error) {
	name := want.KeyName()
	entries, _, err := r.list(ctx, func(key string, err error) {
		r.log.Warn("skipping subnet key with a bad name", "key", key, "err", err)
	})
	if err != nil {
		return nil, fmt.Errorf("reserve %s: %w", name, err)
	}
	key := r.LeaseKey(want)
	owner := want.Attrs.Owner()
	var own *entry
	var other *Attrs // another lease of the same node, to take the MACs from
	for i := range entries {
		e := &entries[i]
		if e.key == key {
			own = e
			continue
		}
		for _, p := range want.Subnets() {
			if overlapsEntry(e, p) {
				return nil, fmt.Errorf("reserve %s: %w: key %s, of %s, overlaps it; release it first", name, ErrHeld, e.key, e.owner())
			}
		}
		if e.attrsErr == nil && e.attrs.Owner() == owner && other == nil {
			other = &e.attrs
		}
	}

	attrs := Attrs{PublicIP: want.Attrs.PublicIP, PublicIPv6: want.Attrs.PublicIPv6, BackendType: "vxlan", VNI: cfg.Backend.VNI}
	if !cfg.IPv4Enabled() {
		attrs.PublicIP = netip.Addr{}
	}
	mac := want.Attrs.VtepMAC
	from := other
	cmp := clientv3.Compare(clientv3.CreateRevision(key), "=", 0)
	if own != nil {
		switch {
		case own.attrsErr != nil:
			return nil, fmt.Errorf("reserve %s: %w: key %s holds a value that does not parse (%v); release it first", name, ErrHeld, key, own.attrsErr)
		case own.attrs.Owner() != owner:
			return nil, fmt.Errorf("reserve %s: %w by %s; release it first", name, ErrHeld, own.owner())
		case own.leaseID != 0 && mac != nil && !sameVTEPs(&own.attrs, mac):
			// Peers would send to a MAC the running node does not answer.
			return nil, fmt.Errorf("reserve %s: the node at %s holds it with VTEP MAC %s, not %s; leave the MAC out to keep the node's own",
				name, owner, vtepMACs(&own.attrs), mac)
		}
		attrs = own.attrs
		from = &own.attrs
		cmp = clientv3.Compare(clientv3.ModRevision(key), "=", own.modRev)
	}
	if cfg.IPv4Enabled() {
		switch {
		case mac != nil:
			attrs.VtepMAC = mac
		case from != nil && len(from.VtepMAC) == 6:
			attrs.VtepMAC = from.VtepMAC
		default:
			return nil, fmt.Errorf("reserve %s: no VTEP MAC for %s: no lease of that node to take it from, so give it (a vxrouter node keeps it in <state-dir>/vtep-mac)", name, owner)
		}
	}
	if cfg.IPv6Enabled() {
		d := &VXLANData{VNI: cfg.Backend.VNI}
		switch {
		case mac != nil:
			d.VtepMAC = mac
		case from != nil && from.BackendV6Data != nil:
			c := *from.BackendV6Data
			d = &c
		default:
			return nil, fmt.Errorf("reserve %s: no IPv6 VTEP MAC for %s: no lease of that node with BackendV6Data to take it from, so give it (a vxrouter node keeps it in <state-dir>/vtep-mac; a flannel node's is flannel-v6.<VNI>'s)", name, owner)
		}
		attrs.BackendV6Data = d
	}
	value, err := attrs.MarshalJSON()
	if err != nil {
		return nil, fmt.Errorf("reserve %s: %w", name, err)
	}
	resp, err := r.cli.Txn(ctx).If(cmp).Then(clientv3.OpPut(key, string(value))).Commit()
	if err != nil {
		return nil, fmt.Errorf("reserve %s: put %s: %w", name, key, err)
	}
	if !resp.Succeeded {
		return nil, errRace
	}
	if own != nil && own.leaseID != 0 {
		r.revokeIfEmpty(ctx, own.leaseID)
	}
	r.log.Info("reserved subnet", "key", key, "owner", owner, "vtep-mac", vtepMACs(&attrs))
	return &Lease{Subnet: want.Subnet, IPv6Subnet: want.IPv6Subnet, Attrs: attrs}, nil
}

// overlapsEntry reports whether a key's part of p's family overlaps p.
func overlapsEntry(e *entry, p netip.Prefix) bool {
	q := e.subnet
	if p.Addr().Is6() {
		q = e.subnet6
	}
	return q.IsValid() && q.Overlaps(p)
}

// sameVTEPs reports whether every VTEP of a has MAC mac.
func sameVTEPs(a *Attrs, mac net.HardwareAddr) bool {
	if a.VtepMAC != nil && !bytes.Equal(a.VtepMAC, mac) {
		return false
	}
	return a.BackendV6Data == nil || bytes.Equal(a.BackendV6Data.VtepMAC, mac)
}

// vtepMACs names a's VTEP MACs: "d6:51:2e:80:5c:69", or two joined by
// "/" (IPv4's, IPv6's) when they differ, as on a flannel node.
func vtepMACs(a *Attrs) string {
	var out []string
	for _, m := range []net.HardwareAddr{a.VtepMAC, v6MAC(a)} {
		if m != nil && !slices.ContainsFunc(out, func(s string) bool { return s == m.String() }) {
			out = append(out, m.String())
		}
	}
	return strings.Join(out, "/")
}

func v6MAC(a *Attrs) net.HardwareAddr {
	if a.BackendV6Data == nil {
		return nil
	}
	return a.BackendV6Data.VtepMAC
}

// owner describes who holds e, for errors: "PublicIP 10.0.0.2 (etcd
// lease 694d77aa9e38260f)".
func (e *entry) owner() string {
	who := "a value that does not parse"
	switch {
	case e.attrsErr != nil:
	case e.attrs.PublicIP.IsValid():
		who = "PublicIP " + e.attrs.PublicIP.String()
	default:
		who = "PublicIPv6 " + e.attrs.PublicIPv6.String()
	}
	if e.leaseID == 0 {
		return who + " (a reservation)"
	}
	return fmt.Sprintf("%s (etcd lease %x)", who, int64(e.leaseID))
}

// Release deletes the key of subnet, whatever its value: every key with
// subnet as its IPv4 or its IPv6 part (a dual-stack key goes whole). A reservation, a key whose etcd
// lease has ended and a key whose value does not parse go at once. A key
// on a live etcd lease belongs to a running (or recently stopped) node:
// without force that is an error wrapping ErrLeased, which says whose and
// until when. With force the key is deleted and its etcd lease revoked if
// it holds nothing else; a node still running notices within moments and
// acquires again, most likely this same subnet, so stop the node first
// to free the subnet for good. The delete is a transaction on what was
// read: if the key changed meanwhile, nothing is deleted and the error
// says to look again. It returns the lease as it was.
func (r *Registry) Release(ctx context.Context, subnet netip.Prefix, force bool) (*Lease, error) {
	entries, _, err := r.list(ctx, func(string, error) {})
	if err != nil {
		return nil, fmt.Errorf("release %s: %w", subnet, err)
	}
	var found []*entry
	for i := range entries {
		if e := &entries[i]; subnet.IsValid() && (e.subnet == subnet || e.subnet6 == subnet) {
			found = append(found, e)
		}
	}
	if len(found) == 0 {
		return nil, fmt.Errorf("release %s: no key for it under %s: %w", subnet, r.subnetsDir(), ErrNotFound)
	}
	var cmps []clientv3.Cmp
	var ops []clientv3.Op
	var out *Lease
	for _, e := range found {
		l := e.lease()
		if e.leaseID != 0 {
			if l.Expiration, err = r.expiration(ctx, e.leaseID); err != nil {
				return nil, fmt.Errorf("release %s: %w", subnet, err)
			}
			if left := time.Until(l.Expiration); left > 0 && !force {
				return nil, fmt.Errorf("release %s: %w by %s, %s left: its node renews it, and would take a subnet again at once (most likely this one); stop that node first",
					subnet, ErrLeased, e.owner(), left.Round(time.Second))
			}
		}
		if out == nil || e.canonical {
			out = &l
		}
		cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(e.key), "=", e.modRev))
		ops = append(ops, clientv3.OpDelete(e.key))
	}
	resp, err := r.cli.Txn(ctx).If(cmps...).Then(ops...).Commit()
	if err != nil {
		return nil, fmt.Errorf("release %s: delete: %w", subnet, err)
	}
	if !resp.Succeeded {
		return nil, fmt.Errorf("release %s: the key changed while releasing it; nothing was deleted, look again", subnet)
	}
	for _, e := range found {
		r.revokeIfEmpty(ctx, e.leaseID)
	}
	r.log.Info("released subnet", "subnet", subnet, "owner", out.Attrs.Owner())
	return out, nil
}
