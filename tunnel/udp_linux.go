package tunnel

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// socketBuffer is the receive and send buffer asked for. It must ride out
// a forwarding loop that is descheduled while a fast sender goes on: a
// kernel-vxlan peer sends its TCP as 64 KB GSO datagrams, about 64 of
// which fill 4 MiB, under 3 ms at 12 Gbit/s, which is one scheduler slice
// on a busy 2-CPU host. There 4 MiB overflowed (UDP RcvbufErrors 692-731
// in a 5 s four-stream test, 31,000-34,000 TCP retransmits, one 64 KB
// datagram being ~44 segments); 16 MiB, ~11 ms, did not (0, and 15-414
// retransmits). It is a ceiling, not memory taken up front.
const socketBuffer = 16 << 20

const (
	// maxDatagram is the largest UDP payload: what one GRO message can
	// hold, and the size of each receive scratch buffer.
	maxDatagram = 65535
	// maxGSOBytes bounds the payload of one GSO send: an IPv4 packet
	// (20-byte header, 8-byte UDP header) holds no more.
	maxGSOBytes = 65535 - 20 - 8
	// maxGSOSegments bounds the datagrams of one UDP GSO packet, sent on
	// the socket or written to the TUN device: the kernel's
	// UDP_MAX_SEGMENTS, 64 on every kernel that has UDP_SEGMENT (later
	// ones allow 128).
	maxGSOSegments = 64
	// groMessages is how many (possibly coalesced) messages one recvmmsg
	// takes when GRO is on. Each lands in a 64 KB scratch buffer; with
	// coalescing, three such messages already fill a MaxBatch Read, and
	// without it 32 datagrams a syscall is most of the batching's gain.
	groMessages = 32
)

var (
	errFamily  = errors.New("address family does not match the socket")
	errNoAddr  = errors.New("invalid address")
	errArgsLen = errors.New("fewer sizes or addresses than buffers")
)

// UDPOptions say how ListenUDPOptions sets a socket up. The zero value is
// what ListenUDP does: offloads where the kernel has them, no port sharing.
type UDPOptions struct {
	// ReusePort sets SO_REUSEPORT, so that several sockets (one per queue)
	// share the address; the kernel hashes each 4-tuple to one of them.
	ReusePort bool
	// NoGSO never sends with UDP_SEGMENT, even where the kernel has it.
	NoGSO bool
	// NoGRO never asks for UDP_GRO, even where the kernel has it.
	NoGRO bool
	// Yields is how many times a Read that finds the socket empty gives
	// its CPU to another runnable thread (sched_yield) and looks again
	// before it parks: more throughput under load, at some latency; 0
	// parks at once. See waitRead.
	Yields int
	// SourcePool, when more than 0, has WriteFlows send from that many
	// sockets bound to ports of SourcePorts (the zero PortRange: the
	// host's ephemeral range), one per inner flow, instead of from the
	// socket's own port (see srcports_linux.go). Write is unchanged.
	SourcePool  int
	SourcePorts PortRange
	// Source4 and Source6, when set, are where a dual-stack socket
	// ([::]) sends from: a datagram to an IPv4 peer leaves from Source4,
	// to an IPv6 peer from Source6 (an IP_PKTINFO or IPV6_PKTINFO
	// control message on each), as if from a socket bound to each.
	// Without them the kernel picks the source by route, which on a
	// host with several addresses (IPv6 privacy addresses) need not be
	// the one peers know. Each must be an address of the host. Only for
	// a dual-stack socket.
	Source4, Source6 netip.Addr
}

// UDP is the underlay socket: one UDP socket read with recvmmsg and written
// with sendmmsg, up to MaxBatch datagrams a call. It implements Underlay.
//
// Where the kernel has them, it uses UDP segmentation offload on send (a
// run of equal-size datagrams to one peer, the last possibly shorter, goes
// as one large datagram with a UDP_SEGMENT control message, its pieces
// gathered from the callers' buffers without a copy) and UDP GRO on
// receive (the kernel hands over runs of one sender's datagrams as one
// buffer and their size, which Read splits back into datagrams). Neither
// shows in the interface: Write takes and Read returns single datagrams
// with their addresses.
//
// Read and Write may run at the same time in different goroutines. Two
// Reads (or two Writes) at once are safe too but gain nothing: each
// direction has one set of preallocated message headers, guarded by a
// mutex, so they take turns.
type UDP struct {
	conn  *net.UDPConn
	raw   syscall.RawConn
	local netip.AddrPort
	// v6 is an AF_INET6 socket; dual is one that also carries IPv4
	// (IPV6_V6ONLY off), which is what listening on [::] gives.
	v6, dual bool

	// src4 and src6 are the pktinfo control messages naming the source
	// for each family (UDPOptions.Source4, Source6); empty when not set.
	src4, src6 []byte

	// gso is UDP_SEGMENT in use; it goes off for good when the kernel
	// says EIO (a device on the path that cannot checksum offload).
	gso atomic.Bool
	gro bool // UDP_GRO is on: reads go through scratch buffers
	// closed makes Read report ErrClosed even with split datagrams pending.
	closed atomic.Bool

	rmu sync.Mutex
	r   reader

	wmu sync.Mutex
	w   writer

	// pool sends WriteFlows' datagrams, one socket per flow's hash; gw
	// is its scratch. sharedPool: another queue's socket owns the pool
	// (and closes it).
	pool       []*UDP
	sharedPool bool
	gw         flowGroups

	closeOnce sync.Once
}

