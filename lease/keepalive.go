package lease

import (
	"context"
	"errors"
	"fmt"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"vxrouter/internal/retry"
)

// lostError says our key or its etcd lease is gone or belongs to someone
// else: the subnet must be acquired again.
type lostError struct{ reason string }

func (e *lostError) Error() string { return "lease lost: " + e.reason }

func lost(format string, args ...any) error {
	return &lostError{reason: fmt.Sprintf(format, args...)}
}

// KeepAlive holds l until ctx ends and returns ctx.Err(). It renews the
// etcd lease every third of its TTL, retrying errors with backoff and
// jitter (etcd being down is not fatal while the lease lasts), and watches
// the key. If the key is deleted, its etcd lease expires, or another
// owner (Attrs.Owner) takes the key, it acquires again with Acquire (the same subnet
// if still free, else another) and calls onChange with the new lease; it
// retries that until it succeeds or ctx ends. If a process with our
// PublicIP moves the key to another etcd lease, KeepAlive follows that
// lease (and calls onChange) instead of fighting over the key.
//
// l itself is not modified. The lease is not revoked on return: a restart
// finds it by PublicIP and keeps the subnet.
func (r *Registry) KeepAlive(ctx context.Context, cfg *Config, l *Lease, onChange func(*Lease)) error {
	cur := *l
	changed := func() {
		if onChange != nil {
			c := cur
			onChange(&c)
		}
	}
	ttl := DefaultTTL
	if !cur.Expiration.IsZero() {
		// A first guess until etcd tells the granted TTL.
		ttl = max(time.Until(cur.Expiration), time.Second)
	}
	bo := retry.Backoff{Min: 200 * time.Millisecond, Max: 30 * time.Second}
	for {
		err := r.hold(ctx, &cur, &ttl, &bo, changed)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		var le *lostError
		if !errors.As(err, &le) {
			// The watch broke; hold checks the key again before watching.
			r.log.Warn("lease watch interrupted; checking the key again", "key", r.LeaseKey(&cur), "err", err)
			if !retry.Sleep(ctx, bo.Next()) {
				return ctx.Err()
			}
			continue
		}
		r.log.Warn("lost our subnet; acquiring again", "key", r.LeaseKey(&cur), "err", err)
		old := cur.LeaseID
		for {
			nl, err := r.AcquireSubnets(ctx, cfg, cur.Attrs, cur.Subnets(), ttl)
			if err == nil {
				cur = *nl
				break
			}
			if ctx.Err() != nil {
				return ctx.Err()
			}
			r.log.Error("acquire subnet again", "err", err)
			if !retry.Sleep(ctx, bo.Next()) {
				return ctx.Err()
			}
		}
		bo.Reset()
		if old != cur.LeaseID {
			r.revokeIfEmpty(ctx, old)
		}
		changed()
	}
}

// hold checks that the key is still ours, then renews and watches it until
// something changes. It returns a *lostError when the subnet is gone, and
// other errors when the watch broke.
func (r *Registry) hold(ctx context.Context, cur *Lease, ttl *time.Duration, bo *retry.Backoff, changed func()) error {
	key := r.LeaseKey(cur)
	rev, err := r.check(ctx, key, cur, ttl, bo, changed)
	if err != nil {
		return err
	}
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	wch := r.cli.Watch(clientv3.WithRequireLeader(wctx), key, clientv3.WithRev(rev+1))

	var renew <-chan time.Time // nil for a reservation: nothing to renew
	var timer *time.Timer
	if cur.LeaseID != 0 {
		timer = time.NewTimer(retry.Jitter(*ttl / 3))
		defer timer.Stop()
		renew = timer.C
	}
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-renew:
			// KeepAliveOnce retries by itself while etcd is unreachable;
			// the timeout hands control back so we can back off and log.
			kctx, kcancel := context.WithTimeout(ctx, min(max(*ttl/3, time.Second), 10*time.Second))
			resp, err := r.cli.KeepAliveOnce(kctx, cur.LeaseID)
			kcancel()
			switch {
			case errors.Is(err, rpctypes.ErrLeaseNotFound):
				return lost("etcd lease %x expired", int64(cur.LeaseID))
			case err != nil:
				if ctx.Err() != nil {
					return ctx.Err()
				}
				// Retry well within the lease; jitter the cap too, or
				// nodes that lost etcd together retry in step once
				// their backoff reaches it.
				d := bo.Next()
				if limit := max(*ttl/6, 200*time.Millisecond); d > limit {
					d = retry.Jitter(limit)
				}
				r.log.Warn("renew lease failed; retrying", "key", key, "in", d, "err", err)
				timer.Reset(d)
			default:
				bo.Reset()
				cur.Expiration = time.Now().Add(time.Duration(resp.TTL) * time.Second)
				r.log.Debug("renewed lease", "key", key, "expires", cur.Expiration)
				timer.Reset(retry.Jitter(*ttl / 3))
			}
		case wresp, ok := <-wch:
			if !ok {
				return errors.New("watch channel closed")
			}
			if err := wresp.Err(); err != nil {
				return fmt.Errorf("watch %s: %w", key, err)
			}
			for _, ev := range wresp.Events {
				if ev.Type == clientv3.EventTypeDelete {
					return lost("key %s deleted", key)
				}
				prev := cur.LeaseID
				if err := r.stillOurs(ev.Kv.Value, ev.Kv.Lease, cur, changed); err != nil {
					return err
				}
				if cur.LeaseID != prev {
					// stillOurs followed the key to another etcd lease (or
					// to none: a reservation); start over to learn its TTL.
					return errors.New("key moved to another etcd lease")
				}
			}
		}
	}
}

