package lease

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/netip"
	"slices"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// ErrNoFreeSubnet is wrapped by Acquire's error when every subnet in
// SubnetMin..SubnetMax is taken.
var ErrNoFreeSubnet = errors.New("no free subnet")

// errRace means another writer changed the key between our read and our
// transaction; the caller lists again and retries.
var errRace = errors.New("lost the race for the key")

// maxAcquireAttempts bounds the retries after lost races. Each lost race
// means someone else took a subnet, so on a small network the list soon
// shows it full, and on a big one random picks rarely collide twice.
const maxAcquireAttempts = 16

// cleanupTimeout bounds best-effort cleanups (revoking a lease we failed to
// use), which run even when the caller's context has ended.
const cleanupTimeout = 5 * time.Second

// Acquire takes a subnet for attrs, for ttl (DefaultTTL if ttl <= 0), in
// this order:
//  1. a key whose owner (Attrs.Owner: PublicIP, or PublicIPv6 for an
//     IPv6-only node) is attrs': a reservation (no etcd lease) keeps
//     being a reservation and gets its value refreshed; a leased key is
//     moved to a fresh etcd lease with the new value. Both writes are
//     transactions on the key's mod revision. Such a lease that does not
//     fit cfg (Config.Fits: outside its range, or without a subnet of a
//     family cfg carries, or with one of a family it does not) is deleted
//     (flannel does the same; a reservation is left alone), its etcd lease
//     revoked unless something else is on it, and its subnets count as
//     free in the steps below.
//  2. previous (e.g. from subnet.env), if cfg contains it and it is free;
//  3. a random free subnet in SubnetMin..SubnetMax.
//
// In a dual-stack overlay steps 2 and 3 pick an IPv4 and an IPv6 subnet
// each on its own, and the key holds both, as flannel's does. A new key is
// created in a transaction that succeeds only if the key does not exist,
// attached to a fresh etcd lease. A lost race lists again and retries.
// When no subnet is free the error wraps ErrNoFreeSubnet and nothing is
// written. attrs must carry what cfg's families need (a PublicIP for
// IPv4; a PublicIPv6 and BackendV6Data for IPv6; no PublicIP in an
// IPv6-only overlay).
func (r *Registry) Acquire(ctx context.Context, cfg *Config, attrs Attrs, previous netip.Prefix, ttl time.Duration) (*Lease, error) {
	return r.AcquireSubnets(ctx, cfg, attrs, []netip.Prefix{previous}, ttl)
}

// AcquireSubnets is Acquire with the subnets held before in each family
// (subnet.env has both in a dual-stack overlay); invalid ones are left out.
func (r *Registry) AcquireSubnets(ctx context.Context, cfg *Config, attrs Attrs, previous []netip.Prefix, ttl time.Duration) (*Lease, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("acquire subnet: %w", err)
	}
	if err := cfg.checkAttrs(attrs); err != nil {
		return nil, fmt.Errorf("acquire subnet: %w", err)
	}
	value, err := attrs.MarshalJSON()
	if err != nil {
		return nil, fmt.Errorf("acquire subnet: %w", err)
	}
	if ttl <= 0 {
		ttl = DefaultTTL
	}
	ttlSec := int64((ttl + time.Second - 1) / time.Second)
	for range maxAcquireAttempts {
		l, err := r.tryAcquire(ctx, cfg, attrs, string(value), previous, ttlSec)
		if errors.Is(err, errRace) {
			r.log.Debug("lost a race for a subnet; listing again", "err", err)
			continue
		}
		return l, err
	}
	return nil, fmt.Errorf("acquire subnet in %s: lost the race for a free subnet %d times in a row (many nodes starting at once?); try again", cfg.networks(), maxAcquireAttempts)
}

// checkAttrs says what attrs lack for a lease in cfg's families.
func (c *Config) checkAttrs(a Attrs) error {
	switch {
	case c.IPv4Enabled() && !a.PublicIP.IsValid():
		return fmt.Errorf("the overlay carries IPv4 (Network %s), but the lease has no PublicIP", c.Network)
	case !c.IPv4Enabled() && a.PublicIP.IsValid():
		return fmt.Errorf("the overlay is IPv6-only, but the lease has a PublicIP, %s", a.PublicIP)
	case c.IPv6Enabled() && !a.PublicIPv6.IsValid():
		return fmt.Errorf("the overlay carries IPv6 (IPv6Network %s), but the lease has no PublicIPv6", c.IPv6Network)
	case c.IPv6Enabled() && a.BackendType == "vxlan" && a.BackendV6Data == nil:
		return fmt.Errorf("the overlay carries IPv6 (IPv6Network %s), but the lease has no BackendV6Data", c.IPv6Network)
	}
	return nil
}

// networks names the config's networks, for messages: "10.5.0.0/16",
// "10.5.0.0/16 and fd00:5::/48", "fd00:5::/48".
func (c *Config) networks() string {
	switch {
	case !c.IPv6Enabled():
		return c.Network.String()
	case !c.IPv4Enabled():
		return c.IPv6Network.String()
	}
	return c.Network.String() + " and " + c.IPv6Network.String()
}

