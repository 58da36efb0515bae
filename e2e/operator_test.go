package e2e

import (
	"fmt"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"vxrouter/lease"
)

// TestOperatorDeletesLease: an operator deletes a running node's key
// (etcdctl del). The node takes the same subnet again at once instead of
// exiting, its peer reaches it again, and no etcd lease is left behind.
// Then the node restarts after its key was deleted while it was down, and
// gets the same subnet back from its subnet.env.
func TestOperatorDeletesLease(t *testing.T) {
	o := newOverlay(t, network16)
	h1, h2 := o.host("d1"), o.host("d2")
	n1, env1 := o.start(h1)
	n2, env2 := o.start(h2)
	s1 := env1.Subnet.Masked()
	p1, p2 := o.pod(h1, s1), o.pod(h2, env2.Subnet.Masked())
	o.mustPing(p2, p1)
	id1, _, err := o.ownKey(o.ctx, n1, s1)
	if err != nil {
		t.Fatal(err)
	}

	mark := len(n1.Log())
	if _, err := o.cli.Delete(o.ctx, o.reg.Key(s1)); err != nil {
		t.Fatal(err)
	}
	deleted := time.Now()
	var id1b clientv3.LeaseID
	o.within(10*time.Second, "d1 takes its subnet again", func() error {
		id1b, _, err = o.ownKey(o.ctx, n1, s1)
		return err
	})
	t.Logf("d1 took %s again %s after the delete (etcd lease %x, was %x)", s1, time.Since(deleted).Round(time.Millisecond), int64(id1b), int64(id1))
	o.within(5*time.Second, "d1 logs the re-acquired lease", func() error {
		if !strings.Contains(logSince(n1, mark), `msg="lease re-acquired"`) {
			return errNotYet
		}
		return nil
	})
	o.alive(n1)
	if env, err := lease.ReadSubnetEnv(n1.SubnetFile); err != nil || env != env1 {
		t.Errorf("d1's subnet.env: %+v, %v; want %+v", env, err, env1)
	}
	o.within(5*time.Second, "d2 routes d1's subnet again", func() error {
		if ok, err := knows(o.ctx, n2, s1); err != nil || !ok {
			return fmt.Errorf("d2 does not route %s (%v)", s1, err)
		}
		return nil
	})
	o.mustPing(p2, p1)
	o.mustPing(p1, p2)
	o.noStrayLeases()

	// Deleted while the node is down: the restart takes the subnet from
	// subnet.env, since no key holds its PublicIP any more.
	o.stop(n1)
	if _, err := o.cli.Delete(o.ctx, o.reg.Key(s1)); err != nil {
		t.Fatal(err)
	}
	// start returns at once here: subnet.env is already there. The key
	// tells when the node is up.
	n1, _ = o.start(h1)
	o.within(30*time.Second, "d1 restarts on its subnet", func() error {
		_, _, err := o.ownKey(o.ctx, n1, s1)
		return err
	})
	o.alive(n1)
	if env, err := lease.ReadSubnetEnv(n1.SubnetFile); err != nil || env != env1 {
		t.Errorf("d1's subnet.env after restart: %+v, %v; want %+v", env, err, env1)
	}
	o.mustPing(p2, p1)
	o.mustPing(p1, p2)
	// The etcd lease the deleted key was on is not checked here: the
	// restarted process never knew its ID, so it lives out its TTL.
}

// noStrayLeases checks that every etcd lease holds a key: a lease that
// holds none was lost track of, and sits in `etcdctl lease list` until its
// TTL (a day by default) runs out.
func (o *overlay) noStrayLeases() {
	o.t.Helper()
	// Revoking the lease a re-acquired key left behind happens right
	// after the new key is written; give it a moment.
	o.within(5*time.Second, "no etcd lease without a key", func() error {
		resp, err := o.cli.Leases(o.ctx)
		if err != nil {
			return err
		}
		for _, l := range resp.Leases {
			ttl, err := o.cli.TimeToLive(o.ctx, l.ID, clientv3.WithAttachedKeys())
			if err != nil {
				return err
			}
			if ttl.TTL > 0 && len(ttl.Keys) == 0 {
				return fmt.Errorf("etcd lease %x (TTL %ds) holds no key", int64(l.ID), ttl.TTL)
			}
		}
		return nil
	})
}
