package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"vxrouter/lab"
	"vxrouter/lease"
)

// shortTTL is the shortest lease TTL `run` accepts; it makes an outage
// longer than a lease cheap to test.
const shortTTL = 10 * time.Second

// TestEtcdOutage: etcd stops for longer than the nodes' lease TTL. Pods
// keep pinging each other without losing an echo, the nodes keep running
// and retry their renewals with backoff and jitter. When etcd starts again
// on the same data, every node renews its lease on the same subnet with
// the same value, and a node that joins afterwards is learned by the old
// ones.
func TestEtcdOutage(t *testing.T) {
	o := newOverlay(t, network16)
	type member struct {
		host *lab.Host
		node *lab.Node
		env  lease.SubnetEnv
		pod  *lab.Pod
		kv   []byte // the lease value before the outage
		id   clientv3.LeaseID
	}
	ms := make([]*member, 2)
	for i, name := range []string{"o1", "o2"} {
		m := &member{host: o.host(name)}
		m.node, m.env = o.start(m.host, "--lease-ttl", shortTTL.String())
		m.pod = o.pod(m.host, m.env.Subnet.Masked())
		ms[i] = m
	}
	o.mustPing(ms[0].pod, ms[1].pod)
	o.mustPing(ms[1].pod, ms[0].pod)
	for _, m := range ms {
		resp, err := o.cli.Get(o.ctx, o.reg.Key(m.env.Subnet.Masked()))
		if err != nil || len(resp.Kvs) != 1 {
			t.Fatalf("get %s's key: %v", m.host.Name, err)
		}
		m.kv, m.id = resp.Kvs[0].Value, clientv3.LeaseID(resp.Kvs[0].Lease)
	}

	// The outage, pinging both ways all along.
	pingers := []*pinger{startPinger(o.ctx, ms[0].pod, ms[1].pod), startPinger(o.ctx, ms[1].pod, ms[0].pod)}
	marks := make([]int, len(ms))
	for i, m := range ms {
		marks[i] = len(m.node.Log())
	}
	outage := shortTTL + 5*time.Second
	h3 := o.host("o3")
	endpoint := o.etcd.UnixEndpoint() // the same once etcd is back
	o.stopEtcd()
	down := time.Now()
	time.Sleep(outage / 2)
	// A node that boots while etcd is down waits for it (--etcd-timeout).
	n3, err := h3.StartVXRouter(lab.NodeOptions{
		Binary: binary,
		Etcd:   endpoint,
		Dir:    filepath.Join(o.dir, h3.Name),
		Args:   []string{"--log-level", "debug", "--lease-ttl", shortTTL.String(), "--etcd-timeout", "90s"},
	})
	if err != nil {
		t.Fatal(err)
	}
	o.nodes = append(o.nodes, n3)
	time.Sleep(outage - time.Since(down))
	for _, m := range ms {
		o.alive(m.node)
	}
	o.alive(n3)
	o.startEtcd()
	back := time.Now()
	t.Logf("etcd was down for %s", back.Sub(down).Round(time.Millisecond))

	// Each node renews its lease: same subnet, same value, alive.
	renewed := regexp.MustCompile(`msg="renewed lease"`)
	for i, m := range ms {
		o.within(30*time.Second, m.host.Name+" renews its lease after the outage", func() error {
			if !renewed.MatchString(logSince(m.node, marks[i])) {
				return errNotYet
			}
			return nil
		})
		t.Logf("%s renewed its lease %s after etcd came back", m.host.Name, time.Since(back).Round(100*time.Millisecond))
		subnet := m.env.Subnet.Masked()
		id, ttl, err := o.ownKey(o.ctx, m.node, subnet)
		if err != nil {
			t.Fatalf("%s after the outage: %v", m.host.Name, err)
		}
		resp, err := o.cli.Get(o.ctx, o.reg.Key(subnet))
		if err != nil || len(resp.Kvs) != 1 {
			t.Fatalf("get %s's key: %v", m.host.Name, err)
		}
		if !bytes.Equal(resp.Kvs[0].Value, m.kv) {
			t.Errorf("%s's key after the outage = %s, want %s", m.host.Name, resp.Kvs[0].Value, m.kv)
		}
		env, err := lease.ReadSubnetEnv(m.node.SubnetFile)
		if err != nil || env != m.env {
			t.Errorf("%s's subnet.env after the outage: %+v, %v; want %+v", m.host.Name, env, err, m.env)
		}
		t.Logf("%s: subnet %s, etcd lease %x (before: %x), TTL left %ds", m.host.Name, subnet, int64(id), int64(m.id), ttl)
	}

	for i, p := range pingers {
		sent, received, lost := p.finish()
		t.Logf("pinger %d: %d/%d echoes answered through the outage", i, received, sent)
		if sent < int(outage/(250*time.Millisecond)) || received != sent {
			t.Errorf("pinger %d: %d of %d echoes answered:\n%s", i, received, sent, strings.Join(lost, "\n"))
		}
	}

	// The renewals were retried while etcd was down: several attempts,
	// spaced by a backoff with jitter, and no crash.
	retry := regexp.MustCompile(`msg="renew lease failed; retrying".* in=(\S+)`)
	for i, m := range ms {
		o.alive(m.node)
		during := logSince(m.node, marks[i])
		found := retry.FindAllStringSubmatch(during, -1)
		delays := map[string]bool{}
		for _, f := range found {
			delays[f[1]] = true
		}
		t.Logf("%s retried its renewal %d times; delays %v", m.host.Name, len(found), keys(delays))
		// Jittered delays never repeat exactly; equal ones mean nodes
		// that lost etcd together retry in step.
		if len(found) < 3 || len(delays) != len(found) {
			t.Errorf("%s: want at least 3 renewal retries, each with its own jittered delay; got %d with delays %v:\n%s",
				m.host.Name, len(found), keys(delays), during)
		}
		if strings.Contains(during, "panic") || strings.Contains(during, "level=ERROR") {
			t.Errorf("%s logged an error or panic during the outage:\n%s", m.host.Name, during)
		}
	}

	// The node that booted during the outage comes up, and one that
	// joins now; the old ones learn both.
	ctx, cancel := context.WithTimeout(o.ctx, 60*time.Second)
	defer cancel()
	env3, err := n3.WaitSubnet(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("o3, started during the outage, got %s %s after etcd came back", env3.Subnet, time.Since(back).Round(100*time.Millisecond))
	h4 := o.host("o4")
	_, env4 := o.start(h4, "--lease-ttl", shortTTL.String())
	p3, p4 := o.pod(h3, env3.Subnet.Masked()), o.pod(h4, env4.Subnet.Masked())
	for _, m := range ms {
		for _, p := range []*lab.Pod{p3, p4} {
			o.mustPing(m.pod, p)
			o.mustPing(p, m.pod)
		}
	}
}

// errNotYet is what a condition returns to within while it waits.
var errNotYet = errors.New("not yet")

func keys(m map[string]bool) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

// TestExpiredLeaseTakenBack: one node loses etcd (a partition: etcd stays
// up for the others) for longer than its lease TTL, so its key expires and
// the other node drops its route. When the partition heals, the node takes
// the same subnet back, with its PublicIP and VTEP MAC, without
// restarting, and the other node reaches it again.
func TestExpiredLeaseTakenBack(t *testing.T) {
	o := newOverlay(t, network16)
	relay := o.relay("x1-etcd")
	h1, h2 := o.host("x1"), o.host("x2")
	n1, env1 := o.start(h1, "--lease-ttl", shortTTL.String(), "--etcd-endpoints", relay.endpoint())
	n2, env2 := o.start(h2, "--lease-ttl", shortTTL.String())
	s1 := env1.Subnet.Masked()
	p1, p2 := o.pod(h1, s1), o.pod(h2, env2.Subnet.Masked())
	o.mustPing(p1, p2)
	o.mustPing(p2, p1)
	id1, _, err := o.ownKey(o.ctx, n1, s1)
	if err != nil {
		t.Fatal(err)
	}

	mark := len(n1.Log())
	relay.cut()
	cut := time.Now()
	o.within(2*shortTTL, "x1's key expires while it cannot reach etcd", func() error {
		resp, err := o.cli.Get(o.ctx, o.reg.Key(s1))
		if err != nil {
			return err
		}
		if len(resp.Kvs) != 0 {
			return errNotYet
		}
		return nil
	})
	t.Logf("x1's key expired %s after the partition", time.Since(cut).Round(100*time.Millisecond))
	o.within(5*time.Second, "x2 drops x1's route", func() error {
		if ok, err := knows(o.ctx, n2, s1); err != nil || ok {
			return fmt.Errorf("x2 still routes %s (%v)", s1, err)
		}
		return nil
	})
	before, err := n2.Counters(o.ctx)
	if err != nil {
		t.Fatal(err)
	}
	if res, _ := p2.Ping(o.ctx, p1.Addr, 2); res.Received != 0 {
		t.Fatalf("x2's pod still reaches x1's pod without a lease:\n%s", res.Output)
	}
	after, err := n2.Counters(o.ctx)
	if err != nil {
		t.Fatal(err)
	}
	if after["no-route"] < before["no-route"]+2 {
		t.Errorf("x2's no-route counter went from %d to %d, want +2", before["no-route"], after["no-route"])
	}
	o.alive(n1)

	relay.restore()
	healed := time.Now()
	var id1b clientv3.LeaseID
	o.within(30*time.Second, "x1 takes its subnet back", func() error {
		id1b, _, err = o.ownKey(o.ctx, n1, s1)
		return err
	})
	t.Logf("x1 took %s back %s after the partition healed (etcd lease %x, was %x)",
		s1, time.Since(healed).Round(100*time.Millisecond), int64(id1b), int64(id1))
	if id1b == id1 {
		t.Errorf("x1's key is on its old etcd lease %x, which expired", int64(id1))
	}
	if env, err := lease.ReadSubnetEnv(n1.SubnetFile); err != nil || env != env1 {
		t.Errorf("x1's subnet.env: %+v, %v; want %+v", env, err, env1)
	}
	o.mustPing(p2, p1)
	o.mustPing(p1, p2)
	o.alive(n1)
	log := logSince(n1, mark)
	for _, want := range []string{`msg="lost our subnet; acquiring again"`, `msg="lease re-acquired"`} {
		if !strings.Contains(log, want) {
			t.Errorf("x1's log lacks %s:\n%s", want, log)
		}
	}
}
