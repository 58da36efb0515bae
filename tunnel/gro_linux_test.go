package tunnel

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unsafe"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// refSum is the RFC 1071 sum done the plain way, a big-endian word at a
// time, for checking csumAdd and the headers coalesce writes.
func refSum(b []byte) uint32 {
	var s uint32
	for i := 0; i+1 < len(b); i += 2 {
		s += uint32(b[i])<<8 | uint32(b[i+1])
	}
	if len(b)%2 == 1 {
		s += uint32(b[len(b)-1]) << 8
	}
	return s
}

func refFold(s uint32) uint16 {
	for s > 0xffff {
		s = s&0xffff + s>>16
	}
	return uint16(s)
}

// refPseudo is a TCP or UDP pseudo-header as RFC 793 and RFC 8200 lay it
// out: pkt is the IP packet whose addresses it takes.
func refPseudo(pkt []byte, proto uint8, l4Len int) []byte {
	if pkt[0]>>4 == 4 {
		return append(slices.Clone(pkt[12:20]), 0, proto, byte(l4Len>>8), byte(l4Len))
	}
	return append(slices.Clone(pkt[8:40]), byte(l4Len>>24), byte(l4Len>>16), byte(l4Len>>8), byte(l4Len), 0, 0, 0, proto)
}

func TestChecksumMatchesReference(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	buf := make([]byte, 70000)
	for i := range buf {
		buf[i] = byte(rng.Uint32())
	}
	lengths := []int{0, 1, 2, 3, 7, 8, 9, 31, 32, 33, 63, 64, 65, 127, 1460, 1500, 65535, 69999}
	for range 300 {
		lengths = append(lengths, rng.IntN(3000))
	}
	for _, n := range lengths {
		for align := range 8 {
			if align+n > len(buf) {
				continue
			}
			b := buf[align : align+n]
			want := refFold(refSum(b))
			if got := csumFold(csumAdd(0, b)); got != want && !(got == 0xffff && want == 0) {
				t.Fatalf("len %d align %d: csum %#04x, reference %#04x", n, align, got, want)
			}
			// Summed in even-length pieces, from an accumulator near the
			// carry: the same.
			// All ones is 0 too (ones' complement), and the closest the
			// accumulator gets to carrying.
			cut := rng.IntN(n+1) &^ 1
			var init uint64
			if rng.IntN(2) == 0 {
				init = ^uint64(0)
			}
			acc := csumAdd(csumAdd(init, b[:cut]), b[cut:])
			if got := csumFold(acc); got != want && !(got == 0xffff && want == 0) && !(got == 0 && want == 0xffff) {
				t.Fatalf("len %d align %d cut %d: csum %#04x, reference %#04x", n, align, cut, got, want)
			}
		}
	}
	// All ones: the end-around carry at its limit.
	ones := bytes.Repeat([]byte{0xff}, 4096)
	if got := csumFold(csumAdd(^uint64(0), ones)); got != 0xffff {
		t.Errorf("sum of 0xff bytes = %#04x, want 0xffff", got)
	}
	pkt := make([]byte, 40)
	copy(pkt, buf)
	pkt[0] = 0x60
	if got, want := csumFold(pseudoHeaderSum(pkt[8:40], 17, 1234)), refFold(refSum(refPseudo(pkt, 17, 1234))); got != want {
		t.Errorf("IPv6 pseudo-header sum %#04x, reference %#04x", got, want)
	}
}

func BenchmarkChecksum(b *testing.B) {
	buf := make([]byte, 65536+1)
	for i := range buf {
		buf[i] = byte(i * 7)
	}
	for _, n := range []int{40, 1460, 65535} {
		for _, align := range []int{0, 1} {
			b.Run(fmt.Sprintf("%d/align%d", n, align), func(b *testing.B) {
				p := buf[align : align+n]
				b.SetBytes(int64(n))
				b.ReportAllocs()
				var acc uint64
				for b.Loop() {
					acc = csumAdd(acc, p)
				}
				_ = csumFold(acc)
			})
		}
	}
}

// Addresses of the packets the table and fuzz tests build (no device).
var (
	groPeer4, groSelf4 = netip.MustParseAddr("10.99.0.2"), netip.MustParseAddr("10.99.0.1")
	groPeer6, groSelf6 = netip.MustParseAddr("fd99::2"), netip.MustParseAddr("fd99::1")
)

// seg is one packet of a test flow, as gopacket layers, so a test case can
// change any field before it is serialized with lengths and checksums.
type seg struct {
	ip4 *layers.IPv4
	ip6 *layers.IPv6
	tcp *layers.TCP
	udp *layers.UDP
	pay []byte
}

// flow makes n packets of one flow from src to dst, size payload bytes
// each, in sequence: TCP segments with ACK (sequence numbers and IPv4 IDs
// counting up, timestamps option) or UDP datagrams. Payload bytes say
// which packet they are from.
func flow(src, dst netip.AddrPort, udp bool, n, size int) []*seg {
	segs := make([]*seg, n)
	seq := uint32(1_000_000)
	for i := range segs {
		s := &seg{pay: make([]byte, size)}
		for j := range s.pay {
			s.pay[j] = byte(i*31 + j)
		}
		proto := layers.IPProtocolTCP
		if udp {
			proto = layers.IPProtocolUDP
		}
		if src.Addr().Is4() {
			s.ip4 = &layers.IPv4{Version: 4, TTL: 64, Protocol: proto, Id: uint16(100 + i),
				Flags: layers.IPv4DontFragment, SrcIP: src.Addr().AsSlice(), DstIP: dst.Addr().AsSlice()}
		} else {
			s.ip6 = &layers.IPv6{Version: 6, HopLimit: 64, NextHeader: proto, FlowLabel: 0x12345,
				SrcIP: src.Addr().AsSlice(), DstIP: dst.Addr().AsSlice()}
		}
		if udp {
			s.udp = &layers.UDP{SrcPort: layers.UDPPort(src.Port()), DstPort: layers.UDPPort(dst.Port())}
		} else {
			s.tcp = &layers.TCP{SrcPort: layers.TCPPort(src.Port()), DstPort: layers.TCPPort(dst.Port()),
				Seq: seq, Ack: 777, ACK: true, Window: 512,
				Options: []layers.TCPOption{
					{OptionType: layers.TCPOptionKindNop}, {OptionType: layers.TCPOptionKindNop},
					{OptionType: layers.TCPOptionKindTimestamps, OptionLength: 10, OptionData: []byte{0, 0, 1, 0, 0, 0, 2, 0}},
				}}
			seq += uint32(size)
		}
		segs[i] = s
	}
	return segs
}

func (s *seg) bytes(t testing.TB) []byte {
	t.Helper()
	var ls []gopacket.SerializableLayer
	var netLayer gopacket.NetworkLayer
	if s.ip4 != nil {
		ls, netLayer = append(ls, s.ip4), s.ip4
	} else {
		ls, netLayer = append(ls, s.ip6), s.ip6
	}
	if s.tcp != nil {
		s.tcp.SetNetworkLayerForChecksum(netLayer)
		ls = append(ls, s.tcp)
	} else {
		s.udp.SetNetworkLayerForChecksum(netLayer)
		ls = append(ls, s.udp)
	}
	return serialize(t, append(ls, gopacket.Payload(s.pay))...)
}

// packets serializes segs, each behind headroom bytes of junk.
func packets(t testing.TB, segs []*seg) [][]byte {
	bufs := make([][]byte, len(segs))
	for i, s := range segs {
		bufs[i] = withHeadroom(s.bytes(t))
	}
	return bufs
}

// groOutput is one packet a groWriter would write: its virtio-net header
// and the IP packet, gathered from the iovecs as the kernel would.
type groOutput struct {
	vnet     [VirtioNetHdrLen]byte
	pkt      []byte
	first, n int // of the caller's packets
}

// planOutputs runs plan over all of bufs (in MaxBatch chunks, as write
// does) and collects what writev would be given.
func planOutputs(w *groWriter, bufs [][]byte, offset int) []groOutput {
	var outs []groOutput
	for base := 0; base < len(bufs); {
		used := w.plan(bufs[base:], offset)
		for k := range w.nouts {
			var all []byte
			for _, v := range w.iovecs(k, -1) {
				if v.Len > 0 {
					all = append(all, unsafe.Slice(v.Base, v.Len)...)
				}
			}
			var o groOutput
			copy(o.vnet[:], all)
			o.pkt, o.n = all[VirtioNetHdrLen:], w.outs[k].n
			o.first = base + w.outs[k].first
			outs = append(outs, o)
		}
		base += used
	}
	return outs
}

