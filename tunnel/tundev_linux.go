package tunnel

import (
	"encoding/binary"
	"fmt"
	"os"
	"sync"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// What the devices' read and write paths (split_linux.go, gro_linux.go,
// water_linux.go), both devices and the UDP socket (udp_linux.go) share.

// virtio-net header fields (include/uapi/linux/virtio_net.h), and the
// IP and TCP header bits the offload device's paths read or set.
const (
	virtioNeedsCsum = 1 // VIRTIO_NET_HDR_F_NEEDS_CSUM
	virtioGSOTCPv4  = 1 // VIRTIO_NET_HDR_GSO_TCPV4
	virtioGSOTCPv6  = 4 // VIRTIO_NET_HDR_GSO_TCPV6
	virtioGSOUDPL4  = 5 // VIRTIO_NET_HDR_GSO_UDP_L4
	// virtioGSOECN marks a TCP GSO packet whose first segment carries CWR
	// (VIRTIO_NET_HDR_GSO_ECN). The device does not ask for TSO_ECN, so
	// the kernel should not send it; if it does, the split is the same.
	virtioGSOECN = 0x80

	ipv4DF     = 0x4000 // the don't-fragment bit of the flags and offset field
	tcpFlagF   = 0x01   // FIN
	tcpFlagP   = 0x08   // PSH
	tcpFlagA   = 0x10   // ACK
	tcpFlagCWR = 0x80
)

// vnetHdr is struct virtio_net_hdr, the 10 bytes (VirtioNetHdrLen) in
// front of every packet on an offload device, in host byte order: legacy
// virtio, what TUN speaks unless told TUNSETVNETLE/BE. Its layout is
// written down here alone, for the read path (split_linux.go) and the
// write path (gro_linux.go).
type vnetHdr struct {
	flags, gsoType                         uint8
	hdrLen, gsoSize, csumStart, csumOffset uint16
}

// encode writes h into b[:VirtioNetHdrLen].
func (h vnetHdr) encode(b []byte) {
	_ = b[VirtioNetHdrLen-1] // one bounds check for all ten bytes
	b[0], b[1] = h.flags, h.gsoType
	binary.NativeEndian.PutUint16(b[2:4], h.hdrLen)
	binary.NativeEndian.PutUint16(b[4:6], h.gsoSize)
	binary.NativeEndian.PutUint16(b[6:8], h.csumStart)
	binary.NativeEndian.PutUint16(b[8:10], h.csumOffset)
}

// decodeVnetHdr reads the header in b[:VirtioNetHdrLen].
func decodeVnetHdr(b []byte) vnetHdr {
	_ = b[VirtioNetHdrLen-1]
	return vnetHdr{
		flags:      b[0],
		gsoType:    b[1],
		hdrLen:     binary.NativeEndian.Uint16(b[2:4]),
		gsoSize:    binary.NativeEndian.Uint16(b[4:6]),
		csumStart:  binary.NativeEndian.Uint16(b[6:8]),
		csumOffset: binary.NativeEndian.Uint16(b[8:10]),
	}
}

// nonblocking makes one syscall of three arguments (fd, a pointer, a
// count) on a non-blocking file, again on EINTR, from inside a RawConn
// Read or Write callback. done is false on EAGAIN (the callback returns
// false and Go's poller waits); else r and errno are the call's result.
//
// The call is raw: the runtime is not told that the goroutine enters the
// kernel. On a non-blocking file these calls never wait for I/O (that is
// the poller's job; only a page fault or memory reclaim inside them can
// sleep, briefly, and with one P the whole process waits then), so what
// the runtime does for a syscall buys nothing and costs much on the hot
// path: with one P, entering a syscall wakes sysmon, and a long one (a
// TUN write runs the receiving host's stack inside it) has sysmon hand
// the P to another thread, which then parks again: thread wake-ups for
// every super-packet. Raw, the forwarding goroutines keep their thread.
// Measured with `vxrouter bench --tests tcp1` (offload, five alternated
// runs): 5.45 -> 6.09 Gbit/s on one stream, router CPU 1.75 -> 1.33 s
// per GB.
func nonblocking(trap, fd uintptr, p unsafe.Pointer, n int) (r int, errno syscall.Errno, done bool) {
	for {
		// Six arguments: recvmmsg and sendmmsg take more (flags, a
		// timeout), which must be zero.
		r, _, e := unix.RawSyscall6(trap, fd, uintptr(p), uintptr(n), 0, 0, 0)
		switch e {
		case 0:
			return int(r), 0, true
		case unix.EINTR:
		case unix.EAGAIN:
			return 0, 0, false
		default:
			return 0, e, true
		}
	}
}

// waitRead is nonblocking for a reader that would otherwise park: on
// EAGAIN it first gives its CPU to whatever else is runnable there
// (sched_yield) and looks again, up to yields times, and only then
// reports EAGAIN (done false). Under load the next packet is often
// microseconds away, being made by the very thread the yield lets run
// (the TCP sender, the other router); a reader that parks sleeps and must
// be woken, and on a virtual machine each sleep and wake-up costs tens of
// microseconds of CPU and latency. When nothing else is runnable a yield
// returns at once, so an idle reader pays a few microseconds; the price
// is latency when something else is: a yield can hand the CPU away for a
// time slice, while the reader keeps Go's P (with one P the process's
// other loops wait too) and, at the end of an offload Read's batch, the
// packets already read wait to be sent. TUNOptions.Yields and
// UDPOptions.Yields set yields (node: --poll-yields).
func waitRead(trap, fd uintptr, p unsafe.Pointer, n, yields int) (r int, errno syscall.Errno, done bool) {
	for i := 0; ; i++ {
		r, errno, done = nonblocking(trap, fd, p, n)
		if done || i >= yields {
			return r, errno, done
		}
		unix.RawSyscall(unix.SYS_SCHED_YIELD, 0, 0, 0)
	}
}

// tunError names op on TUN device name. gone (the file closed, or the
// device deleted under it: EBADFD) makes the error match ErrClosed, which
// is how the forwarder learns that the device will never work again.
func tunError(op, name string, err error, gone bool) error {
	if gone {
		return fmt.Errorf("%s tun %q: %w (%w)", op, name, ErrClosed, err)
	}
	return fmt.Errorf("%s tun %q: %w", op, name, err)
}

// mtuQuery asks the kernel for a device's MTU through a datagram socket
// made in the device's namespace. A socket stays in the namespace it was
// created in, so the query is about the right device even from a
// goroutine whose thread sits in another namespace (as in tests that
// create the device inside one).
type mtuQuery struct {
	name string
	mu   sync.Mutex
	fd   int // -1 once closed
}

func newMTUQuery(name string) (*mtuQuery, error) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open tun %q: control socket: %w", name, os.NewSyscallError("socket", err))
	}
	return &mtuQuery{name: name, fd: fd}, nil
}

func (q *mtuQuery) get() (int, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.fd < 0 {
		return 0, fmt.Errorf("mtu of tun %q: %w", q.name, ErrClosed)
	}
	ifr, err := unix.NewIfreq(q.name)
	if err != nil {
		return 0, fmt.Errorf("mtu of tun %q: %w", q.name, err)
	}
	if err := unix.IoctlIfreq(q.fd, unix.SIOCGIFMTU, ifr); err != nil {
		return 0, fmt.Errorf("mtu of tun %q: %w", q.name, os.NewSyscallError("ioctl SIOCGIFMTU", err))
	}
	return int(ifr.Uint32()), nil
}

func (q *mtuQuery) close() {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.fd >= 0 {
		unix.Close(q.fd)
		q.fd = -1
	}
}
