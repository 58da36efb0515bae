package explain

import (
	"fmt"
	"net"
	"net/netip"
	"slices"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"

	"vxrouter/encap"
	"vxrouter/lease"
	"vxrouter/route"
)

// Values a real kernel or application picks and that are fixed here, so
// that the same options always give the same bytes.
const (
	podTTL      = 64     // Linux's default TTL and hop limit
	innerIPID   = 0x1234 // the pod kernel's IPv4 identification
	outerIPID   = 0xabcd // node A's kernel's identification for the datagram
	outerTTL    = 64     // node A's kernel sends the datagram with its default TTL
	icmpID      = 4242   // ping's identifier (Linux ping uses a per-process value)
	icmpSeq     = 1      // the first ping
	appSrcPort  = 40000  // an ephemeral port of the pod's application
	udpDstPort  = 9000   // an example application port
	tcpDstPort  = 80     // an example server
	tcpSeq      = 1000   // TCP sequence and acknowledgement numbers of an established connection
	tcpAck      = 2000   //
	tcpWindow   = 502    //
	synWindow   = 64860  // Linux's first window on a 1450-byte MTU
	payloadText = "vxrouter explain: the journey of one packet. "
)

// Frames are the bytes of the journey, each a separate slice.
type Frames struct {
	// Veth is the pod's Ethernet frame on its veth, as the pod sends it
	// (pod MAC -> bridge MAC, TTL or hop limit 64).
	Veth []byte
	// TUN is the IP packet vxrouter on node A reads from its TUN device:
	// the pod's packet after node A forwarded it (TTL one less).
	TUN []byte
	// Payload is the UDP payload vxrouter sends, as encap.Header.Encap
	// wrote it: VXLAN header, inner Ethernet header, then TUN.
	Payload []byte
	// Wire is the whole frame on the underlay: outer Ethernet, IPv4 and
	// UDP as node A's kernel adds them, then Payload.
	Wire []byte
	// Delivered is what encap.Decoder.Decap on node B returns from the
	// Wire frame's UDP payload, the packet written into B's TUN device.
	Delivered []byte

	// A journey to a Service or to the outside: Veth has the pod's first
	// packet before NAT, and Reply is the answer as the pod receives it
	// from its bridge, after conntrack's reverse rewrite. To the outside,
	// Wire is the masqueraded frame on node A's eth0, and no tunnel
	// carries it: TUN, Payload and Delivered are nil.
	Reply []byte
}

// Journey is one packet's way from pod to pod, built by Walk. It is not
// changed after Walk returns.
type Journey struct {
	o      Options // resolved: subnets and network filled in
	frames Frames

	srcGW, dstGW   netip.Addr       // the bridges' addresses: the pods' gateways
	podMAC, brMAC  net.HardwareAddr // the source pod's eth0 and its bridge (made up)
	srcNIC, dstNIC net.HardwareAddr // the nodes' underlay interfaces (made up)

	leaseKey, leaseValue string // node B's lease as flannel stores it in etcd

	// srcPort is the outer UDP source port: picked by the inner flow's
	// hash (flow entropy), see step 5.
	srcPort uint16

	pkt ipPacket // the pod's packet, but for its TTL; after DNAT to a Service

	svc *serviceStory // a connection to a Service (Options.Service)
	out *outsideStory // a packet out of the cluster (Options.ToOutside)

	decap  encap.Reason // what node B's decoder said
	checks []check      // node B's checks, each with the reason a failure gets
}

// check is one test node B makes, what this packet shows for it, and what
// the data plane does with a packet that fails it.
type check struct {
	what, found, ifNot string
}

