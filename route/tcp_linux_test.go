package route

import (
	"context"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
	"github.com/vishvananda/netns"

	"vxrouter/encap"
	"vxrouter/internal/nettest"
	"vxrouter/tunnel"
)

// tcpNode is one side of TestTCPThroughForwarders: a namespace with an
// underlay veth end, a TUN device (one or more queues), and the forwarder.
type tcpNode struct {
	ns      netns.NsHandle
	name    string // of the namespace
	under   netip.Addr
	tunAddr netip.Addr
	subnet  netip.Prefix
	vtep    net.HardwareAddr
	fwd     *Forwarder
	table   *Table
	checks  []*checkedDevice // one per queue, checking what it reads
}

// checked, maxBatch and bad sum up the node's queues.
func (n *tcpNode) checked() (checked, maxBatch int64, bad []string) {
	for _, c := range n.checks {
		checked += c.checked.Load()
		maxBatch = max(maxBatch, c.maxBatch.Load())
		c.mu.Lock()
		bad = append(bad, c.bad...)
		c.mu.Unlock()
	}
	return checked, maxBatch, bad
}

// run runs argv, failing the test with its output.
func run(t *testing.T, argv ...string) {
	t.Helper()
	if out, err := exec.Command(argv[0], argv[1:]...).CombinedOutput(); err != nil {
		t.Fatalf("%s: %v: %s", strings.Join(argv, " "), err, out)
	}
}

// addNetns and inNetns are nettest's, under the names this file uses.
func addNetns(t *testing.T, name string) netns.NsHandle  { return nettest.AddNetns(t, name) }
func inNetns(t *testing.T, ns netns.NsHandle, fn func()) { nettest.InNetns(t, ns, fn) }

// checkedDevice wraps a Device and checks every packet Read returns with
// gopacket: IPv4 header and TCP checksums valid, length within the MTU.
// With offloads, that is the segmentation of the kernel's super-packets.
type checkedDevice struct {
	tunnel.Device
	mtu int
	// partial: the peer takes pending checksums, so segments may carry
	// the pseudo-header sum instead of a computed checksum.
	partial  bool
	maxBatch atomic.Int64 // most packets one Read returned
	checked  atomic.Int64
	pending  atomic.Int64 // of them, TCP segments with the checksum pending
	mu       sync.Mutex
	bad      []string
}

// BadChecksums passes the device's count on (tunnel.BadChecksumCounter),
// which the embedded interface alone would hide from the forwarder.
func (d *checkedDevice) BadChecksums() uint64 {
	if c, ok := d.Device.(tunnel.BadChecksumCounter); ok {
		return c.BadChecksums()
	}
	return 0
}

// LeaveChecksums passes the forwarder's choice on (tunnel.ChecksumLeaver).
func (d *checkedDevice) LeaveChecksums(partial func(dst netip.Addr) bool) {
	if l, ok := d.Device.(tunnel.ChecksumLeaver); ok {
		l.LeaveChecksums(partial)
	}
}

func (d *checkedDevice) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	n, err := d.Device.Read(bufs, sizes, offset)
	if int64(n) > d.maxBatch.Load() {
		d.maxBatch.Store(int64(n))
	}
	for i := range n {
		pkt := bufs[i][offset : offset+sizes[i]]
		if len(pkt) >= 40 && pkt[0] == 0x45 && pkt[9] == 6 && binary.BigEndian.Uint16(pkt[36:]) == pseudoHeaderSum(pkt) {
			d.pending.Add(1)
		}
		if msg := checkSegment(pkt, d.mtu, d.partial); msg != "" {
			d.mu.Lock()
			if len(d.bad) < 5 {
				d.bad = append(d.bad, msg)
			}
			d.mu.Unlock()
		}
		d.checked.Add(1)
	}
	return n, err
}

// checkSegment verifies an IPv4 packet's header checksum and, for TCP,
// its checksum, by recomputing both with gopacket; with partial, a TCP
// checksum may instead be pending: the pseudo-header sum.
func checkSegment(pkt []byte, mtu int, partial bool) string {
	if len(pkt) > mtu {
		return fmt.Sprintf("%d-byte packet over the MTU %d", len(pkt), mtu)
	}
	if len(pkt) < 20 || pkt[0]>>4 != 4 {
		return "" // IPv6 router solicitations and such: not ours to check
	}
	p := gopacket.NewPacket(pkt, layers.LayerTypeIPv4, gopacket.Default)
	ip, _ := p.Layer(layers.LayerTypeIPv4).(*layers.IPv4)
	if ip == nil {
		return fmt.Sprintf("not IPv4: %v", p.ErrorLayer())
	}
	if got, want := binary.BigEndian.Uint16(pkt[10:12]), ipv4HeaderChecksum(pkt[:ip.IHL*4]); got != want {
		return fmt.Sprintf("IPv4 header checksum %#04x, want %#04x", got, want)
	}
	if int(ip.Length) != len(pkt) {
		return fmt.Sprintf("IPv4 total length %d, packet %d bytes", ip.Length, len(pkt))
	}
	tcp, _ := p.Layer(layers.LayerTypeTCP).(*layers.TCP)
	if tcp == nil {
		return ""
	}
	got := tcp.Checksum
	tcp.SetNetworkLayerForChecksum(ip)
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{ComputeChecksums: true}, tcp, gopacket.Payload(tcp.Payload)); err != nil {
		return err.Error()
	}
	// 0xffff and 0 are the same sum: a checksum the kernel finished
	// (skb_checksum_help) that comes to 0 is written 0xffff.
	if want := tcp.Checksum; got != want && !(got == 0xffff && want == 0) && !(partial && got == pseudoHeaderSum(pkt)) {
		return fmt.Sprintf("TCP checksum %#04x, want %#04x (seq %d, %d payload bytes)", got, want, tcp.Seq, len(tcp.Payload))
	}
	return ""
}

