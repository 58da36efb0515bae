package tunnel

import (
	"net"
	"net/netip"
)

// ErrClosed is what every Device and Underlay in this package (and in
// tunneltest) reports once it has been closed: after Close, Read and Write
// return an error e with errors.Is(e, ErrClosed). It is net.ErrClosed itself,
// so code that already checks errors.Is(err, net.ErrClosed) needs nothing
// more. Errors from the water device also match os.ErrClosed, which is what
// the *os.File underneath reports.
var ErrClosed = net.ErrClosed

// MaxBatch is the most packets one call moves: the length of the message
// arrays behind recvmmsg/sendmmsg, and the batch size the forwarding loops
// are sized for. 128 is where wireguard-go settled too: larger batches gain
// little throughput and add latency to the first packet of a batch.
const MaxBatch = 128

// Device is a TUN device seen as batches of bare IP packets (no packet
// information header, no Ethernet header).
//
// One goroutine may Read while another Writes. Concurrent Reads, or
// concurrent Writes, are not supported by every implementation; the
// forwarder never makes them.
type Device interface {
	// Read reads one or more IP packets from the device, blocking until at
	// least one is there. The i-th packet is written to bufs[i][offset:] and
	// its length stored in sizes[i]; Read returns how many packets it read,
	// at most min(len(bufs), BatchSize()). len(sizes) must be >= len(bufs).
	//
	// offset is headroom: bytes left untouched in front of each packet so a
	// caller can write an encapsulation header there without moving the
	// packet. Each bufs[i] must have room for offset plus the device's MTU;
	// a longer packet is truncated to the buffer (a segment the offload
	// backend cuts from a super-packet is dropped instead, and counted:
	// cut short, it would be corrupt).
	//
	// The offload backend splits one super-packet into as many buffers as
	// it takes; segments that find no buffer come first from the next
	// Read, so fewer than BatchSize() buffers cost calls, not packets.
	//
	// n > 0 means sizes[:n] are valid even when err != nil. After Close, or
	// when Close is called during a pending Read, Read returns 0 and an error
	// matching ErrClosed.
	Read(bufs [][]byte, sizes []int, offset int) (n int, err error)

	// Write writes each bufs[i][offset:] to the device as one IP packet and
	// returns how many it took. A packet the kernel refuses (an empty one,
	// or one that is not IPv4 or IPv6: EINVAL) does not stop the others: Write
	// goes on with the rest and returns the first error. A TCP or UDP packet
	// whose checksum is wrong may be dropped, counted and taken (see
	// BadChecksumCounter); one whose checksum is still pending, as a kernel
	// sender that left it to offload wrote it, is delivered as the kernel
	// would deliver it. After Close it returns an error matching ErrClosed
	// at once.
	//
	// Write does not change the caller's buffers (the bytes in front of
	// offset included), and needs no headroom: offset may be any value
	// >= 0. The offload backend gathers what it writes, virtio-net
	// headers and coalesced packets, from its own scratch and the
	// caller's payloads.
	Write(bufs [][]byte, offset int) (int, error)

	// BatchSize is the most packets one Read returns, and the batch size a
	// caller should allocate buffers for. It never changes. The water
	// backend reads one packet per syscall: 1.
	BatchSize() int

	// MTU asks the kernel for the device's current MTU (ip link set mtu
	// changes it under a running device).
	MTU() (int, error)

	// Name is the device's name in the kernel, e.g. "vxr0".
	Name() string

	// Close closes the device. It unblocks a pending Read, which then
	// returns an error matching ErrClosed. The first call reports any error
	// closing; later calls do nothing and return nil.
	Close() error
}

// DropCounter is a Device that drops some packets on read instead of
// failing the read, and counts them: the offload device drops a packet
// the kernel handed over malformed, and a segment larger than the
// caller's buffer (the MTU raised under a running node). The forwarder
// adds them to its counters.
type DropCounter interface {
	// Dropped is how many packets the device dropped so far.
	Dropped() uint64
}

