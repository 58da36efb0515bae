package lab

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"time"

	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
)

// echo pings dst from inside a namespace with the program's own ICMP
// socket (no ping binary needed): count echo requests, interval apart,
// each waiting up to a second for its reply. do runs a function inside the
// namespace; the socket it opens there stays there.
func echo(ctx context.Context, do func(func() error) error, dst netip.Addr, count int, interval time.Duration) (PingResult, error) {
	if count < 1 {
		count = 1
	}
	network, listen := "ip4:icmp", "0.0.0.0"
	var reqType, replyType icmp.Type = ipv4.ICMPTypeEcho, ipv4.ICMPTypeEchoReply
	proto := 1
	if dst.Is6() {
		network, listen = "ip6:ipv6-icmp", "::"
		reqType, replyType = ipv6.ICMPTypeEchoRequest, ipv6.ICMPTypeEchoReply
		proto = 58
	}
	var c *icmp.PacketConn
	if err := do(func() (err error) {
		c, err = icmp.ListenPacket(network, listen)
		return err
	}); err != nil {
		return PingResult{}, fmt.Errorf("open icmp socket: %w", err)
	}
	defer c.Close()
	var idb [2]byte
	rand.Read(idb[:])
	id := int(binary.BigEndian.Uint16(idb[:]))

	var res PingResult
	var rtts []time.Duration
	var out strings.Builder
	fmt.Fprintf(&out, "PING %s: %d echo requests, id %d\n", dst, count, id)
	buf := make([]byte, 1500)
	to := &net.IPAddr{IP: net.IP(dst.AsSlice())}
	for seq := 1; seq <= count; seq++ {
		if seq > 1 {
			select {
			case <-ctx.Done():
				return res, ctx.Err()
			case <-time.After(interval):
			}
		}
		msg := icmp.Message{Type: reqType, Body: &icmp.Echo{ID: id, Seq: seq, Data: []byte("vxrouter lab ping")}}
		b, err := msg.Marshal(nil) // the kernel fills in the ICMPv6 checksum
		if err != nil {
			return res, err
		}
		sent := time.Now()
		if _, err := c.WriteTo(b, to); err != nil {
			res.Sent++
			fmt.Fprintf(&out, "seq %d: send: %v\n", seq, err)
			continue
		}
		res.Sent++
		deadline := sent.Add(time.Second)
		if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
			deadline = d
		}
		c.SetReadDeadline(deadline)
		for {
			n, from, err := c.ReadFrom(buf)
			if err != nil {
				fmt.Fprintf(&out, "seq %d: no reply\n", seq)
				break
			}
			m, err := icmp.ParseMessage(proto, buf[:n])
			if err != nil || m.Type != replyType {
				continue
			}
			e, ok := m.Body.(*icmp.Echo)
			if !ok || e.ID != id || e.Seq != seq {
				continue // a raw socket sees every ICMP message in the namespace
			}
			if ip, ok := from.(*net.IPAddr); !ok || !ip.IP.Equal(to.IP) {
				continue
			}
			rtt := time.Since(sent)
			rtts = append(rtts, rtt)
			res.Received++
			fmt.Fprintf(&out, "reply from %s: seq=%d time=%.3f ms\n", dst, seq, float64(rtt.Microseconds())/1000)
			break
		}
	}
	if len(rtts) > 0 {
		res.RTTMin, res.RTTMax = rtts[0], rtts[0]
		var sum time.Duration
		for _, r := range rtts {
			res.RTTMin, res.RTTMax = min(res.RTTMin, r), max(res.RTTMax, r)
			sum += r
		}
		res.RTTAvg = sum / time.Duration(len(rtts))
	}
	fmt.Fprintf(&out, "%d packets transmitted, %d received\n", res.Sent, res.Received)
	res.Output = out.String()
	if res.Received < res.Sent {
		return res, fmt.Errorf("ping %s: %d of %d answered: %w", dst, res.Received, res.Sent, ErrLoss)
	}
	return res, nil
}