// Walk builds the journey the options describe: the pod's packet, its
// encapsulation by vxrouter's encap package, the frame on the wire and its
// decapsulation on the other node. It fails on options that describe no
// possible journey, with an error that names the option.
func Walk(o Options) (*Journey, error) {
	o, err := o.resolve()
	if err != nil {
		return nil, err
	}
	j := &Journey{
		o:      o,
		srcGW:  o.SrcSubnet.Addr().Next(),
		dstGW:  o.DstSubnet.Addr().Next(),
		srcNIC: madeUpMAC(0x02, 0x00, o.SrcNode),
		dstNIC: madeUpMAC(0x02, 0x00, o.DstNode),
	}
	j.pkt = podPacket(o)
	j.podMAC = madeUpMAC(0x0a, 0x58, o.Src)
	j.brMAC = madeUpMAC(0x0a, 0x58, j.srcGW)

	if j.frames.Veth, err = j.innerPacket(podTTL, true); err != nil {
		return nil, fmt.Errorf("build the pod's frame: %w", err)
	}
	if o.ToOutside {
		if err := j.walkOutside(); err != nil {
			return nil, err
		}
		j.frames.Wire = j.out.wire
		j.frames.Reply = j.out.replyToPod
		return j, nil
	}
	if o.Service.IsValid() {
		if err := j.walkService(); err != nil {
			return nil, err
		}
		if j.frames.Reply, err = j.frameToPod(j.svc.unDNAT.after); err != nil {
			return nil, err
		}
	}
	if j.frames.TUN, err = j.innerPacket(podTTL-1, false); err != nil {
		return nil, fmt.Errorf("build the packet on vxr0: %w", err)
	}

	// Node A: the header template for node B's lease, then Encap into the
	// headroom of the buffer the packet was read into, as the forwarder does.
	h, err := encap.NewHeader(o.VNI, o.SrcMAC, o.DstMAC)
	if err != nil {
		return nil, fmt.Errorf("vxlan header for node B: %w", err)
	}
	buf := make([]byte, encap.HeaderLen+len(j.frames.TUN))
	copy(buf[encap.HeaderLen:], j.frames.TUN)
	payload, reason := h.Encap(buf, encap.HeaderLen, len(j.frames.TUN))
	if reason != encap.OK {
		return nil, fmt.Errorf("encap refused the packet: %s", reason)
	}
	j.frames.Payload = payload

	j.srcPort = entropyPort(j.frames.TUN)
	if j.frames.Wire, err = j.outerFrame(payload); err != nil {
		return nil, fmt.Errorf("build the frame on the wire: %w", err)
	}

	// Node B: what its kernel hands to the socket is the UDP payload of
	// the frame, so take it from the wire bytes, not from Payload.
	udp, err := udpPayload(j.frames.Wire)
	if err != nil {
		return nil, err
	}
	dec, err := encap.NewDecoder(o.VNI, o.DstMAC)
	if err != nil {
		return nil, fmt.Errorf("vxlan decoder for node B: %w", err)
	}
	inner, reason := dec.Decap(udp)
	j.decap = reason
	j.frames.Delivered = slices.Clone(inner)
	j.checks = j.nodeBChecks(&dec, udp)

	j.leaseKey, j.leaseValue, err = flannelLease(o.DstSubnet, o.DstNode, o.VNI, o.DstMAC)
	if err != nil {
		return nil, err
	}
	return j, nil
}

// Options returns the options the journey was built from, with the derived
// subnets and network filled in.
func (j *Journey) Options() Options {
	o := j.o
	o.SrcMAC, o.DstMAC = slices.Clone(o.SrcMAC), slices.Clone(o.DstMAC)
	return o
}

// Frames returns copies of the journey's bytes.
func (j *Journey) Frames() Frames {
	return Frames{
		Veth:      slices.Clone(j.frames.Veth),
		TUN:       slices.Clone(j.frames.TUN),
		Payload:   slices.Clone(j.frames.Payload),
		Wire:      slices.Clone(j.frames.Wire),
		Delivered: slices.Clone(j.frames.Delivered),
		Reply:     slices.Clone(j.frames.Reply),
	}
}

// innerPacket serializes the pod's packet with the given TTL (hop limit),
// in an Ethernet frame from the pod to its bridge when framed.
func (j *Journey) innerPacket(ttl uint8, framed bool) ([]byte, error) {
	pk := j.pkt
	pk.ttl = ttl
	var eth *layers.Ethernet
	if framed {
		eth = &layers.Ethernet{SrcMAC: j.podMAC, DstMAC: j.brMAC}
	}
	return pk.build(eth)
}

// outerFrame wraps payload in what node A's kernel adds to a datagram sent
// on a UDP socket: UDP, IPv4 and the Ethernet header for the next hop.
func (j *Journey) outerFrame(payload []byte) ([]byte, error) {
	o := j.o
	ip := &layers.IPv4{
		Version: 4, IHL: 5, TTL: outerTTL, Id: outerIPID, Flags: layers.IPv4DontFragment,
		Protocol: layers.IPProtocolUDP, SrcIP: o.SrcNode.AsSlice(), DstIP: o.DstNode.AsSlice(),
	}
	udp := &layers.UDP{SrcPort: layers.UDPPort(j.srcPort), DstPort: layers.UDPPort(o.Port)}
	if err := udp.SetNetworkLayerForChecksum(ip); err != nil {
		return nil, err
	}
	return serialize(
		&layers.Ethernet{SrcMAC: j.srcNIC, DstMAC: j.dstNIC, EthernetType: layers.EthernetTypeIPv4},
		ip, udp, gopacket.Payload(payload),
	)
}

