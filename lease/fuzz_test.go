package lease

import (
	"encoding/json"
	"net/netip"
	"testing"
)

// Everything these parse comes from etcd or from people: they must never
// panic, and what they accept must survive a round trip.

func FuzzParseConfig(f *testing.F) {
	for _, s := range []string{
		`{"Network":"172.16.0.0/16","Backend":{"Type":"vxlan"}}`,
		`{"Network":"10.5.0.0/26","SubnetLen":28,"SubnetMin":"10.5.0.16","SubnetMax":"10.5.0.48","Backend":{"Type":"vxlan","VNI":0,"Port":4789,"MTU":1400}}`,
		`{"EnableIPv6":true,"IPv6Network":"fc00::/48","Network":"0.0.0.0/0","Backend":{"Type":"vxlan","GBP":true}}`,
		`{"Network":"10.0.0.0/16","Backend":{"Type":"vxlan","DirectRouting":true,"MTU":626}}`,
		`{"Network":"10.0.0.0/16","Backend":{"Type":"vxlan","directrouting":false,"gbp":false,"Learning":true,"MacPrefix":"0E-2A"}}`,
		`{"Network":"10.0.0.0/16","Backend":{"Type":"vxlan","DirectRouting":1,"Learning":null}}`,
		`{"Network":"10.0.0.0/16","Backend":{"Type":"vxlan","GBP":true,"gbp":null}}`,
		`{"Network":"10.0.0.0/28","Backend":{"Type":"udp"}}`,
		`{"Network":"10.0.0.0/16","SubnetLen":30,"SubnetMax":"10.0.255.252","Backend":{"Type":"VXLAN"}}`,
		`{"EnableIPv4":true,"EnableIPv6":true,"Network":"10.42.0.0/16","IPv6Network":"2001:cafe:42::/56","IPv6SubnetLen":64,"Backend":{"Type":"vxlan"}}`,
		`{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"fd00:12::/48","IPv6SubnetMin":"fd00:12:0:10::","IPv6SubnetMax":"fd00:12:0:20::","Backend":{"Type":"vxlan"}}`,
		`{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"::/0","IPv6SubnetLen":126,"Backend":{"Type":"vxlan"}}`,
		`{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"fd00::/124","IPv6SubnetMax":"::","Backend":{"Type":"vxlan"}}`,
		`{"EnableIPv4":false,"Backend":{"Type":"vxlan"}}`,
		`{"EnableIPv6":true,"IPv6Network":"fd00::/48","IPv6SubnetLen":-1,"Network":"10.0.0.0/8","Backend":{"Type":"vxlan"}}`,
		`{}`, `null`, `[`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := ParseConfig(b)
		if err != nil {
			return
		}
		// What vxrouter does not do is never accepted, however spelled.
		var asked struct{ Backend struct{ GBP, Learning bool } }
		if json.Unmarshal(b, &asked) == nil && (asked.Backend.GBP || asked.Backend.Learning) {
			t.Fatalf("%s: accepted, but it turns on GBP or Learning", b)
		}
		if !c.IPv4Enabled() && !c.IPv6Enabled() {
			t.Fatalf("%s: parsed with no address family: %+v", b, c)
		}
		for _, p := range []pool{c.pool4(), c.pool6()} {
			if !p.min.IsValid() {
				continue
			}
			n := p.count()
			first, last := p.at(0), p.at(n-1)
			if !c.Contains(first) || !c.Contains(last) || n < maxPool && last.Addr() != p.max || !c.Contains(netip.PrefixFrom(p.max, p.bits)) {
				t.Fatalf("%s: first/last subnet not contained, or last != max: %+v", b, c)
			}
			if i, ok := p.index(last); !ok || i != n-1 {
				t.Fatalf("%s: index(%s) = %d, %v; want %d", b, last, i, ok, n-1)
			}
		}
		out, err := c.MarshalJSON()
		if err != nil {
			t.Fatalf("%s: parsed, but MarshalJSON: %v", b, err)
		}
		c2, err := ParseConfig(out)
		if err != nil || *c2 != *c {
			t.Fatalf("%s -> %s -> %+v, %v; want %+v", b, out, c2, err, c)
		}
	})
}

