package e2e

import (
	"fmt"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"vxrouter/lab"
)

// TestRemovedPeerRouteGoes: an operator deletes a peer's key (here a
// kernel-vxlan peer, which does not take it back); every vxrouter node
// drops the route within moments, so pings to that peer's pod stop being
// sent and are counted as no-route instead.
func TestRemovedPeerRouteGoes(t *testing.T) {
	o := newOverlay(t, network16)
	h1, h2, hk := o.host("w1"), o.host("w2"), o.host("wk")
	n1, env1 := o.start(h1)
	n2, env2 := o.start(h2)
	kl := o.flannelNode(hk, "d6:51:2e:80:5c:6a")
	p1, p2, pk := o.pod(h1, env1.Subnet.Masked()), o.pod(h2, env2.Subnet.Masked()), o.pod(hk, kl.Subnet)
	o.mustPing(p1, pk)
	o.mustPing(p2, pk)
	o.mustCarry(p1, pk)
	o.mustCarry(pk, p2)

	if _, err := o.cli.Delete(o.ctx, o.reg.Key(kl.Subnet)); err != nil {
		t.Fatal(err)
	}
	for _, n := range []*lab.Node{n1, n2} {
		o.within(5*time.Second, n.Host.Name+" drops the removed peer", func() error {
			if ok, err := knows(o.ctx, n, kl.Subnet); err != nil || ok {
				return fmt.Errorf("still routes %s (%v)", kl.Subnet, err)
			}
			return nil
		})
	}
	for _, x := range []struct {
		n *lab.Node
		p *lab.Pod
	}{{n1, p1}, {n2, p2}} {
		before, err := x.n.Counters(o.ctx)
		if err != nil {
			t.Fatal(err)
		}
		res, _ := x.p.Ping(o.ctx, pk.Addr, 2)
		if res.Received != 0 {
			t.Errorf("%s still reaches the removed peer's pod:\n%s", x.p.Addr, res.Output)
		}
		after, err := x.n.Counters(o.ctx)
		if err != nil {
			t.Fatal(err)
		}
		if after["no-route"] < before["no-route"]+2 {
			t.Errorf("%s: no-route %d -> %d, want +2 (counters %v)", x.n.Host.Name, before["no-route"], after["no-route"], after)
		}
		if after["tx-packets"] != before["tx-packets"] {
			t.Errorf("%s sent %d datagrams after the peer was removed", x.n.Host.Name, after["tx-packets"]-before["tx-packets"])
		}
	}
	// The rest of the overlay is untouched.
	o.mustPing(p1, p2)
	o.mustPing(p2, p1)
}

// TestCompactionWhileNodesRun: etcd is compacted while nodes run, once
// while a node is cut off from etcd (its watch comes back behind the
// compacted revision and must list again) and once while all are
// connected. Peers that joined meanwhile are learned by everyone.
func TestCompactionWhileNodesRun(t *testing.T) {
	o := newOverlay(t, network16)
	relay := o.relay("c1-etcd")
	h1, h2 := o.host("c1"), o.host("c2")
	n1, env1 := o.start(h1, "--etcd-endpoints", relay.endpoint())
	_, env2 := o.start(h2)
	p1, p2 := o.pod(h1, env1.Subnet.Masked()), o.pod(h2, env2.Subnet.Masked())
	o.mustPing(p1, p2)

	// c1 is cut off while c3 joins and the history is compacted away.
	mark := len(n1.Log())
	relay.cut()
	h3 := o.host("c3")
	_, env3 := o.start(h3)
	p3 := o.pod(h3, env3.Subnet.Masked())
	compact(t, o)
	relay.restore()
	o.mustPing(p1, p3)
	o.mustPing(p3, p1)
	o.mustPing(p2, p3)
	o.within(10*time.Second, "c1 reports that its watch fell behind compaction", func() error {
		if !strings.Contains(logSince(n1, mark), "fell behind etcd compaction") {
			return errNotYet
		}
		return nil
	})

	// Compacting under connected watchers, then a join.
	compact(t, o)
	h4 := o.host("c4")
	_, env4 := o.start(h4)
	p4 := o.pod(h4, env4.Subnet.Masked())
	for _, p := range []*lab.Pod{p1, p2, p3} {
		o.mustPing(p, p4)
	}
	o.mustPing(p4, p1)
	for _, n := range o.nodes {
		o.alive(n)
		peers, err := n.Peers(o.ctx)
		if err != nil {
			t.Fatal(err)
		}
		if len(peers) != 3 {
			t.Errorf("%s has %d peers, want 3: %+v", n.Host.Name, len(peers), peers)
		}
	}
}

// compact writes a key outside the overlay's prefix (so the revision
// moves past everything a cut-off watcher saw) and compacts etcd's history
// up to the current revision.
func compact(t *testing.T, o *overlay) {
	t.Helper()
	resp, err := o.cli.Put(o.ctx, "/e2e/compact-marker", time.Now().String())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := o.cli.Compact(o.ctx, resp.Header.Revision, clientv3.WithCompactPhysical()); err != nil {
		t.Fatal(err)
	}
	t.Logf("compacted etcd at revision %d", resp.Header.Revision)
}
