package lease

import (
	"encoding/json"
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
		if !c.Contains(c.subnetAt(0)) || !c.Contains(c.subnetAt(c.count()-1)) || c.subnetAt(c.count()-1).Addr() != c.SubnetMax {
			t.Fatalf("%s: first/last subnet not contained, or last != SubnetMax: %+v", b, c)
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
		`{}`, `null`, `"`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		a, err := ParseAttrs(b)
		if err != nil {
			return
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
	for _, s := range []string{"172.16.57.0-24", "0.0.0.0-0", "10.1.2.3-32", "10.1.2.3-24", "1.2.3.4-", "-1", "10.5.1.0-24&fc00::-64"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		p, err := ParseSubnetKey(s)
		if err == nil {
			if SubnetKey(p) != s || !p.Addr().Is4() || p.Masked() != p {
				t.Fatalf("ParseSubnetKey(%q) = %v, which is not its canonical key %q", s, p, SubnetKey(p))
			}
		}
		q, canonical, err := parseKeyName(s)
		if err == nil && (canonical != (q == p && SubnetKey(q) == s) || !q.Addr().Is4()) {
			t.Fatalf("parseKeyName(%q) = %v canonical=%v, disagrees with ParseSubnetKey = %v", s, q, canonical, p)
		}
	})
}
