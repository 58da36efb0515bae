package node

import (
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// findUnderlay chooses the underlay interface of this host's network
// namespace as c says.
func findUnderlay(c underlayChoice) (underlayLink, error) {
	return chooseUnderlay(c, netlinkHost{})
}

// netlinkHost is underlayHost over netlink: the network namespace the
// node runs in.
type netlinkHost struct{}

func (netlinkHost) Links() ([]linkInfo, error) {
	links, err := netlink.LinkList()
	if err != nil {
		return nil, err
	}
	addrs, err := netlink.AddrList(nil, netlink.FAMILY_ALL)
	if err != nil {
		return nil, fmt.Errorf("list addresses: %w", err)
	}
	byLink := make(map[int][]ifaceAddr)
	for _, a := range addrs {
		ip, ok := netip.AddrFromSlice(a.IP)
		if !ok {
			continue
		}
		byLink[a.LinkIndex] = append(byLink[a.LinkIndex], ifaceAddr{
			IP:         ip.Unmap(),
			Deprecated: a.Flags&unix.IFA_F_DEPRECATED != 0,
			Permanent:  a.Flags&unix.IFA_F_PERMANENT != 0,
			Temporary:  a.Flags&unix.IFA_F_TEMPORARY != 0,
			Tentative:  a.Flags&(unix.IFA_F_TENTATIVE|unix.IFA_F_DADFAILED) != 0,
		})
	}
	out := make([]linkInfo, 0, len(links))
	for _, l := range links {
		attrs := l.Attrs()
		li := linkInfo{Index: attrs.Index, Name: attrs.Name, MTU: attrs.MTU,
			IPv4: usableIPv4(byLink[attrs.Index]), IPv6: usableIPv6(byLink[attrs.Index]), IPv6Off: ipv6Off(attrs.Name)}
		for _, a := range byLink[attrs.Index] {
			li.All = append(li.All, a.IP)
		}
		out = append(out, li)
	}
	return out, nil
}

// ipv6Off says why interface name can have no IPv6 address, or "".
func ipv6Off(name string) string {
	if _, err := os.Stat("/proc/sys/net/ipv6"); err != nil {
		return "the kernel runs without IPv6"
	}
	if b, err := os.ReadFile(filepath.Join("/proc/sys/net/ipv6/conf", name, "disable_ipv6")); err == nil && strings.TrimSpace(string(b)) == "1" {
		return "net.ipv6.conf." + strings.ReplaceAll(name, ".", "/") + ".disable_ipv6=1"
	}
	return ""
}

func (netlinkHost) DefaultRouteLink(v6 bool) (int, error) {
	family, what := netlink.FAMILY_V4, "default route"
	if v6 {
		family, what = netlink.FAMILY_V6, "IPv6 default route"
	}
	routes, err := netlink.RouteList(nil, family)
	if err != nil {
		return 0, fmt.Errorf("list routes: %w", err)
	}
	for _, r := range routes {
		if r.Dst == nil || r.Dst.IP.IsUnspecified() && isZeroMask(r.Dst.Mask) {
			if r.LinkIndex <= 0 {
				return 0, fmt.Errorf("the %s has no single interface (multipath?): name the underlay with --iface", what)
			}
			return r.LinkIndex, nil
		}
	}
	return 0, nil
}

func (netlinkHost) RouteTo(dst netip.Addr) (int, netip.Addr, error) {
	routes, err := netlink.RouteGet(dst.AsSlice())
	if err != nil {
		return 0, netip.Addr{}, fmt.Errorf("ip route get %s: %w", dst, err)
	}
	if len(routes) == 0 {
		return 0, netip.Addr{}, fmt.Errorf("ip route get %s: no route", dst)
	}
	src, _ := netip.AddrFromSlice(routes[0].Src)
	return routes[0].LinkIndex, src.Unmap(), nil
}

func isZeroMask(m []byte) bool {
	for _, b := range m {
		if b != 0 {
			return false
		}
	}
	return true
}
