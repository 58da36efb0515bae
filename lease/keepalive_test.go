package lease

import (
	"context"
	"errors"
	"net/netip"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// keepAlive runs r.KeepAlive for l in the background; changes arrive on the
// returned channel, and stop ends it and returns its error.
func keepAlive(t *testing.T, r *Registry, cfg *Config, l *Lease) (<-chan *Lease, func() error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	changes := make(chan *Lease, 10)
	done := make(chan error, 1)
	go func() { done <- r.KeepAlive(ctx, cfg, l, func(nl *Lease) { changes <- nl }) }()
	stopped := false
	stop := func() error {
		if stopped {
			return nil
		}
		stopped = true
		cancel()
		select {
		case err := <-done:
			return err
		case <-time.After(5 * time.Second):
			t.Fatal("KeepAlive did not return within 5s of its context ending")
			return nil
		}
	}
	t.Cleanup(func() { stop() })
	return changes, stop
}

func waitChange(t *testing.T, changes <-chan *Lease, within time.Duration) *Lease {
	t.Helper()
	select {
	case l := <-changes:
		return l
	case <-time.After(within):
		t.Fatalf("no onChange within %v", within)
		return nil
	}
}

func TestKeepAlive(t *testing.T) {
	r, cli := testRegistry(t)
	ctx := testCtx(t, 30*time.Second)
	cfg := mustConfig(t, `{"Network":"10.5.0.0/16","Backend":{"Type":"vxlan"}}`)
	const ttl = 3 * time.Second // etcd's minimum is 2s with default timing

	l, err := r.Acquire(ctx, cfg, nodeAttrs(1), netip.Prefix{}, ttl)
	if err != nil {
		t.Fatal(err)
	}
	changes, stop := keepAlive(t, r, cfg, l)

	// Past the TTL, the lease lives: KeepAlive renewed it.
	time.Sleep(ttl + ttl/2)
	resp, err := cli.TimeToLive(ctx, l.LeaseID)
	if err != nil || resp.TTL <= 0 {
		t.Fatalf("after 1.5 TTL the etcd lease has TTL %v (%v); want it renewed", resp, err)
	}
	if got, _ := cli.Get(ctx, r.Key(l.Subnet)); len(got.Kvs) != 1 || clientv3.LeaseID(got.Kvs[0].Lease) != l.LeaseID {
		t.Fatalf("key %s gone or moved after 1.5 TTL", r.Key(l.Subnet))
	}
	select {
	case c := <-changes:
		t.Fatalf("onChange(%+v) while nothing changed", c)
	default:
	}

	// An operator deletes the key: the same subnet comes back, on a new
	// etcd lease, and onChange says so.
	if _, err := cli.Delete(ctx, r.Key(l.Subnet)); err != nil {
		t.Fatal(err)
	}
	l2 := waitChange(t, changes, 5*time.Second)
	if l2.Subnet != l.Subnet || l2.LeaseID == 0 || l2.LeaseID == l.LeaseID || !l2.Attrs.Equal(l.Attrs) {
		t.Fatalf("after delete onChange(%+v), want subnet %s on a new etcd lease", l2, l.Subnet)
	}
	assertKeyOn(t, cli, r.Key(l.Subnet), l2.LeaseID, nodeAttrs(1).PublicIP)
	// The old etcd lease held nothing any more and was revoked.
	if resp, _ := cli.TimeToLive(ctx, l.LeaseID); resp.TTL != -1 {
		t.Errorf("old etcd lease still alive (TTL %d) after re-acquire", resp.TTL)
	}

	// The etcd lease ends (etcdctl lease revoke, or expiry): same again.
	if _, err := cli.Revoke(ctx, l2.LeaseID); err != nil {
		t.Fatal(err)
	}
	l3 := waitChange(t, changes, 5*time.Second)
	if l3.Subnet != l.Subnet || l3.LeaseID == l2.LeaseID {
		t.Fatalf("after revoke onChange(%+v), want subnet %s on a new etcd lease", l3, l.Subnet)
	}
	assertKeyOn(t, cli, r.Key(l.Subnet), l3.LeaseID, nodeAttrs(1).PublicIP)

	// Another node overwrites our key: we move to another subnet and
	// leave it theirs.
	if _, err := cli.Put(ctx, r.Key(l.Subnet), mustMarshal(t, nodeAttrs(2))); err != nil {
		t.Fatal(err)
	}
	l4 := waitChange(t, changes, 5*time.Second)
	if l4.Subnet == l.Subnet || !cfg.Contains(l4.Subnet) {
		t.Fatalf("after takeover onChange(%+v), want another subnet", l4)
	}
	assertKeyOn(t, cli, r.Key(l4.Subnet), l4.LeaseID, nodeAttrs(1).PublicIP)
	assertKeyOn(t, cli, r.Key(l.Subnet), 0, nodeAttrs(2).PublicIP)

	// Stopping returns ctx's error and leaves the lease alive for a restart.
	if err := stop(); !errors.Is(err, context.Canceled) {
		t.Fatalf("KeepAlive returned %v, want context.Canceled", err)
	}
	if resp, err := cli.TimeToLive(ctx, l4.LeaseID); err != nil || resp.TTL <= 0 {
		t.Fatalf("lease revoked on stop (TTL %v, %v); want it kept", resp, err)
	}
}

// A process of the same node (same PublicIP) moving the key to its own
// etcd lease is followed, not fought over.
func TestKeepAliveFollowsSameNode(t *testing.T) {
	r, cli := testRegistry(t)
	ctx := testCtx(t, 20*time.Second)
	cfg := mustConfig(t, `{"Network":"10.5.0.0/16","Backend":{"Type":"vxlan"}}`)
	l := mustAcquire(t, ctx, r, cfg, nodeAttrs(1))
	changes, _ := keepAlive(t, r, cfg, l)
	time.Sleep(200 * time.Millisecond) // let it start watching

	other, err := r.Acquire(ctx, cfg, nodeAttrs(1), netip.Prefix{}, time.Hour)
	if err != nil || other.Subnet != l.Subnet {
		t.Fatalf("second Acquire for the same node = %v, %v", other, err)
	}
	got := waitChange(t, changes, 5*time.Second)
	if got.Subnet != l.Subnet || got.LeaseID != other.LeaseID {
		t.Fatalf("onChange(%+v), want it to follow etcd lease %x", got, other.LeaseID)
	}
	time.Sleep(500 * time.Millisecond)
	select {
	case c := <-changes:
		t.Fatalf("extra onChange(%+v): KeepAlive is fighting over the key", c)
	default:
	}
	assertKeyOn(t, cli, r.Key(l.Subnet), other.LeaseID, nodeAttrs(1).PublicIP)
}

// A reservation has nothing to renew; deleting it frees the subnet, which
// the owner then takes as an ordinary lease.
func TestKeepAliveReservation(t *testing.T) {
	r, cli := testRegistry(t)
	ctx := testCtx(t, 20*time.Second)
	cfg := mustConfig(t, `{"Network":"10.5.0.0/16","Backend":{"Type":"vxlan"}}`)
	key := r.Key(netip.MustParsePrefix("10.5.9.0/24"))
	cli.Put(ctx, key, mustMarshal(t, nodeAttrs(1)))
	l, err := r.Acquire(ctx, cfg, nodeAttrs(1), netip.Prefix{}, time.Hour)
	if err != nil || l.LeaseID != 0 {
		t.Fatalf("Acquire on a reservation = %+v, %v", l, err)
	}
	changes, _ := keepAlive(t, r, cfg, l)
	time.Sleep(200 * time.Millisecond)
	cli.Delete(ctx, key)
	got := waitChange(t, changes, 5*time.Second)
	if got.Subnet != l.Subnet || got.LeaseID == 0 {
		t.Fatalf("onChange(%+v), want 10.5.9.0/24 on an etcd lease", got)
	}
	assertKeyOn(t, cli, key, got.LeaseID, nodeAttrs(1).PublicIP)
	if resp, _ := cli.TimeToLive(ctx, got.LeaseID); resp.GrantedTTL != int64(DefaultTTL/time.Second) {
		t.Fatalf("granted TTL %d, want DefaultTTL", resp.GrantedTTL)
	}
}

func assertKeyOn(t *testing.T, cli *clientv3.Client, key string, id clientv3.LeaseID, ip netip.Addr) {
	t.Helper()
	resp, err := cli.Get(context.Background(), key)
	if err != nil || len(resp.Kvs) != 1 {
		t.Fatalf("get %s: %v, %v", key, resp, err)
	}
	a, err := ParseAttrs(resp.Kvs[0].Value)
	if err != nil || a.PublicIP != ip || clientv3.LeaseID(resp.Kvs[0].Lease) != id {
		t.Fatalf("%s = %s on lease %x; want PublicIP %s on %x", key, resp.Kvs[0].Value, resp.Kvs[0].Lease, ip, id)
	}
}

// An operator turns a running node's lease into a reservation (`vxrouter
// lease reserve`): KeepAlive follows the key to "no etcd lease" and stops
// renewing, without taking the subnet again; and when the key moves on to
// a lease with a short TTL, it renews that one.
func TestKeepAliveFollowsToReservationAndBack(t *testing.T) {
	r, cli := testRegistry(t)
	ctx := testCtx(t, 30*time.Second)
	cfg := mustConfig(t, `{"Network":"10.5.0.0/16","Backend":{"Type":"vxlan"}}`)
	l := mustAcquire(t, ctx, r, cfg, nodeAttrs(1))
	changes, _ := keepAlive(t, r, cfg, l)
	time.Sleep(200 * time.Millisecond) // let it start watching

	if _, err := r.Reserve(ctx, cfg, l.Subnet, nodeAttrs(1).PublicIP, nodeAttrs(1).VtepMAC); err != nil {
		t.Fatal(err)
	}
	if got := waitChange(t, changes, 5*time.Second); got.Subnet != l.Subnet || got.LeaseID != 0 {
		t.Fatalf("onChange(%+v), want the same subnet as a reservation", got)
	}
	time.Sleep(500 * time.Millisecond)
	select {
	case c := <-changes:
		t.Fatalf("extra onChange(%+v) after the reservation", c)
	default:
	}
	assertKeyOn(t, cli, r.Key(l.Subnet), 0, nodeAttrs(1).PublicIP)

	// The operator releases the reservation and the node's other process
	// puts the key on a 3 s lease: KeepAlive must keep that one alive.
	grant, err := cli.Grant(ctx, 3)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Put(ctx, r.Key(l.Subnet), mustMarshal(t, nodeAttrs(1)), clientv3.WithLease(grant.ID)); err != nil {
		t.Fatal(err)
	}
	if got := waitChange(t, changes, 5*time.Second); got.LeaseID != grant.ID {
		t.Fatalf("onChange(%+v), want it to follow etcd lease %x", got, grant.ID)
	}
	time.Sleep(5 * time.Second) // past the 3 s TTL: only renewals keep it
	ttl, err := cli.TimeToLive(ctx, grant.ID)
	if err != nil || ttl.TTL <= 0 {
		t.Fatalf("followed lease not renewed: %+v, %v", ttl, err)
	}
}
