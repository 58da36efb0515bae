package lease

import (
	"net/netip"
	"strings"
	"testing"
)

func TestParseConfigDefaults(t *testing.T) {
	for _, tc := range []struct {
		js       string
		len      int
		min, max string
	}{
		{`{"Network":"172.16.0.0/16","Backend":{"Type":"vxlan"}}`, 24, "172.16.1.0", "172.16.255.0"},
		{`{"Network":"10.0.0.0/8","Backend":{"Type":"vxlan"}}`, 24, "10.0.1.0", "10.255.255.0"},
		{`{"Network":"10.4.0.0/22","Backend":{"Type":"vxlan"}}`, 24, "10.4.1.0", "10.4.3.0"},
		// Smaller than /22: a quarter of the network per node.
		{`{"Network":"10.5.0.0/23","Backend":{"Type":"vxlan"}}`, 25, "10.5.0.128", "10.5.1.128"},
		{`{"Network":"10.5.0.0/26","Backend":{"Type":"vxlan"}}`, 28, "10.5.0.16", "10.5.0.48"},
		{`{"Network":"10.5.0.0/28","Backend":{"Type":"vxlan"}}`, 30, "10.5.0.4", "10.5.0.12"},
		// Explicit SubnetLen; host bits in Network are dropped, like flannel.
		{`{"Network":"10.6.7.8/16","SubnetLen":20,"Backend":{"Type":"vxlan"}}`, 20, "10.6.16.0", "10.6.240.0"},
		{`{"Network":"10.6.0.0/16","SubnetLen":0,"Backend":{"Type":"vxlan"}}`, 24, "10.6.1.0", "10.6.255.0"},
		// 0.0.0.0 is flannel's "unset".
		{`{"Network":"10.6.0.0/16","SubnetMin":"0.0.0.0","SubnetMax":"","Backend":{"Type":"vxlan"}}`, 24, "10.6.1.0", "10.6.255.0"},
		{`{"Network":"10.6.0.0/16","SubnetMin":"10.6.0.0","SubnetMax":"10.6.9.0","Backend":{"Type":"vxlan"}}`, 24, "10.6.0.0", "10.6.9.0"},
	} {
		c, err := ParseConfig([]byte(tc.js))
		if err != nil {
			t.Errorf("ParseConfig(%s): %v", tc.js, err)
			continue
		}
		if c.SubnetLen != tc.len || c.SubnetMin.String() != tc.min || c.SubnetMax.String() != tc.max {
			t.Errorf("ParseConfig(%s) = len %d min %s max %s, want %d %s %s", tc.js, c.SubnetLen, c.SubnetMin, c.SubnetMax, tc.len, tc.min, tc.max)
		}
		if c.Backend != (Backend{Type: "vxlan", VNI: 1, Port: 8472}) {
			t.Errorf("ParseConfig(%s).Backend = %+v, want vxlan VNI 1 port 8472", tc.js, c.Backend)
		}
	}
}

