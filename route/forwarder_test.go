package route

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"

	"vxrouter/encap"
	"vxrouter/tunnel/tunneltest"
)

// ipv4UDP builds an IPv4/UDP packet from src to dst with payload.
func ipv4UDP(t testing.TB, src, dst string, payload []byte) []byte {
	t.Helper()
	ip := &layers.IPv4{
		Version: 4, TTL: 64, Protocol: layers.IPProtocolUDP,
		SrcIP: net.ParseIP(src).To4(), DstIP: net.ParseIP(dst).To4(),
	}
	udp := &layers.UDP{SrcPort: 40000, DstPort: 7}
	udp.SetNetworkLayerForChecksum(ip)
	buf := gopacket.NewSerializeBuffer()
	opts := gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}
	if err := gopacket.SerializeLayers(buf, opts, ip, udp, gopacket.Payload(payload)); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// ipv6UDP builds an IPv6/UDP packet.
func ipv6UDP(t testing.TB, src, dst string, payload []byte) []byte {
	t.Helper()
	ip := &layers.IPv6{Version: 6, HopLimit: 64, NextHeader: layers.IPProtocolUDP,
		SrcIP: net.ParseIP(src), DstIP: net.ParseIP(dst)}
	udp := &layers.UDP{SrcPort: 40000, DstPort: 7}
	udp.SetNetworkLayerForChecksum(ip)
	buf := gopacket.NewSerializeBuffer()
	opts := gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}
	if err := gopacket.SerializeLayers(buf, opts, ip, udp, gopacket.Payload(payload)); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// pair is two nodes, A (172.16.99.0/24 at 10.0.0.1) and B (172.16.57.0/24
// at 10.0.0.2), joined by an in-memory underlay, each forwarding.
type pair struct {
	net          *tunneltest.Network
	devA, devB   *tunneltest.Device
	fwdA, fwdB   *Forwarder
	tableA       *Table
	addrA, addrB netip.AddrPort
}

// newPair starts the pair; setup, if any, runs on both forwarders first.
func newPair(t testing.TB, batch int, setup ...func(a, b *Forwarder)) *pair {
	t.Helper()
	before := runtime.NumGoroutine()
	p := &pair{
		net:   tunneltest.NewNetwork(),
		devA:  tunneltest.NewDevice("vxrA", 1450, batch),
		devB:  tunneltest.NewDevice("vxrB", 1450, batch),
		addrA: netip.MustParseAddrPort("10.0.0.1:8472"),
		addrB: netip.MustParseAddrPort("10.0.0.2:8472"),
	}
	ulA := p.net.Listen(p.addrA, batch)
	ulB := p.net.Listen(p.addrB, batch)
	tA, _ := NewTable(1, macA)
	tB, _ := NewTable(1, macB)
	tA.Set(netip.MustParsePrefix("172.16.57.0/24"), p.addrB, macB)
	tA.Set(netip.MustParsePrefix("fd00:57::/64"), p.addrB, macB)
	tB.Set(netip.MustParsePrefix("172.16.99.0/24"), p.addrA, macA)
	decA, _ := encap.NewDecoder(1, macA)
	decB, _ := encap.NewDecoder(1, macB)
	p.tableA = tA
	p.fwdA = NewForwarder(p.devA, ulA, tA, decA, nil)
	p.fwdB = NewForwarder(p.devB, ulB, tB, decB, nil)
	for _, f := range setup {
		f(p.fwdA, p.fwdB)
	}

	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 2)
	go func() { errc <- p.fwdA.Run(ctx) }()
	go func() { errc <- p.fwdB.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		for i := 0; i < 2; i++ {
			select {
			case err := <-errc:
				if err != nil {
					t.Errorf("Run: %v", err)
				}
			case <-time.After(5 * time.Second):
				t.Fatal("Run did not return after cancel")
			}
		}
		// Every goroutine the forwarders started must be gone.
		deadline := time.Now().Add(2 * time.Second)
		for runtime.NumGoroutine() > before && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		if n := runtime.NumGoroutine(); n > before {
			t.Errorf("%d goroutines leaked", n-before)
		}
	})
	return p
}

