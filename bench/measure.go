package bench

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/netip"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
	"golang.org/x/sys/unix"

	"vxrouter/lab"
)

// Sizes of the traffic generator's buffers.
const (
	tcpWriteSize = 128 << 10 // one write: large, as iperf3's default
	tcpReadSize  = 256 << 10
	udpBatch     = 64      // datagrams per sendmmsg/recvmmsg
	udpRcvBuf    = 8 << 20 // so the receiving socket is not what drops
	latencySize  = 64      // bytes per ping-pong datagram
)

// How long the generator waits for what is still in flight once a test's
// time is up.
const (
	tcpDrain     = 10 * time.Second // data queued in socket buffers, at worst at a crawl
	udpGrace     = 250 * time.Millisecond
	echoTimeout  = time.Second
	setupTimeout = 5 * time.Second
	latencyWarm  = 20 // round trips not counted: ARP, first wake-ups
)

// TCPResult is what one TCP test moved.
type TCPResult struct {
	Streams  int           `json:"streams"`
	Sent     int64         `json:"sent_bytes"`     // what the client's writes accepted
	Received int64         `json:"received_bytes"` // what the server read
	Elapsed  time.Duration `json:"elapsed"`        // first write to the last stream's end of file
	// Retransmits is how many segments the senders sent again, summed
	// over the streams (TCP_INFO's total_retrans): lost, or thought lost
	// because they came out of order.
	Retransmits int64 `json:"retransmits"`
	// MaxPacingRate is the cap on the senders' rate in bit/s as the
	// kernel holds it (TCP_INFO's max pacing rate), 0 for none.
	MaxPacingRate uint64 `json:"max_pacing_rate_bps,omitempty"`
}

// Gbps is the goodput: bytes the server received, in Gbit/s.
func (r TCPResult) Gbps() float64 {
	if r.Elapsed <= 0 {
		return 0
	}
	return float64(r.Received) * 8 / r.Elapsed.Seconds() / 1e9
}

// MeasureTCP runs streams TCP connections from client to server for d:
// the client writes 128 KiB at a time as fast as the path takes it, then
// closes; the server reads until end of file. The time runs from the first
// write until the last stream's data has all arrived, so data still queued
// when d ends is counted and so is the time it takes to drain.
func MeasureTCP(ctx context.Context, client, server *lab.Pod, streams int, d time.Duration) (TCPResult, error) {
	return measureTCP(ctx, client, server, streams, d, 0)
}

// MeasurePacedTCP runs one TCP connection from client to server for d, as
// MeasureTCP does, with the sender paced to at most rate bits per second
// (SO_MAX_PACING_RATE): a load every data plane can carry, so that what
// it costs can be compared below saturation. Since Linux 4.13 TCP paces
// by itself when asked to, without the fq qdisc. The rate counts the
// TCP segments' bytes, so the goodput is a few percent below it.
func MeasurePacedTCP(ctx context.Context, client, server *lab.Pod, rate uint64, d time.Duration) (TCPResult, error) {
	if rate < 8 {
		return TCPResult{Streams: 1}, fmt.Errorf("paced tcp test: rate %d bit/s: want at least 8", rate)
	}
	return measureTCP(ctx, client, server, 1, d, rate/8)
}

