package explain

import (
	"fmt"
	"io"
	"net/netip"
	"strings"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"

	"vxrouter/encap"
)

// WriteText writes the journey as plain text for a terminal or a README:
// seven numbered steps, no colours, at most 80 columns except for the etcd
// value, which is shown verbatim. The same journey always gives the same
// text.
func (j *Journey) WriteText(w io.Writer) error {
	var p printer
	steps := []func(*printer) error{
		j.intro, j.step1, j.step2, j.step3, j.step4, j.step5, j.step6, j.step7, j.seeIt,
	}
	switch {
	case j.svc != nil:
		steps = []func(*printer) error{
			j.serviceIntro, j.serviceStep1, j.serviceStep2, j.serviceStep3, j.serviceStep4,
			j.serviceStep5, j.serviceStep6, j.serviceSeeIt,
		}
	case j.out != nil:
		steps = []func(*printer) error{
			j.outsideIntro, j.outsideStep1, j.outsideStep2, j.outsideStep3, j.outsideStep4,
			j.outsideStep5, j.outsideSeeIt,
		}
	}
	for _, s := range steps {
		if err := s(&p); err != nil {
			return fmt.Errorf("explain: %w", err)
		}
	}
	// The text ends in one newline, not a blank line.
	out := p.b.Bytes()
	for len(out) > 1 && out[len(out)-1] == '\n' && out[len(out)-2] == '\n' {
		out = out[:len(out)-1]
	}
	if _, err := w.Write(out); err != nil {
		return fmt.Errorf("write explanation: %w", err)
	}
	return nil
}

// Words that change with the pods' IP version and the protocol.

func (j *Journey) ipv() string {
	if j.o.Src.Is4() {
		return "IPv4"
	}
	return "IPv6"
}

func (j *Journey) ttl() string {
	if j.o.Src.Is4() {
		return "TTL"
	}
	return "hop limit"
}

func (j *Journey) etherType() string {
	if j.o.Src.Is4() {
		return "0x0800 (IPv4)"
	}
	return "0x86dd (IPv6)"
}

// what names the packet, with an article.
func (j *Journey) what() string {
	switch j.o.Proto {
	case "udp":
		return fmt.Sprintf("a UDP datagram (%d bytes of data, port %d to %d)", j.o.Size, appSrcPort, udpDstPort)
	case "tcp":
		return fmt.Sprintf("a TCP segment of an open connection (%d bytes of data, port %d to %d)", j.o.Size, appSrcPort, tcpDstPort)
	}
	if j.o.Src.Is6() {
		return "an ICMPv6 echo request (a ping)"
	}
	return "an ICMP echo request (a ping)"
}

func (j *Journey) tunMTU() int { return j.o.MTU - encap.OverheadIPv4 }

func (j *Journey) intro(p *printer) error {
	o := j.o
	p.heading("The journey of one packet through vxrouter", '=')
	p.para("%s from pod %s on node A to pod %s on node B, step by step with the real bytes: gopacket builds the pod's packet and the headers the kernel adds, and vxrouter's own encap package writes and checks the %d bytes of VXLAN in between.",
		capitalize(j.what()), o.Src, o.Dst, encap.HeaderLen)
	p.table(
		"\tpublic IP\tsubnet\tVTEP MAC",
		fmt.Sprintf("node A\t%s\t%s\t%s", o.SrcNode, o.SrcSubnet, o.SrcMAC),
		fmt.Sprintf("node B\t%s\t%s\t%s", o.DstNode, o.DstSubnet, o.DstMAC),
	)
	p.para("The overlay network is %s, VXLAN network identifier (VNI) %d, UDP port %d; the underlay, the network the nodes' public IPs are on, has an MTU of %d. Each node runs vxrouter with a TUN device named vxr0, and its pods hang off a bridge named cni0.",
		o.Network, o.VNI, o.Port, o.MTU)
	return nil
}

