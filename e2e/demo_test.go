package e2e

import (
	"bytes"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"vxrouter/internal/nettest"
	"vxrouter/lab"
)

// rootNATChains returns the chains of the machine's own nat table whose
// names start like kube-proxy's or flannel's, so a test can check the demo
// added none there.
func rootNATChains(t *testing.T) map[string]bool {
	t.Helper()
	out, err := exec.Command("iptables-save", "-t", "nat").CombinedOutput()
	if err != nil {
		t.Fatalf("iptables-save: %v: %s", err, out)
	}
	chains := map[string]bool{}
	for line := range strings.Lines(string(out)) {
		if name, ok := strings.CutPrefix(line, ":"); ok {
			name, _, _ = strings.Cut(name, " ")
			if strings.HasPrefix(name, "KUBE-") || strings.HasPrefix(name, "FLANNEL-") {
				chains[name] = true
			}
		}
	}
	return chains
}

// TestDemo runs `vxrouter demo` as a user would: every step must work, it
// must exit 0, and it must leave nothing behind, not a rule in the
// machine's own nat table; --keep must leave the lab up and --down remove
// it.
func TestDemo(t *testing.T) {
	if binary == "" {
		t.Skip("needs root: builds network namespaces, TUN devices and veth pairs")
	}
	prefix := nettest.Name()
	dir := filepath.Join(os.TempDir(), "vxrouter-demo-"+prefix)
	t.Cleanup(func() {
		exec.Command(binary, "demo", "--down", "--prefix", prefix).Run()
	})
	namespaces := func() string {
		ours, err := lab.Namespaces(prefix)
		if err != nil {
			t.Fatal(err)
		}
		return strings.Join(ours, " ")
	}
	rootBefore := rootNATChains(t)
	svg := filepath.Join(t.TempDir(), "demo.svg")

	o, err := exec.Command(binary, "demo", "--prefix", prefix, "--svg", svg).CombinedOutput()
	out := string(o)
	if err != nil {
		t.Fatalf("demo: %v\n%s", err, out)
	}
	for _, want := range []string{
		"node network     10.213.0.0/24 ", "pod network      172.16.0.0/16 ", "service network  192.168.3.0/24 ",
		"took 172.16.", "FLANNEL_MTU=1450", "dev vxr0", "3/3 replies", "dropped nothing",
		"result: every step worked",
		// The Service: the rules kube-proxy writes, a ClusterIP no
		// node routes, the SYN before and after DNAT, then in VXLAN.
		"-A KUBE-SERVICES -m comment --comment \"default/web cluster IP\" -m tcp -p tcp -d 192.168.3.10 --dport 80 -j KUBE-SVC-LOLE4ISW44XBNF3G",
		"--probability 0.5000000000",
		"RTNETLINK answers: Network is unreachable",
		" > 192.168.3.10.80: Flags [S]",
		"OTV, flags [I] (0x08)",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("demo output lacks %q:\n%s", want, out)
		}
	}
	// The SYN on vxr0 and inside VXLAN goes to a backend's port 8080.
	if n := len(regexp.MustCompile(`IP 172\.16\.\d+\.2\.\d+ > 172\.16\.\d+\.3\.8080: Flags \[S\]`).FindAllString(out, -1)); n != 2 {
		t.Errorf("the DNATed SYN shows %d times, want 2 (on vxr0 and inside VXLAN):\n%s", n, out)
	}
	// The counters split between the backends and match their answers
	// (the demo checks that they match; this checks it said so).
	counted := regexp.MustCompile(`(web-\d) answered\s+(\d+); its rule, -j KUBE-SEP-[A-Z2-7]{16}, counted (\d+)`).FindAllStringSubmatch(out, -1)
	if len(counted) != 2 {
		t.Fatalf("demo shows %d backends' counters, want 2:\n%s", len(counted), out)
	}
	total := 0
	for _, c := range counted {
		answered, _ := strconv.Atoi(c[2])
		n, _ := strconv.Atoi(c[3])
		// All 20 to one backend happens 2 times in a million.
		if n == 0 || n != answered {
			t.Errorf("%s: answered %d, counted %d; want equal and not 0", c[1], answered, n)
		}
		total += n
	}
	if total != 20 {
		t.Errorf("the backends counted %d connections, want 20", total)
	}
	// To the outside: the echo request before and after MASQUERADE, and
	// the rule's counter moving.
	for _, re := range []string{
		`IP 172\.16\.\d+\.2 > 10\.213\.0\.4: ICMP echo request`, // on the pod's veth
		`IP 10\.213\.0\.1 > 10\.213\.0\.4: ICMP echo request`,   // on eth0, masqueraded
		`-A FLANNEL-POSTRTG -s 172\.16\.0\.0/16 ! -d 224\.0\.0\.0/4 .*-j MASQUERADE`,
		`The MASQUERADE rule for 172\.16\.0\.0/16 counted [1-9]\d* more packet`,
	} {
		if !regexp.MustCompile(re).MatchString(out) {
			t.Errorf("demo output lacks %s:\n%s", re, out)
		}
	}
	if b, err := os.ReadFile(svg); err != nil || !bytes.Contains(b, []byte("<svg")) {
		t.Errorf("demo --svg wrote no picture: %v", err)
	}

	if ns := namespaces(); ns != "" {
		t.Errorf("demo left namespaces: %s", ns)
	}
	if _, err := os.Stat(dir); err == nil {
		t.Errorf("demo left %s", dir)
	}
	for c := range rootNATChains(t) {
		if !rootBefore[c] {
			t.Errorf("the machine's own nat table has a chain %s it did not have before the demo", c)
		}
	}

	o, err = exec.Command(binary, "demo", "--prefix", prefix, "--keep", "--nodes", "2").CombinedOutput()
	out = string(o)
	if err != nil {
		t.Fatalf("demo --keep: %v\n%s", err, out)
	}
	if !strings.Contains(out, "vxrouter demo --down --prefix "+prefix) {
		t.Errorf("demo --keep does not say how to remove the lab:\n%s", out)
	}
	// With two nodes, both backends live on the second.
	if !regexp.MustCompile(`web-0 +172\.16\.\d+\.3 +on node2\n +web-1 +172\.16\.\d+\.4 +on node2\n`).MatchString(out) {
		t.Errorf("with --nodes 2 both backends should be on node2:\n%s", out)
	}
	if ns := namespaces(); !strings.Contains(ns, prefix+"-node1-pod") {
		t.Fatalf("demo --keep left no lab up: %q", ns)
	}
	// etcd and both nodes outlive the demo.
	if out, _ := exec.Command("pgrep", "-f", dir).Output(); len(strings.Fields(string(out))) != 3 {
		t.Errorf("after demo --keep, processes running from %s: %q, want etcd and 2 nodes", dir, out)
	}
	o, err = exec.Command(binary, "demo", "--down", "--prefix", prefix).CombinedOutput()
	if err != nil {
		t.Fatalf("demo --down: %v\n%s", err, o)
	}
	if ns := namespaces(); ns != "" {
		t.Errorf("demo --down left namespaces: %s", ns)
	}
	if _, err := os.Stat(dir); err == nil {
		t.Errorf("demo --down left %s", dir)
	}
	if out, _ := exec.Command("pgrep", "-f", dir).Output(); len(out) > 0 {
		t.Errorf("demo --down left processes: %s", out)
	}
}

