package lab

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"vxrouter/internal/nettest"
)

func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: builds network namespaces")
	}
	for _, tool := range []string{"ip", "bridge", "sysctl"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("needs %s: %v", tool, err)
		}
	}
}

// newTestLab builds a lab that is closed, and checked to be gone, when
// the test ends, pass or fail.
func newTestLab(t *testing.T, opts Options) *Lab {
	t.Helper()
	needRoot(t)
	opts.Prefix = nettest.Name()
	l, err := New(opts)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("commands run:\n%s", strings.Join(l.Commands(), "\n"))
		}
		if err := l.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
		if left := labNamespaces(t, l.Prefix()); len(left) > 0 {
			t.Errorf("namespaces left after Close: %v", left)
		}
	})
	return l
}

func labNamespaces(t *testing.T, prefix string) []string {
	t.Helper()
	nss, err := listNamespaces(&runner{log: discard()}, prefix)
	if err != nil {
		t.Fatalf("list namespaces: %v", err)
	}
	return nss
}

func addHost(t *testing.T, l *Lab, name string) *Host {
	t.Helper()
	h, err := l.AddHost(name)
	if err != nil {
		t.Fatalf("AddHost(%s): %v", name, err)
	}
	return h
}

func addPod(t *testing.T, h *Host, name, subnet string) *Pod {
	t.Helper()
	p, err := h.AddPod(name, netip.MustParsePrefix(subnet))
	if err != nil {
		t.Fatalf("AddPod(%s, %s): %v", name, subnet, err)
	}
	return p
}

type pinger interface {
	Ping(ctx context.Context, dst netip.Addr, count int) (PingResult, error)
}

func mustPing(t *testing.T, from pinger, fromName string, dst netip.Addr) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	res, err := from.Ping(ctx, dst, 3)
	if err != nil {
		t.Fatalf("ping %s from %s: %v\n%s", dst, fromName, err, res.Output)
	}
	if res.Sent != 3 || res.Received != 3 || res.RTTAvg <= 0 {
		t.Fatalf("ping %s from %s: %+v", dst, fromName, res)
	}
}