// pseudoHeaderSum is the folded, not inverted, sum of an IPv4 TCP
// packet's pseudo-header: what a pending checksum field holds.
func pseudoHeaderSum(pkt []byte) uint16 {
	ihl := int(pkt[0]&0x0f) * 4
	sum := uint32(6) + uint32(len(pkt)-ihl)
	for i := 12; i < 20; i += 2 {
		sum += uint32(binary.BigEndian.Uint16(pkt[i:]))
	}
	for sum > 0xffff {
		sum = sum>>16 + sum&0xffff
	}
	return uint16(sum)
}

func ipv4HeaderChecksum(h []byte) uint16 {
	var sum uint32
	for i := 0; i+1 < len(h); i += 2 {
		if i == 10 {
			continue
		}
		sum += uint32(binary.BigEndian.Uint16(h[i:]))
	}
	for sum > 0xffff {
		sum = sum>>16 + sum&0xffff
	}
	return ^uint16(sum)
}

// start opens n's TUN device (vxt0, with the address n.tunAddr/32, MTU
// mtu and a route to 172.16.0.0/16) and underlay sockets as c says, and
// runs its forwarder until ctx ends (wg waits for it). The peers are
// for the caller to put in n.table.
func (n *tcpNode) start(ctx context.Context, t *testing.T, wg *sync.WaitGroup, c tcpCase, mtu int) {
	t.Helper()
	var devs []tunnel.Device
	var uls []*tunnel.UDP
	inNetns(t, n.ns, func() {
		var backend string
		var err error
		devs, backend, err = tunnel.OpenTUN("vxt0", tunnel.TUNOptions{Backend: c.backend, Queues: c.queues})
		if err != nil {
			t.Fatal(err)
		}
		if backend != c.backend {
			t.Fatalf("OpenTUN gave backend %s, want %s", backend, c.backend)
		}
		if uls, err = tunnel.ListenUDPQueues(netip.AddrPortFrom(n.under, 8472), len(devs), c.udp); err != nil {
			t.Fatal(err)
		}
	})
	if len(devs) != c.queues {
		t.Fatalf("%d queues, want %d", len(devs), c.queues)
	}
	run(t, "ip", "-n", n.name, "link", "set", "vxt0", "mtu", fmt.Sprint(mtu), "up")
	run(t, "ip", "-n", n.name, "addr", "add", n.tunAddr.String()+"/32", "dev", "vxt0")
	run(t, "ip", "-n", n.name, "route", "add", "172.16.0.0/16", "dev", "vxt0", "src", n.tunAddr.String())

	var err error
	if n.table, err = NewTable(1, n.vtep); err != nil {
		t.Fatal(err)
	}
	dec, err := encap.NewDecoder(1, n.vtep)
	if err != nil {
		t.Fatal(err)
	}
	var qs []Queue
	for i := range devs {
		cd := &checkedDevice{Device: devs[i], mtu: mtu, partial: c.partial}
		n.checks = append(n.checks, cd)
		qs = append(qs, Queue{Dev: cd, Underlay: uls[i]})
	}
	if c.udp == (tunnel.UDPOptions{}) {
		if gso, gro := uls[0].Offloads(); !gso || !gro {
			t.Logf("kernel without UDP offloads: GSO %v, GRO %v", gso, gro)
		}
	}
	n.fwd = NewForwarderQueues(qs, n.table, dec, nil)
	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := n.fwd.Run(ctx); err != nil {
			t.Errorf("forwarder %s: %v", n.name, err)
		}
	}()
}

// tcpCase is one way of running the data plane.
type tcpCase struct {
	name    string
	backend string
	queues  int
	udp     tunnel.UDPOptions
	// partial: each node's peer takes pending checksums (as two vxrouter
	// nodes whose leases say PartialCsum do).
	partial bool
}

