package tunnel

import (
	"bytes"
	"cmp"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
	wgtun "golang.zx2c4.com/wireguard/tun"
)

func TestCsumCopyMatchesCopyAndCsumAdd(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	src := make([]byte, 70000)
	for i := range src {
		src[i] = byte(rng.Uint32())
	}
	dst := make([]byte, len(src)+16)
	lengths := []int{0, 1, 2, 7, 8, 9, 63, 64, 65, 71, 127, 128, 1448, 65535, 69990}
	for range 500 {
		lengths = append(lengths, rng.IntN(4000))
	}
	for _, n := range lengths {
		for _, align := range [][2]int{{0, 0}, {1, 0}, {0, 3}, {5, 7}, {rng.IntN(8), rng.IntN(8)}} {
			sa, da := align[0], align[1]
			if sa+n > len(src) {
				continue
			}
			for i := range dst {
				dst[i] = 0xa5
			}
			init := rng.Uint64()
			if rng.IntN(3) == 0 {
				init = ^uint64(0) // all ones: the end-around carry at its limit
			}
			s := src[sa : sa+n]
			got := csumCopy(dst[da:], s, init)
			if want := csumAdd(init, s); csumFold(got) != csumFold(want) {
				t.Fatalf("len %d align %d/%d: csumCopy sums to %#04x, csumAdd to %#04x", n, sa, da, csumFold(got), csumFold(want))
			}
			if !bytes.Equal(dst[da:da+n], s) {
				t.Fatalf("len %d align %d/%d: copy differs", n, sa, da)
			}
			for i, b := range dst {
				if (i < da || i >= da+n) && b != 0xa5 {
					t.Fatalf("len %d align %d/%d: byte %d outside the copy changed", n, sa, da, i)
				}
			}
		}
	}
}

// superSpec is a super-packet as the kernel hands it to an offload TUN
// device, for the tests to build with gopacket, and its segments as
// tcp_gso_segment and __udp_gso_segment would cut them.
type superSpec struct {
	v6, udp bool
	// opts: IPv4 with a router alert option, IPv6 with a hop-by-hop
	// header (both with a payload length that counts them).
	opts       bool
	psh, fin   bool
	cwr, ecn   bool // CWR, and the virtio-net header's GSO_ECN bit
	noDF       bool
	id         uint16
	gso, pay   int
	fullHdrLen bool   // hdr_len = the whole packet, as for a forwarded one
	window     uint16 // TCP window; 0 means 512
}

// zeroSum returns c with the TCP window chosen so that the first
// segment's checksum comes out 0x0000, which tcp_gso_segment sends as it
// is (UDP would send 0xffff).
func (c superSpec) zeroSum(t testing.TB) superSpec {
	c.window = 0xffff // a stand-in: the window's share is taken out below
	seg := c.segments(t)[0]
	l4, proto, csumOff, _ := l4Offset(seg)
	binary.BigEndian.PutUint16(seg[l4+csumOff:], 0)
	binary.BigEndian.PutUint16(seg[l4+14:], 0)
	// The window w must make the folded sum 0xffff: w = 0xffff - sum, in
	// ones' complement.
	c.window = 0xffff - refFold(refSum(refPseudo(seg, proto, len(seg)-l4))+refSum(seg[l4:]))
	if c.window == 0 {
		c.window = 0xffff // the same number; 0 would mean 512
	}
	return c
}

const superSeq = 0xfffff000 // wraps within a 64 KB super-packet

// layers are the super-packet's (seg < 0) or segment seg's layers, with
// payload pay.
func (c superSpec) layers(seg int, pay []byte, last bool) []gopacket.SerializableLayer {
	proto := layers.IPProtocolTCP
	if c.udp {
		proto = layers.IPProtocolUDP
	}
	src, dst := groPeer4, groSelf4
	if c.v6 {
		src, dst = groPeer6, groSelf6
	}
	var ls []gopacket.SerializableLayer
	var netLayer gopacket.NetworkLayer
	if !c.v6 {
		ip := &layers.IPv4{Version: 4, TTL: 64, TOS: 0x10, Protocol: proto, Id: c.id + uint16(max(seg, 0)),
			Flags: layers.IPv4DontFragment, SrcIP: src.AsSlice(), DstIP: dst.AsSlice()}
		if c.noDF {
			ip.Flags = 0
		}
		if c.opts {
			ip.Options = []layers.IPv4Option{{OptionType: 148, OptionLength: 4, OptionData: []byte{0, 0}}}
		}
		ls, netLayer = append(ls, ip), ip
	} else {
		ip := &layers.IPv6{Version: 6, HopLimit: 64, NextHeader: proto, FlowLabel: 0x54321,
			SrcIP: src.AsSlice(), DstIP: dst.AsSlice()}
		ls, netLayer = append(ls, ip), ip
		if c.opts {
			ip.NextHeader = layers.IPProtocolIPv6HopByHop
			// Next header, length 0 (8 bytes), a PadN option of 4 bytes.
			ls = append(ls, gopacket.Payload{byte(proto), 0, 1, 4, 0, 0, 0, 0})
		}
	}
	if c.udp {
		u := &layers.UDP{SrcPort: 5555, DstPort: 7777}
		u.SetNetworkLayerForChecksum(netLayer)
		ls = append(ls, u)
	} else {
		tcp := &layers.TCP{SrcPort: 5555, DstPort: 80, Seq: superSeq + uint32(max(seg, 0)*c.gso), Ack: 777,
			ACK: true, Window: cmp.Or(c.window, 512), Options: []layers.TCPOption{
				{OptionType: layers.TCPOptionKindNop}, {OptionType: layers.TCPOptionKindNop},
				{OptionType: layers.TCPOptionKindTimestamps, OptionLength: 10, OptionData: []byte{0, 0, 1, 0, 0, 0, 2, 0}},
			}}
		tcp.PSH, tcp.FIN, tcp.CWR = c.psh && last, c.fin && last, c.cwr && seg <= 0
		tcp.SetNetworkLayerForChecksum(netLayer)
		ls = append(ls, tcp)
	}
	return append(ls, gopacket.Payload(pay))
}

