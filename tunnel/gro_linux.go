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

// Checksum verdicts, computed once per segment and only when needed.
const (
	csumUnknown uint8 = iota
	csumGood
	csumBad
)

// groSeg is what plan reads from one packet's headers.
type groSeg struct {
	pkt  []byte // the packet: bufs[i][offset:]
	kind uint8
	csum uint8 // csumUnknown until verify
	psh  bool  // TCP PSH: ends a run
	iphl int   // IP header length, 20 or 40
	hl   int   // IP and TCP or UDP header length
	pay  int   // payload length, > 0 unless kind is segAlone
	seq  uint32
	id   uint16 // IPv4 identification
}

// groOut is one packet to write: n of the caller's packets from segs[first]
// on. n == 1 is a packet written as it is; n > 1 is a coalesced one, whose
// header is hdrs[k][:VirtioNetHdrLen+hl] and whose segments each give
// pkt[hl:], hl being the first segment's (every segment's) header length.
type groOut struct {
	first, n int
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

	mu    sync.Mutex // one Write at a time: the rest is its scratch
	segs  [MaxBatch]groSeg
	outs  [MaxBatch]groOut
	nouts int
	hdrs  [MaxBatch][VirtioNetHdrLen + maxCoalescedHdr]byte
	plain [VirtioNetHdrLen]byte // all zero: flags 0, GSO_NONE
	iovs  [MaxBatch + 2]unix.Iovec

	// State of flush, kept across the calls of send that one
	// RawConn.Write makes (it calls again after EAGAIN).
	at      int // next output packet
	sub     int // >= 0: writing out at's segments one by one, this one next
	written int // of the caller's packets
	errno   syscall.Errno
	// send is w.send bound once, so that RawConn.Write gets no new
	// closure per call.
	sendFn func(fd uintptr) bool

	// For tests and debugging: writev calls that succeeded, coalesced
	// packets among them and the segments they carried, and coalesced
	// packets the kernel refused (whose segments then went one by one).
	writevs, coalesced, merged, refused atomic.Uint64
}

