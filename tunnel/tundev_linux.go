package tunnel

import (
	"fmt"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// What the devices' read and write paths (split_linux.go, gro_linux.go,
// water_linux.go) and the UDP socket (udp_linux.go) share.

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

// nonblocking makes one syscall of three arguments (fd, a pointer, a
// count) on a non-blocking file, again on EINTR, from inside a RawConn
// Read or Write callback. done is false on EAGAIN (the callback returns
// false and Go's poller waits); else r and errno are the call's result.
func nonblocking(trap, fd uintptr, p unsafe.Pointer, n int) (r int, errno syscall.Errno, done bool) {
	for {
		// Syscall6: recvmmsg and sendmmsg take more arguments (flags, a
		// timeout), which must be zero.
		r, _, e := unix.Syscall6(trap, fd, uintptr(p), uintptr(n), 0, 0, 0)
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

// tunError names op on TUN device name. gone (the file closed, or the
// device deleted under it: EBADFD) makes the error match ErrClosed, which
// is how the forwarder learns that the device will never work again.
func tunError(op, name string, err error, gone bool) error {
	if gone {
		return fmt.Errorf("%s tun %q: %w (%w)", op, name, ErrClosed, err)
	}
	return fmt.Errorf("%s tun %q: %w", op, name, err)
}