// resegment does what the kernel does with a GSO packet it has to pass on
// as segments (tcp_gso_segment, __udp_gso_segment): cut the payload into
// gso_size pieces, each behind a copy of the header with its lengths,
// sequence number, IPv4 ID and checksums made right, PSH only on the
// last. A plain packet, or one that is only NEEDS_CSUM, comes back as it
// is. It fails the test on a header the kernel would refuse.
func resegment(t testing.TB, o groOutput) [][]byte {
	t.Helper()
	ne := binary.NativeEndian
	flags, gso := o.vnet[0], o.vnet[1]
	hdrLen, gsoSize := int(ne.Uint16(o.vnet[2:])), int(ne.Uint16(o.vnet[4:]))
	csumStart, csumOff := int(ne.Uint16(o.vnet[6:])), int(ne.Uint16(o.vnet[8:]))
	if flags == 0 && gso == 0 {
		if o.vnet != [VirtioNetHdrLen]byte{} {
			t.Fatalf("plain packet with virtio-net header % x", o.vnet)
		}
		return [][]byte{o.pkt}
	}
	p := o.pkt
	v4 := p[0]>>4 == 4
	iphl := 40
	if v4 {
		iphl = 20
	}
	if gso == 0 {
		// A packet alone whose checksum is pending: the field must hold
		// the pseudo-header sum, where the header says.
		proto, off := p[6], 16
		if v4 {
			proto = p[9]
		}
		if proto == 17 {
			off = 6
		}
		if flags != virtioNeedsCsum || csumStart != iphl || csumOff != off || hdrLen > len(p) || !refPending(p) {
			t.Fatalf("bad virtio-net header % x for a pending packet of %d bytes", o.vnet, len(p))
		}
		return [][]byte{p}
	}
	tcp := gso&^virtioGSOECN == virtioGSOTCPv4 || gso&^virtioGSOECN == virtioGSOTCPv6
	if gso&virtioGSOECN != 0 && p[iphl+13]&tcpFlagCWR == 0 {
		t.Fatalf("GSO type % x with ECN, but no CWR", gso)
	}
	gso &^= virtioGSOECN
	switch {
	case flags != virtioNeedsCsum, csumStart != iphl, hdrLen > len(p), gsoSize == 0,
		tcp && csumOff != 16, !tcp && (gso != virtioGSOUDPL4 || csumOff != 6),
		gso == virtioGSOTCPv4 && !v4, gso == virtioGSOTCPv6 && v4:
		t.Fatalf("bad virtio-net header % x for a packet of %d bytes", o.vnet, len(p))
	}
	if v4 && int(binary.BigEndian.Uint16(p[2:])) != len(p) || !v4 && int(binary.BigEndian.Uint16(p[4:]))+40 != len(p) {
		t.Fatalf("coalesced packet's IP length does not match its %d bytes", len(p))
	}
	if v4 && refFold(refSum(p[:20])) != 0xffff {
		t.Fatalf("coalesced packet's IPv4 header checksum is wrong")
	}
	proto := uint8(17)
	if tcp {
		proto = 6
	}
	// The partial checksum must be the pseudo-header's, over the whole
	// L4 length.
	if got, want := binary.BigEndian.Uint16(p[iphl+csumOff:]), refFold(refSum(refPseudo(p, proto, len(p)-iphl))); got != want {
		t.Fatalf("coalesced packet's checksum field %#04x, want the pseudo-header sum %#04x", got, want)
	}
	if !tcp && int(binary.BigEndian.Uint16(p[iphl+4:])) != len(p)-iphl {
		t.Fatalf("coalesced UDP length %d, want %d", binary.BigEndian.Uint16(p[iphl+4:]), len(p)-iphl)
	}
	var out [][]byte
	hdr, pay := p[:hdrLen], p[hdrLen:]
	for k := 0; len(pay) > 0; k++ {
		n := min(gsoSize, len(pay))
		s := append(slices.Clone(hdr), pay[:n]...)
		pay = pay[n:]
		if v4 {
			binary.BigEndian.PutUint16(s[2:], uint16(len(s)))
			binary.BigEndian.PutUint16(s[4:], binary.BigEndian.Uint16(hdr[4:])+uint16(k))
			s[10], s[11] = 0, 0
			binary.BigEndian.PutUint16(s[10:], ^refFold(refSum(s[:20])))
		} else {
			binary.BigEndian.PutUint16(s[4:], uint16(len(s)-40))
		}
		l4 := s[iphl:]
		if tcp {
			binary.BigEndian.PutUint32(l4[4:], binary.BigEndian.Uint32(hdr[iphl+4:])+uint32(k*gsoSize))
			if len(pay) > 0 {
				l4[13] &^= tcpFlagP | tcpFlagF
			}
			if k > 0 {
				l4[13] &^= tcpFlagCWR
			}
		} else {
			binary.BigEndian.PutUint16(l4[4:], uint16(len(l4)))
		}
		l4[csumOff], l4[csumOff+1] = 0, 0
		c := ^refFold(refSum(refPseudo(s, proto, len(l4))) + refSum(l4))
		if !tcp && c == 0 {
			c = 0xffff
		}
		binary.BigEndian.PutUint16(l4[csumOff:], c)
		out = append(out, s)
	}
	return out
}

// normalize blanks what may differ, without meaning anything different,
// between a segment and its copy the kernel cut from a coalesced packet:
// the L4 checksum (0 and 0xffff are the same sum; IPv4 UDP may have none,
// the copy has one, both of which the kernel accepts), and, with DF, the
// IPv4 ID (RFC 6864) and so the header checksum. Segments that joined a
// run have been checked, by verify, to carry right checksums.
func normalize(pkt []byte) []byte {
	p := slices.Clone(pkt)
	iphl, proto := 40, p[6]
	if p[0]>>4 == 4 {
		iphl, proto = 20, p[9]
		if p[6]&0x40 != 0 {
			p[4], p[5], p[10], p[11] = 0, 0, 0, 0
		}
	}
	off := iphl + 16
	if proto == 17 {
		off = iphl + 6
	}
	p[off], p[off+1] = 0, 0
	return p
}

// checkOutputs checks that outs, resegmented, are exactly the packets of
// bufs (past offset), in order, but for packets dropped for a checksum
// that is wrong (and not pending), and that every coalesced segment had
// valid or pending checksums; it returns how many packets each output
// holds, with a 0 for each packet dropped.
func checkOutputs(t testing.TB, outs []groOutput, bufs [][]byte, offset int) []int {
	t.Helper()
	var runs []int
	i := 0
	dropped := func(end int) {
		for ; i < end; i++ {
			if in := bufs[i][offset:]; refVerify(in) || refPending(in) {
				t.Fatalf("input %d was dropped, but its checksums are right or pending", i)
			}
			runs = append(runs, 0)
		}
	}
	for k, o := range outs {
		dropped(o.first)
		runs = append(runs, o.n)
		segs := resegment(t, o)
		if o.n == 1 && len(segs) > 1 {
			// A big packet alone, for the kernel to cut.
			if got := joinSegments(segs); !bytes.Equal(normalize(got), normalize(bufs[i][offset:])) {
				t.Fatalf("output %d: big packet, cut and put together again, differs from input %d", k, i)
			}
			i++
			continue
		}
		if o.n == 1 {
			if len(segs) != 1 || i >= len(bufs) {
				t.Fatalf("output %d: a plain packet that is not one of the inputs", k)
			}
			var in []byte
			if offset < len(bufs[i]) {
				in = bufs[i][offset:]
			}
			if !bytes.Equal(segs[0], in) {
				t.Fatalf("output %d: plain packet differs from input %d", k, i)
			}
			i++
			continue
		}
		if len(segs) != o.n || i+o.n > len(bufs) {
			t.Fatalf("output %d: coalesced packet splits into %d segments, holds %d", k, len(segs), o.n)
		}
		for j, s := range segs {
			in := bufs[i+j][offset:]
			if !bytes.Equal(normalize(s), normalize(in)) {
				t.Fatalf("output %d: segment %d differs from input %d:\n got % x\nwant % x", k, j, i+j, s, in)
			}
			if !refVerify(in) && !refPending(in) {
				t.Fatalf("output %d: input %d has a bad checksum but was coalesced", k, i+j)
			}
		}
		i += o.n
	}
	dropped(len(bufs))
	return runs
}