func newGROWriter(name string, raw syscall.RawConn, udp bool) *groWriter {
	w := &groWriter{name: name, raw: raw, udp: udp}
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
// returns how many of the caller's packets the kernel took and the first
// error. A packet (or coalesced packet) the kernel refuses does not stop
// the rest; a coalesced one it refuses is written again a segment at a
// time, so that only the segments the kernel refuses on their own fail.
func (w *groWriter) write(bufs [][]byte, offset int) (int, error) {
	if w.closed.Load() {
		return 0, fmt.Errorf("write tun %q: %w", w.name, ErrClosed)
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	written := 0
	var first error
	for base := 0; base < len(bufs); {
		used := w.plan(bufs[base:], offset)
		n, err, fatal := w.flush(base)
		written += n
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
		} else {
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

// iovecs points w.iovs at output packet k (or, sub >= 0, at its segment
// sub alone, as it came) and returns them.
func (w *groWriter) iovecs(k, sub int) []unix.Iovec {
	o := &w.outs[k]
	if o.n == 1 || sub >= 0 {
		w.iovs[0] = iovec(w.plain[:])
		w.iovs[1] = iovec(w.segs[o.first+max(sub, 0)].pkt)
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
// fills w.outs. It returns how many packets it took.
func (w *groWriter) plan(bufs [][]byte, offset int) int {
	n := min(len(bufs), MaxBatch)
	for i, b := range bufs[:n] {
		var pkt []byte
		if offset < len(b) {
			pkt = b[offset:]
		}
		w.segs[i] = parseSeg(pkt, w.udp)
	}
	w.nouts = 0
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
		w.outs[w.nouts] = groOut{first: i, n: j - i}
		if j-i > 1 {
			w.coalesce(w.nouts)
		}
		w.nouts++
		i = j
	}
	return n
}

// parseSeg reads pkt's headers and says which runs it may join: an IPv4
// packet without options, not a fragment, or an IPv6 packet without
// extension headers, that carries a TCP segment with payload and no flag
// but ACK (and PSH), or (udp) a UDP datagram with payload. Anything else
// is segAlone, for the kernel to take or refuse as it is.
func parseSeg(pkt []byte, udp bool) groSeg {
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
	switch {
	case proto == unix.IPPROTO_TCP:
		if len(l4) < 20 {
			return s
		}
		thl := int(l4[12]>>4) * 4
		if thl < 20 || thl > len(l4) || l4[12]&0x0f != 0 {
			return s // the reserved bits and AE: not ours to merge
		}
		switch l4[13] {
		case tcpFlagA:
		case tcpFlagA | tcpFlagP:
			s.psh = true
		default:
			return s // SYN, FIN, RST, URG, CWR, ECE, or no ACK
		}
		s.hl, s.seq = s.iphl+thl, binary.BigEndian.Uint32(l4[4:8])
		s.kind = segTCP4
		if v6 {
			s.kind = segTCP6
		}
	case proto == unix.IPPROTO_UDP && udp:
		if len(l4) < 8 || int(binary.BigEndian.Uint16(l4[4:6])) != len(l4) {
			return s
		}
		if v6 && binary.BigEndian.Uint16(l4[6:8]) == 0 {
			return s // IPv6 UDP must have a checksum; the kernel drops it
		}
		s.hl = s.iphl + 8
		s.kind = segUDP4
		if v6 {
			s.kind = segUDP6
		}
	default:
		return s
	}
	s.pay = len(pkt) - s.hl
	if s.pay == 0 {
		s.kind = segAlone // nothing to merge: pure ACKs, empty datagrams
	}
	return s
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

// verify checks s's checksums, once: the IPv4 header's and the TCP or
// UDP one over the pseudo-header, header and payload. A coalesced packet
// reaches the kernel marked as checksummed (NEEDS_CSUM), so a corrupt
// segment must not join one; alone, the kernel checks it and drops it.
func verify(s *groSeg) bool {
	if s.csum == csumUnknown {
		s.csum = csumBad
		if segChecksumOK(s) {
			s.csum = csumGood
		}
	}
	return s.csum == csumGood
}

func segChecksumOK(s *groSeg) bool {
	pkt := s.pkt
	var addrs []byte
	var proto uint8 = unix.IPPROTO_TCP
	if s.kind == segUDP4 || s.kind == segUDP6 {
		proto = unix.IPPROTO_UDP
	}
	if s.iphl == 20 {
		if csumFold(csumAdd(0, pkt[:20])) != 0xffff {
			return false
		}
		if proto == unix.IPPROTO_UDP && binary.BigEndian.Uint16(pkt[26:28]) == 0 {
			return true // IPv4 UDP without a checksum
		}
		addrs = pkt[12:20]
	} else {
		addrs = pkt[8:40]
	}
	l4 := pkt[s.iphl:]
	return csumFold(csumAdd(pseudoHeaderSum(addrs, proto, len(l4)), l4)) == 0xffff
}

// coalesce writes the header of output packet k, a run of segments: the
// first segment's IP and TCP or UDP header with the run's lengths (and the
// last one's PSH), and the virtio-net header that has the kernel cut it
// into gso_size pieces again where it must. The checksum field holds the
// pseudo-header sum, not inverted, as NEEDS_CSUM wants: whoever finishes
// the checksum adds the header and payload to it.
func (w *groWriter) coalesce(k int) {
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
	var proto uint8
	var csumOff int
	switch f.kind {
	case segTCP4, segTCP6:
		gso, proto, csumOff = virtioGSOTCPv4, unix.IPPROTO_TCP, 16
		if f.kind == segTCP6 {
			gso = virtioGSOTCPv6
		}
		if last.psh {
			l4[13] |= tcpFlagP
		}
	default:
		gso, proto, csumOff = virtioGSOUDPL4, unix.IPPROTO_UDP, 6
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
		gsoSize:    uint16(f.pay),
		csumStart:  uint16(f.iphl),
		csumOffset: uint16(csumOff),
	}.encode(h)
}
