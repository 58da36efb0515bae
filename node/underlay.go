package node

import (
	"cmp"
	"errors"
	"fmt"
	"net/netip"
	"regexp"
	"slices"
	"strings"
)

// underlayLink is what the node needs to know of its underlay interface.
type underlayLink struct {
	Name     string
	Index    int
	PublicIP netip.Addr
	MTU      int
}

// underlayChoice says how to choose the underlay interface (Config's
// Iface, IfaceRegex, IfaceCanReach and PublicIP), with flanneld's flags
// and in flanneld's order (its main.go and
// pkg/ipmatch): with none of Iface, IfaceRegex and IfaceCanReach, the
// interface holding PublicIP if that is set, else the default route's;
// otherwise the first of Iface that exists and has an IPv4 address, else
// the first interface a regex of IfaceRegex matches (each regex in turn:
// by one of its IPv4 addresses, then by name), else the interface the
// kernel routes IfaceCanReach through. The node's public IP is then
// PublicIP if set, else the address that chose the interface (an Iface
// given as an address, the address a regex matched, the source address
// of the route to IfaceCanReach), else the interface's first IPv4
// address in flannel's order of preference.
type underlayChoice struct {
	Iface         []string         // names or addresses
	IfaceRegex    []*regexp.Regexp // matched against addresses, then names
	IfaceCanReach netip.Addr
	PublicIP      netip.Addr
}

// linkInfo is what choosing an underlay looks at of one interface.
type linkInfo struct {
	Index int
	Name  string
	MTU   int
	// IPv4 holds the addresses a node may use as its public IP (global
	// or link-local unicast, not deprecated), preferred first: flannel's
	// GetInterfaceIP4Addrs.
	IPv4 []netip.Addr
	// All holds every address of the interface, of either family: an
	// --iface given as an address finds its interface among these.
	All []netip.Addr
}

// underlayHost is the host's network as choosing an underlay sees it:
// netlink (underlay_linux.go), or a table in tests.
type underlayHost interface {
	// Links lists the interfaces in index order.
	Links() ([]linkInfo, error)
	// DefaultRouteLink is the index of the IPv4 default route's interface.
	DefaultRouteLink() (int, error)
	// RouteTo is what `ip route get dst` answers: the interface and the
	// source address the kernel would use.
	RouteTo(dst netip.Addr) (link int, src netip.Addr, err error)
}

// errNoMatch is what one of --iface, --iface-regex or --iface-can-reach
// reports when it names no usable interface; the next one is tried.
var errNoMatch = errors.New("no match")

// chooseUnderlay picks the underlay interface and the public IP as c says.
func chooseUnderlay(c underlayChoice, h underlayHost) (underlayLink, error) {
	links, err := h.Links()
	if err != nil {
		return underlayLink{}, fmt.Errorf("list interfaces: %w", err)
	}
	if len(c.Iface) == 0 && len(c.IfaceRegex) == 0 && !c.IfaceCanReach.IsValid() {
		var (
			l   linkInfo
			err error
		)
		if c.PublicIP.IsValid() {
			l, err = linkWithAddr(links, c.PublicIP)
			if err != nil {
				err = fmt.Errorf("--public-ip %s: no interface has it: give it to the underlay interface, or name that interface with --iface", c.PublicIP)
			}
		} else {
			l, err = defaultRouteLink(h, links)
		}
		if err != nil {
			return underlayLink{}, err
		}
		return underlayOn(l, netip.Addr{}, c.PublicIP)
	}

	// Each option names interfaces in turn, and the first that can be
	// used wins; why each other one could not is kept for the error.
	var tried []string
	try := func(what string, pick func() (linkInfo, netip.Addr, error)) (underlayLink, bool) {
		l, ip, err := pick()
		if err == nil {
			u, uerr := underlayOn(l, ip, c.PublicIP)
			if uerr == nil {
				return u, true
			}
			err = uerr
		}
		tried = append(tried, what+": "+err.Error())
		return underlayLink{}, false
	}
	for _, name := range c.Iface {
		if u, ok := try("--iface "+name, func() (linkInfo, netip.Addr, error) { return linkByNameOrAddr(links, name) }); ok {
			return u, nil
		}
	}
	for _, re := range c.IfaceRegex {
		if u, ok := try("--iface-regex "+re.String(), func() (linkInfo, netip.Addr, error) { return linkByRegex(links, re) }); ok {
			return u, nil
		}
	}
	if c.IfaceCanReach.IsValid() {
		if u, ok := try("--iface-can-reach "+c.IfaceCanReach.String(), func() (linkInfo, netip.Addr, error) {
			return linkToward(h, links, c.IfaceCanReach)
		}); ok {
			return u, nil
		}
	}
	return underlayLink{}, fmt.Errorf("no underlay interface: none of --iface, --iface-regex and --iface-can-reach names one that can be used (%s)", strings.Join(tried, "; "))
}

