package lease

import (
	"context"
	"errors"
	"fmt"
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
//  1. a key whose PublicIP is attrs.PublicIP: a reservation (no etcd lease)
//     keeps being a reservation and gets its value refreshed; a leased key
//     is moved to a fresh etcd lease with the new value. Both writes are
//     transactions on the key's mod revision. Such a lease outside cfg's
//     range is deleted (flannel does the same; a reservation is left alone),
//     its etcd lease revoked unless something else is on it, and its
//     subnet counts as free in the steps below.
//  2. previous (e.g. from subnet.env), if cfg contains it and it is free;
//  3. a random free subnet in SubnetMin..SubnetMax.
//
// A new key is created in a transaction that succeeds only if the key does
// not exist, attached to a fresh etcd lease. A lost race lists again and
// retries. When no subnet is free the error wraps ErrNoFreeSubnet and
// nothing is written.
func (r *Registry) Acquire(ctx context.Context, cfg *Config, attrs Attrs, previous netip.Prefix, ttl time.Duration) (*Lease, error) {
	if err := cfg.Validate(); err != nil {
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
	return nil, fmt.Errorf("acquire subnet in %s: lost the race for a free subnet %d times in a row (many nodes starting at once?); try again", cfg.Network, maxAcquireAttempts)
}

func (r *Registry) tryAcquire(ctx context.Context, cfg *Config, attrs Attrs, value string, previous netip.Prefix, ttlSec int64) (*Lease, error) {
	entries, _, err := r.list(ctx, func(string, error) {})
	if err != nil {
		return nil, fmt.Errorf("acquire subnet: %w", err)
	}

	// 1. Our own key. Reservations first: they are an operator's choice.
	var deleted []string // our keys deleted below; they no longer take a subnet
	for _, wantReservation := range []bool{true, false} {
		for i := range entries {
			e := &entries[i]
			if e.attrsErr != nil || !e.canonical || e.attrs.PublicIP != attrs.PublicIP || (e.leaseID == 0) != wantReservation {
				continue
			}
			if cfg.Contains(e.subnet) {
				return r.refresh(ctx, e, attrs, value, ttlSec)
			}
			if e.leaseID == 0 {
				r.log.Warn("a reservation for our PublicIP is outside the config's subnets; ignoring it", "key", e.key, "network", cfg.Network, "subnetLen", cfg.SubnetLen)
				continue
			}
			r.log.Info("deleting our lease that the config no longer contains", "key", e.key, "network", cfg.Network, "subnetLen", cfg.SubnetLen)
			if err := r.deleteLeased(ctx, e); err != nil {
				return nil, err
			}
			deleted = append(deleted, e.key)
		}
	}
	entries = slices.DeleteFunc(entries, func(e entry) bool { return slices.Contains(deleted, e.key) })

	taken := takenIndexes(cfg, entries)

	// 2. The subnet we had before.
	if previous.IsValid() {
		switch {
		case !cfg.Contains(previous):
			r.log.Info("previous subnet does not fit the config; ignoring it", "previous", previous, "network", cfg.Network, "subnetLen", cfg.SubnetLen, "min", cfg.SubnetMin, "max", cfg.SubnetMax)
		case taken.has(cfg.index(previous)):
			r.log.Info("previous subnet is taken; picking another", "previous", previous)
		default:
			return r.create(ctx, previous, attrs, value, ttlSec)
		}
	}

	// 3. A random free one.
	total := cfg.count()
	free := total - taken.count()
	if free == 0 {
		return nil, fmt.Errorf("%w in %s (%s..%s, %d taken)", ErrNoFreeSubnet, cfg.Network, cfg.SubnetMin, cfg.SubnetMax, total)
	}
	subnet := cfg.subnetAt(taken.nthFree(rand.Uint64N(free)))
	return r.create(ctx, subnet, attrs, value, ttlSec)
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
		r.log.Info("using our reservation", "subnet", e.subnet)
		return &Lease{Subnet: e.subnet, Attrs: attrs}, nil
	}
	l, err := r.putOnNewLease(ctx, "refresh lease", same, e.subnet, attrs, value, ttlSec)
	if err != nil {
		return nil, err
	}
	// The old etcd lease now holds nothing of ours; drop it rather than
	// leave it for a day in `etcdctl lease list`.
	r.revokeIfEmpty(ctx, e.leaseID)
	r.log.Info("reusing our lease", "subnet", e.subnet)
	return l, nil
}

// create takes subnet if nobody has it.
func (r *Registry) create(ctx context.Context, subnet netip.Prefix, attrs Attrs, value string, ttlSec int64) (*Lease, error) {
	absent := clientv3.Compare(clientv3.CreateRevision(r.Key(subnet)), "=", 0)
	l, err := r.putOnNewLease(ctx, "create", absent, subnet, attrs, value, ttlSec)
	if err != nil {
		return nil, err
	}
	r.log.Info("acquired subnet", "subnet", subnet, "lease", fmt.Sprintf("%x", int64(l.LeaseID)), "ttl", time.Until(l.Expiration).Round(time.Second))
	return l, nil
}

// putOnNewLease grants an etcd lease of ttlSec and, if cond holds, puts
// value at subnet's key on it. On any failure the new etcd lease is revoked
// so none is left holding nothing; a false cond is errRace. op names the
// write in errors. The key is r.Key(subnet): Acquire only writes canonical
// keys.
func (r *Registry) putOnNewLease(ctx context.Context, op string, cond clientv3.Cmp, subnet netip.Prefix, attrs Attrs, value string, ttlSec int64) (*Lease, error) {
	key := r.Key(subnet)
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
	return &Lease{Subnet: subnet, Attrs: attrs, LeaseID: g.ID, Expiration: time.Now().Add(time.Duration(g.TTL) * time.Second)}, nil
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

// index is the position of subnet counting from SubnetMin; subnet must be
// one cfg contains.
func (c *Config) index(subnet netip.Prefix) uint64 {
	return uint64(u32(subnet.Addr())-u32(c.SubnetMin)) / uint64(subnetSize(c.SubnetLen))
}

// indexRanges is a sorted list of disjoint, inclusive ranges of subnet
// indexes.
type indexRanges [][2]uint64

// takenIndexes returns which of cfg's subnets overlap a key. Every key
// counts, even one whose value does not parse, because creating its key
// would fail anyway; keys of another SubnetLen (an older config) block
// every subnet they overlap.
func takenIndexes(cfg *Config, entries []entry) indexRanges {
	size := uint64(subnetSize(cfg.SubnetLen))
	lo := uint64(u32(cfg.SubnetMin))
	hi := uint64(u32(cfg.SubnetMax)) + size - 1
	var rs indexRanges
	for i := range entries {
		p := entries[i].subnet
		a := uint64(u32(p.Addr()))
		b := a + (uint64(1) << (32 - p.Bits())) - 1
		if b < lo || a > hi {
			continue
		}
		a, b = max(a, lo), min(b, hi)
		rs = append(rs, [2]uint64{(a - lo) / size, (b - lo) / size})
	}
	slices.SortFunc(rs, func(x, y [2]uint64) int {
		switch {
		case x[0] < y[0]:
			return -1
		case x[0] > y[0]:
			return 1
		}
		return 0
	})
	merged := rs[:0]
	for _, x := range rs {
		if n := len(merged); n > 0 && x[0] <= merged[n-1][1]+1 {
			merged[n-1][1] = max(merged[n-1][1], x[1])
			continue
		}
		merged = append(merged, x)
	}
	return merged
}

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
