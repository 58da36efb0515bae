package kubeproxy

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"

	"vxrouter/internal/nettest"
)

// TestChainNames checks the hashes against chain names kube-proxy wrote
// in real clusters: every cluster has default/kubernetes:https, and
// kube-dns's ports are the same everywhere.
func TestChainNames(t *testing.T) {
	for _, c := range []struct {
		ns, name, port, proto, want string
	}{
		{"default", "kubernetes", "https", "tcp", "KUBE-SVC-NPX46M4PTMTKRN6Y"},
		{"kube-system", "kube-dns", "dns", "udp", "KUBE-SVC-TCOU7JCQXEZGVUNU"},
		{"kube-system", "kube-dns", "dns-tcp", "tcp", "KUBE-SVC-ERIFXISQEP7F7OF4"},
		{"kube-system", "kube-dns", "metrics", "tcp", "KUBE-SVC-JD5MR3NA4I4DYORP"},
	} {
		s := Service{Namespace: c.ns, Name: c.name, PortName: c.port, Protocol: c.proto}
		if got := s.SVCChain(); got != c.want {
			t.Errorf("%s %s: chain %s, want %s", s.PortNameString(), c.proto, got, c.want)
		}
	}
	s := web()
	a, b := s.SEPChain(s.Endpoints[0]), s.SEPChain(s.Endpoints[1])
	if a == b || !strings.HasPrefix(a, "KUBE-SEP-") || len(a) != len("KUBE-SEP-")+16 {
		t.Errorf("endpoint chains %s and %s: want two distinct KUBE-SEP-<16 characters>", a, b)
	}
	if len(s.SVCChain()) > 28 || len(a) > 28 {
		t.Errorf("chain names %s, %s: iptables takes at most 28 characters", s.SVCChain(), a)
	}
}

func TestProbability(t *testing.T) {
	for n, want := range map[int]string{2: "0.5000000000", 3: "0.3333333333", 4: "0.2500000000"} {
		if got := Probability(n); got != want {
			t.Errorf("Probability(%d) = %s, want %s", n, got, want)
		}
	}
}

func web() Service {
	return Service{
		Namespace: "default", Name: "web", Protocol: "tcp",
		ClusterIP: netip.MustParseAddr("192.168.3.10"), Port: 80,
		Endpoints: []netip.AddrPort{
			netip.MustParseAddrPort("172.16.57.3:8080"),
			netip.MustParseAddrPort("172.16.24.3:8080"),
		},
		ClusterCIDR: netip.MustParsePrefix("172.16.0.0/16"),
	}
}