// payload is the super-packet's payload: bytes that say where they are.
func (c superSpec) payload() []byte {
	p := make([]byte, c.pay)
	for i := range p {
		p[i] = byte(i*7 + i>>8)
	}
	return p
}

// frame is what read(2) gives for the super-packet: virtio-net header and
// packet, whose checksum field holds the pseudo-header sum (NEEDS_CSUM).
func (c superSpec) frame(t testing.TB) []byte {
	t.Helper()
	pkt := serialize(t, c.layers(-1, c.payload(), true)...)
	l4, proto, csumOff, hl := l4Offset(pkt)
	binary.BigEndian.PutUint16(pkt[l4+csumOff:], refFold(refSum(refPseudo(pkt, proto, len(pkt)-l4))))
	h := make([]byte, VirtioNetHdrLen)
	h[0], h[1] = virtioNeedsCsum, virtioGSOUDPL4
	if !c.udp {
		h[1] = virtioGSOTCPv4
		if c.v6 {
			h[1] = virtioGSOTCPv6
		}
		if c.ecn {
			h[1] |= virtioGSOECN
		}
	}
	if c.fullHdrLen {
		hl = len(pkt)
	}
	binary.NativeEndian.PutUint16(h[2:], uint16(hl))
	binary.NativeEndian.PutUint16(h[4:], uint16(c.gso))
	binary.NativeEndian.PutUint16(h[6:], uint16(l4))
	binary.NativeEndian.PutUint16(h[8:], uint16(csumOff))
	return append(h, pkt...)
}

// segments are the super-packet cut as the kernel would, built one by one
// with gopacket.
func (c superSpec) segments(t testing.TB) [][]byte {
	var segs [][]byte
	pay := c.payload()
	for k := 0; k*c.gso < len(pay); k++ {
		end := min((k+1)*c.gso, len(pay))
		segs = append(segs, serialize(t, c.layers(k, pay[k*c.gso:end], end == len(pay))...))
	}
	return segs
}

// l4Offset finds the TCP or UDP header of an IPv4 or IPv6 packet (after
// IPv4 options and IPv6 hop-by-hop or destination options), its protocol,
// the offset of its checksum and the length of all the headers. It knows
// nothing of split_linux.go, so the tests can check it.
// hl is -1 where it cannot tell.
func l4Offset(p []byte) (l4 int, proto uint8, csumOff, hl int) {
	switch {
	case len(p) >= 20 && p[0]>>4 == 4:
		l4, proto = int(p[0]&0xf)*4, p[9]
	case len(p) >= 40 && p[0]>>4 == 6:
		l4, proto = 40, p[6]
		for (proto == 0 || proto == 60) && l4+8 <= len(p) {
			proto, l4 = p[l4], l4+(int(p[l4+1])+1)*8
		}
	default:
		return 0, 0, 0, -1
	}
	switch {
	case proto == 17:
		return l4, proto, 6, l4 + 8
	case proto == 6 && l4+13 <= len(p):
		return l4, proto, 16, l4 + int(p[l4+12]>>4)*4
	}
	return l4, proto, 0, -1
}

// segmentOK checks a segment the plain way: IP length, IPv4 header
// checksum, TCP or UDP length and checksum.
func segmentOK(p []byte) error {
	l4, proto, _, hl := l4Offset(p)
	if hl < 0 || hl > len(p) {
		return fmt.Errorf("headers of %d bytes in a %d-byte packet", hl, len(p))
	}
	if p[0]>>4 == 4 {
		if int(binary.BigEndian.Uint16(p[2:])) != len(p) || refFold(refSum(p[:l4])) != 0xffff {
			return errors.New("bad IPv4 length or header checksum")
		}
	} else if int(binary.BigEndian.Uint16(p[4:]))+40 != len(p) {
		return errors.New("bad IPv6 payload length")
	}
	if proto == 17 && int(binary.BigEndian.Uint16(p[l4+4:])) != len(p)-l4 {
		return errors.New("bad UDP length")
	}
	if refFold(refSum(refPseudo(p, proto, len(p)-l4))+refSum(p[l4:])) != 0xffff {
		return errors.New("bad L4 checksum")
	}
	return nil
}

// sameSegment compares a segment with the expected one byte for byte, but
// for a UDP checksum, where 0 and 0xffff are the same number (the kernel
// sends 0xffff, the reference may say 0). A TCP sum of 0 stays 0, as
// tcp_gso_segment leaves it.
func sameSegment(got, want []byte) bool {
	if len(got) != len(want) {
		return false
	}
	l4, _, off, _ := l4Offset(want)
	if off == 16 {
		return bytes.Equal(got, want)
	}
	g, w := slices.Clone(got), slices.Clone(want)
	for _, p := range [][]byte{g, w} {
		if binary.BigEndian.Uint16(p[l4+off:]) == 0 {
			p[l4+off], p[l4+off+1] = 0xff, 0xff
		}
	}
	return bytes.Equal(g, w)
}

// junk is what the headroom in front of each test buffer holds, to show
// that nothing touches it.
var junk = bytes.Repeat([]byte{0xab}, headroom)

// newBufs is a batch of n buffers of size bytes past headroom.
func newBufs(n, size int) ([][]byte, []int) {
	bufs := make([][]byte, n)
	for i := range bufs {
		bufs[i] = append(slices.Clone(junk), make([]byte, size)...)
	}
	return bufs, make([]int, n)
}

