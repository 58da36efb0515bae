package lease

import (
	"encoding/json"
	"net"
	"net/netip"
	"strings"
	"testing"
)

func TestSubnetKey(t *testing.T) {
	for _, tc := range []struct {
		p   string
		key string
	}{
		{"172.16.57.0/24", "172.16.57.0-24"},
		{"10.5.0.16/28", "10.5.0.16-28"},
		{"0.0.0.0/0", "0.0.0.0-0"},
		{"10.1.2.3/32", "10.1.2.3-32"},
		{"fd00:12:13::/64", "fd00:12:13::-64"},
		{"fc00::/7", "fc00::-7"},
		{"2001:db8:0:1:2::/80", "2001:db8:0:1:2::-80"},
	} {
		p := netip.MustParsePrefix(tc.p)
		if got := SubnetKey(p); got != tc.key {
			t.Errorf("SubnetKey(%s) = %q, want %q", tc.p, got, tc.key)
		}
		got, err := ParseSubnetKey(tc.key)
		if err != nil || got != p {
			t.Errorf("ParseSubnetKey(%q) = %v, %v; want %s", tc.key, got, err, p)
		}
	}
	for _, bad := range []string{
		"", "-", "172.16.57.0", "172.16.57.0-", "172.16.57.0/24", "172.16.57.1-24", "172.16.57.0-33",
		"172.16.57.0--24", "172.16.57.0-+24", "172.16.57.0-024", "172.016.57.0-24", "fc00:0::-64", "FC00::-64",
		"fc00::1-64", "fc00::-129", "fc00::-+64", "fe80::%eth0-64",
		"::ffff:172.16.57.0-120", "172.16.57.0-24&fc00::-64", " 172.16.57.0-24", "172.16.57.0-24 ",
	} {
		if p, err := ParseSubnetKey(bad); err == nil {
			t.Errorf("ParseSubnetKey(%q) = %v, want an error", bad, p)
		}
	}
}

func TestKeyNames(t *testing.T) {
	p := netip.MustParsePrefix
	for _, tc := range []struct {
		v4, v6 string
		name   string
	}{
		{"10.5.52.0/24", "", "10.5.52.0-24"},
		{"10.5.52.0/24", "fd00:12:13::/64", "10.5.52.0-24&fd00:12:13::-64"},
		{"", "fd00:12:13::/64", "fd00:12:13::-64"},
	} {
		var v4, v6 netip.Prefix
		if tc.v4 != "" {
			v4 = p(tc.v4)
		}
		if tc.v6 != "" {
			v6 = p(tc.v6)
		}
		if got := KeyName(v4, v6); got != tc.name {
			t.Errorf("KeyName(%s, %s) = %q, want %q", tc.v4, tc.v6, got, tc.name)
		}
		g4, g6, err := ParseKeyName(tc.name)
		if err != nil || g4 != v4 || g6 != v6 {
			t.Errorf("ParseKeyName(%q) = %v, %v, %v", tc.name, g4, g6, err)
		}
		g4, g6, canonical, err := parseKeyName(tc.name)
		if err != nil || g4 != v4 || g6 != v6 || !canonical {
			t.Errorf("parseKeyName(%q) = %v, %v, %v, %v", tc.name, g4, g6, canonical, err)
		}
	}
}

// Keys flannel's parser takes but writes otherwise: read, marked not
// canonical, never written to. Garbage in either part is an error, so
// the key is skipped with a warning.
func TestParseKeyNameDualStack(t *testing.T) {
	v4, v6, canonical, err := parseKeyName("10.5.1.0-24&fc00:0:0:1:0::-64")
	if err != nil || canonical || v4 != netip.MustParsePrefix("10.5.1.0/24") || v6 != netip.MustParsePrefix("fc00:0:0:1::/64") {
		t.Fatalf("parseKeyName(dual-stack, long form) = %v, %v, %v, %v; want 10.5.1.0/24, fc00:0:0:1::/64, not canonical", v4, v6, canonical, err)
	}
	if _, _, err := ParseKeyName("10.5.1.0-24&fc00:0:0:1:0::-64"); err == nil {
		t.Fatal("ParseKeyName accepted a key that is not canonical")
	}
	if _, v6, canonical, err := parseKeyName("fc00:0:0:1::-064"); err != nil || canonical || v6.Bits() != 64 {
		t.Fatalf("parseKeyName(IPv6-only, long form) = %v, %v, %v", v6, canonical, err)
	}
	for _, bad := range []string{
		"10.5.1.0-24&zz-64", "10.5.1.0-24&fc00::1-64", "10.5.1.0-24&fc00::-129", "10.5.1.0-24&10.5.2.0-24",
		"10.5.1.0-24&", "10.5.1.0-24&fc00::", "fc00::-64&10.5.1.0-24", "fc00::-64&fc01::-64", "10.5.1.00-24&fc00::-64",
		"10.5.1.0-24&fc00::-64&fc01::-64", "10.5.1.0-24&::ffff:10.5.1.0-120", "10.5.1.0-24&fe80::%eth0-64", "fc00::1-64", "&",
	} {
		if a, b, _, err := parseKeyName(bad); err == nil {
			t.Errorf("parseKeyName(%q) = %v, %v; want an error", bad, a, b)
		}
	}
	if _, _, canonical, err := parseKeyName("10.5.1.0-24"); err != nil || !canonical {
		t.Fatalf("parseKeyName(canonical) = %v, %v", canonical, err)
	}
}

