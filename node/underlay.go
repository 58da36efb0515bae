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
// In a dual-stack overlay both public addresses are on the one
// interface, as flannel wants them.
type underlayLink struct {
	Name       string
	Index      int
	PublicIP   netip.Addr // invalid when the overlay carries no IPv4
	PublicIPv6 netip.Addr // invalid when the overlay carries no IPv6
	MTU        int
}

// families says which address families the node's underlay must carry:
// those the overlay's config turns on.
type families struct{ v4, v6 bool }

// underlayChoice says how to choose the underlay interface (Config's
// Iface, IfaceRegex, IfaceCanReach, PublicIP and PublicIPv6), with
// flanneld's flags and in flanneld's order (its main.go and
// pkg/ipmatch): with none of Iface, IfaceRegex and IfaceCanReach, the
// interface holding PublicIP if that is set (PublicIPv6 in an IPv6-only
// overlay, or when PublicIP is not set), else the default route's;
// otherwise the first of Iface that exists and has an address of each
// family the overlay carries, else the first interface a regex of
// IfaceRegex matches (each regex in turn: by one of its addresses of
// each family, then by name), else the interface the kernel routes
// IfaceCanReach through. The node's public IP is then PublicIP if set,
// else the address that chose the interface (an Iface given as an
// address, the address a regex matched, the source address of the route
// to IfaceCanReach), else the interface's first IPv4 address in
// flannel's order of preference; its public IPv6 likewise.
type underlayChoice struct {
	Iface         []string         // names or addresses
	IfaceRegex    []*regexp.Regexp // matched against addresses, then names
	IfaceCanReach netip.Addr
	PublicIP      netip.Addr
	PublicIPv6    netip.Addr
	// Families the overlay carries; the zero value is IPv4 alone.
	Families families
	// AnyFamily asks only for an interface the flags name, with an
	// address of either family: what can be checked before the config
	// says which families the overlay carries.
	AnyFamily bool
}

// families is c.Families, IPv4 alone when unset.
func (c underlayChoice) families() families {
	if !c.Families.v4 && !c.Families.v6 {
		return families{v4: true}
	}
	return c.Families
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
	// IPv6 holds the addresses a node may use as its public IPv6
	// (usableIPv6), preferred first.
	IPv6 []netip.Addr
	// IPv6Off says why the interface can have no IPv6 address ("" if it
	// can): the kernel runs without IPv6, or it is disabled on the
	// interface.
	IPv6Off string
	// All holds every address of the interface, of either family: an
	// --iface given as an address finds its interface among these.
	All []netip.Addr
}

// underlayHost is the host's network as choosing an underlay sees it:
// netlink (underlay_netlink.go), or a table in tests.
type underlayHost interface {
	// Links lists the interfaces in index order.
	Links() ([]linkInfo, error)
	// DefaultRouteLink is the index of the default route's interface, of
	// the IPv4 default route or, with v6, the IPv6 one; 0 and no error
	// when there is none.
	DefaultRouteLink(v6 bool) (int, error)
	// RouteTo is what `ip route get dst` answers: the interface and the
	// source address the kernel would use.
	RouteTo(dst netip.Addr) (link int, src netip.Addr, err error)
}

// errNoMatch is what one of --iface, --iface-regex or --iface-can-reach
// reports when it names no usable interface; the next one is tried.
var errNoMatch = errors.New("no match")

// chosen are the addresses that chose an interface, one per family at
// most: they become the public addresses unless a flag sets those.
type chosen struct{ v4, v6 netip.Addr }

func chose(a netip.Addr) chosen {
	switch a = a.Unmap(); {
	case a.Is4():
		return chosen{v4: a}
	case a.IsValid():
		return chosen{v6: a}
	}
	return chosen{}
}

