package masq

import (
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"vxrouter/internal/nettest"
)

var (
	cluster4 = netip.MustParsePrefix("172.16.0.0/16")
	pod4     = netip.MustParsePrefix("172.16.5.0/24")
	cluster6 = netip.MustParsePrefix("fd00:16::/48")
	pod6     = netip.MustParsePrefix("fd00:16:0:5::/64")
)

// flannel's chain for 172.16.0.0/16 and 172.16.5.0/24, as iptables -S
// prints it after flanneld wrote it (pkg/trafficmngr/iptables masqRules).
var flannelChain4 = []string{
	`-N FLANNEL-POSTRTG`,
	`-A FLANNEL-POSTRTG -m mark --mark 0x4000/0x4000 -m comment --comment "flanneld masq" -j RETURN`,
	`-A FLANNEL-POSTRTG -s 172.16.5.0/24 -d 172.16.0.0/16 -m comment --comment "flanneld masq" -j RETURN`,
	`-A FLANNEL-POSTRTG -s 172.16.0.0/16 -d 172.16.5.0/24 -m comment --comment "flanneld masq" -j RETURN`,
	`-A FLANNEL-POSTRTG ! -s 172.16.0.0/16 -d 172.16.5.0/24 -m comment --comment "flanneld masq" -j RETURN`,
	`-A FLANNEL-POSTRTG -s 172.16.0.0/16 ! -d 224.0.0.0/4 -m comment --comment "flanneld masq" -j MASQUERADE --random-fully`,
	`-A FLANNEL-POSTRTG ! -s 172.16.0.0/16 -d 172.16.0.0/16 -m comment --comment "flanneld masq" -j MASQUERADE --random-fully`,
}

const jumpLine = `-A POSTROUTING -m comment --comment "flanneld masq" -j FLANNEL-POSTRTG`

// netns is a namespace of the test's own: do runs code on a thread in
// it (what the code under test writes lands there), sh runs a command in
// it from outside, as an operator would, to look or to meddle.
type netns struct {
	t    *testing.T
	name string
	do   func(func())
}

func newNetns(t *testing.T) *netns {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: makes a network namespace and writes its nat table")
	}
	before := rootNAT(t)
	name := fmt.Sprintf("vxrmasq-%08x", rand.Uint32())
	h := nettest.AddNetns(t, name)
	// Registered after AddNetns, so it runs before the namespace goes.
	t.Cleanup(func() {
		if after := rootNAT(t); !slices.Equal(before, after) {
			t.Errorf("the host's own nat table changed: the rules went to the wrong namespace\nbefore %q\nafter  %q", before, after)
		}
	})
	return &netns{t: t, name: name, do: func(fn func()) { nettest.InNetns(t, h, fn) }}
}

// rootNAT is the test process's own nat table, which no test may touch.
func rootNAT(t *testing.T) []string {
	var out []string
	for _, tool := range []string{"iptables", "ip6tables"} {
		b, err := exec.Command(tool, "-t", "nat", "-S").CombinedOutput()
		if err != nil {
			t.Fatalf("%s -t nat -S: %v: %s", tool, err, b)
		}
		out = append(out, string(b))
	}
	b, _ := exec.Command("nft", "list", "tables").CombinedOutput()
	return append(out, string(b))
}

// sh runs a command in the namespace and returns its output lines.
func (n *netns) sh(args ...string) []string {
	n.t.Helper()
	out, err := exec.Command("ip", append([]string{"netns", "exec", n.name}, args...)...).CombinedOutput()
	if err != nil {
		n.t.Fatalf("%s: %v: %s", strings.Join(args, " "), err, out)
	}
	return strings.Split(strings.TrimSpace(string(out)), "\n")
}

// chain is `iptables -t nat -S FLANNEL-POSTRTG`, nil if there is none.
func (n *netns) chain(tool string) []string {
	n.t.Helper()
	out, err := exec.Command("ip", "netns", "exec", n.name, tool, "-t", "nat", "-S").CombinedOutput()
	if err != nil {
		n.t.Fatalf("%s -t nat -S: %v: %s", tool, err, out)
	}
	var lines []string
	for _, l := range strings.Split(string(out), "\n") {
		if l == "-N "+Chain || strings.HasPrefix(l, "-A "+Chain+" ") {
			lines = append(lines, l)
		}
	}
	return lines
}

