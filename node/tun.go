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

// tunRoute is one family's share of the TUN device: the node's subnet
// and the overlay's network.
type tunRoute struct{ subnet, network netip.Prefix }

// configureTUN gives the TUN device its MTU and, for each family of the
// overlay, the address <subnet>.0/32 (<subnet>::/128) and a route to the
// whole overlay network, and brings it up. The kernel sends every overlay
// packet that is not for a local subnet (the node's own pods sit behind a
// more specific route on their bridge) into the device. One device
// carries both families of a dual-stack overlay.
func configureTUN(name string, mtu int, routes []tunRoute) error {
	link, err := netlink.LinkByName(name)
	if err != nil {
		return fmt.Errorf("find tun %q: %w", name, err)
	}
	if err := netlink.LinkSetMTU(link, mtu); err != nil {
		return fmt.Errorf("set mtu %d on %s: %w", mtu, name, err)
	}
	v6 := false
	for _, r := range routes {
		v6 = v6 || r.subnet.Addr().Is6()
	}
	sysctl := func(key, value string) error {
		return os.WriteFile(filepath.Join("/proc/sys/net/ipv6/conf", name, key), []byte(value), 0o644)
	}
	if !v6 {
		// An IPv4 overlay has no use for the link-local IPv6 address the
		// kernel would give the device, whose router solicitations would
		// only show up as no-route drops.
		sysctl("disable_ipv6", "1")
	} else {
		// The IPv6 overlay's addresses are the lease's; routers have no
		// say (flannel sets the same on flannel-v6.<VNI>), and a
		// link-local address would only send router solicitations
		// into the overlay.
		if err := sysctl("disable_ipv6", "0"); err != nil {
			return fmt.Errorf("enable IPv6 on %s: %w", name, err)
		}
		sysctl("accept_ra", "0")
		sysctl("addr_gen_mode", "1") // IN6_ADDR_GEN_MODE_NONE
	}
	for _, r := range routes {
		bits := r.subnet.Addr().BitLen()
		addr := &netlink.Addr{IPNet: ipNet(netip.PrefixFrom(r.subnet.Addr(), bits))}
		if r.subnet.Addr().Is6() {
			addr.Flags = unix.IFA_F_NODAD // the address is the lease's: nobody else has it
		}
		if err := netlink.AddrReplace(link, addr); err != nil {
			return fmt.Errorf("address %s on %s: %w", addr.IPNet, name, err)
		}
	}
	if err := netlink.LinkSetUp(link); err != nil {
		return fmt.Errorf("bring %s up: %w", name, err)
	}
	for _, r := range routes {
		route := &netlink.Route{
			LinkIndex: link.Attrs().Index,
			Dst:       ipNet(r.network),
			Src:       net.IP(r.subnet.Addr().AsSlice()),
		}
		if r.subnet.Addr().Is4() {
			route.Scope = unix.RT_SCOPE_LINK
		}
		if err := netlink.RouteReplace(route); err != nil {
			return fmt.Errorf("route %s dev %s: %w", r.network, name, err)
		}
	}
	return nil
}

func ipNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{
		IP:   net.IP(p.Addr().AsSlice()),
		Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen()),
	}
}
