package route

import (
	"encoding/binary"
	"net/netip"
	"sync"
	"time"
)

// Answers to packets the overlay cannot carry. Without them, a packet to
// an overlay address that no lease covers vanishes: ping waits for its
// timeout, connect for its retries. With them, the sender's kernel hears
// at once, through the TUN device, what a router on the path would have
// told it: no route (ICMP destination unreachable, "network
// unreachable"), or too big for the tunnel (ICMP fragmentation needed /
// ICMPv6 packet too big, with the MTU that fits).

// Kinds of answer.
const (
	icmpNoRoute = iota
	icmpTooBig
)

const (
	// icmpRate and icmpBurst bound the answers a forwarder sends: the
	// token bucket refills icmpRate a second up to icmpBurst, shared by
	// its queues, so a flood to a dead address costs a trickle.
	icmpRate  = 100
	icmpBurst = 20
	// Most of the offending packet an answer quotes: an IPv4 answer stays
	// within 576 bytes (RFC 1812 4.3.2.3), an IPv6 one within the minimum
	// MTU of 1280 (RFC 4443 2.4 (c)).
	icmp4Quote = 576 - 20 - 8
	icmp6Quote = 1280 - 40 - 8
	// maxICMP is the largest answer.
	maxICMP = 1280
)

// icmpLimiter is the forwarder's token bucket for answers.
type icmpLimiter struct {
	mu     sync.Mutex
	tokens float64
	last   time.Time
}

// allow takes a token if there is one.
func (l *icmpLimiter) allow(now time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.last.IsZero() {
		l.tokens = icmpBurst
	} else {
		l.tokens = min(icmpBurst, l.tokens+now.Sub(l.last).Seconds()*icmpRate)
	}
	l.last = now
	if l.tokens < 1 {
		return false
	}
	l.tokens--
	return true
}

// answerable says whether pkt, an IP packet read from the TUN device, may
// get an ICMP error: never for an ICMP error itself (no error about an
// error), a fragment other than the first, or a packet from or to a
// multicast or broadcast address, or from an unspecified one (RFC 1122
// 3.2.2, RFC 4443 2.4 (e)).
func answerable(pkt []byte) bool {
	switch pkt[0] >> 4 {
	case 4:
		if len(pkt) < 20 {
			return false
		}
		src, dst := netip.AddrFrom4([4]byte(pkt[12:16])), netip.AddrFrom4([4]byte(pkt[16:20]))
		if bad(src) || bad(dst) || dst == netip.AddrFrom4([4]byte{255, 255, 255, 255}) {
			return false
		}
		if binary.BigEndian.Uint16(pkt[6:8])&0x1fff != 0 {
			return false // not the first fragment
		}
		ihl := int(pkt[0]&0x0f) * 4
		if pkt[9] == 1 && len(pkt) > ihl {
			// ICMP: only queries (echo, timestamp, ...) get answers; the
			// errors are types 3, 4, 5, 11 and 12.
			switch pkt[ihl] {
			case 3, 4, 5, 11, 12:
				return false
			}
		}
		return true
	case 6:
		if len(pkt) < 40 {
			return false
		}
		src, dst := netip.AddrFrom16([16]byte(pkt[8:24])), netip.AddrFrom16([16]byte(pkt[24:40]))
		if bad(src) || bad(dst) {
			return false
		}
		// ICMPv6 errors are types 0-127. (A packet whose ICMPv6 header
		// sits behind extension headers is answered as not an error.)
		if pkt[6] == 58 && len(pkt) > 40 && pkt[40] < 128 {
			return false
		}
		return true
	}
	return false
}

// bad is an address no answer goes to or is about.
func bad(a netip.Addr) bool { return a.IsMulticast() || a.IsUnspecified() }

// buildICMP writes into out (at least maxICMP bytes) the answer of the
// given kind from src to the sender of pkt, quoting pkt, and returns it;
// mtu is what fits, for icmpTooBig. nil if src is not of pkt's family.
func buildICMP(out []byte, kind int, src netip.Addr, pkt []byte, mtu int) []byte {
	if pkt[0]>>4 == 4 {
		if !src.Is4() {
			return nil
		}
		quote := pkt[:min(len(pkt), icmp4Quote)]
		n := 20 + 8 + len(quote)
		ip := out[:n]
		clear(ip[:28])
		ip[0] = 0x45
		binary.BigEndian.PutUint16(ip[2:4], uint16(n))
		ip[8] = 64 // TTL
		ip[9] = 1  // ICMP
		s := src.As4()
		copy(ip[12:16], s[:])
		copy(ip[16:20], pkt[12:16]) // back to the sender
		binary.BigEndian.PutUint16(ip[10:12], ^fold(sum(0, ip[:20])))
		icmp := ip[20:]
		icmp[0] = 3 // destination unreachable
		if kind == icmpTooBig {
			icmp[1] = 4 // fragmentation needed and DF set
			binary.BigEndian.PutUint16(icmp[6:8], uint16(mtu))
		}
		copy(icmp[8:], quote)
		binary.BigEndian.PutUint16(icmp[2:4], ^fold(sum(0, icmp)))
		return ip
	}
	if !src.Is6() {
		return nil
	}
	quote := pkt[:min(len(pkt), icmp6Quote)]
	n := 40 + 8 + len(quote)
	ip := out[:n]
	clear(ip[:48])
	ip[0] = 0x60
	binary.BigEndian.PutUint16(ip[4:6], uint16(n-40))
	ip[6] = 58  // ICMPv6
	ip[7] = 255 // hop limit
	s := src.As16()
	copy(ip[8:24], s[:])
	copy(ip[24:40], pkt[8:24])
	icmp := ip[40:]
	if kind == icmpTooBig {
		icmp[0] = 2 // packet too big
		binary.BigEndian.PutUint32(icmp[4:8], uint32(mtu))
	} else {
		icmp[0] = 1 // destination unreachable, code 0: no route
	}
	copy(icmp[8:], quote)
	// The pseudo-header: addresses, upper-layer length, next header.
	acc := sum(0, ip[8:40])
	acc += uint32(len(icmp)) + 58
	binary.BigEndian.PutUint16(icmp[2:4], ^fold(sum(acc, icmp)))
	return ip
}

// sum adds b to acc as big-endian 16-bit words (RFC 1071); answers are
// rare and short, so no cleverness.
func sum(acc uint32, b []byte) uint32 {
	for len(b) >= 2 {
		acc += uint32(binary.BigEndian.Uint16(b))
		b = b[2:]
	}
	if len(b) == 1 {
		acc += uint32(b[0]) << 8
	}
	return acc
}

func fold(acc uint32) uint16 {
	for acc > 0xffff {
		acc = acc>>16 + acc&0xffff
	}
	return uint16(acc)
}
