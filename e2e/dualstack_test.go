package e2e

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"vxrouter/lab"
	"vxrouter/lease"
)

const (
	dualNetwork = `{"Network":"172.16.0.0/16","EnableIPv6":true,"IPv6Network":"fd00:16::/48","Backend":{"Type":"vxlan","VNI":1,"Port":8472}}`
	ipv6Network = `{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"fd00:16::/48","Backend":{"Type":"vxlan","VNI":1,"Port":8472}}`
)

// podIn adds a pod to h in the subnets v4 and v6 (either may be unset, not
// both), with MTU mtu (0: the lab's default, what flannel's subnet.env
// says on a 1500 underlay), as flannel's CNI would from subnet.env.
func (o *overlay) podIn(h *lab.Host, v4, v6 netip.Prefix, mtu int) *lab.Pod {
	o.t.Helper()
	c := lab.PodConfig{Subnet: v4, Subnet6: v6, MTU: mtu}
	if !v4.IsValid() {
		c.Subnet, c.Subnet6 = v6, netip.Prefix{}
	}
	p, err := h.AddPodConfig("pod", c)
	if err != nil {
		o.t.Fatal(err)
	}
	return p
}

// podOf adds a pod to a vxrouter node's host from its subnet.env.
func (o *overlay) podOf(h *lab.Host, env lease.SubnetEnv) *lab.Pod {
	o.t.Helper()
	return o.podIn(h, env.Lease(), env.IPv6Lease(), env.MTU)
}

// ownValue is a node's lease key and value in etcd; it fails the test
// unless there is exactly one key whose value has the node's owner address.
func (o *overlay) ownValue(owner netip.Addr) (string, string, int64) {
	o.t.Helper()
	leases, _, err := o.reg.Leases(o.ctx)
	if err != nil {
		o.t.Fatal(err)
	}
	for _, l := range leases {
		if l.Attrs.Owner() == owner {
			key := o.reg.LeaseKey(&l)
			resp, err := o.cli.Get(o.ctx, key)
			if err != nil || len(resp.Kvs) != 1 {
				o.t.Fatalf("get %s: %v", key, err)
			}
			return key, string(resp.Kvs[0].Value), resp.Kvs[0].Lease
		}
	}
	o.t.Fatalf("no lease of %s in %+v", owner, leases)
	return "", "", 0
}

// vtepMAC is the MAC a vxrouter node keeps in its state directory.
func vtepMAC(t *testing.T, n *lab.Node) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(n.Dir, "vtep-mac"))
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