func (j *Journey) step1(p *printer) error {
	o := j.o
	p.heading("1. The pod sends", '-')
	p.para("Inside pod %s, eth0 is one end of a veth pair whose other end is a port of the bridge cni0 on node A. The pod's routes:", o.Src)
	if o.Src.Is4() {
		p.code(
			"pod$ ip route",
			fmt.Sprintf("default via %s dev eth0", j.srcGW),
			fmt.Sprintf("%s dev eth0 proto kernel scope link src %s", o.SrcSubnet, o.Src),
		)
	} else {
		p.code(
			"pod$ ip -6 route",
			fmt.Sprintf("%s dev eth0 proto kernel metric 256", o.SrcSubnet),
			fmt.Sprintf("default via %s dev eth0 metric 1024", j.srcGW),
		)
	}
	resolve := "ARP"
	if o.Src.Is6() {
		resolve = "neighbour discovery"
	}
	p.para("%s is not in %s, so the packet takes the default route: the pod finds the MAC of its gateway %s, the bridge, with %s, and sends the packet to it in an Ethernet frame:",
		o.Dst, o.SrcSubnet, j.srcGW, resolve)
	p.code(
		fmt.Sprintf("Ethernet  %s -> %s, EtherType %s", j.podMAC, j.brMAC, j.etherType()),
		fmt.Sprintf("%-8s  %s -> %s, %s %d", j.ipv(), o.Src, o.Dst, j.ttl(), podTTL),
	)
	p.para("(These two MACs are made up for the example: 0a:58 and the last four bytes of the IP address, as CNI's bridge plugin once made them. --pcap writes this frame as packet 1.)")
	return nil
}

func (j *Journey) step2(p *printer) error {
	o := j.o
	p.heading("2. Node A's kernel routes it into the TUN device", '-')
	p.para("The frame is addressed to the bridge itself, so node A's kernel takes the packet in and forwards it like a router, by its routes:")
	j.routes(p, "nodeA", o.SrcSubnet, j.srcGW)
	p.para("The longest matching prefix wins. %s matches only %s, the whole overlay, which vxrouter routed into its TUN device vxr0 when it started; packets for node A's own pods match the longer %s and stay on the bridge. Forwarding takes one from the %s: %d becomes %d%s.",
		o.Dst, o.Network, o.SrcSubnet, j.ttl(), podTTL, podTTL-1, map[bool]string{true: ", and the header checksum changes with it", false: ""}[o.Src.Is4()])
	p.para("A TUN device carries IP packets, not frames: the Ethernet header is gone, and vxrouter's read from vxr0 returns the bare %s packet, %d bytes. Offsets count from its first byte:",
		j.ipv(), len(j.frames.TUN))

	pkt, err := decodeIP(j.frames.TUN)
	if err != nil {
		return fmt.Errorf("decode the packet read from vxr0: %w", err)
	}
	notes := map[string]string{
		"TTL":            fmt.Sprintf("the pod sent %d", podTTL),
		"hop limit":      fmt.Sprintf("the pod sent %d", podTTL),
		"identification": "fixed for the example",
		"version, class": "(fixed; Linux usually puts a hash of the flow there)",
	}
	blocks, err := ipBlocks(pkt, 0, "", notes)
	if err != nil {
		return err
	}
	p.fields(blocks...)
	p.para("The same %d bytes as a hex dump, one layer to a block:", len(j.frames.TUN))
	p.dump(j.frames.TUN, layerSpans(pkt, 0, ""))
	return nil
}

