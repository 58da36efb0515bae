package explain

import (
	"crypto/rand"
	"encoding/hex"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"testing"

	"vxrouter/internal/nettest"
	"vxrouter/masq"
)

// TestFlannelRulesAsWritten checks the chain the journey to the outside
// prints against what `vxrouter run --ip-masq` really writes: package masq
// writes its rules into a namespace of the test's own, and iptables lists
// them back, line for line the text's.
func TestFlannelRulesAsWritten(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: makes a network namespace and writes its nat table")
	}
	if _, err := exec.LookPath("iptables"); err != nil {
		t.Skip("needs iptables (apt-get install iptables)")
	}
	b := make([]byte, 3)
	rand.Read(b)
	name := "vxrexpl" + hex.EncodeToString(b)
	ns := nettest.AddNetns(t, name)
	cluster, subnet := netip.MustParsePrefix("172.16.0.0/16"), netip.MustParsePrefix("172.16.99.0/24")
	nettest.InNetns(t, ns, func() {
		m, err := masq.New([]netip.Prefix{cluster}, masq.Options{})
		if err != nil {
			t.Fatalf("masq: %v", err)
		}
		if err := m.Write([]masq.Network{{Cluster: cluster, Pod: subnet}}); err != nil {
			t.Fatalf("masq: %v", err)
		}
	})
	out, err := exec.Command("ip", "netns", "exec", name, "iptables", "-t", "nat", "-S", "FLANNEL-POSTRTG").CombinedOutput()
	if err != nil {
		t.Fatalf("iptables -S: %v: %s", err, out)
	}
	var got []string
	for line := range strings.Lines(string(out)) {
		if l := strings.TrimSpace(line); strings.HasPrefix(l, "-A ") {
			got = append(got, l)
		}
	}
	want := flannelRules(cluster, subnet)
	if len(got) != len(want) {
		t.Fatalf("masq wrote %d rules, the text shows %d:\n%s", len(got), len(want), out)
	}
	for i, r := range want {
		if got[i] != r.String() {
			t.Errorf("rule %d: masq wrote\n  %s\nthe text shows\n  %s", i+1, got[i], r.String())
		}
	}
}