// measureTCP is MeasureTCP with each sender paced to pace bytes per
// second, 0 for not at all.
func measureTCP(ctx context.Context, client, server *lab.Pod, streams int, d time.Duration, pace uint64) (TCPResult, error) {
	res := TCPResult{Streams: streams}
	if streams < 1 || d <= 0 {
		return res, fmt.Errorf("tcp test: want streams >= 1 and a duration > 0, have %d and %s", streams, d)
	}
	var ln *net.TCPListener
	err := server.Do(func() error {
		l, err := net.ListenTCP("tcp", net.TCPAddrFromAddrPort(netip.AddrPortFrom(server.Addr, 0)))
		ln = l
		return err
	})
	if err != nil {
		return res, fmt.Errorf("tcp test: listen in %s: %w", server.NS, err)
	}
	defer ln.Close()
	dst := netip.AddrPortFrom(server.Addr, uint16(ln.Addr().(*net.TCPAddr).Port))

	var (
		mu    sync.Mutex
		conns []net.Conn // every socket, for closing on return or cancel
	)
	track := func(c net.Conn) {
		mu.Lock()
		conns = append(conns, c)
		mu.Unlock()
	}
	closeAll := func() {
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
	}
	defer closeAll()
	stop := context.AfterFunc(ctx, func() { ln.Close(); closeAll() })
	defer stop()

	var clients []*net.TCPConn
	err = client.Do(func() error {
		dl := net.Dialer{Timeout: setupTimeout}
		for range streams {
			c, err := dl.DialContext(ctx, "tcp", dst.String())
			if err != nil {
				return err
			}
			track(c)
			tc := c.(*net.TCPConn)
			if pace > 0 {
				if err := setPacing(tc, pace); err != nil {
					return err
				}
			}
			clients = append(clients, tc)
		}
		return nil
	})
	if err != nil {
		return res, fmt.Errorf("tcp test: connect from %s to %s: %w", client.NS, dst, err)
	}
	ln.SetDeadline(time.Now().Add(setupTimeout))
	var servers []*net.TCPConn
	for range streams {
		c, err := ln.AcceptTCP()
		if err != nil {
			return res, fmt.Errorf("tcp test: accept in %s: %w", server.NS, ctxErr(ctx, err))
		}
		track(c)
		servers = append(servers, c)
	}

	var (
		sent, received atomic.Int64
		lastEOF        atomic.Int64 // UnixNano of the latest end of file
		errs           = make([]error, 2*streams)
		wg             sync.WaitGroup
	)
	start := time.Now()
	end := start.Add(d)
	for i, c := range clients {
		wg.Go(func() {
			buf := make([]byte, tcpWriteSize)
			c.SetWriteDeadline(end) // the deadline, not a clock check, ends a blocked write on time
			for {
				n, err := c.Write(buf)
				sent.Add(int64(n))
				if errors.Is(err, os.ErrDeadlineExceeded) {
					break
				}
				if err != nil {
					errs[i] = fmt.Errorf("stream %d: write: %w", i+1, ctxErr(ctx, err))
					return
				}
			}
			if err := c.CloseWrite(); err != nil {
				errs[i] = fmt.Errorf("stream %d: close: %w", i+1, ctxErr(ctx, err))
			}
		})
	}
	for i, c := range servers {
		wg.Go(func() {
			buf := make([]byte, tcpReadSize)
			c.SetReadDeadline(end.Add(tcpDrain))
			for {
				n, err := c.Read(buf)
				received.Add(int64(n))
				if err == io.EOF {
					now := time.Now().UnixNano()
					for {
						old := lastEOF.Load()
						if now <= old || lastEOF.CompareAndSwap(old, now) {
							break
						}
					}
					return
				}
				if err != nil {
					errs[streams+i] = fmt.Errorf("stream %d: read: %w", i+1, ctxErr(ctx, err))
					return
				}
			}
		})
	}
	wg.Wait()
	res.Sent, res.Received = sent.Load(), received.Load()
	res.Elapsed = time.Unix(0, lastEOF.Load()).Sub(start)
	for i, c := range clients {
		info, err := tcpInfo(c)
		if err != nil {
			errs[i] = errors.Join(errs[i], fmt.Errorf("stream %d: %w", i+1, err))
			continue
		}
		res.Retransmits += int64(info.Total_retrans)
		if info.Max_pacing_rate != math.MaxUint64 { // all ones: no cap
			res.MaxPacingRate = info.Max_pacing_rate * 8
		}
	}
	if err := errors.Join(errs...); err != nil {
		return res, fmt.Errorf("tcp test %s -> %s: %w", client.Addr, dst, err)
	}
	return res, nil
}

// setPacing caps how fast c sends, in bytes per second, and so turns on
// the TCP stack's own pacing.
func setPacing(c *net.TCPConn, bytesPerSec uint64) error {
	raw, err := c.SyscallConn()
	if err != nil {
		return fmt.Errorf("pacing: %w", err)
	}
	var serr error
	// 8 bytes: a 64-bit kernel reads the rate as an unsigned long when
	// given that much, so rates above 4 GB/s are not cut to 32 bits.
	if err := raw.Control(func(fd uintptr) {
		serr = unix.SetsockoptUint64(int(fd), unix.SOL_SOCKET, unix.SO_MAX_PACING_RATE, bytesPerSec)
	}); err != nil {
		return fmt.Errorf("pacing: %w", err)
	}
	if serr != nil {
		return fmt.Errorf("pacing at %d B/s: %w", bytesPerSec, os.NewSyscallError("setsockopt SO_MAX_PACING_RATE", serr))
	}
	return nil
}

// tcpInfo reads what the kernel knows of c's sender: how many segments
// it sent again, its pacing.
func tcpInfo(c *net.TCPConn) (*unix.TCPInfo, error) {
	raw, err := c.SyscallConn()
	if err != nil {
		return nil, fmt.Errorf("tcp info: %w", err)
	}
	var info *unix.TCPInfo
	var serr error
	if err := raw.Control(func(fd uintptr) { info, serr = unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO) }); err != nil {
		return nil, fmt.Errorf("tcp info: %w", err)
	}
	if serr != nil {
		return nil, fmt.Errorf("tcp info: %w", os.NewSyscallError("getsockopt TCP_INFO", serr))
	}
	return info, nil
}