// chooseUnderlay picks the underlay interface and the public addresses as
// c says.
func chooseUnderlay(c underlayChoice, h underlayHost) (underlayLink, error) {
	links, err := h.Links()
	if err != nil {
		return underlayLink{}, fmt.Errorf("list interfaces: %w", err)
	}
	fam := c.families()
	if len(c.Iface) == 0 && len(c.IfaceRegex) == 0 && !c.IfaceCanReach.IsValid() {
		if c.AnyFamily {
			// Which address and which default route count depends on
			// the families.
			return underlayLink{}, nil
		}
		var (
			l   linkInfo
			err error
		)
		switch {
		case fam.v4 && c.PublicIP.IsValid():
			l, err = linkWithAddr(links, c.PublicIP)
			if err != nil {
				err = fmt.Errorf("--public-ip %s: no interface has it: give it to the underlay interface, or name that interface with --iface", c.PublicIP)
			}
		case fam.v6 && c.PublicIPv6.IsValid():
			l, err = linkWithAddr(links, c.PublicIPv6)
			if err != nil {
				err = fmt.Errorf("--public-ipv6 %s: no interface has it: give it to the underlay interface, or name that interface with --iface", c.PublicIPv6)
			}
		default:
			l, err = defaultRouteLink(h, links, fam)
		}
		if err != nil {
			return underlayLink{}, err
		}
		return underlayOn(l, chosen{}, c)
	}

	// Each option names interfaces in turn, and the first that can be
	// used wins; why each other one could not is kept for the error.
	var tried []string
	try := func(what string, pick func() (linkInfo, chosen, error)) (underlayLink, bool) {
		l, ch, err := pick()
		if err == nil {
			u, uerr := underlayOn(l, ch, c)
			if uerr == nil {
				return u, true
			}
			err = uerr
		}
		tried = append(tried, what+": "+err.Error())
		return underlayLink{}, false
	}
	for _, name := range c.Iface {
		if u, ok := try("--iface "+name, func() (linkInfo, chosen, error) { return linkByNameOrAddr(links, name) }); ok {
			return u, nil
		}
	}
	for _, re := range c.IfaceRegex {
		if u, ok := try("--iface-regex "+re.String(), func() (linkInfo, chosen, error) {
			if c.AnyFamily {
				return linkByRegexAny(links, re)
			}
			return linkByRegex(links, re, fam)
		}); ok {
			return u, nil
		}
	}
	if c.IfaceCanReach.IsValid() {
		if u, ok := try("--iface-can-reach "+c.IfaceCanReach.String(), func() (linkInfo, chosen, error) {
			return linkToward(h, links, c.IfaceCanReach)
		}); ok {
			return u, nil
		}
	}
	return underlayLink{}, fmt.Errorf("no underlay interface: none of --iface, --iface-regex and --iface-can-reach names one that can be used (%s)", strings.Join(tried, "; "))
}

// underlayOn makes the underlay of interface l, with an address of each
// family c's overlay carries: the public IP is c.PublicIP if valid, else
// the IPv4 address that chose l, else l's first usable IPv4 address; the
// public IPv6 likewise.
func underlayOn(l linkInfo, ch chosen, c underlayChoice) (underlayLink, error) {
	fam := c.families()
	u := underlayLink{Name: l.Name, Index: l.Index, MTU: l.MTU}
	if c.AnyFamily {
		if len(l.IPv4) == 0 && len(l.IPv6) == 0 && !c.PublicIP.IsValid() && !c.PublicIPv6.IsValid() {
			return underlayLink{}, fmt.Errorf("interface %s has no IPv4 address nor a global IPv6 one: give it one, or name another (--iface, --iface-regex, --iface-can-reach)", l.Name)
		}
		fam = families{}
	}
	if fam.v4 {
		u.PublicIP = cmp.Or(c.PublicIP, ch.v4)
		if !u.PublicIP.IsValid() {
			if len(l.IPv4) == 0 {
				return underlayLink{}, fmt.Errorf("interface %s has no IPv4 address: give it one, or name another (--iface, --iface-regex, --iface-can-reach), or set --public-ip", l.Name)
			}
			u.PublicIP = l.IPv4[0]
		}
	}
	if fam.v6 {
		u.PublicIPv6 = cmp.Or(c.PublicIPv6, ch.v6)
		if !u.PublicIPv6.IsValid() {
			if len(l.IPv6) == 0 {
				return underlayLink{}, noIPv6(l)
			}
			u.PublicIPv6 = l.IPv6[0]
		}
	}
	if u.MTU <= 0 {
		return underlayLink{}, fmt.Errorf("interface %s reports MTU %d", l.Name, u.MTU)
	}
	return u, nil
}

// noIPv6 says why interface l has no IPv6 address to use, and what to do.
func noIPv6(l linkInfo) error {
	const what = `but the overlay's config carries IPv6 ("EnableIPv6":true)`
	if l.IPv6Off != "" {
		return fmt.Errorf("IPv6 is off on interface %s (%s), %s: turn it on and give %s an address, or name another interface (--iface, --iface-regex, --iface-can-reach)", l.Name, l.IPv6Off, what, l.Name)
	}
	return fmt.Errorf("interface %s has no global or unique-local IPv6 address, %s: give it one, or name another (--iface, --iface-regex, --iface-can-reach), or set --public-ipv6", l.Name, what)
}