// cut hands frame to r as if read(2) had given it, then asks for the rest
// until there is none, len(bufs) packets at a time, and calls each with
// every packet (valid until each returns). It fails the test if a packet
// does not lie within its buffer or the headroom in front changed.
func cut(t testing.TB, r *tunReader, frame []byte, bufs [][]byte, sizes []int, each func(pkt []byte)) {
	t.Helper()
	copy(r.buf[:], frame)
	collect := func(n int) {
		for i := range n {
			if sizes[i] > len(bufs[i])-headroom {
				t.Fatalf("packet %d: size %d beyond its %d-byte buffer", i, sizes[i], len(bufs[i])-headroom)
			}
			if !bytes.Equal(bufs[i][:headroom], junk) {
				t.Fatalf("packet %d: headroom changed", i)
			}
			each(bufs[i][headroom : headroom+sizes[i]])
		}
	}
	collect(r.handle(len(frame), bufs, sizes, headroom))
	for calls := 0; r.sp.left(); calls++ {
		if calls > 70000 {
			t.Fatal("split never ends")
		}
		collect(r.split(bufs, sizes, headroom))
	}
}

// splitAll is cut into nbufs new buffers of size bytes; it returns every
// packet it got.
func splitAll(t testing.TB, r *tunReader, frame []byte, nbufs, size int) [][]byte {
	t.Helper()
	bufs, sizes := newBufs(nbufs, size)
	var out [][]byte
	cut(t, r, frame, bufs, sizes, func(p []byte) { out = append(out, slices.Clone(p)) })
	return out
}

// TestSplitMatchesKernel cuts super-packets of every kind and checks each
// segment byte for byte against one built on its own with gopacket, as
// the kernel's tcp_gso_segment or __udp_gso_segment would make it, decodes
// it with gopacket, checks its checksums the plain way, and checks that
// the payloads add up to the super-packet's.
func TestSplitMatchesKernel(t *testing.T) {
	for _, c := range []struct {
		name string
		spec superSpec
	}{
		{"tcp4 64KB", superSpec{gso: 1448, pay: 65535 - 52, psh: true, id: 100}},
		{"tcp4 ID wraps, no DF", superSpec{gso: 1448, pay: 20000, id: 0xfffe, noDF: true}},
		{"tcp4 options FIN CWR", superSpec{opts: true, gso: 1000, pay: 10001, psh: true, fin: true, cwr: true}},
		{"tcp4 GSO_ECN", superSpec{gso: 1400, pay: 7000, cwr: true, ecn: true}},
		{"tcp4 odd gso", superSpec{gso: 999, pay: 9999, psh: true}},
		{"tcp4 one segment", superSpec{gso: 1448, pay: 1000, psh: true, fin: true, cwr: true}},
		{"tcp4 hdr_len whole packet", superSpec{gso: 1448, pay: 4000, fullHdrLen: true}},
		{"tcp4 small MSS 300 segments", superSpec{gso: 200, pay: 60000}},
		{"tcp6 64KB", superSpec{v6: true, gso: 1428, pay: 65535 - 32 - 8, psh: true}},
		{"tcp6 hop-by-hop FIN", superSpec{v6: true, opts: true, gso: 1300, pay: 5001, fin: true, cwr: true}},
		{"tcp4 checksum 0", superSpec{gso: 1448, pay: 3000}.zeroSum(t)},
		{"tcp6 checksum 0", superSpec{v6: true, gso: 1428, pay: 3000}.zeroSum(t)},
		{"udp4", superSpec{udp: true, gso: 1400, pay: 65000, id: 7}},
		{"udp4 options", superSpec{udp: true, opts: true, gso: 1000, pay: 3333}},
		{"udp6 odd last", superSpec{v6: true, udp: true, gso: 1200, pay: 30001}},
		{"udp6 hop-by-hop", superSpec{v6: true, udp: true, opts: true, gso: 1201, pay: 12345}},
	} {
		t.Run(c.name, func(t *testing.T) {
			frame := c.spec.frame(t)
			want := c.spec.segments(t)
			if strings.HasSuffix(c.name, "checksum 0") {
				l4, _, off, _ := l4Offset(want[0])
				if got := binary.BigEndian.Uint16(want[0][l4+off:]); got != 0 {
					t.Fatalf("the case is built wrong: first segment's checksum %#04x, want 0", got)
				}
			}
			for _, nbufs := range []int{MaxBatch, 7, 1} {
				r := newTUNReader("test", nil)
				got := splitAll(t, r, frame, nbufs, 1500)
				if len(got) != len(want) {
					t.Fatalf("%d buffers: %d segments, want %d", nbufs, len(got), len(want))
				}
				var pay []byte
				for i, g := range got {
					if !sameSegment(g, want[i]) {
						t.Fatalf("%d buffers: segment %d\n got % x\nwant % x", nbufs, i, g[:min(len(g), 80)], want[i][:min(len(want[i]), 80)])
					}
					if err := segmentOK(g); err != nil {
						t.Fatalf("segment %d: %v", i, err)
					}
					first := layers.LayerTypeIPv4
					if c.spec.v6 {
						first = layers.LayerTypeIPv6
					}
					p := gopacket.NewPacket(g, first, gopacket.Default)
					if el := p.ErrorLayer(); el != nil {
						t.Fatalf("segment %d: gopacket: %v", i, el.Error())
					}
					if p.TransportLayer() == nil {
						t.Fatalf("segment %d: gopacket finds no TCP or UDP", i)
					}
					pay = append(pay, p.TransportLayer().LayerPayload()...)
				}
				if !bytes.Equal(pay, c.spec.payload()) {
					t.Fatalf("the segments' payloads are not the super-packet's")
				}
				if r.superPackets.Load() != 1 || r.segments.Load() != uint64(len(want)) || r.malformed.Load() != 0 || r.tooBig.Load() != 0 {
					t.Errorf("counters: %d super-packets, %d segments, %d malformed, %d too big; want 1, %d, 0, 0",
						r.superPackets.Load(), r.segments.Load(), r.malformed.Load(), r.tooBig.Load(), len(want))
				}
			}
			// Left pending, for a peer that takes them so: the same
			// segments, but each checksum field the pseudo-header sum of
			// its own segment, as the kernel's segmentation leaves it for
			// a device that checksums.
			r := newTUNReader("test", nil)
			r.partial.Store(&partialFunc{func(netip.Addr) bool { return true }})
			got := splitAll(t, r, frame, 7, 1500)
			if len(got) != len(want) {
				t.Fatalf("partial: %d segments, want %d", len(got), len(want))
			}
			for i, g := range got {
				l4, _, off, _ := l4Offset(g)
				if !pendingOK(g) {
					t.Fatalf("partial: segment %d: checksum field %#04x is not its pseudo-header sum", i, binary.BigEndian.Uint16(g[l4+off:]))
				}
				w := slices.Clone(want[i])
				copy(w[l4+off:l4+off+2], g[l4+off:l4+off+2])
				if !bytes.Equal(g, w) {
					t.Fatalf("partial: segment %d differs from the kernel's but for the checksum", i)
				}
			}
		})
	}
}

