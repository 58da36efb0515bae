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
	"syscall"
	"unsafe"

	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
	"golang.org/x/sys/unix"
)

// socketBuffer is the receive and send buffer asked for. A burst of
// MaxBatch full-size datagrams takes ~200 KB; a few MiB rides out a
// forwarding loop that is descheduled for a while without drops.
const socketBuffer = 4 << 20

var (
	errFamily  = errors.New("address family does not match the socket")
	errNoAddr  = errors.New("invalid address")
	errArgsLen = errors.New("fewer sizes or addresses than buffers")
)

// UDP is the underlay socket: one UDP socket read with recvmmsg and written
// with sendmmsg, up to MaxBatch datagrams a call. It implements Underlay.
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

	rmu sync.Mutex
	r   reader

	wmu sync.Mutex
	w   writer

	closeOnce sync.Once
}

// reader holds what one recvmmsg needs, allocated once. recvmmsg is called
// directly rather than through x/net's ReadBatch because ReadBatch
// allocates a *net.UDPAddr and its IP for every datagram it returns.
type reader struct {
	hdrs  [MaxBatch]unix.Mmsghdr
	iovs  [MaxBatch]unix.Iovec
	names [MaxBatch][unix.SizeofSockaddrInet6]byte

	vlen  int           // in: how many hdrs to fill
	n     int           // out: how many were filled
	errno syscall.Errno // out
	// recv is r.recvmmsg, bound once so that handing it to RawConn.Read
	// does not allocate a closure per call.
	recv func(fd uintptr) bool
}

// writer holds what one sendmmsg needs, allocated once: x/net's
// WriteBatch reuses its own headers, and marshals each Message's *UDPAddr
// without allocating, so the addresses are preallocated here.
type writer struct {
	pc    batchWriter
	msgs  [MaxBatch]ipv4.Message
	bufs  [MaxBatch][1][]byte // msgs[i].Buffers is bufs[i][:]
	addrs [MaxBatch]net.UDPAddr
	ips   [MaxBatch][16]byte // addrs[i].IP points into ips[i]
	index [MaxBatch]int      // msgs[i] carries the caller's bufs[index[i]]
}

// batchWriter is ipv4.PacketConn or ipv6.PacketConn: their Message types
// are the same type, so one writer serves both.
type batchWriter interface {
	WriteBatch(ms []ipv4.Message, flags int) (int, error)
}

// ListenUDP opens a UDP socket bound to addr. An IPv4 addr gives an IPv4
// socket; a specific IPv6 addr an IPv6-only socket; the unspecified IPv6
// addr ([::]) a dual-stack socket that talks to IPv4 peers too (their
// addresses come back from Read as plain IPv4, not IPv4-mapped). Port 0
// lets the kernel pick one; LocalAddr tells which.
//
// The socket's buffers are set to 4 MiB, with SO_RCVBUFFORCE/SO_SNDBUFFORCE
// when the process may (CAP_NET_ADMIN), else as far as
// net.core.rmem_max/wmem_max allow.
func ListenUDP(addr netip.AddrPort) (*UDP, error) {
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

	lc := net.ListenConfig{Control: setSocketBuffers}
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
	if u.v6 {
		u.w.pc = ipv6.NewPacketConn(conn)
	} else {
		u.w.pc = ipv4.NewPacketConn(conn)
	}
	u.r.init()
	u.w.init()
	return u, nil
}

// setSocketBuffers is a net.ListenConfig Control function. Failures are
// not errors: the socket works with smaller buffers, it only drops sooner
// under bursts (see "Debugging" in the package doc).
func setSocketBuffers(network, address string, c syscall.RawConn) error {
	return c.Control(func(fd uintptr) {
		for _, o := range [...]struct{ force, plain int }{
			{unix.SO_RCVBUFFORCE, unix.SO_RCVBUF},
			{unix.SO_SNDBUFFORCE, unix.SO_SNDBUF},
		} {
			if unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, o.force, socketBuffer) != nil {
				_ = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, o.plain, socketBuffer)
			}
		}
	})
}

func (r *reader) init() {
	for i := range r.hdrs {
		h := &r.hdrs[i].Hdr
		h.Name = &r.names[i][0]
		h.Iov = &r.iovs[i]
		h.SetIovlen(1)
	}
	r.recv = r.recvmmsg
}

