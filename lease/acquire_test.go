package lease

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

func TestRegistryConfig(t *testing.T) {
	r, cli := testRegistry(t)
	ctx := testCtx(t, 10*time.Second)

	_, err := r.Config(ctx)
	want := `no config at /test/TestRegistryConfig/config: write one, e.g. ETCDCTL_API=3 etcdctl put /test/TestRegistryConfig/config '{"Network":"172.16.0.0/16","Backend":{"Type":"vxlan"}}'`
	if err == nil || err.Error() != want {
		t.Fatalf("Config() with no key:\n got %v\nwant %s", err, want)
	}

	cli.Put(ctx, r.ConfigKey(), `{"Network":"10.0.0.0/16","Backend":{"Type":"udp"}}`)
	if _, err := r.Config(ctx); err == nil || !strings.Contains(err.Error(), `/test/TestRegistryConfig/config: config: Backend.Type "udp" is not supported`) {
		t.Fatalf("Config() with udp backend = %v", err)
	}

	c := mustConfig(t, `{"Network":"10.0.0.0/16","Backend":{"Type":"vxlan","VNI":7}}`)
	if err := r.SetConfig(ctx, c); err != nil {
		t.Fatal(err)
	}
	got, err := r.Config(ctx)
	if err != nil || *got != *c {
		t.Fatalf("Config() after SetConfig = %+v, %v; want %+v", got, err, c)
	}
	resp, _ := cli.Get(ctx, "/test/TestRegistryConfig/config")
	if want := `{"Network":"10.0.0.0/16","SubnetLen":24,"SubnetMin":"10.0.1.0","SubnetMax":"10.0.255.0","Backend":{"Type":"vxlan","VNI":7,"Port":8472}}`; string(resp.Kvs[0].Value) != want {
		t.Fatalf("stored config %s, want %s", resp.Kvs[0].Value, want)
	}

	bad := *c
	bad.SubnetLen = 8
	if err := r.SetConfig(ctx, &bad); err == nil {
		t.Fatal("SetConfig accepted SubnetLen 8 for a /16")
	}
}

func TestAcquireBasics(t *testing.T) {
	r, cli := testRegistry(t)
	ctx := testCtx(t, 20*time.Second)
	cfg := mustConfig(t, `{"Network":"10.5.0.0/16","Backend":{"Type":"vxlan"}}`)

	l := mustAcquire(t, ctx, r, cfg, nodeAttrs(1))
	if !cfg.Contains(l.Subnet) || l.LeaseID == 0 || time.Until(l.Expiration) < 59*time.Minute {
		t.Fatalf("Acquire = %+v, want a subnet of the config with a 1h etcd lease", l)
	}
	resp, err := cli.Get(ctx, r.Key(l.Subnet))
	if err != nil || len(resp.Kvs) != 1 {
		t.Fatalf("get %s: %v %v", r.Key(l.Subnet), resp, err)
	}
	kv := resp.Kvs[0]
	want, _ := nodeAttrs(1).MarshalJSON()
	if string(kv.Value) != string(want) {
		t.Fatalf("value %s, want %s", kv.Value, want)
	}
	if clientv3.LeaseID(kv.Lease) != l.LeaseID {
		t.Fatalf("key on etcd lease %x, Acquire said %x", kv.Lease, l.LeaseID)
	}
	ttl, err := cli.TimeToLive(ctx, l.LeaseID, clientv3.WithAttachedKeys())
	if err != nil {
		t.Fatal(err)
	}
	if ttl.GrantedTTL != 3600 || ttl.TTL < 3590 || len(ttl.Keys) != 1 || string(ttl.Keys[0]) != r.Key(l.Subnet) {
		t.Fatalf("TimeToLive = granted %d, ttl %d, keys %q; want 3600, ~3600, [%s]", ttl.GrantedTTL, ttl.TTL, ttl.Keys, r.Key(l.Subnet))
	}

	leases, rev, err := r.Leases(ctx)
	if err != nil || len(leases) != 1 || rev == 0 {
		t.Fatalf("Leases = %+v, %d, %v", leases, rev, err)
	}
	if got := leases[0]; got.Subnet != l.Subnet || got.LeaseID != l.LeaseID || !got.Attrs.Equal(nodeAttrs(1)) || time.Until(got.Expiration) < 59*time.Minute {
		t.Fatalf("Leases()[0] = %+v, want %+v", got, l)
	}

	// ttl <= 0 is DefaultTTL.
	l2, err := r.Acquire(ctx, cfg, nodeAttrs(2), netip.Prefix{}, 0)
	if err != nil {
		t.Fatal(err)
	}
	ttl, _ = cli.TimeToLive(ctx, l2.LeaseID)
	if ttl.GrantedTTL != int64(DefaultTTL/time.Second) {
		t.Fatalf("granted TTL %d, want %d", ttl.GrantedTTL, int64(DefaultTTL/time.Second))
	}

	// Bad attrs are refused before anything is written.
	if _, err := r.Acquire(ctx, cfg, Attrs{PublicIP: netip.MustParseAddr("10.0.0.9"), BackendType: "vxlan"}, netip.Prefix{}, time.Hour); err == nil {
		t.Fatal("Acquire with attrs without VtepMAC succeeded")
	}
	if _, err := r.Acquire(ctx, &Config{}, nodeAttrs(3), netip.Prefix{}, time.Hour); err == nil {
		t.Fatal("Acquire with an empty config succeeded")
	}
}

