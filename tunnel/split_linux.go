package tunnel

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The offload device's read path. Each read(2) gives one packet behind a
// virtio-net header. A plain packet is copied to the caller (its checksum
// completed first where the kernel left that to the device); a GSO
// super-packet, up to 64 KB of one TCP or UDP flow, is cut into gso_size
// segments, each with its own IP and TCP or UDP header and full checksums,
// as the kernel's own software segmentation (tcp_gso_segment,
// __udp_gso_segment) would have cut it. Each segment's payload is copied
// and summed in one pass over its bytes.

const (
	// readBufLen holds the virtio-net header and the largest IP packet
	// short of a jumbogram: an IPv6 header and 65535 bytes of payload.
	// TUN's GSO limit (64 KB) keeps super-packets under it.
	readBufLen = VirtioNetHdrLen + 40 + 65535
)

// tunReader is the read side of an offload TUN queue. Everything it needs
// is allocated with it: Read neither allocates nor waits for more than
// its first packet.
type tunReader struct {
	name   string
	raw    syscall.RawConn // nil in tests that only split
	closed atomic.Bool

	mu sync.Mutex // one Read at a time: the rest is its scratch
	// buf is what read(2) fills: the virtio-net header, then the packet.
	// A super-packet stays here until the last of its segments is out.
	buf [readBufLen]byte
	// n and errno are what the last read(2) gave (set inside recvFn or
	// tryFn); again is tryFn finding the device empty.
	n     int
	errno syscall.Errno
	again bool
	// yields is how often a read that finds the device empty yields the
	// CPU and looks again before giving up (waitRead).
	yields int
	// recvFn and tryFn are r.recv and r.try bound once, so that
	// RawConn.Read gets no new closure per call.
	recvFn, tryFn func(fd uintptr) bool
	// sp is the super-packet being split; its segments left over when
	// the caller's buffers ran out go first on the next Read.
	sp superPacket
	// partial says which destinations' packets keep their checksum
	// pending (LeaveChecksums); nil: none.
	partial atomic.Pointer[partialFunc]

	// For tests and debugging: super-packets read and the segments cut
	// from them; packets dropped as malformed (a virtio-net header or IP
	// packet that does not add up); segments dropped because they did
	// not fit the caller's buffer.
	superPackets, segments, malformed, tooBig atomic.Uint64
}

// partialFunc holds a ChecksumLeaver's function, for an atomic pointer.
type partialFunc struct{ fn func(dst netip.Addr) bool }

// leave reports whether pkt may keep its checksum pending.
func (r *tunReader) leave(pkt []byte) bool {
	p := r.partial.Load()
	if p == nil {
		return false
	}
	switch {
	case len(pkt) >= 20 && pkt[0]>>4 == 4:
		return p.fn(netip.AddrFrom4([4]byte(pkt[16:20])))
	case len(pkt) >= 40 && pkt[0]>>4 == 6:
		return p.fn(netip.AddrFrom16([16]byte(pkt[24:40])))
	}
	return false
}

func newTUNReader(name string, raw syscall.RawConn) *tunReader {
	r := &tunReader{name: name, raw: raw}
	r.recvFn, r.tryFn = r.recv, r.try
	return r
}

// read reads packets into bufs[i][offset:], as Device.Read promises: the
// rest of a super-packet that did not fit last time, or else a packet or
// super-packet read now, waiting for one if need be; then, without
// waiting, whatever more the device holds, while buffers last. Malformed
// packets are counted and skipped: one corrupt packet is no reason to
// fail the call (the forwarder pauses on a failed read).
//
// Reading on until the device is empty is what makes a batch of small
// packets (a UDP flood, a run of TCP ACKs): TUN gives one packet per
// read(2), and a batch goes out with one sendmmsg instead of one each.
func (r *tunReader) read(bufs [][]byte, sizes []int, offset int) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed.Load() {
		return 0, fmt.Errorf("read tun %q: %w", r.name, ErrClosed)
	}
	n := 0
	if r.sp.left() {
		n = r.split(bufs, sizes, offset)
	}
	for n == 0 {
		r.n, r.errno = 0, 0
		if err := r.raw.Read(r.recvFn); err != nil {
			// The poller's only error here: the file was closed.
			return 0, tunError("read", r.name, err, r.closed.Load())
		}
		if r.errno != 0 {
			// EBADFD: the device was deleted under the open file.
			return 0, tunError("read", r.name, os.NewSyscallError("read", r.errno), r.errno == unix.EBADFD)
		}
		n = r.handle(r.n, bufs, sizes, offset)
	}
	// More, while a whole super-packet is out (r.buf is free again) and
	// buffers are left. An error here ends the batch, not the call: the
	// next Read meets it again if it lasts.
	for n < len(bufs) && !r.sp.left() {
		r.n, r.errno, r.again = 0, 0, false
		if err := r.raw.Read(r.tryFn); err != nil || r.errno != 0 || r.again {
			break
		}
		n += r.handle(r.n, bufs[n:], sizes[n:], offset)
	}
	return n, nil
}