func serialize(ls ...gopacket.SerializableLayer) ([]byte, error) {
	buf := gopacket.NewSerializeBuffer()
	opts := gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}
	if err := gopacket.SerializeLayers(buf, opts, ls...); err != nil {
		return nil, fmt.Errorf("serialize: %w", err)
	}
	return slices.Clone(buf.Bytes()), nil
}

// udpPayload decodes a frame down to its UDP layer, as the receiving
// kernel does, and returns the datagram's payload.
func udpPayload(frame []byte) ([]byte, error) {
	p := gopacket.NewPacket(frame, layers.LayerTypeEthernet, gopacket.Default)
	if err := decodeError(p); err != nil {
		return nil, fmt.Errorf("decode the frame on the wire: %w", err)
	}
	udp, ok := p.Layer(layers.LayerTypeUDP).(*layers.UDP)
	if !ok {
		return nil, fmt.Errorf("decode the frame on the wire: no UDP layer")
	}
	return udp.Payload, nil
}

// nodeBChecks runs node B's checks on the UDP payload it received: the
// sender against its leases (the route table's check), then each of the
// decoder's, showing what encap.Decoder.Decap returns for a copy of the
// payload with only that one thing wrong.
func (j *Journey) nodeBChecks(dec *encap.Decoder, udp []byte) []check {
	o := j.o
	mutated := func(f func(b []byte) []byte) string {
		b := f(slices.Clone(udp))
		if _, r := dec.Decap(b); r != encap.OK {
			return "decap-" + r.String()
		}
		return "accepted (a bug)"
	}
	et := "0x0800"
	if o.Src.Is6() {
		et = "0x86dd"
	}
	lengthField := 2 // IPv4 total length
	if o.Src.Is6() {
		lengthField = 4 // IPv6 payload length
	}
	return []check{
		{"sender is a known peer", o.SrcNode.String(), "unknown-sender"},
		{fmt.Sprintf("longer than %d bytes", encap.HeaderLen), fmt.Sprintf("%d bytes", len(udp)),
			mutated(func(b []byte) []byte { return b[:encap.HeaderLen] })},
		{"I flag set", fmt.Sprintf("flags 0x%02x", udp[0]),
			mutated(func(b []byte) []byte { b[0] &^= 0x08; return b })},
		{"VNI is ours", fmt.Sprint(o.VNI),
			mutated(func(b []byte) []byte { b[6] ^= 0x01; return b })},
		{"inner dst MAC is our VTEP", net.HardwareAddr(udp[8:14]).String(),
			mutated(func(b []byte) []byte { b[13] ^= 0x02; return b })},
		{"EtherType IPv4 or IPv6", et,
			mutated(func(b []byte) []byte { b[20], b[21] = 0x08, 0x06; return b })}, // ARP
		{"inner IP length fits", fmt.Sprintf("%d bytes", len(udp)-encap.HeaderLen),
			mutated(func(b []byte) []byte {
				b[encap.HeaderLen+lengthField], b[encap.HeaderLen+lengthField+1] = 0xff, 0xff
				return b
			})},
	}
}

// flannelLease returns the etcd key and value of a node's lease, made by
// the lease package, which writes them exactly as flannel's etcd subnet
// manager does for the vxlan backend.
func flannelLease(subnet netip.Prefix, publicIP netip.Addr, vni uint32, vtep net.HardwareAddr) (key, value string, err error) {
	b, err := lease.Attrs{
		PublicIP:    publicIP,
		BackendType: "vxlan",
		VNI:         int(vni),
		VtepMAC:     vtep,
	}.MarshalJSON()
	if err != nil {
		return "", "", fmt.Errorf("encode lease: %w", err)
	}
	return lease.DefaultPrefix + "/subnets/" + lease.SubnetKey(subnet), string(b), nil
}

// payloadBytes returns n bytes of readable text, so that the payload is
// recognisable in a hex dump and in Wireshark.
func payloadBytes(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = payloadText[i%len(payloadText)]
	}
	return b
}

// Linux's default ip_local_port_range, the ports flow entropy picks from.
const entropyLo, entropyHi = 32768, 60999

// entropyPort is the outer source port of the inner packet pkt's flow,
// picked as Linux's vxlan picks one (udp_flow_src_port: the flow's hash
// scaled into the range) from vxrouter's flow hash. A real node sends
// from one of its 32 sockets on ports of the range (route.PacketFlow
// picks which), so its port differs; the idea is the same.
func entropyPort(pkt []byte) uint16 {
	return uint16(entropyLo + uint64(route.PacketFlow(pkt))*(entropyHi-entropyLo+1)>>32)
}