func (r *Registry) tryAcquire(ctx context.Context, cfg *Config, attrs Attrs, value string, previous []netip.Prefix, ttlSec int64) (*Lease, error) {
	entries, _, err := r.list(ctx, func(string, error) {})
	if err != nil {
		return nil, fmt.Errorf("acquire subnet: %w", err)
	}

	// 1. Our own key. Reservations first: they are an operator's choice.
	var deleted []string // our keys deleted below; they no longer take a subnet
	for _, wantReservation := range []bool{true, false} {
		for i := range entries {
			e := &entries[i]
			if e.attrsErr != nil || !e.canonical || e.attrs.Owner() != attrs.Owner() || (e.leaseID == 0) != wantReservation {
				continue
			}
			if cfg.Fits(e.subnet, e.subnet6) {
				return r.refresh(ctx, e, attrs, value, ttlSec)
			}
			if e.leaseID == 0 {
				r.log.Warn("a reservation for our PublicIP is outside the config's subnets; ignoring it", "key", e.key, "network", cfg.networks(), "subnetLen", cfg.SubnetLen)
				continue
			}
			r.log.Info("deleting our lease that the config no longer contains", "key", e.key, "network", cfg.networks(), "subnetLen", cfg.SubnetLen)
			if err := r.deleteLeased(ctx, e); err != nil {
				return nil, err
			}
			deleted = append(deleted, e.key)
		}
	}
	entries = slices.DeleteFunc(entries, func(e entry) bool { return slices.Contains(deleted, e.key) })

	// 2 and 3, in each family the config carries.
	want := &Lease{}
	for _, fam := range []struct {
		pool  pool
		parts []netip.Prefix
		out   *netip.Prefix
	}{
		{cfg.pool4(), entryParts(entries, false), &want.Subnet},
		{cfg.pool6(), entryParts(entries, true), &want.IPv6Subnet},
	} {
		if !fam.pool.min.IsValid() {
			continue
		}
		subnet, err := r.pick(cfg, fam.pool, fam.parts, previous)
		if err != nil {
			return nil, err
		}
		*fam.out = subnet
	}
	return r.create(ctx, want, attrs, value, ttlSec)
}

// entryParts are the entries' subnets of one family, every key's, even
// one whose value does not parse: creating its key would fail anyway.
func entryParts(entries []entry, v6 bool) []netip.Prefix {
	out := make([]netip.Prefix, 0, len(entries))
	for i := range entries {
		p := entries[i].subnet
		if v6 {
			p = entries[i].subnet6
		}
		if p.IsValid() {
			out = append(out, p)
		}
	}
	return out
}

// pick returns the previous subnet of p's family if p holds it and no key
// overlaps it, else a random free one of p.
func (r *Registry) pick(cfg *Config, p pool, parts []netip.Prefix, previous []netip.Prefix) (netip.Prefix, error) {
	for _, prev := range previous {
		if !prev.IsValid() || prev.Addr().Is4() != p.min.Is4() {
			continue
		}
		switch {
		case !p.contains(prev):
			r.log.Info("previous subnet does not fit the config; ignoring it", "previous", prev, "network", cfg.networks(), "subnetLen", p.bits, "min", p.min, "max", p.max)
		case slices.ContainsFunc(parts, prev.Overlaps):
			r.log.Info("previous subnet is taken; picking another", "previous", prev)
		default:
			return prev, nil
		}
	}
	taken := p.taken(parts)
	total := p.count()
	free := total - taken.count()
	if free == 0 {
		network := cfg.Network
		if !p.min.Is4() {
			network = cfg.IPv6Network
		}
		return netip.Prefix{}, fmt.Errorf("%w in %s (%s..%s, %d taken)", ErrNoFreeSubnet, network, p.min, p.max, total)
	}
	return p.at(taken.nthFree(rand.Uint64N(free))), nil
}

// refresh writes our value over our own key e: a reservation stays one, a
// leased key moves to a fresh etcd lease with the full TTL.
func (r *Registry) refresh(ctx context.Context, e *entry, attrs Attrs, value string, ttlSec int64) (*Lease, error) {
	same := clientv3.Compare(clientv3.ModRevision(e.key), "=", e.modRev)
	if e.leaseID == 0 {
		resp, err := r.cli.Txn(ctx).If(same).Then(clientv3.OpPut(e.key, value)).Commit()
		if err != nil {
			return nil, fmt.Errorf("refresh reservation %s: %w", e.key, err)
		}
		if !resp.Succeeded {
			return nil, fmt.Errorf("refresh reservation %s: %w", e.key, errRace)
		}
		r.log.Info("using our reservation", "key", e.key)
		return &Lease{Subnet: e.subnet, IPv6Subnet: e.subnet6, Attrs: attrs}, nil
	}
	l, err := r.putOnNewLease(ctx, "refresh lease", same, &Lease{Subnet: e.subnet, IPv6Subnet: e.subnet6}, attrs, value, ttlSec)
	if err != nil {
		return nil, err
	}
	// The old etcd lease now holds nothing of ours; drop it rather than
	// leave it for a day in `etcdctl lease list`.
	r.revokeIfEmpty(ctx, e.leaseID)
	r.log.Info("reusing our lease", "key", e.key)
	return l, nil
}

