package lab

import (
	"context"
	"net"
	"net/netip"
	"os/exec"
	"strings"
	"testing"
)

// TestKernelVXLANFlannelDualStack checks lab's emulation of flannel's
// dual-stack vxlan backend: two hosts with an IPv4 and an IPv6 underlay
// address each, flannel.1 over the first and flannel-v6.1 over the
// second, each programmed with the other host's lease in both families;
// dual-stack pods reach each other over both.
func TestKernelVXLANFlannelDualStack(t *testing.T) {
	t.Parallel()
	if !ipv6Enabled() {
		t.Skip("kernel has no IPv6")
	}
	l := newTestLab(t, Options{Underlay6: netip.MustParsePrefix("fd00:213::/64")})
	a, b := addHost(t, l, "node1"), addHost(t, l, "node2")
	if a.Underlay.String() != "10.213.0.1" || a.Underlay6.String() != "fd00:213::1" || b.Underlay6.String() != "fd00:213::2" {
		t.Fatalf("underlay addresses %s %s, %s %s", a.Underlay, a.Underlay6, b.Underlay, b.Underlay6)
	}
	mustPing(t, a, "node1", b.Underlay6)
	p := netip.MustParsePrefix
	snA, snB := p("172.16.99.0/24"), p("172.16.57.0/24")
	sn6A, sn6B := p("fd00:16:0:63::/64"), p("fd00:16:0:39::/64")
	macA, _ := net.ParseMAC("b6:bf:4c:81:cf:3b")
	macB, _ := net.ParseMAC("d6:51:2e:80:5c:69")
	mac6A, _ := net.ParseMAC("b6:bf:4c:81:cf:3c") // flannel-v6.1 has a MAC of its own
	mac6B, _ := net.ParseMAC("d6:51:2e:80:5c:6a")

	ka, err := a.KernelVXLAN(KernelVXLANConfig{VtepMAC: macA, Subnet: snA})
	if err != nil {
		if strings.Contains(err.Error(), "Unknown device type") {
			t.Skipf("kernel without vxlan: %v", err)
		}
		t.Fatal(err)
	}
	k6a, err := a.KernelVXLAN(KernelVXLANConfig{VtepMAC: mac6A, Subnet: sn6A})
	if err != nil {
		t.Fatal(err)
	}
	kb, err := b.KernelVXLAN(KernelVXLANConfig{VtepMAC: macB, Subnet: snB})
	if err != nil {
		t.Fatal(err)
	}
	k6b, err := b.KernelVXLAN(KernelVXLANConfig{VtepMAC: mac6B, Subnet: sn6B})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.KernelVXLAN(KernelVXLANConfig{Subnet: sn6A}); err == nil {
		t.Error("a second flannel-v6.1 on one host: want an error")
	}
	for _, c := range []struct {
		k              *KernelVXLAN
		subnet         netip.Prefix
		publicIP       netip.Addr
		mac            net.HardwareAddr
		wrongFamilyErr bool
	}{
		{ka, snB, b.Underlay, macB, false},
		{k6a, sn6B, b.Underlay6, mac6B, false},
		{kb, snA, a.Underlay, macA, false},
		{k6b, sn6A, a.Underlay6, mac6A, false},
		{k6b, snA, a.Underlay, macA, true},
		{kb, sn6A, a.Underlay6, mac6A, true},
		{k6b, sn6A, a.Underlay, mac6A, true},
	} {
		err := c.k.AddPeer(c.subnet, c.publicIP, c.mac)
		if (err != nil) != c.wrongFamilyErr {
			t.Fatalf("%s AddPeer(%s, %s): %v", c.k.Dev, c.subnet, c.publicIP, err)
		}
	}

	// flannel-v6.1 and its three entries are flannel's; asked for 1450,
	// as flannel asks, the kernel gives it what fits the IPv6 underlay.
	out := mustRun(t, a.Run, "ip", "-d", "link", "show", "flannel-v6.1")
	for _, want := range []string{"mtu 1430", "link/ether b6:bf:4c:81:cf:3c", "vxlan id 1 local fd00:213::1 dev eth0", "dstport 8472", "nolearning"} {
		if !strings.Contains(out, want) {
			t.Errorf("flannel-v6.1 on node1 lacks %q:\n%s", want, out)
		}
	}
	for _, c := range []struct{ cmd, want string }{
		{"ip -6 addr show dev flannel-v6.1", "inet6 fd00:16:0:63::/128"},
		{"ip -6 route show fd00:16:0:39::/64", "fd00:16:0:39::/64 via fd00:16:0:39:: dev flannel-v6.1"},
		{"ip -6 neigh show dev flannel-v6.1", "fd00:16:0:39:: lladdr d6:51:2e:80:5c:6a PERMANENT"},
		{"bridge fdb show dev flannel-v6.1", "d6:51:2e:80:5c:6a dst fd00:213::2 self permanent"},
	} {
		f := strings.Fields(c.cmd)
		if out := mustRun(t, a.Run, f[0], f[1:]...); !strings.Contains(out, c.want) {
			t.Errorf("%s on node1: want %q in:\n%s", c.cmd, c.want, out)
		}
	}

	pa, err := a.AddPodConfig("pa", PodConfig{Subnet: snA, Subnet6: sn6A})
	if err != nil {
		t.Fatal(err)
	}
	pb, err := b.AddPodConfig("pb", PodConfig{Subnet: snB, Subnet6: sn6B})
	if err != nil {
		t.Fatal(err)
	}
	if pa.Addr6.String() != "fd00:16:0:63::2" || pa.Gateway6.String() != "fd00:16:0:63::1" {
		t.Fatalf("pod pa: %s via %s", pa.Addr6, pa.Gateway6)
	}
	mustPing(t, pa, "pa", pb.Addr)
	mustPing(t, pa, "pa", pb.Addr6)
	mustPing(t, pb, "pb", pa.Addr6)
	var wire *tcpdump
	if _, err := exec.LookPath("tcpdump"); err == nil {
		wire = startTcpdump(t, b, "-c", "1", "udp", "dst", "port", "8472", "and", "ip6", "and", "src", "host", a.Underlay6.String())
	}
	for _, c := range [][2]*Pod{{pa, pb}, {pb, pa}} {
		for _, dst := range []netip.Addr{c[1].Addr, c[1].Addr6} {
			if _, err := c[0].TCPToAddr(context.Background(), c[1], dst, 5201, 2<<20); err != nil {
				t.Error(err)
			}
			if n, err := c[0].UDPToAddr(context.Background(), c[1], dst, 5202, 100, 1000); err != nil || n != 100 {
				t.Errorf("udp %s -> %s: %d of 100 arrived (%v)", c[0].Name, dst, n, err)
			}
		}
	}
	if wire != nil {
		// IPv6 inside goes over the IPv6 underlay.
		if out := wire.wait(t); !strings.Contains(out, "fd00:213::2.8472") {
			t.Errorf("tcpdump on node2 saw no VXLAN over IPv6 from node1:\n%s", out)
		}
	}
}
