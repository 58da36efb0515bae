package lease

import (
	"net/netip"
	"strings"
	"testing"
)

// flannel's IPv6 rules: IPv6SubnetLen 64, or the network's length + 2 for
// networks smaller than /62; IPv6SubnetMin the second subnet, IPv6SubnetMax
// the last; "::" is unset.
func TestParseConfigIPv6Defaults(t *testing.T) {
	for _, tc := range []struct {
		js       string
		len      int
		min, max string
	}{
		{`"IPv6Network":"fd00:10:244::/48"`, 64, "fd00:10:244:1::", "fd00:10:244:ffff::"},
		{`"IPv6Network":"2001:cafe:42::/56"`, 64, "2001:cafe:42:1::", "2001:cafe:42:ff::"},
		{`"IPv6Network":"fd00:1::/62"`, 64, "fd00:1:0:1::", "fd00:1:0:3::"},
		{`"IPv6Network":"fd00:1::/63"`, 65, "fd00:1:0:0:8000::", "fd00:1:0:1:8000::"},
		{`"IPv6Network":"fd00::/124"`, 126, "fd00::4", "fd00::c"},
		{`"IPv6Network":"fd00:1::5/64","IPv6SubnetLen":80`, 80, "fd00:1:0:0:1::", "fd00:1:0:0:ffff::"},
		{`"IPv6Network":"::/0"`, 64, "0:0:0:1::", "ffff:ffff:ffff:ffff::"},
		{`"IPv6Network":"fd00:1::/48","IPv6SubnetMin":"::","IPv6SubnetMax":""`, 64, "fd00:1:0:1::", "fd00:1:0:ffff::"},
		{`"IPv6Network":"fd00:1::/48","IPv6SubnetMin":"fd00:1::","IPv6SubnetMax":"fd00:1:0:9::"`, 64, "fd00:1::", "fd00:1:0:9::"},
	} {
		js := `{"EnableIPv4":false,"EnableIPv6":true,` + tc.js + `,"Backend":{"Type":"vxlan"}}`
		c, err := ParseConfig([]byte(js))
		if err != nil {
			t.Errorf("ParseConfig(%s): %v", js, err)
			continue
		}
		if c.IPv6SubnetLen != tc.len || c.IPv6SubnetMin.String() != tc.min || c.IPv6SubnetMax.String() != tc.max {
			t.Errorf("ParseConfig(%s) = len %d min %s max %s, want %d %s %s", js, c.IPv6SubnetLen, c.IPv6SubnetMin, c.IPv6SubnetMax, tc.len, tc.min, tc.max)
		}
		if c.IPv4Enabled() || !c.IPv6Enabled() || c.Network.IsValid() || c.SubnetLen != 0 {
			t.Errorf("ParseConfig(%s) = %+v, want IPv6 only", js, c)
		}
	}
}

func TestParseConfigFamilies(t *testing.T) {
	dual := mustConfig(t, `{"Network":"10.42.0.0/16","EnableIPv6":true,"IPv6Network":"fd00:42::/56","Backend":{"Type":"vxlan"}}`)
	if !dual.IPv4Enabled() || !dual.IPv6Enabled() {
		t.Fatalf("dual-stack config = %+v", dual)
	}
	// IPv6 fields without EnableIPv6 are ignored, as flannel ignores them;
	// so are IPv4 ones with EnableIPv4 false.
	v4 := mustConfig(t, `{"Network":"10.42.0.0/16","IPv6Network":"fd00:42::/56","IPv6SubnetLen":3,"Backend":{"Type":"vxlan"}}`)
	if v4.IPv6Enabled() || v4.IPv6Config != (IPv6Config{}) {
		t.Fatalf("IPv6Network without EnableIPv6 = %+v, want it ignored", v4)
	}
	v6 := mustConfig(t, `{"EnableIPv4":false,"Network":"x","SubnetLen":99,"EnableIPv6":true,"IPv6Network":"fd00:42::/56","Backend":{"Type":"vxlan"}}`)
	if v6.IPv4Enabled() || v6.SubnetLen != 0 || v6.SubnetMin.IsValid() {
		t.Fatalf("IPv4 fields with EnableIPv4 false = %+v, want them ignored", v6)
	}
}