// recv runs inside RawConn.Read: one read(2), or false when the device
// has nothing yet, even after waitRead's yields (the poller waits, then
// calls again).
func (r *tunReader) recv(fd uintptr) bool {
	var done bool
	r.n, r.errno, done = waitRead(unix.SYS_READ, fd, unsafe.Pointer(&r.buf[0]), len(r.buf), r.yields)
	return done
}

// try is recv that never parks: a device still empty after waitRead's
// yields sets r.again. The yields let the sender add to a batch.
func (r *tunReader) try(fd uintptr) bool {
	r.again = !r.recv(fd)
	return true
}

// handle passes on what read(2) put in r.buf[:n]: the packet, or the
// first segments of a super-packet. It returns how many buffers it
// filled, 0 for a packet it dropped (and counted).
func (r *tunReader) handle(n int, bufs [][]byte, sizes []int, offset int) int {
	if n <= VirtioNetHdrLen {
		r.malformed.Add(1)
		return 0
	}
	h, pkt := decodeVnetHdr(r.buf[:n]), r.buf[VirtioNetHdrLen:n]
	csumStart, csumOff := int(h.csumStart), int(h.csumOffset)
	needsCsum := h.flags&virtioNeedsCsum != 0

	if h.gsoType == 0 { // VIRTIO_NET_HDR_GSO_NONE
		if needsCsum && csumStart+csumOff+2 > len(pkt) {
			r.malformed.Add(1)
			return 0
		}
		out := bufs[0][offset:]
		if !needsCsum || r.leave(pkt) {
			// Complete already, or for a peer that takes it pending (the
			// field holds the pseudo-header sum, as it must then).
			sizes[0] = copy(out, pkt)
			return 1
		}
		// The device is to finish the checksum (CHECKSUM_PARTIAL): the
		// field holds the pseudo-header sum; the sum of everything from
		// csum_start on, the field included, inverted, goes in its place,
		// as skb_checksum_help would put it.
		at := csumStart + csumOff
		if len(pkt) > len(out) {
			// It will be truncated: finish it here, then copy.
			putCsum(pkt[at:], csumAdd(0, pkt[csumStart:]))
			sizes[0] = copy(out, pkt)
			return 1
		}
		copy(out, pkt[:csumStart])
		putCsum(out[at:], csumCopy(out[csumStart:], pkt[csumStart:], 0))
		sizes[0] = len(pkt)
		return 1
	}
	if !r.sp.parse(pkt, h.gsoType, needsCsum, int(h.hdrLen), int(h.gsoSize), csumStart, csumOff) {
		r.malformed.Add(1)
		return 0
	}
	r.sp.partial = r.leave(pkt)
	r.superPackets.Add(1)
	return r.split(bufs, sizes, offset)
}

// split cuts the next segments of r.sp into bufs, and counts them.
func (r *tunReader) split(bufs [][]byte, sizes []int, offset int) int {
	n, tooBig := r.sp.split(bufs, sizes, offset)
	r.segments.Add(uint64(n))
	if tooBig > 0 {
		r.tooBig.Add(uint64(tooBig))
	}
	return n
}