func mustRun(t *testing.T, run func(context.Context, string, ...string) (string, error), name string, args ...string) string {
	t.Helper()
	out, err := run(context.Background(), name, args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestUnderlayPing(t *testing.T) {
	t.Parallel()
	l := newTestLab(t, Options{})
	h1 := addHost(t, l, "node1")
	h2 := addHost(t, l, "node2")
	if h1.Underlay.String() != "10.213.0.1" || h2.Underlay.String() != "10.213.0.2" {
		t.Fatalf("underlay addresses %s, %s; want 10.213.0.1, 10.213.0.2", h1.Underlay, h2.Underlay)
	}
	if h1.NS != l.Prefix()+"-node1" {
		t.Errorf("host namespace %q, want %q", h1.NS, l.Prefix()+"-node1")
	}
	if _, err := l.AddHost("node1"); err == nil {
		t.Error("second host named node1 accepted")
	}
	mustPing(t, h1, "node1", h2.Underlay)
	mustPing(t, h2, "node2", h1.Underlay)

	out := mustRun(t, h1.Run, "ip", "-o", "addr", "show", "dev", "eth0")
	if !strings.Contains(out, "10.213.0.1/24") {
		t.Errorf("node1 eth0: %s", out)
	}
	out = mustRun(t, h1.Run, "sysctl", "-n", "net.ipv4.ip_forward", "net.ipv4.conf.all.rp_filter",
		"net.ipv4.conf.default.rp_filter", "net.ipv4.conf.eth0.rp_filter")
	if strings.Fields(out)[0] != "1" || strings.Join(strings.Fields(out)[1:], " ") != "0 0 0" {
		t.Errorf("node1 sysctls ip_forward, rp_filter all/default/eth0 = %q, want 1 0 0 0", out)
	}

	// Do: a listener made in node1 lives there (10.213.0.1 exists nowhere
	// else), and a dial from node2 crosses the underlay to it.
	var ln net.Listener
	if err := h1.Do(func() (err error) {
		ln, err = net.Listen("tcp", "10.213.0.1:0")
		return err
	}); err != nil {
		t.Fatalf("listen in node1: %v", err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err == nil {
			io.Copy(c, c)
			c.Close()
		}
	}()
	var c net.Conn
	if err := h2.Do(func() (err error) {
		c, err = net.DialTimeout("tcp", ln.Addr().String(), 5*time.Second)
		return err
	}); err != nil {
		t.Fatalf("dial node1 from node2: %v", err)
	}
	defer c.Close()
	if tc, ok := c.LocalAddr().(*net.TCPAddr); !ok || tc.IP.String() != "10.213.0.2" {
		t.Errorf("dial from node2 has local address %v, want 10.213.0.2", c.LocalAddr())
	}
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write([]byte("hello")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 5)
	if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "hello" {
		t.Fatalf("echo through the underlay: %q, %v", buf, err)
	}
}

func TestPodPing(t *testing.T) {
	t.Parallel()
	l := newTestLab(t, Options{})
	h := addHost(t, l, "node1")
	p := addPod(t, h, "pa", "172.16.99.0/24")
	if p.Addr.String() != "172.16.99.2" || p.Gateway.String() != "172.16.99.1" || p.NS != h.NS+"-pa" {
		t.Fatalf("pod %+v: want 172.16.99.2 via 172.16.99.1 in %s", p, h.NS+"-pa")
	}
	mustPing(t, p, "pa", p.Gateway)
	mustPing(t, p, "pa", h.Underlay)

	// The next pod gets the next address, an explicit one is honoured,
	// and pods on one bridge reach each other.
	p2 := addPod(t, h, "pb", "172.16.99.0/24")
	p3, err := h.AddPodConfig("pod-c", PodConfig{Subnet: netip.MustParsePrefix("172.16.99.0/24"), Addr: netip.MustParseAddr("172.16.99.40")})
	if err != nil {
		t.Fatal(err)
	}
	if p2.Addr.String() != "172.16.99.3" || p3.Addr.String() != "172.16.99.40" {
		t.Fatalf("pod addresses %s, %s; want 172.16.99.3, 172.16.99.40", p2.Addr, p3.Addr)
	}
	if _, err := h.AddPodConfig("pd", PodConfig{Subnet: p.Subnet, Addr: p.Addr}); err == nil {
		t.Error("a second pod with address", p.Addr, "accepted")
	}
	mustPing(t, p3, "pod-c", p.Addr)

	out := mustRun(t, p.Run, "ip", "-o", "link", "show", "dev", "eth0")
	if !strings.Contains(out, "mtu 1450") {
		t.Errorf("pod eth0 MTU, want 1450: %s", out)
	}
	out = mustRun(t, p.Run, "ip", "route", "show", "default")
	if !strings.Contains(out, "default via 172.16.99.1 dev eth0") {
		t.Errorf("pod default route: %s", out)
	}
	out = mustRun(t, h.Run, "ip", "-o", "link", "show", "master", PodBridge)
	for _, dev := range []string{p.HostDev, p2.HostDev, p3.HostDev} {
		if !strings.Contains(out, dev+"@") {
			t.Errorf("%s not on cni0: %s", dev, out)
		}
	}
	if len(h.Pods()) != 3 {
		t.Errorf("host has %d pods, want 3", len(h.Pods()))
	}

	// Unreachable is reported as loss, with the counts filled in.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	res, err := p.Ping(ctx, netip.MustParseAddr("172.16.99.99"), 2)
	if !errors.Is(err, ErrLoss) || res.Sent != 2 || res.Received != 0 {
		t.Errorf("ping nobody: %+v, %v; want 2 sent, 0 received, ErrLoss", res, err)
	}
}

func TestIPv6(t *testing.T) {
	t.Parallel()
	if !ipv6Enabled() {
		t.Skip("kernel has no IPv6")
	}
	l := newTestLab(t, Options{Underlay: netip.MustParsePrefix("fd00:213::/64")})
	h1 := addHost(t, l, "node1")
	h2 := addHost(t, l, "node2")
	if h2.Underlay.String() != "fd00:213::2" {
		t.Fatalf("node2 underlay %s, want fd00:213::2", h2.Underlay)
	}
	mustPing(t, h1, "node1", h2.Underlay)
	p := addPod(t, h1, "pa", "fd00:99::/64")
	mustPing(t, p, "pa", p.Gateway)
	mustPing(t, p, "pa", h1.Underlay)
}

// TestKernelVXLANFlannel checks lab's emulation of flannel's vxlan
// backend: two hosts, each with flannel.1 and a pod, each programmed
// with the other's lease, exactly the journey of DESIGN.md.
func TestKernelVXLANFlannel(t *testing.T) {
	t.Parallel()
	l := newTestLab(t, Options{})
	a := addHost(t, l, "node1")
	b := addHost(t, l, "node2")
	snA, snB := netip.MustParsePrefix("172.16.99.0/24"), netip.MustParsePrefix("172.16.57.0/24")
	macA, _ := net.ParseMAC("b6:bf:4c:81:cf:3b")
	macB, _ := net.ParseMAC("d6:51:2e:80:5c:69")

	ka, err := a.KernelVXLAN(KernelVXLANConfig{VNI: 1, Port: 8472, VtepMAC: macA, Subnet: snA})
	if err != nil {
		if strings.Contains(err.Error(), "Unknown device type") {
			t.Skipf("kernel without vxlan: %v", err)
		}
		t.Fatal(err)
	}
	kb, err := b.KernelVXLAN(KernelVXLANConfig{VNI: 1, Port: 8472, VtepMAC: macB, Subnet: snB})
	if err != nil {
		t.Fatal(err)
	}
	pa := addPod(t, a, "pa", snA.String())
	pb := addPod(t, b, "pb", snB.String())
	if err := ka.AddPeer(snB, b.Underlay, macB); err != nil {
		t.Fatal(err)
	}
	if err := kb.AddPeer(snA, a.Underlay, macA); err != nil {
		t.Fatal(err)
	}
	if err := kb.AddPeer(snA, a.Underlay, macA); err != nil {
		t.Fatalf("AddPeer again: %v", err)
	}

	// The device and the three entries are flannel's.
	out := mustRun(t, a.Run, "ip", "-d", "link", "show", "flannel.1")
	for _, want := range []string{"mtu 1450", "link/ether b6:bf:4c:81:cf:3b",
		"vxlan id 1 local 10.213.0.1 dev eth0", "dstport 8472", "nolearning"} {
		if !strings.Contains(out, want) {
			t.Errorf("flannel.1 on node1 lacks %q:\n%s", want, out)
		}
	}
	for _, c := range []struct{ cmd, want string }{
		{"ip -4 addr show dev flannel.1", "inet 172.16.99.0/32"},
		{"ip route show 172.16.57.0/24", "172.16.57.0/24 via 172.16.57.0 dev flannel.1 onlink"},
		{"ip neigh show dev flannel.1", "172.16.57.0 lladdr d6:51:2e:80:5c:69 PERMANENT"},
		{"bridge fdb show dev flannel.1", "d6:51:2e:80:5c:69 dst 10.213.0.2 self permanent"},
	} {
		f := strings.Fields(c.cmd)
		if out := mustRun(t, a.Run, f[0], f[1:]...); !strings.Contains(out, c.want) {
			t.Errorf("%s on node1: want %q in:\n%s", c.cmd, c.want, out)
		}
	}

	// On the wire: node1's echo requests reach node2 as UDP to 8472.
	var wire *tcpdump
	if _, err := exec.LookPath("tcpdump"); err == nil {
		wire = startTcpdump(t, b, "-c", "2", "udp", "dst", "port", "8472", "and", "src", "host", a.Underlay.String())
	}
	mustPing(t, pa, "pa", pb.Addr)
	mustPing(t, pb, "pb", pa.Addr)
	// And the traffic whose checksums the kernel leaves to offload.
	for _, c := range [][2]*Pod{{pa, pb}, {pb, pa}} {
		if _, err := c[0].TCPTo(context.Background(), c[1], 5201, 2<<20); err != nil {
			t.Error(err)
		}
		if n, err := c[0].UDPTo(context.Background(), c[1], 5202, 100, 1000); err != nil || n != 100 {
			t.Errorf("udp %s -> %s: %d of 100 arrived (%v)", c[0].Addr, c[1].Addr, n, err)
		}
	}
	if wire != nil {
		out := wire.wait(t)
		if !strings.Contains(out, "10.213.0.2.8472") || !strings.Contains(out, "172.16.99.2 > 172.16.57.2") {
			t.Errorf("tcpdump on node2 eth0 did not see pa's pings in VXLAN:\n%s", out)
		}
	}

	// Without node1's lease on node2, replies have no way back.
	if err := kb.RemovePeer(snA, a.Underlay, macA); err != nil {
		t.Fatal(err)
	}
	if out := mustRun(t, b.Run, "ip", "route", "show", snA.String()); strings.TrimSpace(out) != "" {
		t.Errorf("route to %s still on node2 after RemovePeer: %s", snA, out)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if res, err := pa.Ping(ctx, pb.Addr, 2); !errors.Is(err, ErrLoss) {
		t.Errorf("ping after RemovePeer: %+v, %v; want ErrLoss", res, err)
	}
	if err := kb.RemovePeer(snA, a.Underlay, macA); err == nil {
		t.Error("RemovePeer of a removed peer: want an error")
	}
	if err := kb.AddPeer(snA, a.Underlay, macA); err != nil {
		t.Fatal(err)
	}
	mustPing(t, pa, "pa", pb.Addr)
}

type tcpdump struct {
	cmd  *exec.Cmd
	out  bytes.Buffer
	done chan error
}

// startTcpdump runs tcpdump on h's eth0 and returns once it listens.
func startTcpdump(t *testing.T, h *Host, filter ...string) *tcpdump {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	td := &tcpdump{done: make(chan error, 1)}
	td.cmd = h.Command(ctx, "tcpdump", append([]string{"-i", "eth0", "-n", "-l"}, filter...)...)
	td.cmd.Stdout = &syncWriter{w: &td.out}
	stderr, err := td.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := td.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	listening := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(stderr)
		once := sync.Once{}
		for sc.Scan() {
			if strings.Contains(sc.Text(), "listening on") {
				once.Do(func() { close(listening) })
			}
		}
		td.done <- td.cmd.Wait()
	}()
	select {
	case <-listening:
	case err := <-td.done:
		t.Fatalf("tcpdump ended before listening: %v", err)
	case <-ctx.Done():
		t.Fatal("tcpdump does not start listening")
	}
	return td
}

func (td *tcpdump) wait(t *testing.T) string {
	t.Helper()
	if err := <-td.done; err != nil {
		t.Errorf("tcpdump: %v", err)
	}
	return td.out.String()
}

type syncWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (s *syncWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(p)
}

// startSleeper starts a long-lived process in ns and returns a channel
// that gets its exit.
func startSleeper(t *testing.T, cmd *exec.Cmd) <-chan error {
	t.Helper()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	return done
}

func mustExit(t *testing.T, done <-chan error, what string) {
	t.Helper()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Errorf("%s still runs", what)
	}
}

func TestCloseRemovesEverything(t *testing.T) {
	t.Parallel()
	l := newTestLab(t, Options{})
	h := addHost(t, l, "node1")
	p := addPod(t, h, "pa", "172.16.99.0/24")
	// Background context: only Close may stop them.
	hostProc := startSleeper(t, h.Command(context.Background(), "sleep", "1000"))
	podProc := startSleeper(t, p.Command(context.Background(), "sh", "-c", "sleep 1000 & sleep 1000"))
	if got := len(labNamespaces(t, l.Prefix())); got != 3 {
		t.Fatalf("%d namespaces before Close, want 3 (ul, node1, pod)", got)
	}
	if err := l.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if left := labNamespaces(t, l.Prefix()); len(left) > 0 {
		t.Errorf("namespaces left after Close: %v", left)
	}
	mustExit(t, hostProc, "process in host")
	mustExit(t, podProc, "process in pod")
	if err := l.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if _, err := l.AddHost("node2"); !errors.Is(err, ErrClosed) {
		t.Errorf("AddHost after Close: %v, want ErrClosed", err)
	}
}

// TestCloseStopsStartingNode closes a lab right after starting a node, as
// an interrupted demo does: the node's `ip netns exec` may not have entered
// its namespace yet, so no search of the namespace finds it, and it would
// run on in a namespace whose name is gone. Close must stop it anyway.
func TestCloseStopsStartingNode(t *testing.T) {
	t.Parallel()
	// A stand-in for vxrouter that stays up: exec keeps the pid the one
	// StartVXRouter started.
	bin := filepath.Join(t.TempDir(), "vxrouter")
	if err := os.WriteFile(bin, []byte("#!/bin/sh\nexec sleep 1000\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		l := newTestLab(t, Options{})
		h := addHost(t, l, "node1")
		n, err := h.StartVXRouter(NodeOptions{Binary: bin, Etcd: "unix:///nonexistent", Dir: filepath.Join(t.TempDir(), "node1")})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { n.cmd.Process.Kill() }) // should Close not
		if err := l.Close(); err != nil {
			t.Fatalf("round %d: Close: %v", i, err)
		}
		select {
		case <-n.Done():
		default:
			t.Fatalf("round %d: node (pid %d) still running after Close", i, n.Pid())
		}
		if _, err := h.StartVXRouter(NodeOptions{Binary: bin, Dir: n.Dir}); !errors.Is(err, ErrClosed) {
			t.Fatalf("StartVXRouter after Close: %v, want ErrClosed", err)
		}
	}
}

func TestCleanupLeftovers(t *testing.T) {
	t.Parallel()
	needRoot(t)
	prefix := nettest.Name()
	t.Cleanup(func() { Cleanup(prefix) })

	// A lab whose program "crashed": never closed.
	crashed, err := New(Options{Prefix: prefix})
	if err != nil {
		t.Fatal(err)
	}
	h := addHost(t, crashed, "node1")
	addPod(t, h, "pa", "172.16.99.0/24")
	proc := startSleeper(t, h.Command(context.Background(), "sleep", "1000"))
	crashed = nil

	if err := Cleanup(prefix); err != nil {
		t.Fatalf("Cleanup: %v", err)
	}
	if left := labNamespaces(t, prefix); len(left) > 0 {
		t.Errorf("namespaces left after Cleanup: %v", left)
	}
	mustExit(t, proc, "process in crashed lab")
	if err := Cleanup(prefix); err != nil {
		t.Errorf("Cleanup with nothing to do: %v", err)
	}

	// New does the same before it builds.
	crashed, err = New(Options{Prefix: prefix})
	if err != nil {
		t.Fatal(err)
	}
	addHost(t, crashed, "node1")
	l, err := New(Options{Prefix: prefix})
	if err != nil {
		t.Fatalf("New over leftovers: %v", err)
	}
	if got := labNamespaces(t, prefix); len(got) != 1 || got[0] != prefix+"-ul" {
		t.Errorf("namespaces after New over leftovers: %v, want only %s-ul", got, prefix)
	}
	if _, err := l.AddHost("node1"); err != nil {
		t.Errorf("AddHost node1 again: %v", err)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
}