func (j *Journey) step3(p *printer) error {
	o := j.o
	p.heading("3. vxrouter looks up the destination", '-')
	p.para("vxrouter keeps a routing table with one row for every other node's lease in etcd: it lists the leases when it starts and watches them for changes. Node A's table, in this two-node overlay:")
	p.table(
		"subnet\tpublic IP\tVTEP MAC\t",
		fmt.Sprintf("%s\t%s\t%s\t<- %s", o.DstSubnet, o.DstNode, o.DstMAC, o.Dst),
	)
	p.para("%s is in %s: the datagram goes to %s port %d, and the inner Ethernet destination is %s. (Node A's own %s is not in the table: those packets never reach vxr0. A destination no lease covers is dropped and counted as no-route.) The lookup is a longest-prefix match over an immutable snapshot of the table: no lock, no allocation.",
		o.Dst, o.DstSubnet, o.DstNode, o.Port, o.DstMAC, o.SrcSubnet)

	if o.Dst.Is6() {
		p.para("flannel carries IPv6 pods differently: its etcd leases always hold an IPv4 subnet and an IPv6 one only beside it (dual-stack, one key for both, like .../subnets/10.244.1.0-24&%s-%d, the IPv6 VTEP's MAC in BackendV6Data), and the kernel sends IPv6 pods' packets through a second device, flannel-v6.1, over an IPv6 underlay. vxrouter's leases are IPv4 too; this example shows its data path, which carries IPv6 packets like IPv4 ones: one table row, one header template.",
			o.DstSubnet.Addr(), o.DstSubnet.Bits())
		return nil
	}
	p.para("The row comes from node B's lease, which node B wrote into etcd in flannel's layout, so that flannel nodes can read it too. This is what etcdctl shows:")
	p.code("$ etcdctl get "+j.leaseKey, j.leaseKey, j.leaseValue)
	p.para("PublicIP is where the datagram goes, VtepMAC the inner Ethernet destination, and VNI must be the same on every node (node B drops any other).")
	p.para("The kernel's vxlan driver, as flannel sets it up on device flannel.1, needs the same facts in three tables, which flannel fills in when the lease appears:")
	p.code(
		"nodeA$ ip route show dev flannel.1       # the subnet, via B's VTEP",
		fmt.Sprintf("%s via %s onlink", o.DstSubnet, o.DstSubnet.Addr()),
		"nodeA$ ip neigh show dev flannel.1       # the VTEP's MAC (ARP)",
		fmt.Sprintf("%s lladdr %s PERMANENT", o.DstSubnet.Addr(), o.DstMAC),
		"nodeA$ bridge fdb show dev flannel.1     # who has that MAC (FDB)",
		fmt.Sprintf("%s dst %s self permanent", o.DstMAC, o.DstNode),
	)
	p.para("vxrouter's one table is all three: subnet -> public IP and VTEP MAC, in one lookup.")
	return nil
}

func (j *Journey) step4(p *printer) error {
	p.heading("4. vxrouter writes the VXLAN header in front", '-')
	p.para("vxrouter read the packet into its buffer %d bytes in, leaving room in front. encap.Header.Encap copies node B's %d-byte header template (built once, when node B's lease appeared) into that room and sets the inner EtherType from the IP version; the packet itself is not copied or changed. VXLAN carries Ethernet frames (it was made to stretch LANs), so an IP overlay addresses the frame from VTEP to VTEP. Offsets count from the start of the UDP payload:",
		encap.HeaderLen, encap.HeaderLen)
	pkt := gopacket.NewPacket(j.frames.Payload, layers.LayerTypeVXLAN, gopacket.Default)
	if err := decodeError(pkt); err != nil {
		return fmt.Errorf("decode the VXLAN payload: %w", err)
	}
	vx, ok1 := pkt.Layer(layers.LayerTypeVXLAN).(*layers.VXLAN)
	eth, ok2 := pkt.Layer(layers.LayerTypeEthernet).(*layers.Ethernet)
	if !ok1 || !ok2 {
		return fmt.Errorf("decode the VXLAN payload: no VXLAN or Ethernet layer")
	}
	c := vx.Contents
	flags := fmt.Sprintf("0x%02x", c[0])
	if vx.ValidIDFlag {
		flags += ", the I flag: VNI valid"
	}
	p.fields(
		block{fmt.Sprintf("VXLAN header (RFC 7348), %d bytes", encap.VXLANLen), []field{
			{0, c[0:1], "flags", flags},
			{1, c[1:4], "reserved", "0"},
			{4, c[4:7], "VNI", fmt.Sprint(vx.VNI)},
			{7, c[7:8], "reserved", "0"},
		}},
		ethernetBlock(fmt.Sprintf("inner Ethernet header, %d bytes", encap.EthernetLen), eth, encap.VXLANLen, "node B's VTEP", "node A's VTEP"),
		block{"inner packet", []field{
			{encap.HeaderLen, j.frames.Payload[encap.HeaderLen : encap.HeaderLen+bytesPerRow], j.ipv() + " packet",
				fmt.Sprintf("%d bytes, as read from vxr0", len(j.frames.TUN))},
		}},
	)
	p.para("These %d + %d = %d bytes are the payload of one UDP datagram:", encap.HeaderLen, len(j.frames.TUN), len(j.frames.Payload))
	p.dump(j.frames.Payload, []span{
		{"VXLAN", 0, encap.VXLANLen, false},
		{"inner Ethernet", encap.VXLANLen, encap.HeaderLen, false},
		{"inner packet", encap.HeaderLen, len(j.frames.Payload), true},
	})
	return nil
}