// ViewReader is an Underlay that can lend its datagrams instead of copying
// them into the caller's buffers; UDP implements it. The forwarder reads
// through it where it can: with UDP GRO, the kernel's coalesced messages
// are then split into datagrams without touching their bytes.
type ViewReader interface {
	// ReadViews is Read without the copy: datagram i is views[i], from
	// from[i], a slice of the underlay's own memory whose capacity ends
	// with the datagram, valid until the next Read or ReadViews. A caller
	// may change the datagram's bytes in place. len(from) must be >=
	// min(len(views), MaxBatch).
	ReadViews(views [][]byte, from []netip.AddrPort) (int, error)
}

// Underlay is a UDP socket to the other nodes, read and written in batches.
//
// One goroutine may Read while another Writes.
type Underlay interface {
	// Read reads up to len(bufs) datagrams (at most BatchSize()), blocking
	// until at least one is there: datagram i is bufs[i][:sizes[i]], sent
	// from from[i]. len(sizes) and len(from) must be >= len(bufs). A datagram
	// longer than its buffer is truncated, as with net.UDPConn.ReadFrom.
	// After Close, or when Close is called during a pending Read, Read
	// returns 0 and an error matching ErrClosed.
	Read(bufs [][]byte, sizes []int, from []netip.AddrPort) (int, error)

	// Write sends bufs[i] to to[i] as one datagram, for every i, in as few
	// syscalls as it can; len(to) must be >= len(bufs). A datagram the
	// kernel refuses (too big, no route, wrong address family) does not stop
	// the others. Write returns how many datagrams the kernel accepted and
	// the first error. As with any UDP socket, accepted is not delivered.
	Write(bufs [][]byte, to []netip.AddrPort) (int, error)

	// BatchSize is the most datagrams one Read returns. It never changes.
	BatchSize() int

	// LocalAddr is the address the socket is bound to, with the port the
	// kernel picked if it was asked for port 0.
	LocalAddr() netip.AddrPort

	// Close closes the socket. It unblocks a pending Read, which then
	// returns an error matching ErrClosed. Later calls return nil.
	Close() error
}

// BadChecksumCounter is a Device whose Write drops, and counts, TCP and
// UDP packets whose checksum is wrong, where the kernel would have
// dropped them (in the receiving pod, out of the node's sight). Write
// counts such a packet as taken. A checksum still pending (the field
// holds the pseudo-header sum, as a kernel sender that left it to
// offload wrote it) is not wrong: it goes to the kernel marked so. The
// forwarder adds the drops to its counters.
type BadChecksumCounter interface {
	// BadChecksums is how many packets Write dropped so far.
	BadChecksums() uint64
}

// ChecksumLeaver is a Device whose Read can leave the TCP and UDP
// checksums of the packets it hands over pending (the field holding the
// pseudo-header sum, as the kernel leaves it for offload) instead of
// computing them: for packets whose receiver takes them so, that saves a
// pass over every byte. A packet whose checksum the kernel already
// computed keeps it.
type ChecksumLeaver interface {
	// LeaveChecksums says, from the next Read on, which packets may keep
	// their checksum pending: those whose IP destination partial
	// reports true for. partial runs once per packet or super-packet read,
	// from the reading goroutine, so it must be quick and safe to call
	// concurrently with anything else; nil means none.
	LeaveChecksums(partial func(dst netip.Addr) bool)
}

// FlowWriter is an Underlay that can send each datagram from a source
// port picked by the hash of its inner flow (flow entropy; UDP with a
// source pool implements it). The forwarder writes through it where it
// can.
type FlowWriter interface {
	// WriteFlows is Write, with flows[i] the inner flow's hash of
	// datagram i; len(flows) must be >= len(bufs).
	WriteFlows(bufs [][]byte, to []netip.AddrPort, flows []uint32) (int, error)
}