// reader holds what one recvmmsg needs, allocated once. recvmmsg is called
// directly rather than through x/net's ReadBatch because ReadBatch
// allocates a *net.UDPAddr and its IP for every datagram it returns.
type reader struct {
	hdrs  [MaxBatch]unix.Mmsghdr
	iovs  [MaxBatch]unix.Iovec
	names [MaxBatch][unix.SizeofSockaddrInet6]byte
	// ctrl receives the UDP_GRO control message; uint64s keep each
	// cmsghdr aligned.
	ctrl [groMessages][4]uint64

	vlen  int           // in: how many hdrs to fill
	n     int           // out: how many were filled
	errno syscall.Errno // out
	// recv is r.recvmmsg, bound once so that handing it to RawConn.Read
	// does not allocate a closure per call.
	recv func(fd uintptr) bool

	// With GRO, messages land in scratch (groMessages buffers of
	// maxDatagram bytes) and are handed out a datagram at a time; next
	// and off say where the next one starts, seg and from describe each
	// message (seg is the datagram size, the last one may be shorter).
	scratch []byte
	next    int
	off     int
	seg     [groMessages]int
	from    [groMessages]netip.AddrPort
	// coalesced counts messages that held more than one datagram (for
	// tests; guarded by rmu like the rest).
	coalesced int
	// yields: see UDPOptions.Yields.
	yields int
}

// writer holds what one sendmmsg needs, allocated once. Message m carries
// count[m] of the caller's datagrams, from bufs[first[m]] on, as
// consecutive iovecs; more than one means a GSO send of seg[m]-byte
// segments.
type writer struct {
	hdrs  [MaxBatch]unix.Mmsghdr
	iovs  [MaxBatch]unix.Iovec
	names [MaxBatch][unix.SizeofSockaddrInet6]byte
	// ctrl holds each message's control messages: UDP_SEGMENT (24
	// bytes) for a GSO send, then a pktinfo naming the source (up to 40)
	// on a socket with Sources. uint64s keep each cmsghdr aligned.
	ctrl  [MaxBatch][8]uint64
	first [MaxBatch]int
	count [MaxBatch]int
	seg   [MaxBatch]int

	vlen  int // in: how many hdrs to send, from hdrs[at]
	at    int
	n     int           // out: how many were sent
	errno syscall.Errno // out
	send  func(fd uintptr) bool
	// gsoSends counts messages sent with UDP_SEGMENT (for tests).
	gsoSends int
}

// ListenUDP opens a UDP socket bound to addr. An IPv4 addr gives an IPv4
// socket; a specific IPv6 addr an IPv6-only socket; the unspecified IPv6
// addr ([::]) a dual-stack socket that talks to IPv4 peers too (their
// addresses come back from Read as plain IPv4, not IPv4-mapped). Port 0
// lets the kernel pick one; LocalAddr tells which.
//
// The socket's buffers are set to 16 MiB, with SO_RCVBUFFORCE/SO_SNDBUFFORCE
// when the process may (CAP_NET_ADMIN), else as far as
// net.core.rmem_max/wmem_max allow. UDP GSO and GRO are used where the
// kernel has them (Offloads tells).
func ListenUDP(addr netip.AddrPort) (*UDP, error) {
	return ListenUDPOptions(addr, UDPOptions{})
}

