package node

import (
	"context"
	"log/slog"
	"maps"
	"net/netip"
	"slices"
	"sync"
)

// directRoutes keeps the kernel routes of the config's
// Backend.DirectRouting, as flannel's vxlan backend keeps them: a peer
// whose public IP the kernel reaches without a gateway gets the route
//
//	<peer subnet> via <peer public IP> dev <the interface toward it>
//
// so its pods' traffic leaves on the underlay as plain IP and never
// enters the TUN device; the route is more specific than the TUN
// device's route to the whole network, which carries every other peer
// through the overlay. Like flannel it asks the kernel, per peer, what
// `ip route get <public IP>` asks: one route and no gateway means
// on-link. Routes follow the peers' leases as they come, change their
// public IP and go.
//
// Its routes carry their own protocol number (RouteProtocol, where
// flannel's are "proto boot"), so the node can tell them from anyone
// else's: it stays off routes it did not make, and after the first list
// of leases it removes the ones an earlier run made for peers that are
// gone, or all of them when DirectRouting is off now. When the node stops
// it leaves them in place, as flannel does: traffic to on-link peers
// needs no daemon and goes on flowing through a restart.
//
// Its methods are called from the goroutine that applies lease events;
// Snapshot may be called from any.
type directRoutes struct {
	enabled  bool
	kernel   routeKernel
	tunIndex int // the TUN device: a route through it is no direct route
	log      *slog.Logger

	synced bool       // the first list of leases has been applied
	level  slog.Level // of a line per route: Debug in a big batch

	mu   sync.Mutex
	have map[netip.Prefix]directRoute // the routes it made
}

// RouteProtocol marks the kernel routes a node makes for direct routing
// (`ip route show proto 118`): 118 is no protocol iproute2 or the common
// routing daemons name.
const RouteProtocol = 118

// directRoute is one direct route: via a peer's public IP, out of an
// interface.
type directRoute struct {
	Via  netip.Addr
	Link int
}

// routeKernel is the kernel's routing table as directRoutes uses it:
// netlink (direct_netlink.go), or a table in tests.
type routeKernel interface {
	// Lookup answers `ip route get dst`.
	Lookup(dst netip.Addr) ([]hop, error)
	// Replace installs "subnet via r.Via dev r.Link proto RouteProtocol".
	Replace(subnet netip.Prefix, r directRoute) error
	// Delete removes that route; one already gone is no error.
	Delete(subnet netip.Prefix, r directRoute) error
	// Owned lists the routes with protocol RouteProtocol.
	Owned() (map[netip.Prefix]directRoute, error)
}

// hop is one route of an `ip route get` answer.
type hop struct {
	Gateway netip.Addr // invalid: none, the destination is on-link
	Link    int
	Local   bool // the destination is this host's own
}

// directChange is what one lease event means for direct routing: the
// peer at Subnet is at PublicIP, or (PublicIP invalid) is no peer.
type directChange struct {
	Subnet   netip.Prefix
	PublicIP netip.Addr
}

func newDirectRoutes(enabled bool, k routeKernel, tunIndex int, log *slog.Logger) *directRoutes {
	return &directRoutes{enabled: enabled, kernel: k, tunIndex: tunIndex, log: log, have: make(map[netip.Prefix]directRoute)}
}

// onLink decides as flannel's ip.DirectRouting does: the kernel's answer
// for the peer's public IP is a single route without a gateway. A route
// into the TUN device or to one of this host's own addresses is not one
// to send a peer's traffic by.
func onLink(hops []hop, tunIndex int) (link int, ok bool) {
	if len(hops) != 1 {
		return 0, false
	}
	h := hops[0]
	if h.Gateway.IsValid() || h.Local || h.Link <= 0 || h.Link == tunIndex {
		return 0, false
	}
	return h.Link, true
}

