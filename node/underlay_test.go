package node

import (
	"errors"
	"net/netip"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// fakeHost is a host's interfaces and routes, as a table.
type fakeHost struct {
	links    []linkInfo
	defLink  int                   // 0: no default route
	defLink6 int                   // 0: no IPv6 default route
	routesTo map[netip.Addr][2]any // dst -> {link int, src netip.Addr}
}

func (h fakeHost) Links() ([]linkInfo, error) { return h.links, nil }

func (h fakeHost) DefaultRouteLink(v6 bool) (int, error) {
	if v6 {
		return h.defLink6, nil
	}
	return h.defLink, nil
}

func (h fakeHost) RouteTo(dst netip.Addr) (int, netip.Addr, error) {
	r, ok := h.routesTo[dst]
	if !ok {
		return 0, netip.Addr{}, errors.New("network unreachable")
	}
	return r[0].(int), r[1].(netip.Addr), nil
}

var ip = netip.MustParseAddr

func link(idx int, name string, addrs ...string) linkInfo {
	l := linkInfo{Index: idx, Name: name, MTU: 1500}
	var as []ifaceAddr
	for _, a := range addrs {
		as = append(as, ifaceAddr{IP: ip(a), Permanent: true})
		l.All = append(l.All, ip(a))
	}
	l.IPv4 = usableIPv4(as)
	l.IPv6 = usableIPv6(as)
	return l
}

// A host like lab's with one more leg: eth0 on the main underlay (and
// the default route), eth1 on a second segment with two addresses, a
// link with only IPv6, and lo.
func twoLegHost() fakeHost {
	return fakeHost{
		links: []linkInfo{
			link(1, "lo", "127.0.0.1", "::1"),
			link(2, "eth0", "10.213.0.3", "fd00::3"),
			link(3, "eth1", "10.213.1.2", "10.213.1.9"),
			link(4, "v6only", "fd00:1::4"),
		},
		defLink: 2,
		routesTo: map[netip.Addr][2]any{
			ip("10.213.1.7"): {3, ip("10.213.1.9")},
			ip("10.213.0.1"): {2, ip("10.213.0.3")},
			ip("8.8.8.8"):    {2, ip("10.213.0.3")},
			ip("fd00:1::7"):  {4, ip("fd00:1::4")},
		},
	}
}

func res(s ...string) []*regexp.Regexp {
	var out []*regexp.Regexp
	for _, r := range s {
		out = append(out, regexp.MustCompile(r))
	}
	return out
}

// TestChooseUnderlay: flannel's --iface, --iface-regex, --iface-can-reach
// and --public-ip, each alone and in flannel's order of precedence.
func TestChooseUnderlay(t *testing.T) {
	for _, tc := range []struct {
		name    string
		c       underlayChoice
		iface   string
		public  string
		wantErr string
	}{
		{name: "default route", iface: "eth0", public: "10.213.0.3"},
		{name: "public IP finds its interface", c: underlayChoice{PublicIP: ip("10.213.1.9")}, iface: "eth1", public: "10.213.1.9"},
		{name: "public IP on no interface", c: underlayChoice{PublicIP: ip("192.0.2.1")}, wantErr: "--public-ip 192.0.2.1: no interface has it"},
		{name: "iface by name", c: underlayChoice{Iface: []string{"eth1"}}, iface: "eth1", public: "10.213.1.2"},
		{name: "iface by address picks that address", c: underlayChoice{Iface: []string{"10.213.1.9"}}, iface: "eth1", public: "10.213.1.9"},
		{name: "iface by IPv6 address, public IP its IPv4", c: underlayChoice{Iface: []string{"fd00::3"}}, iface: "eth0", public: "10.213.0.3"},
		{name: "iface list: first that exists", c: underlayChoice{Iface: []string{"eth9", "192.0.2.1", "eth1", "eth0"}}, iface: "eth1", public: "10.213.1.2"},
		{name: "iface list: first with IPv4", c: underlayChoice{Iface: []string{"v6only", "lo", "eth0"}}, iface: "eth0", public: "10.213.0.3"},
		{name: "iface and public IP", c: underlayChoice{Iface: []string{"eth1"}, PublicIP: ip("203.0.113.5")}, iface: "eth1", public: "203.0.113.5"},
		{name: "regex on an address", c: underlayChoice{IfaceRegex: res(`^10\.213\.1\.`)}, iface: "eth1", public: "10.213.1.2"},
		{name: "regex on a second address", c: underlayChoice{IfaceRegex: res(`\.9$`)}, iface: "eth1", public: "10.213.1.9"},
		{name: "regex on a name", c: underlayChoice{IfaceRegex: res(`^eth1$`)}, iface: "eth1", public: "10.213.1.2"},
		// flannel looks at every interface's addresses before any name.
		{name: "regex: addresses before names", c: underlayChoice{IfaceRegex: res(`^(eth0|10\.213\.1\.2)$`)}, iface: "eth1", public: "10.213.1.2"},
		{name: "regex list: first that matches", c: underlayChoice{IfaceRegex: res(`^wlan`, `^eth[0-9]{1,2}$`)}, iface: "eth0", public: "10.213.0.3"},
		{name: "regex naming an interface without IPv4, then another", c: underlayChoice{IfaceRegex: res(`^v6`, `^10\.213\.1\.9$`)}, iface: "eth1", public: "10.213.1.9"},
		{name: "can-reach", c: underlayChoice{IfaceCanReach: ip("10.213.1.7")}, iface: "eth1", public: "10.213.1.9"},
		{name: "can-reach through a gateway", c: underlayChoice{IfaceCanReach: ip("8.8.8.8")}, iface: "eth0", public: "10.213.0.3"},
		{name: "iface before regex", c: underlayChoice{Iface: []string{"eth0"}, IfaceRegex: res(`^eth1$`)}, iface: "eth0", public: "10.213.0.3"},
		{name: "regex when no iface works", c: underlayChoice{Iface: []string{"eth9"}, IfaceRegex: res(`^eth1$`)}, iface: "eth1", public: "10.213.1.2"},
		{name: "regex before can-reach", c: underlayChoice{IfaceRegex: res(`^eth0$`), IfaceCanReach: ip("10.213.1.7")}, iface: "eth0", public: "10.213.0.3"},
		{name: "can-reach when nothing else works", c: underlayChoice{Iface: []string{"eth9"}, IfaceRegex: res(`^wlan`), IfaceCanReach: ip("10.213.1.7")}, iface: "eth1", public: "10.213.1.9"},
		{name: "nothing works", c: underlayChoice{Iface: []string{"eth9", "v6only"}, IfaceRegex: res(`^wlan`), IfaceCanReach: ip("192.0.2.99")},
			wantErr: `no underlay interface: none of --iface, --iface-regex and --iface-can-reach names one that can be used (--iface eth9: no interface is named "eth9"; --iface v6only: interface v6only has no IPv4 address`},
		{name: "can-reach over IPv6 to a link without IPv4", c: underlayChoice{IfaceCanReach: ip("fd00:1::7")}, wantErr: "--iface-can-reach fd00:1::7: interface v6only has no IPv4 address"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			u, err := chooseUnderlay(tc.c, twoLegHost())
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("= %+v, %v; want error containing %q", u, err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if u.Name != tc.iface || u.PublicIP != ip(tc.public) || u.MTU != 1500 {
				t.Errorf("= %+v, want %s with public IP %s", u, tc.iface, tc.public)
			}
		})
	}
}

func TestChooseUnderlayNoDefaultRoute(t *testing.T) {
	h := twoLegHost()
	h.defLink = 0
	if _, err := chooseUnderlay(underlayChoice{}, h); err == nil {
		t.Fatal("chose an underlay without a default route or a flag")
	}
	h.links[2].MTU = 0
	if _, err := chooseUnderlay(underlayChoice{Iface: []string{"eth1"}}, h); err == nil || !strings.Contains(err.Error(), "MTU 0") {
		t.Fatalf("err = %v, want one about the MTU", err)
	}
}

// TestUsableIPv4: the addresses flannel would take as a public IP, in its
// order of preference.
func TestUsableIPv4(t *testing.T) {
	got := usableIPv4([]ifaceAddr{
		{IP: ip("169.254.3.3"), Permanent: true},
		{IP: ip("10.0.0.9")}, // dynamic (DHCP)
		{IP: ip("10.0.0.8"), Temporary: true},
		{IP: ip("127.0.0.1"), Permanent: true},
		{IP: ip("10.0.0.7"), Permanent: true, Deprecated: true},
		{IP: ip("fd00::1"), Permanent: true},
		{IP: ip("224.0.0.1"), Permanent: true},
		{IP: ip("10.0.0.5"), Permanent: true},
		{IP: ip("10.0.0.6"), Permanent: true},
		{IP: ip("::ffff:10.0.0.4"), Permanent: true},
	})
	want := []netip.Addr{ip("10.0.0.5"), ip("10.0.0.6"), ip("10.0.0.4"), ip("10.0.0.9"), ip("10.0.0.8"), ip("169.254.3.3")}
	if !slices.Equal(got, want) {
		t.Errorf("usableIPv4 = %v, want %v", got, want)
	}
}

// FuzzChooseUnderlay: whatever the flags say, choosing never panics, and
// what it chooses is an interface of the host and one of its addresses of
// each family the overlay carries (or --public-ip, --public-ipv6). fam
// picks the families: IPv4, dual-stack or IPv6.
func FuzzChooseUnderlay(f *testing.F) {
	f.Add("eth1", `^10\.`, "10.213.1.7", "", "", uint8(0))
	f.Add("eth9,10.213.1.9", `[`, "", "", "", uint8(0))
	f.Add("", "", "", "10.213.0.3", "", uint8(0))
	f.Add("fd00::3,lo", `eth[0-9]{1,3}`, "fd00:1::7", "203.0.113.1", "", uint8(0))
	f.Add(",,", `.*`, "not an address", "::1", "", uint8(0))
	f.Add("", "", "", "", "", uint8(1))
	f.Add("v6only,eth0", `::`, "fd00:1::7", "", "fd00::3", uint8(1))
	f.Add("", `^fd`, "", "", "fd00:1::4", uint8(2))
	f.Fuzz(func(t *testing.T, ifaces, regex, canReach, publicIP, publicIPv6 string, fam uint8) {
		var c underlayChoice
		c.Families = []families{{v4: true}, {v4: true, v6: true}, {v6: true}}[fam%3]
		for _, s := range strings.Split(ifaces, ",") {
			if s != "" {
				c.Iface = append(c.Iface, s)
			}
		}
		if re, err := regexp.Compile(regex); err == nil && regex != "" {
			c.IfaceRegex = []*regexp.Regexp{re}
		}
		c.IfaceCanReach, _ = netip.ParseAddr(canReach)
		c.PublicIP, _ = netip.ParseAddr(publicIP)
		c.PublicIPv6, _ = netip.ParseAddr(publicIPv6)
		h := twoLegHost()
		h.defLink6 = 2
		u, err := chooseUnderlay(c, h)
		if err != nil {
			return
		}
		i := slices.IndexFunc(h.links, func(l linkInfo) bool { return l.Name == u.Name && l.Index == u.Index })
		if i < 0 {
			t.Fatalf("%+v chose %+v, not one of the host's interfaces", c, u)
		}
		for _, f := range []struct {
			on        bool
			got, flag netip.Addr
			is4       bool
			name      string
		}{
			{c.Families.v4, u.PublicIP, c.PublicIP, true, "--public-ip"},
			{c.Families.v6, u.PublicIPv6, c.PublicIPv6, false, "--public-ipv6"},
		} {
			switch {
			case !f.on && f.got.IsValid():
				t.Fatalf("%+v chose %s for a family the overlay does not carry", c, f.got)
			case !f.on:
			case f.flag.IsValid() && f.got != f.flag:
				t.Fatalf("%+v chose %s, not %s", c, f.got, f.name)
			case f.flag.IsValid():
			case f.got.Is4() != f.is4 || !slices.Contains(h.links[i].All, f.got):
				// (--iface may name any address of an interface, even one
				// flannel would not pick by itself, like 127.0.0.1.)
				t.Fatalf("%+v chose %s, not one of %s's addresses %v", c, f.got, u.Name, h.links[i].All)
			}
		}
	})
}

// TestChooseUnderlayDualStack: in an overlay that carries IPv6 the
// underlay needs an address of each family it carries, on one interface.
func TestChooseUnderlayDualStack(t *testing.T) {
	dual, v6only := families{v4: true, v6: true}, families{v6: true}
	for _, tc := range []struct {
		name            string
		c               underlayChoice
		defLink6        int
		iface           string
		public, public6 string
		wantErr         string
	}{
		{name: "dual: default route", c: underlayChoice{Families: dual}, iface: "eth0", public: "10.213.0.3", public6: "fd00::3"},
		{name: "dual: IPv6 default route on the same link", c: underlayChoice{Families: dual}, defLink6: 2, iface: "eth0", public: "10.213.0.3", public6: "fd00::3"},
		{name: "dual: IPv6 default route elsewhere", c: underlayChoice{Families: dual}, defLink6: 4, wantErr: "the IPv4 default route is on eth0 but the IPv6 one on v6only"},
		{name: "dual: a link without IPv6", c: underlayChoice{Families: dual, Iface: []string{"eth1"}},
			wantErr: `interface eth1 has no global or unique-local IPv6 address, but the overlay's config carries IPv6 ("EnableIPv6":true)`},
		{name: "dual: iface list, first with both", c: underlayChoice{Families: dual, Iface: []string{"eth1", "v6only", "eth0"}}, iface: "eth0", public: "10.213.0.3", public6: "fd00::3"},
		{name: "dual: iface by IPv6 address", c: underlayChoice{Families: dual, Iface: []string{"fd00::3"}}, iface: "eth0", public: "10.213.0.3", public6: "fd00::3"},
		{name: "dual: --public-ipv6 overrides", c: underlayChoice{Families: dual, Iface: []string{"eth0"}, PublicIPv6: ip("2001:db8::9")}, iface: "eth0", public: "10.213.0.3", public6: "2001:db8::9"},
		{name: "dual: --public-ipv6 alone finds its interface", c: underlayChoice{Families: dual, PublicIPv6: ip("fd00::3")}, iface: "eth0", public: "10.213.0.3", public6: "fd00::3"},
		{name: "dual: --public-ipv6 on no interface", c: underlayChoice{Families: dual, PublicIPv6: ip("2001:db8::9")}, wantErr: "--public-ipv6 2001:db8::9: no interface has it"},
		{name: "dual: regex on both families", c: underlayChoice{Families: dual, IfaceRegex: res(`(\.3|::3)$`)}, iface: "eth0", public: "10.213.0.3", public6: "fd00::3"},
		{name: "dual: regex on one family only", c: underlayChoice{Families: dual, IfaceRegex: res(`^10\.213\.1\.`)},
			wantErr: "matches no interface's name or IPv4 and IPv6 addresses"},
		{name: "dual: can-reach over IPv6", c: underlayChoice{Families: dual, IfaceCanReach: ip("fd00::1")}, iface: "eth0", public: "10.213.0.3", public6: "fd00::3"},
		{name: "IPv6-only: IPv6 default route", c: underlayChoice{Families: v6only}, defLink6: 4, iface: "v6only", public6: "fd00:1::4"},
		{name: "IPv6-only: no IPv6 default route", c: underlayChoice{Families: v6only}, wantErr: "no IPv6 default route"},
		{name: "IPv6-only: public IPv6 finds its interface", c: underlayChoice{Families: v6only, PublicIPv6: ip("fd00:1::4")}, iface: "v6only", public6: "fd00:1::4"},
		{name: "IPv6-only: a link without IPv4 will do", c: underlayChoice{Families: v6only, Iface: []string{"v6only"}}, iface: "v6only", public6: "fd00:1::4"},
		{name: "IPv6-only: regex on an IPv6 address", c: underlayChoice{Families: v6only, IfaceRegex: res(`^fd00:1:`)}, iface: "v6only", public6: "fd00:1::4"},
		{name: "IPv6 off on the link", c: underlayChoice{Families: dual, Iface: []string{"off"}},
			wantErr: "IPv6 is off on interface off (net.ipv6.conf.off.disable_ipv6=1)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := twoLegHost()
			h.defLink6 = tc.defLink6
			h.routesTo[ip("fd00::1")] = [2]any{2, ip("fd00::3")}
			off := link(5, "off", "10.213.2.2")
			off.IPv6Off = "net.ipv6.conf.off.disable_ipv6=1"
			h.links = append(h.links, off)
			u, err := chooseUnderlay(tc.c, h)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("= %+v, %v; want error containing %q", u, err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			want4, want6 := netip.Addr{}, netip.Addr{}
			if tc.public != "" {
				want4 = ip(tc.public)
			}
			if tc.public6 != "" {
				want6 = ip(tc.public6)
			}
			if u.Name != tc.iface || u.PublicIP != want4 || u.PublicIPv6 != want6 {
				t.Errorf("= %+v, want %s with %v and %v", u, tc.iface, want4, want6)
			}
		})
	}
}

// TestUsableIPv6: the addresses a node takes as its public IPv6, in
// flannel's order of preference, link-local ones never.
func TestUsableIPv6(t *testing.T) {
	got := usableIPv6([]ifaceAddr{
		{IP: ip("fe80::1"), Permanent: true},
		{IP: ip("2001:db8::9")}, // SLAAC
		{IP: ip("2001:db8::8"), Temporary: true},
		{IP: ip("::1"), Permanent: true},
		{IP: ip("2001:db8::7"), Permanent: true, Deprecated: true},
		{IP: ip("2001:db8::6"), Permanent: true, Tentative: true},
		{IP: ip("10.0.0.5"), Permanent: true},
		{IP: ip("ff02::1"), Permanent: true},
		{IP: ip("fd00::5"), Permanent: true},
		{IP: ip("2001:db8::5"), Permanent: true},
		{IP: ip("::ffff:10.0.0.4"), Permanent: true},
	})
	want := []netip.Addr{ip("fd00::5"), ip("2001:db8::5"), ip("2001:db8::9"), ip("2001:db8::8")}
	if !slices.Equal(got, want) {
		t.Errorf("usableIPv6 = %v, want %v", got, want)
	}
}

// TestChooseUnderlayAnyFamily: before the config is read, the flags
// are checked for naming an interface with an address of either family;
// which of them is used waits for the families.
func TestChooseUnderlayAnyFamily(t *testing.T) {
	for _, tc := range []struct {
		name    string
		c       underlayChoice
		wantErr string
	}{
		{name: "no flags", c: underlayChoice{}},
		{name: "public IP alone", c: underlayChoice{PublicIP: ip("192.0.2.1")}},
		{name: "an IPv6-only link", c: underlayChoice{Iface: []string{"v6only"}}},
		{name: "an IPv4-only link", c: underlayChoice{Iface: []string{"eth1"}}},
		{name: "regex on an IPv6 address", c: underlayChoice{IfaceRegex: res(`^fd00:1:`)}},
		{name: "no such interface", c: underlayChoice{Iface: []string{"eth7"}}, wantErr: `--iface eth7: no interface is named "eth7"`},
		{name: "regex matching nothing", c: underlayChoice{IfaceRegex: res(`^wlan`)}, wantErr: "--iface-regex ^wlan: matches no interface's name"},
		{name: "a link without addresses", c: underlayChoice{Iface: []string{"bare"}}, wantErr: "interface bare has no IPv4 address nor a global IPv6 one"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := twoLegHost()
			h.links = append(h.links, link(6, "bare"))
			tc.c.AnyFamily = true
			_, err := chooseUnderlay(tc.c, h)
			if (err != nil) != (tc.wantErr != "") || err != nil && !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("= %v, want error %q", err, tc.wantErr)
			}
		})
	}
}