// ListenUDPOptions is ListenUDP with options.
func ListenUDPOptions(addr netip.AddrPort, o UDPOptions) (*UDP, error) {
	ip := addr.Addr()
	if !ip.IsValid() {
		return nil, fmt.Errorf("listen udp %s: %w", addr, errNoAddr)
	}
	network := "udp4"
	switch {
	case ip.Is4In6():
		ip = ip.Unmap()
	case ip.Is6() && ip.IsUnspecified():
		network = "udp" // Go makes [::] dual-stack only for "udp"
	case ip.Is6():
		network = "udp6"
	}
	addr = netip.AddrPortFrom(ip, addr.Port())

	lc := net.ListenConfig{Control: func(network, address string, c syscall.RawConn) error {
		return setSocketOptions(c, o.ReusePort)
	}}
	pc, err := lc.ListenPacket(context.Background(), network, addr.String())
	if err != nil {
		return nil, fmt.Errorf("listen udp %s: %w", addr, err)
	}
	conn := pc.(*net.UDPConn)
	raw, err := conn.SyscallConn()
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("listen udp %s: %w", addr, err)
	}
	local := conn.LocalAddr().(*net.UDPAddr).AddrPort()
	u := &UDP{
		conn:  conn,
		raw:   raw,
		local: netip.AddrPortFrom(local.Addr().Unmap(), local.Port()),
		v6:    network != "udp4",
		dual:  network == "udp",
	}
	u.r.yields = max(o.Yields, 0)
	if o.Source4.IsValid() || o.Source6.IsValid() {
		if err := u.setSources(o.Source4, o.Source6); err != nil {
			conn.Close()
			return nil, fmt.Errorf("listen udp %s: %w", addr, err)
		}
	}
	raw.Control(func(fd uintptr) {
		// getsockopt(UDP_SEGMENT) succeeds exactly where sending with it
		// does (Linux 4.18); setting UDP_GRO where receiving so does (5.0).
		if !o.NoGSO {
			_, err := unix.GetsockoptInt(int(fd), unix.SOL_UDP, unix.UDP_SEGMENT)
			u.gso.Store(err == nil)
		}
		if !o.NoGRO {
			u.gro = unix.SetsockoptInt(int(fd), unix.SOL_UDP, unix.UDP_GRO, 1) == nil
		}
	})
	u.r.init(u.gro)
	u.w.init()
	if o.SourcePool > 0 {
		if err := u.openSourcePool(o.SourcePool, o.SourcePorts, o); err != nil {
			u.Close()
			return nil, err
		}
	}
	return u, nil
}

// ListenUDPQueues opens n sockets on addr with SO_REUSEPORT, one per
// queue. With port 0 the first gets a port from the kernel and the others
// share it. With more than one, a datagram goes to the socket its inner
// flow hashes to (see steerByInnerFlow), not the kernel's hash of the
// outer 4-tuple, which is one value per peer. Before that it binds addr once without SO_REUSEPORT and lets
// go: a port held by anyone else (another vxrouter, the kernel's vxlan)
// is an error, as it is for a single socket, not a share.
func ListenUDPQueues(addr netip.AddrPort, n int, o UDPOptions) (_ []*UDP, err error) {
	n = max(n, 1)
	if n == 1 && !o.ReusePort {
		u, err := ListenUDPOptions(addr, o)
		if err != nil {
			return nil, err
		}
		return []*UDP{u}, nil
	}
	if addr.Port() != 0 {
		probe, err := ListenUDPOptions(addr, UDPOptions{NoGSO: true, NoGRO: true})
		if err != nil {
			return nil, err
		}
		probe.Close()
	}
	o.ReusePort = true
	var us []*UDP
	defer func() {
		if err != nil {
			for _, u := range us {
				u.Close()
			}
		}
	}()
	for i := range n {
		// One source pool for all the queues: the TUN device may move a
		// flow to another queue (the kernel rethinks a TCP connection's
		// hash after a timeout, say), and the flow must keep its port.
		qo := o
		if i > 0 {
			qo.SourcePool = 0
		}
		u, err := ListenUDPOptions(addr, qo)
		if err != nil {
			return nil, err
		}
		if i > 0 {
			u.pool, u.sharedPool = us[0].pool, true
		}
		us = append(us, u)
		addr = netip.AddrPortFrom(addr.Addr(), u.local.Port())
	}
	if n > 1 {
		// Best effort: without the program the kernel hashes the 4-tuple,
		// which works, only with every peer's traffic on one queue.
		_ = us[0].steerByInnerFlow(n)
	}
	return us, nil
}

// steerByInnerFlow attaches to the SO_REUSEPORT group a classic BPF
// program that picks the socket by the inner flow of the VXLAN datagram.
//
// The kernel's own choice hashes the outer 4-tuple, and every VXLAN
// sender (vxrouter, and the kernel's vxlan for most flows) sends to one
// port from one port: all of a peer's traffic would land on one socket
// and one forwarding loop, however many queues there are. The program
// sees the UDP payload (the kernel pulls the UDP header first) and hashes
// the inner IP addresses and transport ports, so each inner flow stays on
// one socket (no reordering) and several flows spread over all of them.
// A datagram too short for the fields it reads makes the program return
// 0, its first socket: bad datagrams are dropped there as anywhere.
func (u *UDP) steerByInnerFlow(n int) error {
	prog := innerFlowProgram(n)
	fprog := unix.SockFprog{Len: uint16(len(prog)), Filter: &prog[0]}
	var serr error
	if err := u.raw.Control(func(fd uintptr) {
		serr = unix.SetsockoptSockFprog(int(fd), unix.SOL_SOCKET, unix.SO_ATTACH_REUSEPORT_CBPF, &fprog)
	}); err != nil {
		return err
	}
	if serr != nil {
		return os.NewSyscallError("setsockopt SO_ATTACH_REUSEPORT_CBPF", serr)
	}
	return nil
}