// TestDemoInterrupted: Ctrl-C in the middle of the demo stops it, says so,
// and leaves nothing behind: once while the nodes start, once in the
// middle of the Service step, with its rules loaded and tcpdump running.
func TestDemoInterrupted(t *testing.T) {
	if binary == "" {
		t.Skip("needs root: builds network namespaces, TUN devices and veth pairs")
	}
	for _, c := range []struct{ name, at string }{
		{"nodes", "took 172.16."},
		{"service", "One connection from"},
	} {
		t.Run(c.name, func(t *testing.T) {
			prefix := nettest.Name()
			t.Cleanup(func() { exec.Command(binary, "demo", "--down", "--prefix", prefix).Run() })
			rootBefore := rootNATChains(t)
			cmd := exec.Command(binary, "demo", "--prefix", prefix)
			out, err := cmd.StdoutPipe()
			if err != nil {
				t.Fatal(err)
			}
			var stderr strings.Builder
			cmd.Stderr = &stderr
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			// The demo gives up by itself after its --timeout; should it
			// hang anyway, end it rather than wait for it.
			hung := time.AfterFunc(3*time.Minute, func() { cmd.Process.Kill() })
			defer hung.Stop()
			buf := make([]byte, 4096)
			var seen strings.Builder
			for !strings.Contains(seen.String(), c.at) {
				n, err := out.Read(buf)
				if err != nil {
					t.Fatalf("demo ended before %q: %v\n%s%s", c.at, err, seen.String(), stderr.String())
				}
				seen.Write(buf[:n])
			}
			// What runs in the lab now (nodes, and tcpdump in the
			// Service step) must be gone after the interrupt.
			var pids []string
			nss, _ := lab.Namespaces(prefix)
			for _, ns := range nss {
				o, _ := exec.Command("ip", "netns", "pids", ns).Output()
				pids = append(pids, strings.Fields(string(o))...)
			}
			if c.name == "service" {
				rules, _ := exec.Command("ip", "netns", "exec", prefix+"-node1", "iptables-save", "-t", "nat").Output()
				if !bytes.Contains(rules, []byte("KUBE-SVC-")) {
					t.Errorf("interrupting the Service step before its rules are loaded tests nothing:\n%s", rules)
				}
			}
			cmd.Process.Signal(os.Interrupt)
			go io.Copy(io.Discard, out)
			if err := cmd.Wait(); err == nil {
				t.Fatal("interrupted demo exited 0")
			}
			if !strings.Contains(stderr.String(), "interrupted") {
				t.Errorf("demo does not say it was interrupted: %q", stderr.String())
			}
			if nss, err := lab.Namespaces(prefix); err != nil || len(nss) > 0 {
				t.Errorf("interrupted demo left namespaces: %v %v", nss, err)
			}
			dir := filepath.Join(os.TempDir(), "vxrouter-demo-"+prefix)
			if _, err := os.Stat(dir); err == nil {
				t.Errorf("interrupted demo left %s", dir)
			}
			if out, _ := exec.Command("pgrep", "-af", dir).Output(); len(out) > 0 {
				t.Errorf("interrupted demo left processes:\n%s", out)
			}
			for _, pid := range pids {
				if _, err := os.Stat("/proc/" + pid); err == nil {
					cmdline, _ := os.ReadFile("/proc/" + pid + "/cmdline")
					t.Errorf("process %s of the lab survived the interrupt: %s", pid, bytes.ReplaceAll(cmdline, []byte{0}, []byte{' '}))
				}
			}
			for c := range rootNATChains(t) {
				if !rootBefore[c] {
					t.Errorf("the machine's own nat table has a chain %s it did not have before the demo", c)
				}
			}
		})
	}
}