// pendingOK says whether p's TCP or UDP checksum field holds the
// pseudo-header sum of p's own length: pending.
func pendingOK(p []byte) bool {
	l4, proto, off, _ := l4Offset(p)
	return binary.BigEndian.Uint16(p[l4+off:]) == refFold(refSum(refPseudo(p, proto, len(p)-l4)))
}

// TestSplitPlainPackets reads packets without GSO: copied as they are,
// or with their checksum finished where the kernel left it (NEEDS_CSUM),
// also when the packet is cut short by a small buffer.
func TestSplitPlainPackets(t *testing.T) {
	spec := superSpec{gso: 1448, pay: 1000, psh: true}
	full := serialize(t, spec.layers(0, spec.payload(), true)...)
	partial := slices.Clone(full)
	binary.BigEndian.PutUint16(partial[36:], refFold(refSum(refPseudo(partial, 6, len(partial)-20))))
	hdr := func(flags byte, start, off int) []byte {
		h := make([]byte, VirtioNetHdrLen)
		h[0] = flags
		binary.NativeEndian.PutUint16(h[6:], uint16(start))
		binary.NativeEndian.PutUint16(h[8:], uint16(off))
		return h
	}
	r := newTUNReader("test", nil)
	if got := splitAll(t, r, append(hdr(0, 0, 0), partial...), 4, 1500); len(got) != 1 || !bytes.Equal(got[0], partial) {
		t.Errorf("plain packet not copied as it is")
	}
	got := splitAll(t, r, append(hdr(virtioNeedsCsum, 20, 16), partial...), 4, 1500)
	if len(got) != 1 || !sameSegment(got[0], full) || segmentOK(got[0]) != nil {
		t.Errorf("NEEDS_CSUM: checksum not finished:\n got % x\nwant % x", got[0][:40], full[:40])
	}
	got = splitAll(t, r, append(hdr(virtioNeedsCsum, 20, 16), partial...), 4, 600)
	if len(got) != 1 || !bytes.Equal(got[0], full[:600]) {
		t.Errorf("NEEDS_CSUM into a short buffer: not the first 600 bytes of the finished packet")
	}
	// To a destination that takes checksums pending: left so.
	dst := netip.AddrFrom4([4]byte(partial[16:20]))
	r.partial.Store(&partialFunc{func(a netip.Addr) bool { return a == dst }})
	if got := splitAll(t, r, append(hdr(virtioNeedsCsum, 20, 16), partial...), 4, 1500); len(got) != 1 || !bytes.Equal(got[0], partial) {
		t.Errorf("NEEDS_CSUM to a peer that takes it pending: not copied as it is")
	}
	r.partial.Store(&partialFunc{func(a netip.Addr) bool { return a != dst }})
	if got := splitAll(t, r, append(hdr(virtioNeedsCsum, 20, 16), partial...), 4, 1500); len(got) != 1 || !sameSegment(got[0], full) {
		t.Errorf("NEEDS_CSUM to a peer that does not take it pending: checksum not finished")
	}
	if r.superPackets.Load() != 0 || r.malformed.Load() != 0 {
		t.Errorf("%d super-packets, %d malformed; want none", r.superPackets.Load(), r.malformed.Load())
	}
}

