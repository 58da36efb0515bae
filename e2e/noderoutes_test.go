package e2e

import (
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"vxrouter/lab"
	"vxrouter/lease"
	"vxrouter/node"
)

// What flannel's node surface a drop-in needs: Backend.DirectRouting,
// Backend.MTU, --iface (repeated), --iface-regex, --iface-can-reach.

const directConfig = `{"Network":"172.16.0.0/16","Backend":{"Type":"vxlan","DirectRouting":true}}`

// segment makes r the router of the segment 10.213.1.0/24.
func (o *overlay) segment(r *lab.Host) *lab.Segment {
	o.t.Helper()
	s, err := o.lab.AddSegment(r, netip.MustParsePrefix("10.213.1.0/24"))
	if err != nil {
		o.t.Fatal(err)
	}
	return s
}

// segmentHost adds a host to s.
func (o *overlay) segmentHost(s *lab.Segment, name string) *lab.Host {
	o.t.Helper()
	h, err := s.AddHost(name)
	if err != nil {
		o.t.Fatal(err)
	}
	return h
}

// route is `ip route show exact SUBNET` on h, trimmed: "" for none.
func (o *overlay) route(h *lab.Host, subnet netip.Prefix) string {
	o.t.Helper()
	out, err := h.Run(o.ctx, "ip", "route", "show", "exact", subnet.String())
	if err != nil {
		o.t.Fatal(err)
	}
	return strings.TrimSpace(out)
}

// waitRoute waits until h's route to subnet is want (a node learns a
// lease within moments).
func (o *overlay) waitRoute(h *lab.Host, subnet netip.Prefix, want string) {
	o.t.Helper()
	o.within(20*time.Second, fmt.Sprintf("%s's route to %s", h.Name, subnet), func() error {
		if got := o.route(h, subnet); got != want {
			return fmt.Errorf("%q, want %q", got, want)
		}
		return nil
	})
}

// directVia is the route a vxrouter node makes for a direct peer.
func directVia(subnet netip.Prefix, via netip.Addr) string {
	return fmt.Sprintf("%s via %s dev eth0 proto %d", subnet, via, node.RouteProtocol)
}

// forwarded is how many packets n's forwarder has carried each way.
func (o *overlay) forwarded(n *lab.Node) [2]uint64 {
	o.t.Helper()
	c, err := n.Counters(o.ctx)
	if err != nil {
		o.t.Fatal(err)
	}
	return [2]uint64{c["tx-packets"], c["rx-packets"]}
}

// startAgain starts a node on h again, its log of this run only.
func (o *overlay) startAgain(h *lab.Host, args ...string) (*lab.Node, lease.SubnetEnv) {
	o.t.Helper()
	os.Remove(filepath.Join(o.dir, h.Name, "vxrouter.log"))
	return o.start(h, args...)
}

// fakePeer writes a lease for subnet at publicIP, as a node elsewhere
// would (a key without an etcd lease: it stays while the test runs).
func (o *overlay) fakePeer(subnet netip.Prefix, publicIP string) {
	o.t.Helper()
	v := `{"PublicIP":"` + publicIP + `","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"02:00:00:00:00:77"}}`
	if _, err := o.cli.Put(o.ctx, o.reg.Key(subnet), v); err != nil {
		o.t.Fatal(err)
	}
}