// putCsum finishes a checksum whose field f holds the pseudo-header sum
// and was included in acc. A sum of 0 goes as 0xffff, the same number in
// ones' complement, because 0 in a UDP header means "no checksum" (and is
// refused over IPv6); the kernel does the same (CSUM_MANGLED_0), for any
// protocol in skb_checksum_help, for UDP alone when it segments.
func putCsum(f []byte, acc uint64) {
	c := ^csumFold(acc)
	if c == 0 {
		c = 0xffff
	}
	binary.BigEndian.PutUint16(f, c)
}

// superPacket is a GSO packet in the read buffer, checked and ready to be
// cut: everything about it that is the same for every segment is worked
// out once, in parse.
type superPacket struct {
	pkt     []byte // the IP packet, in tunReader.buf
	l4      int    // where the TCP or UDP header starts: the IP header's length
	hl      int    // IP and TCP or UDP header length: where the payload starts
	gsoSize int    // payload bytes per segment, the last may have fewer
	csumOff int    // of the checksum in the TCP or UDP header
	v4, tcp bool
	// partial: the segments keep their checksums pending, each the
	// pseudo-header sum of its own length, and the payload is only
	// copied, not summed.
	partial bool
	seq     uint32 // TCP sequence number of the first segment
	id      uint16 // IPv4 identification of the first segment
	flags   byte   // TCP flags of the super-packet
	ipSum   uint64 // IPv4 header sum without length, ID and checksum
	pseudo  uint64 // pseudo-header sum without the length
	// next is the first payload byte of the next segment, seg its index;
	// next == len(pkt) once all are out.
	next, seg int
}

func (s *superPacket) left() bool { return s.next < len(s.pkt) }

// parse checks the virtio-net header and the packet's headers against
// each other and the packet's length, and fills s; false means the packet
// is malformed and s is left empty. hdr_len is not used: the kernel sets
// it to the length of the skb's linear part, which may hold payload too;
// parse only checks that it lies within the packet.
func (s *superPacket) parse(pkt []byte, gso byte, needsCsum bool, hdrLen, gsoSize, csumStart, csumOff int) bool {
	*s = superPacket{}
	var proto byte
	switch {
	case len(pkt) < 20 || gsoSize == 0 || hdrLen > len(pkt):
		return false
	case pkt[0]>>4 == 4:
		ihl := int(pkt[0]&0x0f) * 4
		if ihl < 20 || ihl > len(pkt) || int(binary.BigEndian.Uint16(pkt[2:4])) != len(pkt) ||
			binary.BigEndian.Uint16(pkt[6:8])&0x3fff != 0 { // MF or a fragment offset
			return false
		}
		s.v4, s.l4, proto = true, ihl, pkt[9]
	case pkt[0]>>4 == 6:
		if len(pkt) < 40 || int(binary.BigEndian.Uint16(pkt[4:6])) != len(pkt)-40 {
			return false
		}
		// Hop-by-hop and destination options change nothing in the
		// segments (their payload length is from the fixed header on, the
		// pseudo-header takes the fixed header's addresses). A routing
		// header would change the pseudo-header's destination; it and
		// anything else is refused.
		s.l4, proto = 40, pkt[6]
		for proto == unix.IPPROTO_HOPOPTS && s.l4 == 40 || proto == unix.IPPROTO_DSTOPTS {
			if s.l4+8 > len(pkt) {
				return false
			}
			proto, s.l4 = pkt[s.l4], s.l4+(int(pkt[s.l4+1])+1)*8
		}
	default:
		return false
	}
	switch gso &^ virtioGSOECN {
	case virtioGSOTCPv4, virtioGSOTCPv6:
		if (gso&^virtioGSOECN == virtioGSOTCPv4) != s.v4 || proto != unix.IPPROTO_TCP || s.l4+20 > len(pkt) {
			return false
		}
		s.tcp, s.csumOff = true, 16
		s.hl = s.l4 + int(pkt[s.l4+12]>>4)*4
		if s.hl < s.l4+20 {
			return false
		}
	case virtioGSOUDPL4:
		if gso != virtioGSOUDPL4 || proto != unix.IPPROTO_UDP {
			return false
		}
		s.csumOff, s.hl = 6, s.l4+8
	default:
		return false
	}
	// There must be payload to cut, and where the kernel says where the
	// checksum goes, it must agree.
	if s.hl >= len(pkt) || needsCsum && (csumStart != s.l4 || csumOff != s.csumOff) {
		return false
	}

	s.gsoSize = gsoSize
	if s.v4 {
		// The header with total length, ID and checksum zero: each
		// segment adds its own length and ID.
		s.id = binary.BigEndian.Uint16(pkt[4:6])
		s.ipSum = csumAdd(csumAdd(csumAdd(0, pkt[0:2]), pkt[6:10]), pkt[12:s.l4])
		s.pseudo = csumAdd(0, pkt[12:20])
	} else {
		s.pseudo = csumAdd(0, pkt[8:40])
	}
	if s.tcp {
		s.pseudo = csumAddWord(s.pseudo, unix.IPPROTO_TCP)
		s.seq = binary.BigEndian.Uint32(pkt[s.l4+4 : s.l4+8])
		s.flags = pkt[s.l4+13]
	} else {
		s.pseudo = csumAddWord(s.pseudo, unix.IPPROTO_UDP)
	}
	s.pkt, s.next = pkt, s.hl
	return true
}