func TestAcquireReusesByPublicIP(t *testing.T) {
	r, cli := testRegistry(t)
	ctx := testCtx(t, 20*time.Second)
	cfg := mustConfig(t, `{"Network":"10.5.0.0/16","Backend":{"Type":"vxlan"}}`)

	first := mustAcquire(t, ctx, r, cfg, nodeAttrs(1))
	// The node restarts with a new VTEP MAC and a different previous
	// subnet: its live lease wins, gets the new value and a fresh etcd lease.
	a := nodeAttrs(1)
	a.VtepMAC = []byte{2, 0, 0, 0, 0, 1}
	prev := netip.MustParsePrefix("10.5.77.0/24")
	again, err := r.Acquire(ctx, cfg, a, prev, 2*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if again.Subnet != first.Subnet {
		t.Fatalf("reacquire got %s, want our live lease %s", again.Subnet, first.Subnet)
	}
	if again.LeaseID == first.LeaseID || again.LeaseID == 0 {
		t.Fatalf("reacquire kept etcd lease %x; want a fresh one", again.LeaseID)
	}
	resp, _ := cli.Get(ctx, r.Key(first.Subnet))
	got, err := ParseAttrs(resp.Kvs[0].Value)
	if err != nil || !got.Equal(a) || clientv3.LeaseID(resp.Kvs[0].Lease) != again.LeaseID {
		t.Fatalf("stored %s on lease %x, want new attrs on %x", resp.Kvs[0].Value, resp.Kvs[0].Lease, again.LeaseID)
	}
	// The old etcd lease held only our key, so it was revoked.
	if ttl, err := cli.TimeToLive(ctx, first.LeaseID); err != nil || ttl.TTL != -1 {
		t.Fatalf("old etcd lease TTL %v, %v; want it revoked (-1)", ttl, err)
	}
	if ttl, _ := cli.TimeToLive(ctx, again.LeaseID); ttl.GrantedTTL != 7200 {
		t.Fatalf("new lease granted TTL %d, want 7200", ttl.GrantedTTL)
	}
	if n := countKeys(t, cli, r); n != 1 {
		t.Fatalf("%d subnet keys, want 1", n)
	}

	// A lease of ours the config no longer contains (config changed to
	// /26 subnets) is deleted and a new one taken, as flannel does.
	cfg2 := mustConfig(t, `{"Network":"10.5.0.0/16","SubnetLen":26,"Backend":{"Type":"vxlan"}}`)
	moved, err := r.Acquire(ctx, cfg2, a, netip.Prefix{}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if moved.Subnet.Bits() != 26 || !cfg2.Contains(moved.Subnet) {
		t.Fatalf("Acquire after config change = %s, want a /26", moved.Subnet)
	}
	if resp, _ := cli.Get(ctx, r.Key(first.Subnet)); len(resp.Kvs) != 0 {
		t.Fatalf("old incompatible lease %s still there", first.Subnet)
	}
}

func TestAcquirePrevious(t *testing.T) {
	r, _ := testRegistry(t)
	ctx := testCtx(t, 20*time.Second)
	cfg := mustConfig(t, `{"Network":"10.5.0.0/16","Backend":{"Type":"vxlan"}}`)
	prev := netip.MustParsePrefix("10.5.77.0/24")

	l, err := r.Acquire(ctx, cfg, nodeAttrs(1), prev, time.Hour)
	if err != nil || l.Subnet != prev {
		t.Fatalf("Acquire with previous %s = %v, %v", prev, l, err)
	}
	// Taken by node 1: node 2 with the same previous gets another one.
	l2, err := r.Acquire(ctx, cfg, nodeAttrs(2), prev, time.Hour)
	if err != nil || l2.Subnet == prev || !cfg.Contains(l2.Subnet) {
		t.Fatalf("Acquire with a taken previous = %v, %v", l2, err)
	}
	// A previous that does not fit the config is ignored.
	for i, p := range []string{"10.6.1.0/24", "10.5.0.0/24", "10.5.3.0/25", "10.5.3.128/25"} {
		// A node of its own each: one that holds a lease gets it back,
		// whatever previous says.
		l, err := r.Acquire(ctx, cfg, nodeAttrs(10+i), netip.MustParsePrefix(p), time.Hour)
		if err != nil || l.Subnet.String() == p || !cfg.Contains(l.Subnet) {
			t.Fatalf("Acquire with unfit previous %s = %v, %v", p, l, err)
		}
	}
}

func TestAcquireReservations(t *testing.T) {
	r, cli := testRegistry(t)
	ctx := testCtx(t, 20*time.Second)
	// Three subnets: 10.5.0.16, .32, .48 (/28).
	cfg := mustConfig(t, `{"Network":"10.5.0.0/26","Backend":{"Type":"vxlan"}}`)

	// An operator reserves .16 and .32 for node 9 with etcdctl put (no lease).
	owner := nodeAttrs(9)
	val, _ := owner.MarshalJSON()
	for _, s := range []string{"10.5.0.16/28", "10.5.0.32/28"} {
		if _, err := cli.Put(ctx, r.Key(netip.MustParsePrefix(s)), string(val)); err != nil {
			t.Fatal(err)
		}
	}
	// Others never get a reserved subnet, even asking for it as previous.
	l, err := r.Acquire(ctx, cfg, nodeAttrs(1), netip.MustParsePrefix("10.5.0.16/28"), time.Hour)
	if err != nil || l.Subnet != netip.MustParsePrefix("10.5.0.48/28") {
		t.Fatalf("Acquire with reservations = %v, %v; want the only free subnet 10.5.0.48/28", l, err)
	}
	if _, err := r.Acquire(ctx, cfg, nodeAttrs(2), netip.Prefix{}, time.Hour); !errors.Is(err, ErrNoFreeSubnet) {
		t.Fatalf("Acquire with everything reserved or taken = %v, want ErrNoFreeSubnet", err)
	}

	// The owner gets its reservation, and it stays a reservation (no
	// etcd lease), with the owner's new value.
	owner.VtepMAC = []byte{2, 0, 0, 0, 0, 9}
	lo, err := r.Acquire(ctx, cfg, owner, netip.Prefix{}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if (lo.Subnet.String() != "10.5.0.16/28" && lo.Subnet.String() != "10.5.0.32/28") || lo.LeaseID != 0 || !lo.Expiration.IsZero() {
		t.Fatalf("owner's Acquire = %+v, want one of its reservations, with no etcd lease", lo)
	}
	resp, _ := cli.Get(ctx, r.Key(lo.Subnet))
	if resp.Kvs[0].Lease != 0 {
		t.Fatalf("reservation got attached to etcd lease %x", resp.Kvs[0].Lease)
	}
	if got, _ := ParseAttrs(resp.Kvs[0].Value); !got.Equal(owner) {
		t.Fatalf("reservation value %s, want the owner's new attrs", resp.Kvs[0].Value)
	}
	leases, _, _ := r.Leases(ctx)
	for _, l := range leases {
		if l.Attrs.PublicIP == owner.PublicIP && (!l.Expiration.IsZero() || !l.Reservation()) {
			t.Fatalf("Leases() reports reservation as %+v, want zero Expiration and LeaseID", l)
		}
	}
}

func TestAcquireExhaustedWritesNothing(t *testing.T) {
	r, cli := testRegistry(t)
	ctx := testCtx(t, 20*time.Second)
	cfg := mustConfig(t, `{"Network":"10.5.0.0/26","Backend":{"Type":"vxlan"}}`)
	for i := 1; i <= 3; i++ {
		if _, err := r.Acquire(ctx, cfg, nodeAttrs(i), netip.Prefix{}, time.Hour); err != nil {
			t.Fatal(err)
		}
	}
	before, _ := cli.Get(ctx, "/", clientv3.WithPrefix())
	leasesBefore, _ := cli.Leases(ctx)

	_, err := r.Acquire(ctx, cfg, nodeAttrs(4), netip.MustParsePrefix("10.5.0.16/28"), time.Hour)
	if want := "no free subnet in 10.5.0.0/26 (10.5.0.16..10.5.0.48, 3 taken)"; err == nil || err.Error() != want {
		t.Fatalf("Acquire on a full network:\n got %v\nwant %s", err, want)
	}
	if !errors.Is(err, ErrNoFreeSubnet) {
		t.Fatalf("error %v does not wrap ErrNoFreeSubnet", err)
	}
	after, _ := cli.Get(ctx, "/", clientv3.WithPrefix())
	leasesAfter, _ := cli.Leases(ctx)
	if after.Header.Revision != before.Header.Revision {
		t.Fatalf("store revision moved from %d to %d: something was written", before.Header.Revision, after.Header.Revision)
	}
	if len(leasesAfter.Leases) != len(leasesBefore.Leases) {
		t.Fatalf("%d etcd leases before, %d after: a lease was granted and left", len(leasesBefore.Leases), len(leasesAfter.Leases))
	}
}

// Garbage under subnets/ is skipped by Leases but still blocks its subnet;
// other SubnetLens (from an older config) block what they overlap.
func TestAcquireAroundGarbageAndOverlaps(t *testing.T) {
	r, cli := testRegistry(t)
	ctx := testCtx(t, 20*time.Second)
	cfg := mustConfig(t, `{"Network":"10.5.0.0/26","Backend":{"Type":"vxlan"}}`)
	cli.Put(ctx, r.Key(netip.MustParsePrefix("10.5.0.16/28")), "not json")
	cli.Put(ctx, r.subnetsDir()+"10.5.0.33-30", mustMarshal(t, nodeAttrs(7))) // inside .32/28; misaligned key
	cli.Put(ctx, r.subnetsDir()+"10.5.0.32-30", mustMarshal(t, nodeAttrs(8))) // inside .32/28
	cli.Put(ctx, r.subnetsDir()+"garbage", "x")

	leases, _, err := r.Leases(ctx)
	if err != nil || len(leases) != 1 || leases[0].Subnet.String() != "10.5.0.32/30" {
		t.Fatalf("Leases = %+v, %v; want only 10.5.0.32/30", leases, err)
	}
	l, err := r.Acquire(ctx, cfg, nodeAttrs(1), netip.Prefix{}, time.Hour)
	if err != nil || l.Subnet.String() != "10.5.0.48/28" {
		t.Fatalf("Acquire = %v, %v; want 10.5.0.48/28, the only subnet nothing overlaps", l, err)
	}
	if _, err := r.Acquire(ctx, cfg, nodeAttrs(2), netip.Prefix{}, time.Hour); !errors.Is(err, ErrNoFreeSubnet) {
		t.Fatalf("second Acquire = %v, want ErrNoFreeSubnet", err)
	}
}

// Many nodes start at once on a network with fewer subnets than nodes:
// every winner has its own subnet, every loser gets ErrNoFreeSubnet.
func TestAcquireConcurrent(t *testing.T) {
	for _, tc := range []struct {
		network string
		free    int
	}{
		{`{"Network":"10.5.0.0/26","SubnetLen":28,"Backend":{"Type":"vxlan"}}`, 3},
		{`{"Network":"10.6.0.0/24","SubnetLen":28,"Backend":{"Type":"vxlan"}}`, 15},
		{`{"Network":"10.7.0.0/22","SubnetLen":28,"Backend":{"Type":"vxlan"}}`, 63},
	} {
		t.Run(fmt.Sprintf("%d_subnets", tc.free), func(t *testing.T) { testAcquireConcurrent(t, tc.network, tc.free) })
	}
}

func testAcquireConcurrent(t *testing.T, network string, free int) {
	r, cli := testRegistry(t)
	ctx := testCtx(t, 30*time.Second)
	cfg := mustConfig(t, network)
	const nodes = 20
	var wg sync.WaitGroup
	got := make([]*Lease, nodes)
	errs := make([]error, nodes)
	start := make(chan struct{})
	for i := range nodes {
		wg.Go(func() {
			<-start
			got[i], errs[i] = r.Acquire(ctx, cfg, nodeAttrs(i+1), netip.Prefix{}, time.Hour)
		})
	}
	close(start)
	wg.Wait()

	bySubnet := map[netip.Prefix]int{}
	won := 0
	for i := range nodes {
		if errs[i] != nil {
			if !errors.Is(errs[i], ErrNoFreeSubnet) {
				t.Errorf("%s: node %d: %v, want success or ErrNoFreeSubnet", cfg.Network, i+1, errs[i])
			}
			continue
		}
		won++
		if j, dup := bySubnet[got[i].Subnet]; dup {
			t.Errorf("%s: nodes %d and %d both got %s", cfg.Network, j+1, i+1, got[i].Subnet)
		}
		bySubnet[got[i].Subnet] = i
		if !cfg.Contains(got[i].Subnet) {
			t.Errorf("%s: node %d got %s, outside the config", cfg.Network, i+1, got[i].Subnet)
		}
	}
	if want := min(nodes, free); won != want {
		t.Errorf("%s: %d nodes got a subnet, want %d", cfg.Network, won, want)
	}
	// etcd agrees: one key per winner, each holding the winner's IP.
	resp, _ := cli.Get(ctx, r.subnetsDir(), clientv3.WithPrefix())
	if len(resp.Kvs) != won {
		t.Errorf("%s: %d keys in etcd, want %d", cfg.Network, len(resp.Kvs), won)
	}
	for _, kv := range resp.Kvs {
		e, err := r.parseKV(string(kv.Key), kv.Value, kv.Lease, kv.ModRevision)
		if err != nil {
			t.Fatal(err)
		}
		i, ok := bySubnet[e.subnet]
		if !ok || e.attrs.PublicIP != nodeAttrs(i+1).PublicIP {
			t.Errorf("%s: key %s holds %s, not its winner's", cfg.Network, kv.Key, kv.Value)
		}
	}
}

func TestIndexRanges(t *testing.T) {
	rs := indexRanges{{2, 3}, {5, 5}, {9, 12}}
	if rs.count() != 7 {
		t.Fatalf("count = %d, want 7", rs.count())
	}
	var free []uint64
	for k := uint64(0); k < 8; k++ {
		free = append(free, rs.nthFree(k))
	}
	want := []uint64{0, 1, 4, 6, 7, 8, 13, 14}
	for i := range want {
		if free[i] != want[i] {
			t.Fatalf("nthFree(0..7) = %v, want %v", free, want)
		}
	}
	for _, i := range want {
		if rs.has(i) {
			t.Fatalf("has(%d) = true", i)
		}
	}
}

func countKeys(t *testing.T, cli *clientv3.Client, r *Registry) int {
	t.Helper()
	resp, err := cli.Get(testCtx(t, 5*time.Second), r.subnetsDir(), clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		t.Fatal(err)
	}
	return int(resp.Count)
}

func mustMarshal(t testing.TB, a Attrs) string {
	t.Helper()
	b, err := a.MarshalJSON()
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// When a new config no longer contains our lease, Acquire deletes its key;
// the etcd lease that held it goes too, and its subnet is free again in
// the same pass.
func TestAcquireConfigChangeDropsOldLease(t *testing.T) {
	t.Run("revokes", func(t *testing.T) {
		r, cli := testRegistry(t)
		ctx := testCtx(t, 20*time.Second)
		cfg := mustConfig(t, `{"Network":"10.5.0.0/16","Backend":{"Type":"vxlan"}}`)
		old := mustAcquire(t, ctx, r, cfg, nodeAttrs(1))
		cfg2 := mustConfig(t, `{"Network":"10.5.0.0/16","SubnetLen":26,"Backend":{"Type":"vxlan"}}`)
		moved, err := r.Acquire(ctx, cfg2, nodeAttrs(1), netip.Prefix{}, time.Hour)
		if err != nil || !cfg2.Contains(moved.Subnet) {
			t.Fatalf("Acquire under the new config = %v, %v", moved, err)
		}
		if ttl := leaseTTL(t, cli, old.LeaseID); ttl != -1 {
			t.Fatalf("old etcd lease %x has TTL %d; want it revoked (-1)", old.LeaseID, ttl)
		}
		if ttl := leaseTTL(t, cli, moved.LeaseID); ttl <= 0 {
			t.Fatalf("new etcd lease %x has TTL %d; want it live", moved.LeaseID, ttl)
		}
	})

	t.Run("frees_subnet", func(t *testing.T) {
		r, cli := testRegistry(t)
		ctx := testCtx(t, 20*time.Second)
		// Our /26 at 10.5.0.64 is the only subnet the new config's /28s
		// (10.5.0.64..10.5.0.112) overlap: once it is deleted all four are free.
		cfg := mustConfig(t, `{"Network":"10.5.0.0/24","SubnetLen":26,"Backend":{"Type":"vxlan"}}`)
		old, err := r.Acquire(ctx, cfg, nodeAttrs(1), netip.MustParsePrefix("10.5.0.64/26"), time.Hour)
		if err != nil || old.Subnet.String() != "10.5.0.64/26" {
			t.Fatalf("Acquire = %v, %v; want 10.5.0.64/26", old, err)
		}
		// Something else on the same etcd lease: it must outlive our key.
		other := r.prefix + "/other-on-lease"
		if _, err := cli.Put(ctx, other, "x", clientv3.WithLease(old.LeaseID)); err != nil {
			t.Fatal(err)
		}
		cfg2 := mustConfig(t, `{"Network":"10.5.0.0/24","SubnetLen":28,"SubnetMin":"10.5.0.64","SubnetMax":"10.5.0.112","Backend":{"Type":"vxlan"}}`)
		moved, err := r.Acquire(ctx, cfg2, nodeAttrs(1), netip.Prefix{}, time.Hour)
		if err != nil || !cfg2.Contains(moved.Subnet) {
			t.Fatalf("Acquire under the new config = %v, %v; want one of the /28s our deleted /26 had covered", moved, err)
		}
		if n := countKeys(t, cli, r); n != 1 {
			t.Fatalf("%d subnet keys, want 1", n)
		}
		if ttl := leaseTTL(t, cli, old.LeaseID); ttl <= 0 {
			t.Fatalf("old etcd lease %x still holds %s but has TTL %d; want it kept", old.LeaseID, other, ttl)
		}
	})
}

// leaseTTL is etcd's remaining TTL of id in seconds, -1 once it is gone.
func leaseTTL(t *testing.T, cli *clientv3.Client, id clientv3.LeaseID) int64 {
	t.Helper()
	resp, err := cli.TimeToLive(testCtx(t, 5*time.Second), id)
	if err != nil {
		t.Fatalf("time to live of etcd lease %x: %v", id, err)
	}
	return resp.TTL
}
