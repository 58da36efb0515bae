package lab

import (
	"net/netip"
	"testing"
)

func TestHostAddr(t *testing.T) {
	for _, tc := range []struct {
		prefix string
		n      int
		want   string // "" means an error
	}{
		{"10.213.0.0/24", 1, "10.213.0.1"},
		{"10.213.0.0/24", 2, "10.213.0.2"},
		{"10.213.0.0/24", 254, "10.213.0.254"},
		{"10.213.0.0/24", 255, ""}, // broadcast
		{"10.213.0.0/24", 0, ""},
		{"10.213.0.77/24", 1, "10.213.0.1"}, // masked first
		{"172.16.0.0/16", 300, "172.16.1.44"},
		{"10.0.0.0/30", 2, "10.0.0.2"},
		{"10.0.0.0/30", 3, ""},
		{"10.0.0.0/32", 1, ""},
		{"fd00:213::/64", 2, "fd00:213::2"},
		{"fd00:213::/64", 65536, "fd00:213::1:0"},
		{"fd00::/120", 256, ""},
	} {
		got, err := hostAddr(netip.MustParsePrefix(tc.prefix), tc.n)
		if tc.want == "" {
			if err == nil {
				t.Errorf("hostAddr(%s, %d) = %s, want an error", tc.prefix, tc.n, got)
			}
			continue
		}
		if err != nil || got != netip.MustParseAddr(tc.want) {
			t.Errorf("hostAddr(%s, %d) = %s, %v; want %s", tc.prefix, tc.n, got, err, tc.want)
		}
	}
}

func TestPick(t *testing.T) {
	subnet := netip.MustParsePrefix("172.16.99.0/29") // .1 gateway, .2-.6 pods, .7 broadcast
	gw := netip.MustParseAddr("172.16.99.1")
	sn := &podSubnet{used: map[netip.Addr]bool{gw: true}}
	take := func(want string) netip.Addr {
		t.Helper()
		var w netip.Addr
		if want != "" {
			w = netip.MustParseAddr(want)
		}
		a, err := sn.pick(subnet, w)
		if err != nil {
			t.Fatalf("pick(%q): %v", want, err)
		}
		sn.used[a] = true
		return a
	}
	if a := take(""); a.String() != "172.16.99.2" {
		t.Fatalf("first pod got %s, want .2", a)
	}
	if a := take("172.16.99.4"); a.String() != "172.16.99.4" {
		t.Fatalf("explicit pod got %s, want .4", a)
	}
	if a := take(""); a.String() != "172.16.99.3" {
		t.Fatalf("third pod got %s, want .3 (lowest free)", a)
	}
	for _, bad := range []string{"172.16.99.0", "172.16.99.1", "172.16.99.4", "172.16.99.7", "172.16.98.5"} {
		if a, err := sn.pick(subnet, netip.MustParseAddr(bad)); err == nil {
			t.Errorf("pick(%s) = %s, want an error", bad, a)
		}
	}
	take("")
	take("")
	if a, err := sn.pick(subnet, netip.Addr{}); err == nil {
		t.Errorf("pick in a full subnet = %s, want an error", a)
	}
}

func TestShellLine(t *testing.T) {
	got := shellLine([]string{"ip", "-n", "vxr-node1", "route", "add", "10.0.0.0/8", "x y", "it's", ""})
	want := `ip -n vxr-node1 route add 10.0.0.0/8 'x y' 'it'\''s' ''`
	if got != want {
		t.Errorf("shellLine = %s, want %s", got, want)
	}
}

func TestValidation(t *testing.T) {
	for _, p := range []string{"", "vxr-a", "VXR", "1vxr", "abcdefghijklm"} {
		if validPrefix(p) == nil {
			t.Errorf("prefix %q accepted", p)
		}
		if err := Cleanup(p); err == nil {
			t.Errorf("Cleanup(%q) accepted", p)
		}
	}
	for _, n := range []string{"", "ul", "node-1", "Node1", "abcdefghijklmn"} {
		if validHostName(n) == nil {
			t.Errorf("host name %q accepted", n)
		}
	}
	for _, n := range []string{"node1", "a", "abcdefghijklm"} {
		if err := validHostName(n); err != nil {
			t.Errorf("host name %q: %v", n, err)
		}
	}
	if validPodName("pod-a") != nil || validPodName("-x") == nil || validPodName("a_b") == nil {
		t.Error("pod name validation wrong")
	}
	for _, o := range []Options{
		{Prefix: "a-b"},
		{Underlay: netip.MustParsePrefix("10.0.0.0/31")},
		{MTU: 100},
		{MTU: 1500, PodMTU: 10},
		{Underlay: netip.MustParsePrefix("fd00::/64"), Underlay6: netip.MustParsePrefix("fd01::/64")},
		{Underlay6: netip.MustParsePrefix("10.1.0.0/24")},
		{Underlay6: netip.MustParsePrefix("fd00::/127")},
	} {
		if _, err := New(o); err == nil {
			t.Errorf("New(%+v) accepted", o)
		}
	}
}
