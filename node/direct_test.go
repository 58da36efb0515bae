package node

import (
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/netip"
	"slices"
	"strings"
	"testing"
)

// fakeRoutes is a routing table: what `ip route get` answers per address,
// and the routes with RouteProtocol.
type fakeRoutes struct {
	lookup map[netip.Addr][]hop
	routes map[netip.Prefix]directRoute
	refuse map[netip.Prefix]bool // Replace fails for these
	ops    []string
}

func newFakeRoutes() *fakeRoutes {
	return &fakeRoutes{
		lookup: map[netip.Addr][]hop{
			// On eth0's segment, like `ip route get` answers for it.
			ip("10.213.0.2"): {{Link: 2}},
			ip("10.213.0.3"): {{Link: 2}},
			// On eth1's.
			ip("10.214.0.9"): {{Link: 3}},
			// Behind a router.
			ip("10.213.1.2"): {{Gateway: ip("10.213.0.1"), Link: 2}},
			// This host's own address, and one the TUN device's route
			// covers (a public IP inside the overlay: nonsense, but
			// never a route to make).
			ip("10.213.0.1"): {{Link: 1, Local: true}},
			ip("172.16.9.9"): {{Link: 7}},
		},
		routes: map[netip.Prefix]directRoute{},
		refuse: map[netip.Prefix]bool{},
	}
}

func (f *fakeRoutes) Lookup(dst netip.Addr) ([]hop, error) {
	h, ok := f.lookup[dst]
	if !ok {
		return nil, errors.New("network is unreachable")
	}
	return h, nil
}

func (f *fakeRoutes) Replace(s netip.Prefix, r directRoute) error {
	if f.refuse[s] {
		return errors.New("operation not permitted")
	}
	f.ops = append(f.ops, fmt.Sprintf("replace %s via %s dev %d", s, r.Via, r.Link))
	f.routes[s] = r
	return nil
}

func (f *fakeRoutes) Delete(s netip.Prefix, r directRoute) error {
	f.ops = append(f.ops, fmt.Sprintf("del %s via %s dev %d", s, r.Via, r.Link))
	if f.routes[s] == r {
		delete(f.routes, s)
	}
	return nil
}

func (f *fakeRoutes) Owned() (map[netip.Prefix]directRoute, error) { return maps.Clone(f.routes), nil }

func (f *fakeRoutes) takeOps() []string {
	ops := f.ops
	f.ops = nil
	return ops
}

var pfx = netip.MustParsePrefix

func peerAt(subnet, publicIP string) directChange {
	return directChange{Subnet: pfx(subnet), PublicIP: ip(publicIP)}
}

func gone(subnet string) directChange { return directChange{Subnet: pfx(subnet)} }

// TestOnLink: flannel's rule, one route without a gateway, and never a
// route into the TUN device or to this host itself.
func TestOnLink(t *testing.T) {
	for _, tc := range []struct {
		hops []hop
		link int
		ok   bool
	}{
		{[]hop{{Link: 2}}, 2, true},
		{[]hop{{Link: 2, Gateway: ip("10.0.0.1")}}, 0, false},
		{[]hop{{Link: 2}, {Link: 3}}, 0, false}, // flannel wants exactly one
		{nil, 0, false},
		{[]hop{{Link: 7}}, 0, false}, // the TUN device
		{[]hop{{Link: 1, Local: true}}, 0, false},
		{[]hop{{Link: 0}}, 0, false},
	} {
		link, ok := onLink(tc.hops, 7)
		if link != tc.link || ok != tc.ok {
			t.Errorf("onLink(%+v) = %d %v, want %d %v", tc.hops, link, ok, tc.link, tc.ok)
		}
	}
}