// defaultRouteLink is the interface of the default route: the IPv4 one,
// or the IPv6 one in an IPv6-only overlay. In a dual-stack overlay an IPv6
// default route on another interface is an error, as in flannel: the
// node's two public addresses sit on one interface.
func defaultRouteLink(h underlayHost, links []linkInfo, fam families) (linkInfo, error) {
	idx4, idx6 := 0, 0
	var err error
	if fam.v4 {
		if idx4, err = h.DefaultRouteLink(false); err != nil {
			return linkInfo{}, err
		}
	}
	if fam.v6 {
		if idx6, err = h.DefaultRouteLink(true); err != nil {
			return linkInfo{}, err
		}
	}
	switch {
	case fam.v4 && idx4 == 0:
		return linkInfo{}, errors.New("no default route to find the underlay interface by: name it with --iface, --iface-regex or --iface-can-reach")
	case !fam.v4 && idx6 == 0:
		return linkInfo{}, errors.New("no IPv6 default route to find the underlay interface by: name it with --iface, --iface-regex or --iface-can-reach")
	case fam.v4 && idx6 != 0 && idx6 != idx4:
		return linkInfo{}, fmt.Errorf("the IPv4 default route is on %s but the IPv6 one on %s: a dual-stack node's underlay is one interface; name it with --iface", linkName(links, idx4), linkName(links, idx6))
	}
	return linkByIndex(links, cmp.Or(idx4, idx6))
}

