package node

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// configureTUN gives the TUN device its MTU, the address <subnet>.0/32 and
// a route to the whole overlay network, and brings it up. The kernel sends
// every overlay packet that is not for a local subnet (the node's own pods
// sit behind a more specific route on their bridge) into the device.
func configureTUN(name string, mtu int, subnet, network netip.Prefix) error {
	link, err := netlink.LinkByName(name)
	if err != nil {
		return fmt.Errorf("find tun %q: %w", name, err)
	}
	if err := netlink.LinkSetMTU(link, mtu); err != nil {
		return fmt.Errorf("set mtu %d on %s: %w", mtu, name, err)
	}
	bits := subnet.Addr().BitLen()
	addr := &netlink.Addr{IPNet: ipNet(netip.PrefixFrom(subnet.Addr(), bits))}
	if err := netlink.AddrReplace(link, addr); err != nil {
		return fmt.Errorf("address %s on %s: %w", addr.IPNet, name, err)
	}
	// An IPv4 overlay has no use for the link-local IPv6 address the
	// kernel would give the device, whose router solicitations would only
	// show up as no-route drops.
	if subnet.Addr().Is4() {
		os.WriteFile(filepath.Join("/proc/sys/net/ipv6/conf", name, "disable_ipv6"), []byte("1"), 0o644)
	}
	if err := netlink.LinkSetUp(link); err != nil {
		return fmt.Errorf("bring %s up: %w", name, err)
	}
	route := &netlink.Route{
		LinkIndex: link.Attrs().Index,
		Dst:       ipNet(network),
		Scope:     unix.RT_SCOPE_LINK,
		Src:       net.IP(subnet.Addr().AsSlice()),
	}
	if err := netlink.RouteReplace(route); err != nil {
		return fmt.Errorf("route %s dev %s: %w", network, name, err)
	}
	return nil
}

func ipNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{
		IP:   net.IP(p.Addr().AsSlice()),
		Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen()),
	}
}
