package lease

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"vxrouter/internal/retry"
)

// EventType says whether a lease appeared (or changed) or went away.
type EventType int

const (
	Added EventType = iota
	Removed
)

func (t EventType) String() string {
	switch t {
	case Added:
		return "added"
	case Removed:
		return "removed"
	}
	return fmt.Sprintf("EventType(%d)", int(t))
}

// Event is one change to the set of leases.
type Event struct {
	Type  EventType
	Lease Lease
}

// Watch reports the leases under the prefix: it lists them at a revision
// R and calls fn(Added) for each, then watches from R+1 and calls fn for
// every change: a put is Added (also when it updates a lease), a delete or
// an expired etcd lease is Removed (with the lease as last seen). When the
// watch falls behind etcd's compaction it lists again and reports only the
// difference; other watch errors resume after a backoff. Keys or values
// that do not parse are skipped with a warning (a valid lease overwritten
// with garbage is Removed). fn is called from one goroutine, the caller's.
// Watch blocks until ctx ends and returns ctx.Err().
//
// The leases it reports carry their LeaseID but no Expiration: asking etcd
// for every lease's expiry would cost each watcher one request per lease,
// N² requests across an overlay of N nodes. Leases reports expiries.
func (r *Registry) Watch(ctx context.Context, fn func(Event)) error {
	return r.WatchBatches(ctx, func(evs []Event) {
		for _, ev := range evs {
			fn(ev)
		}
	})
}

// WatchBatches is Watch that hands fn the events in the batches they come
// in: the whole list at the start (always, even when empty: the first call
// says the list is known), and after a relist the difference, then each
// watch response from etcd. A caller that rebuilds state per call (the route
// table copies itself on every change) does it once per batch instead of
// once per lease. fn must not keep the slice.
func (r *Registry) WatchBatches(ctx context.Context, fn func([]Event)) error {
	w := &watcher{r: r, fn: fn, known: make(map[string]Lease)}
	return w.run(ctx, 0)
}

// watcher holds what fn has been told, by etcd key, so a relist can report
// the difference.
type watcher struct {
	r       *Registry
	fn      func([]Event)
	known   map[string]Lease
	pending []Event // the batch being built
	listed  bool    // fn has had the first list
}

// emit adds an event to the batch; flush hands the batch to fn.
func (w *watcher) emit(ev Event) { w.pending = append(w.pending, ev) }

func (w *watcher) flush() {
	if len(w.pending) > 0 {
		w.fn(w.pending)
		w.pending = w.pending[:0]
	}
}

// run watches from revision next, or lists first when next is 0.
func (w *watcher) run(ctx context.Context, next int64) error {
	bo := retry.Backoff{Min: 100 * time.Millisecond, Max: 5 * time.Second}
	for {
		if next == 0 {
			rev, err := w.resync(ctx)
			if err != nil {
				if ctx.Err() != nil {
					return ctx.Err()
				}
				d := bo.Next()
				w.r.log.Warn("list leases failed; retrying", "in", d, "err", err)
				if !retry.Sleep(ctx, d) {
					return ctx.Err()
				}
				continue
			}
			next = rev + 1
		}
		var progressed bool
		var err error
		next, progressed, err = w.watchFrom(ctx, next)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if progressed {
			bo.Reset()
		}
		if errors.Is(err, rpctypes.ErrCompacted) {
			w.r.log.Warn("lease watch fell behind etcd compaction; listing again", "err", err)
			next = 0
			continue
		}
		d := bo.Next()
		w.r.log.Warn("lease watch failed; resuming", "revision", next, "in", d, "err", err)
		if !retry.Sleep(ctx, d) {
			return ctx.Err()
		}
	}
}

// resync lists the leases, tells fn how they differ from what it knows,
// and returns the revision of the list.
func (w *watcher) resync(ctx context.Context) (int64, error) {
	keys, leases, rev, err := w.r.listLeases(ctx, false)
	if err != nil {
		return 0, err
	}
	defer func() {
		if !w.listed {
			w.listed = true
			w.fn(w.pending)
			w.pending = w.pending[:0]
			return
		}
		w.flush()
	}()
	now := make(map[string]Lease, len(keys))
	for i, k := range keys {
		now[k] = leases[i]
	}
	var gone []string
	for k := range w.known {
		if _, ok := now[k]; !ok {
			gone = append(gone, k)
		}
	}
	slices.Sort(gone)
	for _, k := range gone {
		l := w.known[k]
		delete(w.known, k)
		w.emit(Event{Type: Removed, Lease: l})
	}
	for i, k := range keys {
		if old, ok := w.known[k]; ok && sameLease(&old, &leases[i]) {
			continue
		}
		w.known[k] = leases[i]
		w.emit(Event{Type: Added, Lease: leases[i]})
	}
	return rev, nil
}