// Configs as people write them for flannel, with fields vxrouter ignores.
func TestParseConfigFlannelSamples(t *testing.T) {
	for _, tc := range []struct {
		js   string
		want Config
	}{
		{
			`{"Network": "10.244.0.0/16", "Backend": {"Type": "vxlan"}}`,
			Config{Network: netip.MustParsePrefix("10.244.0.0/16"), SubnetLen: 24, SubnetMin: netip.MustParseAddr("10.244.1.0"), SubnetMax: netip.MustParseAddr("10.244.255.0"), Backend: Backend{Type: "vxlan", VNI: 1, Port: 8472}},
		},
		{
			`{"EnableIPv4": true, "EnableIPv6": true, "Network": "10.42.0.0/16", "IPv6Network": "2001:cafe:42::/56",
			  "IPv6SubnetLen": 64, "SubnetLen": 24, "Backend": {"Type": "vxlan", "VNI": 4096, "Port": 4789, "GBP": false, "DirectRouting": true, "Learning": false, "MacPrefix": "0E:2A"}}`,
			Config{Network: netip.MustParsePrefix("10.42.0.0/16"), SubnetLen: 24, SubnetMin: netip.MustParseAddr("10.42.1.0"), SubnetMax: netip.MustParseAddr("10.42.255.0"),
				IPv6Config: IPv6Config{netip.MustParsePrefix("2001:cafe:42::/56"), 64, netip.MustParseAddr("2001:cafe:42:1::"), netip.MustParseAddr("2001:cafe:42:ff::")},
				Backend:    Backend{Type: "vxlan", VNI: 4096, Port: 4789, DirectRouting: true}},
		},
		{
			`{"Network":"172.16.0.0/16","SubnetLen":26,"SubnetMin":"172.16.1.0","SubnetMax":"172.16.10.192","Backend":{"Type":"vxlan","VNI":0,"Port":0,"MTU":1400}}`,
			Config{Network: netip.MustParsePrefix("172.16.0.0/16"), SubnetLen: 26, SubnetMin: netip.MustParseAddr("172.16.1.0"), SubnetMax: netip.MustParseAddr("172.16.10.192"), Backend: Backend{Type: "vxlan", VNI: 0, Port: 8472, MTU: 1400}},
		},
		{
			`{"Network":"172.16.0.0/16","Backend":{"Type":"VXLAN"},"Networks":[],"SubnetLeaseRenewMargin":60}`,
			Config{Network: netip.MustParsePrefix("172.16.0.0/16"), SubnetLen: 24, SubnetMin: netip.MustParseAddr("172.16.1.0"), SubnetMax: netip.MustParseAddr("172.16.255.0"), Backend: Backend{Type: "vxlan", VNI: 1, Port: 8472}},
		},
	} {
		c, err := ParseConfig([]byte(tc.js))
		if err != nil {
			t.Errorf("ParseConfig(%s): %v", tc.js, err)
			continue
		}
		if *c != tc.want {
			t.Errorf("ParseConfig(%s) = %+v, want %+v", tc.js, *c, tc.want)
		}
	}
}