// create takes want's subnets if nobody has their key.
func (r *Registry) create(ctx context.Context, want *Lease, attrs Attrs, value string, ttlSec int64) (*Lease, error) {
	absent := clientv3.Compare(clientv3.CreateRevision(r.LeaseKey(want)), "=", 0)
	l, err := r.putOnNewLease(ctx, "create", absent, want, attrs, value, ttlSec)
	if err != nil {
		return nil, err
	}
	r.log.Info("acquired subnet", subnetsAttr(l), "lease", fmt.Sprintf("%x", int64(l.LeaseID)), "ttl", time.Until(l.Expiration).Round(time.Second))
	return l, nil
}

// subnetsAttr logs a lease's subnets as "subnet", and "ipv6-subnet" when
// it has one.
func subnetsAttr(l *Lease) slog.Attr {
	switch {
	case !l.IPv6Subnet.IsValid():
		return slog.Any("subnet", l.Subnet)
	case !l.Subnet.IsValid():
		return slog.Any("ipv6-subnet", l.IPv6Subnet)
	}
	return slog.Group("", slog.Any("subnet", l.Subnet), slog.Any("ipv6-subnet", l.IPv6Subnet))
}

// putOnNewLease grants an etcd lease of ttlSec and, if cond holds, puts
// value at the key of want's subnets on it. On any failure the new etcd
// lease is revoked so none is left holding nothing; a false cond is
// errRace. op names the write in errors. The key is r.LeaseKey(want):
// Acquire only writes canonical keys.
func (r *Registry) putOnNewLease(ctx context.Context, op string, cond clientv3.Cmp, want *Lease, attrs Attrs, value string, ttlSec int64) (*Lease, error) {
	key := r.LeaseKey(want)
	g, err := r.cli.Grant(ctx, ttlSec)
	if err != nil {
		return nil, fmt.Errorf("grant etcd lease: %w", err)
	}
	resp, err := r.cli.Txn(ctx).If(cond).Then(clientv3.OpPut(key, value, clientv3.WithLease(g.ID))).Commit()
	if err == nil && !resp.Succeeded {
		err = errRace
	}
	if err != nil {
		r.revoke(ctx, g.ID)
		return nil, fmt.Errorf("%s %s: %w", op, key, err)
	}
	return &Lease{Subnet: want.Subnet, IPv6Subnet: want.IPv6Subnet, Attrs: attrs, LeaseID: g.ID, Expiration: time.Now().Add(time.Duration(g.TTL) * time.Second)}, nil
}

// deleteLeased deletes our leased key e if it is unchanged since it was
// read, then revokes its etcd lease unless something else is on it: left
// alone, that lease would sit in `etcdctl lease list` until its TTL ends.
func (r *Registry) deleteLeased(ctx context.Context, e *entry) error {
	resp, err := r.cli.Txn(ctx).
		If(clientv3.Compare(clientv3.ModRevision(e.key), "=", e.modRev)).
		Then(clientv3.OpDelete(e.key)).Commit()
	if err != nil {
		return fmt.Errorf("delete %s: %w", e.key, err)
	}
	if !resp.Succeeded {
		return fmt.Errorf("delete %s: %w", e.key, errRace)
	}
	r.revokeIfEmpty(ctx, e.leaseID)
	return nil
}

func (r *Registry) revoke(ctx context.Context, id clientv3.LeaseID) {
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cleanupTimeout)
	defer cancel()
	if _, err := r.cli.Revoke(cctx, id); err != nil {
		r.log.Warn("revoke unused etcd lease (it expires on its own)", "lease", fmt.Sprintf("%x", int64(id)), "err", err)
	}
}

// revokeIfEmpty revokes id if no key is attached to it any more.
func (r *Registry) revokeIfEmpty(ctx context.Context, id clientv3.LeaseID) {
	if id == 0 {
		return
	}
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cleanupTimeout)
	defer cancel()
	resp, err := r.cli.TimeToLive(cctx, id, clientv3.WithAttachedKeys())
	if err != nil || resp.TTL <= 0 || len(resp.Keys) > 0 {
		return
	}
	r.revoke(ctx, id)
}

// indexRanges is a sorted list of disjoint, inclusive ranges of subnet
// indexes (see pool.taken).
type indexRanges [][2]uint64

func (rs indexRanges) count() uint64 {
	var n uint64
	for _, x := range rs {
		n += x[1] - x[0] + 1
	}
	return n
}

func (rs indexRanges) has(i uint64) bool {
	for _, x := range rs {
		if x[0] <= i && i <= x[1] {
			return true
		}
	}
	return false
}

// nthFree returns the index of the k-th (from 0) index not in rs.
func (rs indexRanges) nthFree(k uint64) uint64 {
	var next uint64 // first index not yet accounted for
	for _, x := range rs {
		gap := x[0] - next
		if k < gap {
			return next + k
		}
		k -= gap
		next = x[1] + 1
	}
	return next + k
}
