package node

import (
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// netlinkRoutes is routeKernel over netlink: the main routing table of
// the node's network namespace.
type netlinkRoutes struct{}

func (netlinkRoutes) Lookup(dst netip.Addr) ([]hop, error) {
	routes, err := netlink.RouteGet(dst.AsSlice())
	if err != nil {
		return nil, fmt.Errorf("ip route get %s: %w", dst, err)
	}
	hops := make([]hop, len(routes))
	for i, r := range routes {
		gw, _ := netip.AddrFromSlice(r.Gw)
		hops[i] = hop{Gateway: gw.Unmap(), Link: r.LinkIndex, Local: r.Type == unix.RTN_LOCAL}
	}
	return hops, nil
}

func (netlinkRoutes) route(subnet netip.Prefix, r directRoute) *netlink.Route {
	return &netlink.Route{
		Dst:       ipNet(subnet),
		Gw:        net.IP(r.Via.AsSlice()),
		LinkIndex: r.Link,
		Protocol:  RouteProtocol,
		Table:     unix.RT_TABLE_MAIN,
	}
}

func (k netlinkRoutes) Replace(subnet netip.Prefix, r directRoute) error {
	if err := netlink.RouteReplace(k.route(subnet, r)); err != nil {
		return fmt.Errorf("ip route replace %s via %s: %w", subnet, r.Via, err)
	}
	return nil
}

func (k netlinkRoutes) Delete(subnet netip.Prefix, r directRoute) error {
	err := netlink.RouteDel(k.route(subnet, r))
	if err != nil && !errors.Is(err, unix.ESRCH) {
		return fmt.Errorf("ip route del %s via %s: %w", subnet, r.Via, err)
	}
	return nil
}

func (netlinkRoutes) Owned() (map[netip.Prefix]directRoute, error) {
	routes, err := netlink.RouteListFiltered(netlink.FAMILY_ALL, &netlink.Route{Protocol: RouteProtocol, Table: unix.RT_TABLE_MAIN},
		netlink.RT_FILTER_PROTOCOL|netlink.RT_FILTER_TABLE)
	if err != nil {
		return nil, fmt.Errorf("ip route show proto %d: %w", RouteProtocol, err)
	}
	out := make(map[netip.Prefix]directRoute)
	for _, r := range routes {
		if r.Dst == nil {
			continue
		}
		ip, ok1 := netip.AddrFromSlice(r.Dst.IP)
		bits, _ := r.Dst.Mask.Size()
		via, ok2 := netip.AddrFromSlice(r.Gw)
		if ok1 && ok2 {
			out[netip.PrefixFrom(ip.Unmap(), bits)] = directRoute{Via: via.Unmap(), Link: r.LinkIndex}
		}
	}
	return out, nil
}