// TestDualStackKernelInterop: in a dual-stack overlay, a vxrouter node
// and a node programmed as flannel programs flannel.1 and flannel-v6.1
// share one etcd; their pods ping each other and exchange TCP and UDP,
// over IPv4 and over IPv6, both ways. The vxrouter node's lease, key and
// value, and its subnet.env are flannel's dual-stack ones; the IPv6
// overlay goes over the IPv6 underlay, to flannel-v6.1's MAC.
func TestDualStackKernelInterop(t *testing.T) {
	o := newOverlay(t, dualNetwork)
	hv, hk := o.host("vx"), o.host("kv")
	nv, envV := o.start(hv)
	kl := o.flannelNode(hk, "d6:51:2e:80:5c:68")

	// subnet.env: both families, and an MTU that fits the IPv6 underlay.
	raw, err := os.ReadFile(nv.SubnetFile)
	if err != nil {
		t.Fatal(err)
	}
	want := fmt.Sprintf("FLANNEL_NETWORK=172.16.0.0/16\nFLANNEL_SUBNET=%s\nFLANNEL_IPV6_NETWORK=fd00:16::/48\nFLANNEL_IPV6_SUBNET=%s\nFLANNEL_MTU=1430\nFLANNEL_IPMASQ=false\n",
		envV.Subnet, envV.IPv6Subnet)
	if string(raw) != want || envV.IPv6Subnet.Bits() != 64 || envV.Subnet.Bits() != 24 {
		t.Fatalf("subnet.env:\n%s\nwant:\n%s", raw, want)
	}
	// The lease: flannel's dual-stack key, and a value with the one VTEP
	// MAC in BackendData and BackendV6Data.
	key, value, leaseID := o.ownValue(hv.Underlay)
	if want := lease.DefaultPrefix + "/subnets/" + lease.SubnetKey(envV.Lease()) + "&" + lease.SubnetKey(envV.IPv6Lease()); key != want || leaseID == 0 {
		t.Fatalf("the vxrouter node's key is %s (etcd lease %x), want %s on an etcd lease", key, leaseID, want)
	}
	mac := vtepMAC(t, nv)
	wantValue := fmt.Sprintf(`{"PublicIP":"%s","PublicIPv6":"%s","BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"%s","PartialCsum":true},"BackendV6Data":{"VNI":1,"VtepMAC":"%s","PartialCsum":true}}`,
		hv.Underlay, hv.Underlay6, mac, mac)
	if value != wantValue {
		t.Fatalf("value %s\nwant  %s", value, wantValue)
	}
	// One TUN device, both families' addresses and routes.
	out, err := hv.Run(o.ctx, "ip", "addr", "show", "dev", "vxr0")
	if err != nil || !strings.Contains(out, "mtu 1430") || !strings.Contains(out, "inet "+envV.Lease().Addr().String()+"/32") ||
		!strings.Contains(out, "inet6 "+envV.IPv6Lease().Addr().String()+"/128") {
		t.Fatalf("vxr0 on the vxrouter node: %v\n%s", err, out)
	}
	if out, err := hv.Run(o.ctx, "ip", "-6", "route", "show", "fd00:16::/48"); err != nil || !strings.Contains(out, "dev vxr0") {
		t.Fatalf("no IPv6 overlay route via vxr0: %v\n%s", err, out)
	}

	pv := o.podOf(hv, envV)
	pk := o.podIn(hk, kl.Subnet, kl.IPv6Subnet, 0)
	for _, c := range [][2]*lab.Pod{{pv, pk}, {pk, pv}} {
		o.mustPingAddr(c[0], c[1].Addr)
		o.mustPingAddr(c[0], c[1].Addr6)
	}
	for _, c := range [][2]*lab.Pod{{pv, pk}, {pk, pv}} {
		o.mustCarryTo(c[0], c[1], c[1].Addr)
		o.mustCarryTo(c[0], c[1], c[1].Addr6)
	}

	// The vxrouter node sends the IPv6 overlay to the kernel node's IPv6
	// underlay address and flannel-v6.1's MAC; the kernel node sends it
	// to the vxrouter node's IPv6 address (its FDB says so, and it came).
	peers, err := nv.Peers(o.ctx)
	if err != nil {
		t.Fatal(err)
	}
	byNet := map[string]lab.NodePeer{}
	for _, p := range peers {
		byNet[p.Subnet] = p
	}
	if p := byNet[kl.Subnet.String()]; p.PublicIP != hk.Underlay.String() || p.VtepMAC != kl.Attrs.VtepMAC.String() {
		t.Errorf("IPv4 peer %+v, want %s at %s", p, kl.Attrs.VtepMAC, hk.Underlay)
	}
	if p := byNet[kl.IPv6Subnet.String()]; p.PublicIP != hk.Underlay6.String() || p.VtepMAC != kl.Attrs.BackendV6Data.VtepMAC.String() || p.PartialCsum {
		t.Errorf("IPv6 peer %+v, want %s at %s, checksums complete", p, kl.Attrs.BackendV6Data.VtepMAC, hk.Underlay6)
	}
	if out, err := hk.Run(o.ctx, "bridge", "fdb", "show", "dev", "flannel-v6.1"); err != nil || !strings.Contains(out, mac+" dst "+hv.Underlay6.String()) {
		t.Errorf("flannel-v6.1's FDB lacks %s dst %s: %v\n%s", mac, hv.Underlay6, err, out)
	}
	c, err := nv.Counters(o.ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"decap-bad-checksum", "write-errors", "unknown-sender", "decap-bad-inner", "decap-foreign-mac", "decap-foreign-source"} {
		if c[k] != 0 {
			t.Errorf("the vxrouter node counted %s %d: %v", k, c[k], c)
		}
	}
	t.Logf("the vxrouter node's counters: %v", c)
}

// TestDualStackRestartKeepsSubnets: two vxrouter nodes in a dual-stack
// overlay reach each other over both families; one restarts without its
// subnet.env, finds its lease by PublicIP and keeps both subnets, and is
// reached again over IPv6.
func TestDualStackRestartKeepsSubnets(t *testing.T) {
	o := newOverlay(t, dualNetwork)
	h1, h2 := o.host("d1"), o.host("d2")
	n1, env1 := o.start(h1)
	_, env2 := o.start(h2)
	p1, p2 := o.podOf(h1, env1), o.podOf(h2, env2)
	o.mustPingAddr(p1, p2.Addr)
	o.mustPingAddr(p1, p2.Addr6)
	o.mustCarryTo(p2, p1, p1.Addr6)

	o.stop(n1)
	if err := os.Remove(n1.SubnetFile); err != nil {
		t.Fatal(err)
	}
	_, again := o.start(h1)
	if again.Lease() != env1.Lease() || again.IPv6Lease() != env1.IPv6Lease() {
		t.Fatalf("after a restart node 1 holds %s & %s, want %s & %s", again.Lease(), again.IPv6Lease(), env1.Lease(), env1.IPv6Lease())
	}
	o.mustPingAddr(p2, p1.Addr6)
	o.mustPingAddr(p1, p2.Addr)
}