// joinSegments puts the TCP segments the kernel would cut from a big
// packet back together: the first one's header with the total length and
// the flags of the whole, then every payload.
func joinSegments(segs [][]byte) []byte {
	p := slices.Clone(segs[0])
	iphl := 40
	if p[0]>>4 == 4 {
		iphl = 20
	}
	hl := iphl + int(p[iphl+12]>>4)*4
	for _, s := range segs[1:] {
		p = append(p, s[hl:]...)
	}
	last := segs[len(segs)-1]
	p[iphl+13] = last[iphl+13] | segs[0][iphl+13]&tcpFlagCWR
	if iphl == 20 {
		binary.BigEndian.PutUint16(p[2:], uint16(len(p)))
		p[10], p[11] = 0, 0
		binary.BigEndian.PutUint16(p[10:], ^refFold(refSum(p[:20])))
	} else {
		binary.BigEndian.PutUint16(p[4:], uint16(len(p)-40))
	}
	return p
}

// refPending says whether p's TCP or UDP checksum field holds the
// pseudo-header sum (a checksum left to offload), with a right IPv4
// header checksum.
func refPending(p []byte) bool {
	iphl, proto := 40, p[6]
	if p[0]>>4 == 4 {
		iphl, proto = 20, p[9]
		if refFold(refSum(p[:20])) != 0xffff {
			return false
		}
	}
	off := 16
	if proto == 17 {
		off = 6
	}
	if len(p) < iphl+off+2 {
		return false
	}
	return binary.BigEndian.Uint16(p[iphl+off:]) == refFold(refSum(refPseudo(p, proto, len(p)-iphl)))
}

// pend makes the checksum of the packet p (behind the headroom) pending:
// the pseudo-header sum, as a sender that leaves it to offload writes it.
func pend(p []byte) {
	p = p[headroom:]
	iphl, proto := 40, p[6]
	if p[0]>>4 == 4 {
		iphl, proto = 20, p[9]
	}
	off := iphl + 16
	if proto == 17 {
		off = iphl + 6
	}
	binary.BigEndian.PutUint16(p[off:], refFold(refSum(refPseudo(p, proto, len(p)-iphl))))
}

// refVerify checks an IP packet's IPv4 header and TCP or UDP checksum the
// plain way.
func refVerify(p []byte) bool {
	iphl, proto := 40, p[6]
	if p[0]>>4 == 4 {
		iphl, proto = 20, p[9]
		if refFold(refSum(p[:20])) != 0xffff {
			return false
		}
		if proto == 17 && binary.BigEndian.Uint16(p[26:]) == 0 {
			return true
		}
	}
	l4 := p[iphl:]
	return refFold(refSum(refPseudo(p, proto, len(l4)))+refSum(l4)) == 0xffff
}