// TestSplitDropsMalformed hands the reader packets that do not add up and
// wants each dropped and counted, never split or passed on.
func TestSplitDropsMalformed(t *testing.T) {
	tcp4 := superSpec{gso: 1000, pay: 5000}.frame(t)
	tcp6 := superSpec{v6: true, gso: 1000, pay: 5000}.frame(t)
	udp4 := superSpec{udp: true, gso: 1000, pay: 5000}.frame(t)
	const h = VirtioNetHdrLen
	mod := func(f []byte, fn func(f []byte)) []byte {
		f = slices.Clone(f)
		fn(f)
		return f
	}
	put16 := func(at int, v uint16) func([]byte) {
		return func(f []byte) { binary.NativeEndian.PutUint16(f[at:], v) }
	}
	be16 := func(at int, v uint16) func([]byte) {
		return func(f []byte) { binary.BigEndian.PutUint16(f[at:], v) }
	}
	for _, c := range []struct {
		name  string
		frame []byte
	}{
		{"empty", nil},
		{"header only", make([]byte, h)},
		{"gso_size 0", mod(tcp4, put16(4, 0))},
		{"hdr_len past the packet", mod(tcp4, put16(2, uint16(len(tcp4))))},
		{"csum_start not the TCP header", mod(tcp4, put16(6, 24))},
		{"csum_offset not TCP's", mod(tcp4, put16(8, 6))},
		{"UFO (GSO_UDP)", mod(udp4, func(f []byte) { f[1] = 3 })},
		{"unknown GSO type", mod(tcp4, func(f []byte) { f[1] = 9 })},
		{"UDP GSO with the ECN bit", mod(udp4, func(f []byte) { f[1] |= virtioGSOECN })},
		{"TCPV4 on IPv6", mod(tcp6, func(f []byte) { f[1] = virtioGSOTCPv4 })},
		{"TCPV6 on IPv4", mod(tcp4, func(f []byte) { f[1] = virtioGSOTCPv6 })},
		{"UDP_L4 on TCP", mod(tcp4, func(f []byte) { f[1] = virtioGSOUDPL4 })},
		{"IP version 5", mod(tcp4, func(f []byte) { f[h] = 0x55 })},
		{"IHL 4", mod(tcp4, func(f []byte) { f[h] = 0x44 })},
		{"IHL past the packet", mod(tcp4[:h+30], be16(h+2, 30))},
		{"IPv4 length short", mod(tcp4, be16(h+2, uint16(len(tcp4)-h-1)))},
		{"IPv4 fragment", mod(tcp4, be16(h+6, 0x2000))},
		{"IPv6 length long", mod(tcp6, be16(h+4, uint16(len(tcp6)-h-39)))},
		{"IPv6 routing header", mod(tcp6, func(f []byte) { f[h+6] = 43 })},
		{"truncated IPv4", tcp4[:h+19]},
		{"TCP data offset 4", mod(tcp4, func(f []byte) { f[h+32] = 0x40 })},
		{"TCP header past the packet", mod(tcp4[:h+60], func(f []byte) {
			binary.BigEndian.PutUint16(f[h+2:], 60)
			f[h+32] = 0xf0
		})},
		{"no payload", mod(tcp4[:h+52], be16(h+2, 52))},
		{"NEEDS_CSUM field past the end", append([]byte{virtioNeedsCsum, 0, 0, 0, 0, 0, 20, 0, 0xff, 0}, make([]byte, 40)...)},
	} {
		r := newTUNReader("test", nil)
		bufs, sizes := newBufs(MaxBatch, 1500)
		copy(r.buf[:], c.frame)
		if n := r.handle(len(c.frame), bufs, sizes, headroom); n != 0 || r.malformed.Load() != 1 || r.sp.left() {
			t.Errorf("%s: %d packets, %d counted malformed, more left %v; want it dropped and counted", c.name, n, r.malformed.Load(), r.sp.left())
		}
	}
	// A segment longer than its buffer is dropped and counted; the rest
	// go through.
	r := newTUNReader("test", nil)
	got := splitAll(t, r, superSpec{gso: 1000, pay: 4500}.frame(t), MaxBatch, 600)
	if len(got) != 1 || len(got[0]) != 52+500 || r.tooBig.Load() != 4 {
		t.Errorf("into 600-byte buffers: %d segments, %d too big; want the 500-byte last one, 4 too big", len(got), r.tooBig.Load())
	}
}

// FuzzSplit feeds arbitrary virtio-net headers and packets to the reader:
// it must never panic or write outside a buffer's packet, every segment it
// cuts must carry right lengths and checksums and the payload in order,
// and a plain packet must come out as it went in (with its checksum
// finished, for NEEDS_CSUM). With fix set, the IP length is made to match
// first, so mutations get past that check.
func FuzzSplit(f *testing.F) {
	for _, s := range []superSpec{
		{gso: 1448, pay: 5000, psh: true},
		{opts: true, gso: 100, pay: 1001, fin: true, cwr: true},
		{v6: true, gso: 500, pay: 2000},
		{v6: true, opts: true, gso: 333, pay: 1000},
		{udp: true, gso: 400, pay: 1201},
		{v6: true, udp: true, gso: 64, pay: 640},
	} {
		fr := s.frame(f)
		f.Add(fr[:VirtioNetHdrLen], fr[VirtioNetHdrLen:], false, uint8(0), false)
		f.Add(fr[:VirtioNetHdrLen], fr[VirtioNetHdrLen:], true, uint8(3), true)
	}
	f.Add([]byte{virtioNeedsCsum, 0, 0, 0, 0, 0, 20, 0, 16, 0}, make([]byte, 60), false, uint8(1), false)
	// One reader and two sets of buffers for every input: allocating
	// and clearing them each time costs more than the rest.
	r := newTUNReader("fuzz", nil)
	big, bigSizes := newBufs(9, 1500)
	small, smallSizes := newBufs(9, 300)
	f.Fuzz(func(t *testing.T, vnet, pkt []byte, fix bool, nbufs uint8, short bool) {
		if len(pkt) > readBufLen-VirtioNetHdrLen {
			return
		}
		h := make([]byte, VirtioNetHdrLen)
		copy(h, vnet)
		frame := append(h, pkt...)
		p := frame[VirtioNetHdrLen:]
		if fix && len(p) >= 40 {
			if p[0]>>4 == 4 && len(p) <= 65535 {
				binary.BigEndian.PutUint16(p[2:], uint16(len(p)))
			} else if p[0]>>4 == 6 {
				binary.BigEndian.PutUint16(p[4:], uint16(len(p)-40))
			}
		}
		k := int(nbufs%9) + 1
		bufs, sizes := big[:k], bigSizes[:k]
		if short {
			bufs, sizes = small[:k], smallSizes[:k]
		}
		r.sp = superPacket{}
		for _, c := range []*atomic.Uint64{&r.superPackets, &r.segments, &r.malformed, &r.tooBig} {
			c.Store(0)
		}

		var plain []byte
		count, payAt, payOK := 0, 0, true
		l4, hl := 0, -1
		cut(t, r, frame, bufs, sizes, func(g []byte) {
			count++
			if r.superPackets.Load() == 0 {
				plain = slices.Clone(g)
				return
			}
			if hl < 0 {
				l4, _, _, hl = l4Offset(p)
			}
			if err := segmentOK(g); err != nil {
				t.Fatalf("segment %d: %v", count-1, err)
			}
			// All but lengths, IPv4 ID and checksums as in the super-packet.
			same := bytes.Equal(g[6:8], p[6:8]) && bytes.Equal(g[12:l4], p[12:l4])
			if p[0]>>4 == 6 {
				same = bytes.Equal(g[:4], p[:4]) && bytes.Equal(g[6:l4], p[6:l4])
			}
			if !same {
				t.Fatalf("segment %d: IP header\n got % x\nwant % x", count-1, g[:l4], p[:l4])
			}
			n := len(g) - hl
			payOK = payOK && hl+payAt+n <= len(p) && bytes.Equal(g[hl:], p[hl+payAt:hl+payAt+n])
			payAt += n
		})
		switch {
		case r.malformed.Load() > 0:
			if count > 0 {
				t.Fatalf("dropped as malformed, yet %d packets came out", count)
			}
		case r.superPackets.Load() == 0:
			if count != 1 {
				t.Fatalf("a plain packet came out as %d", count)
			}
			want := slices.Clone(p)
			if frame[0]&virtioNeedsCsum != 0 {
				// The field held a partial sum (the pseudo-header's); in
				// its place goes the sum from csum_start on, inverted.
				start := int(binary.NativeEndian.Uint16(frame[6:]))
				at := start + int(binary.NativeEndian.Uint16(frame[8:]))
				c := ^refFold(refSum(p[start:]))
				if c == 0 {
					c = 0xffff
				}
				binary.BigEndian.PutUint16(want[at:], c)
			}
			if !bytes.Equal(plain, want[:len(plain)]) {
				t.Fatalf("plain packet\n got % x\nwant % x", plain, want[:len(plain)])
			}
		default:
			if r.tooBig.Load() == 0 && (!payOK || hl+payAt != len(p)) {
				t.Fatal("the segments' payloads are not the super-packet's")
			}
			if uint64(count) != r.segments.Load() {
				t.Fatalf("%d segments out, counter says %d", count, r.segments.Load())
			}
		}
	})
}