// check reads the key and its etcd lease, retrying errors with backoff,
// and returns the revision to watch after.
func (r *Registry) check(ctx context.Context, key string, cur *Lease, ttl *time.Duration, bo *retry.Backoff, changed func()) (int64, error) {
	for {
		rev, err := r.checkOnce(ctx, key, cur, ttl, changed)
		var le *lostError
		if err == nil || errors.As(err, &le) {
			return rev, err
		}
		if ctx.Err() != nil {
			return 0, ctx.Err()
		}
		d := bo.Next()
		r.log.Warn("check lease failed; retrying", "key", key, "in", d, "err", err)
		if !retry.Sleep(ctx, d) {
			return 0, ctx.Err()
		}
	}
}

func (r *Registry) checkOnce(ctx context.Context, key string, cur *Lease, ttl *time.Duration, changed func()) (int64, error) {
	resp, err := r.cli.Get(ctx, key)
	if err != nil {
		return 0, fmt.Errorf("get %s: %w", key, err)
	}
	if len(resp.Kvs) == 0 {
		return 0, lost("key %s is gone", key)
	}
	kv := resp.Kvs[0]
	if err := r.stillOurs(kv.Value, kv.Lease, cur, changed); err != nil {
		return 0, err
	}
	if cur.LeaseID == 0 {
		return resp.Header.Revision, nil
	}
	t, err := r.cli.TimeToLive(ctx, cur.LeaseID)
	if errors.Is(err, rpctypes.ErrLeaseNotFound) || (err == nil && t.TTL <= 0) {
		return 0, lost("etcd lease %x expired", int64(cur.LeaseID))
	}
	if err != nil {
		return 0, fmt.Errorf("lease %x time to live: %w", int64(cur.LeaseID), err)
	}
	*ttl = time.Duration(t.GrantedTTL) * time.Second
	cur.Expiration = time.Now().Add(time.Duration(t.TTL) * time.Second)
	return resp.Header.Revision, nil
}

// stillOurs checks a value written to our key. Another owner (PublicIP,
// or PublicIPv6 for an IPv6-only node) means the subnet was taken; our
// own under another etcd lease means another process of this node
// rewrote it, and we follow it rather than fight.
func (r *Registry) stillOurs(value []byte, leaseID int64, cur *Lease, changed func()) error {
	a, err := ParseAttrs(value)
	if err != nil {
		return lost("value overwritten with one that does not parse: %v", err)
	}
	if a.Owner() != cur.Attrs.Owner() {
		return lost("key %s taken by %s", cur.KeyName(), a.Owner())
	}
	if id := clientv3.LeaseID(leaseID); id != cur.LeaseID {
		r.log.Warn("another process with our PublicIP moved our key to its etcd lease; following it",
			"key", cur.KeyName(), "old", fmt.Sprintf("%x", int64(cur.LeaseID)), "new", fmt.Sprintf("%x", leaseID))
		cur.LeaseID = id
		cur.Attrs = a
		if id == 0 {
			cur.Expiration = time.Time{}
		}
		changed()
		return nil
	}
	if !a.Equal(cur.Attrs) {
		r.log.Warn("our key's value was changed by someone else; peers see theirs", "key", cur.KeyName(), "value", string(value))
	}
	return nil
}
