package lab

import (
	"context"
	"net/netip"
	"strings"
	"testing"
	"time"
)

// TestSegmentBehindRouter: a host on a segment reaches the main underlay
// through the router and is not on-link with its hosts; a host with a
// leg on the segment is, through that leg.
func TestSegmentBehindRouter(t *testing.T) {
	t.Parallel()
	l := newTestLab(t, Options{})
	a := addHost(t, l, "a")
	b := addHost(t, l, "b")
	r := addHost(t, l, "r")
	seg, err := l.AddSegment(r, netip.MustParsePrefix("10.213.1.0/24"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := l.AddSegment(r, netip.MustParsePrefix("10.213.0.128/25")); err == nil {
		t.Error("a segment overlapping the underlay was accepted")
	}
	c, err := seg.AddHost("c")
	if err != nil {
		t.Fatal(err)
	}
	d := addHost(t, l, "d") // after the segment: it gets the route too
	if seg.Gateway.String() != "10.213.1.1" || c.Underlay.String() != "10.213.1.2" || c.Segment != seg || d.Underlay.String() != "10.213.0.4" {
		t.Fatalf("gateway %s, c %s on %v, d %s; want 10.213.1.1, 10.213.1.2 on the segment, 10.213.0.4", seg.Gateway, c.Underlay, c.Segment, d.Underlay)
	}
	for _, h := range []*Host{a, d} {
		mustPing(t, h, h.Name, c.Underlay)
		mustPing(t, c, "c", h.Underlay)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	onLink := func(h *Host, ip netip.Addr, want bool) {
		t.Helper()
		got, err := h.OnLink(ctx, ip)
		if err != nil || got != want {
			t.Errorf("%s: on-link %s = %v, %v; want %v", h.Name, ip, got, err, want)
		}
	}
	onLink(a, b.Underlay, true)
	onLink(a, c.Underlay, false)
	onLink(c, a.Underlay, false)
	onLink(r, c.Underlay, true)

	dev, addr, err := seg.Attach(b)
	if err != nil {
		t.Fatal(err)
	}
	if dev != "eth1" || addr.String() != "10.213.1.3" {
		t.Errorf("Attach(b) = %s %s, want eth1 10.213.1.3", dev, addr)
	}
	if _, _, err := seg.Attach(b); err == nil {
		t.Error("a second leg behind the same router was accepted")
	}
	if _, _, err := seg.Attach(c); err == nil {
		t.Error("a host on the segment was attached to it")
	}
	onLink(b, c.Underlay, true)
	mustPing(t, b, "b", c.Underlay)
	mustPing(t, c, "c", addr)
	if out := mustRun(t, b.Run, "ip", "route", "get", c.Underlay.String()); !strings.Contains(out, "dev eth1") || strings.Contains(out, " via ") {
		t.Errorf("b routes to c through the router, not its leg:\n%s", out)
	}
}

// TestKernelDirectPeers: two hosts on one segment, programmed as
// flannel's vxlan backend programs DirectRouting for on-link peers: a
// route via the peer's public IP, and nothing crosses flannel.1.
func TestKernelDirectPeers(t *testing.T) {
	t.Parallel()
	l := newTestLab(t, Options{})
	a := addHost(t, l, "node1")
	b := addHost(t, l, "node2")
	snA, snB := netip.MustParsePrefix("172.16.99.0/24"), netip.MustParsePrefix("172.16.57.0/24")
	ka, err := a.KernelVXLAN(KernelVXLANConfig{Subnet: snA})
	if err != nil {
		if strings.Contains(err.Error(), "Unknown device type") {
			t.Skipf("kernel without vxlan: %v", err)
		}
		t.Fatal(err)
	}
	kb, err := b.KernelVXLAN(KernelVXLANConfig{Subnet: snB})
	if err != nil {
		t.Fatal(err)
	}
	pa, pb := addPod(t, a, "pa", snA.String()), addPod(t, b, "pb", snB.String())
	if err := ka.AddDirectPeer(snB, b.Underlay); err != nil {
		t.Fatal(err)
	}
	if err := kb.AddDirectPeer(snA, a.Underlay); err != nil {
		t.Fatal(err)
	}
	if out := mustRun(t, a.Run, "ip", "route", "show", snB.String()); !strings.Contains(out, "172.16.57.0/24 via 10.213.0.2 dev eth0") {
		t.Errorf("node1's route to node2's subnet:\n%s", out)
	}
	mustPing(t, pa, "pa", pb.Addr)
	mustPing(t, pb, "pb", pa.Addr)
	for _, h := range []*Host{a, b} {
		if out := mustRun(t, h.Run, "cat", "/sys/class/net/flannel.1/statistics/tx_packets"); strings.TrimSpace(out) != "0" {
			t.Errorf("%s sent %s packets through flannel.1, want 0", h.Name, strings.TrimSpace(out))
		}
	}
	if err := ka.RemoveDirectPeer(snB, b.Underlay); err != nil {
		t.Fatal(err)
	}
	if out := mustRun(t, a.Run, "ip", "route", "show", snB.String()); strings.TrimSpace(out) != "" {
		t.Errorf("route left after RemoveDirectPeer: %s", out)
	}
}