// UDPResult is what one UDP test sent and what arrived.
type UDPResult struct {
	Payload  int           `json:"payload_bytes"`
	Sent     int64         `json:"sent"`     // datagrams the client's sendmmsg accepted
	Received int64         `json:"received"` // datagrams of the right size the server read
	Elapsed  time.Duration `json:"elapsed"`  // how long the client sent
}

// PPS is the received datagrams per second of sending.
func (r UDPResult) PPS() float64 {
	if r.Elapsed <= 0 {
		return 0
	}
	return float64(r.Received) / r.Elapsed.Seconds()
}

// LossPct is the share of sent datagrams that did not arrive, in percent.
func (r UDPResult) LossPct() float64 {
	if r.Sent == 0 {
		return 0
	}
	return 100 * float64(r.Sent-r.Received) / float64(r.Sent)
}

// batchConn is the batched I/O of x/net's ipv4 and ipv6 PacketConns.
type batchConn interface {
	ReadBatch(ms []ipv4.Message, flags int) (int, error)
	WriteBatch(ms []ipv4.Message, flags int) (int, error)
}

func newBatchConn(c *net.UDPConn, v6 bool) batchConn {
	if v6 {
		return ipv6.NewPacketConn(c)
	}
	return ipv4.NewPacketConn(c)
}

// MeasureUDP sends payload-byte datagrams from client to server with
// sendmmsg, 64 at a time, as fast as the client's socket takes them, for
// d; the server counts what arrives with recvmmsg until nothing has come
// for a moment after the sender stopped.
func MeasureUDP(ctx context.Context, client, server *lab.Pod, payload int, d time.Duration) (UDPResult, error) {
	res := UDPResult{Payload: payload}
	if payload < 1 || payload > 65000 || d <= 0 {
		return res, fmt.Errorf("udp test: want a payload of 1..65000 bytes and a duration > 0, have %d and %s", payload, d)
	}
	rx, err := listenUDP(server)
	if err != nil {
		return res, fmt.Errorf("udp test: %w", err)
	}
	defer rx.Close()
	if err := forceRcvBuf(rx, udpRcvBuf); err != nil {
		return res, fmt.Errorf("udp test: %w", err)
	}
	dst := rx.LocalAddr().(*net.UDPAddr).AddrPort()
	tx, err := dialUDP(client, dst)
	if err != nil {
		return res, fmt.Errorf("udp test: %w", err)
	}
	defer tx.Close()
	stop := context.AfterFunc(ctx, func() { rx.Close(); tx.Close() })
	defer stop()

	v6 := dst.Addr().Is6()
	var received atomic.Int64
	rxErr := make(chan error, 1)
	go func() {
		bc := newBatchConn(rx, v6)
		msgs := make([]ipv4.Message, udpBatch)
		for i := range msgs {
			msgs[i].Buffers = [][]byte{make([]byte, payload+1)} // +1: a longer datagram is not ours
		}
		for {
			n, err := bc.ReadBatch(msgs, 0)
			for i := range n {
				if msgs[i].N == payload {
					received.Add(1)
				}
			}
			if errors.Is(err, os.ErrDeadlineExceeded) {
				rxErr <- nil
				return
			}
			if err != nil {
				rxErr <- fmt.Errorf("receive: %w", ctxErr(ctx, err))
				return
			}
		}
	}()

	bc := newBatchConn(tx, v6)
	buf := make([]byte, payload)
	msgs := make([]ipv4.Message, udpBatch)
	for i := range msgs {
		msgs[i].Buffers = [][]byte{buf}
	}
	var sendErr error
	start := time.Now()
	end := start.Add(d)
	for time.Now().Before(end) {
		n, err := bc.WriteBatch(msgs, 0)
		res.Sent += int64(max(n, 0))
		// A full queue or an ICMP error from an earlier datagram is part
		// of sending at full speed, not a reason to stop.
		if err != nil && !errors.Is(err, syscall.ENOBUFS) && !errors.Is(err, syscall.ECONNREFUSED) {
			sendErr = fmt.Errorf("send: %w", ctxErr(ctx, err))
			break
		}
	}
	res.Elapsed = time.Since(start)
	// What is still in flight arrives within the grace period; the read
	// deadline then ends the receiver.
	rx.SetReadDeadline(time.Now().Add(udpGrace))
	rerr := <-rxErr
	res.Received = received.Load()
	if err := errors.Join(sendErr, rerr); err != nil {
		return res, fmt.Errorf("udp test %s -> %s: %w", client.Addr, dst, err)
	}
	return res, nil
}

// LatencyResult is the round-trip times of a UDP ping-pong.
type LatencyResult struct {
	Count int           `json:"count"` // round trips answered
	Lost  int           `json:"lost"`  // round trips not answered within a second
	Min   time.Duration `json:"min"`
	P50   time.Duration `json:"p50"`
	P99   time.Duration `json:"p99"`
	Max   time.Duration `json:"max"`
}