func receive(t *testing.T, ch <-chan []byte) []byte {
	t.Helper()
	select {
	case pkt := <-ch:
		return pkt
	case <-time.After(5 * time.Second):
		t.Fatal("no packet arrived")
		return nil
	}
}

func expectNothing(t *testing.T, ch <-chan []byte) {
	t.Helper()
	select {
	case pkt := <-ch:
		t.Fatalf("unexpected packet % x", pkt)
	case <-time.After(100 * time.Millisecond):
	}
}

func TestForwarderCarriesPacketsBothWays(t *testing.T) {
	for _, batch := range []int{1, 32} {
		t.Run(fmt.Sprintf("batch=%d", batch), func(t *testing.T) {
			p := newPair(t, batch)
			there := ipv4UDP(t, "172.16.99.8", "172.16.57.15", []byte("hello B"))
			p.devA.Inject(there)
			if got := receive(t, p.devB.Written()); !bytes.Equal(got, there) {
				t.Fatalf("B's TUN got\n% x\nwant\n% x", got, there)
			}
			back := ipv4UDP(t, "172.16.57.15", "172.16.99.8", bytes.Repeat([]byte{0xab}, 1400))
			p.devB.Inject(back)
			if got := receive(t, p.devA.Written()); !bytes.Equal(got, back) {
				t.Fatalf("A's TUN got a different packet back (%d bytes, want %d)", len(got), len(back))
			}
			six := ipv6UDP(t, "fd00:99::8", "fd00:57::15", []byte("hello over v6"))
			p.devA.Inject(six)
			if got := receive(t, p.devB.Written()); !bytes.Equal(got, six) {
				t.Fatalf("IPv6 packet changed on the way:\n% x\nwant\n% x", got, six)
			}
			// Many at once, in order (one flow must not be reordered).
			var want [][]byte
			for i := 0; i < 100; i++ {
				pkt := ipv4UDP(t, "172.16.99.8", "172.16.57.15", []byte(fmt.Sprintf("packet %03d", i)))
				want = append(want, pkt)
				p.devA.Inject(pkt)
			}
			for i, w := range want {
				if got := receive(t, p.devB.Written()); !bytes.Equal(got, w) {
					t.Fatalf("packet %d: got %q, want %q", i, got[28:], w[28:])
				}
			}
			// The counters move after the write that handed the test the
			// last packet: wait for them, with a deadline.
			for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
				if p.fwdA.TxPackets.Load() >= 102 && p.fwdB.RxPackets.Load() >= 102 {
					break
				}
			}
			if tx := p.fwdA.TxPackets.Load(); tx != 102 {
				t.Errorf("A tx-packets = %d, want 102", tx)
			}
			if rx := p.fwdB.RxPackets.Load(); rx != 102 {
				t.Errorf("B rx-packets = %d, want 102", rx)
			}
			if d := p.fwdA.Drops() + p.fwdB.Drops(); d != 0 {
				t.Errorf("drops = %d (%v %v), want 0", d, p.fwdA.Snapshot(), p.fwdB.Snapshot())
			}
		})
	}
}

// TestForwarderChecksSources: with source checks on, B delivers what A
// sends from A's subnet and drops, and counts, what A's address sends
// with an inner source elsewhere: another node's pod, or outside the
// overlay. With them off, B delivers both.
func TestForwarderChecksSources(t *testing.T) {
	for _, on := range []bool{true, false} {
		t.Run(fmt.Sprintf("check=%v", on), func(t *testing.T) {
			p := newPair(t, 8, func(_, b *Forwarder) { b.CheckSources(on) })
			own := ipv4UDP(t, "172.16.99.8", "172.16.57.15", []byte("from A's pod"))
			p.devA.Inject(own)
			if got := receive(t, p.devB.Written()); !bytes.Equal(got, own) {
				t.Fatalf("B's TUN got % x, want A's packet", got)
			}
			for _, src := range []string{"172.16.3.3", "10.9.9.9"} {
				spoofed := ipv4UDP(t, src, "172.16.57.15", []byte("spoofed"))
				// A's router routes by destination: it carries it, as a
				// node would that forwards what its kernel hands it.
				p.devA.Inject(spoofed)
				if on {
					expectNothing(t, p.devB.Written())
				} else if got := receive(t, p.devB.Written()); !bytes.Equal(got, spoofed) {
					t.Fatalf("check off: B's TUN got % x, want the packet from %s", got, src)
				}
			}
			want := uint64(0)
			if on {
				want = 2
			}
			if got := p.fwdB.ForeignSource.Load(); got != want {
				t.Errorf("decap-foreign-source = %d, want %d (%v)", got, want, p.fwdB.Snapshot())
			}
			if got := p.fwdB.Snapshot()["decap-foreign-source"]; got != want {
				t.Errorf("snapshot decap-foreign-source = %d, want %d", got, want)
			}
		})
	}
}