// innerFlowProgram returns the classic BPF program of steerByInnerFlow for
// n sockets. Offsets are from the start of the UDP payload: the VXLAN
// header (8) and inner Ethernet header (14) put the inner IP header at 22.
// It returns (src^dst address, low 32 bits, ^ src^dst port) * a golden
// ratio constant >> 16, mod n: a multiplicative hash, since ephemeral
// ports of one host often share their low bit.
func innerFlowProgram(n int) []unix.SockFilter {
	const (
		ip    = 22
		v6Src = ip + 8 + 12 // last 4 bytes of the IPv6 source
		v6Dst = ip + 24 + 12
		v6L4  = ip + 40
	)
	ins := func(code uint16, jt, jf uint8, k uint32) unix.SockFilter {
		return unix.SockFilter{Code: code, Jt: jt, Jf: jf, K: k}
	}
	xorInto := []unix.SockFilter{ // A ^= M[0]; M[0] = A
		ins(unix.BPF_LDX|unix.BPF_W|unix.BPF_MEM, 0, 0, 0),
		ins(unix.BPF_ALU|unix.BPF_XOR|unix.BPF_X, 0, 0, 0),
		ins(unix.BPF_ST, 0, 0, 0),
	}
	var v4, v6 []unix.SockFilter
	v4 = append(v4,
		ins(unix.BPF_LD|unix.BPF_W|unix.BPF_ABS, 0, 0, ip+12), // source address
		ins(unix.BPF_ST, 0, 0, 0),
		ins(unix.BPF_LD|unix.BPF_W|unix.BPF_ABS, 0, 0, ip+16)) // destination
	v4 = append(v4, xorInto...)
	v4 = append(v4,
		ins(unix.BPF_LDX|unix.BPF_B|unix.BPF_MSH, 0, 0, ip), // X = IHL*4
		ins(unix.BPF_LD|unix.BPF_H|unix.BPF_IND, 0, 0, ip))  // source port
	v4 = append(v4, xorInto...)
	v4 = append(v4,
		ins(unix.BPF_LDX|unix.BPF_B|unix.BPF_MSH, 0, 0, ip),
		ins(unix.BPF_LD|unix.BPF_H|unix.BPF_IND, 0, 0, ip+2)) // destination port
	v4 = append(v4, xorInto...)
	v6 = append(v6,
		ins(unix.BPF_LD|unix.BPF_W|unix.BPF_ABS, 0, 0, v6Src),
		ins(unix.BPF_ST, 0, 0, 0),
		ins(unix.BPF_LD|unix.BPF_W|unix.BPF_ABS, 0, 0, v6Dst))
	v6 = append(v6, xorInto...)
	v6 = append(v6, ins(unix.BPF_LD|unix.BPF_H|unix.BPF_ABS, 0, 0, v6L4))
	v6 = append(v6, xorInto...)
	v6 = append(v6, ins(unix.BPF_LD|unix.BPF_H|unix.BPF_ABS, 0, 0, v6L4+2))
	v6 = append(v6, xorInto...)
	hash := []unix.SockFilter{
		ins(unix.BPF_LD|unix.BPF_MEM, 0, 0, 0),
		ins(unix.BPF_ALU|unix.BPF_MUL|unix.BPF_K, 0, 0, 0x9e3779b1),
		ins(unix.BPF_ALU|unix.BPF_RSH|unix.BPF_K, 0, 0, 16),
		ins(unix.BPF_ALU|unix.BPF_MOD|unix.BPF_K, 0, 0, uint32(n)),
		ins(unix.BPF_RET|unix.BPF_A, 0, 0, 0),
	}
	// Layout: version test; v4 block; jump to hash; v6 test; v6 block;
	// hash; "return 0" for anything else.
	var p []unix.SockFilter
	p = append(p,
		ins(unix.BPF_LD|unix.BPF_B|unix.BPF_ABS, 0, 0, ip),
		ins(unix.BPF_ALU|unix.BPF_RSH|unix.BPF_K, 0, 0, 4),
		ins(unix.BPF_JMP|unix.BPF_JEQ|unix.BPF_K, 0, uint8(len(v4)+1), 4))
	p = append(p, v4...)
	p = append(p, ins(unix.BPF_JMP|unix.BPF_JA, 0, 0, uint32(1+len(v6))))
	p = append(p, ins(unix.BPF_JMP|unix.BPF_JEQ|unix.BPF_K, 0, uint8(len(v6)+len(hash)), 6))
	p = append(p, v6...)
	p = append(p, hash...)
	p = append(p, ins(unix.BPF_RET|unix.BPF_K, 0, 0, 0))
	return p
}