// recvmmsg runs inside RawConn.Read. Returning false on EAGAIN makes Go's
// poller park the goroutine until the socket is readable, or closed.
func (r *reader) recvmmsg(fd uintptr) bool {
	for {
		n, _, errno := unix.Syscall6(unix.SYS_RECVMMSG, fd,
			uintptr(unsafe.Pointer(&r.hdrs[0])), uintptr(r.vlen), 0, 0, 0)
		switch errno {
		case 0:
			r.n, r.errno = int(n), 0
			return true
		case unix.EINTR:
			continue
		case unix.EAGAIN:
			return false
		default:
			r.n, r.errno = 0, errno
			return true
		}
	}
}

// Read reads up to min(len(bufs), MaxBatch) datagrams in one recvmmsg.
// It does not allocate.
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
	r := &u.r
	for i, b := range bufs[:vlen] {
		if len(b) > 0 {
			r.iovs[i].Base = &b[0]
		} else {
			r.iovs[i].Base = nil
		}
		r.iovs[i].SetLen(len(b))
		// The kernel overwrites these with what it received.
		r.hdrs[i].Hdr.Namelen = unix.SizeofSockaddrInet6
		r.hdrs[i].Hdr.Flags = 0
		r.hdrs[i].Len = 0
	}
	r.vlen = vlen
	if err := u.raw.Read(r.recv); err != nil {
		return 0, fmt.Errorf("read udp %s: %w", u.local, err)
	}
	if r.errno != 0 {
		return 0, fmt.Errorf("read udp %s: %w", u.local, os.NewSyscallError("recvmmsg", r.errno))
	}
	for i := range r.n {
		sizes[i] = int(r.hdrs[i].Len)
		from[i] = sockaddrAddrPort(r.names[i][:min(int(r.hdrs[i].Hdr.Namelen), len(r.names[i]))])
	}
	return r.n, nil
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
	for i := range w.msgs {
		w.msgs[i].Buffers = w.bufs[i][:]
		w.msgs[i].Addr = &w.addrs[i]
	}
}

// Write sends the datagrams in chunks of up to MaxBatch per sendmmsg. A
// datagram the kernel refuses ends a sendmmsg early; Write skips it and
// sends the rest. It does not allocate unless a datagram fails.
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
	for next := 0; next < len(bufs); {
		m := 0
		for ; next < len(bufs) && m < MaxBatch; next++ {
			if err := u.setDest(&w.addrs[m], &w.ips[m], to[next]); err != nil {
				if next < firstAt {
					firstAt, first = next, fmt.Errorf("write udp %s: send to %s: %w", u.local, to[next], err)
				}
				continue
			}
			w.bufs[m][0] = bufs[next]
			w.index[m] = next
			m++
		}
		for k := 0; k < m; {
			c, err := w.pc.WriteBatch(w.msgs[k:m], 0)
			if c > 0 {
				sent += c
				k += c
			}
			if err == nil {
				continue
			}
			if errors.Is(err, net.ErrClosed) {
				return sent, fmt.Errorf("write udp %s: %w", u.local, err)
			}
			if i := w.index[k]; i < firstAt {
				firstAt, first = i, fmt.Errorf("write udp %s: send to %s: %w", u.local, to[i], err)
			}
			k++ // sendmmsg stopped at the datagram it refused
		}
	}
	return sent, first
}

// setDest fills a preallocated *net.UDPAddr for dst, reusing its IP bytes.
func (u *UDP) setDest(a *net.UDPAddr, ip *[16]byte, dst netip.AddrPort) error {
	addr := dst.Addr().Unmap()
	switch {
	case !addr.IsValid() || dst.Port() == 0:
		return errNoAddr
	case addr.Is4():
		if u.v6 && !u.dual {
			return errFamily
		}
		*(*[4]byte)(ip[:4]) = addr.As4()
		a.IP = ip[:4]
	default:
		if !u.v6 {
			return errFamily
		}
		*ip = addr.As16()
		a.IP = ip[:16]
	}
	a.Port = int(dst.Port())
	a.Zone = addr.Zone()
	return nil
}

// BatchSize is MaxBatch.
func (u *UDP) BatchSize() int { return MaxBatch }

// LocalAddr is the bound address (the port the kernel chose for port 0).
func (u *UDP) LocalAddr() netip.AddrPort { return u.local }

// Close closes the socket, which unblocks a pending Read.
func (u *UDP) Close() error {
	var err error
	u.closeOnce.Do(func() {
		if cerr := u.conn.Close(); cerr != nil {
			err = fmt.Errorf("close udp %s: %w", u.local, cerr)
		}
	})
	return err
}