func TestGROPlan(t *testing.T) {
	tcp4 := func(n, size int) []*seg {
		return flow(netip.AddrPortFrom(groPeer4, 5555), netip.AddrPortFrom(groSelf4, 80), false, n, size)
	}
	tcp6 := func(n, size int) []*seg {
		return flow(netip.AddrPortFrom(groPeer6, 5555), netip.AddrPortFrom(groSelf6, 80), false, n, size)
	}
	udp4 := func(n, size int) []*seg {
		return flow(netip.AddrPortFrom(groPeer4, 5555), netip.AddrPortFrom(groSelf4, 53), true, n, size)
	}
	udp6 := func(n, size int) []*seg {
		return flow(netip.AddrPortFrom(groPeer6, 5555), netip.AddrPortFrom(groSelf6, 53), true, n, size)
	}
	type tc struct {
		name  string
		segs  []*seg
		edit  func(s []*seg)      // before serializing
		post  func(pkts [][]byte) // after, on the packets behind the headroom
		noUSO bool                // the writer's kernel has no USO
		mtu   int                 // the device's, if not unknown
		want  []int               // packets per output
	}
	ipv4 := func(i int, p [][]byte) []byte { return p[i][headroom:] }
	fixIPv4 := func(p []byte) {
		p[10], p[11] = 0, 0
		binary.BigEndian.PutUint16(p[10:], ^refFold(refSum(p[:20])))
	}
	cases := []tc{
		{name: "tcp4 run", segs: tcp4(4, 1000), want: []int{4}},
		{name: "tcp6 run", segs: tcp6(4, 1000), want: []int{4}},
		{name: "one segment stays plain", segs: tcp4(1, 1000), want: []int{1}},
		{name: "short segment ends the run", segs: tcp4(5, 1000), edit: func(s []*seg) {
			s[2].pay = s[2].pay[:300]
			s[3].tcp.Seq, s[4].tcp.Seq = s[2].tcp.Seq+300, s[2].tcp.Seq+1300
		}, want: []int{3, 2}},
		{name: "longer segment starts a new run", segs: tcp4(4, 1000), edit: func(s []*seg) {
			s[2].pay = append(s[2].pay, 1)
			s[3].tcp.Seq++
		}, want: []int{2, 2}},
		{name: "sequence gap", segs: tcp4(4, 1000), edit: func(s []*seg) { s[2].tcp.Seq++; s[3].tcp.Seq++ }, want: []int{2, 2}},
		{name: "retransmission", segs: tcp4(4, 1000), edit: func(s []*seg) { s[2].tcp.Seq = s[1].tcp.Seq; s[3].tcp.Seq = s[2].tcp.Seq + 1000 }, want: []int{2, 2}},
		{name: "other ack", segs: tcp4(4, 1000), edit: func(s []*seg) { s[2].tcp.Ack++; s[3].tcp.Ack++ }, want: []int{2, 2}},
		{name: "other window", segs: tcp4(4, 1000), edit: func(s []*seg) { s[3].tcp.Window++ }, want: []int{3, 1}},
		{name: "other source port", segs: tcp4(4, 1000), edit: func(s []*seg) { s[1].tcp.SrcPort++ }, want: []int{1, 1, 2}},
		{name: "other destination port", segs: tcp6(3, 1000), edit: func(s []*seg) { s[2].tcp.DstPort++ }, want: []int{2, 1}},
		{name: "other source address", segs: tcp4(3, 1000), edit: func(s []*seg) { s[1].ip4.SrcIP = net.IPv4(10, 99, 0, 3) }, want: []int{1, 1, 1}},
		{name: "other destination address v6", segs: tcp6(3, 1000), edit: func(s []*seg) { s[2].ip6.DstIP = net.ParseIP("fd99::3") }, want: []int{2, 1}},
		{name: "other TOS", segs: tcp4(3, 1000), edit: func(s []*seg) { s[2].ip4.TOS = 3 }, want: []int{2, 1}},
		{name: "other TTL", segs: tcp4(3, 1000), edit: func(s []*seg) { s[2].ip4.TTL = 63 }, want: []int{2, 1}},
		{name: "DF differs", segs: tcp4(3, 1000), edit: func(s []*seg) { s[2].ip4.Flags = 0; s[2].ip4.Id = s[1].ip4.Id + 1 }, want: []int{2, 1}},
		{name: "no DF, IDs count up", segs: tcp4(3, 1000), edit: func(s []*seg) {
			for _, x := range s {
				x.ip4.Flags = 0
			}
		}, want: []int{3}},
		{name: "no DF, ID jumps", segs: tcp4(3, 1000), edit: func(s []*seg) {
			for _, x := range s {
				x.ip4.Flags = 0
			}
			s[2].ip4.Id += 5
		}, want: []int{2, 1}},
		{name: "DF, IDs do not matter", segs: tcp4(3, 1000), edit: func(s []*seg) { s[1].ip4.Id, s[2].ip4.Id = 0, 0 }, want: []int{3}},
		{name: "fragment", segs: tcp4(3, 1000), edit: func(s []*seg) { s[1].ip4.Flags = layers.IPv4MoreFragments }, want: []int{1, 1, 1}},
		{name: "IPv4 options", segs: tcp4(3, 1000), edit: func(s []*seg) {
			for _, x := range s {
				x.ip4.Options = []layers.IPv4Option{{OptionType: 1}, {OptionType: 1}, {OptionType: 1}, {OptionType: 0}}
			}
		}, want: []int{1, 1, 1}},
		{name: "traffic class", segs: tcp6(3, 1000), edit: func(s []*seg) { s[1].ip6.TrafficClass = 4 }, want: []int{1, 1, 1}},
		{name: "flow label", segs: tcp6(3, 1000), edit: func(s []*seg) { s[2].ip6.FlowLabel++ }, want: []int{2, 1}},
		{name: "hop limit", segs: tcp6(3, 1000), edit: func(s []*seg) { s[2].ip6.HopLimit-- }, want: []int{2, 1}},
		{name: "extension header", segs: tcp6(3, 1000), post: func(p [][]byte) { p[1][headroom+6] = 0 }, want: []int{1, 1, 1}},
		{name: "option bytes differ", segs: tcp4(3, 1000), edit: func(s []*seg) {
			s[2].tcp.Options = slices.Clone(s[2].tcp.Options)
			s[2].tcp.Options[2].OptionData = []byte{0, 0, 1, 1, 0, 0, 2, 0}
		}, want: []int{2, 1}},
		{name: "option length differs", segs: tcp4(3, 1000), edit: func(s []*seg) { s[1].tcp.Options = nil }, want: []int{1, 1, 1}},
		{name: "PSH ends the run", segs: tcp4(5, 1000), edit: func(s []*seg) { s[2].tcp.PSH = true }, want: []int{3, 2}},
		{name: "PSH on the last", segs: tcp6(3, 1000), edit: func(s []*seg) { s[2].tcp.PSH = true }, want: []int{3}},
		{name: "PSH on the first", segs: tcp4(3, 1000), edit: func(s []*seg) { s[0].tcp.PSH = true }, want: []int{1, 2}},
		{name: "SYN", segs: tcp4(3, 1000), edit: func(s []*seg) { s[1].tcp.SYN = true }, want: []int{1, 1, 1}},
		{name: "FIN", segs: tcp4(3, 1000), edit: func(s []*seg) { s[2].tcp.FIN = true }, want: []int{2, 1}},
		{name: "RST", segs: tcp4(3, 1000), edit: func(s []*seg) { s[2].tcp.RST = true }, want: []int{2, 1}},
		{name: "URG", segs: tcp4(3, 1000), edit: func(s []*seg) { s[2].tcp.URG = true }, want: []int{2, 1}},
		{name: "CWR", segs: tcp4(3, 1000), edit: func(s []*seg) { s[0].tcp.CWR = true }, want: []int{1, 2}},
		{name: "ECE", segs: tcp4(3, 1000), edit: func(s []*seg) { s[1].tcp.ECE = true }, want: []int{1, 1, 1}},
		{name: "no ACK", segs: tcp4(3, 1000), edit: func(s []*seg) { s[1].tcp.ACK = false }, want: []int{1, 1, 1}},
		{name: "pure ACKs", segs: tcp4(3, 0), want: []int{1, 1, 1}},
		{name: "bad TCP checksum in the middle", segs: tcp4(5, 1000), post: func(p [][]byte) { p[2][headroom+36] ^= 1 }, want: []int{2, 0, 2}},
		{name: "bad TCP checksum first", segs: tcp6(3, 1000), post: func(p [][]byte) { p[0][len(p[0])-1] ^= 0x80 }, want: []int{0, 2}},
		{name: "bad payload last", segs: tcp4(3, 1000), post: func(p [][]byte) { p[2][len(p[2])-5]++ }, want: []int{2, 0}},
		{name: "bad IPv4 header checksum", segs: tcp4(3, 1000), post: func(p [][]byte) { ipv4(1, p)[10]++ }, want: []int{1, 0, 1}},
		{name: "bad pure ACK", segs: tcp4(2, 0), post: func(p [][]byte) { p[1][headroom+36]++ }, want: []int{1, 0}},
		{name: "bad SYN", segs: tcp6(1, 0), edit: func(s []*seg) { s[0].tcp.SYN = true }, post: func(p [][]byte) { p[0][headroom+56]++ }, want: []int{0}},
		{name: "pending TCP checksums run", segs: tcp4(4, 1000), post: func(p [][]byte) { pend(p[0]); pend(p[1]); pend(p[3]) }, want: []int{4}},
		{name: "pending TCP6 checksums run", segs: tcp6(3, 1000), post: func(p [][]byte) {
			for _, x := range p {
				pend(x)
			}
		}, want: []int{3}},
		{name: "pending TCP alone", segs: tcp4(1, 1000), post: func(p [][]byte) { pend(p[0]) }, want: []int{1}},
		{name: "pending SYN", segs: tcp4(1, 0), edit: func(s []*seg) { s[0].tcp.SYN = true }, post: func(p [][]byte) { pend(p[0]) }, want: []int{1}},
		{name: "pending pure ACKs", segs: tcp6(2, 0), post: func(p [][]byte) { pend(p[0]); pend(p[1]) }, want: []int{1, 1}},
		{name: "pending, corrupt IPv4 header", segs: tcp4(2, 100), post: func(p [][]byte) { pend(p[1]); ipv4(1, p)[8]-- }, want: []int{1, 0}},
		{name: "pending UDP run", segs: udp4(3, 1200), post: func(p [][]byte) { pend(p[0]); pend(p[1]); pend(p[2]) }, want: []int{3}},
		{name: "big TCP pending", segs: tcp4(3, 9000), mtu: 1500, post: func(p [][]byte) { pend(p[1]) }, want: []int{1, 1, 1}},
		{name: "big TCP6 pending, CWR", segs: tcp6(1, 20000), mtu: 1500, edit: func(s []*seg) { s[0].tcp.CWR = true }, post: func(p [][]byte) { pend(p[0]) }, want: []int{1}},
		{name: "big TCP pending, FIN and PSH", segs: tcp4(1, 60000), mtu: 1450, edit: func(s []*seg) { s[0].tcp.FIN, s[0].tcp.PSH = true, true }, post: func(p [][]byte) { pend(p[0]) }, want: []int{1}},
		{name: "big TCP with a complete checksum", segs: tcp4(2, 4000), mtu: 1500, want: []int{1, 1}},
		{name: "big TCP with a bad checksum", segs: tcp6(2, 4000), mtu: 1500, post: func(p [][]byte) { p[0][headroom+100]++ }, want: []int{0, 1}},
		{name: "MTU-size TCP is not big", segs: tcp4(3, 1448), mtu: 1500, want: []int{3}},
		{name: "big UDP goes plain", segs: udp4(2, 3000), mtu: 1500, want: []int{1, 1}},
		{name: "pending UDP alone without USO", segs: udp6(2, 1200), noUSO: true, post: func(p [][]byte) { pend(p[1]) }, want: []int{1, 1}},
		{name: "IPv4 length short of the buffer", segs: tcp4(3, 1000), post: func(p [][]byte) {
			binary.BigEndian.PutUint16(ipv4(2, p)[2:], 1000)
			fixIPv4(ipv4(2, p))
		}, want: []int{2, 1}},
		{name: "64 KB limit", segs: tcp4(100, 1400), want: []int{46, 46, 8}},
		{name: "64 KB limit v6", segs: tcp6(100, 1400), want: []int{46, 46, 8}},
		{name: "whole batch", segs: tcp4(MaxBatch+3, 100), want: []int{MaxBatch, 3}},
		{name: "two flows interleaved", segs: append(tcp4(2, 500), tcp6(2, 500)...), edit: func(s []*seg) { s[1], s[2] = s[2], s[1] }, want: []int{1, 1, 1, 1}},
		{name: "udp4 run", segs: udp4(5, 1200), want: []int{5}},
		{name: "udp6 run, short last", segs: udp6(5, 1200), edit: func(s []*seg) { s[4].pay = s[4].pay[:7] }, want: []int{5}},
		{name: "udp: short one ends the run", segs: udp4(5, 1200), edit: func(s []*seg) { s[1].pay = s[1].pay[:7] }, want: []int{2, 3}},
		{name: "udp without USO", segs: udp4(5, 1200), noUSO: true, want: []int{1, 1, 1, 1, 1}},
		{name: "udp4 without checksum", segs: udp4(3, 1200), post: func(p [][]byte) {
			for _, x := range p {
				x[headroom+26], x[headroom+27] = 0, 0
			}
		}, want: []int{3}},
		{name: "udp6 checksum 0", segs: udp6(3, 1200), post: func(p [][]byte) { p[1][headroom+46], p[1][headroom+47] = 0, 0 }, want: []int{1, 1, 1}},
		{name: "bad UDP checksum", segs: udp6(4, 1200), post: func(p [][]byte) { p[2][headroom+46]++ }, want: []int{2, 0, 1}},
		{name: "udp other port", segs: udp4(3, 100), edit: func(s []*seg) { s[2].udp.SrcPort++ }, want: []int{2, 1}},
		{name: "udp 64 datagrams at most", segs: udp4(70, 100), want: []int{64, 6}},
		{name: "empty udp", segs: udp4(3, 0), want: []int{1, 1, 1}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if c.edit != nil {
				c.edit(c.segs)
			}
			bufs := packets(t, c.segs)
			if c.post != nil {
				c.post(bufs)
			}
			orig := make([][]byte, len(bufs))
			for i, b := range bufs {
				orig[i] = slices.Clone(b)
			}
			w := newGROWriter("test", nil, !c.noUSO, nil)
			w.mtu = c.mtu
			outs := planOutputs(w, bufs, headroom)
			if got := checkOutputs(t, outs, bufs, headroom); !slices.Equal(got, c.want) {
				t.Errorf("packets per output %v, want %v", got, c.want)
			}
			for i := range bufs {
				if !bytes.Equal(bufs[i], orig[i]) {
					t.Fatalf("plan changed the caller's packet %d", i)
				}
			}
		})
	}

	t.Run("bad input", func(t *testing.T) {
		good := packets(t, tcp4(2, 100))
		bufs := [][]byte{
			withHeadroom(nil),                   // empty
			make([]byte, 3),                     // shorter than the offset
			withHeadroom([]byte{0x75, 0, 0, 0}), // version 7
			withHeadroom(bytes.Repeat([]byte{0x45}, 19)),
			withHeadroom(bytes.Repeat([]byte{0x60}, 39)),
			good[0], good[1],
		}
		w := newGROWriter("test", nil, true, nil)
		outs := planOutputs(w, bufs, headroom)
		if got := checkOutputs(t, outs, bufs, headroom); !slices.Equal(got, []int{1, 1, 1, 1, 1, 2}) {
			t.Errorf("packets per output %v", got)
		}
	})
}