func FuzzParseAttrs(f *testing.F) {
	for _, s := range []string{
		valueB,
		`{"PublicIP":"10.0.0.2","PublicIPv6":"fc00::2","BackendType":"vxlan","BackendData":{"VNI":16777215,"VtepMAC":"D6-51-2E-80-5C-69"}}`,
		`{"PublicIP":"192.168.1.11","BackendType":"udp","BackendData":null}`,
		`{"PublicIP":"192.168.1.11","BackendType":"host-gw","BackendData":{"x":1}}`,
		`{"PublicIP":"10.0.0.2","BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"d651.2e80.5c69"}}`,
		`{"PublicIP":"192.168.1.10","PublicIPv6":"2001:db8::10","BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"b6:bf:4c:81:cf:3b"},"BackendV6Data":{"VNI":1,"VtepMAC":"aa:bb:cc:dd:ee:ff","PartialCsum":true}}`,
		`{"PublicIP":"0.0.0.0","PublicIPv6":"fd77::1","BackendType":"vxlan","BackendV6Data":{"VNI":1,"VtepMAC":"aa:bb:cc:dd:ee:ff"}}`,
		`{"PublicIP":"0.0.0.0","PublicIPv6":"fd77::1","BackendType":"vxlan","BackendData":null,"BackendV6Data":{"VNI":7}}`,
		`{"PublicIP":"10.0.0.2","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"b6:bf:4c:81:cf:3b"},"BackendV6Data":{"VNI":1,"VtepMAC":"aa:bb:cc:dd:ee:ff"}}`,
		`{"PublicIP":"0.0.0.0","PublicIPv6":"::","BackendType":"host-gw"}`,
		`{}`, `null`, `"`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		a, err := ParseAttrs(b)
		if err != nil {
			return
		}
		if !a.Owner().IsValid() || a.BackendType == "vxlan" && len(a.VtepMAC) != 6 && a.BackendV6Data == nil {
			t.Fatalf("%s: parsed into attrs no node can be reached by: %+v", b, a)
		}
		out, err := a.MarshalJSON()
		if err != nil {
			t.Fatalf("%s: parsed, but MarshalJSON: %v", b, err)
		}
		a2, err := ParseAttrs(out)
		if err != nil || !a2.Equal(a) {
			t.Fatalf("%s -> %s -> %+v, %v; want %+v", b, out, a2, err, a)
		}
		out2, _ := a2.MarshalJSON()
		if string(out2) != string(out) {
			t.Fatalf("marshal not stable: %s then %s", out, out2)
		}
	})
}

func FuzzParseSubnetKey(f *testing.F) {
	for _, s := range []string{
		"172.16.57.0-24", "0.0.0.0-0", "10.1.2.3-32", "10.1.2.3-24", "1.2.3.4-", "-1", "10.5.1.0-24&fc00::-64",
		"10.5.52.0-24&fd00:12:13::-64", "fd00:12:13::-64", "10.5.1.0-24&fc00:0:0:1::-64", "fc00::-128", "::-0",
		"10.5.1.0-24&fc00::1-64", "fc00::-64&10.5.1.0-24", "10.5.1.0-24&::ffff:1.2.3.4-128", "&", "fe80::%1-64",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		p, err := ParseSubnetKey(s)
		if err == nil {
			if SubnetKey(p) != s || p.Addr().Is4In6() || p.Masked() != p {
				t.Fatalf("ParseSubnetKey(%q) = %v, which is not its canonical key %q", s, p, SubnetKey(p))
			}
		}
		v4, v6, canonical, err := parseKeyName(s)
		if err != nil {
			return
		}
		switch {
		case !v4.IsValid() && !v6.IsValid(),
			v4.IsValid() && (!v4.Addr().Is4() || v4.Masked() != v4),
			v6.IsValid() && (!v6.Addr().Is6() || v6.Addr().Is4In6() || v6.Masked() != v6):
			t.Fatalf("parseKeyName(%q) = %v, %v: not an IPv4 and an IPv6 subnet", s, v4, v6)
		case canonical != (KeyName(v4, v6) == s):
			t.Fatalf("parseKeyName(%q) = %v, %v, canonical=%v, but KeyName gives %q", s, v4, v6, canonical, KeyName(v4, v6))
		}
		if !v6.IsValid() && (p != v4 || err != nil) {
			t.Fatalf("parseKeyName(%q) = %v, disagrees with ParseSubnetKey = %v", s, v4, p)
		}
		if a, b, err := ParseKeyName(KeyName(v4, v6)); err != nil || a != v4 || b != v6 {
			t.Fatalf("ParseKeyName(KeyName(%v, %v)) = %v, %v, %v", v4, v6, a, b, err)
		}
	})
}