func TestParseConfigIPv6Errors(t *testing.T) {
	for _, tc := range []struct{ js, want string }{
		{`{"EnableIPv4":false,"Backend":{"Type":"vxlan"}}`, `config: EnableIPv4 is false and EnableIPv6 is not true: the overlay carries no address family`},
		{`{"EnableIPv4":false,"EnableIPv6":false,"IPv6Network":"fd00::/48","Backend":{"Type":"vxlan"}}`, `config: EnableIPv4 is false and EnableIPv6 is not true`},
		{`{"EnableIPv6":true,"IPv6Network":"fd00::/48","Backend":{"Type":"vxlan"}}`, `config: Network is missing: set it to the overlay's IPv4 CIDR, e.g. "Network":"172.16.0.0/16", or add "EnableIPv4":false for an IPv6-only overlay`},
		{`{"EnableIPv4":false,"EnableIPv6":true,"Backend":{"Type":"vxlan"}}`, `config: EnableIPv6 is true but IPv6Network is missing`},
		{`{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"fd00::","Backend":{"Type":"vxlan"}}`, `config: IPv6Network "fd00::" is not a CIDR`},
		{`{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"10.0.0.0/16","Backend":{"Type":"vxlan"}}`, `config: IPv6Network "10.0.0.0/16" is not IPv6`},
		{`{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"::ffff:10.0.0.0/112","Backend":{"Type":"vxlan"}}`, `config: IPv6Network "::ffff:10.0.0.0/112" is not IPv6`},
		{`{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"fd00::/125","Backend":{"Type":"vxlan"}}`, `config: IPv6Network fd00::/125 is too small: it must be /124 or larger`},
		{`{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"fd00::/48","IPv6SubnetLen":127,"Backend":{"Type":"vxlan"}}`, `config: IPv6SubnetLen 127 is longer than 126`},
		{`{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"fd00::/48","IPv6SubnetLen":49,"Backend":{"Type":"vxlan"}}`, `config: IPv6SubnetLen 49 is too short for IPv6Network fd00::/48: it must be at least 50`},
		{`{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"fd00::/48","IPv6SubnetLen":-64,"Backend":{"Type":"vxlan"}}`, `config: IPv6SubnetLen -64 is negative`},
		{`{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"fd00::/48","IPv6SubnetMin":"10.0.0.0","Backend":{"Type":"vxlan"}}`, `config: IPv6SubnetMin "10.0.0.0" is not an IPv6 address`},
		{`{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"fd00::/48","IPv6SubnetMax":"fe80::%eth0","Backend":{"Type":"vxlan"}}`, `config: IPv6SubnetMax "fe80::%eth0" is not an IPv6 address`},
		{`{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"fd00::/48","IPv6SubnetMin":"fd01::","Backend":{"Type":"vxlan"}}`, `config: IPv6SubnetMin fd01:: is outside IPv6Network fd00::/48`},
		{`{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"fd00::/48","IPv6SubnetMax":"fd00:0:0:5::1","Backend":{"Type":"vxlan"}}`, `config: IPv6SubnetMax fd00:0:0:5::1 is not on a /64 boundary (did you mean fd00:0:0:5::?)`},
		{`{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"fd00::/48","IPv6SubnetMin":"fd00:0:0:9::","IPv6SubnetMax":"fd00:0:0:2::","Backend":{"Type":"vxlan"}}`, `config: IPv6SubnetMin fd00:0:0:9:: is above IPv6SubnetMax fd00:0:0:2::`},
		{`{"EnableIPv6":true,"IPv6Network":"fd00::/48","Network":"fd01::/48","Backend":{"Type":"vxlan"}}`, `config: Network "fd01::/48" is not IPv4 (an IPv6 network goes in "IPv6Network"`},
		{`{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"fd00::/48","Backend":{"Type":"vxlan","MTU":1349}}`, `config: Backend.MTU 1349 is below 1350: it is the underlay's MTU, an overlay that carries IPv6 gets 70 less`},
		{`{"EnableIPv6":"yes","IPv6Network":"fd00::/48","Network":"10.0.0.0/16","Backend":{"Type":"vxlan"}}`, `config: not valid flannel config JSON`},
	} {
		c, err := ParseConfig([]byte(tc.js))
		if err == nil {
			t.Errorf("ParseConfig(%s) = %+v, want error %q", tc.js, c, tc.want)
			continue
		}
		if !strings.HasPrefix(err.Error(), tc.want) {
			t.Errorf("ParseConfig(%s) error:\n got %q\nwant %q...", tc.js, err, tc.want)
		}
	}
}