// TestGROHeader checks a coalesced packet's header byte for byte against
// one made by hand.
func TestGROHeader(t *testing.T) {
	for _, v6 := range []bool{false, true} {
		for _, udp := range []bool{false, true} {
			t.Run(fmt.Sprintf("v6=%v/udp=%v", v6, udp), func(t *testing.T) {
				src, dst := netip.AddrPortFrom(groPeer4, 5555), netip.AddrPortFrom(groSelf4, 80)
				if v6 {
					src, dst = netip.AddrPortFrom(groPeer6, 5555), netip.AddrPortFrom(groSelf6, 80)
				}
				segs := flow(src, dst, udp, 3, 1000)
				segs[2].pay = segs[2].pay[:10]
				if !udp {
					segs[2].tcp.PSH = true
				}
				bufs := packets(t, segs)
				w := newGROWriter("test", nil, true, nil)
				outs := planOutputs(w, bufs, headroom)
				if len(outs) != 1 {
					t.Fatalf("%d outputs, want 1", len(outs))
				}
				first := bufs[0][headroom:]
				iphl, l4hl, proto, gso, csumOff := 20, 32, uint8(6), uint8(1), 16
				if v6 {
					iphl, gso = 40, 4
				}
				if udp {
					l4hl, proto, gso, csumOff = 8, 17, 5, 6
				}
				total := iphl + l4hl + 2010
				want := slices.Clone(first[:iphl+l4hl])
				if v6 {
					binary.BigEndian.PutUint16(want[4:], uint16(total-40))
				} else {
					binary.BigEndian.PutUint16(want[2:], uint16(total))
					want[10], want[11] = 0, 0
					binary.BigEndian.PutUint16(want[10:], ^refFold(refSum(want[:20])))
				}
				if udp {
					binary.BigEndian.PutUint16(want[iphl+4:], uint16(total-iphl))
				} else {
					want[iphl+13] = tcpFlagA | tcpFlagP
				}
				binary.BigEndian.PutUint16(want[iphl+csumOff:], refFold(refSum(refPseudo(first, proto, total-iphl))))
				if got := outs[0].pkt[:iphl+l4hl]; !bytes.Equal(got, want) {
					t.Errorf("header\n got % x\nwant % x", got, want)
				}
				vnet := []byte{1, gso, 0, 0, 0, 0, 0, 0, 0, 0}
				binary.NativeEndian.PutUint16(vnet[2:], uint16(iphl+l4hl))
				binary.NativeEndian.PutUint16(vnet[4:], 1000)
				binary.NativeEndian.PutUint16(vnet[6:], uint16(iphl))
				binary.NativeEndian.PutUint16(vnet[8:], uint16(csumOff))
				if !bytes.Equal(outs[0].vnet[:], vnet) {
					t.Errorf("virtio-net header % x, want % x", outs[0].vnet, vnet)
				}
				if got, want := outs[0].pkt[iphl+l4hl:], slices.Concat(segs[0].pay, segs[1].pay, segs[2].pay); !bytes.Equal(got, want) {
					t.Error("payload is not the segments' payloads in order")
				}
			})
		}
	}
}

func TestGROPlanDoesNotAllocate(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector allocates")
	}
	bufs := packets(t, flow(netip.AddrPortFrom(groPeer4, 5555), netip.AddrPortFrom(groSelf4, 80), false, 64, 1400))
	w := newGROWriter("test", nil, true, nil)
	allocs := testing.AllocsPerRun(50, func() {
		w.plan(bufs, headroom)
		for k := range w.nouts {
			w.iovecs(k, -1)
		}
	})
	if allocs != 0 {
		t.Errorf("plan: %v allocations, want 0", allocs)
	}
	if w.nouts != 2 { // 46 + 18 segments
		t.Errorf("%d outputs, want 2", w.nouts)
	}
}

// FuzzGROWrite feeds batches of arbitrary packets to plan and checks that
// it never panics and that what it would write is, cut again as the kernel
// would, the input packets in order. data is a batch: packets of a 2-byte
// length and that many bytes. With fix set, the lengths and checksums of
// what looks like IPv4 or IPv6 TCP or UDP are made right first, so that
// mutated headers get past the checksum check and exercise the run rules.
func FuzzGROWrite(f *testing.F) {
	add := func(segs []*seg, udp, fix bool) {
		var data []byte
		for _, s := range segs {
			p := s.bytes(f)
			data = binary.BigEndian.AppendUint16(data, uint16(len(p)))
			data = append(data, p...)
		}
		f.Add(data, udp, fix, uint8(0))
	}
	p4, s4 := netip.AddrPortFrom(groPeer4, 5555), netip.AddrPortFrom(groSelf4, 80)
	p6, s6 := netip.AddrPortFrom(groPeer6, 5555), netip.AddrPortFrom(groSelf6, 80)
	add(flow(p4, s4, false, 4, 100), true, false)
	add(flow(p6, s6, false, 4, 100), true, true)
	add(flow(p4, s4, true, 4, 100), true, true)
	add(flow(p6, s6, true, 3, 64), false, false)
	mixed := append(flow(p4, s4, false, 3, 50), flow(p6, s6, true, 3, 50)...)
	mixed[1].tcp.PSH = true
	add(mixed, true, true)
	f.Add([]byte{0, 1, 0x45, 0, 0}, true, false, uint8(3))

	f.Fuzz(func(t *testing.T, data []byte, udp, fix bool, offset uint8) {
		off := int(offset % 4)
		var bufs [][]byte
		for len(data) >= 2 && len(bufs) < 2*MaxBatch {
			n := min(int(binary.BigEndian.Uint16(data)), len(data)-2)
			pkt := append(make([]byte, off), data[2:2+n]...)
			if fix {
				fixPacket(pkt[off:])
			}
			bufs = append(bufs, pkt)
			data = data[2+n:]
		}
		orig := make([][]byte, len(bufs))
		for i, b := range bufs {
			orig[i] = slices.Clone(b)
		}
		w := newGROWriter("fuzz", nil, udp, nil)
		checkOutputs(t, planOutputs(w, bufs, off), bufs, off)
		for i := range bufs {
			if !bytes.Equal(bufs[i], orig[i]) {
				t.Fatalf("plan changed the caller's packet %d", i)
			}
		}
	})
}

