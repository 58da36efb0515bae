package node

import (
	"errors"
	"fmt"
	"net/netip"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// underlayLink is what the node needs to know of its underlay interface.
type underlayLink struct {
	Name     string
	PublicIP netip.Addr
	MTU      int
}

// findUnderlay resolves iface, an interface name or one of its addresses,
// or "" for the interface of the default route. publicIP, when valid,
// overrides the interface's first IPv4 address.
func findUnderlay(iface string, publicIP netip.Addr) (underlayLink, error) {
	link, err := underlayByName(iface)
	if err != nil {
		return underlayLink{}, err
	}
	attrs := link.Attrs()
	u := underlayLink{Name: attrs.Name, MTU: attrs.MTU, PublicIP: publicIP}
	if ip, err := netip.ParseAddr(iface); err == nil && !u.PublicIP.IsValid() {
		u.PublicIP = ip.Unmap() // --iface named the address itself
	}
	if !u.PublicIP.IsValid() {
		addrs, err := netlink.AddrList(link, netlink.FAMILY_V4)
		if err != nil {
			return underlayLink{}, fmt.Errorf("list addresses of %s: %w", attrs.Name, err)
		}
		for _, a := range addrs {
			if ip, ok := netip.AddrFromSlice(a.IP); ok && a.Scope == unix.RT_SCOPE_UNIVERSE {
				u.PublicIP = ip.Unmap()
				break
			}
		}
		if !u.PublicIP.IsValid() {
			return underlayLink{}, fmt.Errorf("underlay interface %s has no IPv4 address: give it one, or name another with --iface, or set --public-ip", attrs.Name)
		}
	}
	if u.MTU <= 0 {
		return underlayLink{}, fmt.Errorf("underlay interface %s reports MTU %d", attrs.Name, u.MTU)
	}
	return u, nil
}

func underlayByName(iface string) (netlink.Link, error) {
	if iface == "" {
		routes, err := netlink.RouteList(nil, netlink.FAMILY_V4)
		if err != nil {
			return nil, fmt.Errorf("list routes: %w", err)
		}
		for _, r := range routes {
			if r.Dst == nil || r.Dst.IP.IsUnspecified() {
				l, err := netlink.LinkByIndex(r.LinkIndex)
				if err != nil {
					return nil, fmt.Errorf("default route's interface: %w", err)
				}
				return l, nil
			}
		}
		return nil, errors.New("no default route to find the underlay interface by: name it with --iface")
	}
	if ip, err := netip.ParseAddr(iface); err == nil {
		addrs, err := netlink.AddrList(nil, netlink.FAMILY_ALL)
		if err != nil {
			return nil, fmt.Errorf("list addresses: %w", err)
		}
		for _, a := range addrs {
			if got, ok := netip.AddrFromSlice(a.IP); ok && got.Unmap() == ip {
				return netlink.LinkByIndex(a.LinkIndex)
			}
		}
		return nil, fmt.Errorf("no interface has the address %s (--iface)", ip)
	}
	l, err := netlink.LinkByName(iface)
	if err != nil {
		return nil, fmt.Errorf("underlay interface %q (--iface): %w", iface, err)
	}
	return l, nil
}