// TestIPv6OnlyOverlay: two vxrouter nodes in an IPv6-only overlay, over
// an IPv6-only underlay: vxrouter's own key shape, flannel's IPv6-only
// value, subnet.env without IPv4, and pods that reach each other with
// ping, TCP and UDP both ways. Keys and values with garbage in their IPv6
// parts are skipped with a warning, and the nodes forward on; a connect to
// an IPv6 address no lease covers fails at once.
func TestIPv6OnlyOverlay(t *testing.T) {
	o := newOverlay(t, ipv6Network)
	h1, h2 := o.host("s1"), o.host("s2")
	n1, env1 := o.start(h1)
	_, env2 := o.start(h2)
	for _, c := range []struct {
		h   *lab.Host
		n   *lab.Node
		env lease.SubnetEnv
	}{{h1, n1, env1}, {h2, o.nodes[1], env2}} {
		raw, err := os.ReadFile(c.n.SubnetFile)
		if err != nil {
			t.Fatal(err)
		}
		want := fmt.Sprintf("FLANNEL_IPV6_NETWORK=fd00:16::/48\nFLANNEL_IPV6_SUBNET=%s\nFLANNEL_MTU=1430\nFLANNEL_IPMASQ=false\n", c.env.IPv6Subnet)
		if string(raw) != want {
			t.Fatalf("%s subnet.env:\n%s\nwant:\n%s", c.h.Name, raw, want)
		}
		key, value, _ := o.ownValue(c.h.Underlay6)
		if want := lease.DefaultPrefix + "/subnets/" + lease.SubnetKey(c.env.IPv6Lease()); key != want {
			t.Fatalf("%s key %s, want %s", c.h.Name, key, want)
		}
		mac := vtepMAC(t, c.n)
		if want := fmt.Sprintf(`{"PublicIP":"0.0.0.0","PublicIPv6":"%s","BackendType":"vxlan","BackendV6Data":{"VNI":1,"VtepMAC":"%s","PartialCsum":true}}`, c.h.Underlay6, mac); value != want {
			t.Fatalf("%s value %s\nwant %s", c.h.Name, value, want)
		}
	}
	if env1.IPv6Lease() == env2.IPv6Lease() {
		t.Fatalf("both nodes hold %s", env1.IPv6Lease())
	}
	p1, p2 := o.podOf(h1, env1), o.podOf(h2, env2)
	o.mustPing(p1, p2)
	o.mustPing(p2, p1)

	// Each garbage key, and what node 1's warning about it says.
	good := `{"PublicIP":"0.0.0.0","PublicIPv6":"fd00:213::9","BackendType":"vxlan","BackendV6Data":{"VNI":1,"VtepMAC":"02:00:00:00:00:09"}}`
	for _, g := range []struct{ key, value, warning string }{
		{"fd00:16:0:77::1-64", good, "host bits set"},
		{"fd00:16:0:78::-129", good, "is not a prefix length 0..128"},
		{"zz::-64", good, "is not an IPv4 or IPv6 address"},
		{"fd00:16:0:79::-64", strings.Replace(good, `"VNI":1,`, ``, 1), "BackendV6Data.VNI is missing"},
		{"fd00:16:0:7a::-64", strings.Replace(good, `fd00:213::9`, `::`, 1), "PublicIPv6 :: is unspecified"},
		{"fd00:16:0:7b::-64", strings.Replace(good, `"BackendV6Data"`, `"BackendData"`, 1), "BackendV6Data is missing"},
		{"fd00:16:0:7c::-64", strings.Replace(good, `fd00:213::9`, h1.Underlay6.String(), 1), "peer skipped: it has this node's public IP"},
	} {
		if _, err := o.cli.Put(o.ctx, lease.DefaultPrefix+"/subnets/"+g.key, g.value); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(o.ctx, 10*time.Second)
		for !strings.Contains(n1.Log(), g.warning) {
			if ctx.Err() != nil {
				cancel()
				t.Fatalf("node 1 never warned %q about %s:\n%s", g.warning, g.key, n1.Log())
			}
			time.Sleep(50 * time.Millisecond)
		}
		cancel()
	}
	peers, err := n1.Peers(o.ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(peers) != 1 || peers[0].Subnet != env2.IPv6Lease().String() || peers[0].PublicIP != h2.Underlay6.String() {
		t.Fatalf("node 1's peers = %+v, want only node 2's %s at %s", peers, env2.IPv6Lease(), h2.Underlay6)
	}
	o.mustCarry(p1, p2)
	o.mustCarry(p2, p1)

	// An IPv6 address no lease covers is answered at once (ICMPv6
	// destination unreachable, from the overlay network's first address).
	nowhere := netip.MustParseAddr("fd00:16:0:ffff::9")
	if env1.IPv6Lease().Contains(nowhere) || env2.IPv6Lease().Contains(nowhere) {
		t.Skip("a node took the last subnet")
	}
	start := time.Now()
	err = p1.Do(func() error {
		c, err := net.DialTimeout("tcp6", netip.AddrPortFrom(nowhere, 80).String(), 4*time.Second)
		if err == nil {
			c.Close()
		}
		return err
	})
	if took := time.Since(start); !errors.Is(err, syscall.ENETUNREACH) || took > 3*time.Second {
		t.Fatalf("connect to %s: %v after %s; want network unreachable at once", nowhere, err, took)
	}
}

// TestIPv6BadInputFailsCleanly: an overlay that carries IPv6 on a host
// that cannot carry it, or a config that cannot work, stops the node
// before it takes a lease, with an error that says what to fix, and
// nothing left behind.
func TestIPv6BadInputFailsCleanly(t *testing.T) {
	o := newOverlay(t, network16) // an IPv4 lab: its hosts have no IPv6 underlay
	h := o.host("six")
	put := func(config string) {
		t.Helper()
		if _, err := o.cli.Put(o.ctx, "/coreos.com/network/config", config); err != nil {
			t.Fatal(err)
		}
	}
	run := func(t *testing.T, shell string) {
		t.Helper()
		if out, err := h.Run(o.ctx, "sh", "-c", shell); err != nil {
			t.Fatalf("%v: %s", err, out)
		}
	}
	for _, tc := range []struct {
		name   string
		config string
		setup  string // a shell command in the host first; the cases build on each other
		args   []string
		want   string
	}{
		{name: "no IPv6 address", config: dualNetwork,
			want: `interface eth0 has no global or unique-local IPv6 address, but the overlay's config carries IPv6`},
		{name: "IPv6-only, no IPv6 address", config: ipv6Network,
			want: `interface eth0 has no global or unique-local IPv6 address`},
		{name: "IPv6 disabled", config: dualNetwork, setup: "sysctl -q -w net.ipv6.conf.eth0.disable_ipv6=1",
			want: `IPv6 is off on interface eth0 (net.ipv6.conf.eth0.disable_ipv6=1)`},
		{name: "Backend.MTU too small for IPv6", config: `{"Network":"172.16.0.0/16","EnableIPv6":true,"IPv6Network":"fd00:16::/48","Backend":{"Type":"vxlan","MTU":1300}}`,
			want: `Backend.MTU 1300 is below 1350`},
		{name: "no family", config: `{"EnableIPv4":false,"Backend":{"Type":"vxlan"}}`,
			want: `the overlay carries no address family`},
		{name: "public IPv6 not on the host", config: dualNetwork,
			setup: "sysctl -q -w net.ipv6.conf.eth0.disable_ipv6=0 && ip addr add fd00:213::9/64 dev eth0 nodad",
			args:  []string{"--public-ipv6", "fd00:213::99"}, want: `source address fd00:213::99 is not an address of this host`},
		{name: "underlay MTU too small for IPv6", config: dualNetwork, setup: "ip link set eth0 mtu 1340",
			want: `overlay MTU 1270 is too small: underlay eth0 has MTU 1340 and VXLAN over IPv6 takes 70; the overlay needs at least 1280`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			put(tc.config)
			if tc.setup != "" {
				run(t, tc.setup)
			}
			log := o.startFailing(t, h, tc.args...)
			if !strings.Contains(log, tc.want) {
				t.Errorf("log does not say %q:\n%s", tc.want, log)
			}
			if tc.name == "IPv6 disabled" {
				run(t, "sysctl -q -w net.ipv6.conf.eth0.disable_ipv6=0")
			}
		})
		if t.Failed() {
			return
		}
	}
	// With the address the host has, and the MTU back, it runs: what
	// failed above was the input, not the host.
	run(t, "ip link set eth0 mtu 1500")
	put(dualNetwork)
	n, env := o.start(h)
	if !env.IPv6Subnet.IsValid() || env.MTU != 1430 {
		t.Fatalf("the node's subnet.env: %+v", env)
	}
	if key, _, _ := o.ownValue(h.Underlay); !strings.Contains(key, "&fd00:16:") {
		t.Fatalf("the node's key %s is not dual-stack", key)
	}
	o.stop(n)
}