// TestDirectRouting: with Backend.DirectRouting, two vxrouter nodes on
// one segment route each other's subnet through the underlay, and their
// pods' traffic never enters the TUN device; a third node, behind a
// router, is reached through the overlay, both ways. The routes follow a
// lease as it comes, moves and goes; they stay when a node stops (as
// flannel's do: direct traffic flows on without the node), and a node
// that starts again removes those whose peers went meanwhile.
func TestDirectRouting(t *testing.T) {
	o := newOverlay(t, directConfig)
	a, b, r := o.host("a"), o.host("b"), o.host("r")
	c := o.segmentHost(o.segment(r), "c")
	na, envA := o.start(a)
	nb, envB := o.start(b)
	_, envC := o.start(c)
	sa, sb, sc := envA.Subnet.Masked(), envB.Subnet.Masked(), envC.Subnet.Masked()
	pa, pb, pc := o.pod(a, sa), o.pod(b, sb), o.pod(c, sc)

	o.waitRoute(a, sb, directVia(sb, b.Underlay))
	o.waitRoute(b, sa, directVia(sa, a.Underlay))
	o.within(20*time.Second, "a learns c", func() error {
		peers, err := na.Peers(o.ctx)
		if err != nil {
			return err
		}
		want := map[string]string{sb.String(): b.Underlay.String(), sc.String(): ""}
		got := map[string]string{}
		for _, p := range peers {
			got[p.Subnet] = p.DirectRoute
		}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			return fmt.Errorf("a's peers and their direct routes %v, want %v", got, want)
		}
		return nil
	})
	for _, x := range []struct {
		h *lab.Host
		s netip.Prefix
	}{{a, sc}, {b, sc}, {c, sa}, {c, sb}} {
		if got := o.route(x.h, x.s); got != "" {
			t.Errorf("%s routes %s outside the overlay: %s", x.h.Name, x.s, got)
		}
	}

	before := [2][2]uint64{o.forwarded(na), o.forwarded(nb)}
	o.mustPing(pa, pb)
	o.mustPing(pb, pa)
	o.mustCarry(pa, pb)
	o.mustCarry(pb, pa)
	if after := [2][2]uint64{o.forwarded(na), o.forwarded(nb)}; after != before {
		t.Errorf("direct traffic went through the forwarders: (tx, rx) of a and b %v before, %v after", before, after)
	}
	o.mustPing(pa, pc)
	o.mustPing(pc, pb)
	o.mustCarry(pc, pa)
	if got := o.forwarded(na); got[0] <= before[0][0] || got[1] <= before[0][1] {
		t.Errorf("a's forwarder carried nothing to and from c: (tx, rx) %v, %v before", got, before[0])
	}

	// A lease comes on the segment, moves on it, moves behind the
	// router, comes back and goes.
	// (On a /24 no node took: they pick theirs at random.)
	var s netip.Prefix
	for x := byte(250); s == (netip.Prefix{}) || s == sa || s == sb || s == sc; x-- {
		s = netip.PrefixFrom(netip.AddrFrom4([4]byte{172, 16, x, 0}), 24)
	}
	for _, step := range []struct{ ip, want string }{
		{"10.213.0.77", directVia(s, netip.MustParseAddr("10.213.0.77"))},
		{"10.213.0.78", directVia(s, netip.MustParseAddr("10.213.0.78"))},
		{"10.213.1.77", ""},
		{"10.213.0.77", directVia(s, netip.MustParseAddr("10.213.0.77"))},
	} {
		o.fakePeer(s, step.ip)
		o.waitRoute(a, s, step.want)
	}
	if _, err := o.cli.Delete(o.ctx, o.reg.Key(s)); err != nil {
		t.Fatal(err)
	}
	o.waitRoute(a, s, "")

	// a stops: its direct routes stay, and a's pods still reach b's.
	o.fakePeer(s, "10.213.0.77")
	o.waitRoute(a, s, directVia(s, netip.MustParseAddr("10.213.0.77")))
	o.stop(na)
	if got := o.route(a, sb); got != directVia(sb, b.Underlay) {
		t.Fatalf("a's route to b after a stopped: %q", got)
	}
	o.mustPing(pa, pb)
	// The lease goes while a is down; a, started again, removes its
	// route and keeps b's.
	if _, err := o.cli.Delete(o.ctx, o.reg.Key(s)); err != nil {
		t.Fatal(err)
	}
	na, env := o.startAgain(a)
	if env.Subnet.Masked() != sa {
		t.Fatalf("a came back on %s, not %s", env.Subnet.Masked(), sa)
	}
	o.waitRoute(a, s, "")
	if got := o.route(a, sb); got != directVia(sb, b.Underlay) {
		t.Errorf("a's route to b after a restarted: %q", got)
	}
	if !strings.Contains(na.Log(), "left by an earlier run") {
		t.Errorf("a did not say it removed an earlier run's route:\n%s", na.Log())
	}
	o.mustPing(pa, pb)
	o.mustPing(pa, pc)
}