func (j *Journey) step5(p *printer) error {
	o := j.o
	p.heading("5. Node A's kernel adds UDP, IPv4 and Ethernet", '-')
	p.para("vxrouter sends the %d bytes to %s port %d, in one sendmmsg call with other datagrams when there are more, from a source port picked by the hash of the inner flow (flow entropy, RFC 7348: ECMP and the receiver's NIC spread an overlay's flows by it, and every packet of this flow leaves from the same port; here %d, as Linux's vxlan would pick it from ip_local_port_range, %d-%d). Everything outside the UDP payload is the kernel's work: a UDP header, an IPv4 header, and an Ethernet header for the next hop. On the wire they come first; offsets count from the start of the frame:",
		len(j.frames.Payload), o.DstNode, o.Port, j.srcPort, entropyLo, entropyHi)

	wire := gopacket.NewPacket(j.frames.Wire, layers.LayerTypeEthernet, gopacket.Default)
	eth, ok1 := wire.Layer(layers.LayerTypeEthernet).(*layers.Ethernet)
	ip, ok2 := wire.Layer(layers.LayerTypeIPv4).(*layers.IPv4)
	udp, ok3 := wire.Layer(layers.LayerTypeUDP).(*layers.UDP)
	if !ok1 || !ok2 || !ok3 {
		return fmt.Errorf("decode the frame on the wire: no Ethernet, IPv4 or UDP layer")
	}
	udpAt := len(eth.Contents) + len(ip.Contents)
	uc := udp.Contents
	sum := l4Checksum(o.SrcNode, o.DstNode, uint8(layers.IPProtocolUDP), j.frames.Wire[udpAt:])
	p.fields(
		ethernetBlock(fmt.Sprintf("outer Ethernet header, %d bytes", len(eth.Contents)), eth, 0, "node B's eth0", "node A's eth0"),
		ipv4Block(fmt.Sprintf("outer IPv4 header, %d bytes", len(ip.Contents)), ip, len(eth.Contents), map[string]string{
			"identification": "fixed for the example",
			"TTL":            "a new packet of node A's",
			"source":         "node A",
			"destination":    "node B",
		}),
		block{fmt.Sprintf("UDP header, %d bytes", len(uc)), []field{
			{udpAt, uc[0:2], "source port", fmt.Sprintf("%d, vxrouter's socket", udp.SrcPort)},
			{udpAt + 2, uc[2:4], "destination port", fmt.Sprintf("%d, the VXLAN port", udp.DstPort)},
			{udpAt + 4, uc[4:6], "length", fmt.Sprintf("%d = %d + %d of payload", udp.Length, len(uc), len(udp.Payload))},
			{udpAt + 6, uc[6:8], "checksum", fmt.Sprintf("0x%04x, %s", udp.Checksum, correct(sum == 0))},
		}},
	)
	p.para("The outer MACs are made up (02:00 and the node's IPv4 address); the destination is the next hop's, here node B itself, on the same link. The source port is %d because vxrouter sends from the socket it receives on. The kernel's vxlan driver instead hashes each inner flow to a source port (32768-60999 by default), so that routers spreading flows over several paths (ECMP) keep each flow on one path; receivers ignore the source port. The kernel's driver also leaves the UDP checksum of an IPv4 datagram 0, \"none\", which RFC 7348 allows; vxrouter's ordinary socket gets a real one.", o.Port)
	p.para("The whole frame on the wire, %d bytes (a capture shows it without the preamble and the 4-byte frame check sequence):", len(j.frames.Wire))
	inner := gopacket.NewPacket(j.frames.Payload, layers.LayerTypeVXLAN, gopacket.Default)
	if err := decodeError(inner); err != nil {
		return fmt.Errorf("decode the VXLAN payload: %w", err)
	}
	spans := []span{
		{"outer Ethernet", 0, len(eth.Contents), false},
		{"outer IPv4", len(eth.Contents), udpAt, false},
		{"UDP", udpAt, udpAt + len(uc), false},
	}
	spans = append(spans, layerSpans(inner, udpAt+len(uc), "inner ")...)
	p.dump(j.frames.Wire, spans)

	var names []string
	for _, l := range wire.Layers()[:3] {
		names = append(names, l.LayerType().String())
	}
	for _, l := range inner.Layers() {
		names = append(names, l.LayerType().String())
	}
	if o.Port == 4789 {
		p.para("gopacket decodes it back as %s; it knows VXLAN on IANA's port 4789 by itself.", strings.Join(names, " / "))
		return nil
	}
	p.para("gopacket decodes it back as %s. It knows VXLAN only on IANA's port 4789; on %d the UDP payload is handed to its VXLAN decoder explicitly, as tshark's -d option does below.",
		strings.Join(names, " / "), o.Port)
	return nil
}

