package lab

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/netip"
	"time"

	"golang.org/x/sys/unix"
)

// Traffic of the kinds users send, for checking that an overlay carries
// more than ping: ICMP checksums are never left to offload, TCP and UDP
// ones are, so a path can answer every ping and still drop every TCP
// segment.

// trafficTimeout bounds a TCP or UDP exchange: seconds of data on a
// path that works, a clear failure on one that does not.
const trafficTimeout = 30 * time.Second

// TCPTo sends size bytes of random data over one TCP connection from the
// pod to dst (listening on port in dst's namespace) and checks that dst
// read exactly those bytes, in order. It returns how long the transfer
// took, from the first write to dst's end of file.
func (p *Pod) TCPTo(ctx context.Context, dst *Pod, port uint16, size int) (time.Duration, error) {
	return p.tcp(ctx, 0, dst, dst.Addr, port, size)
}

// TCPFromPort is TCPTo from local port lport (0: any), so that a test
// knows a connection's whole 4-tuple.
func (p *Pod) TCPFromPort(ctx context.Context, lport uint16, dst *Pod, port uint16, size int) (time.Duration, error) {
	return p.tcp(ctx, lport, dst, dst.Addr, port, size)
}

// TCPToAddr is TCPTo to one of dst's addresses, addr: a dual-stack pod's
// Addr6, say.
func (p *Pod) TCPToAddr(ctx context.Context, dst *Pod, addr netip.Addr, port uint16, size int) (time.Duration, error) {
	return p.tcp(ctx, 0, dst, addr, port, size)
}

// tcp is TCPTo from local port lport (0: any) to dst's address addr.
func (p *Pod) tcp(ctx context.Context, lport uint16, dst *Pod, addr netip.Addr, port uint16, size int) (time.Duration, error) {
	data := make([]byte, size)
	rand.NewChaCha8([32]byte{byte(size), byte(port)}).Read(data)
	ctx, cancel := context.WithTimeout(ctx, trafficTimeout)
	defer cancel()
	to := netip.AddrPortFrom(addr, port)
	from := p.addrFor(addr)
	var ln net.Listener
	if err := dst.Do(func() (err error) {
		ln, err = net.Listen("tcp", to.String())
		return err
	}); err != nil {
		return 0, fmt.Errorf("tcp %s -> %s: listen: %w", from, to, err)
	}
	defer ln.Close()
	stop := context.AfterFunc(ctx, func() { ln.Close() })
	defer stop()

	type result struct {
		got []byte
		err error
	}
	done := make(chan result, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			done <- result{err: err}
			return
		}
		defer c.Close()
		dl, _ := ctx.Deadline()
		c.SetDeadline(dl)
		got, err := io.ReadAll(c)
		done <- result{got, err}
	}()
	var conn net.Conn
	if err := p.Do(func() (err error) {
		d := net.Dialer{Timeout: 10 * time.Second, LocalAddr: net.TCPAddrFromAddrPort(netip.AddrPortFrom(from, lport))}
		conn, err = d.DialContext(ctx, "tcp", to.String())
		return err
	}); err != nil {
		return 0, fmt.Errorf("tcp %s -> %s: connect: %w", from, to, err)
	}
	start := time.Now()
	dl, _ := ctx.Deadline()
	conn.SetDeadline(dl)
	_, werr := conn.Write(data)
	conn.Close()
	r := <-done
	elapsed := time.Since(start)
	switch {
	case werr != nil:
		return elapsed, fmt.Errorf("tcp %s -> %s: write: %w", from, to, werr)
	case r.err != nil:
		return elapsed, fmt.Errorf("tcp %s -> %s: read %d of %d bytes: %w", from, to, len(r.got), size, r.err)
	case !bytes.Equal(r.got, data):
		return elapsed, fmt.Errorf("tcp %s -> %s: %d bytes arrived, not the %d sent, byte for byte", from, to, len(r.got), size)
	}
	return elapsed, nil
}