// fixPacket makes the lengths and checksums of p right where p looks
// like IPv4 (without options) or IPv6 TCP or UDP.
func fixPacket(p []byte) {
	iphl, proto := 0, byte(0)
	switch {
	case len(p) >= 20 && p[0] == 0x45:
		iphl, proto = 20, p[9]
		binary.BigEndian.PutUint16(p[2:], uint16(len(p)))
		p[10], p[11] = 0, 0
		binary.BigEndian.PutUint16(p[10:], ^refFold(refSum(p[:20])))
	case len(p) >= 40 && p[0]>>4 == 6:
		iphl, proto = 40, p[6]
		binary.BigEndian.PutUint16(p[4:], uint16(len(p)-40))
	default:
		return
	}
	l4 := p[iphl:]
	off := 16
	switch {
	case proto == 6 && len(l4) >= 20:
	case proto == 17 && len(l4) >= 8:
		off = 6
		binary.BigEndian.PutUint16(l4[4:], uint16(len(l4)))
	default:
		return
	}
	l4[off], l4[off+1] = 0, 0
	binary.BigEndian.PutUint16(l4[off:], ^refFold(refSum(refPseudo(p, proto, len(l4)))+refSum(l4)))
}

// offloadOf is d as the offload device it must be (its reader rd, its
// writer gro).
func offloadOf(t testing.TB, d Device) *offloadDevice {
	t.Helper()
	od, ok := d.(*offloadDevice)
	if !ok {
		t.Fatalf("device is a %T, not an offload device", d)
	}
	return od
}

// snmp reads a counter (say "Udp", "InCsumErrors") from the namespace's
// /proc/net/snmp: the thread's own, as inNetns switches only the thread.
func snmp(t testing.TB, ns netns.NsHandle, proto, name string) uint64 {
	t.Helper()
	var data []byte
	var err error
	inNetns(t, ns, func() { data, err = os.ReadFile("/proc/thread-self/net/snmp") })
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, line := range strings.Split(string(data), "\n") {
		fields := strings.Fields(line)
		if len(fields) == 0 || fields[0] != proto+":" {
			continue
		}
		if names == nil {
			names = fields
			continue
		}
		for i, f := range names {
			if f == name && i < len(fields) {
				v, err := strconv.ParseUint(fields[i], 10, 64)
				if err != nil {
					t.Fatalf("snmp %s %s: %v", proto, name, err)
				}
				return v
			}
		}
	}
	t.Fatalf("no %s %s in /proc/net/snmp", proto, name)
	return 0
}

// receiveAll reads want datagrams from c and fails unless they are want,
// in order, byte for byte.
func receiveAll(t *testing.T, c *net.UDPConn, want [][]byte) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 65536)
	for i, w := range want {
		n, _, err := c.ReadFromUDPAddrPort(buf)
		if err != nil {
			t.Fatalf("datagram %d of %d: %v", i, len(want), err)
		}
		if !bytes.Equal(buf[:n], w) {
			t.Fatalf("datagram %d: got %d bytes % x..., want %d bytes % x...", i, n, buf[:min(n, 8)], len(w), w[:min(len(w), 8)])
		}
	}
	c.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	if n, _, err := c.ReadFromUDPAddrPort(buf); err == nil {
		t.Fatalf("a datagram more than sent: % x", buf[:min(n, 8)])
	}
}

// groCounts is a snapshot of a writer's counters.
type groCounts struct{ writevs, coalesced, merged, refused uint64 }

func countsOf(w *groWriter) groCounts {
	return groCounts{w.writevs.Load(), w.coalesced.Load(), w.merged.Load(), w.refused.Load()}
}

func (c groCounts) minus(d groCounts) groCounts {
	return groCounts{c.writevs - d.writevs, c.coalesced - d.coalesced, c.merged - d.merged, c.refused - d.refused}
}

// TestGROWriteUDP writes runs of datagrams to a UDP socket behind an
// offload device and wants exactly those datagrams, in order, written as
// one coalesced packet per run; with a corrupt datagram in the middle,
// the kernel counts one checksum error and delivers the rest.
func TestGROWriteUDP(t *testing.T) {
	r := newOffloadRigAddrs(t, 1, netip.PrefixFrom(tunAddr, 24), netip.MustParsePrefix("fd99::1/64"))
	w := offloadOf(t, r.devs[0]).gro
	if !w.udp {
		t.Skip("kernel without USO: UDP is not coalesced")
	}
	var recv6 *net.UDPConn
	inNetns(t, r.ns, func() {
		var err error
		if recv6, err = net.ListenUDP("udp6", &net.UDPAddr{IP: net.ParseIP("fd99::1")}); err != nil {
			t.Fatal(err)
		}
	})
	t.Cleanup(func() { recv6.Close() })

	for _, c := range []struct {
		name string
		src  netip.AddrPort
		conn *net.UDPConn
	}{
		{"ipv4", netip.AddrPortFrom(peerAddr, 7777), r.recver},
		{"ipv6", netip.MustParseAddrPort("[fd99::2]:7777"), recv6},
	} {
		t.Run(c.name, func(t *testing.T) {
			segs := flow(c.src, c.conn.LocalAddr().(*net.UDPAddr).AddrPort(), true, 21, 1200)
			segs[20].pay = segs[20].pay[:333]
			bufs := packets(t, segs)
			orig := make([][]byte, len(bufs))
			for i, b := range bufs {
				orig[i] = slices.Clone(b)
			}
			before := countsOf(w)
			if n, err := r.devs[0].Write(bufs, headroom); n != len(bufs) || err != nil {
				t.Fatalf("Write = %d, %v; want %d", n, err, len(bufs))
			}
			var want [][]byte
			for _, s := range segs {
				want = append(want, s.pay)
			}
			receiveAll(t, c.conn, want)
			if d := countsOf(w).minus(before); d != (groCounts{writevs: 1, coalesced: 1, merged: 21}) {
				t.Errorf("writer counts %+v; want the 21 datagrams in one coalesced writev", d)
			}
			for i := range bufs {
				if !bytes.Equal(bufs[i], orig[i]) {
					t.Fatalf("Write changed the caller's buffer %d", i)
				}
			}
		})
	}

	t.Run("bad checksum in the middle", func(t *testing.T) {
		segs := flow(netip.AddrPortFrom(peerAddr, 7777), r.recver.LocalAddr().(*net.UDPAddr).AddrPort(), true, 10, 1000)
		bufs := packets(t, segs)
		bufs[5][len(bufs[5])-1] ^= 0xff
		errsBefore := snmp(t, r.ns, "Udp", "InCsumErrors")
		before, badBefore := countsOf(w), w.badChecksum.Load()
		if n, err := r.devs[0].Write(bufs, headroom); n != len(bufs) || err != nil {
			t.Fatalf("Write = %d, %v; want %d (the bad one dropped, and taken)", n, err, len(bufs))
		}
		var want [][]byte
		for i, s := range segs {
			if i != 5 {
				want = append(want, s.pay)
			}
		}
		receiveAll(t, r.recver, want)
		if d := countsOf(w).minus(before); d != (groCounts{writevs: 2, coalesced: 2, merged: 9}) {
			t.Errorf("writer counts %+v; want 0-4 and 6-9 coalesced, 5 dropped", d)
		}
		if d := w.badChecksum.Load() - badBefore; d != 1 {
			t.Errorf("writer counted %d bad checksums, want 1", d)
		}
		if d := snmp(t, r.ns, "Udp", "InCsumErrors") - errsBefore; d != 0 {
			t.Errorf("Udp InCsumErrors went up by %d: the bad datagram reached the kernel", d)
		}
	})

	t.Run("pending checksums", func(t *testing.T) {
		// A sender that left its checksums to offload: the kernel takes
		// them as they are, coalesced or alone, and counts no error.
		segs := flow(netip.AddrPortFrom(peerAddr, 7777), r.recver.LocalAddr().(*net.UDPAddr).AddrPort(), true, 6, 1000)
		segs[5].pay = segs[5].pay[:10]
		bufs := packets(t, segs)
		for _, b := range bufs {
			pend(b)
		}
		// The 2nd, with a complete checksum, ends the first run: runs
		// take a segment no longer than the first.
		bufs[2] = withHeadroom(segs[2].bytes(t))
		bufs[1] = bufs[1][:len(bufs[1])-1]
		segs[1].pay = segs[1].pay[:len(segs[1].pay)-1]
		binary.BigEndian.PutUint16(bufs[1][headroom+2:], uint16(len(bufs[1])-headroom))
		binary.BigEndian.PutUint16(bufs[1][headroom+24:], uint16(len(bufs[1])-headroom-20))
		bufs[1][headroom+10], bufs[1][headroom+11] = 0, 0
		binary.BigEndian.PutUint16(bufs[1][headroom+10:], ^refFold(refSum(bufs[1][headroom:headroom+20])))
		pend(bufs[1])
		errsBefore := snmp(t, r.ns, "Udp", "InCsumErrors")
		before, pendBefore := countsOf(w), w.pending.Load()
		if n, err := r.devs[0].Write(bufs, headroom); n != len(bufs) || err != nil {
			t.Fatalf("Write = %d, %v; want %d", n, err, len(bufs))
		}
		var want [][]byte
		for _, s := range segs {
			want = append(want, s.pay)
		}
		receiveAll(t, r.recver, want)
		if d := countsOf(w).minus(before); d != (groCounts{writevs: 2, coalesced: 2, merged: 6}) {
			t.Errorf("writer counts %+v; want 0-1 and 2-5 coalesced", d)
		}
		if d := w.pending.Load() - pendBefore; d != 0 {
			t.Errorf("%d packets went alone as pending; want none, all coalesced", d)
		}
		if d := snmp(t, r.ns, "Udp", "InCsumErrors") - errsBefore; d != 0 {
			t.Errorf("Udp InCsumErrors went up by %d", d)
		}
		// Alone: a datagram of another flow between two of this one.
		other := flow(netip.AddrPortFrom(peerAddr, 7778), r.recver.LocalAddr().(*net.UDPAddr).AddrPort(), true, 1, 500)
		one := withHeadroom(other[0].bytes(t))
		pend(one)
		pendBefore = w.pending.Load()
		if n, err := r.devs[0].Write([][]byte{one}, headroom); n != 1 || err != nil {
			t.Fatalf("Write = %d, %v; want 1", n, err)
		}
		receiveAll(t, r.recver, [][]byte{other[0].pay})
		if d := w.pending.Load() - pendBefore; d != 1 {
			t.Errorf("%d packets went alone as pending, want 1", d)
		}
	})
}