func sameLease(a, b *Lease) bool {
	return a.Subnet == b.Subnet && a.IPv6Subnet == b.IPv6Subnet && a.LeaseID == b.LeaseID && a.Attrs.Equal(b.Attrs)
}

// watchFrom watches from revision rev until an error. It returns the
// revision to resume from and whether any response arrived.
func (w *watcher) watchFrom(ctx context.Context, rev int64) (int64, bool, error) {
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	dir := w.r.subnetsDir()
	wch := w.r.cli.Watch(clientv3.WithRequireLeader(wctx), dir, clientv3.WithPrefix(), clientv3.WithRev(rev))
	progressed := false
	for {
		var wresp clientv3.WatchResponse
		var ok bool
		select {
		case <-ctx.Done():
			return rev, progressed, ctx.Err()
		case wresp, ok = <-wch:
		}
		if !ok {
			return rev, progressed, errors.New("watch channel closed")
		}
		if err := wresp.Err(); err != nil {
			return rev, progressed, fmt.Errorf("watch %s from revision %d: %w", dir, rev, err)
		}
		progressed = true
		for _, ev := range wresp.Events {
			w.apply(ev)
			rev = ev.Kv.ModRevision + 1
		}
		w.flush()
		// A response without events (a progress notification) says
		// nothing happened up to its header's revision. One with events
		// may be part of a catch-up that etcd sends in slices, with the
		// store's current revision in every header: resuming after the
		// header would skip the rest, so resume after the last event.
		if len(wresp.Events) == 0 && wresp.Header.Revision >= rev {
			rev = wresp.Header.Revision + 1
		}
	}
}

func (w *watcher) apply(ev *clientv3.Event) {
	key := string(ev.Kv.Key)
	if ev.Type == clientv3.EventTypeDelete {
		if l, ok := w.known[key]; ok {
			delete(w.known, key)
			w.emit(Event{Type: Removed, Lease: l})
		}
		return
	}
	e, err := w.r.parseKV(key, ev.Kv.Value, ev.Kv.Lease, ev.Kv.ModRevision)
	if err == nil {
		err = e.attrsErr
	}
	if err != nil {
		w.r.log.Warn("skipping subnet key", "key", key, "err", err)
		if l, ok := w.known[key]; ok {
			delete(w.known, key)
			w.emit(Event{Type: Removed, Lease: l})
		}
		return
	}
	l := e.lease()
	w.known[key] = l
	w.emit(Event{Type: Added, Lease: l})
}

// listLeases is Leases with each lease's etcd key; with expiry, it asks
// etcd for each etcd lease's remaining time (one request per lease).
func (r *Registry) listLeases(ctx context.Context, expiry bool) ([]string, []Lease, int64, error) {
	entries, rev, err := r.list(ctx, func(key string, err error) {
		r.log.Warn("skipping subnet key with a bad name", "key", key, "err", err)
	})
	if err != nil {
		return nil, nil, 0, err
	}
	exp := make(map[clientv3.LeaseID]time.Time)
	keys := make([]string, 0, len(entries))
	out := make([]Lease, 0, len(entries))
	for i := range entries {
		e := &entries[i]
		if e.attrsErr != nil {
			r.log.Warn("skipping subnet key with a bad value", "key", e.key, "err", e.attrsErr)
			continue
		}
		l := e.lease()
		if expiry && l.LeaseID != 0 {
			t, ok := exp[l.LeaseID]
			if !ok {
				if t, err = r.expiration(ctx, l.LeaseID); err != nil {
					return nil, nil, 0, err
				}
				exp[l.LeaseID] = t
			}
			l.Expiration = t
		}
		keys = append(keys, e.key)
		out = append(out, l)
	}
	return keys, out, rev, nil
}