// UDPTo sends count datagrams of size bytes (at least 4) from the pod to
// dst (on port in dst's namespace), a few at a time with a pause between
// so that no socket buffer on the way need drop one, and returns how many
// distinct ones arrived intact. The error is for what kept the test from
// running, not for loss.
func (p *Pod) UDPTo(ctx context.Context, dst *Pod, port uint16, count, size int) (int, error) {
	return p.UDPToAddr(ctx, dst, dst.Addr, port, count, size)
}

// UDPToAddr is UDPTo to one of dst's addresses, addr.
func (p *Pod) UDPToAddr(ctx context.Context, dst *Pod, addr netip.Addr, port uint16, count, size int) (int, error) {
	if size < 4 || count < 1 {
		return 0, errors.New("udp: want count >= 1 and size >= 4")
	}
	to := netip.AddrPortFrom(addr, port)
	from := p.addrFor(addr)
	var rc, sc *net.UDPConn
	if err := dst.Do(func() (err error) {
		rc, err = net.ListenUDP("udp", net.UDPAddrFromAddrPort(to))
		return err
	}); err != nil {
		return 0, fmt.Errorf("udp %s -> %s: listen: %w", from, to, err)
	}
	defer rc.Close()
	// Room for every datagram: on a loaded machine the reading goroutine
	// can be kept off the CPU for milliseconds, and the default buffer
	// (~200 KB of kernel memory, ~90 datagrams of 1200 bytes) would drop
	// what the path carried. Root may go past net.core.rmem_max.
	if err := forceRcvBuf(rc, 2*count*(size+1024)); err != nil {
		return 0, fmt.Errorf("udp %s -> %s: %w", from, to, err)
	}
	if err := p.Do(func() (err error) {
		sc, err = net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(to))
		return err
	}); err != nil {
		return 0, fmt.Errorf("udp %s -> %s: %w", from, to, err)
	}
	defer sc.Close()

	want := make([]byte, size)
	rand.NewChaCha8([32]byte{byte(size)}).Read(want)
	done := make(chan int, 1)
	rc.SetReadDeadline(time.Now().Add(trafficTimeout))
	go func() {
		seen := make(map[uint32]bool, count)
		buf := make([]byte, size+1)
		for len(seen) < count {
			n, err := rc.Read(buf)
			if err != nil {
				break // the deadline: what is missing is lost
			}
			if i := binary.BigEndian.Uint32(buf); n == size && i < uint32(count) && bytes.Equal(buf[4:n], want[4:]) {
				seen[i] = true
			}
		}
		done <- len(seen)
	}()
	msg := bytes.Clone(want)
	for i := range count {
		if ctx.Err() != nil {
			rc.Close()
			<-done
			return 0, ctx.Err()
		}
		binary.BigEndian.PutUint32(msg, uint32(i))
		if _, err := sc.Write(msg); err != nil {
			rc.Close()
			<-done
			return 0, fmt.Errorf("udp %s -> %s: send: %w", from, to, err)
		}
		if i%16 == 15 {
			time.Sleep(time.Millisecond)
		}
	}
	// What is still on its way has a moment to arrive, not the whole
	// timeout.
	rc.SetReadDeadline(time.Now().Add(2 * time.Second))
	return <-done, nil
}

// forceRcvBuf sets c's receive buffer to n bytes, past net.core.rmem_max
// where the process may (CAP_NET_ADMIN), else as far as it allows.
func forceRcvBuf(c *net.UDPConn, n int) error {
	raw, err := c.SyscallConn()
	if err != nil {
		return err
	}
	return raw.Control(func(fd uintptr) {
		if unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, n) != nil {
			_ = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF, n)
		}
	})
}

// addrFor is the pod's address of dst's family, for messages.
func (p *Pod) addrFor(dst netip.Addr) netip.Addr {
	if dst.Is6() && p.Addr6.IsValid() {
		return p.Addr6
	}
	return p.Addr
}
