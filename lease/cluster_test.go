package lease

import (
	"context"
	"errors"
	"net/netip"
	"slices"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// TestClusterLeaderLoss runs nodes against a three-member etcd cluster,
// kills the leader under them, and checks that nothing is lost: every key
// keeps its etcd lease, KeepAlive goes on renewing (the leases outlive
// the TTL counted from the new leader's promotion, which itself extends
// every lease once), and each watcher sees a lease put after the kill
// exactly once, with no other event.
func TestClusterLeaderLoss(t *testing.T) {
	if testing.Short() {
		t.Skip("takes ~20s")
	}
	const ttl = 10 * time.Second
	const prefix = "/cluster"
	start := time.Now()
	ms := startTestCluster(t, 3)
	t.Logf("cluster up in %v", time.Since(start).Round(time.Millisecond))
	eps := []string{ms[0].clientURL, ms[1].clientURL, ms[2].clientURL}
	ctx := testCtx(t, 60*time.Second)

	admin, err := dialTest(t, ClientOptions{Endpoints: eps})
	if err != nil {
		t.Fatal(err)
	}
	cfg := mustConfig(t, `{"Network":"10.7.0.0/16","Backend":{"Type":"vxlan"}}`)
	if err := NewRegistry(admin, prefix, testLog(t)).SetConfig(ctx, cfg); err != nil {
		t.Fatal(err)
	}

	type node struct {
		r       *Registry
		l       *Lease
		events  *eventLog
		changes chan string
	}
	const n = 3
	nodes := make([]*node, n)
	for i := range nodes {
		// Each client lists the members in another order, so they do not
		// all start on the same one.
		cli, err := dialTest(t, ClientOptions{Endpoints: append(slices.Clone(eps[i:]), eps[:i]...)})
		if err != nil {
			t.Fatal(err)
		}
		nd := &node{r: NewRegistry(cli, prefix, testLog(t)), changes: make(chan string, 10)}
		nd.events = runWatch(t, nd.r)
		if nd.l, err = nd.r.Acquire(ctx, cfg, nodeAttrs(10+i), netip.Prefix{}, ttl); err != nil {
			t.Fatal(err)
		}
		// Registered after the client's cleanup, so it runs before it.
		kctx, kcancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		t.Cleanup(func() {
			kcancel()
			if err := <-done; !errors.Is(err, context.Canceled) {
				t.Errorf("KeepAlive of node %d returned %v", i, err)
			}
		})
		go func() {
			done <- nd.r.KeepAlive(kctx, cfg, nd.l, func(l *Lease) { nd.changes <- describe(Event{Lease: *l}) })
		}()
		nodes[i] = nd
	}
	var want []string
	for i, nd := range nodes {
		want = append(want, added(nd.l.Subnet.String(), nodeAttrs(10+i)))
	}
	for i, nd := range nodes {
		if got := sorted(nd.events.next(t, n)); !slices.Equal(got, sorted(slices.Clone(want))) {
			t.Fatalf("watcher %d before the kill: %q, want %q", i, got, want)
		}
	}

	t.Logf("%v: watchers have the %d leases", time.Since(start).Round(time.Millisecond), n)
	// Kill the leader, as a crash would.
	leader := -1
	for i, m := range ms {
		s, err := admin.Status(ctx, m.clientURL)
		if err != nil {
			t.Fatal(err)
		}
		if s.Leader == s.Header.MemberId {
			leader = i
		}
	}
	if leader < 0 {
		t.Fatal("no member says it is the leader")
	}
	oldID := ms[leader].etcd.Server.MemberID()
	ms[leader].crash()
	t.Logf("%v: killed the leader %s (%x)", time.Since(start).Round(time.Millisecond), ms[leader].name, uint64(oldID))
	var promoted time.Time // by when the new leader had extended every lease
	for promoted.IsZero() {
		for i, m := range ms {
			if i == leader {
				continue
			}
			sctx, cancel := context.WithTimeout(ctx, time.Second)
			s, err := admin.Status(sctx, m.clientURL)
			cancel()
			if err == nil && s.Leader != 0 && s.Leader != uint64(oldID) {
				promoted = time.Now()
				t.Logf("new leader %x", s.Leader)
				break
			}
		}
		if promoted.IsZero() {
			if ctx.Err() != nil {
				t.Fatal("no new leader")
			}
			time.Sleep(100 * time.Millisecond)
		}
	}

	// A lease put after the kill reaches every watcher, once. Its TTL is
	// long because nothing renews it.
	newcomer, err := NewRegistry(admin, prefix, testLog(t)).Acquire(ctx, cfg, nodeAttrs(99), netip.Prefix{}, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	for i, nd := range nodes {
		if got, want := nd.events.next(t, 1), added(newcomer.Subnet.String(), nodeAttrs(99)); got[0] != want {
			t.Fatalf("watcher %d after the kill: %q, want %q", i, got, want)
		}
	}

	// Outlive the TTL counted from the promotion: only renewals after the
	// kill can keep the leases now.
	time.Sleep(time.Until(promoted.Add(ttl + 2*time.Second)))
	for i, nd := range nodes {
		resp, err := admin.Get(ctx, nd.r.Key(nd.l.Subnet))
		if err != nil {
			t.Fatal(err)
		}
		if len(resp.Kvs) != 1 || clientv3.LeaseID(resp.Kvs[0].Lease) != nd.l.LeaseID {
			t.Fatalf("node %d: key %s is %v, want it on etcd lease %x", i, nd.r.Key(nd.l.Subnet), resp.Kvs, int64(nd.l.LeaseID))
		}
		tl, err := admin.TimeToLive(ctx, nd.l.LeaseID)
		if err != nil {
			t.Fatal(err)
		}
		if tl.TTL <= 0 {
			t.Fatalf("node %d: etcd lease %x has TTL %d %v after the promotion: KeepAlive stopped renewing", i, int64(nd.l.LeaseID), tl.TTL, time.Since(promoted).Round(time.Millisecond))
		}
		t.Logf("node %d: %s on lease %x, %ds left, %v after the promotion", i, nd.l.Subnet, int64(nd.l.LeaseID), tl.TTL, time.Since(promoted).Round(time.Millisecond))
		select {
		case c := <-nd.changes:
			t.Fatalf("node %d re-acquired its lease (%s): it was lost", i, c)
		default:
		}
	}
	for _, nd := range nodes {
		nd.events.none(t)
	}
}