func linkName(links []linkInfo, idx int) string {
	if l, err := linkByIndex(links, idx); err == nil {
		return l.Name
	}
	return fmt.Sprintf("interface %d", idx)
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
func linkByNameOrAddr(links []linkInfo, s string) (linkInfo, chosen, error) {
	if ip, err := netip.ParseAddr(s); err == nil {
		l, err := linkWithAddr(links, ip.Unmap())
		if err != nil {
			return linkInfo{}, chosen{}, fmt.Errorf("no interface has the address %s", ip)
		}
		return l, chose(ip), nil
	}
	for _, l := range links {
		if l.Name == s {
			return l, chosen{}, nil
		}
	}
	return linkInfo{}, chosen{}, fmt.Errorf("no interface is named %q", s)
}

func linkWithAddr(links []linkInfo, ip netip.Addr) (linkInfo, error) {
	for _, l := range links {
		if slices.Contains(l.All, ip) {
			return l, nil
		}
	}
	return linkInfo{}, errNoMatch
}

// linkByRegex is flannel's --iface-regex: the first interface where the
// regex matches a usable address of each family the overlay carries
// (those addresses are chosen), else the first interface whose name it
// matches.
func linkByRegex(links []linkInfo, re *regexp.Regexp, fam families) (linkInfo, chosen, error) {
	match := func(addrs []netip.Addr) netip.Addr {
		for _, ip := range addrs {
			if re.MatchString(ip.String()) {
				return ip
			}
		}
		return netip.Addr{}
	}
	for _, l := range links {
		ch := chosen{v4: match(l.IPv4), v6: match(l.IPv6)}
		if (!fam.v4 || ch.v4.IsValid()) && (!fam.v6 || ch.v6.IsValid()) {
			if !fam.v4 {
				ch.v4 = netip.Addr{}
			}
			if !fam.v6 {
				ch.v6 = netip.Addr{}
			}
			return l, ch, nil
		}
	}
	for _, l := range links {
		if re.MatchString(l.Name) {
			return l, chosen{}, nil
		}
	}
	have := make([]string, len(links))
	for i, l := range links {
		var addrs []netip.Addr
		if fam.v4 {
			addrs = append(addrs, l.IPv4...)
		}
		if fam.v6 {
			addrs = append(addrs, l.IPv6...)
		}
		have[i] = fmt.Sprintf("%s%v", l.Name, addrs)
	}
	what := "IPv4 address"
	switch {
	case fam.v4 && fam.v6:
		what = "IPv4 and IPv6 addresses"
	case fam.v6:
		what = "IPv6 address"
	}
	return linkInfo{}, chosen{}, fmt.Errorf("matches no interface's name or %s (%s)", what, strings.Join(have, " "))
}

// linkByRegexAny is linkByRegex with an address of either family.
func linkByRegexAny(links []linkInfo, re *regexp.Regexp) (linkInfo, chosen, error) {
	for _, fam := range []families{{v4: true}, {v6: true}} {
		if l, ch, err := linkByRegex(links, re, fam); err == nil {
			return l, ch, nil
		}
	}
	return linkByRegex(links, re, families{v4: true, v6: true})
}

// linkToward is flannel's --iface-can-reach: the interface of `ip route
// get dst`, with the route's source address chosen.
func linkToward(h underlayHost, links []linkInfo, dst netip.Addr) (linkInfo, chosen, error) {
	idx, src, err := h.RouteTo(dst)
	if err != nil {
		return linkInfo{}, chosen{}, err
	}
	l, err := linkByIndex(links, idx)
	return l, chose(src), err
}

// ifaceAddr is one address of an interface, with the flags that order
// them.
type ifaceAddr struct {
	IP                               netip.Addr
	Deprecated, Permanent, Temporary bool
	// Tentative is an IPv6 address still in, or failed, duplicate
	// address detection: not one to send from.
	Tentative bool
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
	return preferred(keep)
}

// usableIPv6 keeps the addresses a node may use as its public IPv6:
// IPv6 global unicast (unique-local ones too), not deprecated, not
// tentative. flannel would fall back on a link-local one; vxrouter does
// not, since a peer cannot reach it without a zone. They are ordered as
// flannel orders them: permanent before dynamic (SLAAC), stable before
// temporary (privacy), else as the kernel lists them.
func usableIPv6(addrs []ifaceAddr) []netip.Addr {
	var keep []ifaceAddr
	for _, a := range addrs {
		if ip := a.IP; ip.Is6() && !ip.Is4In6() && ip.IsGlobalUnicast() && !a.Deprecated && !a.Tentative {
			keep = append(keep, a)
		}
	}
	return preferred(keep)
}

// preferred orders addresses as flannel does: global before link-local,
// permanent before dynamic, stable before temporary, else as listed.
func preferred(keep []ifaceAddr) []netip.Addr {
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

// checkUnderlayFlags finds out, before the node reads its config, whether
// the flags that choose the underlay name an interface at all, so that a
// typo fails at once, even with etcd out of reach. Which interface and
// which addresses the node uses is up to findUnderlay, once the config
// says which families the overlay carries.
func (n *Node) checkUnderlayFlags() error {
	_, err := findUnderlay(underlayChoice{Iface: n.cfg.Iface, IfaceRegex: n.cfg.IfaceRegex, IfaceCanReach: n.cfg.IfaceCanReach,
		PublicIP: n.cfg.PublicIP, PublicIPv6: n.cfg.PublicIPv6, AnyFamily: true})
	return err
}

// findUnderlay finds the node's underlay for the families its overlay
// carries. A public address flag for a family the overlay does not carry
// is ignored, with a warning, as flannel ignores it.
func (n *Node) findUnderlay() (underlayLink, error) {
	fam := familiesOf(n.overlay)
	c := underlayChoice{Iface: n.cfg.Iface, IfaceRegex: n.cfg.IfaceRegex, IfaceCanReach: n.cfg.IfaceCanReach, Families: fam}
	if fam.v4 {
		c.PublicIP = n.cfg.PublicIP
	} else if n.cfg.PublicIP.IsValid() {
		n.log.Warn("--public-ip is ignored: the overlay carries no IPv4 (\"EnableIPv4\":false)", "public-ip", n.cfg.PublicIP)
	}
	if fam.v6 {
		c.PublicIPv6 = n.cfg.PublicIPv6
	} else if n.cfg.PublicIPv6.IsValid() {
		n.log.Warn("--public-ipv6 is ignored: the overlay carries no IPv6 (no \"EnableIPv6\":true)", "public-ipv6", n.cfg.PublicIPv6)
	}
	u, err := findUnderlay(c)
	if err != nil {
		return u, err
	}
	args := []any{"iface", u.Name}
	if u.PublicIP.IsValid() {
		args = append(args, "public-ip", u.PublicIP)
	}
	if u.PublicIPv6.IsValid() {
		args = append(args, "public-ipv6", u.PublicIPv6)
	}
	n.log.Info("underlay", append(args, "mtu", u.MTU, "vtep-mac", n.vtep.String())...)
	return u, nil
}
