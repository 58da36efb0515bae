package tunnel

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The offload device's write path. Segments of one TCP or UDP flow that
// follow each other in a batch (as they do when the forwarder decapsulates
// what one peer sent) go to the kernel as one large packet with a
// virtio-net GSO header, as the kernel's own GRO would have merged them;
// the kernel's TCP and UDP then take them in one piece (or split them
// again, if the packet is forwarded). Each packet is one writev: a header
// from the writer's own scratch, then the segments' payloads straight from
// the caller's buffers. The caller's bytes are neither copied nor changed.

const (
	// maxIPLen bounds a coalesced packet, header included: what IPv4's
	// total length holds (IPv6 is held to the same, so one rule serves).
	maxIPLen = 65535
	// maxCoalescedHdr is the largest header of a coalesced packet: IPv6
	// and a TCP header with 40 bytes of options.
	maxCoalescedHdr = 40 + 60
)

// Segment kinds: which runs a packet can be part of.
const (
	segAlone uint8 = iota // written as it is, never merged
	segTCP4
	segTCP6
	segUDP4
	segUDP6
)

// Checksum verdicts on a TCP or UDP packet. parseSeg finds the ones the
// headers alone tell (a pending checksum, a broken IPv4 header, IPv4 UDP
// without a checksum); verify finds the rest, with a pass over the
// payload, once per segment and only when needed.
const (
	csumUnknown uint8 = iota
	csumGood          // checked, or IPv4 UDP without a checksum
	// csumPending: the field holds the pseudo-header sum, as a sender
	// that leaves its checksum to offload writes it (CHECKSUM_PARTIAL),
	// and nothing on the way finished it. See checksumPending.
	csumPending
	csumBad
)

// groSeg is what plan reads from one packet's headers.
type groSeg struct {
	pkt  []byte // the packet: bufs[i][offset:]
	kind uint8  // the runs it may join
	csum uint8  // a csum verdict, csumUnknown until one is known
	// proto is IPPROTO_TCP or IPPROTO_UDP for a packet whose checksum
	// the writer judges (IPv4 without fragmentation, IPv6 without
	// extension headers), else 0: the kernel's to judge.
	proto   uint8
	csumOff uint8 // of the checksum in the TCP (16) or UDP (6) header
	psh     bool  // TCP PSH: ends a run
	big     bool  // longer than the device's MTU: a TCP one goes with GSO
	iphl    int   // IP header length, 20 or 40
	hl      int   // IP and TCP or UDP header length (with proto set)
	pay     int   // payload length (with proto set); > 0 unless kind is segAlone
	seq     uint32
	id      uint16 // IPv4 identification
}

// How one output packet goes to the kernel.
const (
	// outPlain: the packet as it is, behind an all-zero virtio-net
	// header; the kernel checks its checksum.
	outPlain uint8 = iota
	// outPending: the packet as it is, its checksum still pending,
	// behind a virtio-net header that says so (NEEDS_CSUM), and asks for
	// segmentation (GSO) if it is bigger than the MTU: hdrs[k][:10].
	outPending
	// outMerged: a header of the writer's own, hdrs[k][:VirtioNetHdrLen+hl],
	// then each segment's pkt[hl:] (hl being the first segment's, every
	// segment's, header length): a coalesced run, or one TCP packet bigger
	// than the MTU whose checksum was complete, sent for segmentation.
	outMerged
)

// groOut is one packet to write: n of the caller's packets from segs[first]
// on, n > 1 only for outMerged.
type groOut struct {
	first, n int
	how      uint8
}

