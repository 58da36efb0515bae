package e2e

import (
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"vxrouter/lab"
	"vxrouter/lease"
)

const network16 = `{"Network":"172.16.0.0/16","Backend":{"Type":"vxlan","VNI":1,"Port":8472}}`

// TestThreeNodes: three vxrouter nodes on one etcd take distinct subnets,
// write flannel-shaped subnet.env files and lease values (the third, run
// with --partial-checksums=false, byte for byte as flannel's; the others
// add "PartialCsum":true), and every pod reaches every other pod, with
// TCP and UDP too, checksums left pending between the first two.
func TestThreeNodes(t *testing.T) {
	o := newOverlay(t, network16)
	type member struct {
		host *lab.Host
		node *lab.Node
		env  lease.SubnetEnv
		pod  *lab.Pod
	}
	var ms []member
	for i := 1; i <= 3; i++ {
		h := o.host(fmt.Sprintf("n%d", i))
		var args []string
		if i == 3 {
			args = append(args, "--partial-checksums=false")
		}
		n, env := o.start(h, args...)
		ms = append(ms, member{host: h, node: n, env: env})
	}

	seen := map[netip.Prefix]string{}
	for i := range ms {
		m := &ms[i]
		subnet := m.env.Subnet.Masked()
		if prev, dup := seen[subnet]; dup {
			t.Fatalf("%s and %s both hold %s", prev, m.host.Name, subnet)
		}
		seen[subnet] = m.host.Name
		if subnet.Bits() != 24 || !o.cfg.Network.Contains(subnet.Addr()) {
			t.Errorf("%s: subnet %s is not a /24 of %s", m.host.Name, subnet, o.cfg.Network)
		}

		// subnet.env, byte for byte as flannel writes it.
		raw, err := os.ReadFile(m.node.SubnetFile)
		if err != nil {
			t.Fatal(err)
		}
		want := fmt.Sprintf("FLANNEL_NETWORK=172.16.0.0/16\nFLANNEL_SUBNET=%s/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=false\n", subnet.Addr().Next())
		if string(raw) != want {
			t.Errorf("%s subnet.env:\n%s\nwant:\n%s", m.host.Name, raw, want)
		}

		// The lease value, byte for byte as flannel writes it.
		mac, err := os.ReadFile(filepath.Join(m.node.Dir, "vtep-mac"))
		if err != nil {
			t.Fatal(err)
		}
		key := lease.DefaultPrefix + "/subnets/" + strings.Replace(subnet.String(), "/", "-", 1)
		resp, err := o.cli.Get(o.ctx, key)
		if err != nil || len(resp.Kvs) != 1 {
			t.Fatalf("get %s: %v (%d keys)", key, err, len(resp.Kvs))
		}
		partial := `,"PartialCsum":true`
		if i == 2 {
			partial = ""
		}
		wantValue := fmt.Sprintf(`{"PublicIP":"%s","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"%s"%s}}`,
			m.host.Underlay, strings.TrimSpace(string(mac)), partial)
		if got := string(resp.Kvs[0].Value); got != wantValue {
			t.Errorf("%s = %s\nwant %s", key, got, wantValue)
		}
		if resp.Kvs[0].Lease == 0 {
			t.Errorf("%s is not attached to an etcd lease", key)
		}
		if !regexp.MustCompile(`^([0-9a-f][26ae])(:[0-9a-f]{2}){5}$`).MatchString(strings.TrimSpace(string(mac))) {
			t.Errorf("VTEP MAC %s is not locally administered unicast", mac)
		}

		m.pod = o.pod(m.host, subnet)
	}

	for _, a := range ms {
		for _, b := range ms {
			if a.pod != b.pod {
				o.mustPing(a.pod, b.pod)
			}
		}
	}
	o.mustCarry(ms[0].pod, ms[1].pod) // checksums left pending
	o.mustCarry(ms[1].pod, ms[0].pod)
	o.mustCarry(ms[0].pod, ms[2].pod) // complete: n3 does not take them pending
	o.mustCarry(ms[2].pod, ms[1].pod)

	// Each node's admin endpoint shows the other two as peers, and
	// counts what it carried.
	for _, m := range ms {
		peers, err := m.node.Peers(o.ctx)
		if err != nil {
			t.Fatal(err)
		}
		if len(peers) != 2 {
			t.Errorf("%s has %d peers, want 2: %+v", m.host.Name, len(peers), peers)
		}
		for _, p := range peers {
			if p.Subnet == m.env.Subnet.Masked().String() || p.Port != 8472 {
				t.Errorf("%s: bad peer %+v", m.host.Name, p)
			}
			// Pending checksums only between two nodes that take them.
			if want := m.node != ms[2].node && p.PublicIP != ms[2].host.Underlay.String(); p.PartialCsum != want {
				t.Errorf("%s: peer %s partial checksums %v, want %v", m.host.Name, p.PublicIP, p.PartialCsum, want)
			}
		}
		c, err := m.node.Counters(o.ctx)
		if err != nil {
			t.Fatal(err)
		}
		// 2 peers x (1 + 3 echoes each way) at least.
		if c["tx-packets"] < 8 || c["rx-packets"] < 8 {
			t.Errorf("%s counters %v: want >= 8 packets each way", m.host.Name, c)
		}
	}
}

// TestRestartKeepsSubnetAndVTEP: a node that restarts, even without its
// subnet.env, gets the same subnet and VTEP MAC back, and its peer reaches
// it again.
func TestRestartKeepsSubnetAndVTEP(t *testing.T) {
	o := newOverlay(t, network16)
	h1, h2 := o.host("r1"), o.host("r2")
	n1, env1 := o.start(h1)
	_, env2 := o.start(h2)
	p1, p2 := o.pod(h1, env1.Subnet.Masked()), o.pod(h2, env2.Subnet.Masked())
	o.mustPing(p2, p1)

	mac1, err := os.ReadFile(filepath.Join(n1.Dir, "vtep-mac"))
	if err != nil {
		t.Fatal(err)
	}
	o.stop(n1)
	if err := os.Remove(n1.SubnetFile); err != nil {
		t.Fatal(err)
	}
	n1b, env1b := o.start(h1)
	if env1b.Subnet != env1.Subnet {
		t.Fatalf("after restart subnet %s, want %s", env1b.Subnet, env1.Subnet)
	}
	mac1b, err := os.ReadFile(filepath.Join(n1b.Dir, "vtep-mac"))
	if err != nil {
		t.Fatal(err)
	}
	if string(mac1b) != string(mac1) {
		t.Fatalf("after restart VTEP MAC %s, want %s", mac1b, mac1)
	}
	leases, _, err := o.reg.Leases(o.ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(leases) != 2 {
		t.Errorf("%d leases after restart, want 2: %+v", len(leases), leases)
	}
	o.mustPing(p2, p1)
	o.mustPing(p1, p2)
}