func TestForwarderDropsAndCounts(t *testing.T) {
	p := newPair(t, 8)
	wait := func(what string, f func() uint64) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for f() == 0 {
			if time.Now().After(deadline) {
				t.Fatalf("%s was never counted; A %v, B %v", what, p.fwdA.Snapshot(), p.fwdB.Snapshot())
			}
			time.Sleep(5 * time.Millisecond)
		}
	}

	// No lease covers 172.16.3.3.
	p.devA.Inject(ipv4UDP(t, "172.16.99.8", "172.16.3.3", []byte("x")))
	wait("no-route", p.fwdA.NoRoute.Load)
	// Not an IP packet at all.
	p.devA.Inject([]byte{0x00, 0x01, 0x02})
	wait("encap unknown-ethertype", p.fwdA.Encap[encap.UnknownEtherType].Load)

	// A stranger sends B a well-formed VXLAN datagram.
	stranger := p.net.Listen(netip.MustParseAddrPort("10.0.0.66:8472"), 1)
	defer stranger.Close()
	h, _ := encap.NewHeader(1, macC, macB)
	frame := append(h[:], ipv4UDP(t, "172.16.3.3", "172.16.57.15", []byte("x"))...)
	frame[8+12], frame[8+13] = 0x08, 0x00
	if _, err := stranger.Write([][]byte{frame}, []netip.AddrPort{p.addrB}); err != nil {
		t.Fatal(err)
	}
	wait("unknown-sender", p.fwdB.UnknownSender.Load)

	// A known sender with the wrong VNI.
	ulA2 := p.net.Listen(netip.MustParseAddrPort("10.0.0.1:9999"), 1) // same IP as A: known
	defer ulA2.Close()
	bad, _ := encap.NewHeader(2, macA, macB)
	frame = append(bad[:], ipv4UDP(t, "172.16.99.8", "172.16.57.15", []byte("x"))...)
	if _, err := ulA2.Write([][]byte{frame}, []netip.AddrPort{p.addrB}); err != nil {
		t.Fatal(err)
	}
	wait("decap foreign-vni", p.fwdB.Decap[encap.ForeignVNI].Load)
	expectNothing(t, p.devB.Written())

	// The loops went on: a good packet still crosses.
	good := ipv4UDP(t, "172.16.99.8", "172.16.57.15", []byte("still here"))
	p.devA.Inject(good)
	if got := receive(t, p.devB.Written()); !bytes.Equal(got, good) {
		t.Fatal("good packet after drops did not cross intact")
	}

	// A removed peer's route goes away.
	p.tableA.Delete(netip.MustParsePrefix("172.16.57.0/24"))
	before := p.fwdA.NoRoute.Load()
	p.devA.Inject(good)
	wait("no-route after delete", func() uint64 { return p.fwdA.NoRoute.Load() - before })
	expectNothing(t, p.devB.Written())
}