// wireguardTUN is wireguard-go's device on a duplicate of d's file
// descriptor, the same queue, to compare ours with. It asks for the same
// offloads.
func wireguardTUN(t testing.TB, d Device) wgtun.Device {
	t.Helper()
	var fd int
	var err error
	if cerr := offloadOf(t, d).rd.raw.Control(func(f uintptr) { fd, err = unix.FcntlInt(f, unix.F_DUPFD_CLOEXEC, 0) }); cerr != nil {
		t.Fatal(cerr)
	}
	if err != nil {
		t.Fatal(err)
	}
	wg, _, err := wgtun.CreateUnmonitoredTUNFromFD(fd)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { wg.Close() })
	return wg
}

// usoSender is a UDP socket in ns, from src, connected to dst, that sends
// each write as datagrams of size bytes in one UDP GSO packet
// (UDP_SEGMENT): the kernel hands it to a device with USO as one
// super-packet.
func usoSender(t testing.TB, ns netns.NsHandle, src netip.Addr, dst netip.AddrPort, size int) *net.UDPConn {
	t.Helper()
	var c *net.UDPConn
	var err error
	inNetns(t, ns, func() {
		c, err = net.DialUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(src, 0)), net.UDPAddrFromAddrPort(dst))
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	raw, err := c.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	if cerr := raw.Control(func(fd uintptr) { err = unix.SetsockoptInt(int(fd), unix.SOL_UDP, unix.UDP_SEGMENT, size) }); cerr != nil || err != nil {
		t.Skipf("no UDP_SEGMENT: %v %v", cerr, err)
	}
	return c
}

// readFrom reads d until a batch holds a UDP datagram to port, skipping
// what else the kernel sends (IPv6 router solicitations, MLD reports),
// and returns how many datagrams to port follow each other from the first,
// moved to the front of bufs; the device is closed (and the test fails)
// if none comes in 10 seconds.
func readFrom(t testing.TB, d Device, port uint16, bufs [][]byte, sizes []int) int {
	t.Helper()
	timer := time.AfterFunc(10*time.Second, func() { d.Close() })
	defer timer.Stop()
	for {
		n, err := d.Read(bufs, sizes, headroom)
		if err != nil {
			t.Fatalf("Read: %v", err)
		}
		for i := range n {
			if !toPort(bufs[i][headroom:headroom+sizes[i]], port) {
				continue
			}
			k := i + 1
			for k < n && toPort(bufs[k][headroom:headroom+sizes[k]], port) {
				k++
			}
			// Rotate the run to the front: three reversals, no allocation.
			for _, r := range [][2]int{{0, i}, {i, k}, {0, k}} {
				slices.Reverse(bufs[r[0]:r[1]])
				slices.Reverse(sizes[r[0]:r[1]])
			}
			return k - i
		}
	}
}

// readSegments reads until want datagrams to port have come, over as
// many Reads as that takes: the kernel's own packets (IPv6 router
// solicitations, MLD reports) can share a batch with a super-packet's
// segments, and a super-packet can be cut at the end of one batch and go
// on in the next. Its error says what came before Read failed. Read
// waits for the kernel, so the caller bounds the wait by closing the
// device when it is over.
func readSegments(read func([][]byte, []int, int) (int, error), port uint16, want int, bufs [][]byte, sizes []int) error {
	got, reads := 0, 0
	for got < want {
		n, err := read(bufs, sizes, headroom)
		if err != nil {
			return fmt.Errorf("%d of %d datagrams to port %d in %d reads, then: %w", got, want, port, reads, err)
		}
		reads++
		for i := range n {
			if toPort(bufs[i][headroom:headroom+sizes[i]], port) {
				got++
			}
		}
	}
	if got > want {
		return fmt.Errorf("%d datagrams to port %d in %d reads, want %d", got, port, reads, want)
	}
	return nil
}

// toPort says whether p is a UDP datagram to port.
func toPort(p []byte, port uint16) bool {
	l4, proto, _, hl := l4Offset(p)
	return proto == 17 && hl >= 0 && hl <= len(p) && binary.BigEndian.Uint16(p[l4+2:]) == port
}