// groWriter is the write side of an offload TUN queue: it plans which
// packets of a batch to merge and writes the result, each packet with one
// writev, without allocating. Everything it needs is allocated with it.
type groWriter struct {
	name string
	raw  syscall.RawConn // nil in tests that only plan
	// udp: the kernel takes UDP GSO packets (TUNSETOFFLOAD accepted USO4
	// and USO6, Linux 6.2 on); without it only TCP is merged.
	udp    bool
	closed atomic.Bool

	// mtu is the device's MTU as last asked (0: unknown, nothing is
	// big), through mtuq (nil in tests that only plan). A packet longer
	// than it makes write ask again, once per Write.
	mtu  int
	mtuq *mtuQuery

	mu    sync.Mutex // one Write at a time: the rest is its scratch
	segs  [MaxBatch]groSeg
	outs  [MaxBatch]groOut
	nouts int
	// dropped is how many packets the last plan dropped: TCP or UDP
	// packets whose checksum is wrong. They count as taken.
	dropped int
	hdrs    [MaxBatch][VirtioNetHdrLen + maxCoalescedHdr]byte
	plain   [VirtioNetHdrLen]byte // all zero: flags 0, GSO_NONE
	one     [VirtioNetHdrLen]byte // a refused run's segment's own header
	iovs    [MaxBatch + 2]unix.Iovec

	// State of flush, kept across the calls of send that one
	// RawConn.Write makes (it calls again after EAGAIN).
	at      int // next output packet
	sub     int // >= 0: writing out at's segments one by one, this one next
	written int // of the caller's packets
	errno   syscall.Errno
	// send is w.send bound once, so that RawConn.Write gets no new
	// closure per call.
	sendFn func(fd uintptr) bool

	// badChecksum counts the packets dropped for a wrong TCP or UDP
	// checksum (see BadChecksumCounter).
	badChecksum atomic.Uint64
	// For tests and debugging: writev calls that succeeded, coalesced
	// packets among them and the segments they carried, coalesced
	// packets the kernel refused (whose segments then went one by one),
	// and packets that went with their checksum pending.
	writevs, coalesced, merged, refused, pending atomic.Uint64
}

// newGROWriter returns the writer of a device; mtuq may be nil (tests
// that only plan), and then no packet is too big.
func newGROWriter(name string, raw syscall.RawConn, udp bool, mtuq *mtuQuery) *groWriter {
	w := &groWriter{name: name, raw: raw, udp: udp, mtuq: mtuq}
	if mtuq != nil {
		w.mtu, _ = mtuq.get()
	}
	w.sendFn = w.send
	return w
}

// probeUSO asks the kernel for UDP segmentation offload on top of the TCP
// ones, as wireguard-go does when it opens the device. A kernel that
// refuses (before 6.2) keeps the offloads set before: TUNSETOFFLOAD checks
// every flag before it changes anything.
func probeUSO(raw syscall.RawConn) (bool, error) {
	var ok bool
	err := raw.Control(func(fd uintptr) {
		ok = unix.IoctlSetInt(int(fd), unix.TUNSETOFFLOAD, tunTCPOffloads|unix.TUN_F_USO4|unix.TUN_F_USO6) == nil
	})
	return ok, err
}