// TestBatchesDoNotAllocate checks the per-packet work of both loops.
func TestBatchesDoNotAllocate(t *testing.T) {
	tb := mustTable(t)
	tb.Set(netip.MustParsePrefix("172.16.57.0/24"), netip.MustParseAddrPort("10.0.0.2:8472"), macB)
	tb.Set(netip.MustParsePrefix("172.16.99.0/24"), netip.MustParseAddrPort("10.0.0.1:8472"), macA)
	dec, _ := encap.NewDecoder(1, macB)
	f := NewForwarder(nil, nil, tb, dec, nil)
	f.CheckSources(true) // the node's default
	const batch = 64
	pkt := ipv4UDP(t, "172.16.99.8", "172.16.57.15", make([]byte, 1400))
	bufs, sizes, from := make([][]byte, batch), make([]int, batch), make([]netip.AddrPort, batch)
	for i := range bufs {
		bufs[i] = make([]byte, Headroom+len(pkt))
		sizes[i] = len(pkt)
		from[i] = netip.MustParseAddrPort("10.0.0.1:8472")
	}
	out := make([][]byte, 0, batch)
	to := make([]netip.AddrPort, 0, batch)
	flows := make([]uint32, 0, batch) // flow entropy's hashes, as with a source pool
	run := func() {
		for i := range bufs {
			copy(bufs[i][Headroom:], pkt)
		}
		out, to, flows, _ = f.encapBatch(bufs, sizes, out[:0], to[:0], flows[:0], nil)
		for i := range out {
			sizes[i] = len(out[i])
		}
		out = f.decapBatch(bufs, sizes, from, out[:0])
		for i := range sizes {
			sizes[i] = len(pkt)
		}
	}
	run()
	if len(out) != batch {
		t.Fatalf("%d of %d packets survived encap+decap: %v", len(out), batch, f.Snapshot())
	}
	if n := testing.AllocsPerRun(100, run); n != 0 {
		t.Errorf("encap+decap of a batch allocates %.1f times, want 0", n)
	}
}

// BenchmarkForwarderBatch measures the per-packet work of both loops
// (lookup, encap in place, sender check, decap) at several batch sizes,
// without I/O.
func BenchmarkForwarderBatch(b *testing.B) {
	for _, batch := range []int{1, 32, 128} {
		b.Run(fmt.Sprintf("batch=%d", batch), func(b *testing.B) {
			tb := mustTable(b)
			tb.Set(netip.MustParsePrefix("172.16.57.0/24"), netip.MustParseAddrPort("10.0.0.2:8472"), macB)
			tb.Set(netip.MustParsePrefix("172.16.99.0/24"), netip.MustParseAddrPort("10.0.0.1:8472"), macA)
			dec, _ := encap.NewDecoder(1, macB)
			f := NewForwarder(nil, nil, tb, dec, nil)
			pkt := ipv4UDP(b, "172.16.99.8", "172.16.57.15", make([]byte, 1400))
			bufs, sizes, from := make([][]byte, batch), make([]int, batch), make([]netip.AddrPort, batch)
			for i := range bufs {
				bufs[i] = make([]byte, Headroom+len(pkt))
				copy(bufs[i][Headroom:], pkt)
				from[i] = netip.MustParseAddrPort("10.0.0.1:8472")
			}
			out := make([][]byte, 0, batch)
			to := make([]netip.AddrPort, 0, batch)
			b.SetBytes(int64(batch * len(pkt)))
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				for j := range sizes {
					sizes[j] = len(pkt)
				}
				out, to, _, _ = f.encapBatch(bufs, sizes, out[:0], to[:0], nil, nil)
				for j := range out {
					sizes[j] = len(out[j])
				}
				out = f.decapBatch(bufs, sizes, from, out[:0])
				if len(out) != batch {
					b.Fatal("packets dropped")
				}
			}
		})
	}
}

// recordingTap keeps copies of what it is shown.
type recordingTap struct {
	mu             sync.Mutex
	sent, received [][]byte
	to, from       []netip.AddrPort
}

func (r *recordingTap) Sent(frame []byte, to netip.AddrPort) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.sent = append(r.sent, bytes.Clone(frame))
	r.to = append(r.to, to)
}

func (r *recordingTap) Received(frame []byte, from netip.AddrPort) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.received = append(r.received, bytes.Clone(frame))
	r.from = append(r.from, from)
}