// TestOffloadReadUSO sends UDP GSO packets through a real device and wants
// each read as one super-packet and cut into the datagrams sent, with
// right checksums; with too few buffers, the rest comes with the next
// Read.
func TestOffloadReadUSO(t *testing.T) {
	r := newOffloadRigAddrs(t, 1, netip.PrefixFrom(tunAddr, 24), netip.MustParsePrefix("fd99::1/64"))
	d := r.devs[0]
	if !offloadOf(t, d).gro.udp {
		t.Skip("kernel without USO: UDP is not segmented by the device")
	}
	rd := offloadOf(t, d).rd
	for _, c := range []struct {
		src, dst netip.Addr
	}{{tunAddr, peerAddr}, {netip.MustParseAddr("fd99::1"), netip.MustParseAddr("fd99::2")}} {
		t.Run(c.dst.String(), func(t *testing.T) {
			const size, total = 1200, 30500
			s := usoSender(t, r.ns, c.src, netip.AddrPortFrom(c.dst, 4321), size)
			data := make([]byte, total)
			rand.NewChaCha8([32]byte{2}).Read(data)
			for _, nbufs := range []int{MaxBatch, 4} {
				bufs, sizes := newBufs(nbufs, 1500)
				before := rd.superPackets.Load()
				if _, err := s.Write(data); err != nil {
					t.Fatal(err)
				}
				var got []byte
				segs := 0
				// A segment lost would leave the Reads below waiting:
				// close the device instead, and fail.
				timer := time.AfterFunc(10*time.Second, func() { d.Close() })
				defer timer.Stop()
				for n := readFrom(t, d, 4321, bufs, sizes); ; {
					for i := range n {
						p := bufs[i][headroom : headroom+sizes[i]]
						if !toPort(p, 4321) {
							continue // the kernel's own, read after the last segment
						}
						if err := segmentOK(p); err != nil {
							t.Fatalf("segment %d: %v", segs, err)
						}
						_, _, _, hl := l4Offset(p)
						got = append(got, p[hl:]...)
						segs++
					}
					if len(got) >= total {
						break
					}
					var err error
					if n, err = d.Read(bufs, sizes, headroom); err != nil {
						t.Fatalf("%d buffers: Read after %d of %d bytes: %v", nbufs, len(got), total, err)
					}
				}
				if !bytes.Equal(got, data) || segs != (total+size-1)/size {
					t.Fatalf("%d buffers: %d segments, %d bytes, intact %v; want %d segments, the %d bytes sent", nbufs, segs, len(got), bytes.Equal(got, data), (total+size-1)/size, total)
				}
				if d := rd.superPackets.Load() - before; d != 1 {
					t.Errorf("%d buffers: %d super-packets read, want 1", nbufs, d)
				}
			}
		})
	}
}

// TestOffloadReadChecksumPartial reads a plain datagram, whose checksum the
// kernel leaves to the device (NEEDS_CSUM), and wants it finished.
func TestOffloadReadChecksumPartial(t *testing.T) {
	r := newOffloadRig(t, 1)
	d := r.devs[0]
	bufs, sizes := newBufs(MaxBatch, 1500)
	if _, err := r.sender.WriteToUDPAddrPort([]byte("finish my checksum, please"), netip.AddrPortFrom(peerAddr, 4322)); err != nil {
		t.Fatal(err)
	}
	readFrom(t, d, 4322, bufs, sizes)
	p := bufs[0][headroom : headroom+sizes[0]]
	if err := segmentOK(p); err != nil || !bytes.HasSuffix(p, []byte("please")) {
		t.Errorf("datagram % x: %v", p, err)
	}
}

// TestOffloadReadBatchesSmallPackets: plain packets waiting in the device
// come out of one Read together (one read(2) each, but one batch), where
// one Read used to give one packet: that is what lets a UDP flood or a run
// of TCP ACKs go out with one sendmmsg.
func TestOffloadReadBatchesSmallPackets(t *testing.T) {
	r := newOffloadRig(t, 1)
	d := r.devs[0]
	const sent = 8
	for i := range sent {
		if _, err := r.sender.WriteToUDPAddrPort(fmt.Appendf(nil, "datagram %d", i), netip.AddrPortFrom(peerAddr, 4324)); err != nil {
			t.Fatal(err)
		}
	}
	bufs, sizes := newBufs(MaxBatch, 1500)
	timer := time.AfterFunc(10*time.Second, func() { d.Close() })
	defer timer.Stop()
	got, most := 0, 0
	for got < sent {
		n, err := d.Read(bufs, sizes, headroom)
		if err != nil {
			t.Fatalf("Read after %d of %d datagrams: %v", got, sent, err)
		}
		mine := 0
		for i := range n {
			p := bufs[i][headroom : headroom+sizes[i]]
			if !toPort(p, 4324) {
				continue
			}
			if err := segmentOK(p); err != nil || !bytes.HasSuffix(p, fmt.Appendf(nil, "datagram %d", got)) {
				t.Fatalf("datagram %d: % x: %v", got, p, err)
			}
			got, mine = got+1, mine+1
		}
		most = max(most, mine)
	}
	if most < 2 {
		t.Errorf("%d datagrams queued in the device came one per Read; want them batched", sent)
	}
	// With fewer buffers than packets waiting, Read stops at the last
	// buffer and the rest wait for the next Read.
	for i := range 3 {
		if _, err := r.sender.WriteToUDPAddrPort(fmt.Appendf(nil, "datagram %d", i), netip.AddrPortFrom(peerAddr, 4324)); err != nil {
			t.Fatal(err)
		}
	}
	seen := 0
	for seen < 3 {
		n, err := d.Read(bufs[:2], sizes[:2], headroom)
		if err != nil || n > 2 {
			t.Fatalf("Read into 2 buffers: %d, %v", n, err)
		}
		for i := range n {
			if toPort(bufs[i][headroom:headroom+sizes[i]], 4324) {
				seen++
			}
		}
	}
}

