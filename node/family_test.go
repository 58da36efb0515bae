package node

import (
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"testing"

	"vxrouter/lease"
	"vxrouter/route"
)

// A dual-stack peer's lease is two routes, each family's subnet to that
// family's public address and VTEP; a part that is no peer is skipped
// (and any route it had removed), a part of a family the overlay does not
// carry ignored.
func TestPeerChangesDualStack(t *testing.T) {
	cfg, err := lease.ParseConfig([]byte(`{"Network":"10.42.0.0/16","EnableIPv6":true,"IPv6Network":"fd00:42::/56","Backend":{"Type":"vxlan"}}`))
	if err != nil {
		t.Fatal(err)
	}
	p := netip.MustParsePrefix
	ip := netip.MustParseAddr
	mac4, mac6 := net.HardwareAddr{2, 0, 0, 0, 0, 4}, net.HardwareAddr{2, 0, 0, 0, 0, 6}
	n := &Node{
		log:      slog.New(slog.DiscardHandler),
		overlay:  cfg,
		lease:    &lease.Lease{Subnet: p("10.42.1.0/24"), IPv6Subnet: p("fd00:42:0:1::/64")},
		underlay: underlayLink{PublicIP: ip("10.0.0.1"), PublicIPv6: ip("fd77::1")},
	}
	peer := lease.Lease{Subnet: p("10.42.2.0/24"), IPv6Subnet: p("fd00:42:0:2::/64"), Attrs: lease.Attrs{
		PublicIP: ip("10.0.0.2"), PublicIPv6: ip("fd77::2"), BackendType: "vxlan", VNI: 1, VtepMAC: mac4,
		BackendV6Data: &lease.VXLANData{VNI: 1, VtepMAC: mac6, PartialCsum: true},
	}}
	show := func(cs []route.Change) []string {
		var out []string
		for _, c := range cs {
			out = append(out, fmt.Sprintf("%s %s %s %v %v", c.Subnet, c.Addr, c.VTEP, c.PartialCsum, c.Delete))
		}
		return out
	}
	for _, tc := range []struct {
		name string
		ev   lease.Event
		want []string
	}{
		{"dual-stack peer", lease.Event{Type: lease.Added, Lease: peer}, []string{
			"10.42.2.0/24 10.0.0.2:8472 02:00:00:00:00:04 false false",
			"fd00:42:0:2::/64 [fd77::2]:8472 02:00:00:00:00:06 true false",
		}},
		{"removed", lease.Event{Type: lease.Removed, Lease: peer}, []string{
			"10.42.2.0/24 invalid AddrPort  false true",
			"fd00:42:0:2::/64 invalid AddrPort  false true",
		}},
		{"no BackendV6Data", lease.Event{Type: lease.Added, Lease: func() lease.Lease {
			l := peer
			l.Attrs.BackendV6Data = nil
			return l
		}()}, []string{
			"10.42.2.0/24 10.0.0.2:8472 02:00:00:00:00:04 false false",
			"fd00:42:0:2::/64 invalid AddrPort  false true",
		}},
		{"our own IPv6 address", lease.Event{Type: lease.Added, Lease: func() lease.Lease {
			l := peer
			l.Attrs.PublicIPv6 = n.underlay.PublicIPv6
			return l
		}()}, []string{
			"10.42.2.0/24 10.0.0.2:8472 02:00:00:00:00:04 false false",
			"fd00:42:0:2::/64 invalid AddrPort  false true",
		}},
		{"IPv6 subnet outside the overlay", lease.Event{Type: lease.Added, Lease: func() lease.Lease {
			l := peer
			l.IPv6Subnet = p("fd00:43:0:2::/64")
			return l
		}()}, []string{
			"10.42.2.0/24 10.0.0.2:8472 02:00:00:00:00:04 false false",
			"fd00:43:0:2::/64 invalid AddrPort  false true",
		}},
		{"our own subnets", lease.Event{Type: lease.Added, Lease: lease.Lease{Subnet: n.lease.Subnet, IPv6Subnet: n.lease.IPv6Subnet, Attrs: peer.Attrs}}, nil},
	} {
		changes, direct := n.peerChanges(tc.ev, slog.LevelDebug)
		if got := show(changes); !slices.Equal(got, tc.want) {
			t.Errorf("%s: changes\n%q\nwant\n%q", tc.name, got, tc.want)
		}
		// Direct routing sees the same peers: an address for each route,
		// none (no peer) for each removal.
		for i, c := range changes {
			if i >= len(direct) || direct[i].Subnet != c.Subnet || direct[i].PublicIP != c.Addr.Addr() {
				t.Errorf("%s: direct routing changes %+v, want %s at %s as change %d", tc.name, direct, c.Subnet, c.Addr.Addr(), i)
			}
		}
		if len(direct) != len(changes) {
			t.Errorf("%s: %d direct routing changes for %d route changes", tc.name, len(direct), len(changes))
		}
	}

	// In an IPv4-only overlay a lease's IPv6 part is no route.
	n.overlay, _ = lease.ParseConfig([]byte(`{"Network":"10.42.0.0/16","Backend":{"Type":"vxlan"}}`))
	n.lease, n.underlay.PublicIPv6 = &lease.Lease{Subnet: p("10.42.1.0/24")}, netip.Addr{}
	changes, _ := n.peerChanges(lease.Event{Type: lease.Added, Lease: peer}, slog.LevelDebug)
	if got := show(changes); !slices.Equal(got, []string{"10.42.2.0/24 10.0.0.2:8472 02:00:00:00:00:04 false false"}) {
		t.Errorf("IPv4 overlay: changes %q", got)
	}
}

func TestOverlayMTU(t *testing.T) {
	for _, tc := range []struct {
		config string
		mtu    int // underlay
		want   int
		err    bool
	}{
		{`{"Network":"10.42.0.0/16","Backend":{"Type":"vxlan"}}`, 1500, 1450, false},
		{`{"Network":"10.42.0.0/16","EnableIPv6":true,"IPv6Network":"fd00::/48","Backend":{"Type":"vxlan"}}`, 1500, 1430, false},
		{`{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"fd00::/48","Backend":{"Type":"vxlan"}}`, 9000, 8930, false},
		// Backend.MTU stands in for the underlay's MTU.
		{`{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"fd00::/48","Backend":{"Type":"vxlan","MTU":1400}}`, 1500, 1330, false},
		{`{"Network":"10.42.0.0/16","Backend":{"Type":"vxlan","MTU":1400}}`, 1500, 1350, false},
		{`{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"fd00::/48","Backend":{"Type":"vxlan"}}`, 1349, 0, true},
		{`{"Network":"10.42.0.0/16","Backend":{"Type":"vxlan"}}`, 1349, 1299, false},
	} {
		cfg, err := lease.ParseConfig([]byte(tc.config))
		if err != nil {
			t.Fatal(err)
		}
		got, err := overlayMTU(cfg, underlayLink{Name: "eth0", MTU: tc.mtu}, slog.New(slog.DiscardHandler))
		if got != tc.want || (err != nil) != tc.err {
			t.Errorf("overlayMTU(%s, %d) = %d, %v; want %d (error %v)", tc.config, tc.mtu, got, err, tc.want, tc.err)
		}
	}
}
