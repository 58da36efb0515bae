package route

import (
	"encoding/binary"
	"net/netip"
)

// FlowHash hashes an inner flow: source and destination address, the
// protocol, and for TCP, UDP and SCTP the ports. The underlay picks the
// outer UDP source port by it (flow entropy, RFC 7348 section 5), so it
// must be the same for every packet of a flow and spread flows well. It is
// the same on every node and every run, so a test can tell which port a
// flow will leave from.
func FlowHash(src, dst netip.AddrPort, proto uint8) uint32 {
	s, d := src.Addr().As16(), dst.Addr().As16()
	// Each word times its own odd constant, summed, then mixed: the
	// products keep words apart (a flow and its reverse differ), the mix
	// spreads every bit.
	h := binary.LittleEndian.Uint64(s[0:8])*0x9e3779b97f4a7c15 +
		binary.LittleEndian.Uint64(s[8:16])*0xc2b2ae3d27d4eb4f +
		binary.LittleEndian.Uint64(d[0:8])*0x165667b19e3779f9 +
		binary.LittleEndian.Uint64(d[8:16])*0xd6e8feb86659fd93 +
		(uint64(src.Port())<<24|uint64(dst.Port())<<8|uint64(proto))*0xff51afd7ed558ccd
	h = mix(h)
	return uint32(h ^ h>>32)
}

// mix is splitmix64's finalizer: every input bit moves every output bit.
func mix(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	return x ^ x>>31
}

// PacketFlow is FlowHash of an IP packet read from the TUN device (its
// fixed IP header must be there: the forwarder has checked it). A fragment after the
// first, or a packet too short for its ports, hashes by addresses and
// protocol alone; IPv6 extension headers are not followed.
func PacketFlow(pkt []byte) uint32 {
	var src, dst netip.Addr
	var proto uint8
	var l4 []byte
	if pkt[0]>>4 == 4 {
		src, dst = netip.AddrFrom4([4]byte(pkt[12:16])), netip.AddrFrom4([4]byte(pkt[16:20]))
		proto = pkt[9]
		ihl := int(pkt[0]&0x0f) * 4
		if binary.BigEndian.Uint16(pkt[6:8])&0x1fff == 0 && ihl >= 20 && len(pkt) >= ihl+4 {
			l4 = pkt[ihl:]
		}
	} else {
		src, dst = netip.AddrFrom16([16]byte(pkt[8:24])), netip.AddrFrom16([16]byte(pkt[24:40]))
		proto = pkt[6]
		if len(pkt) >= 44 {
			l4 = pkt[40:]
		}
	}
	var sport, dport uint16
	switch proto {
	case 6, 17, 132: // TCP, UDP, SCTP
		if l4 != nil {
			sport, dport = binary.BigEndian.Uint16(l4[0:2]), binary.BigEndian.Uint16(l4[2:4])
		}
	}
	return FlowHash(netip.AddrPortFrom(src, sport), netip.AddrPortFrom(dst, dport), proto)
}

// flowKey4 is what PacketFlow hashes of an IPv4 packet without options
// and not a later fragment, exactly: the addresses, and the ports and
// protocol. ok is false for anything else. It tells, cheaply, whether a
// packet is of the same flow as the one before.
func flowKey4(pkt []byte) (key [2]uint64, ok bool) {
	if len(pkt) < 24 || pkt[0] != 0x45 || binary.BigEndian.Uint16(pkt[6:8])&0x1fff != 0 {
		return key, false
	}
	return [2]uint64{binary.LittleEndian.Uint64(pkt[12:20]), uint64(binary.LittleEndian.Uint32(pkt[20:24])) | uint64(pkt[9])<<32}, true
}