func (j *Journey) step6(p *printer) error {
	o := j.o
	mtu := j.tunMTU()
	p.heading(fmt.Sprintf("6. Why vxr0's MTU is %d", mtu), '-')
	p.para("An MTU counts IP packets, not frames. The underlay's %d bytes must hold the whole outer packet, so the inner packet can be at most:", o.MTU)
	p.code(
		fmt.Sprintf("  %5d  underlay MTU: the largest outer IPv4 packet", o.MTU),
		fmt.Sprintf("- %5d  outer IPv4 header", 20),
		fmt.Sprintf("- %5d  UDP header", 8),
		fmt.Sprintf("- %5d  VXLAN header", encap.VXLANLen),
		fmt.Sprintf("- %5d  inner Ethernet header", encap.EthernetLen),
		"  -----",
		fmt.Sprintf("  %5d  the largest inner packet: the MTU of vxr0", mtu),
	)
	mss := mtu - ipHeaderLen(o.Src) - 20
	p.para("The outer Ethernet header is not counted: it is not part of the IP packet. On an IPv6 underlay the outer header is 40 bytes and the overhead %d, which leaves %d. vxrouter gives vxr0 the MTU %d and writes FLANNEL_MTU=%d into subnet.env; the CNI plugin gives the pods' eth0 the same MTU, so a pod never builds a packet the tunnel cannot carry, and TCP in the pods announces a maximum segment size of %d - %d = %d.",
		encap.OverheadIPv6, o.MTU-encap.OverheadIPv6, mtu, mtu, mtu, mtu-mss, mss)
	headers := ipHeaderLen(o.Src) + o.l4HeaderLen()
	full := ""
	if len(j.frames.TUN) == mtu {
		full = ", as large as it gets"
	}
	p.para("This packet: %d bytes inside, an outer IPv4 packet of %d bytes (of %d allowed%s), a frame of %d bytes on the wire. With these headers the largest payload that fits is %d - %d = %d bytes (--size %d)%s.",
		len(j.frames.TUN), len(j.frames.Wire)-encap.EthernetLen, o.MTU, full, len(j.frames.Wire),
		mtu, headers, mtu-headers, mtu-headers, map[bool]string{true: fmt.Sprintf(", as in ping -s %d", mtu-headers), false: ""}[o.Proto == "icmp"])
	return nil
}

func (j *Journey) step7(p *printer) error {
	o := j.o
	p.heading("7. Node B takes it apart", '-')
	p.para("Node B's kernel takes the frame off its eth0, checks and strips the outer Ethernet, IPv4 and UDP headers, and queues the %d-byte payload on the socket bound to port %d. vxrouter's recvmmsg picks it up with the sender's address, %s:%d, and checks it. A datagram that fails a check is dropped and counted; the last column is the counter. For the decoder's checks it names what encap.Decoder.Decap really returned for a copy of these bytes with just that one thing wrong.",
		len(j.frames.Payload), o.Port, o.SrcNode, o.Port)
	rows := []string{"check\tthis datagram\tif not"}
	for _, c := range j.checks {
		rows = append(rows, c.what+"\t"+c.found+"\t"+c.ifNot)
	}
	p.table(rows...)
	p.para("The first check is the routing table's (%s is node A's public IP, in the lease for %s); the others are Decap's, in its order, with VNI %d and VTEP MAC %s. For this datagram Decap returns %q and the inner packet as a slice of the received buffer, nothing copied: %d bytes, the same bytes node A read from its vxr0.",
		o.SrcNode, o.SrcSubnet, o.VNI, o.DstMAC, j.decap.String(), len(j.frames.Delivered))
	p.para("vxrouter writes them into node B's vxr0, and node B's kernel routes the packet like any other it receives:")
	j.routes(p, "nodeB", o.DstSubnet, j.dstGW)
	p.para("%s matches %s: out through the bridge cni0 (%s %d becomes %d) and the veth to the pod's eth0.",
		o.Dst, o.DstSubnet, j.ttl(), podTTL-1, podTTL-2)
	reply := "The pod's echo reply"
	switch o.Proto {
	case "udp":
		reply = "A reply, if the application sends one,"
	case "tcp":
		reply = "The pod's acknowledgement"
	}
	p.para("%s goes back the same way: node B looks up %s (lease %s: %s, VTEP MAC %s), sends from %s:%d to %s:%d, and node A checks the datagram and delivers the packet.",
		reply, o.Src, o.SrcSubnet, o.SrcNode, o.SrcMAC, o.DstNode, o.Port, o.SrcNode, o.Port)
	return nil
}