// underlayOn makes the underlay of interface l. The public IP is publicIP
// if valid, else chosen if valid (an IPv4 address that picked l), else
// l's first usable IPv4 address.
func underlayOn(l linkInfo, chosen, publicIP netip.Addr) (underlayLink, error) {
	u := underlayLink{Name: l.Name, Index: l.Index, MTU: l.MTU, PublicIP: publicIP}
	if !u.PublicIP.IsValid() && chosen.Is4() {
		u.PublicIP = chosen
	}
	if !u.PublicIP.IsValid() {
		if len(l.IPv4) == 0 {
			return underlayLink{}, fmt.Errorf("interface %s has no IPv4 address: give it one, or name another (--iface, --iface-regex, --iface-can-reach), or set --public-ip", l.Name)
		}
		u.PublicIP = l.IPv4[0]
	}
	if u.MTU <= 0 {
		return underlayLink{}, fmt.Errorf("interface %s reports MTU %d", l.Name, u.MTU)
	}
	return u, nil
}

func defaultRouteLink(h underlayHost, links []linkInfo) (linkInfo, error) {
	idx, err := h.DefaultRouteLink()
	if err != nil {
		return linkInfo{}, err
	}
	return linkByIndex(links, idx)
}

func linkByIndex(links []linkInfo, idx int) (linkInfo, error) {
	for _, l := range links {
		if l.Index == idx {
			return l, nil
		}
	}
	return linkInfo{}, fmt.Errorf("interface %d: %w", idx, errNoMatch)
}

// linkByNameOrAddr finds --iface's interface: by name, or by one of its
// addresses, which then is the one chosen.
func linkByNameOrAddr(links []linkInfo, s string) (linkInfo, netip.Addr, error) {
	if ip, err := netip.ParseAddr(s); err == nil {
		l, err := linkWithAddr(links, ip.Unmap())
		if err != nil {
			return linkInfo{}, netip.Addr{}, fmt.Errorf("no interface has the address %s", ip)
		}
		return l, ip.Unmap(), nil
	}
	for _, l := range links {
		if l.Name == s {
			return l, netip.Addr{}, nil
		}
	}
	return linkInfo{}, netip.Addr{}, fmt.Errorf("no interface is named %q", s)
}

func linkWithAddr(links []linkInfo, ip netip.Addr) (linkInfo, error) {
	for _, l := range links {
		if slices.Contains(l.All, ip) {
			return l, nil
		}
	}
	return linkInfo{}, errNoMatch
}

// linkByRegex is flannel's --iface-regex: the first interface with a
// usable IPv4 address the regex matches (that address is chosen), else
// the first interface whose name it matches.
func linkByRegex(links []linkInfo, re *regexp.Regexp) (linkInfo, netip.Addr, error) {
	for _, l := range links {
		for _, ip := range l.IPv4 {
			if re.MatchString(ip.String()) {
				return l, ip, nil
			}
		}
	}
	for _, l := range links {
		if re.MatchString(l.Name) {
			return l, netip.Addr{}, nil
		}
	}
	have := make([]string, len(links))
	for i, l := range links {
		have[i] = fmt.Sprintf("%s%v", l.Name, l.IPv4)
	}
	return linkInfo{}, netip.Addr{}, fmt.Errorf("matches no interface's name or IPv4 address (%s)", strings.Join(have, " "))
}

// linkToward is flannel's --iface-can-reach: the interface of `ip route
// get dst`, with the route's source address chosen.
func linkToward(h underlayHost, links []linkInfo, dst netip.Addr) (linkInfo, netip.Addr, error) {
	idx, src, err := h.RouteTo(dst)
	if err != nil {
		return linkInfo{}, netip.Addr{}, err
	}
	l, err := linkByIndex(links, idx)
	return l, src, err
}

// ifaceAddr is one address of an interface, with the flags that order
// them.
type ifaceAddr struct {
	IP                               netip.Addr
	Deprecated, Permanent, Temporary bool
}

// usableIPv4 keeps the addresses flannel would use as a public IP (IPv4,
// global or link-local unicast, not deprecated) and orders them as it
// does: global before link-local, permanent before dynamic, stable before
// temporary, else as the kernel lists them.
func usableIPv4(addrs []ifaceAddr) []netip.Addr {
	var keep []ifaceAddr
	for _, a := range addrs {
		if ip := a.IP.Unmap(); ip.Is4() && (ip.IsGlobalUnicast() || ip.IsLinkLocalUnicast()) && !a.Deprecated {
			a.IP = ip
			keep = append(keep, a)
		}
	}
	rank := func(a ifaceAddr) [3]bool { return [3]bool{a.IP.IsLinkLocalUnicast(), !a.Permanent, a.Temporary} }
	slices.SortStableFunc(keep, func(a, b ifaceAddr) int {
		ra, rb := rank(a), rank(b)
		for i := range ra {
			if c := cmp.Compare(b2i(ra[i]), b2i(rb[i])); c != 0 {
				return c
			}
		}
		return 0
	})
	out := make([]netip.Addr, len(keep))
	for i, a := range keep {
		out[i] = a.IP
	}
	return out
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}
