package e2e

import (
	"context"
	"fmt"
	"net/netip"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"vxrouter/lab"
	"vxrouter/lease"
)

// TestJoinRace: 15 nodes start at the same moment on a network with 15
// subnets, so they pick the same free subnets and the last ones must find
// the few left. Each must end with a subnet of its own, matching its key in
// etcd, none may exit, every node must learn the 14 others, and a ring of
// pods shows each one forwards.
func TestJoinRace(t *testing.T) {
	const nodes = 15
	// 10.50.0.0/20 in /24s is 16 subnets; SubnetMin skips the first.
	o := newOverlay(t, `{"Network":"10.50.0.0/20","SubnetLen":24,"Backend":{"Type":"vxlan"}}`)
	hosts := make([]*lab.Host, nodes)
	for i := range hosts {
		hosts[i] = o.host(fmt.Sprintf("j%d", i+1))
	}

	// Every process is launched before any is waited on.
	ns := make([]*lab.Node, nodes)
	for i, h := range hosts {
		n, err := h.StartVXRouter(lab.NodeOptions{
			Binary: binary,
			Etcd:   o.etcd.UnixEndpoint(),
			Dir:    filepath.Join(o.dir, h.Name),
			Args:   []string{"--log-level", "debug"},
		})
		if err != nil {
			t.Fatal(err)
		}
		ns[i] = n
		o.nodes = append(o.nodes, n)
	}
	launched := time.Now()
	envs := make([]lease.SubnetEnv, nodes)
	for i, n := range ns {
		ctx, cancel := context.WithTimeout(o.ctx, 30*time.Second)
		env, err := n.WaitSubnet(ctx)
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		envs[i] = env
	}
	t.Logf("%d nodes have their subnets %s after launch", nodes, time.Since(launched).Round(time.Millisecond))

	owner := map[netip.Prefix]string{}
	for i, n := range ns {
		s := envs[i].Subnet.Masked()
		if prev, dup := owner[s]; dup {
			t.Errorf("%s and %s both hold %s", prev, n.Host.Name, s)
		}
		owner[s] = n.Host.Name
		if !o.cfg.Contains(s) {
			t.Errorf("%s holds %s, outside %s", n.Host.Name, s, o.cfg.Network)
		}
		if _, _, err := o.ownKey(o.ctx, n, s); err != nil {
			t.Errorf("%s's subnet.env says %s but etcd: %v", n.Host.Name, s, err)
		}
	}
	leases, _, err := o.reg.Leases(o.ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(leases) != nodes {
		t.Errorf("%d keys in etcd, want %d: %+v", len(leases), nodes, leases)
	}
	if t.Failed() {
		t.FailNow()
	}

	// How contended it was: every lost race is logged at debug level.
	lostRaces := regexp.MustCompile(`msg="lost a race for a subnet`)
	races := 0
	for _, n := range ns {
		races += len(lostRaces.FindAllString(n.Log(), -1))
	}
	t.Logf("%d races for a subnet were lost and retried", races)

	for _, n := range ns {
		o.within(10*time.Second, n.Host.Name+" learns every peer", func() error {
			peers, err := n.Peers(o.ctx)
			if err != nil {
				return err
			}
			if len(peers) != nodes-1 {
				return fmt.Errorf("%d peers, want %d", len(peers), nodes-1)
			}
			return nil
		})
	}

	pods := make([]*lab.Pod, nodes)
	for i, h := range hosts {
		pods[i] = o.pod(h, envs[i].Subnet.Masked())
	}
	// The ring: pod i pings pod i+1, all at once.
	errs := make([]error, nodes)
	var wg sync.WaitGroup
	for i := range pods {
		wg.Go(func() { errs[i] = reach(o.ctx, pods[i], pods[(i+1)%nodes]) })
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	for _, n := range ns {
		o.alive(n)
		if log := n.Log(); strings.Contains(log, "level=ERROR") {
			t.Errorf("%s logged an error:\n%s", n.Host.Name, log)
		}
	}
}