const valueB = `{"PublicIP":"10.0.0.2","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"d6:51:2e:80:5c:69"}}`

func TestAttrsJSONExact(t *testing.T) {
	a := Attrs{
		PublicIP:    netip.MustParseAddr("10.0.0.2"),
		BackendType: "vxlan",
		VNI:         1,
		VtepMAC:     net.HardwareAddr{0xd6, 0x51, 0x2e, 0x80, 0x5c, 0x69},
	}
	b, err := a.MarshalJSON()
	if err != nil {
		t.Fatal(err)
	}
	if string(b) != valueB {
		t.Fatalf("MarshalJSON:\n got %s\nwant %s", b, valueB)
	}
	// json.Marshal goes through the same method.
	if b2, err := json.Marshal(a); err != nil || string(b2) != valueB {
		t.Fatalf("json.Marshal = %s, %v", b2, err)
	}
	got, err := ParseAttrs([]byte(valueB))
	if err != nil {
		t.Fatal(err)
	}
	if !got.Equal(a) {
		t.Fatalf("ParseAttrs = %+v, want %+v", got, a)
	}

	a.PublicIPv6 = netip.MustParseAddr("fc00::2")
	b, _ = a.MarshalJSON()
	want := `{"PublicIP":"10.0.0.2","PublicIPv6":"fc00::2","BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"d6:51:2e:80:5c:69"}}`
	if string(b) != want {
		t.Fatalf("MarshalJSON with IPv6:\n got %s\nwant %s", b, want)
	}
	var back Attrs
	if err := json.Unmarshal(b, &back); err != nil || !back.Equal(a) {
		t.Fatalf("json.Unmarshal = %+v, %v; want %+v", back, err, a)
	}
}

// TestAttrsPartialCsum: vxrouter's own BackendData field is written only
// when set, read back, and is what a flannel node, decoding BackendData
// into its {VNI, VtepMAC} struct with encoding/json, passes over.
func TestAttrsPartialCsum(t *testing.T) {
	a := Attrs{
		PublicIP:    netip.MustParseAddr("10.0.0.2"),
		BackendType: "vxlan",
		VNI:         1,
		VtepMAC:     net.HardwareAddr{0xd6, 0x51, 0x2e, 0x80, 0x5c, 0x69},
		PartialCsum: true,
	}
	b, err := a.MarshalJSON()
	want := `{"PublicIP":"10.0.0.2","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"d6:51:2e:80:5c:69","PartialCsum":true}}`
	if err != nil || string(b) != want {
		t.Fatalf("MarshalJSON = %s, %v; want %s", b, err, want)
	}
	got, err := ParseAttrs(b)
	if err != nil || !got.Equal(a) || !got.PartialCsum {
		t.Fatalf("ParseAttrs = %+v, %v; want %+v", got, err, a)
	}
	if a.Equal(Attrs{PublicIP: a.PublicIP, BackendType: "vxlan", VNI: 1, VtepMAC: a.VtepMAC}) {
		t.Error("Equal ignores PartialCsum")
	}
	// What flannel's vxlan backend does with such a value.
	var flannel struct {
		BackendData json.RawMessage
	}
	var vxlanLeaseAttrs struct {
		VNI     uint16
		VtepMAC string
	}
	if err := json.Unmarshal(b, &flannel); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(flannel.BackendData, &vxlanLeaseAttrs); err != nil || vxlanLeaseAttrs.VNI != 1 || vxlanLeaseAttrs.VtepMAC != "d6:51:2e:80:5c:69" {
		t.Fatalf("flannel's decoding: %+v, %v", vxlanLeaseAttrs, err)
	}
	if _, err := ParseAttrs([]byte(`{"PublicIP":"10.0.0.2","BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"d6:51:2e:80:5c:69","PartialCsum":"yes"}}`)); err == nil {
		t.Error("PartialCsum that is not a bool parses")
	}
}

func TestParseAttrsFlannelValues(t *testing.T) {
	// A dual-stack flannel lease: extra BackendV6Data is ignored.
	a, err := ParseAttrs([]byte(`{"PublicIP":"192.168.1.10","PublicIPv6":"2001:db8::10","BackendType":"vxlan",` +
		`"BackendData":{"VNI":1,"VtepMAC":"B6:BF:4C:81:CF:3B"},"BackendV6Data":{"VNI":1,"VtepMAC":"aa:bb:cc:dd:ee:ff"}}`))
	if err != nil {
		t.Fatal(err)
	}
	if a.PublicIP.String() != "192.168.1.10" || a.PublicIPv6.String() != "2001:db8::10" || a.VtepMAC.String() != "b6:bf:4c:81:cf:3b" {
		t.Fatalf("ParseAttrs = %+v", a)
	}
	// Another backend's lease parses; its BackendData is not interpreted.
	a, err = ParseAttrs([]byte(`{"PublicIP":"192.168.1.11","BackendType":"udp","BackendData":null}`))
	if err != nil || a.BackendType != "udp" || a.VtepMAC != nil {
		t.Fatalf("ParseAttrs(udp) = %+v, %v", a, err)
	}
	b, err := a.MarshalJSON()
	if want := `{"PublicIP":"192.168.1.11","PublicIPv6":null,"BackendType":"udp","BackendData":null}`; err != nil || string(b) != want {
		t.Fatalf("MarshalJSON(udp) = %s, %v; want %s", b, err, want)
	}
}

