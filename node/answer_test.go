package node

import (
	"net/netip"
	"testing"
)

func TestAnswerSource(t *testing.T) {
	for _, c := range []struct{ network, own, want string }{
		{"172.16.0.0/16", "172.16.57.0/24", "172.16.0.0"},
		{"172.16.0.0/16", "172.16.0.0/24", "172.16.1.0"},
		{"10.0.0.0/8", "10.0.0.0/20", "10.0.16.0"},
		{"172.16.0.0/24", "172.16.0.0/26", "172.16.0.64"},
		{"172.16.0.0/24", "172.16.0.0/24", ""},
		{"fd00::/48", "fd00::/64", "fd00:0:0:1::"},
		{"fd00::/48", "fd00:0:0:ff::/64", "fd00::"},
	} {
		got := answerSource(netip.MustParsePrefix(c.network), netip.MustParsePrefix(c.own))
		if want := c.want; (want == "" && got.IsValid()) || (want != "" && got != netip.MustParseAddr(want)) {
			t.Errorf("answerSource(%s, %s) = %v, want %q", c.network, c.own, got, c.want)
		}
	}
}