// setSocketOptions runs before bind. Buffer failures are not errors: the
// socket works with smaller buffers, it only drops sooner under bursts
// (see "Debugging" in the package doc). SO_REUSEPORT is one.
func setSocketOptions(c syscall.RawConn, reusePort bool) error {
	var err error
	cerr := c.Control(func(fd uintptr) {
		for _, o := range [...]struct{ force, plain int }{
			{unix.SO_RCVBUFFORCE, unix.SO_RCVBUF},
			{unix.SO_SNDBUFFORCE, unix.SO_SNDBUF},
		} {
			if unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, o.force, socketBuffer) != nil {
				_ = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, o.plain, socketBuffer)
			}
		}
		if reusePort {
			if e := unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1); e != nil {
				err = os.NewSyscallError("setsockopt SO_REUSEPORT", e)
			}
		}
	})
	if cerr != nil {
		return cerr
	}
	return err
}

// Offloads tells whether the socket sends with UDP GSO and receives with
// UDP GRO.
func (u *UDP) Offloads() (gso, gro bool) { return u.gso.Load(), u.gro }

func (r *reader) init(gro bool) {
	for i := range r.hdrs {
		h := &r.hdrs[i].Hdr
		h.Name = &r.names[i][0]
		h.Iov = &r.iovs[i]
		h.SetIovlen(1)
	}
	if gro {
		r.scratch = make([]byte, groMessages*maxDatagram)
		for i := range groMessages {
			r.iovs[i].Base = &r.scratch[i*maxDatagram]
			r.iovs[i].SetLen(maxDatagram)
		}
	}
	r.recv = r.recvmmsg
}

// recvmmsg runs inside RawConn.Read. Returning false on EAGAIN (after
// waitRead's yields) makes Go's poller park the goroutine until the
// socket is readable, or closed.
func (r *reader) recvmmsg(fd uintptr) bool {
	var done bool
	r.n, r.errno, done = waitRead(unix.SYS_RECVMMSG, fd, unsafe.Pointer(&r.hdrs[0]), r.vlen, r.yields)
	return done
}

// Read reads up to min(len(bufs), MaxBatch) datagrams, in one recvmmsg or
// none (when an earlier Read left datagrams of a coalesced message). It
// does not allocate.
func (u *UDP) Read(bufs [][]byte, sizes []int, from []netip.AddrPort) (int, error) {
	vlen := min(len(bufs), MaxBatch)
	if vlen == 0 {
		return 0, nil
	}
	if len(sizes) < vlen || len(from) < vlen {
		return 0, fmt.Errorf("read udp %s: %w", u.local, errArgsLen)
	}
	u.rmu.Lock()
	defer u.rmu.Unlock()
	if u.gro {
		return u.readGRO(bufs[:vlen], sizes, from, false)
	}
	r := &u.r
	for i, b := range bufs[:vlen] {
		r.point(i, b)
	}
	if err := u.recvPlain(vlen, from); err != nil {
		return 0, err
	}
	for i := range r.n {
		sizes[i] = int(r.hdrs[i].Len)
	}
	return r.n, nil
}

// point makes message i of a recvmmsg without GRO receive into b.
func (r *reader) point(i int, b []byte) {
	r.iovs[i] = iovec(b)
	r.reset(i)
}

// reset readies message i's header for the kernel, which overwrites
// these with what it received.
func (r *reader) reset(i int) {
	r.hdrs[i].Hdr.Namelen = unix.SizeofSockaddrInet6
	r.hdrs[i].Hdr.Flags = 0
	r.hdrs[i].Len = 0
}

// sender is the address message i came from.
func (r *reader) sender(i int) netip.AddrPort {
	return sockaddrAddrPort(r.names[i][:min(int(r.hdrs[i].Hdr.Namelen), len(r.names[i]))])
}

// recvPlain runs one recvmmsg of vlen messages set up by point, and puts
// each sender in from.
func (u *UDP) recvPlain(vlen int, from []netip.AddrPort) error {
	r := &u.r
	r.vlen = vlen
	if err := u.recv(); err != nil {
		return err
	}
	for i := range r.n {
		from[i] = r.sender(i)
	}
	return nil
}

// ReadViews is Read without the copy: datagram i is views[i], a slice of
// the socket's own memory (its capacity ends with the datagram) that stays
// valid until the next Read or ReadViews. It reads up to
// min(len(views), MaxBatch) datagrams, at most 32 messages a call, and does
// not allocate (but for its buffers, on the first call to a socket without
// GRO). It implements ViewReader.
func (u *UDP) ReadViews(views [][]byte, from []netip.AddrPort) (int, error) {
	vlen := min(len(views), MaxBatch)
	if vlen == 0 {
		return 0, nil
	}
	if len(from) < vlen {
		return 0, fmt.Errorf("read udp %s: %w", u.local, errArgsLen)
	}
	u.rmu.Lock()
	defer u.rmu.Unlock()
	if u.gro {
		return u.readGRO(views[:vlen], nil, from, true)
	}
	r := &u.r
	if r.scratch == nil {
		r.scratch = make([]byte, groMessages*maxDatagram)
	}
	vlen = min(vlen, groMessages)
	for i := range vlen {
		r.point(i, r.scratch[i*maxDatagram:(i+1)*maxDatagram])
	}
	if err := u.recvPlain(vlen, from); err != nil {
		return 0, err
	}
	for i := range r.n {
		base := i * maxDatagram
		end := base + int(r.hdrs[i].Len)
		views[i] = r.scratch[base:end:end]
	}
	return r.n, nil
}

