package lease

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// eventLog collects events; fn must be called from one goroutine, which
// the test checks by never locking.
type eventLog struct{ ch chan Event }

func newEventLog() *eventLog { return &eventLog{ch: make(chan Event, 100)} }

func (e *eventLog) fn(ev Event) { e.ch <- ev }

// next waits for n events and returns them as "added 10.5.1.0/24 10.0.0.1".
func (e *eventLog) next(t *testing.T, n int) []string {
	t.Helper()
	var out []string
	for range n {
		select {
		case ev := <-e.ch:
			out = append(out, describe(ev))
		case <-time.After(5 * time.Second):
			t.Fatalf("got %d events %q, want %d", len(out), out, n)
		}
	}
	return out
}

// event waits for the next event.
func (e *eventLog) event(t *testing.T) Event {
	t.Helper()
	select {
	case ev := <-e.ch:
		return ev
	case <-time.After(5 * time.Second):
		t.Fatal("no event within 5s")
		return Event{}
	}
}

// none checks that no event arrives for a while: each change is reported once.
func (e *eventLog) none(t *testing.T) {
	t.Helper()
	select {
	case ev := <-e.ch:
		t.Fatalf("unexpected event %s", describe(ev))
	case <-time.After(300 * time.Millisecond):
	}
}

func describe(ev Event) string {
	return fmt.Sprintf("%s %s %s %s", ev.Type, ev.Lease.Subnet, ev.Lease.Attrs.PublicIP, ev.Lease.Attrs.VtepMAC)
}

func added(subnet string, a Attrs) string {
	return fmt.Sprintf("added %s %s %s", subnet, a.PublicIP, a.VtepMAC)
}

func removed(subnet string, a Attrs) string {
	return fmt.Sprintf("removed %s %s %s", subnet, a.PublicIP, a.VtepMAC)
}

func sorted(s []string) []string { slices.Sort(s); return s }

func runWatch(t *testing.T, r *Registry) *eventLog {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	log := newEventLog()
	done := make(chan error, 1)
	go func() { done <- r.Watch(ctx, log.fn) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if !errors.Is(err, context.Canceled) {
				t.Errorf("Watch returned %v, want context.Canceled", err)
			}
		case <-time.After(5 * time.Second):
			t.Error("Watch did not return within 5s of its context ending")
		}
	})
	return log
}

