package e2e

import (
	"bufio"
	"fmt"
	"net/netip"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"vxrouter/route"
	"vxrouter/tunnel"
)

// TestFlowEntropy: four TCP flows from a vxrouter node's pod to a
// kernel-vxlan node's pod leave with four distinct outer UDP source
// ports, each flow from one port throughout (a capture on the kernel
// node's eth0 shows it), and the kernel node takes them all: the data
// arrives byte for byte. The local ports are chosen so that the four
// flows hash to four sockets of the pool.
func TestFlowEntropy(t *testing.T) {
	if _, err := exec.LookPath("tshark"); err != nil {
		t.Skip("needs tshark to read the capture:", err)
	}
	o := newOverlay(t, network16)
	hv, hk := o.host("fv"), o.host("fk")
	_, env := o.start(hv)
	kl := o.flannelNode(hk, "d6:51:2e:80:5c:69")
	pv, pk := o.pod(hv, env.Subnet.Masked()), o.pod(hk, kl.Subnet)
	o.mustPing(pv, pk)

	const dport = 5301
	var lports []uint16
	seen := map[uint32]bool{}
	for p := uint16(40000); len(lports) < 4; p++ {
		h := route.FlowHash(netip.AddrPortFrom(pv.Addr, p), netip.AddrPortFrom(pk.Addr, dport), 6) % tunnel.DefaultSourcePool
		if !seen[h] {
			seen[h] = true
			lports = append(lports, p)
		}
	}

	// One flow at a time, its first datagrams captured on the kernel
	// node: tcpdump -c stops on its own, having written every packet it
	// counted (one stopped by a signal may leave packets unread under
	// load).
	portsOf := map[string]map[string]bool{} // inner source port -> outer source ports
	for _, lp := range lports {
		pcap := fmt.Sprintf("%s/flow%d.pcap", t.TempDir(), lp)
		dump := hk.Command(o.ctx, "tcpdump", "-i", "eth0", "-c", "8", "-s", "200", "-U", "-w", pcap,
			"udp", "dst", "port", "8472", "and", "src", "host", hv.Underlay.String())
		stderr, err := dump.StderrPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := dump.Start(); err != nil {
			t.Fatal(err)
		}
		listening := make(chan bool, 1)
		go func() {
			sc := bufio.NewScanner(stderr)
			for sc.Scan() {
				if strings.Contains(sc.Text(), "listening on") {
					listening <- true
				}
			}
			close(listening)
		}()
		select {
		case ok := <-listening:
			if !ok {
				t.Fatal("tcpdump exited before it listened")
			}
		case <-time.After(10 * time.Second):
			dump.Process.Kill()
			t.Fatal("tcpdump did not start listening within 10 s")
		}
		if _, err := pv.TCPFromPort(o.ctx, lp, pk, dport, 256<<10); err != nil {
			dump.Process.Kill()
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() {
			for range listening { // until its stderr closes
			}
			done <- dump.Wait()
		}()
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("tcpdump: %v", err)
			}
		case <-time.After(10 * time.Second):
			dump.Process.Kill()
			t.Fatal("tcpdump did not see 8 datagrams of the flow within 10 s")
		}
		out, err := exec.Command("tshark", "-r", pcap, "-d", "udp.port==8472,vxlan",
			"-T", "fields", "-e", "udp.srcport", "-e", "tcp.srcport").Output()
		if err != nil {
			t.Fatalf("tshark: %v", err)
		}
		for line := range strings.Lines(string(out)) {
			f := strings.Fields(line)
			if len(f) != 2 {
				continue
			}
			if portsOf[f[1]] == nil {
				portsOf[f[1]] = map[string]bool{}
			}
			portsOf[f[1]][f[0]] = true
		}
	}
	outer := map[string]bool{}
	for _, lp := range lports {
		ps := portsOf[strconv.Itoa(int(lp))]
		if len(ps) != 1 {
			t.Fatalf("flow from port %d left from outer ports %v, want exactly one (capture: %v)", lp, ps, portsOf)
		}
		for p := range ps {
			outer[p] = true
		}
	}
	if len(outer) != 4 {
		t.Fatalf("4 flows left from %d outer ports %v, want 4 distinct", len(outer), outer)
	}
	t.Logf("inner source port -> outer source port: %v", portsOf)
}