// recv runs one recvmmsg of r.vlen messages.
func (u *UDP) recv() error {
	r := &u.r
	if err := u.raw.Read(r.recv); err != nil {
		return fmt.Errorf("read udp %s: %w", u.local, err)
	}
	if r.errno != 0 {
		return fmt.Errorf("read udp %s: %w", u.local, os.NewSyscallError("recvmmsg", r.errno))
	}
	return nil
}

// readGRO hands out the datagrams of messages read earlier, or reads more
// when none are left. Each datagram is copied once, from the scratch
// buffer into the caller's, or, with views, lent: bufs[k] is set to the
// datagram in scratch, and sizes is not used.
func (u *UDP) readGRO(bufs [][]byte, sizes []int, from []netip.AddrPort, views bool) (int, error) {
	r := &u.r
	if u.closed.Load() {
		return 0, fmt.Errorf("read udp %s: %w", u.local, ErrClosed)
	}
	if r.next >= r.n {
		for i := range groMessages {
			r.reset(i)
			r.hdrs[i].Hdr.Control = (*byte)(unsafe.Pointer(&r.ctrl[i][0]))
			r.hdrs[i].Hdr.SetControllen(int(unsafe.Sizeof(r.ctrl[i])))
		}
		r.vlen = groMessages
		r.next, r.off, r.n = 0, 0, 0
		if err := u.recv(); err != nil {
			return 0, err
		}
		for i := range r.n {
			h := &r.hdrs[i]
			r.seg[i] = int(h.Len)
			if s := groSize(r.ctrl[i][:], int(h.Hdr.Controllen)); s > 0 && s < int(h.Len) {
				r.seg[i] = s
				r.coalesced++
			}
			r.from[i] = r.sender(i)
		}
	}
	k := 0
	for k < len(bufs) && r.next < r.n {
		m := r.next
		size := int(r.hdrs[m].Len)
		end := min(r.off+r.seg[m], size)
		base := m * maxDatagram
		if views {
			bufs[k] = r.scratch[base+r.off : base+end : base+end]
		} else {
			sizes[k] = copy(bufs[k], r.scratch[base+r.off:base+end])
		}
		from[k] = r.from[m]
		k++
		r.off = end
		if r.off >= size { // also the way past an empty datagram
			r.next++
			r.off = 0
		}
	}
	return k, nil
}

// groSize returns the segment size from a UDP_GRO control message in the
// first n bytes of ctrl, or 0 when there is none (a lone datagram).
func groSize(ctrl []uint64, n int) int {
	b := unsafe.Slice((*byte)(unsafe.Pointer(&ctrl[0])), len(ctrl)*8)
	b = b[:min(n, len(b))]
	for len(b) >= unix.SizeofCmsghdr {
		h := (*unix.Cmsghdr)(unsafe.Pointer(&b[0]))
		l := int(h.Len)
		if l < unix.SizeofCmsghdr || l > len(b) {
			return 0
		}
		if h.Level == unix.SOL_UDP && h.Type == unix.UDP_GRO && l >= unix.CmsgLen(4) {
			return int(binary.NativeEndian.Uint32(b[unix.CmsgLen(0):]))
		}
		next := unix.CmsgSpace(l - unix.SizeofCmsghdr)
		if next >= len(b) {
			return 0
		}
		b = b[next:]
	}
	return 0
}

// sockaddrAddrPort reads a sockaddr_in or sockaddr_in6 as the kernel wrote
// it. IPv4 peers of a dual-stack socket come as IPv4-mapped IPv6 and are
// unmapped, so one peer has one address whichever socket heard it. The
// IPv6 scope (zone) is dropped: naming it would allocate, and the underlay
// does not use link-local addresses. Anything else gives the zero AddrPort.
func sockaddrAddrPort(sa []byte) netip.AddrPort {
	if len(sa) < 2 {
		return netip.AddrPort{}
	}
	switch binary.NativeEndian.Uint16(sa) {
	case unix.AF_INET:
		if len(sa) < 8 {
			return netip.AddrPort{}
		}
		return netip.AddrPortFrom(netip.AddrFrom4([4]byte(sa[4:8])), binary.BigEndian.Uint16(sa[2:4]))
	case unix.AF_INET6:
		if len(sa) < 24 {
			return netip.AddrPort{}
		}
		return netip.AddrPortFrom(netip.AddrFrom16([16]byte(sa[8:24])).Unmap(), binary.BigEndian.Uint16(sa[2:4]))
	}
	return netip.AddrPort{}
}