func TestConfigMarshalIPv6(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{
			`{"Network":"10.42.0.0/16","EnableIPv6":true,"IPv6Network":"fd00:42::/56","Backend":{"Type":"vxlan"}}`,
			`{"Network":"10.42.0.0/16","SubnetLen":24,"SubnetMin":"10.42.1.0","SubnetMax":"10.42.255.0","EnableIPv6":true,"IPv6Network":"fd00:42::/56","IPv6SubnetLen":64,"IPv6SubnetMin":"fd00:42:0:1::","IPv6SubnetMax":"fd00:42:0:ff::","Backend":{"Type":"vxlan","VNI":1,"Port":8472}}`,
		},
		{
			`{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"fd00:42::/56","IPv6SubnetLen":60,"Backend":{"Type":"vxlan"}}`,
			`{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"fd00:42::/56","IPv6SubnetLen":60,"IPv6SubnetMin":"fd00:42:0:10::","IPv6SubnetMax":"fd00:42:0:f0::","Backend":{"Type":"vxlan","VNI":1,"Port":8472}}`,
		},
	} {
		c := mustConfig(t, tc.in)
		b, err := c.MarshalJSON()
		if err != nil || string(b) != tc.want {
			t.Errorf("MarshalJSON(%s):\n got %s %v\nwant %s", tc.in, b, err, tc.want)
			continue
		}
		if c2, err := ParseConfig(b); err != nil || *c2 != *c {
			t.Errorf("round trip of %s = %+v, %v; want %+v", b, c2, err, c)
		}
		if err := c.Validate(); err != nil {
			t.Errorf("Validate(%s): %v", tc.in, err)
		}
	}
}

func TestConfigContainsAndFits(t *testing.T) {
	c := mustConfig(t, `{"Network":"10.0.0.0/16","EnableIPv6":true,"IPv6Network":"fd00::/48","IPv6SubnetMin":"fd00:0:0:2::","IPv6SubnetMax":"fd00:0:0:9::","Backend":{"Type":"vxlan"}}`)
	for s, want := range map[string]bool{
		"10.0.5.0/24":         true,
		"fd00:0:0:2::/64":     true,
		"fd00:0:0:9::/64":     true,
		"fd00:0:0:1::/64":     false, // below IPv6SubnetMin
		"fd00:0:0:a::/64":     false, // above IPv6SubnetMax
		"fd00:0:0:4::/63":     false, // wrong length
		"fd00:0:0:5::1/64":    false, // host bits
		"fd01:0:0:5::/64":     false, // outside IPv6Network
		"::ffff:10.0.5.0/120": false,
	} {
		if got := c.Contains(netip.MustParsePrefix(s)); got != want {
			t.Errorf("Contains(%s) = %v, want %v", s, got, want)
		}
	}
	if n := c.SubnetCount(); n != 8 {
		t.Errorf("SubnetCount() = %d, want 8 (the smaller family's)", n)
	}
	p := netip.MustParsePrefix
	for _, tc := range []struct {
		v4, v6 string
		want   bool
	}{
		{"10.0.5.0/24", "fd00:0:0:5::/64", true},
		{"10.0.5.0/24", "", false},                // the IPv6 part is missing
		{"", "fd00:0:0:5::/64", false},            // the IPv4 part is missing
		{"10.0.5.0/24", "fd00:0:0:1::/64", false}, // the IPv6 part is outside the range
		{"fd00:0:0:5::/64", "10.0.5.0/24", false}, // swapped
	} {
		var v4, v6 netip.Prefix
		if tc.v4 != "" {
			v4 = p(tc.v4)
		}
		if tc.v6 != "" {
			v6 = p(tc.v6)
		}
		if got := c.Fits(v4, v6); got != tc.want {
			t.Errorf("Fits(%s, %s) = %v, want %v", tc.v4, tc.v6, got, tc.want)
		}
	}
	v4only := mustConfig(t, `{"Network":"10.0.0.0/16","Backend":{"Type":"vxlan"}}`)
	if v4only.Fits(p("10.0.5.0/24"), p("fd00:0:0:5::/64")) || !v4only.Fits(p("10.0.5.0/24"), netip.Prefix{}) {
		t.Error("an IPv4-only config fits a dual-stack key, or not its own")
	}
	if v4only.Contains(p("fd00:0:0:5::/64")) {
		t.Error("an IPv4-only config contains an IPv6 subnet")
	}
}