// jumps counts POSTROUTING's jumps to the chain.
func (n *netns) jumps(tool string) int {
	n.t.Helper()
	c := 0
	for _, l := range n.sh(tool, "-t", "nat", "-S", "POSTROUTING") {
		if strings.HasSuffix(l, "-j "+Chain) {
			c++
		}
	}
	return c
}

// wantIPTables fails the test unless the namespace's nat table holds
// exactly want in the chain and one jump to it.
func (n *netns) wantIPTables(tool string, want []string) {
	n.t.Helper()
	if got := n.chain(tool); !slices.Equal(got, want) {
		n.t.Fatalf("%s -t nat -S %s:\n%s\nwant:\n%s", tool, Chain, strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if j := n.jumps(tool); j != 1 {
		n.t.Fatalf("POSTROUTING jumps to %s %d times, want once:\n%s", Chain, j, strings.Join(n.sh(tool, "-t", "nat", "-S", "POSTROUTING"), "\n"))
	}
}

func testLog(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(tlog{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type tlog struct{ t *testing.T }

func (w tlog) Write(p []byte) (int, error) { w.t.Log(strings.TrimSpace(string(p))); return len(p), nil }

func mustNew(t *testing.T, clusters []netip.Prefix, o Options) *Masq {
	t.Helper()
	o.Log = testLog(t)
	m, err := New(clusters, o)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// TestIPTablesFlannelRules: the chain holds flannel's rules, byte for
// byte, and POSTROUTING jumps to it once; New alone leaves nothing.
func TestIPTablesFlannelRules(t *testing.T) {
	ns := newNetns(t)
	ns.do(func() {
		m := mustNew(t, []netip.Prefix{cluster4}, Options{})
		if got := ns.sh("iptables", "-t", "nat", "-S"); slices.ContainsFunc(got, func(l string) bool { return strings.Contains(l, checkChain) || strings.Contains(l, Chain) }) {
			t.Fatalf("New left rules behind:\n%s", strings.Join(got, "\n"))
		}
		if err := m.Write([]Network{{cluster4, pod4}}); err != nil {
			t.Fatal(err)
		}
	})
	ns.wantIPTables("iptables", flannelChain4)
}

func TestIPTablesRandomFullyDisable(t *testing.T) {
	ns := newNetns(t)
	ns.do(func() {
		m := mustNew(t, []netip.Prefix{cluster4}, Options{RandomFullyDisable: true})
		if err := m.Write([]Network{{cluster4, pod4}}); err != nil {
			t.Fatal(err)
		}
	})
	want := slices.Clone(flannelChain4)
	for i := range want {
		want[i] = strings.TrimSuffix(want[i], " --random-fully")
	}
	ns.wantIPTables("iptables", want)
}

// TestIPTablesRestartAndNewSubnet: a second Write of the same rules (a
// restart) changes nothing and adds nothing; a Write for another subnet
// or network replaces the chain's content, leaving no old rule.
func TestIPTablesRestartAndNewSubnet(t *testing.T) {
	ns := newNetns(t)
	write := func(cluster, pod netip.Prefix) {
		ns.do(func() {
			m := mustNew(t, []netip.Prefix{cluster}, Options{})
			if err := m.Write([]Network{{cluster, pod}}); err != nil {
				t.Fatal(err)
			}
		})
	}
	write(cluster4, pod4)
	write(cluster4, pod4)
	write(cluster4, pod4)
	ns.wantIPTables("iptables", flannelChain4)

	write(cluster4, netip.MustParsePrefix("172.16.9.0/24"))
	want := slices.Clone(flannelChain4)
	for i := range want {
		want[i] = strings.ReplaceAll(want[i], "172.16.5.0/24", "172.16.9.0/24")
	}
	ns.wantIPTables("iptables", want)

	write(netip.MustParsePrefix("10.244.0.0/16"), netip.MustParsePrefix("10.244.3.0/24"))
	got := ns.chain("iptables")
	if len(got) != len(flannelChain4) || slices.ContainsFunc(got, func(l string) bool { return strings.Contains(l, "172.16.") }) {
		t.Fatalf("after a new network the chain holds:\n%s", strings.Join(got, "\n"))
	}
}

// TestIPTablesEnsure: whatever someone else does to the chain or the
// jump, one Ensure puts flannel's chain back, exactly once.
func TestIPTablesEnsure(t *testing.T) {
	ns := newNetns(t)
	var m *Masq
	ns.do(func() {
		m = mustNew(t, []netip.Prefix{cluster4}, Options{})
		if err := m.Write([]Network{{cluster4, pod4}}); err != nil {
			t.Fatal(err)
		}
	})
	for _, tc := range []struct {
		name   string
		meddle [][]string
	}{
		{"nothing", nil},
		{"chain flushed", [][]string{{"iptables", "-t", "nat", "-F", Chain}}},
		{"one rule deleted", [][]string{{"iptables", "-t", "nat", "-D", Chain, "3"}}},
		{"rule added", [][]string{{"iptables", "-t", "nat", "-I", Chain, "-s", "10.0.0.1", "-j", "RETURN"}}},
		{"rules swapped", [][]string{{"iptables", "-t", "nat", "-D", Chain, "1"}, {"iptables", "-t", "nat", "-A", Chain, "-m", "mark", "--mark", "0x4000/0x4000", "-m", "comment", "--comment", "flanneld masq", "-j", "RETURN"}}},
		{"jump deleted", [][]string{{"iptables", "-t", "nat", "-D", "POSTROUTING", "-m", "comment", "--comment", "flanneld masq", "-j", Chain}}},
		{"jump doubled", [][]string{{"iptables", "-t", "nat", "-A", "POSTROUTING", "-m", "comment", "--comment", "flanneld masq", "-j", Chain}}},
		{"chain deleted", [][]string{
			{"iptables", "-t", "nat", "-D", "POSTROUTING", "-m", "comment", "--comment", "flanneld masq", "-j", Chain},
			{"iptables", "-t", "nat", "-F", Chain},
			{"iptables", "-t", "nat", "-X", Chain}}},
		{"nat table flushed", [][]string{{"iptables", "-t", "nat", "-F"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, c := range tc.meddle {
				ns.sh(c...)
			}
			if len(tc.meddle) > 0 && slices.Equal(ns.chain("iptables"), flannelChain4) && ns.jumps("iptables") == 1 {
				t.Fatal("meddling changed nothing: the test tests nothing")
			}
			ns.do(func() {
				if err := m.Ensure(); err != nil {
					t.Fatal(err)
				}
			})
			ns.wantIPTables("iptables", flannelChain4)
		})
	}
}

// TestIPTablesRefused: an iptables that refuses a rule stops New with an
// error that names the rule, and leaves nothing in the nat table.
func TestIPTablesRefused(t *testing.T) {
	ns := newNetns(t)
	fakeIPTables(t, "MASQUERADE")
	ns.do(func() {
		_, err := New([]netip.Prefix{cluster4}, Options{Log: testLog(t)})
		if err == nil {
			t.Fatal("New took rules iptables refused")
		}
		t.Log(err)
		for _, want := range []string{"iptables refuses", "172.16.0.0/16", "masquerade", "No chain/target/match"} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("error does not say %q: %v", want, err)
			}
		}
	})
	if got := ns.sh("iptables", "-t", "nat", "-S"); len(got) != 4 {
		t.Fatalf("a refused New left rules behind:\n%s", strings.Join(got, "\n"))
	}
}

// TestIPTablesMissing: without iptables, New says to install it.
func TestIPTablesMissing(t *testing.T) {
	ns := newNetns(t)
	t.Setenv("PATH", t.TempDir())
	ns.do(func() {
		_, err := New([]netip.Prefix{cluster4}, Options{})
		if err == nil || !strings.Contains(err.Error(), "install the iptables package") {
			t.Fatalf("New without iptables: %v", err)
		}
		t.Log(err)
	})
}

func TestNewBadInput(t *testing.T) {
	for _, tc := range []struct {
		name     string
		clusters []netip.Prefix
		want     string
	}{
		{"none", nil, "no network"},
		{"invalid", []netip.Prefix{{}}, "not a CIDR"},
		{"two IPv4", []netip.Prefix{cluster4, netip.MustParsePrefix("10.0.0.0/8")}, "two networks of one address family"},
	} {
		if _, err := New(tc.clusters, Options{}); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want %q", tc.name, err, tc.want)
		}
	}
}

func TestWriteBadInput(t *testing.T) {
	ns := newNetns(t)
	ns.do(func() {
		m := mustNew(t, []netip.Prefix{cluster4}, Options{})
		for _, nets := range [][]Network{
			nil,
			{{cluster4, netip.MustParsePrefix("10.1.0.0/24")}},
			{{cluster4, netip.MustParsePrefix("172.0.0.0/8")}},
			{{netip.MustParsePrefix("172.17.0.0/16"), netip.MustParsePrefix("172.17.1.0/24")}},
		} {
			if err := m.Write(nets); err == nil {
				t.Errorf("Write(%v) took it", nets)
			}
		}
	})
	if got := ns.chain("iptables"); got != nil {
		t.Fatalf("a refused Write left:\n%s", strings.Join(got, "\n"))
	}
}

// TestIPv6AndDualStack: each family's rules go to its own tool, with
// its own multicast range.
func TestIPv6AndDualStack(t *testing.T) {
	ns := newNetns(t)
	ns.do(func() {
		m := mustNew(t, []netip.Prefix{cluster4, cluster6}, Options{})
		if err := m.Write([]Network{{cluster4, pod4}, {cluster6, pod6}}); err != nil {
			t.Fatal(err)
		}
	})
	ns.wantIPTables("iptables", flannelChain4)
	want := []string{
		`-N FLANNEL-POSTRTG`,
		`-A FLANNEL-POSTRTG -m mark --mark 0x4000/0x4000 -m comment --comment "flanneld masq" -j RETURN`,
		`-A FLANNEL-POSTRTG -s fd00:16:0:5::/64 -d fd00:16::/48 -m comment --comment "flanneld masq" -j RETURN`,
		`-A FLANNEL-POSTRTG -s fd00:16::/48 -d fd00:16:0:5::/64 -m comment --comment "flanneld masq" -j RETURN`,
		`-A FLANNEL-POSTRTG ! -s fd00:16::/48 -d fd00:16:0:5::/64 -m comment --comment "flanneld masq" -j RETURN`,
		`-A FLANNEL-POSTRTG -s fd00:16::/48 ! -d ff00::/8 -m comment --comment "flanneld masq" -j MASQUERADE --random-fully`,
		`-A FLANNEL-POSTRTG ! -s fd00:16::/48 -d fd00:16::/48 -m comment --comment "flanneld masq" -j MASQUERADE --random-fully`,
	}
	ns.wantIPTables("ip6tables", want)
}

// nftChain is `nft list chain` of our chain, rule lines only, nil if
// there is none.
func (n *netns) nftChain(table string) []string {
	n.t.Helper()
	out, err := exec.Command("ip", "netns", "exec", n.name, "nft", "list", "chain", table, NFTChain).CombinedOutput()
	if err != nil {
		if strings.Contains(string(out), "No such file or directory") {
			return nil
		}
		n.t.Fatalf("nft list chain %s %s: %v: %s", table, NFTChain, err, out)
	}
	var lines []string
	for _, l := range strings.Split(string(out), "\n") {
		l = strings.TrimSpace(l)
		if l == "" || strings.HasPrefix(l, "table ") || strings.HasPrefix(l, "chain ") || l == "}" {
			continue
		}
		lines = append(lines, l)
	}
	return lines
}

// The chain nft prints for 172.16.0.0/16 and 172.16.5.0/24: the meaning
// of flannel's iptables rules (see README for where flannel's own
// nftables mode differs).
var nftChain4 = []string{
	`type nat hook postrouting priority srcnat; policy accept;`,
	`meta mark & 0x00004000 == 0x00004000 return comment "flanneld masq"`,
	`ip saddr 172.16.5.0/24 ip daddr 172.16.0.0/16 return comment "flanneld masq"`,
	`ip saddr 172.16.0.0/16 ip daddr 172.16.5.0/24 return comment "flanneld masq"`,
	`ip saddr != 172.16.0.0/16 ip daddr 172.16.5.0/24 return comment "flanneld masq"`,
	`ip saddr 172.16.0.0/16 ip daddr != 224.0.0.0/4 masquerade fully-random comment "flanneld masq"`,
	`ip saddr != 172.16.0.0/16 ip daddr 172.16.0.0/16 masquerade fully-random comment "flanneld masq"`,
}

func (n *netns) wantNFT(table string, want []string) {
	n.t.Helper()
	if got := n.nftChain(table); !slices.Equal(got, want) {
		n.t.Fatalf("nft list chain %s %s:\n%s\nwant:\n%s", table, NFTChain, strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// TestNFTablesRules: with EnableNFTables the rules are in flannel's
// table and chain, and read as flannel's iptables rules do; New alone
// leaves nothing, a restart changes nothing.
func TestNFTablesRules(t *testing.T) {
	ns := newNetns(t)
	ns.do(func() {
		m := mustNew(t, []netip.Prefix{cluster4}, Options{NFTables: true})
		if got := ns.sh("nft", "list", "tables"); len(got) != 1 || got[0] != "" {
			t.Fatalf("New left tables behind: %q", got)
		}
		if err := m.Write([]Network{{cluster4, pod4}}); err != nil {
			t.Fatal(err)
		}
		m2 := mustNew(t, []netip.Prefix{cluster4}, Options{NFTables: true})
		if err := m2.Write([]Network{{cluster4, pod4}}); err != nil {
			t.Fatal(err)
		}
	})
	ns.wantNFT("ip "+NFTable4, nftChain4)
	if got := ns.sh("nft", "list", "tables"); !slices.Equal(got, []string{"table ip " + NFTable4}) {
		t.Fatalf("tables: %q", got)
	}
}

// TestNFTablesEnsure: a flushed, changed or deleted chain comes back.
func TestNFTablesEnsure(t *testing.T) {
	ns := newNetns(t)
	var m *Masq
	ns.do(func() {
		m = mustNew(t, []netip.Prefix{cluster4, cluster6}, Options{NFTables: true})
		if err := m.Write([]Network{{cluster4, pod4}, {cluster6, pod6}}); err != nil {
			t.Fatal(err)
		}
	})
	for _, tc := range []struct {
		name   string
		meddle []string
	}{
		{"nothing", nil},
		{"chain flushed", []string{"nft", "flush", "chain", "ip", NFTable4, NFTChain}},
		{"rule added", []string{"nft", "insert", "rule", "ip", NFTable4, NFTChain, "ip", "saddr", "10.0.0.1", "return"}},
		{"table deleted", []string{"nft", "delete", "table", "ip", NFTable4}},
		{"ruleset flushed", []string{"nft", "flush", "ruleset"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.meddle != nil {
				ns.sh(tc.meddle...)
				if slices.Equal(ns.nftChain("ip "+NFTable4), nftChain4) {
					t.Fatal("meddling changed nothing: the test tests nothing")
				}
			}
			ns.do(func() {
				if err := m.Ensure(); err != nil {
					t.Fatal(err)
				}
			})
			ns.wantNFT("ip "+NFTable4, nftChain4)
			if got := ns.nftChain("ip6 " + NFTable6); len(got) != 7 || !strings.Contains(got[5], "ip6 daddr != ff00::/8 masquerade fully-random") {
				t.Fatalf("ip6 chain:\n%s", strings.Join(got, "\n"))
			}
		})
	}
}

// TestSwitchModes: writing one mode's rules removes the other's, both
// ways, so flipping EnableNFTables leaves one set.
func TestSwitchModes(t *testing.T) {
	ns := newNetns(t)
	write := func(nft bool) {
		ns.do(func() {
			m := mustNew(t, []netip.Prefix{cluster4}, Options{NFTables: nft})
			if err := m.Write([]Network{{cluster4, pod4}}); err != nil {
				t.Fatal(err)
			}
		})
	}
	write(false)
	write(true)
	ns.wantNFT("ip "+NFTable4, nftChain4)
	if got := ns.chain("iptables"); got != nil {
		t.Fatalf("iptables chain left after switching to nftables:\n%s", strings.Join(got, "\n"))
	}
	if j := ns.jumps("iptables"); j != 0 {
		t.Fatalf("%d jumps left after switching to nftables", j)
	}
	write(false)
	ns.wantIPTables("iptables", flannelChain4)
	if got := ns.nftChain("ip " + NFTable4); got != nil {
		t.Fatalf("nftables chain left after switching to iptables:\n%s", strings.Join(got, "\n"))
	}
}

func TestRuleString(t *testing.T) {
	var got []string
	for _, r := range masqRules(Network{cluster4, pod4}, true) {
		got = append(got, r.String())
	}
	want := []string{
		"meta mark & 0x4000 == 0x4000 return",
		"ip saddr 172.16.5.0/24 ip daddr 172.16.0.0/16 return",
		"ip saddr 172.16.0.0/16 ip daddr 172.16.5.0/24 return",
		"ip saddr != 172.16.0.0/16 ip daddr 172.16.5.0/24 return",
		"ip saddr 172.16.0.0/16 ip daddr != 224.0.0.0/4 masquerade fully-random",
		"ip saddr != 172.16.0.0/16 ip daddr 172.16.0.0/16 masquerade fully-random",
	}
	if !slices.Equal(got, want) {
		t.Fatalf("got\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// fakeIPTables puts an iptables first in PATH that refuses any call
// with the argument refuse, as iptables does for an option or target the
// kernel lacks, and passes everything else to the real one.
func fakeIPTables(t *testing.T, refuse string) {
	t.Helper()
	real, err := exec.LookPath("iptables")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	script := fmt.Sprintf(`#!/bin/sh
for a; do
	if [ "$a" = %q ]; then
		echo "iptables: No chain/target/match by that name." >&2
		exit 1
	fi
done
exec %s "$@"
`, refuse, real)
	if err := os.WriteFile(filepath.Join(dir, "iptables"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", dir+":"+os.Getenv("PATH"))
}

// TestIPTablesNoRandomFully: an iptables that knows --random-fully on a
// kernel that refuses it masquerades without.
func TestIPTablesNoRandomFully(t *testing.T) {
	ns := newNetns(t)
	fakeIPTables(t, "--random-fully")
	ns.do(func() {
		m := mustNew(t, []netip.Prefix{cluster4}, Options{})
		if err := m.Write([]Network{{cluster4, pod4}}); err != nil {
			t.Fatal(err)
		}
	})
	want := slices.Clone(flannelChain4)
	for i := range want {
		want[i] = strings.TrimSuffix(want[i], " --random-fully")
	}
	ns.wantIPTables("iptables", want)
}

// TestRemove: Remove takes out what Write put in, and nothing before
// Write (an earlier run's rules stay, as when a node stops).
func TestRemove(t *testing.T) {
	for _, nft := range []bool{false, true} {
		t.Run(fmt.Sprintf("nftables=%t", nft), func(t *testing.T) {
			ns := newNetns(t)
			ns.do(func() {
				m := mustNew(t, []netip.Prefix{cluster4}, Options{NFTables: nft})
				if err := m.Write([]Network{{cluster4, pod4}}); err != nil {
					t.Fatal(err)
				}
				m2 := mustNew(t, []netip.Prefix{cluster4}, Options{NFTables: nft})
				if err := m2.Remove(); err != nil {
					t.Fatal(err)
				}
			})
			if nft {
				ns.wantNFT("ip "+NFTable4, nftChain4)
			} else {
				ns.wantIPTables("iptables", flannelChain4)
			}
			ns.do(func() {
				m := mustNew(t, []netip.Prefix{cluster4}, Options{NFTables: nft})
				if err := m.Write([]Network{{cluster4, pod4}}); err != nil {
					t.Fatal(err)
				}
				if err := m.Remove(); err != nil {
					t.Fatal(err)
				}
			})
			if got := ns.chain("iptables"); got != nil {
				t.Fatalf("left after Remove:\n%s", strings.Join(got, "\n"))
			}
			if j := ns.jumps("iptables"); j != 0 {
				t.Fatalf("%d jumps left after Remove", j)
			}
			if got := ns.sh("nft", "list", "tables"); nft && !slices.Equal(got, []string{""}) {
				t.Fatalf("tables left after Remove: %q", got)
			}
		})
	}
}