// TestOffloadReadCloseAndDelete: Close unblocks a pending Read with
// ErrClosed; deleting the device under a pending Read ends it with an
// error the forwarder takes for "gone".
func TestOffloadReadCloseAndDelete(t *testing.T) {
	for _, del := range []bool{false, true} {
		t.Run(fmt.Sprintf("delete=%v", del), func(t *testing.T) {
			r := newOffloadRig(t, 1)
			d := r.devs[0]
			errc := make(chan error, 1)
			go func() {
				bufs, sizes := newBufs(MaxBatch, 1500)
				for {
					if _, err := d.Read(bufs, sizes, headroom); err != nil {
						errc <- err
						return
					}
				}
			}()
			time.Sleep(100 * time.Millisecond)
			if del {
				link, err := r.nl.LinkByName("vxtt1")
				if err == nil {
					err = r.nl.LinkDel(link)
				}
				if err != nil {
					t.Fatal(err)
				}
			} else if err := d.Close(); err != nil {
				t.Fatal(err)
			}
			select {
			case err := <-errc:
				gone := errors.Is(err, ErrClosed) || errors.Is(err, unix.EBADFD)
				if !gone || !bytes.Contains([]byte(err.Error()), []byte(`"vxtt1"`)) {
					t.Errorf("Read ended with %v; want an error naming vxtt1 that matches ErrClosed or EBADFD", err)
				}
			case <-time.After(5 * time.Second):
				d.Close()
				t.Fatal("Read still blocked")
			}
		})
	}
}

func TestOffloadReadDoesNotAllocate(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector allocates")
	}
	r := newOffloadRig(t, 1)
	d := r.devs[0]
	if !offloadOf(t, d).gro.udp {
		t.Skip("kernel without USO: no UDP super-packets to read")
	}
	s := usoSender(t, r.ns, tunAddr, netip.AddrPortFrom(peerAddr, 4323), 1400)
	data := make([]byte, 65000)
	bufs, sizes := newBufs(MaxBatch, 1500)
	timer := time.AfterFunc(30*time.Second, func() { d.Close() })
	defer timer.Stop()
	var err error
	allocs := testing.AllocsPerRun(50, func() {
		s.Write(data)
		if rerr := readSegments(d.Read, 4323, 47, bufs, sizes); rerr != nil && err == nil {
			err = rerr
		}
	})
	if err != nil {
		t.Fatalf("the 47 segments of a 64 KB super-packet: %v", err)
	}
	if allocs != 0 {
		t.Errorf("write and Read of a 64 KB super-packet: %v allocations, want 0", allocs)
	}
}

// BenchmarkSplit cuts a 64 KB super-packet held in the read buffer: the
// work a Read does past read(2).
func BenchmarkSplit(b *testing.B) {
	for _, c := range []struct {
		name string
		spec superSpec
	}{
		{"tcp4", superSpec{gso: 1448, pay: 65535 - 52, psh: true}},
		{"tcp6", superSpec{v6: true, gso: 1428, pay: 65535 - 32 - 8}},
		{"udp4", superSpec{udp: true, gso: 1400, pay: 65000}},
	} {
		for _, partial := range []bool{false, true} {
			name := c.name
			if partial {
				name += "/partial"
			}
			b.Run(name, func(b *testing.B) {
				frame := c.spec.frame(b)
				r := newTUNReader("bench", nil)
				if partial {
					r.partial.Store(&partialFunc{func(netip.Addr) bool { return true }})
				}
				copy(r.buf[:], frame)
				bufs, sizes := newBufs(MaxBatch, 1500)
				b.SetBytes(int64(len(frame) - VirtioNetHdrLen))
				b.ReportAllocs()
				for b.Loop() {
					if r.handle(len(frame), bufs, sizes, headroom) == 0 {
						b.Fatal("nothing split")
					}
				}
			})
		}
	}
}

// BenchmarkOffloadRead sends a 64 KB UDP GSO packet into a real device and
// reads it, with our Read and with wireguard-go's on the same queue: the
// difference is the split.
func BenchmarkOffloadRead(b *testing.B) {
	r := newOffloadRig(b, 1)
	d := r.devs[0]
	if !offloadOf(b, d).gro.udp {
		b.Skip("kernel without USO")
	}
	s := usoSender(b, r.ns, tunAddr, netip.AddrPortFrom(peerAddr, 4324), 1400)
	data := make([]byte, 65000)
	wg := wireguardTUN(b, d)
	for _, v := range []struct {
		name  string
		read  func([][]byte, []int, int) (int, error)
		close func() error
	}{{"split", d.Read, d.Close}, {"wireguard-go", wg.Read, wg.Close}} {
		b.Run(v.name, func(b *testing.B) {
			bufs, sizes := newBufs(MaxBatch, 1500)
			// A super-packet lost would leave Read waiting: when one
			// takes 10 s, close the device, which ends the Read.
			stall := time.AfterFunc(time.Hour, func() { v.close() })
			defer stall.Stop()
			b.SetBytes(int64(len(data)))
			b.ReportAllocs()
			sent := 0
			for b.Loop() {
				stall.Reset(10 * time.Second)
				if _, err := s.Write(data); err != nil {
					b.Fatal(err)
				}
				sent++
				if err := readSegments(v.read, 4324, 47, bufs, sizes); err != nil {
					b.Fatalf("super-packet %d: %v", sent, err)
				}
			}
		})
	}
}

// BenchmarkCsumCopy is a segment's payload copied and summed in one pass,
// against a copy, then a sum: from a source in cache, and from one that
// sweeps 64 MB, as a read buffer just filled by the kernel is not.
func BenchmarkCsumCopy(b *testing.B) {
	const n = 1448
	for _, v := range []struct {
		name string
		f    func(dst, src []byte, acc uint64) uint64
	}{
		{"one-pass", csumCopy},
		{"copy-then-sum", func(dst, src []byte, acc uint64) uint64 {
			copy(dst, src)
			return csumAdd(acc, dst[:len(src)])
		}},
	} {
		for _, size := range []int{n, 64 << 20} {
			src, dst := make([]byte, size), make([]byte, size)
			for i := range src {
				src[i] = byte(i * 7)
			}
			b.Run(fmt.Sprintf("%s/src%dKB", v.name, size>>10), func(b *testing.B) {
				b.SetBytes(n)
				var acc uint64
				off := 0
				for b.Loop() {
					acc = v.f(dst[off:off+n], src[off:off+n], acc)
					if off += n; off+n > size {
						off = 0
					}
				}
			})
		}
	}
}