// The pools' arithmetic holds where 64 bits do not: indexes past 2^62
// are not handed out, subnets in the whole range are still contained,
// and keys of any length block what they overlap.
func TestPoolHugeIPv6(t *testing.T) {
	c := mustConfig(t, `{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"fd00::/8","IPv6SubnetLen":124,"Backend":{"Type":"vxlan"}}`)
	p := c.pool6()
	if n := p.count(); n != maxPool {
		t.Fatalf("count() = %d, want %d", n, uint64(maxPool))
	}
	if got, want := p.at(0), netip.MustParsePrefix("fd00::10/124"); got != want {
		t.Fatalf("at(0) = %s, want %s", got, want)
	}
	if got, want := p.at(maxPool-1), netip.MustParsePrefix("fd00:0:0:4::/124"); got != want {
		t.Fatalf("at(2^62-1) = %s, want %s", got, want)
	}
	last := netip.MustParsePrefix("fdff:ffff:ffff:ffff:ffff:ffff:ffff:fff0/124")
	if !c.Contains(last) || c.IPv6SubnetMax != last.Addr() {
		t.Fatalf("the last subnet %s: Contains %v, IPv6SubnetMax %s", last, c.Contains(last), c.IPv6SubnetMax)
	}
	if _, ok := p.index(last); ok {
		t.Fatal("the last subnet has an index, past 2^62")
	}
	if i, ok := p.index(p.at(12345)); !ok || i != 12345 {
		t.Fatalf("index(at(12345)) = %d, %v", i, ok)
	}
	taken := p.taken([]netip.Prefix{
		netip.MustParsePrefix("fd00::/120"),    // indexes 0..14 (the network's first /124 is not in the pool)
		netip.MustParsePrefix("fd00::100/124"), // 15
		netip.MustParsePrefix("fe00::/64"),     // outside
		netip.MustParsePrefix("10.0.0.0/8"),    // other family
		last,                                   // past the indexes
		netip.MustParsePrefix("::/0"),          // everything
	})
	if len(taken) != 1 || taken[0] != [2]uint64{0, maxPool - 1} {
		t.Fatalf("taken with ::/0 = %v, want everything", taken)
	}
	taken = p.taken([]netip.Prefix{netip.MustParsePrefix("fd00::/120"), netip.MustParsePrefix("fd00::100/124"), netip.MustParsePrefix("fd00::200/124")})
	if want := (indexRanges{{0, 15}, {31, 31}}); len(taken) != 2 || taken[0] != want[0] || taken[1] != want[1] {
		t.Fatalf("taken = %v, want %v", taken, want)
	}
	v4 := mustConfig(t, `{"Network":"0.0.0.0/0","SubnetLen":30,"Backend":{"Type":"vxlan"}}`)
	if n := v4.count(); n != 1<<30-1 {
		t.Fatalf("0.0.0.0/0 in /30s: count() = %d", n)
	}
	if got := v4.pool4().taken([]netip.Prefix{netip.MustParsePrefix("0.0.0.0/0")}); len(got) != 1 || got[0] != [2]uint64{0, 1<<30 - 2} {
		t.Fatalf("0.0.0.0/0 takes %v", got)
	}
}