func TestTapSeesWhatCrosses(t *testing.T) {
	p := newPair(t, 8)
	tapA, tapB := &recordingTap{}, &recordingTap{}
	p.fwdA.SetTap(tapA)
	p.fwdB.SetTap(tapB)
	pkt := ipv4UDP(t, "172.16.99.8", "172.16.57.15", []byte("captured"))
	p.devA.Inject(pkt)
	receive(t, p.devB.Written())

	tapA.mu.Lock()
	tapB.mu.Lock()
	if len(tapA.sent) != 1 || len(tapB.received) != 1 {
		t.Fatalf("A sent %d, B received %d; want 1 and 1", len(tapA.sent), len(tapB.received))
	}
	if !bytes.Equal(tapA.sent[0], tapB.received[0]) || !bytes.Equal(tapA.sent[0][encap.HeaderLen:], pkt) {
		t.Errorf("tapped frames differ:\nA % x\nB % x", tapA.sent[0], tapB.received[0])
	}
	if tapA.to[0] != p.addrB || tapB.from[0] != p.addrA {
		t.Errorf("addresses: to %v from %v, want %v and %v", tapA.to[0], tapB.from[0], p.addrB, p.addrA)
	}
	tapA.mu.Unlock()
	tapB.mu.Unlock()

	// Without a tap nothing more is recorded.
	p.fwdA.SetTap(nil)
	p.devA.Inject(pkt)
	receive(t, p.devB.Written())
	tapA.mu.Lock()
	defer tapA.mu.Unlock()
	if len(tapA.sent) != 1 {
		t.Errorf("A's removed tap saw %d frames", len(tapA.sent))
	}
}

// BenchmarkForwarderOverFakes runs both forwarders' loops for real, over
// the in-memory TUN and UDP fakes: inject a batch into A's device, take it
// out of B's. The fakes recycle their buffers (Release), so allocations
// counted are the forwarders'.
func BenchmarkForwarderOverFakes(b *testing.B) {
	for _, batch := range []int{1, 32, 128} {
		b.Run(fmt.Sprintf("batch=%d", batch), func(b *testing.B) {
			p := newPair(b, batch)
			pkt := ipv4UDP(b, "172.16.99.8", "172.16.57.15", make([]byte, 1400))
			// Warm up: fill the fakes' free lists.
			for i := 0; i < 2*batch; i++ {
				p.devA.Inject(pkt)
			}
			for i := 0; i < 2*batch; i++ {
				p.devB.Release(<-p.devB.Written())
			}
			b.SetBytes(int64(batch * len(pkt)))
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				for j := 0; j < batch; j++ {
					p.devA.Inject(pkt)
				}
				for j := 0; j < batch; j++ {
					p.devB.Release(<-p.devB.Written())
				}
			}
			b.StopTimer()
			if d := p.fwdA.Drops() + p.fwdB.Drops(); d != 0 {
				b.Fatalf("%d drops", d)
			}
		})
	}
}