// split writes the next segments of s to bufs[i][offset:], as many as
// there are buffers for, and returns how many it wrote. A segment longer
// than its buffer is dropped (and counted in tooBig): cut short it would
// be corrupt.
func (s *superPacket) split(bufs [][]byte, sizes []int, offset int) (n, tooBig int) {
	for n < len(bufs) && s.left() {
		end := min(s.next+s.gsoSize, len(s.pkt))
		size := s.hl + end - s.next
		if b := bufs[n]; size > len(b)-offset {
			tooBig++
			s.next, s.seg = end, s.seg+1
			continue
		}
		out := bufs[n][offset : offset+size]
		copy(out, s.pkt[:s.hl])
		if s.v4 {
			// Each segment gets the next ID, as the kernel numbers them
			// (inet_gso_segment), whether or not DF is set.
			id := s.id + uint16(s.seg)
			binary.BigEndian.PutUint16(out[2:4], uint16(size))
			binary.BigEndian.PutUint16(out[4:6], id)
			binary.BigEndian.PutUint16(out[10:12], ^csumFold(csumAddWord(csumAddWord(s.ipSum, uint16(size)), id)))
		} else {
			binary.BigEndian.PutUint16(out[4:6], uint16(size-40))
		}
		l4 := out[s.l4:]
		if s.tcp {
			// As tcp_gso_segment: FIN and PSH on the last segment only,
			// CWR on the first only.
			f := s.flags
			if end < len(s.pkt) {
				f &^= tcpFlagF | tcpFlagP
			}
			if s.seg > 0 {
				f &^= tcpFlagCWR
			}
			binary.BigEndian.PutUint32(l4[4:8], s.seq+uint32(s.seg)*uint32(s.gsoSize))
			l4[13] = f
		} else {
			binary.BigEndian.PutUint16(l4[4:6], uint16(size-s.l4))
		}
		switch {
		case s.partial:
			// Pending, as the kernel's own segmentation leaves a
			// segment for a device that checksums: the pseudo-header sum
			// of the segment's length.
			copy(out[s.hl:], s.pkt[s.next:end])
			binary.BigEndian.PutUint16(l4[s.csumOff:], csumFold(csumAddWord(s.pseudo, uint16(size-s.l4))))
		default:
			l4[s.csumOff], l4[s.csumOff+1] = 0, 0
			// The L4 header's length is a multiple of 4, so the payload
			// starts at an even offset of what is summed.
			acc := csumAdd(csumAddWord(s.pseudo, uint16(size-s.l4)), l4[:s.hl-s.l4])
			acc = csumCopy(out[s.hl:], s.pkt[s.next:end], acc)
			if s.tcp {
				// tcp_gso_segment leaves a sum of 0 as 0; only UDP, where
				// 0 means "no checksum", sends it as 0xffff.
				binary.BigEndian.PutUint16(l4[s.csumOff:], ^csumFold(acc))
			} else {
				putCsum(l4[s.csumOff:], acc)
			}
		}
		sizes[n] = size
		n++
		s.next, s.seg = end, s.seg+1
	}
	return n, tooBig
}