// Apply brings the routes in line with a batch of lease events, in
// order. The first batch is the whole list of leases: after it, the
// routes with RouteProtocol that no peer wants are removed.
func (d *directRoutes) Apply(changes []directChange) {
	// A node joining a big overlay learns every peer at once (as in
	// Node.peerEvents): a line per route is for debugging then.
	d.level = slog.LevelInfo
	if len(changes) > 16 {
		d.level = slog.LevelDebug
		defer func() {
			d.log.Info("direct routes updated", "events", len(changes), "direct-routes", len(d.Snapshot()))
		}()
	}
	for _, c := range changes {
		if c.PublicIP.IsValid() && d.enabled {
			d.peer(c.Subnet, c.PublicIP)
		} else {
			d.drop(c.Subnet, "peer gone")
		}
	}
	if !d.synced {
		d.synced = true
		d.sweep()
	}
}

// peer routes subnet directly via publicIP if the kernel reaches it
// on-link, and through the overlay otherwise.
func (d *directRoutes) peer(subnet netip.Prefix, publicIP netip.Addr) {
	hops, err := d.kernel.Lookup(publicIP)
	if err != nil {
		// flannel logs it and leaves the peer to VXLAN; so does this.
		d.log.Warn("direct routing: cannot look up the route to a peer; it goes through the overlay", "subnet", subnet, "public-ip", publicIP, "err", err)
		d.drop(subnet, "peer not reachable")
		return
	}
	link, ok := onLink(hops, d.tunIndex)
	if !ok {
		d.drop(subnet, "peer not on-link")
		return
	}
	r := directRoute{Via: publicIP, Link: link}
	d.mu.Lock()
	old := d.have[subnet]
	d.mu.Unlock()
	// Replaced even when it is there: that also puts back a route
	// someone deleted, and costs one netlink message per lease event.
	// The kernel keys a route by its destination, so a peer that moved
	// to another address has its route replaced, not added to.
	if err := d.kernel.Replace(subnet, r); err != nil {
		d.log.Warn("direct routing: cannot add the route; the peer goes through the overlay", "subnet", subnet, "via", publicIP, "err", err)
		d.drop(subnet, "route refused")
		return
	}
	d.mu.Lock()
	d.have[subnet] = r
	d.mu.Unlock()
	switch {
	case !old.Via.IsValid():
		d.log.Log(context.Background(), d.level, "direct route", "subnet", subnet, "via", publicIP, "link", link)
	case old != r:
		d.log.Log(context.Background(), d.level, "direct route moved", "subnet", subnet, "via", publicIP, "link", link, "was", old.Via)
	}
}

// drop removes subnet's direct route, if there is one, so the peer (if
// any) goes through the overlay.
func (d *directRoutes) drop(subnet netip.Prefix, why string) {
	d.mu.Lock()
	r, ok := d.have[subnet]
	delete(d.have, subnet)
	d.mu.Unlock()
	if !ok {
		return
	}
	if err := d.kernel.Delete(subnet, r); err != nil {
		d.log.Warn("direct routing: cannot remove a route", "subnet", subnet, "via", r.Via, "err", err)
		return
	}
	d.log.Log(context.Background(), d.level, "direct route removed", "subnet", subnet, "via", r.Via, "why", why)
}

// sweep removes the routes with RouteProtocol that this run did not
// make: an earlier run's, for peers that went while no node watched.
func (d *directRoutes) sweep() {
	owned, err := d.kernel.Owned()
	if err != nil {
		d.log.Warn("direct routing: cannot list the routes an earlier run made", "err", err)
		return
	}
	d.mu.Lock()
	have := maps.Clone(d.have)
	d.mu.Unlock()
	for _, subnet := range slices.SortedFunc(maps.Keys(owned), netip.Prefix.Compare) {
		r := owned[subnet]
		if have[subnet] == r {
			continue
		}
		if err := d.kernel.Delete(subnet, r); err != nil {
			d.log.Warn("direct routing: cannot remove an earlier run's route", "subnet", subnet, "via", r.Via, "err", err)
			continue
		}
		d.log.Info("direct route removed", "subnet", subnet, "via", r.Via, "why", "left by an earlier run, no peer wants it")
	}
}

// Snapshot returns the direct routes, by subnet (none on a nil
// directRoutes: a node that is not running).
func (d *directRoutes) Snapshot() map[netip.Prefix]directRoute {
	if d == nil {
		return nil
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	return maps.Clone(d.have)
}