// MeasureLatency bounces a 64-byte UDP datagram between client and an echo
// server count times, one outstanding at a time, and takes the percentiles
// of the round-trip times seen by the client (nearest rank).
func MeasureLatency(ctx context.Context, client, server *lab.Pod, count int) (LatencyResult, error) {
	var res LatencyResult
	if count < 1 {
		return res, fmt.Errorf("latency test: want at least 1 round trip, have %d", count)
	}
	srv, err := listenUDP(server)
	if err != nil {
		return res, fmt.Errorf("latency test: %w", err)
	}
	defer srv.Close()
	dst := srv.LocalAddr().(*net.UDPAddr).AddrPort()
	c, err := dialUDP(client, dst)
	if err != nil {
		return res, fmt.Errorf("latency test: %w", err)
	}
	defer c.Close()
	stop := context.AfterFunc(ctx, func() { srv.Close(); c.Close() })
	defer stop()

	echoDone := make(chan struct{})
	go func() {
		defer close(echoDone)
		buf := make([]byte, 2048)
		for {
			n, from, err := srv.ReadFromUDPAddrPort(buf)
			if err != nil {
				return // closed: the test is over
			}
			srv.WriteToUDPAddrPort(buf[:n], from)
		}
	}()
	defer func() { srv.Close(); <-echoDone }()

	out := make([]byte, latencySize)
	in := make([]byte, 2048)
	rtts := make([]time.Duration, 0, count)
	for seq := uint64(0); seq < uint64(count+latencyWarm); seq++ {
		binary.BigEndian.PutUint64(out, seq)
		t0 := time.Now()
		if _, err := c.Write(out); err != nil && !errors.Is(err, syscall.ECONNREFUSED) {
			return res, fmt.Errorf("latency test %s -> %s: send: %w", client.Addr, dst, ctxErr(ctx, err))
		}
		c.SetReadDeadline(t0.Add(echoTimeout))
		answered := false
		for {
			n, err := c.Read(in)
			if errors.Is(err, os.ErrDeadlineExceeded) {
				break
			}
			if err != nil && !errors.Is(err, syscall.ECONNREFUSED) {
				return res, fmt.Errorf("latency test %s -> %s: receive: %w", client.Addr, dst, ctxErr(ctx, err))
			}
			// A late answer to an earlier round trip is not this one's.
			if err == nil && n == latencySize && binary.BigEndian.Uint64(in) == seq {
				answered = true
				break
			}
		}
		rtt := time.Since(t0)
		if seq < latencyWarm {
			continue
		}
		if !answered {
			res.Lost++
			continue
		}
		rtts = append(rtts, rtt)
	}
	res.Count = len(rtts)
	if res.Count == 0 || res.Lost > count/10 {
		return res, fmt.Errorf("latency test %s -> %s: %d of %d round trips unanswered", client.Addr, dst, res.Lost, count)
	}
	slices.Sort(rtts)
	res.Min, res.Max = rtts[0], rtts[len(rtts)-1]
	res.P50, res.P99 = percentile(rtts, 50), percentile(rtts, 99)
	return res, nil
}

// percentile is the nearest-rank p-th percentile of sorted, non-empty ds.
func percentile(ds []time.Duration, p int) time.Duration {
	rank := (p*len(ds) + 99) / 100 // ceil(p/100 * n)
	return ds[max(rank, 1)-1]
}

func listenUDP(p *lab.Pod) (*net.UDPConn, error) {
	var c *net.UDPConn
	err := p.Do(func() error {
		var err error
		c, err = net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(p.Addr, 0)))
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("listen in %s: %w", p.NS, err)
	}
	return c, nil
}

func dialUDP(p *lab.Pod, dst netip.AddrPort) (*net.UDPConn, error) {
	var c *net.UDPConn
	err := p.Do(func() error {
		var err error
		c, err = net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(dst))
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("connect from %s to %s: %w", p.NS, dst, err)
	}
	return c, nil
}

// forceRcvBuf sets the receive buffer past net.core.rmem_max (we are
// root), so that drops happen on the path being measured, not here.
func forceRcvBuf(c *net.UDPConn, size int) error {
	rc, err := c.SyscallConn()
	if err != nil {
		return fmt.Errorf("receive buffer: %w", err)
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, size)
	}); err != nil {
		return fmt.Errorf("receive buffer: %w", err)
	}
	if serr != nil {
		// Without CAP_NET_ADMIN, take what rmem_max allows.
		return c.SetReadBuffer(size)
	}
	return nil
}

// ctxErr prefers the context's error: a socket closed because the bench
// was cancelled should say so, not "use of closed network connection".
func ctxErr(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return err
}