func (w *writer) init() {
	w.send = w.sendmmsg
}

// setSources checks UDPOptions.Source4 and Source6 and builds their
// control messages.
// Each source is bound once, to port 0, by a socket that is closed again:
// the kernel's own check that the host has the address, which sendmsg
// would otherwise fail on for every datagram.
func (u *UDP) setSources(src4, src6 netip.Addr) error {
	if !u.dual {
		return errors.New("source addresses are for a dual-stack socket ([::]); a socket bound to an address sends from it")
	}
	for i, a := range []netip.Addr{src4.Unmap(), src6} {
		if !a.IsValid() {
			continue
		}
		if a.IsUnspecified() || a.Zone() != "" || a.Is4() != (i == 0) || a.Is4In6() {
			return fmt.Errorf("source address %v: want a unicast address of the host, IPv4 in Source4 and IPv6 in Source6", a)
		}
		probe, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(a, 0)))
		if err != nil {
			return fmt.Errorf("source address %s is not an address of this host: %w", a, err)
		}
		probe.Close()
		if a.Is4() {
			// struct in_pktinfo: ifindex, spec_dst (the source), addr.
			u.src4 = make([]byte, unix.CmsgSpace(unix.SizeofInet4Pktinfo))
			h := (*unix.Cmsghdr)(unsafe.Pointer(&u.src4[0]))
			h.Level, h.Type = unix.SOL_IP, unix.IP_PKTINFO
			h.SetLen(unix.CmsgLen(unix.SizeofInet4Pktinfo))
			*(*[4]byte)(u.src4[unix.CmsgLen(0)+4:]) = a.As4()
			continue
		}
		// struct in6_pktinfo: addr (the source), ifindex.
		u.src6 = make([]byte, unix.CmsgSpace(unix.SizeofInet6Pktinfo))
		h := (*unix.Cmsghdr)(unsafe.Pointer(&u.src6[0]))
		h.Level, h.Type = unix.SOL_IPV6, unix.IPV6_PKTINFO
		h.SetLen(unix.CmsgLen(unix.SizeofInet6Pktinfo))
		*(*[16]byte)(u.src6[unix.CmsgLen(0):]) = a.As16()
	}
	return nil
}

// control writes message i's control messages, for count datagrams of
// seg bytes to dst, and returns their length (0: none).
func (u *UDP) control(i, count, seg int, dst netip.AddrPort) int {
	b := unsafe.Slice((*byte)(unsafe.Pointer(&u.w.ctrl[i][0])), len(u.w.ctrl[i])*8)
	n := 0
	if count > 1 {
		h := (*unix.Cmsghdr)(unsafe.Pointer(&b[0]))
		h.Level, h.Type = unix.SOL_UDP, unix.UDP_SEGMENT
		h.SetLen(unix.CmsgLen(2))
		binary.NativeEndian.PutUint16(b[unix.CmsgLen(0):], uint16(seg))
		n = unix.CmsgSpace(2)
	}
	src := u.src6
	if dst.Addr().Unmap().Is4() {
		src = u.src4
	}
	n += copy(b[n:], src)
	return n
}

// sendmmsg runs inside RawConn.Write; false on EAGAIN waits for room.
func (w *writer) sendmmsg(fd uintptr) bool {
	var done bool
	w.n, w.errno, done = nonblocking(unix.SYS_SENDMMSG, fd, unsafe.Pointer(&w.hdrs[w.at]), w.vlen)
	return done
}