// TestIPMasqDualStack: with --ip-masq in a dual-stack overlay, flannel's
// masquerading rules are there for each family (iptables and ip6tables),
// and a pod reaches a host outside the overlay, with no route back to pod
// addresses, over IPv4 and over IPv6, seen as the node's address of each.
func TestIPMasqDualStack(t *testing.T) {
	o := newOverlay(t, dualNetwork)
	h, out := o.host("m6"), o.host("outside")
	n, env := o.start(h, "--ip-masq")
	if !env.IPMasq {
		t.Fatal("subnet.env says FLANNEL_IPMASQ=false with --ip-masq")
	}
	want4 := masqChain(o.cfg.Network, env.Lease())
	if got := o.natRules(h); !slices.Equal(got, want4) {
		t.Fatalf("iptables nat rules:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want4, "\n"))
	}
	want6 := masqChain(o.cfg.IPv6Network, env.IPv6Lease())
	for i := range want6 {
		want6[i] = strings.Replace(want6[i], "224.0.0.0/4", "ff00::/8", 1)
	}
	raw, err := h.Run(o.ctx, "ip6tables", "-t", "nat", "-S")
	if err != nil {
		t.Fatal(err)
	}
	var got6 []string
	for _, l := range strings.Split(raw, "\n") {
		if strings.Contains(l, "FLANNEL-POSTRTG") {
			got6 = append(got6, strings.TrimSpace(l))
		}
	}
	if !slices.Equal(got6, want6) {
		t.Fatalf("ip6tables nat rules:\n%s\nwant:\n%s", strings.Join(got6, "\n"), strings.Join(want6, "\n"))
	}
	p := o.podOf(h, env)
	for _, c := range []struct{ to, node netip.Addr }{{out.Underlay, h.Underlay}, {out.Underlay6, h.Underlay6}} {
		if got := o.seenAs(p, out, netip.AddrPortFrom(c.to, 7001)); got != c.node {
			t.Fatalf("the outside host saw the pod's connection to %s come from %s, want the node's %s", c.to, got, c.node)
		}
	}
	o.stop(n)
}

// TestDualStackDirectRouting: with Backend.DirectRouting in a dual-stack
// overlay, two vxrouter nodes on one segment route each other's subnets
// of both families straight over the underlay (the IPv6 one via the
// peer's public IPv6), as flannel does, and their pods' traffic of both
// families never enters the forwarders.
func TestDualStackDirectRouting(t *testing.T) {
	o := newOverlay(t, `{"Network":"172.16.0.0/16","EnableIPv6":true,"IPv6Network":"fd00:16::/48","Backend":{"Type":"vxlan","DirectRouting":true}}`)
	a, b := o.host("da"), o.host("db")
	na, envA := o.start(a)
	nb, envB := o.start(b)
	o.waitRoute(a, envB.Lease(), directVia(envB.Lease(), b.Underlay))
	route6 := func(h *lab.Host, subnet netip.Prefix) string {
		out, err := h.Run(o.ctx, "ip", "-6", "route", "show", "exact", subnet.String())
		if err != nil {
			t.Fatal(err)
		}
		return strings.TrimSpace(out)
	}
	o.within(20*time.Second, "a's IPv6 direct route", func() error {
		if got, want := route6(a, envB.IPv6Lease()), directVia(envB.IPv6Lease(), b.Underlay6); !strings.HasPrefix(got, want) {
			return fmt.Errorf("%q, want %q", got, want)
		}
		return nil
	})
	pa, pb := o.podOf(a, envA), o.podOf(b, envB)
	o.mustPingAddr(pa, pb.Addr6) // b's IPv6 direct route may come a moment after a's
	before := [2][2]uint64{o.forwarded(na), o.forwarded(nb)}
	for _, c := range [][2]*lab.Pod{{pa, pb}, {pb, pa}} {
		o.mustPingAddr(c[0], c[1].Addr)
		o.mustPingAddr(c[0], c[1].Addr6)
		o.mustCarryTo(c[0], c[1], c[1].Addr6)
	}
	if after := [2][2]uint64{o.forwarded(na), o.forwarded(nb)}; after != before {
		t.Errorf("direct traffic went through the forwarders: (tx, rx) of a and b %v before, %v after", before, after)
	}
}
