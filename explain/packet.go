package explain

import (
	"fmt"
	"net"
	"net/netip"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"

	"vxrouter/encap"
)

// ipPacket is one IP packet of a journey, as an application and its
// kernel would make it; build serializes it with gopacket.
type ipPacket struct {
	src, dst     netip.Addr
	ttl          uint8
	id           uint16 // IPv4 identification
	proto        string // "icmp", "udp" or "tcp"
	sport, dport uint16 // ICMP: sport is the echo identifier
	// reply makes an ICMP echo reply instead of a request; with syn, a
	// TCP SYN-ACK.
	reply bool
	// syn makes the TCP segment the first of its connection, with the MSS
	// option, instead of one of an established connection.
	syn  bool
	mss  uint16
	size int
}

// podPacket is the journey's packet as its pod sends it (but for the TTL,
// set by the caller): the defaults of each protocol, fixed so that the
// same options always give the same bytes.
func podPacket(o Options) ipPacket {
	pk := ipPacket{src: o.Src, dst: o.Dst, id: innerIPID, proto: o.Proto, sport: appSrcPort, size: o.Size}
	switch o.Proto {
	case "icmp":
		pk.sport = icmpID
	case "udp":
		pk.dport = udpDstPort
	case "tcp":
		pk.dport = tcpDstPort
	}
	if o.Service.IsValid() {
		pk.dst, pk.dport = o.Service.Addr(), o.Service.Port()
	}
	if o.opensConnection() {
		pk.syn = true
		pk.mss = uint16(o.MTU - encap.OverheadIPv4 - 40) // what the pod's TCP announces on its eth0, vxr0's MTU
	}
	return pk
}

// build serializes the packet, in eth's frame if eth is not nil.
func (pk ipPacket) build(eth *layers.Ethernet) ([]byte, error) {
	var ls []gopacket.SerializableLayer
	if eth != nil {
		eth.EthernetType = layers.EthernetTypeIPv4
		if pk.src.Is6() {
			eth.EthernetType = layers.EthernetTypeIPv6
		}
		ls = append(ls, eth)
	}
	var proto layers.IPProtocol
	switch {
	case pk.proto == "icmp" && pk.src.Is4():
		proto = layers.IPProtocolICMPv4
	case pk.proto == "icmp":
		proto = layers.IPProtocolICMPv6
	case pk.proto == "udp":
		proto = layers.IPProtocolUDP
	case pk.proto == "tcp":
		proto = layers.IPProtocolTCP
	default:
		return nil, fmt.Errorf("build packet: protocol %q", pk.proto)
	}
	var netLayer gopacket.NetworkLayer
	if pk.src.Is4() {
		ip := &layers.IPv4{
			Version: 4, IHL: 5, TTL: pk.ttl, Id: pk.id, Flags: layers.IPv4DontFragment,
			Protocol: proto, SrcIP: pk.src.AsSlice(), DstIP: pk.dst.AsSlice(),
		}
		netLayer = ip
		ls = append(ls, ip)
	} else {
		ip := &layers.IPv6{Version: 6, HopLimit: pk.ttl, NextHeader: proto, SrcIP: pk.src.AsSlice(), DstIP: pk.dst.AsSlice()}
		netLayer = ip
		ls = append(ls, ip)
	}
	switch {
	case pk.proto == "icmp" && pk.src.Is4():
		t := uint8(layers.ICMPv4TypeEchoRequest)
		if pk.reply {
			t = layers.ICMPv4TypeEchoReply
		}
		ls = append(ls, &layers.ICMPv4{TypeCode: layers.CreateICMPv4TypeCode(t, 0), Id: pk.sport, Seq: icmpSeq})
	case pk.proto == "icmp":
		t := uint8(layers.ICMPv6TypeEchoRequest)
		if pk.reply {
			t = layers.ICMPv6TypeEchoReply
		}
		icmp := &layers.ICMPv6{TypeCode: layers.CreateICMPv6TypeCode(t, 0)}
		if err := icmp.SetNetworkLayerForChecksum(netLayer); err != nil {
			return nil, err
		}
		ls = append(ls, icmp, &layers.ICMPv6Echo{Identifier: pk.sport, SeqNumber: icmpSeq})
	case pk.proto == "udp":
		udp := &layers.UDP{SrcPort: layers.UDPPort(pk.sport), DstPort: layers.UDPPort(pk.dport)}
		if err := udp.SetNetworkLayerForChecksum(netLayer); err != nil {
			return nil, err
		}
		ls = append(ls, udp)
	case pk.proto == "tcp":
		tcp := &layers.TCP{SrcPort: layers.TCPPort(pk.sport), DstPort: layers.TCPPort(pk.dport)}
		switch {
		case pk.syn && pk.reply:
			tcp.Seq, tcp.Ack, tcp.SYN, tcp.ACK, tcp.Window = tcpAck, tcpSeq+1, true, true, synWindow
		case pk.syn:
			tcp.Seq, tcp.SYN, tcp.Window = tcpSeq, true, synWindow
		default:
			tcp.Seq, tcp.Ack, tcp.ACK, tcp.PSH, tcp.Window = tcpSeq, tcpAck, true, pk.size > 0, tcpWindow
		}
		if pk.syn {
			tcp.Options = []layers.TCPOption{{
				OptionType: layers.TCPOptionKindMSS, OptionLength: 4,
				OptionData: []byte{byte(pk.mss >> 8), byte(pk.mss)},
			}}
		}
		if err := tcp.SetNetworkLayerForChecksum(netLayer); err != nil {
			return nil, err
		}
		ls = append(ls, tcp)
	}
	ls = append(ls, gopacket.Payload(payloadBytes(pk.size)))
	return serialize(ls...)
}

// madeUpMAC returns a MAC that does not exist in the example's world but
// reads as belonging to addr: the two given bytes, then the last four
// bytes of the address.
func madeUpMAC(b0, b1 byte, addr netip.Addr) net.HardwareAddr {
	a := addr.As16()
	return net.HardwareAddr{b0, b1, a[12], a[13], a[14], a[15]}
}