// Write sends the datagrams in as few sendmmsg calls as it can, a run of
// equal-size datagrams to one peer as one GSO message where the kernel
// can. A datagram the kernel refuses ends a sendmmsg early; Write skips it
// (with GSO, its run) and sends the rest. It does not allocate unless a
// datagram fails.
func (u *UDP) Write(bufs [][]byte, to []netip.AddrPort) (int, error) {
	if len(to) < len(bufs) {
		return 0, fmt.Errorf("write udp %s: %w", u.local, errArgsLen)
	}
	u.wmu.Lock()
	defer u.wmu.Unlock()
	w := &u.w
	sent := 0
	// first is the error of the lowest-numbered datagram that failed:
	// addresses are checked for a whole chunk before it is sent, so
	// failures are not found in order.
	var first error
	firstAt := len(bufs)
	fail := func(i int, err error) {
		if i < firstAt {
			firstAt, first = i, fmt.Errorf("write udp %s: send to %s: %w", u.local, to[i], err)
		}
	}
	// plainUntil: datagrams before it go one per message, after a GSO
	// send of theirs was refused as a whole.
	plainUntil := 0
	for next := 0; next < len(bufs); {
		gso := u.gso.Load()
		m, d := 0, 0 // messages and iovecs used
		total := 0   // bytes in message m-1
		open := false
		for ; next < len(bufs) && d < MaxBatch; next++ {
			b := bufs[next]
			if open && gso && next >= plainUntil && to[next] == to[w.first[m-1]] &&
				len(b) <= w.seg[m-1] && total+len(b) <= maxGSOBytes && w.count[m-1] < maxGSOSegments {
				w.iovs[d] = iovec(b)
				d++
				w.count[m-1]++
				total += len(b)
				open = len(b) == w.seg[m-1] // a shorter one ends the run
				continue
			}
			namelen, err := u.sockaddr(&w.names[m], to[next])
			if err != nil {
				fail(next, err)
				open = false
				continue
			}
			w.iovs[d] = iovec(b)
			h := &w.hdrs[m].Hdr
			h.Name = &w.names[m][0]
			h.Namelen = namelen
			h.Iov = &w.iovs[d]
			w.first[m], w.count[m], w.seg[m] = next, 1, len(b)
			total = len(b)
			open = len(b) > 0
			m++
			d++
		}
		for i := range m {
			h := &w.hdrs[i].Hdr
			h.SetIovlen(w.count[i])
			if n := u.control(i, w.count[i], w.seg[i], to[w.first[i]]); n > 0 {
				h.Control = (*byte)(unsafe.Pointer(&w.ctrl[i][0]))
				h.SetControllen(n)
			} else {
				h.Control = nil
				h.SetControllen(0)
			}
		}
		for k := 0; k < m; {
			w.at, w.vlen = k, m-k
			if err := u.raw.Write(w.send); err != nil {
				return sent, fmt.Errorf("write udp %s: %w", u.local, err)
			}
			if w.errno == 0 {
				for _, c := range w.count[k : k+w.n] {
					sent += c
					if c > 1 {
						w.gsoSends++
					}
				}
				k += w.n
				continue
			}
			if w.count[k] > 1 {
				// The kernel refused the run as a whole. EIO: a device on
				// the route cannot do the checksums GSO needs, so stop using
				// it. Anything else (a segment over the route's MTU): send
				// this run's datagrams one by one, to fail or pass alone.
				if w.errno == unix.EIO {
					u.gso.Store(false)
				}
				plainUntil = w.first[k] + w.count[k]
				next = w.first[k]
				break
			}
			fail(w.first[k], os.NewSyscallError("sendmmsg", w.errno))
			k++ // sendmmsg stopped at the datagram it refused
		}
	}
	return sent, first
}

func iovec(b []byte) unix.Iovec {
	var v unix.Iovec
	if len(b) > 0 {
		v.Base = &b[0]
	}
	v.SetLen(len(b))
	return v
}

// sockaddr writes dst as the sockaddr this socket sends to and returns
// its length.
func (u *UDP) sockaddr(sa *[unix.SizeofSockaddrInet6]byte, dst netip.AddrPort) (uint32, error) {
	addr := dst.Addr().Unmap()
	switch {
	case !addr.IsValid() || dst.Port() == 0:
		return 0, errNoAddr
	case addr.Is4() && !u.v6:
		*sa = [unix.SizeofSockaddrInet6]byte{}
		binary.NativeEndian.PutUint16(sa[0:2], unix.AF_INET)
		binary.BigEndian.PutUint16(sa[2:4], dst.Port())
		*(*[4]byte)(sa[4:8]) = addr.As4()
		return unix.SizeofSockaddrInet4, nil
	case addr.Is4() && !u.dual, addr.Is6() && !u.v6:
		return 0, errFamily
	}
	// IPv6, or IPv4 on a dual-stack socket (As16 maps it). The zone is
	// dropped, as on receive: the underlay uses no link-local addresses.
	*sa = [unix.SizeofSockaddrInet6]byte{}
	binary.NativeEndian.PutUint16(sa[0:2], unix.AF_INET6)
	binary.BigEndian.PutUint16(sa[2:4], dst.Port())
	*(*[16]byte)(sa[8:24]) = addr.As16()
	return unix.SizeofSockaddrInet6, nil
}

// BatchSize is MaxBatch.
func (u *UDP) BatchSize() int { return MaxBatch }

// LocalAddr is the bound address (the port the kernel chose for port 0).
func (u *UDP) LocalAddr() netip.AddrPort { return u.local }

// Close closes the socket, which unblocks a pending Read.
func (u *UDP) Close() error {
	var err error
	u.closeOnce.Do(func() {
		u.closed.Store(true)
		u.closePool()
		if cerr := u.conn.Close(); cerr != nil {
			err = fmt.Errorf("close udp %s: %w", u.local, cerr)
		}
	})
	return err
}