func TestParseConfigErrors(t *testing.T) {
	for _, tc := range []struct{ js, want string }{
		{`{"Network":`, `config: not valid flannel config JSON`},
		{`[]`, `config: not valid flannel config JSON`},
		{`{"Network":16,"Backend":{"Type":"vxlan"}}`, `config: not valid flannel config JSON`},
		{`{"Backend":{"Type":"vxlan"}}`, `config: Network is missing: set it to the overlay's IPv4 CIDR, e.g. "Network":"172.16.0.0/16"`},
		{`{"Network":"x","Backend":{"Type":"vxlan"}}`, `config: Network "x" is not a CIDR (want e.g. "172.16.0.0/16")`},
		{`{"Network":"10.0.0.1","Backend":{"Type":"vxlan"}}`, `config: Network "10.0.0.1" is not a CIDR`},
		{`{"Network":"fc00::/48","Backend":{"Type":"vxlan"}}`, `config: Network "fc00::/48" is not IPv4`},
		{`{"EnableIPv4":false,"IPv6Network":"fc00::/48","Backend":{"Type":"vxlan"}}`, `config: EnableIPv4 is false`},
		{`{"Network":"10.0.0.0/29","Backend":{"Type":"vxlan"}}`, `config: Network 10.0.0.0/29 is too small: it must be /28 or larger to hold four subnets`},
		{`{"Network":"10.0.0.0/16","SubnetLen":31,"Backend":{"Type":"vxlan"}}`, `config: SubnetLen 31 is longer than 30: each subnet needs room for a bridge and hosts`},
		{`{"Network":"10.0.0.0/16","SubnetLen":17,"Backend":{"Type":"vxlan"}}`, `config: SubnetLen 17 is too short for Network 10.0.0.0/16: it must be at least 18 so the network holds four subnets`},
		{`{"Network":"10.0.0.0/16","SubnetLen":-1,"Backend":{"Type":"vxlan"}}`, `config: SubnetLen -1 is negative`},
		{`{"Network":"10.0.0.0/16","SubnetMin":"x","Backend":{"Type":"vxlan"}}`, `config: SubnetMin "x" is not an IPv4 address`},
		{`{"Network":"10.0.0.0/16","SubnetMax":"fc00::1","Backend":{"Type":"vxlan"}}`, `config: SubnetMax "fc00::1" is not an IPv4 address`},
		{`{"Network":"10.0.0.0/16","SubnetMin":"10.1.0.0","Backend":{"Type":"vxlan"}}`, `config: SubnetMin 10.1.0.0 is outside Network 10.0.0.0/16`},
		{`{"Network":"10.0.0.0/16","SubnetMax":"11.0.0.0","Backend":{"Type":"vxlan"}}`, `config: SubnetMax 11.0.0.0 is outside Network 10.0.0.0/16`},
		{`{"Network":"10.0.0.0/16","SubnetMin":"10.0.1.5","Backend":{"Type":"vxlan"}}`, `config: SubnetMin 10.0.1.5 is not on a /24 boundary (did you mean 10.0.1.0?)`},
		{`{"Network":"10.0.0.0/16","SubnetMax":"10.0.9.128","Backend":{"Type":"vxlan"}}`, `config: SubnetMax 10.0.9.128 is not on a /24 boundary (did you mean 10.0.9.0?)`},
		{`{"Network":"10.0.0.0/16","SubnetMin":"10.0.9.0","SubnetMax":"10.0.2.0","Backend":{"Type":"vxlan"}}`, `config: SubnetMin 10.0.9.0 is above SubnetMax 10.0.2.0`},
		{`{"Network":"10.0.0.0/16"}`, `config: Backend is missing: flannel would default to "udp", which vxrouter does not support; add "Backend":{"Type":"vxlan"}`},
		{`{"Network":"10.0.0.0/16","Backend":null}`, `config: Backend is missing`},
		{`{"Network":"10.0.0.0/16","Backend":{}}`, `config: Backend.Type is missing (want "vxlan")`},
		{`{"Network":"10.0.0.0/16","Backend":{"Type":"udp"}}`, `config: Backend.Type "udp" is not supported by vxrouter (want "vxlan")`},
		{`{"Network":"10.0.0.0/16","Backend":{"Type":"host-gw"}}`, `config: Backend.Type "host-gw" is not supported by vxrouter (want "vxlan")`},
		{`{"Network":"10.0.0.0/16","Backend":{"Type":"vxlan","VNI":16777216}}`, `config: Backend.VNI 16777216 is out of range 0..16777215`},
		{`{"Network":"10.0.0.0/16","Backend":{"Type":"vxlan","VNI":-1}}`, `config: Backend.VNI -1 is out of range 0..16777215`},
		{`{"Network":"10.0.0.0/16","Backend":{"Type":"vxlan","Port":65536}}`, `config: Backend.Port 65536 is out of range 1..65535`},
		{`{"Network":"10.0.0.0/16","Backend":{"Type":"vxlan","Port":-5}}`, `config: Backend.Port -5 is out of range 1..65535`},
		{`{"Network":"10.0.0.0/16","Backend":{"Type":"vxlan","MTU":20}}`, `config: Backend.MTU 20 is out of range 626..65535: it is the underlay's MTU, the overlay gets 50 less`},
		{`{"Network":"10.0.0.0/16","Backend":{"Type":"vxlan","MTU":625}}`, `config: Backend.MTU 625 is out of range 626..65535`},
		{`{"Network":"10.0.0.0/16","Backend":{"Type":"vxlan","MTU":65536}}`, `config: Backend.MTU 65536 is out of range 626..65535`},
		{`{"Network":"10.0.0.0/16","Backend":{"Type":"vxlan","GBP":true}}`, `config: Backend asks for what vxrouter does not do: "GBP":true (VXLAN Group Based Policy`},
		{`{"Network":"10.0.0.0/16","Backend":{"Type":"vxlan","learning":true}}`, `config: Backend asks for what vxrouter does not do: "Learning":true (MAC learning`},
		{`{"Network":"10.0.0.0/16","Backend":{"Type":"vxlan","GBP":true,"Learning":true,"DirectRouting":true}}`, `config: Backend asks for what vxrouter does not do: "GBP":true (VXLAN Group Based Policy: vxrouter sends and accepts no policy IDs), "Learning":true (MAC learning on the vxlan device: vxrouter's peers come from etcd only); remove it or set it false`},
		// null leaves a bool as it was, in flannel's parse as here.
		{`{"Network":"10.0.0.0/16","Backend":{"Type":"vxlan","GBP":true,"gbp":null}}`, `config: Backend asks for what vxrouter does not do: "GBP":true`},
		// flannel fails on these too: its json.Unmarshal wants a bool.
		{`{"Network":"10.0.0.0/16","Backend":{"Type":"vxlan","DirectRouting":"true"}}`, `config: not valid flannel config JSON`},
		{`{"Network":"10.0.0.0/16","Backend":{"Type":"vxlan","GBP":1}}`, `config: not valid flannel config JSON`},
		{`{"Network":"10.0.0.0/16","Backend":{"Type":"vxlan","VNI":1.5}}`, `config: not valid flannel config JSON`},
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

func TestConfigMarshalRoundTrip(t *testing.T) {
	c := mustConfig(t, `{"Network":"172.16.0.0/16","Backend":{"Type":"vxlan"}}`)
	b, err := c.MarshalJSON()
	if err != nil {
		t.Fatal(err)
	}
	want := `{"Network":"172.16.0.0/16","SubnetLen":24,"SubnetMin":"172.16.1.0","SubnetMax":"172.16.255.0","Backend":{"Type":"vxlan","VNI":1,"Port":8472}}`
	if string(b) != want {
		t.Fatalf("MarshalJSON:\n got %s\nwant %s", b, want)
	}
	c2, err := ParseConfig(b)
	if err != nil || *c2 != *c {
		t.Fatalf("ParseConfig(MarshalJSON(c)) = %+v, %v; want %+v", c2, err, c)
	}

	c.Backend.MTU = 1400
	c.Backend.VNI = 0
	b, _ = c.MarshalJSON()
	if want := `"Backend":{"Type":"vxlan","VNI":0,"Port":8472,"MTU":1400}`; !strings.Contains(string(b), want) {
		t.Fatalf("MarshalJSON = %s, want it to contain %s", b, want)
	}
	if c2, err := ParseConfig(b); err != nil || *c2 != *c {
		t.Fatalf("round trip with VNI 0 and MTU = %+v, %v; want %+v", c2, err, c)
	}

	c.EnableNFTables = true
	b, _ = c.MarshalJSON()
	if want := `"EnableNFTables":true`; !strings.Contains(string(b), want) {
		t.Fatalf("MarshalJSON = %s, want it to contain %s", b, want)
	}
	if c2, err := ParseConfig(b); err != nil || *c2 != *c {
		t.Fatalf("round trip with EnableNFTables = %+v, %v; want %+v", c2, err, c)
	}

	if _, err := (&Config{}).MarshalJSON(); err == nil {
		t.Fatal("MarshalJSON of a config without Network succeeded")
	}
}

// EnableNFTables is flannel's: --ip-masq writes its rules with nftables.
func TestParseConfigEnableNFTables(t *testing.T) {
	c := mustConfig(t, `{"Network":"10.244.0.0/16","EnableNFTables":true,"Backend":{"Type":"vxlan"}}`)
	if !c.EnableNFTables {
		t.Fatal("EnableNFTables not read")
	}
	if c := mustConfig(t, `{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan"}}`); c.EnableNFTables {
		t.Fatal("EnableNFTables set without the key")
	}
	if _, err := ParseConfig([]byte(`{"Network":"10.244.0.0/16","EnableNFTables":"yes","Backend":{"Type":"vxlan"}}`)); err == nil || !strings.Contains(err.Error(), "EnableNFTables") {
		t.Fatalf("EnableNFTables \"yes\": %v", err)
	}
}

func TestDefaultConfigAndValidate(t *testing.T) {
	c, err := DefaultConfig(netip.MustParsePrefix("10.5.0.0/24"))
	if err != nil {
		t.Fatal(err)
	}
	want := Config{Network: netip.MustParsePrefix("10.5.0.0/24"), SubnetLen: 26, SubnetMin: netip.MustParseAddr("10.5.0.64"), SubnetMax: netip.MustParseAddr("10.5.0.192"), Backend: Backend{Type: "vxlan", VNI: 1, Port: 8472}}
	if *c != want {
		t.Fatalf("DefaultConfig = %+v, want %+v", *c, want)
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	c.SubnetMin = netip.MustParseAddr("10.5.0.65")
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "boundary") {
		t.Fatalf("Validate with a misaligned SubnetMin = %v, want a boundary error", err)
	}
}

func TestConfigContains(t *testing.T) {
	c := mustConfig(t, `{"Network":"10.0.0.0/16","SubnetMin":"10.0.2.0","SubnetMax":"10.0.9.0","Backend":{"Type":"vxlan"}}`)
	for s, want := range map[string]bool{
		"10.0.2.0/24":         true,
		"10.0.9.0/24":         true,
		"10.0.5.0/24":         true,
		"10.0.1.0/24":         false, // below SubnetMin
		"10.0.10.0/24":        false, // above SubnetMax
		"10.0.4.0/23":         false, // wrong length
		"10.0.5.1/24":         false, // host bits
		"10.1.5.0/24":         false, // outside Network
		"::ffff:10.0.5.0/120": false,
	} {
		if got := c.Contains(netip.MustParsePrefix(s)); got != want {
			t.Errorf("Contains(%s) = %v, want %v", s, got, want)
		}
	}
	if c.Contains(netip.Prefix{}) {
		t.Error("Contains(invalid prefix) = true")
	}
	if c.count() != 8 {
		t.Errorf("count() = %d, want 8", c.count())
	}
}

// Backend.MTU is the underlay's MTU, as in flannel, and the overlay gets
// 50 less: 626 gives the smallest overlay MTU a node runs with (576; the
// node refuses less), so it is the smallest the config accepts.
func TestParseConfigMinMTU(t *testing.T) {
	c, err := ParseConfig([]byte(`{"Network":"10.0.0.0/16","Backend":{"Type":"vxlan","MTU":626}}`))
	if err != nil || c.Backend.MTU != 626 || c.Backend.MTU-BackendMTUOverhead != MinMTU {
		t.Fatalf("ParseConfig with MTU 626 = %+v, %v; want it accepted", c, err)
	}
}

// TestParseConfigBackendOptions: flannel's vxlan options on Linux are
// DirectRouting (done), GBP and Learning (refused when on, by name; off is
// what vxrouter does), and options flannel on Linux does not know
// (MacPrefix and Name are its Windows ones) are ignored, as flannel
// ignores them.
func TestParseConfigBackendOptions(t *testing.T) {
	for _, tc := range []struct {
		js     string
		direct bool
	}{
		{`{"Network":"10.0.0.0/16","Backend":{"Type":"vxlan","DirectRouting":true}}`, true},
		{`{"Network":"10.0.0.0/16","Backend":{"Type":"vxlan","directRouting":true}}`, true}, // flannel's struct tag
		{`{"Network":"10.0.0.0/16","Backend":{"Type":"vxlan","DirectRouting":false}}`, false},
		{`{"Network":"10.0.0.0/16","Backend":{"Type":"vxlan","GBP":false,"Learning":false}}`, false},
		{`{"Network":"10.0.0.0/16","Backend":{"Type":"vxlan","MacPrefix":"0E-2A","Name":"vxlan0","NoSuchOption":[1]}}`, false},
	} {
		c, err := ParseConfig([]byte(tc.js))
		if err != nil {
			t.Errorf("ParseConfig(%s): %v", tc.js, err)
			continue
		}
		if c.Backend.DirectRouting != tc.direct {
			t.Errorf("ParseConfig(%s).Backend.DirectRouting = %v, want %v", tc.js, c.Backend.DirectRouting, tc.direct)
		}
	}
	// DirectRouting survives a round trip (lease config get --effective).
	c := mustConfig(t, `{"Network":"10.0.0.0/16","Backend":{"Type":"vxlan","DirectRouting":true,"MTU":1400}}`)
	b, err := c.MarshalJSON()
	if err != nil {
		t.Fatal(err)
	}
	if want := `"Backend":{"Type":"vxlan","VNI":1,"Port":8472,"MTU":1400,"DirectRouting":true}`; !strings.Contains(string(b), want) {
		t.Errorf("MarshalJSON = %s, want it to contain %s", b, want)
	}
}