// TestGROWriteTCPChecksumError writes a run of TCP segments (to a port no
// one listens on: the kernel checks checksums before it looks for a
// socket) with a corrupt one in the middle: the writer drops it, and the
// kernel never sees it.
func TestGROWriteTCPChecksumError(t *testing.T) {
	r := newOffloadRig(t, 1)
	w := offloadOf(t, r.devs[0]).gro
	segs := flow(netip.AddrPortFrom(peerAddr, 5555), netip.AddrPortFrom(tunAddr, 9), false, 9, 1000)
	bufs := packets(t, segs)
	bufs[4][headroom+36] ^= 0x10 // TCP checksum
	errsBefore := snmp(t, r.ns, "Tcp", "InCsumErrors")
	before := countsOf(w)
	if n, err := r.devs[0].Write(bufs, headroom); n != len(bufs) || err != nil {
		t.Fatalf("Write = %d, %v; want %d", n, err, len(bufs))
	}
	if d := countsOf(w).minus(before); d != (groCounts{writevs: 2, coalesced: 2, merged: 8}) {
		t.Errorf("writer counts %+v; want 0-3 and 5-8 coalesced, 4 dropped", d)
	}
	if got := r.devs[0].(BadChecksumCounter).BadChecksums(); got != 1 {
		t.Errorf("BadChecksums = %d, want 1", got)
	}
	if d := snmp(t, r.ns, "Tcp", "InCsumErrors") - errsBefore; d != 0 {
		t.Errorf("Tcp InCsumErrors went up by %d: the bad segment reached the kernel", d)
	}
}

// TestGROWriteTCPPending writes TCP segments whose checksum is pending,
// as a kernel sender behind the kernel's vxlan leaves them, to a port no
// one listens on: the kernel takes each as checked (no checksum error)
// and answers with a reset, which comes out of the device. One of them is
// a 20 KB segment, as a sender's TSO packet arrives when it crosses the
// kernel's vxlan and veths whole: it is cut to the MTU on the way in, and
// the kernel resets once for it.
func TestGROWriteTCPPending(t *testing.T) {
	r := newOffloadRig(t, 1)
	dev := r.devs[0]
	w := offloadOf(t, dev).gro
	mtu, err := dev.MTU()
	if err != nil {
		t.Fatal(err)
	}
	src := netip.AddrPortFrom(peerAddr, 5556)
	syn := flow(src, netip.AddrPortFrom(tunAddr, 9), false, 1, 0)[0]
	syn.tcp.SYN, syn.tcp.ACK = true, false
	data := flow(netip.AddrPortFrom(peerAddr, 5557), netip.AddrPortFrom(tunAddr, 9), false, 1, 20000)[0]
	bufs := [][]byte{withHeadroom(syn.bytes(t)), withHeadroom(data.bytes(t))}
	for _, b := range bufs {
		pend(b)
	}
	errsBefore := snmp(t, r.ns, "Tcp", "InCsumErrors")
	rstBefore := snmp(t, r.ns, "Tcp", "OutRsts")
	if n, err := dev.Write(bufs, headroom); n != len(bufs) || err != nil {
		t.Fatalf("Write = %d, %v; want %d", n, err, len(bufs))
	}
	if got := w.pending.Load(); got != 2 {
		t.Errorf("%d packets went as pending, want 2", got)
	}
	if w.mtu != mtu {
		t.Errorf("writer's MTU %d, the device's %d", w.mtu, mtu)
	}
	// Both resets come back out of the device, to the two source ports;
	// if they do not within 10 s, closing the device ends the Read.
	rbufs, sizes := batch(dev)
	seen := map[uint16]bool{}
	timer := time.AfterFunc(10*time.Second, func() { dev.Close() })
	defer timer.Stop()
	for len(seen) < 2 {
		n, err := dev.Read(rbufs, sizes, headroom)
		if err != nil {
			t.Fatalf("Read, with resets to ports %v seen: %v", seen, err)
		}
		for i := range n {
			p := rbufs[i][headroom : headroom+sizes[i]]
			if len(p) >= 40 && p[9] == 6 && p[33]&0x04 != 0 { // RST
				seen[binary.BigEndian.Uint16(p[22:24])] = true
			}
		}
	}
	if !seen[5556] || !seen[5557] {
		t.Errorf("resets to ports %v, want 5556 and 5557", seen)
	}
	if d := snmp(t, r.ns, "Tcp", "InCsumErrors") - errsBefore; d != 0 {
		t.Errorf("Tcp InCsumErrors went up by %d", d)
	}
	if d := snmp(t, r.ns, "Tcp", "OutRsts") - rstBefore; d < 2 {
		t.Errorf("Tcp OutRsts went up by %d, want 2", d)
	}
}