func (j *Journey) seeIt(p *printer) error {
	o := j.o
	p.heading("See it yourself", '-')
	// The command that makes this journey, broken with backslashes where
	// it would not fit, as a shell takes it.
	var cmd []string
	line := "vxrouter explain"
	for _, f := range append(j.flags(), "--pcap journey.pcap") {
		if len(line)+1+len(f) > 72 {
			cmd = append(cmd, line+` \`)
			line = "    "
		} else {
			line += " "
		}
		line += f
	}
	cmd = append(cmd, line, fmt.Sprintf("tshark -r journey.pcap -d udp.port==%d,vxlan -V", o.Port))
	p.code(cmd...)
	decode := fmt.Sprintf("Wireshark decodes VXLAN on UDP port 4789 by itself; for port %d, tell it with Decode As (UDP port %d as VXLAN), which is what tshark's -d does.", o.Port, o.Port)
	if o.Port == 4789 {
		decode = "Wireshark decodes VXLAN on UDP port 4789 by itself; tshark's -d only says it again."
	}
	p.para("The capture has two Ethernet packets: 1, the pod's frame on its veth (step 1), and 2, the frame on the underlay (step 5). %s `vxrouter demo` (as root) builds a real overlay in network namespaces and sends packets across it; `--service` and `--to-outside` follow the other two journeys of a pod's packet, to a Service and out of the cluster.", decode)
	return nil
}

// flags returns the command-line flags that give this journey's options,
// leaving out those at their defaults and those that are derived.
func (j *Journey) flags() []string {
	o, d := j.o, DefaultOptions()
	var f []string
	add := func(differs bool, name string, v any) {
		if differs {
			f = append(f, fmt.Sprintf("--%s %v", name, v))
		}
	}
	add(o.Src != d.Src, "src", o.Src)
	add(o.Dst != d.Dst, "dst", o.Dst)
	add(o.SrcSubnet != derivedSubnet(o.Src), "src-subnet", o.SrcSubnet)
	add(o.DstSubnet != derivedSubnet(o.Dst), "dst-subnet", o.DstSubnet)
	if n, err := network(netip.Prefix{}, o.SrcSubnet, o.DstSubnet); err != nil || n != o.Network {
		f = append(f, "--network "+o.Network.String())
	}
	add(o.SrcNode != d.SrcNode, "src-node-ip", o.SrcNode)
	add(o.DstNode != d.DstNode, "dst-node-ip", o.DstNode)
	add(o.SrcMAC.String() != d.SrcMAC.String(), "src-mac", o.SrcMAC)
	add(o.DstMAC.String() != d.DstMAC.String(), "dst-mac", o.DstMAC)
	add(o.Proto != d.Proto, "proto", o.Proto)
	add(o.Size != d.Size, "size", o.Size)
	add(o.VNI != d.VNI, "vni", o.VNI)
	add(o.Port != d.Port, "port", o.Port)
	add(o.MTU != d.MTU, "mtu", o.MTU)
	return f
}

// routes shows node's routing table, as `ip route` prints it: the
// overlay into vxr0, the node's own pod subnet (bridge address gw) on
// cni0.
func (j *Journey) routes(p *printer, node string, subnet netip.Prefix, gw netip.Addr) {
	if j.o.Src.Is4() {
		p.code(
			node+"$ ip route",
			fmt.Sprintf("%s dev vxr0 scope link src %s", j.o.Network, subnet.Addr()),
			fmt.Sprintf("%s dev cni0 proto kernel scope link src %s", subnet, gw),
		)
		return
	}
	p.code(
		node+"$ ip -6 route",
		fmt.Sprintf("%s dev vxr0 metric 1024", j.o.Network),
		fmt.Sprintf("%s dev cni0 proto kernel metric 256", subnet),
	)
}

// derivedSubnet is the node subnet assumed for pod address a when none is
// given: its /24 (IPv4) or /64 (IPv6).
func derivedSubnet(a netip.Addr) netip.Prefix {
	bits := 24
	if a.Is6() {
		bits = 64
	}
	return netip.PrefixFrom(a, bits).Masked()
}

// decodeIP decodes a bare IP packet, as read from a TUN device.
func decodeIP(b []byte) (gopacket.Packet, error) {
	first := layers.LayerTypeIPv4
	if len(b) > 0 && b[0]>>4 == 6 {
		first = layers.LayerTypeIPv6
	}
	pkt := gopacket.NewPacket(b, first, gopacket.Default)
	if err := decodeError(pkt); err != nil {
		return nil, err
	}
	if len(pkt.Layers()) < 2 {
		return nil, fmt.Errorf("no layer after the IP header")
	}
	return pkt, nil
}

// ipBlocks describes an IP packet's headers and payload, from its first
// layer; base is the packet's offset, prefix goes in front of the titles.
func ipBlocks(pkt gopacket.Packet, base int, prefix string, notes map[string]string) ([]block, error) {
	var first block
	var src, dst netip.Addr
	hdr := 0
	switch ip := pkt.Layers()[0].(type) {
	case *layers.IPv4:
		first = ipv4Block(fmt.Sprintf("%sIPv4 header, %d bytes", prefix, len(ip.Contents)), ip, base, notes)
		src, _ = netip.AddrFromSlice(ip.SrcIP.To4())
		dst, _ = netip.AddrFromSlice(ip.DstIP.To4())
		hdr = len(ip.Contents)
	case *layers.IPv6:
		first = ipv6Block(fmt.Sprintf("%sIPv6 header, %d bytes", prefix, len(ip.Contents)), ip, base, notes)
		src, _ = netip.AddrFromSlice(ip.SrcIP)
		dst, _ = netip.AddrFromSlice(ip.DstIP)
		hdr = len(ip.Contents)
	default:
		return nil, fmt.Errorf("decode: %s is not an IP layer", ip.LayerType())
	}
	tb, err := transportBlock(pkt, base+hdr, src, dst)
	if err != nil {
		return nil, err
	}
	at := base + hdr + transportLen(pkt.Layers()[1])
	tb.fields = append(tb.fields, payloadField(pkt.Data()[at-base:], at)...)
	return []block{first, tb}, nil
}

// layerSpans returns the byte range of each layer of a decoded packet that
// starts at offset start, names prefixed with prefix (the payload's not).
// Whatever follows the transport header is the payload.
func layerSpans(pkt gopacket.Packet, start int, prefix string) []span {
	var spans []span
	at := start
	for _, l := range pkt.Layers() {
		n := len(l.LayerContents())
		var name string
		switch l.LayerType() {
		case layers.LayerTypeEthernet:
			name = prefix + "Ethernet"
		case layers.LayerTypeIPv4:
			name = prefix + "IPv4"
		case layers.LayerTypeIPv6:
			name = prefix + "IPv6"
		case layers.LayerTypeVXLAN:
			name = "VXLAN"
		default:
			// The transport header, and the end of the headers.
			n = transportLen(l)
			spans = append(spans, span{l4Name(l), at, at + n, false})
			at += n
			if end := start + len(pkt.Data()); at < end {
				spans = append(spans, span{"payload", at, end, false})
			}
			return spans
		}
		spans = append(spans, span{name, at, at + n, false})
		at += n
	}
	return spans
}

// transportLen is the length of the transport header that starts with layer
// l; an ICMPv6 echo message's identifier and sequence count as header.
func transportLen(l gopacket.Layer) int {
	if l.LayerType() == layers.LayerTypeICMPv6 {
		return 8
	}
	return len(l.LayerContents())
}

func l4Name(l gopacket.Layer) string {
	switch l.LayerType() {
	case layers.LayerTypeICMPv4:
		return "ICMP"
	case layers.LayerTypeICMPv6:
		return "ICMPv6"
	}
	return l.LayerType().String()
}

func capitalize(s string) string {
	if s == "" {
		return s
	}
	return strings.ToUpper(s[:1]) + s[1:]
}