// write writes bufs[i][offset:] for every i, coalescing what it can, and
// returns how many of the caller's packets were taken (by the kernel, or
// dropped for a wrong checksum and counted) and the first error. A
// packet (or coalesced packet) the kernel refuses does not stop the rest;
// a coalesced one it refuses is written again a segment at a time, so
// that only the segments the kernel refuses on their own fail.
func (w *groWriter) write(bufs [][]byte, offset int) (int, error) {
	if w.closed.Load() {
		return 0, fmt.Errorf("write tun %q: %w", w.name, ErrClosed)
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	written := 0
	var first error
	asked := false // the MTU, in this Write
	for base := 0; base < len(bufs); {
		used := w.plan(bufs[base:], offset)
		if w.replan(used, asked) {
			asked = true
			used = w.plan(bufs[base:], offset)
		}
		n, err, fatal := w.flush(base)
		written += n + w.dropped
		if fatal {
			return written, err
		}
		if first == nil {
			first = err
		}
		base += used
	}
	return written, first
}

// flush writes the packets plan made; base is the index of segs[0] in the
// caller's batch, for errors. fatal means the device is gone or closed.
func (w *groWriter) flush(base int) (written int, first error, fatal bool) {
	w.at, w.sub, w.written = 0, -1, 0
	for w.at < w.nouts {
		w.errno = 0
		if err := w.raw.Write(w.sendFn); err != nil {
			// The poller's only error here: the file was closed.
			return w.written, tunError("write", w.name, err, w.closed.Load()), true
		}
		if w.errno == 0 {
			break
		}
		o := &w.outs[w.at]
		i := base + o.first
		if w.sub >= 0 {
			i += w.sub
		}
		err := os.NewSyscallError("writev", w.errno)
		if w.errno == unix.EBADFD {
			// The device was deleted under the open file.
			return w.written, tunError("write", w.name, err, true), true
		}
		// A merged packet the kernel calls invalid goes again a segment
		// at a time, so only the segments it refuses alone fail; any
		// other error (EIO: the device is down) would only repeat.
		if o.n > 1 && w.sub < 0 && w.errno == unix.EINVAL {
			w.refused.Add(1)
			w.sub = 0
			continue
		}
		if first == nil {
			first = fmt.Errorf("write tun %q: packet %d: %w", w.name, i, err)
		}
		w.next()
	}
	return w.written, first, false
}

// send runs inside RawConn.Write: it writes output packets from w.at on
// until all are written (true), one fails (true, w.errno set, w.at at the
// failed one) or the device would block (false: the poller waits, then
// calls again).
func (w *groWriter) send(fd uintptr) bool {
	for w.at < w.nouts {
		iov := w.iovecs(w.at, w.sub)
		_, e, done := nonblocking(unix.SYS_WRITEV, fd, unsafe.Pointer(&iov[0]), len(iov))
		if !done {
			return false
		}
		if e != 0 {
			w.errno = e
			return true
		}
		w.writevs.Add(1)
		if o := &w.outs[w.at]; w.sub >= 0 {
			w.written++
			if w.segs[o.first+w.sub].csum == csumPending {
				w.pending.Add(1)
			}
		} else {
			if o.how == outPending {
				w.pending.Add(1)
			}
			w.written += o.n
			if o.n > 1 {
				w.coalesced.Add(1)
				w.merged.Add(uint64(o.n))
			}
		}
		w.next()
	}
	return true
}

// next moves past the packet (or, when splitting, segment) just written
// or refused.
func (w *groWriter) next() {
	if w.sub >= 0 {
		w.sub++
		if w.sub < w.outs[w.at].n {
			return
		}
		w.sub = -1
	}
	w.at++
}

// replan says whether plan, which took n packets, must run again
// because one was bigger than the MTU the writer knew: it asks the
// kernel (once per Write; asked says whether it has), since the MTU may
// have changed under the device and a big packet is cut by it. A device
// whose MTU cannot be read keeps the one it had.
func (w *groWriter) replan(n int, asked bool) bool {
	if asked || w.mtuq == nil {
		return false
	}
	big := false
	for _, s := range w.segs[:n] {
		big = big || s.big
	}
	if !big {
		return false
	}
	mtu, err := w.mtuq.get()
	if err != nil || mtu == w.mtu {
		return false
	}
	w.mtu = mtu
	return true
}

// iovecs points w.iovs at output packet k (or, sub >= 0, at its segment
// sub alone, with its own header) and returns them.
func (w *groWriter) iovecs(k, sub int) []unix.Iovec {
	o := &w.outs[k]
	if sub >= 0 {
		s := &w.segs[o.first+sub]
		w.iovs[0] = iovec(w.plain[:])
		if s.csum == csumPending {
			w.pendingHeader(s, w.one[:])
			w.iovs[0] = iovec(w.one[:])
		}
		w.iovs[1] = iovec(s.pkt)
		return w.iovs[:2]
	}
	switch o.how {
	case outPlain:
		w.iovs[0] = iovec(w.plain[:])
		w.iovs[1] = iovec(w.segs[o.first].pkt)
		return w.iovs[:2]
	case outPending:
		w.iovs[0] = iovec(w.hdrs[k][:VirtioNetHdrLen])
		w.iovs[1] = iovec(w.segs[o.first].pkt)
		return w.iovs[:2]
	}
	segs := w.segs[o.first : o.first+o.n]
	hl := segs[0].hl // joins let in only segments with the first's
	w.iovs[0] = iovec(w.hdrs[k][:VirtioNetHdrLen+hl])
	for s, seg := range segs {
		w.iovs[1+s] = iovec(seg.pkt[hl:])
	}
	return w.iovs[:1+o.n]
}

// plan reads the headers of up to MaxBatch packets of bufs, finds the runs
// of consecutive segments that can go as one, writes their headers, and
// fills w.outs; a packet that goes alone goes as it is, or with its
// checksum pending, or not at all if its checksum is wrong (w.dropped).
// It returns how many packets it took.
func (w *groWriter) plan(bufs [][]byte, offset int) int {
	n := min(len(bufs), MaxBatch)
	for i, b := range bufs[:n] {
		var pkt []byte
		if offset < len(b) {
			pkt = b[offset:]
		}
		w.segs[i] = parseSeg(pkt, w.udp, w.mtu)
	}
	w.nouts, w.dropped = 0, 0
	for i := 0; i < n; {
		f := &w.segs[i]
		j := i + 1
		if f.kind != segAlone && !f.psh {
			// f is the run's first segment (its payload length is the
			// run's segment size), p the last one taken so far.
			p, total := f, f.hl+f.pay
			for j < n {
				q := &w.segs[j]
				// Headers first: a checksum costs a pass over the payload,
				// and f's only matters once a segment can join it.
				if !joins(f, p, q, j-i, total) || !verify(f) || !verify(q) {
					break
				}
				p, total = q, total+q.pay
				j++
				if q.psh || q.pay < f.pay {
					break
				}
			}
		}
		if j-i > 1 {
			w.outs[w.nouts] = groOut{first: i, n: j - i, how: outMerged}
			w.coalesce(w.nouts, f.pay)
			w.nouts++
			i = j
			continue
		}
		o := groOut{first: i, n: 1, how: outPlain}
		switch {
		case f.proto == 0:
		case !verify(f):
			// The kernel would drop it too (its checksum was really
			// computed, and is wrong); here it is counted.
			w.badChecksum.Add(1)
			w.dropped++
			i++
			continue
		case f.csum == csumPending:
			o.how = outPending
			w.pendingHeader(f, w.hdrs[w.nouts][:VirtioNetHdrLen])
		case f.big && f.proto == unix.IPPROTO_TCP:
			o.how = outMerged
		}
		w.outs[w.nouts] = o
		if o.how == outMerged {
			w.coalesce(w.nouts, w.mtu-f.hl)
		}
		w.nouts++
		i++
	}
	return n
}

// pendingHeader writes into h the virtio-net header of s, a packet whose
// checksum is pending, to go as it is: NEEDS_CSUM, where the checksum
// starts and where its field is, so the kernel keeps it CHECKSUM_PARTIAL
// as its own vxlan would have; and, for a TCP packet bigger than the MTU
// (what a kernel sender's TSO packet is, when it reaches us whole),
// segmentation into MTU-size segments.
func (w *groWriter) pendingHeader(s *groSeg, h []byte) {
	v := vnetHdr{
		flags:      virtioNeedsCsum,
		hdrLen:     uint16(s.hl),
		csumStart:  uint16(s.iphl),
		csumOffset: uint16(s.csumOff),
	}
	if s.big && s.proto == unix.IPPROTO_TCP {
		v.gsoType, v.gsoSize = tcpGSOType(s), uint16(w.mtu-s.hl)
	}
	v.encode(h)
}

// tcpGSOType is the virtio-net GSO type for a TCP packet s to be cut
// into segments: CWR set asks for ECN's handling of it (on the first
// segment only).
func tcpGSOType(s *groSeg) uint8 {
	t := uint8(virtioGSOTCPv4)
	if s.iphl == 40 {
		t = virtioGSOTCPv6
	}
	if s.pkt[s.iphl+13]&tcpFlagCWR != 0 {
		t |= virtioGSOECN
	}
	return t
}

// parseSeg reads pkt's headers: which runs it may join, and what its
// checksum is, as far as the headers tell. A run takes an IPv4 packet
// without options, not a fragment, or an IPv6 packet without extension
// headers, that carries a TCP segment with payload and no flag but ACK
// (and PSH), or (udp) a UDP datagram with payload; none takes a packet
// longer than mtu (if mtu > 0), which is big. Any TCP or UDP packet of
// those IP headers has its checksum judged (proto set); anything else
// is the kernel's to take or refuse as it is.
func parseSeg(pkt []byte, udp bool, mtu int) groSeg {
	s := groSeg{pkt: pkt}
	if len(pkt) < 20 {
		return s
	}
	var proto byte
	v6 := false
	switch pkt[0] {
	case 0x45: // version 4, no options
		if int(binary.BigEndian.Uint16(pkt[2:4])) != len(pkt) {
			return s // trailing bytes, or truncated: the kernel's to judge
		}
		if ff := binary.BigEndian.Uint16(pkt[6:8]); ff != 0 && ff != ipv4DF {
			return s // a fragment, or the reserved bit
		}
		proto, s.iphl, s.id = pkt[9], 20, binary.BigEndian.Uint16(pkt[4:6])
	default:
		if pkt[0]>>4 != 6 || len(pkt) < 40 || int(binary.BigEndian.Uint16(pkt[4:6])) != len(pkt)-40 {
			return s
		}
		proto, s.iphl, v6 = pkt[6], 40, true
	}
	l4 := pkt[s.iphl:]
	mergeable := false
	switch {
	case proto == unix.IPPROTO_TCP:
		if len(l4) < 20 {
			return s
		}
		thl := int(l4[12]>>4) * 4
		if thl < 20 || thl > len(l4) {
			return s
		}
		s.proto, s.csumOff, s.hl = unix.IPPROTO_TCP, 16, s.iphl+thl
		// Not the reserved bits nor AE; no flag but ACK, and PSH, which
		// ends a run (SYN, FIN, RST, URG, CWR, ECE go alone).
		if l4[12]&0x0f == 0 {
			switch l4[13] {
			case tcpFlagA:
				mergeable = true
			case tcpFlagA | tcpFlagP:
				mergeable, s.psh = true, true
			}
		}
		s.seq = binary.BigEndian.Uint32(l4[4:8])
		s.kind = segTCP4
		if v6 {
			s.kind = segTCP6
		}
	case proto == unix.IPPROTO_UDP:
		if len(l4) < 8 || int(binary.BigEndian.Uint16(l4[4:6])) != len(l4) {
			return s
		}
		if v6 && binary.BigEndian.Uint16(l4[6:8]) == 0 {
			return s // IPv6 UDP must have a checksum; the kernel drops it
		}
		s.proto, s.csumOff, s.hl = unix.IPPROTO_UDP, 6, s.iphl+8
		mergeable = udp
		s.kind = segUDP4
		if v6 {
			s.kind = segUDP6
		}
	default:
		return s
	}
	s.pay = len(pkt) - s.hl
	s.big = mtu > s.hl && len(pkt) > mtu
	if !mergeable || s.pay == 0 || s.big {
		s.kind = segAlone // pure ACKs, empty datagrams: nothing to merge
	}
	s.csum = headerVerdict(&s)
	return s
}

// headerVerdict is what s's headers alone tell of its checksums:
// csumBad for an IPv4 header whose own checksum is wrong (the kernel
// drops that before anything else), csumGood for IPv4 UDP without a
// checksum, csumPending for a checksum field that holds the pseudo-header
// sum, else csumUnknown: verify must look at the payload.
//
// A pending checksum is what a Linux sender leaves when a device is to
// finish it (CHECKSUM_PARTIAL): a pod's TCP or UDP over a veth, through
// the kernel's vxlan, which sends IPv4 with an outer UDP checksum of 0.
// Nothing on a path of veths and bridges (or a VM's virtio-net) finishes
// it, and the kernel's vxlan receiver, seeing the skb still partial,
// trusts it and delivers it. We cannot see the skb; we see the field. A
// computed checksum equals the pseudo-header sum about once in 65536
// packets, and for such a packet both readings are true at once (see
// checksumPending), so taking it as pending delivers it just the same.
// What is lost is a check that the kernel's vxlan does not make either:
// a datagram corrupted on a path that never computed its checksum, whose
// corruption left the field equal to the pseudo-header sum.
func headerVerdict(s *groSeg) uint8 {
	pkt := s.pkt
	var addrs []byte
	if s.iphl == 20 {
		if csumFold(csumAdd(0, pkt[:20])) != 0xffff {
			return csumBad
		}
		if s.proto == unix.IPPROTO_UDP && binary.BigEndian.Uint16(pkt[26:28]) == 0 {
			return csumGood // IPv4 UDP without a checksum
		}
		addrs = pkt[12:20]
	} else {
		addrs = pkt[8:40]
	}
	if checksumPending(pkt[s.iphl:], addrs, s.proto, int(s.csumOff)) {
		return csumPending
	}
	return csumUnknown
}

// joins says whether q can follow p in the run that f starts, which holds
// count segments and total bytes (f's header and every payload), judging
// by the headers alone: the same flow, IP fields and TCP state, in
// sequence, no longer than f. It is what Linux's own GRO asks (tcp_gro_receive,
// udp_gro_receive, inet_gro_receive), so that the kernel sees what it
// would have seen had it merged them itself, with two differences: with
// DF set any IP IDs are taken (RFC 6864: they mean nothing then; Linux
// wants them counting up or equal), and FIN or ECE never join (Linux
// merges some such; not merging is always safe).
func joins(f, p, q *groSeg, count, total int) bool {
	if q.kind != f.kind || q.hl != f.hl || q.pay > f.pay || total+q.pay > maxIPLen {
		return false
	}
	a, b := f.pkt, q.pkt
	if f.iphl == 20 {
		// TOS, flags (DF), TTL, addresses; the protocol is in kind.
		if a[1] != b[1] || a[6] != b[6] || a[8] != b[8] || !bytes.Equal(a[12:20], b[12:20]) {
			return false
		}
		// Without DF the IDs must count up, as the kernel will number the
		// segments should it split the packet again (with DF the ID means
		// nothing, RFC 6864).
		if a[6]&(ipv4DF>>8) == 0 && q.id != p.id+1 {
			return false
		}
	} else if !bytes.Equal(a[0:4], b[0:4]) || a[7] != b[7] || !bytes.Equal(a[8:40], b[8:40]) {
		// Traffic class and flow label, hop limit, addresses.
		return false
	}
	la, lb := a[f.iphl:f.hl], b[f.iphl:f.hl]
	if !bytes.Equal(la[0:4], lb[0:4]) { // ports
		return false
	}
	if f.kind == segUDP4 || f.kind == segUDP6 {
		return count < maxGSOSegments
	}
	// Ack, data offset, flags (PSH aside, parseSeg allows no others),
	// window, urgent pointer, options; then the sequence number.
	return bytes.Equal(la[8:13], lb[8:13]) && bytes.Equal(la[14:16], lb[14:16]) &&
		bytes.Equal(la[18:], lb[18:]) && q.seq == p.seq+uint32(p.pay)
}

// verify says whether s may reach the kernel marked as checksummed: its
// checksum is pending, or right (checked once, over the pseudo-header,
// header and payload). A coalesced packet goes as NEEDS_CSUM, which the
// kernel trusts, so a corrupt segment must not join one; alone, it is
// dropped.
func verify(s *groSeg) bool {
	if s.csum == csumUnknown {
		s.csum = csumBad
		l4 := s.pkt[s.iphl:]
		var addrs []byte
		if s.iphl == 20 {
			addrs = s.pkt[12:20]
		} else {
			addrs = s.pkt[8:40]
		}
		if csumFold(csumAdd(pseudoHeaderSum(addrs, s.proto, len(l4)), l4)) == 0xffff {
			s.csum = csumGood
		}
	}
	return s.csum == csumGood || s.csum == csumPending
}

// coalesce writes the header of output packet k, a run of segments (or
// one big TCP packet): the first segment's IP and TCP or UDP header with
// the run's lengths (and the last one's PSH), and the virtio-net header
// that has the kernel cut it into gsoSize pieces again where it must.
// The checksum field holds the pseudo-header sum, not inverted, as
// NEEDS_CSUM wants: whoever finishes the checksum adds the header and
// payload to it.
func (w *groWriter) coalesce(k, gsoSize int) {
	o := &w.outs[k]
	segs := w.segs[o.first : o.first+o.n]
	f, last := &segs[0], &segs[len(segs)-1]
	total := f.hl
	for _, s := range segs {
		total += s.pay
	}
	h := w.hdrs[k][:VirtioNetHdrLen+f.hl]
	ip := h[VirtioNetHdrLen:]
	copy(ip, f.pkt[:f.hl])
	l4 := ip[f.iphl:]
	l4Len := total - f.iphl

	var gso uint8
	proto, csumOff := f.proto, int(f.csumOff)
	if proto == unix.IPPROTO_TCP {
		gso = tcpGSOType(f)
		if last.psh {
			l4[13] |= tcpFlagP
		}
	} else {
		gso = virtioGSOUDPL4
		binary.BigEndian.PutUint16(l4[4:6], uint16(l4Len))
	}
	var addrs []byte
	if f.iphl == 20 {
		binary.BigEndian.PutUint16(ip[2:4], uint16(total))
		ip[10], ip[11] = 0, 0
		binary.BigEndian.PutUint16(ip[10:12], ^csumFold(csumAdd(0, ip[:20])))
		addrs = ip[12:20]
	} else {
		binary.BigEndian.PutUint16(ip[4:6], uint16(total-40))
		addrs = ip[8:40]
	}
	binary.BigEndian.PutUint16(l4[csumOff:], csumFold(pseudoHeaderSum(addrs, proto, l4Len)))

	vnetHdr{
		flags:      virtioNeedsCsum,
		gsoType:    gso,
		hdrLen:     uint16(f.hl),
		gsoSize:    uint16(gsoSize),
		csumStart:  uint16(f.iphl),
		csumOffset: uint16(csumOff),
	}.encode(h)
}