// TestDirectRoutesFollowPeers: on-link peers get a route, others none;
// routes follow a peer that moves (on the segment, off it, back) and
// go with it.
func TestDirectRoutesFollowPeers(t *testing.T) {
	k := newFakeRoutes()
	d := newDirectRoutes(true, k, 7, slog.New(slog.DiscardHandler))
	d.Apply([]directChange{
		peerAt("172.16.2.0/24", "10.213.0.2"),
		peerAt("172.16.3.0/24", "10.213.1.2"), // behind the router: overlay
		peerAt("172.16.4.0/24", "10.214.0.9"), // on eth1's segment
		peerAt("172.16.5.0/24", "192.0.2.1"),  // unreachable: overlay
		peerAt("172.16.6.0/24", "10.213.0.1"), // a lease claiming a local address
		peerAt("172.16.8.0/24", "172.16.9.9"), // reached through the TUN device
	})
	want := map[netip.Prefix]directRoute{
		pfx("172.16.2.0/24"): {ip("10.213.0.2"), 2},
		pfx("172.16.4.0/24"): {ip("10.214.0.9"), 3},
	}
	if !maps.Equal(k.routes, want) || !maps.Equal(d.Snapshot(), want) {
		t.Fatalf("routes %v, snapshot %v; want %v", k.routes, d.Snapshot(), want)
	}
	k.takeOps()

	for _, step := range []struct {
		name string
		ev   directChange
		ops  []string
	}{
		{"same lease again: replaced (repairs a deleted route)", peerAt("172.16.2.0/24", "10.213.0.2"), []string{"replace 172.16.2.0/24 via 10.213.0.2 dev 2"}},
		{"moves on the segment", peerAt("172.16.2.0/24", "10.213.0.3"), []string{"replace 172.16.2.0/24 via 10.213.0.3 dev 2"}},
		{"moves behind the router", peerAt("172.16.2.0/24", "10.213.1.2"), []string{"del 172.16.2.0/24 via 10.213.0.3 dev 2"}},
		{"comes back", peerAt("172.16.2.0/24", "10.213.0.2"), []string{"replace 172.16.2.0/24 via 10.213.0.2 dev 2"}},
		{"goes", gone("172.16.2.0/24"), []string{"del 172.16.2.0/24 via 10.213.0.2 dev 2"}},
		{"a peer with no route goes", gone("172.16.3.0/24"), nil},
		{"a peer behind the router moves on-link", peerAt("172.16.3.0/24", "10.213.0.3"), []string{"replace 172.16.3.0/24 via 10.213.0.3 dev 2"}},
	} {
		d.Apply([]directChange{step.ev})
		if ops := k.takeOps(); !slices.Equal(ops, step.ops) {
			t.Errorf("%s: %q, want %q", step.name, ops, step.ops)
		}
	}
}

// TestDirectRoutesRefused: a route the kernel refuses leaves the peer to
// the overlay, and the node does not count it as made.
func TestDirectRoutesRefused(t *testing.T) {
	k := newFakeRoutes()
	k.refuse[pfx("172.16.2.0/24")] = true
	d := newDirectRoutes(true, k, 7, slog.New(slog.DiscardHandler))
	d.Apply([]directChange{peerAt("172.16.2.0/24", "10.213.0.2")})
	if len(k.routes) != 0 || len(d.Snapshot()) != 0 {
		t.Fatalf("routes %v, snapshot %v; want none", k.routes, d.Snapshot())
	}
}

// TestDirectRoutesSweep: after the first list, routes an earlier run made
// for peers that are gone are removed, the ones still wanted kept; with
// DirectRouting off, all of them.
func TestDirectRoutesSweep(t *testing.T) {
	earlier := map[netip.Prefix]directRoute{
		pfx("172.16.2.0/24"):  {ip("10.213.0.2"), 2}, // still a peer
		pfx("172.16.77.0/24"): {ip("10.213.0.7"), 2}, // gone while no node ran
		pfx("10.99.0.0/24"):   {ip("10.213.0.8"), 2}, // an old overlay's
	}
	for _, enabled := range []bool{true, false} {
		t.Run(fmt.Sprint("DirectRouting ", enabled), func(t *testing.T) {
			k := newFakeRoutes()
			maps.Copy(k.routes, earlier)
			var log strings.Builder
			d := newDirectRoutes(enabled, k, 7, slog.New(slog.NewTextHandler(&log, nil)))
			d.Apply([]directChange{peerAt("172.16.2.0/24", "10.213.0.2"), peerAt("172.16.3.0/24", "10.213.1.2")})
			want := map[netip.Prefix]directRoute{pfx("172.16.2.0/24"): earlier[pfx("172.16.2.0/24")]}
			if !enabled {
				want = map[netip.Prefix]directRoute{}
			}
			if !maps.Equal(k.routes, want) {
				t.Errorf("routes after the first list %v, want %v", k.routes, want)
			}
			if !strings.Contains(log.String(), "left by an earlier run") {
				t.Errorf("nothing said of the earlier run's routes:\n%s", log.String())
			}
			// Only the first list sweeps: a route made meanwhile by
			// someone else with the same protocol is not taken later.
			k.routes[pfx("172.16.88.0/24")] = directRoute{ip("10.213.0.9"), 2}
			d.Apply([]directChange{gone("172.16.3.0/24")})
			if _, ok := k.routes[pfx("172.16.88.0/24")]; !ok {
				t.Error("a later batch swept again")
			}
		})
	}
}
