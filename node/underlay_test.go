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
	routesTo map[netip.Addr][2]any // dst -> {link int, src netip.Addr}
}

func (h fakeHost) Links() ([]linkInfo, error) { return h.links, nil }

func (h fakeHost) DefaultRouteLink() (int, error) {
	if h.defLink == 0 {
		return 0, errors.New("no default route")
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
// what it chooses is an interface of the host and one of its IPv4
// addresses (or --public-ip).
func FuzzChooseUnderlay(f *testing.F) {
	f.Add("eth1", `^10\.`, "10.213.1.7", "")
	f.Add("eth9,10.213.1.9", `[`, "", "")
	f.Add("", "", "", "10.213.0.3")
	f.Add("fd00::3,lo", `eth[0-9]{1,3}`, "fd00:1::7", "203.0.113.1")
	f.Add(",,", `.*`, "not an address", "::1")
	f.Fuzz(func(t *testing.T, ifaces, regex, canReach, publicIP string) {
		var c underlayChoice
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
		h := twoLegHost()
		u, err := chooseUnderlay(c, h)
		if err != nil {
			return
		}
		i := slices.IndexFunc(h.links, func(l linkInfo) bool { return l.Name == u.Name && l.Index == u.Index })
		if i < 0 {
			t.Fatalf("%+v chose %+v, not one of the host's interfaces", c, u)
		}
		if c.PublicIP.IsValid() {
			if u.PublicIP != c.PublicIP {
				t.Fatalf("%+v chose public IP %s, not --public-ip", c, u.PublicIP)
			}
		} else if !u.PublicIP.Is4() || !slices.Contains(h.links[i].All, u.PublicIP) {
			// (--iface may name any address of an interface, even one
			// flannel would not pick by itself, like 127.0.0.1.)
			t.Fatalf("%+v chose public IP %s, not one of %s's IPv4 addresses %v", c, u.PublicIP, u.Name, h.links[i].All)
		}
	})
}