func TestWatch(t *testing.T) {
	r, cli := testRegistry(t)
	ctx := testCtx(t, 30*time.Second)
	cfg := mustConfig(t, `{"Network":"10.5.0.0/16","Backend":{"Type":"vxlan"}}`)
	acquire := func(i int, prev string) *Lease {
		t.Helper()
		l, err := r.Acquire(ctx, cfg, nodeAttrs(i), netip.MustParsePrefix(prev), time.Hour)
		if err != nil || l.Subnet.String() != prev {
			t.Fatalf("Acquire(node %d, %s) = %v, %v", i, prev, l, err)
		}
		return l
	}

	// Before the watch: two leases, a reservation and garbage.
	acquire(1, "10.5.1.0/24")
	acquire(2, "10.5.2.0/24")
	cli.Put(ctx, r.Key(netip.MustParsePrefix("10.5.3.0/24")), mustMarshal(t, nodeAttrs(3)))
	cli.Put(ctx, r.Key(netip.MustParsePrefix("10.5.4.0/24")), "garbage")
	cli.Put(ctx, r.subnetsDir()+"not-a-subnet", mustMarshal(t, nodeAttrs(4)))
	cli.Put(ctx, r.prefix+"/subnetsX/10.5.5.0-24", mustMarshal(t, nodeAttrs(5))) // not under subnets/

	log := runWatch(t, r)
	got := sorted(log.next(t, 3))
	want := []string{added("10.5.1.0/24", nodeAttrs(1)), added("10.5.2.0/24", nodeAttrs(2)), added("10.5.3.0/24", nodeAttrs(3))}
	if !slices.Equal(got, want) {
		t.Fatalf("initial events %q, want %q", got, want)
	}
	log.none(t)

	// A new node.
	l6 := acquire(6, "10.5.6.0/24")
	if got := log.next(t, 1); got[0] != added("10.5.6.0/24", nodeAttrs(6)) {
		t.Fatalf("after acquire: %q", got)
	}
	// Node 1 restarts with a new MAC: Added again, with the new value.
	a1 := nodeAttrs(1)
	a1.VtepMAC = []byte{2, 0, 0, 0, 0, 1}
	if _, err := r.Acquire(ctx, cfg, a1, netip.Prefix{}, time.Hour); err != nil {
		t.Fatal(err)
	}
	if got := log.next(t, 1); got[0] != added("10.5.1.0/24", a1) {
		t.Fatalf("after update: %q", got)
	}
	// Deleted by an operator.
	cli.Delete(ctx, r.Key(netip.MustParsePrefix("10.5.2.0/24")))
	if got := log.next(t, 1); got[0] != removed("10.5.2.0/24", nodeAttrs(2)) {
		t.Fatalf("after delete: %q", got)
	}
	// Its etcd lease ends (revoke is what expiry does).
	cli.Revoke(ctx, l6.LeaseID)
	if got := log.next(t, 1); got[0] != removed("10.5.6.0/24", nodeAttrs(6)) {
		t.Fatalf("after revoke: %q", got)
	}
	// A valid lease overwritten with garbage is no longer usable.
	cli.Put(ctx, r.Key(netip.MustParsePrefix("10.5.3.0/24")), `{"PublicIP":"nope"}`)
	if got := log.next(t, 1); got[0] != removed("10.5.3.0/24", nodeAttrs(3)) {
		t.Fatalf("after garbage overwrite: %q", got)
	}
	// Garbage coming and going, and keys outside subnets/, say nothing.
	cli.Delete(ctx, r.Key(netip.MustParsePrefix("10.5.4.0/24")))
	cli.Delete(ctx, r.subnetsDir()+"not-a-subnet")
	cli.Put(ctx, r.Key(netip.MustParsePrefix("10.5.7.0/24")), "garbage")
	cli.Put(ctx, r.prefix+"/subnetsX/10.5.8.0-24", mustMarshal(t, nodeAttrs(8)))
	cli.Put(ctx, r.ConfigKey(), "{}")
	log.none(t)

	// Expiry of a short lease, for real.
	l9, err := r.Acquire(ctx, cfg, nodeAttrs(9), netip.MustParsePrefix("10.5.9.0/24"), 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if got := log.next(t, 1); got[0] != added("10.5.9.0/24", nodeAttrs(9)) {
		t.Fatalf("after acquire: %q", got)
	}
	select {
	case ev := <-log.ch:
		if describe(ev) != removed("10.5.9.0/24", nodeAttrs(9)) || ev.Lease.LeaseID != l9.LeaseID {
			t.Fatalf("after expiry: %s", describe(ev))
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no Removed within 10s of a 2s lease's expiry")
	}
	log.none(t)
}

func TestWatchEventLeaseFields(t *testing.T) {
	r, _ := testRegistry(t)
	ctx := testCtx(t, 10*time.Second)
	cfg := mustConfig(t, `{"Network":"10.5.0.0/16","Backend":{"Type":"vxlan"}}`)
	log := runWatch(t, r)
	time.Sleep(100 * time.Millisecond)
	l := mustAcquire(t, ctx, r, cfg, nodeAttrs(1))
	ev := log.event(t)
	if ev.Type != Added || ev.Lease.Subnet != l.Subnet || ev.Lease.LeaseID != l.LeaseID || !ev.Lease.Attrs.Equal(l.Attrs) {
		t.Fatalf("event %+v, want Added for %+v", ev, l)
	}
	// Watch leaves the expiry to Leases: one request per lease per
	// watcher would be N² across an overlay.
	if !ev.Lease.Expiration.IsZero() {
		t.Fatalf("event lease has Expiration %v; Watch does not ask etcd for it", ev.Lease.Expiration)
	}
	leases, _, err := r.Leases(ctx)
	if err != nil || len(leases) != 1 {
		t.Fatalf("Leases = %v, %v", leases, err)
	}
	if d := time.Until(leases[0].Expiration); d < 59*time.Minute || d > time.Hour+time.Second {
		t.Fatalf("Leases says the lease expires in %v, want ~1h", d)
	}
}

// TestWatchBatchesFirstListEvenEmpty: the first call of fn is the whole
// list, also when there is no lease at all (a node knows then that it
// knows its peers: it is ready); later an empty relist says nothing.
func TestWatchBatchesFirstListEvenEmpty(t *testing.T) {
	r, _ := testRegistry(t)
	ctx := testCtx(t, 10*time.Second)
	cfg := mustConfig(t, `{"Network":"10.5.0.0/16","Backend":{"Type":"vxlan"}}`)
	batches := make(chan []Event, 10)
	wctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		done <- r.WatchBatches(wctx, func(evs []Event) { batches <- slices.Clone(evs) })
	}()
	defer func() {
		cancel()
		<-done
	}()
	select {
	case b := <-batches:
		if len(b) != 0 {
			t.Fatalf("first batch %v, want the empty list", b)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no first batch within 5s of an empty list")
	}
	l := mustAcquire(t, ctx, r, cfg, nodeAttrs(1))
	select {
	case b := <-batches:
		if len(b) != 1 || b[0].Type != Added || b[0].Lease.Subnet != l.Subnet {
			t.Fatalf("second batch %v, want Added %s", b, l.Subnet)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no batch within 5s of a new lease")
	}
}

// A watch that fell behind compaction lists again and reports only what
// changed while it was behind.
func TestWatchCompactionRecovery(t *testing.T) {
	e, err := StartEmbedded(t.TempDir()) // compaction is store-wide: own etcd
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
	cli := testClient(t, e)
	r := NewRegistry(cli, "", testLog(t))
	ctx := testCtx(t, 20*time.Second)
	cfg := mustConfig(t, `{"Network":"10.5.0.0/16","Backend":{"Type":"vxlan"}}`)
	acquire := func(i int, a Attrs, subnet string) {
		t.Helper()
		if _, err := r.Acquire(ctx, cfg, a, netip.MustParsePrefix(subnet), time.Hour); err != nil {
			t.Fatal(err)
		}
	}
	acquire(1, nodeAttrs(1), "10.5.1.0/24")
	acquire(2, nodeAttrs(2), "10.5.2.0/24")
	acquire(3, nodeAttrs(3), "10.5.3.0/24")

	// What a watcher knows after its list at revision r0.
	keys, leases, r0, err := r.listLeases(ctx, true)
	if err != nil || len(leases) != 3 {
		t.Fatalf("listLeases = %v, %v", leases, err)
	}
	known := map[string]Lease{}
	for i, k := range keys {
		known[k] = leases[i]
	}

	// While it is away: 2 goes, 3 changes, 4 comes, 1 stays; then the
	// history it would need is compacted.
	cli.Delete(ctx, r.Key(netip.MustParsePrefix("10.5.2.0/24")))
	a3 := nodeAttrs(3)
	a3.VtepMAC = []byte{2, 0, 0, 0, 0, 3}
	acquire(3, a3, "10.5.3.0/24")
	acquire(4, nodeAttrs(4), "10.5.4.0/24")
	now, _ := cli.Get(ctx, "/")
	if _, err := cli.Compact(ctx, now.Header.Revision, clientv3.WithCompactPhysical()); err != nil {
		t.Fatal(err)
	}

	// The watch from r0+1 really fails with ErrCompacted...
	probe := &watcher{r: r, fn: func([]Event) { t.Error("event from a compacted watch") }, known: map[string]Lease{}}
	if _, _, err := probe.watchFrom(ctx, r0+1); !errors.Is(err, rpctypes.ErrCompacted) {
		t.Fatalf("watchFrom(compacted revision) = %v, want ErrCompacted", err)
	}

	// ...and the watcher recovers with the difference only.
	log := newEventLog()
	w := &watcher{r: r, fn: func(evs []Event) {
		for _, ev := range evs {
			log.fn(ev)
		}
	}, known: known}
	wctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- w.run(wctx, r0+1) }()
	t.Cleanup(cancel)
	got := log.next(t, 3)
	want := []string{removed("10.5.2.0/24", nodeAttrs(2)), added("10.5.3.0/24", a3), added("10.5.4.0/24", nodeAttrs(4))}
	if !slices.Equal(got, want) {
		t.Fatalf("after compaction:\n got %q\nwant %q", got, want)
	}
	log.none(t)

	// And it watches on from the new list.
	acquire(5, nodeAttrs(5), "10.5.5.0/24")
	if got := log.next(t, 1); got[0] != added("10.5.5.0/24", nodeAttrs(5)) {
		t.Fatalf("after recovery: %q", got)
	}
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("run returned %v, want context.Canceled", err)
	}
	if len(w.known) != 4 {
		t.Fatalf("watcher knows %d leases, want 4", len(w.known))
	}
}