func TestParseAttrsErrors(t *testing.T) {
	for _, tc := range []struct{ js, want string }{
		{``, "lease value: not valid JSON"},
		{`null`, "lease value: PublicIP is missing"},
		{`{"PublicIP":1}`, "lease value: not valid JSON"},
		{`{"BackendType":"vxlan"}`, "lease value: PublicIP is missing"},
		{`{"PublicIP":"10.0.0.300","BackendType":"vxlan"}`, `lease value: PublicIP "10.0.0.300" is not an IPv4 address`},
		{`{"PublicIP":"fc00::1","BackendType":"vxlan"}`, `lease value: PublicIP "fc00::1" is not an IPv4 address`},
		{`{"PublicIP":"0.0.0.0","BackendType":"vxlan"}`, `lease value: PublicIP 0.0.0.0 is unspecified`},
		{`{"PublicIP":"10.0.0.2","PublicIPv6":"10.0.0.2","BackendType":"vxlan"}`, `lease value: PublicIPv6 "10.0.0.2" is not an IPv6 address`},
		{`{"PublicIP":"10.0.0.2","PublicIPv6":"::ffff:10.0.0.2","BackendType":"vxlan"}`, `lease value: PublicIPv6 "::ffff:10.0.0.2" is not an IPv6 address`},
		{`{"PublicIP":"10.0.0.2"}`, "lease value: BackendType is missing"},
		{`{"PublicIP":"10.0.0.2","BackendType":"vxlan"}`, "lease value: BackendData is missing for vxlan"},
		{`{"PublicIP":"10.0.0.2","BackendType":"vxlan","BackendData":[1]}`, "lease value: BackendData is not vxlan's"},
		{`{"PublicIP":"10.0.0.2","BackendType":"vxlan","BackendData":{"VtepMAC":"d6:51:2e:80:5c:69"}}`, "lease value: BackendData.VNI is missing"},
		{`{"PublicIP":"10.0.0.2","BackendType":"vxlan","BackendData":{"VNI":16777216,"VtepMAC":"d6:51:2e:80:5c:69"}}`, "lease value: BackendData.VNI 16777216 is out of range"},
		{`{"PublicIP":"10.0.0.2","BackendType":"vxlan","BackendData":{"VNI":1}}`, "lease value: BackendData.VtepMAC is missing"},
		{`{"PublicIP":"10.0.0.2","BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"d6:51:2e:80:5c"}}`, `lease value: BackendData.VtepMAC "d6:51:2e:80:5c" is not a 6-byte MAC address`},
		{`{"PublicIP":"10.0.0.2","BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"00:00:00:00:fe:80:00:00"}}`, `lease value: BackendData.VtepMAC "00:00:00:00:fe:80:00:00" is not a 6-byte MAC address`},
	} {
		a, err := ParseAttrs([]byte(tc.js))
		if err == nil {
			t.Errorf("ParseAttrs(%s) = %+v, want error %q", tc.js, a, tc.want)
			continue
		}
		if !strings.HasPrefix(err.Error(), tc.want) {
			t.Errorf("ParseAttrs(%s) error:\n got %q\nwant %q...", tc.js, err, tc.want)
		}
	}
}

func TestAttrsMarshalRefusesInvalid(t *testing.T) {
	for _, a := range []Attrs{
		{},
		{PublicIP: netip.MustParseAddr("10.0.0.1"), BackendType: "vxlan", VNI: 1},                                      // no MAC
		{PublicIP: netip.MustParseAddr("fc00::1"), BackendType: "vxlan", VNI: 1, VtepMAC: nodeAttrs(1).VtepMAC},        // IPv6 PublicIP
		{PublicIP: netip.MustParseAddr("10.0.0.1"), BackendType: "vxlan", VNI: 1 << 24, VtepMAC: nodeAttrs(1).VtepMAC}, // VNI
		{PublicIP: netip.MustParseAddr("10.0.0.1"), BackendType: "", VNI: 1, VtepMAC: nodeAttrs(1).VtepMAC},            // no type
		{PublicIP: netip.MustParseAddr("10.0.0.1"), PublicIPv6: netip.MustParseAddr("10.0.0.1"), BackendType: "udp"},   // v4 as v6
	} {
		if b, err := a.MarshalJSON(); err == nil {
			t.Errorf("MarshalJSON(%+v) = %s, want an error", a, b)
		}
	}
}