// TestTCPThroughForwarders sends 10 MB over TCP from a socket in one
// namespace to a socket in another, through real TUN devices, two
// forwarders and VXLAN over a real veth, with each TUN backend and with
// UDP offloads on and off, and checks that every byte arrives in order,
// that every segment read from the TUN has valid checksums, and, with
// offloads, that the kernel handed over super-packets.
func TestTCPThroughForwarders(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: network namespaces, veth and TUN devices")
	}
	for _, c := range []tcpCase{
		{name: "offload", backend: tunnel.BackendOffload, queues: 1},
		{name: "offload-2queues", backend: tunnel.BackendOffload, queues: 2},
		{name: "offload-no-udp-offloads", backend: tunnel.BackendOffload, queues: 1, udp: tunnel.UDPOptions{NoGSO: true, NoGRO: true}},
		{name: "offload-partial-checksums", backend: tunnel.BackendOffload, queues: 2, partial: true},
		{name: "water", backend: tunnel.BackendWater, queues: 1},
		{name: "water-partial-checksums", backend: tunnel.BackendWater, queues: 1, partial: true},
	} {
		t.Run(c.name, func(t *testing.T) { testTCPThroughForwarders(t, c) })
	}
}

func testTCPThroughForwarders(t *testing.T, c tcpCase) {
	tag := fmt.Sprintf("vxrrt%06x", rand.Uint32()&0xffffff)
	a := &tcpNode{name: tag + "a", under: netip.MustParseAddr("10.231.0.1"), tunAddr: netip.MustParseAddr("172.16.99.1"),
		subnet: netip.MustParsePrefix("172.16.99.0/24"), vtep: net.HardwareAddr{0x02, 0, 0, 0, 0, 0xa}}
	b := &tcpNode{name: tag + "b", under: netip.MustParseAddr("10.231.0.2"), tunAddr: netip.MustParseAddr("172.16.57.1"),
		subnet: netip.MustParsePrefix("172.16.57.0/24"), vtep: net.HardwareAddr{0x02, 0, 0, 0, 0, 0xb}}
	for _, n := range []*tcpNode{a, b} {
		n.ns = addNetns(t, n.name)
	}
	run(t, "ip", "link", "add", "ul0", "netns", a.name, "type", "veth", "peer", "name", "ul0", "netns", b.name)
	const underlayMTU, mtu = 1500, 1450
	for _, n := range []*tcpNode{a, b} {
		run(t, "ip", "-n", n.name, "addr", "add", n.under.String()+"/24", "dev", "ul0")
		run(t, "ip", "-n", n.name, "link", "set", "ul0", "mtu", fmt.Sprint(underlayMTU), "up")
		run(t, "ip", "-n", n.name, "link", "set", "lo", "up")
	}

	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	t.Cleanup(func() { cancel(); wg.Wait() }) // forwarders stop before namespaces go
	for _, n := range []*tcpNode{a, b} {
		n.start(ctx, t, &wg, c, mtu)
	}
	for _, p := range [][2]*tcpNode{{a, b}, {b, a}} {
		err := p[0].table.Apply([]Change{{Subnet: p[1].subnet, Addr: netip.AddrPortFrom(p[1].under, 8472), VTEP: p[1].vtep, PartialCsum: c.partial}})
		if err != nil {
			t.Fatal(err)
		}
	}

	// 10 MB from a to b, as one write, so the kernel may send super-packets.
	inA := func(fn func()) { inNetns(t, a.ns, fn) }
	inB := func(fn func()) { inNetns(t, b.ns, fn) }
	elapsed := tcpStream(t, "a -> b", inA, inB, a.tunAddr, b.tunAddr, 10<<20, a, b)
	checkedA, maxBatchA, _ := a.checked()
	t.Logf("10 MB in %s (%.2f Gbit/s); a: %v; b: %v; segments checked %d, largest TUN read %d packets",
		elapsed.Round(time.Millisecond), float64(10<<20)*8/elapsed.Seconds()/1e9, a.fwd.Snapshot(), b.fwd.Snapshot(),
		checkedA, maxBatchA)

	for _, n := range []*tcpNode{a, b} {
		if _, _, bad := n.checked(); len(bad) > 0 {
			t.Errorf("%s read bad segments from its TUN: %s", n.name, strings.Join(bad, "; "))
		}
		// NoRoute is allowed: the kernel sends IPv6 router solicitations
		// into a fresh TUN device, and no lease covers ff02::2.
		if d := n.fwd.Drops() - n.fwd.NoRoute.Load(); d > 0 {
			t.Errorf("%s dropped %d packets: %v", n.name, d, n.fwd.Snapshot())
		}
	}
	if checkedA == 0 {
		t.Error("no segment was read from a's TUN")
	}
	var pendingA int64
	for _, c := range a.checks {
		pendingA += c.pending.Load()
	}
	switch {
	case c.partial && c.backend == tunnel.BackendOffload && pendingA < checkedA/2:
		t.Errorf("%d of %d segments left pending for a peer that takes them so", pendingA, checkedA)
	case !c.partial && pendingA > checkedA/1000:
		// A computed checksum equals the pseudo-header sum about once
		// in 65536 segments; more than one in a thousand were left.
		t.Errorf("%d of %d segments left pending for a peer that does not take them so", pendingA, checkedA)
	}
	if c.backend == tunnel.BackendOffload && maxBatchA < 2 {
		t.Errorf("the offload device never returned more than %d packets from one Read: no super-packets", maxBatchA)
	}
	if c.backend == tunnel.BackendWater && maxBatchA != 1 {
		t.Errorf("water returned %d packets from one Read", maxBatchA)
	}
}
