package lease

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
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
func (r *Registry) Reserve(ctx context.Context, cfg *Config, subnet netip.Prefix, publicIP netip.Addr, vtepMAC net.HardwareAddr) (*Lease, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("reserve %s: %w", subnet, err)
	}
	if !cfg.Contains(subnet) {
		return nil, fmt.Errorf("reserve %s: not a subnet the config hands out (/%d subnets of %s from %s to %s)",
			subnet, cfg.SubnetLen, cfg.Network, cfg.SubnetMin, cfg.SubnetMax)
	}
	if !publicIP.Is4() || publicIP.IsUnspecified() {
		return nil, fmt.Errorf("reserve %s: PublicIP %v is not a usable IPv4 address", subnet, publicIP)
	}
	if vtepMAC != nil && len(vtepMAC) != 6 {
		return nil, fmt.Errorf("reserve %s: VTEP MAC %s is not 6 bytes", subnet, vtepMAC)
	}
	for range maxAcquireAttempts {
		l, err := r.tryReserve(ctx, cfg, subnet, publicIP, vtepMAC)
		if errors.Is(err, errRace) {
			continue
		}
		return l, err
	}
	return nil, fmt.Errorf("reserve %s: the key kept changing under us; try again", subnet)
}

func (r *Registry) tryReserve(ctx context.Context, cfg *Config, subnet netip.Prefix, publicIP netip.Addr, mac net.HardwareAddr) (*Lease, error) {
	entries, _, err := r.list(ctx, func(key string, err error) {
		r.log.Warn("skipping subnet key with a bad name", "key", key, "err", err)
	})
	if err != nil {
		return nil, fmt.Errorf("reserve %s: %w", subnet, err)
	}
	key := r.Key(subnet)
	var own *entry
	var otherMAC net.HardwareAddr // from another lease of publicIP
	for i := range entries {
		e := &entries[i]
		if e.key == key {
			own = e
			continue
		}
		if e.subnet.Overlaps(subnet) {
			return nil, fmt.Errorf("reserve %s: %w: key %s, of %s, overlaps it; release it first", subnet, ErrHeld, e.key, e.owner())
		}
		if e.attrsErr == nil && e.attrs.PublicIP == publicIP && len(e.attrs.VtepMAC) == 6 {
			otherMAC = e.attrs.VtepMAC
		}
	}

	attrs := Attrs{PublicIP: publicIP, BackendType: "vxlan", VNI: cfg.Backend.VNI}
	cmp := clientv3.Compare(clientv3.CreateRevision(key), "=", 0)
	if own != nil {
		switch {
		case own.attrsErr != nil:
			return nil, fmt.Errorf("reserve %s: %w: key %s holds a value that does not parse (%v); release it first", subnet, ErrHeld, key, own.attrsErr)
		case own.attrs.PublicIP != publicIP:
			return nil, fmt.Errorf("reserve %s: %w by %s; release it first", subnet, ErrHeld, own.owner())
		case own.leaseID != 0 && mac != nil && !bytes.Equal(mac, own.attrs.VtepMAC):
			// Peers would send to a MAC the running node does not answer.
			return nil, fmt.Errorf("reserve %s: the node at %s holds it with VTEP MAC %s, not %s; leave the MAC out to keep the node's own",
				subnet, publicIP, own.attrs.VtepMAC, mac)
		}
		attrs = own.attrs
		cmp = clientv3.Compare(clientv3.ModRevision(key), "=", own.modRev)
	}
	switch {
	case mac != nil:
		attrs.VtepMAC = mac
	case len(attrs.VtepMAC) == 6:
	case otherMAC != nil:
		attrs.VtepMAC = otherMAC
	default:
		return nil, fmt.Errorf("reserve %s: no VTEP MAC for %s: no lease of that node to take it from, so give it (a vxrouter node keeps it in <state-dir>/vtep-mac)", subnet, publicIP)
	}
	value, err := attrs.MarshalJSON()
	if err != nil {
		return nil, fmt.Errorf("reserve %s: %w", subnet, err)
	}
	resp, err := r.cli.Txn(ctx).If(cmp).Then(clientv3.OpPut(key, string(value))).Commit()
	if err != nil {
		return nil, fmt.Errorf("reserve %s: put %s: %w", subnet, key, err)
	}
	if !resp.Succeeded {
		return nil, errRace
	}
	if own != nil && own.leaseID != 0 {
		r.revokeIfEmpty(ctx, own.leaseID)
	}
	r.log.Info("reserved subnet", "subnet", subnet, "public-ip", publicIP, "vtep-mac", attrs.VtepMAC.String())
	return &Lease{Subnet: subnet, Attrs: attrs}, nil
}

// owner describes who holds e, for errors: "PublicIP 10.0.0.2 (etcd
// lease 694d77aa9e38260f)".
func (e *entry) owner() string {
	who := "a value that does not parse"
	if e.attrsErr == nil {
		who = "PublicIP " + e.attrs.PublicIP.String()
	}
	if e.leaseID == 0 {
		return who + " (a reservation)"
	}
	return fmt.Sprintf("%s (etcd lease %x)", who, int64(e.leaseID))
}

// Release deletes the key of subnet (and flannel's dual-stack key for it,
// if there is one), whatever its value. A reservation, a key whose etcd
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
		if entries[i].subnet == subnet {
			found = append(found, &entries[i])
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
	r.log.Info("released subnet", "subnet", subnet, "public-ip", out.Attrs.PublicIP)
	return out, nil
}