// TestDirectRoutingKernel: a vxrouter node and a kernel-vxlan node
// programmed as flannel programs DirectRouting, on one segment, route
// each other directly: ping, TCP and UDP both ways, and neither the
// vxrouter forwarder nor the kernel's flannel.1 carries a packet. Both
// reach a vxrouter node behind a router through the overlay, the kernel
// node with VXLAN from flannel.1.
func TestDirectRoutingKernel(t *testing.T) {
	o := newOverlay(t, directConfig)
	v, k, r := o.host("v"), o.host("k"), o.host("r")
	f := o.segmentHost(o.segment(r), "f")
	nv, envV := o.start(v)
	kl := o.flannelNode(k, "d6:51:2e:80:5c:69")
	_, envF := o.start(f)
	sv, sk, sf := envV.Subnet.Masked(), kl.Subnet, envF.Subnet.Masked()
	pv, pk, pf := o.pod(v, sv), o.pod(k, sk), o.pod(f, sf)

	o.waitRoute(v, sk, directVia(sk, k.Underlay))
	o.waitRoute(k, sv, fmt.Sprintf("%s via %s dev eth0", sv, v.Underlay)) // flannel's: proto boot, which ip leaves out
	o.waitRoute(k, sf, fmt.Sprintf("%s via %s dev flannel.1 onlink", sf, sf.Addr()))

	flannelTx := func() string {
		out, err := k.Run(o.ctx, "cat", "/sys/class/net/flannel.1/statistics/tx_packets")
		if err != nil {
			t.Fatal(err)
		}
		return strings.TrimSpace(out)
	}
	before, kBefore := o.forwarded(nv), flannelTx()
	o.mustPing(pv, pk)
	o.mustPing(pk, pv)
	o.mustCarry(pv, pk)
	o.mustCarry(pk, pv)
	if after := o.forwarded(nv); after != before {
		t.Errorf("direct traffic went through v's forwarder: (tx, rx) %v before, %v after", before, after)
	}
	if kAfter := flannelTx(); kAfter != kBefore {
		t.Errorf("direct traffic went through k's flannel.1: tx_packets %s before, %s after", kBefore, kAfter)
	}
	o.mustPing(pk, pf)
	o.mustPing(pf, pk)
	o.mustCarry(pk, pf)
	o.mustCarry(pf, pk)
	o.mustPing(pv, pf)
}

// TestUnderlayFlags: a host with two interfaces, eth0 on the main
// underlay and eth1 on a segment behind a router, where its peer is. --iface tried in order,
// --iface-regex, --iface-can-reach and --public-ip alone each choose
// eth1, and the node carries its pods' traffic over it.
func TestUnderlayFlags(t *testing.T) {
	o := newOverlay(t, network16)
	h, r := o.host("h"), o.host("r")
	seg := o.segment(r)
	c := o.segmentHost(seg, "c")
	dev, leg, err := seg.Attach(h)
	if err != nil {
		t.Fatal(err)
	}
	_, envC := o.start(c)
	pc := o.pod(c, envC.Subnet.Masked())
	var ph *lab.Pod
	for _, flags := range [][]string{
		{"--iface", "eth9", "--iface", "192.0.2.1", "--iface", dev},
		{"--iface-regex", `^192\.`, "--iface-regex", `^10\.213\.1\.[0-9]{1,3}$`},
		{"--iface-can-reach", c.Underlay.String()},
		{"--public-ip", leg.String()},
	} {
		os.Remove(filepath.Join(o.dir, "h", "vxrouter.log"))
		n, err := h.StartVXRouter(lab.NodeOptions{Binary: binary, Etcd: o.etcd.UnixEndpoint(), Dir: filepath.Join(o.dir, "h"), Underlay: flags, Args: []string{"--log-level", "debug"}})
		if err != nil {
			t.Fatal(err)
		}
		o.nodes = append(o.nodes, n)
		env, err := n.WaitSubnet(o.ctx)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(n.Log(), "iface="+dev) {
			t.Errorf("%s: the node's underlay is not %s:\n%s", flags, dev, n.Log())
		}
		resp, err := o.cli.Get(o.ctx, o.reg.Key(env.Subnet.Masked()))
		if err != nil || len(resp.Kvs) != 1 || !strings.Contains(string(resp.Kvs[0].Value), `"PublicIP":"`+leg.String()+`"`) {
			t.Fatalf("%s: the lease does not have eth1's address %s: %v %v", flags, leg, resp, err)
		}
		if ph == nil {
			ph = o.pod(h, env.Subnet.Masked())
		}
		o.mustPing(ph, pc)
		o.mustPing(pc, ph)
		o.stop(n)
	}
	log := o.startFailingWith(t, h, lab.NodeOptions{Underlay: []string{"--iface", "eth9", "--iface-regex", "^wlan", "--iface-can-reach", "192.0.2.1"}})
	for _, want := range []string{`--iface eth9: no interface is named "eth9"`, "--iface-regex ^wlan: matches no interface", "--iface-can-reach 192.0.2.1"} {
		if !strings.Contains(log, want) {
			t.Errorf("the log does not say %q:\n%s", want, log)
		}
	}
}