func TestGROWriteDoesNotAllocate(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector allocates")
	}
	r := newOffloadRig(t, 1)
	bufs := packets(t, flow(netip.AddrPortFrom(peerAddr, 5555), netip.AddrPortFrom(tunAddr, 9), false, 64, 1400))
	var err error
	allocs := testing.AllocsPerRun(50, func() {
		if _, e := r.devs[0].Write(bufs, headroom); e != nil {
			err = e
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	if allocs != 0 {
		t.Errorf("Write of 64 segments: %v allocations, want 0", allocs)
	}
}

// forwardTUN moves packets from one device to the other until either is
// closed, as the forwarder would with nothing in between.
func forwardTUN(from, to Device, packets *atomic.Uint64) {
	bufs, sizes := batch(from)
	out := make([][]byte, 0, len(bufs))
	for {
		n, err := from.Read(bufs, sizes, headroom)
		if errors.Is(err, ErrClosed) {
			return
		}
		out = out[:0]
		for i := range n {
			out = append(out, bufs[i][:headroom+sizes[i]])
		}
		packets.Add(uint64(n))
		if _, err := to.Write(out, headroom); errors.Is(err, ErrClosed) {
			return
		}
	}
}

// TestGROTCPThroughTwoTUNs runs a TCP connection between two namespaces
// through two offload devices and a loop that reads one and writes the
// other: the sender's kernel hands its device super-packets, Read cuts
// them into segments, Write merges them again for the receiver's kernel.
// 10 MB must arrive intact, read as super-packets and written in coalesced
// ones, with no checksum error.
func TestGROTCPThroughTwoTUNs(t *testing.T) {
	a := newOffloadRigAddrs(t, 1, netip.MustParsePrefix("10.98.0.1/24"), netip.MustParsePrefix("fd98::1/64"))
	b := newOffloadRigAddrs(t, 1, netip.MustParsePrefix("10.98.1.1/24"), netip.MustParsePrefix("fd98:1::1/64"))
	for _, rt := range []struct {
		r    *offloadRig
		dsts []string
	}{{a, []string{"10.98.1.0/24", "fd98:1::/64"}}, {b, []string{"10.98.0.0/24", "fd98::/64"}}} {
		link, err := rt.r.nl.LinkByName("vxtt1")
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range rt.dsts {
			p := netip.MustParsePrefix(d)
			dst := &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
			if err := rt.r.nl.RouteAdd(&netlink.Route{LinkIndex: link.Attrs().Index, Dst: dst}); err != nil {
				t.Fatalf("route %s: %v", d, err)
			}
		}
	}
	var wg sync.WaitGroup
	var ab, ba atomic.Uint64
	wg.Go(func() { forwardTUN(a.devs[0], b.devs[0], &ab) })
	wg.Go(func() { forwardTUN(b.devs[0], a.devs[0], &ba) })
	t.Cleanup(func() {
		a.devs[0].Close()
		b.devs[0].Close()
		wg.Wait()
	})

	data := make([]byte, 10<<20)
	rand.NewChaCha8([32]byte{1}).Read(data)
	want := sha256.Sum256(data)
	wb, ra := offloadOf(t, b.devs[0]).gro, offloadOf(t, a.devs[0]).rd
	for _, dst := range []string{"10.98.1.1", "fd98:1::1"} {
		t.Run(dst, func(t *testing.T) {
			errsBefore := snmp(t, b.ns, "Tcp", "InCsumErrors")
			before, pktsBefore := countsOf(wb), ab.Load()
			supersBefore, segsBefore := ra.superPackets.Load(), ra.segments.Load()
			var ln net.Listener
			var err error
			inNetns(t, b.ns, func() { ln, err = net.Listen("tcp", net.JoinHostPort(dst, "0")) })
			if err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			type result struct {
				n   int64
				sum [32]byte
				err error
			}
			got := make(chan result, 1)
			go func() {
				c, err := ln.Accept()
				if err != nil {
					got <- result{err: err}
					return
				}
				defer c.Close()
				c.SetDeadline(time.Now().Add(60 * time.Second))
				h := sha256.New()
				n, err := io.Copy(h, c)
				got <- result{n, [32]byte(h.Sum(nil)), err}
			}()
			var c net.Conn
			inNetns(t, a.ns, func() { c, err = net.DialTimeout("tcp", ln.Addr().String(), 5*time.Second) })
			if err != nil {
				t.Fatal(err)
			}
			c.SetDeadline(time.Now().Add(60 * time.Second))
			if _, err := c.Write(data); err != nil {
				c.Close()
				t.Fatal(err)
			}
			c.Close()
			res := <-got
			if res.err != nil || res.n != int64(len(data)) || res.sum != want {
				t.Fatalf("received %d bytes, %v, sha256 match %v; want %d bytes intact", res.n, res.err, res.sum == want, len(data))
			}
			d := countsOf(wb).minus(before)
			pkts := ab.Load() - pktsBefore
			t.Logf("a->b: %d packets read from a, %d writevs to b, %d coalesced packets holding %d segments, %d refused", pkts, d.writevs, d.coalesced, d.merged, d.refused)
			if d.coalesced == 0 || d.merged < 2*d.coalesced || d.writevs >= pkts {
				t.Errorf("no coalescing to speak of: %+v for %d packets", d, pkts)
			}
			if d.refused != 0 {
				t.Errorf("the kernel refused %d coalesced packets", d.refused)
			}
			// The read side: the sender's kernel handed over super-packets,
			// which Read cut.
			supers, segs := ra.superPackets.Load()-supersBefore, ra.segments.Load()-segsBefore
			t.Logf("a: %d super-packets read, cut into %d segments; %d malformed, %d too big", supers, segs, ra.malformed.Load(), ra.tooBig.Load())
			if supers == 0 || segs < 2*supers {
				t.Errorf("no super-packets to speak of read from a: %d, cut into %d segments", supers, segs)
			}
			if ra.malformed.Load() != 0 || ra.tooBig.Load() != 0 {
				t.Errorf("a's reader dropped %d malformed packets and %d segments too big", ra.malformed.Load(), ra.tooBig.Load())
			}
			if e := snmp(t, b.ns, "Tcp", "InCsumErrors") - errsBefore; e != 0 {
				t.Errorf("receiver's Tcp InCsumErrors went up by %d", e)
			}
		})
	}
}

// BenchmarkOffloadWrite writes a batch of 64 segments of one TCP flow to
// an offload device (to a port nobody listens on), with our writer and
// with wireguard-go's, which the device used before.
// BenchmarkGROPlan plans a write of 64 segments of one flow (two
// coalesced packets) whose checksums are complete, and so checked here,
// or pending, as a vxrouter peer that takes them so leaves them: no pass
// over the payload.
func BenchmarkGROPlan(b *testing.B) {
	for _, pending := range []bool{false, true} {
		name := "complete"
		if pending {
			name = "pending"
		}
		b.Run(name, func(b *testing.B) {
			const segs, size = 64, 1400
			bufs := packets(b, flow(netip.AddrPortFrom(groPeer4, 5555), netip.AddrPortFrom(groSelf4, 80), false, segs, size))
			if pending {
				for _, p := range bufs {
					pend(p)
				}
			}
			w := newGROWriter("bench", nil, true, nil)
			b.SetBytes(segs * size)
			b.ReportAllocs()
			for b.Loop() {
				w.plan(bufs, headroom)
			}
			if w.nouts != 2 {
				b.Fatalf("%d outputs, want 2", w.nouts)
			}
		})
	}
}

func BenchmarkOffloadWrite(b *testing.B) {
	r := newOffloadRig(b, 1)
	d := r.devs[0].(*offloadDevice)
	const segs, size = 64, 1400
	bufs := packets(b, flow(netip.AddrPortFrom(peerAddr, 5555), netip.AddrPortFrom(tunAddr, 9), false, segs, size))
	// wireguard-go coalesces into the first buffer of a run, past its
	// length, and changes its header and the slices: give it room, and
	// undo that before each batch (both variants pay for the undo).
	orig := make([][]byte, len(bufs))
	saved := make([][]byte, len(bufs))
	for i, p := range bufs {
		orig[i] = append(make([]byte, 0, headroom+65535), p...)
		saved[i] = slices.Clone(p[:headroom+52])
	}
	restore := func() {
		for i := range bufs {
			bufs[i] = orig[i]
			copy(bufs[i], saved[i])
		}
	}
	for _, v := range []struct {
		name  string
		write func([][]byte, int) (int, error)
	}{{"gro", d.Write}, {"wireguard-go", wireguardTUN(b, d).Write}} {
		b.Run(v.name, func(b *testing.B) {
			b.SetBytes(segs * size)
			b.ReportAllocs()
			for b.Loop() {
				restore()
				if _, err := v.write(bufs, headroom); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