// TestRules pins the shape of the rules, as kube-proxy writes them.
func TestRules(t *testing.T) {
	s := web()
	rs, err := Rules(s)
	if err != nil {
		t.Fatal(err)
	}
	svc := s.SVCChain()
	sep0, sep1 := s.SEPChain(s.Endpoints[0]), s.SEPChain(s.Endpoints[1])
	want := []string{
		`-I OUTPUT -m comment --comment "kubernetes service portals" -j KUBE-SERVICES`,
		`-I PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES`,
		`-I POSTROUTING -m comment --comment "kubernetes postrouting rules" -j KUBE-POSTROUTING`,
		`-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN`,
		`-A KUBE-POSTROUTING -j MARK --xor-mark 0x4000`,
		`-A KUBE-POSTROUTING -m comment --comment "kubernetes service traffic requiring SNAT" -j MASQUERADE --random-fully`,
		`-A KUBE-MARK-MASQ -j MARK --or-mark 0x4000`,
		`-A KUBE-SERVICES -m comment --comment "default/web cluster IP" -m tcp -p tcp -d 192.168.3.10 --dport 80 -j ` + svc,
		`-A ` + svc + ` -m comment --comment "default/web cluster IP" -m tcp -p tcp -d 192.168.3.10 --dport 80 ! -s 172.16.0.0/16 -j KUBE-MARK-MASQ`,
		`-A ` + svc + ` -m comment --comment "default/web -> 172.16.57.3:8080" -m statistic --mode random --probability 0.5000000000 -j ` + sep0,
		`-A ` + svc + ` -m comment --comment "default/web -> 172.16.24.3:8080" -j ` + sep1,
		`-A ` + sep0 + ` -m comment --comment default/web -s 172.16.57.3 -j KUBE-MARK-MASQ`,
		`-A ` + sep0 + ` -m comment --comment default/web -m tcp -p tcp -j DNAT --to-destination 172.16.57.3:8080`,
		`-A ` + sep1 + ` -m comment --comment default/web -s 172.16.24.3 -j KUBE-MARK-MASQ`,
		`-A ` + sep1 + ` -m comment --comment default/web -m tcp -p tcp -j DNAT --to-destination 172.16.24.3:8080`,
	}
	var got []string
	for _, r := range rs.Rules {
		got = append(got, r.String())
	}
	if !slices.Equal(got, want) {
		t.Errorf("rules:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if want := []string{"KUBE-SERVICES", "KUBE-POSTROUTING", "KUBE-MARK-MASQ", svc, sep0, sep1}; !slices.Equal(rs.Chains, want) {
		t.Errorf("chains %v, want %v", rs.Chains, want)
	}
	if got := rs.Chain(svc); len(got) != 3 || got[1].Target() != sep0 || got[2].Target() != sep1 {
		t.Errorf("Chain(%s) = %v", svc, got)
	}
}

func TestRulesRefuse(t *testing.T) {
	for name, f := range map[string]func(*Service){
		"no endpoints": func(s *Service) { s.Endpoints = nil },
		"sctp":         func(s *Service) { s.Protocol = "sctp" },
		"ipv6":         func(s *Service) { s.ClusterIP = netip.MustParseAddr("fd00::10") },
		"port 0":       func(s *Service) { s.Port = 0 },
		"no name":      func(s *Service) { s.Name = "" },
		"endpoint":     func(s *Service) { s.Endpoints[1] = netip.AddrPortFrom(s.Endpoints[1].Addr(), 0) },
	} {
		s := web()
		f(&s)
		if _, err := Rules(s); err == nil {
			t.Errorf("%s: Rules took %+v", name, s)
		}
	}
}

// TestRestore loads the rules into a fresh network namespace with
// iptables-restore, as the demo does, and reads them back: the kernel
// (and iptables) take every rule, and iptables-save shows them as in a
// cluster.
func TestRestore(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: makes a network namespace")
	}
	if _, err := exec.LookPath("iptables-restore"); err != nil {
		t.Skip("needs iptables (apt-get install iptables)")
	}
	b := make([]byte, 2)
	rand.Read(b)
	ns := "vxrkp" + hex.EncodeToString(b)
	nettest.AddNetns(t, ns)
	rs, err := Rules(web())
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("ip", "netns", "exec", ns, "iptables-restore", "--noflush", "-w", "5")
	cmd.Stdin = strings.NewReader(rs.RestoreInput())
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("iptables-restore: %v: %s\n%s", err, out, rs.RestoreInput())
	}
	out, err := exec.Command("ip", "netns", "exec", ns, "iptables-save", "-t", "nat").CombinedOutput()
	if err != nil {
		t.Fatalf("iptables-save: %v: %s", err, out)
	}
	s := web()
	for _, want := range []string{
		"-A PREROUTING -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES",
		"-A KUBE-SERVICES -d 192.168.3.10/32 -p tcp -m comment --comment \"default/web cluster IP\" -m tcp --dport 80 -j " + s.SVCChain(),
		"-m statistic --mode random --probability 0.50000000000 -j " + s.SEPChain(s.Endpoints[0]),
		"-j DNAT --to-destination 172.16.24.3:8080",
		"-A KUBE-MARK-MASQ -j MARK --set-xmark 0x4000/0x4000",
	} {
		if !bytes.Contains(out, []byte(want)) {
			t.Errorf("iptables-save lacks %q:\n%s", want, out)
		}
	}
}