// TestBackendMTU: Backend.MTU stands in for the underlay's MTU, as in
// flannel: the TUN device and FLANNEL_MTU get 50 less, the same as a
// kernel-vxlan node's flannel.1, and pods with that MTU exchange full
// packets both ways. A Backend.MTU above the underlay's is taken, with a
// warning, and packets too big for the underlay fare as with the kernel's
// vxlan.
func TestBackendMTU(t *testing.T) {
	o := newOverlay(t, `{"Network":"172.16.0.0/16","Backend":{"Type":"vxlan","MTU":1400}}`)
	v, k := o.host("v"), o.host("k")
	nv, env := o.start(v)
	kl := o.flannelNode(k, "d6:51:2e:80:5c:69")
	if env.MTU != 1350 {
		t.Errorf("FLANNEL_MTU=%d, want 1350", env.MTU)
	}
	for _, x := range []struct {
		h   *lab.Host
		dev string
	}{{v, node.DefaultTunName}, {k, "flannel.1"}} {
		if out, err := x.h.Run(o.ctx, "ip", "link", "show", x.dev); err != nil || !strings.Contains(out, " mtu 1350 ") {
			t.Errorf("%s on %s: want mtu 1350: %s %v", x.dev, x.h.Name, out, err)
		}
	}
	pod := func(h *lab.Host, s netip.Prefix, mtu int) *lab.Pod {
		p, err := h.AddPodConfig(fmt.Sprint("mtu", mtu), lab.PodConfig{Subnet: s, MTU: mtu})
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	pv, pk := pod(v, env.Subnet.Masked(), 1350), pod(k, kl.Subnet, 1350)
	o.mustPing(pv, pk)
	o.mustCarry(pv, pk)
	o.mustCarry(pk, pv)

	// Too large for the underlay: taken, as flannel takes it, with a
	// warning. As with the kernel's vxlan, a packet too big for the
	// underlay that may be fragmented crosses in IP fragments; one that
	// may not (DF) is answered "fragmentation needed" with the MTU that
	// fits, which TCP's path MTU discovery goes by.
	o.stop(nv)
	if _, err := o.cli.Put(o.ctx, lease.DefaultPrefix+"/config", `{"Network":"172.16.0.0/16","Backend":{"Type":"vxlan","MTU":9000}}`); err != nil {
		t.Fatal(err)
	}
	nv, env = o.startAgain(v)
	if env.MTU != 8950 || !strings.Contains(nv.Log(), "Backend.MTU is more than the underlay interface's") {
		t.Errorf("FLANNEL_MTU=%d (want 8950), and the log:\n%s", env.MTU, nv.Log())
	}
	w := o.host("w")
	_, envW := o.start(w)
	pv = pod(v, env.Subnet.Masked(), 8950)
	pw := pod(w, envW.Subnet.Masked(), 8950)
	o.mustPing(pv, pw)
	o.mustCarry(pv, pw)
	o.mustCarry(pw, pv)
	if out, err := pv.Run(o.ctx, "ping", "-c", "1", "-s", "8900", "-M", "dont", pw.Addr.String()); err != nil {
		t.Errorf("an 8928-byte packet that may be fragmented did not cross: %v\n%s", err, out)
	}
	if out, err := pv.Run(o.ctx, "ping", "-c", "1", "-s", "8900", "-M", "do", pw.Addr.String()); err == nil || !strings.Contains(out, "mtu = 1450") && !strings.Contains(out, "mtu=1450") {
		t.Errorf("an 8928-byte packet with DF: %v, want fragmentation needed with MTU 1450:\n%s", err, out)
	}
}