// TestBatchLooksUpEachDestination checks that the lookups kept across a
// batch (encapBatch's last route, decapBatch's last sender) never carry a
// decision over to a packet it does not fit: destinations and senders
// change from packet to packet here.
func TestBatchLooksUpEachDestination(t *testing.T) {
	tb := mustTable(t)
	addrA := netip.MustParseAddrPort("10.0.0.1:8472")
	addrB := netip.MustParseAddrPort("10.0.0.2:8472")
	addrC := netip.MustParseAddrPort("10.0.0.3:8472")
	tb.Set(netip.MustParsePrefix("172.16.57.0/24"), addrB, macB)
	tb.Set(netip.MustParsePrefix("172.16.58.0/24"), addrC, macC)
	tb.Set(netip.MustParsePrefix("172.16.99.0/24"), addrA, macA)
	dec, _ := encap.NewDecoder(1, macB)
	f := NewForwarder(nil, nil, tb, dec, nil)

	dsts := []string{"172.16.57.15", "172.16.57.16", "172.16.58.7", "172.16.3.3", "172.16.57.15", "172.16.58.7"}
	want := []netip.AddrPort{addrB, addrB, addrC, addrB, addrC} // 172.16.3.3 has no route
	bufs, sizes := make([][]byte, len(dsts)), make([]int, len(dsts))
	for i, d := range dsts {
		pkt := ipv4UDP(t, "172.16.99.8", d, []byte("x"))
		bufs[i] = append(make([]byte, Headroom), pkt...)
		sizes[i] = len(pkt)
	}
	out, to, _, _ := f.encapBatch(bufs, sizes, nil, nil, nil, nil)
	if !slices.Equal(to, want) {
		t.Errorf("destinations %v, want %v", to, want)
	}
	if n := f.NoRoute.Load(); n != 1 {
		t.Errorf("no-route counted %d times, want 1", n)
	}

	// The frames come back as if from A, a stranger, A, C and the stranger.
	stranger := netip.MustParseAddrPort("10.0.0.66:8472")
	froms := []netip.AddrPort{addrA, stranger, addrA, addrC, stranger}
	sizes = sizes[:len(out)]
	for i := range out {
		sizes[i] = len(out[i])
	}
	got := f.decapBatch(out, sizes, froms, nil)
	// out[2] and out[4] are for C's VTEP MAC, which B's decoder refuses
	// (out[4] does not get that far); out[0] and out[3] pass.
	if len(got) != 2 {
		t.Errorf("%d datagrams accepted, want 2 (from A and from C, to B's MAC)", len(got))
	}
	if n := f.UnknownSender.Load(); n != 2 {
		t.Errorf("unknown sender counted %d times, want 2", n)
	}
	if n := f.Decap[encap.ForeignMAC].Load(); n != 1 {
		t.Errorf("foreign MAC counted %d times, want 1 (the frame for C, from A)", n)
	}
}

// TestRunFailsWhenDeviceGoes: a device closed (or removed) under a running
// forwarder is an error, so the node exits non-zero and gets restarted,
// instead of running on with nothing to forward.
func TestRunFailsWhenDeviceGoes(t *testing.T) {
	netw := tunneltest.NewNetwork()
	dev := tunneltest.NewDevice("vxrX", 1450, 4)
	ul := netw.Listen(netip.MustParseAddrPort("10.0.0.1:8472"), 4)
	tb := mustTable(t)
	dec, _ := encap.NewDecoder(1, macA)
	f := NewForwarder(dev, ul, tb, dec, nil)
	errc := make(chan error, 1)
	go func() { errc <- f.Run(context.Background()) }()
	time.Sleep(20 * time.Millisecond)
	dev.Close()
	select {
	case err := <-errc:
		if !errors.Is(err, errGone) {
			t.Fatalf("Run = %v, want an error saying the device is gone", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return after its device was closed")
	}
}

// droppingDevice is a fake TUN device that also drops packets on read and
// counts them, as the offload device does (tunnel.DropCounter).
type droppingDevice struct {
	*tunneltest.Device
	dropped atomic.Uint64
}

func (d *droppingDevice) Dropped() uint64 { return d.dropped.Load() }

// TestForwarderCountsTUNDrops: what the device drops on read shows in the
// forwarder's counters (and so in /metrics), as it happens.
func TestForwarderCountsTUNDrops(t *testing.T) {
	dev := &droppingDevice{Device: tunneltest.NewDevice("vxrD", 1450, 8)}
	ul := tunneltest.NewNetwork().Listen(netip.MustParseAddrPort("10.0.0.1:8472"), 8)
	table, _ := NewTable(1, macA)
	dec, _ := encap.NewDecoder(1, macA)
	f := NewForwarder(dev, ul, table, dec, nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- f.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})

	for _, total := range []uint64{3, 5} {
		dev.dropped.Store(total)
		// A packet for nobody makes the loop's Read return.
		dev.Inject(ipv4UDP(t, "172.16.99.2", "192.0.2.1", []byte("x")))
		deadline := time.Now().Add(5 * time.Second)
		for f.TUNDropped.Load() != total && time.Now().Before(deadline) {
			time.Sleep(time.Millisecond)
		}
		if got := f.Snapshot()["tun-dropped"]; got != total {
			t.Fatalf("tun-dropped = %d, want %d (the device's count)", got, total)
		}
	}
	if d := f.Drops(); d < 5 {
		t.Errorf("Drops() = %d, want the 5 the device dropped counted in", d)
	}
}
