package explain

import (
	"fmt"
	"net/netip"
	"strings"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"

	"vxrouter/kubeproxy"
)

// replyIPID is the IPv4 identification of the answering side's packets.
const replyIPID = 0x5678

// serviceStory is what a connection to a Service adds to the journey:
// kube-proxy's rules on node A, the DNAT of the first packet, and the
// reverse rewrite of the reply.
type serviceStory struct {
	svc   kubeproxy.Service
	rules kubeproxy.Ruleset
	other netip.Addr // the Service's other endpoint, on node A

	dnat   rewrite // the pod's packet in node A's PREROUTING
	unDNAT rewrite // the backend's answer in node A's POSTROUTING
	reply  ipPacket
}

// otherEndpoint is a second pod behind the Service, on node A itself:
// the 20th address of its subnet (the 21st if that is the client).
func otherEndpoint(o Options) netip.Addr {
	a := o.SrcSubnet.Addr()
	for range 20 {
		a = a.Next()
	}
	if a == o.Src {
		a = a.Next()
	}
	return a
}

// walkService works out node A's part of a connection to a Service: the
// rules that choose the backend, the rewrite of the pod's packet, and the
// rewrite of the answer on its way back. It leaves j.pkt as the packet
// after DNAT, the one that crosses the overlay.
func (j *Journey) walkService() error {
	o := j.o
	s := &serviceStory{other: otherEndpoint(o)}
	s.svc = kubeproxy.Service{
		Namespace: "default", Name: "web", Protocol: o.Proto,
		ClusterIP: o.Service.Addr(), Port: o.Service.Port(),
		Endpoints: []netip.AddrPort{
			netip.AddrPortFrom(o.Dst, o.TargetPort),
			netip.AddrPortFrom(s.other, o.TargetPort),
		},
		ClusterCIDR: o.Network,
	}
	var err error
	if s.rules, err = kubeproxy.Rules(s.svc); err != nil {
		return err
	}

	// PREROUTING sees the packet as it came in from the bridge, before
	// node A forwards it (and takes one from its TTL).
	pk := j.pkt
	pk.ttl = podTTL
	sent, err := pk.build(nil)
	if err != nil {
		return fmt.Errorf("build the pod's packet: %w", err)
	}
	if s.dnat, err = natRewrite(sent, natChange{dst: o.Dst, dport: o.TargetPort}); err != nil {
		return fmt.Errorf("DNAT: %w", err)
	}
	j.pkt.dst, j.pkt.dport = o.Dst, o.TargetPort

	// The answer leaves the backend with TTL 64; node B and node A each
	// forward it once before node A's POSTROUTING, on its way to cni0.
	s.reply = ipPacket{
		src: o.Dst, dst: o.Src, ttl: podTTL - 2, id: replyIPID, proto: o.Proto,
		sport: o.TargetPort, dport: appSrcPort, reply: true, syn: j.pkt.syn, mss: j.pkt.mss, size: j.pkt.size,
	}
	answer, err := s.reply.build(nil)
	if err != nil {
		return fmt.Errorf("build the answer: %w", err)
	}
	if s.unDNAT, err = natRewrite(answer, natChange{src: o.Service.Addr(), sport: o.Service.Port()}); err != nil {
		return fmt.Errorf("reverse DNAT: %w", err)
	}
	j.svc = s
	return nil
}

// serviceWhat names the first packet of the connection, with an article.
func (j *Journey) serviceWhat() string {
	if j.o.Proto == "udp" {
		return fmt.Sprintf("a UDP datagram (%d bytes of data)", j.o.Size)
	}
	return "a TCP SYN, the first packet of the connection"
}

// answerWhat names the backend's first answer.
func (j *Journey) answerWhat() string {
	if j.o.Proto == "udp" {
		return "a reply datagram"
	}
	return "the SYN-ACK"
}

func (j *Journey) networksTable(p *printer, service bool) {
	o := j.o
	rows := []string{
		"network\trange\twhat is in it",
		fmt.Sprintf("node\t%s\tthe nodes' eth0 (node A %s)", nodeNetwork(o.SrcNode), o.SrcNode),
		fmt.Sprintf("pod\t%s\tthe overlay: a /%d leased per node in etcd", o.Network, o.SrcSubnet.Bits()),
	}
	if service {
		rows = append(rows, fmt.Sprintf("service\t%s\tClusterIPs: on no device, only in rules", o.ServiceNetwork))
	}
	p.table(rows...)
}

func (j *Journey) serviceIntro(p *printer) error {
	o, s := j.o, j.svc
	p.heading("The journey of a connection to a Service", '=')
	p.para("Pod %s on node A opens a %s connection to a Kubernetes Service: to its ClusterIP %s, port %d. A pod behind the Service, %s on node B, answers on port %d. Step by step with the real bytes: kube-proxy's rules on node A pick the backend and rewrite the destination (DNAT), vxrouter carries the packet to node B like any pod's, and conntrack on node A rewrites the answer on its way back.",
		o.Src, strings.ToUpper(o.Proto), o.Service.Addr(), o.Service.Port(), o.Dst, o.TargetPort)
	p.para("A cluster has three networks:")
	j.networksTable(p, true)
	p.table(
		"\tpublic IP\tsubnet\tVTEP MAC",
		fmt.Sprintf("node A\t%s\t%s\t%s", o.SrcNode, o.SrcSubnet, o.SrcMAC),
		fmt.Sprintf("node B\t%s\t%s\t%s", o.DstNode, o.DstSubnet, o.DstMAC),
	)
	p.para("The Service is default/web: port %d of %s, to port %d of two pods, %s on node B and %s on node A. Both nodes run vxrouter (TUN device vxr0, VNI %d, UDP port %d, underlay MTU %d) and kube-proxy in its iptables mode.",
		o.Service.Port(), o.Service.Addr(), o.TargetPort, o.Dst, s.other, o.VNI, o.Port, o.MTU)
	return nil
}

// ipPacketFields prints a bare IP packet as field tables and a hex dump.
func ipPacketFields(p *printer, b []byte, notes map[string]string) error {
	pkt, err := decodeIP(b)
	if err != nil {
		return err
	}
	blocks, err := ipBlocks(pkt, 0, "", notes)
	if err != nil {
		return err
	}
	p.fields(blocks...)
	p.dump(b, layerSpans(pkt, 0, ""))
	return nil
}

func (j *Journey) serviceStep1(p *printer) error {
	o := j.o
	p.heading("1. The pod sends to the ClusterIP", '-')
	p.para("The pod's application asked DNS for web.default.svc and got %s; it does not know that no machine has that address. It sends %s:", o.Service.Addr(), j.serviceWhat())
	p.code(
		"pod$ ip route",
		fmt.Sprintf("default via %s dev eth0", j.srcGW),
		fmt.Sprintf("%s dev eth0 proto kernel scope link src %s", o.SrcSubnet, o.Src),
	)
	p.para("%s is not in %s, so, like any address the pod does not know, it goes to the default gateway, the bridge cni0 on node A. The packet as it enters node A, offsets from its first byte:", o.Service.Addr(), o.SrcSubnet)
	return ipPacketFields(p, j.svc.dnat.before, map[string]string{
		"identification": "fixed for the example",
		"destination":    "the ClusterIP",
	})
}

func (j *Journey) serviceStep2(p *printer) error {
	o, s := j.o, j.svc
	p.heading("2. Node A's nat PREROUTING: kube-proxy's rules", '-')
	p.para("Before node A routes the packet, netfilter's nat table looks at it in PREROUTING, as it looks at every new connection's first packet. kube-proxy, which watches the Services and their endpoints, wrote these rules on every node (with `iptables-restore --noflush`; the chain names are a hash of the Service's name, as kube-proxy makes them):")
	var lines []string
	for _, r := range s.rules.Rules {
		lines = append(lines, wrapRule(r.String(), 74)...)
	}
	p.code(lines...)
	p.para("The packet's way through them, rule by rule (%s, %s:%d -> %s:%d):", strings.ToUpper(o.Proto), o.Src, appSrcPort, o.Service.Addr(), o.Service.Port())
	svc := s.svc.SVCChain()
	sep := s.svc.SEPChain(s.svc.Endpoints[0])
	sep2 := s.svc.SEPChain(s.svc.Endpoints[1])
	p.code(
		"PREROUTING",
		"  -j KUBE-SERVICES",
		"      every packet: jump",
		"KUBE-SERVICES",
		fmt.Sprintf("  -d %s -p %s --dport %d -j %s", o.Service.Addr(), o.Proto, o.Service.Port(), svc),
		"      yes: the ClusterIP and port: jump",
		svc,
		fmt.Sprintf("  ! -s %s -j KUBE-MARK-MASQ", o.Network),
		"      no: the source is a pod",
		"  -m statistic --mode random --probability 0.5 -j "+sep,
		"      yes, this time: half of the connections jump here",
		"  -j "+sep2,
		"      not reached (the other half would jump here)",
		sep,
		fmt.Sprintf("  -s %s -j KUBE-MARK-MASQ", o.Dst),
		"      no: only the backend reaching itself through its Service",
		fmt.Sprintf("  -p %s -j DNAT --to-destination %s:%d", o.Proto, o.Dst, o.TargetPort),
		"      yes: the rewrite, and the end of the nat table for it",
	)
	p.para("With two endpoints the first rule matches half of the connections and the last takes the rest: one in two goes to %s on node B and crosses the overlay, the other to %s on node A and never leaves it. With n endpoints the rules' probabilities are 1/n, 1/(n-1), ... 1/2, then the rest: each endpoint gets 1/n.", o.Dst, s.other)
	p.para("The ClusterIP exists only in these rules: no device of any node has %s, and node A needs no route to it, because the rewrite comes before the routing decision. `ip route get %s` on a node with no default route answers \"Network is unreachable\", and the Service works all the same.", o.Service.Addr(), o.Service.Addr())
	return nil
}

func (j *Journey) serviceStep3(p *printer) error {
	o, s := j.o, j.svc
	p.heading("3. DNAT rewrites the destination", '-')
	p.para("The DNAT target rewrites the packet in place: the destination address and port. Two checksums cover those bytes, and the kernel updates both from the words that changed (RFC 1624), without reading the rest of the packet again:")
	writeRewrite(p, s.dnat)
	p.para("Conntrack remembers the connection with both its tuples: what the pod sent, and the reply it now expects, from the backend:")
	p.code(conntrackLines(j.srcPacket(), natChange{src: o.Dst, sport: o.TargetPort}, "SYN_SENT")...)
	p.para("Only a connection's first packet goes through the nat rules; conntrack rewrites every later one, both ways, from this entry. (That is also why `iptables -t nat -L -v` counts connections, not packets.)")
	return nil
}

// srcPacket is the pod's first packet as it sent it, before any NAT.
func (j *Journey) srcPacket() ipPacket {
	return podPacket(j.o)
}

func (j *Journey) serviceStep4(p *printer) error {
	o := j.o
	p.heading("4. Across the overlay, like any pod's packet", '-')
	p.para("From here the packet is an ordinary pod-to-pod packet, %s -> %s. Node A routes it (TTL %d becomes %d, after the rewrite):", o.Src, o.Dst, podTTL, podTTL-1)
	j.routes(p, "nodeA", o.SrcSubnet, j.srcGW)
	p.para("%s is in the overlay %s, so it goes into vxr0; vxrouter finds node B's lease for %s (public IP %s, VTEP MAC %s), writes the VXLAN header and the inner Ethernet header in front, and sends the %d bytes over UDP to %s port %d. The frame on the wire, %d bytes:",
		o.Dst, o.Network, o.DstSubnet, o.DstNode, o.DstMAC, len(j.frames.Payload), o.DstNode, o.Port, len(j.frames.Wire))
	if err := j.wireDump(p); err != nil {
		return err
	}
	p.para("`vxrouter explain --src %s --dst %s --proto %s` follows this part byte by byte: the lookup, the VXLAN header, the MTU, node B's checks.", o.Src, o.Dst, o.Proto)
	return nil
}

// wireDump prints the frame on the underlay as a hex dump, a block per
// layer.
func (j *Journey) wireDump(p *printer) error {
	wire, err := decodeFrame(j.frames.Wire)
	if err != nil {
		return err
	}
	inner, err := decodeVXLAN(j.frames.Payload)
	if err != nil {
		return err
	}
	eth := len(wire.Layers()[0].LayerContents())
	udpAt := eth + len(wire.Layers()[1].LayerContents())
	spans := []span{
		{"outer Ethernet", 0, eth, false},
		{"outer IPv4", eth, udpAt, false},
		{"UDP", udpAt, udpAt + 8, false},
	}
	p.dump(j.frames.Wire, append(spans, layerSpans(inner, udpAt+8, "inner ")...))
	return nil
}

func (j *Journey) serviceStep5(p *printer) error {
	o := j.o
	p.heading("5. Node B delivers it to the backend", '-')
	p.para("Node B's vxrouter checks the datagram, strips the 22 bytes and writes the packet into its vxr0; node B routes it to cni0 and the pod:")
	j.routes(p, "nodeB", o.DstSubnet, j.dstGW)
	p.para("The backend sees %s:%d -> %s:%d: the client's own address. A Service rewrites only the destination. Nothing masquerades the source on the way: kube-proxy's KUBE-POSTROUTING only masquerades packets that KUBE-MARK-MASQ marked (none here), and flannel's --ip-masq rules return traffic from a pod subnet to the pod network untouched (the rule -s %s -d %s -j RETURN on node A).",
		o.Src, appSrcPort, o.Dst, o.TargetPort, o.SrcSubnet, o.Network)
	return nil
}

func (j *Journey) serviceStep6(p *printer) error {
	o, s := j.o, j.svc
	p.heading("6. The answer's way back", '-')
	p.para("The backend answers with %s, %s:%d -> %s:%d. It crosses the overlay from node B to node A like any pod's packet. Node A has no rule for it in the nat table: conntrack finds it by its reply tuple, and in POSTROUTING, as node A sends it out to cni0, undoes the DNAT on the source:",
		j.answerWhat(), o.Dst, o.TargetPort, o.Src, appSrcPort)
	writeRewrite(p, s.unDNAT)
	drop := "the pod's socket, connected to the ClusterIP, would never see it"
	if o.Proto == "tcp" {
		drop = "the pod's TCP would answer that SYN-ACK with a reset"
	}
	p.para("The pod gets %s from %s:%d, the address it sent to, and the connection goes on. Had the answer come back another way, through a node that never saw the DNAT, it would come from %s:%d, an address the pod never called, and %s. That is why the answer must return through node A: pod addresses are routed in the overlay, so it does. Clients outside the pod network are masqueraded to node A by KUBE-MARK-MASQ, for the same reason.",
		j.answerWhat(), o.Service.Addr(), o.Service.Port(), o.Dst, o.TargetPort, drop)
	return nil
}

func (j *Journey) serviceSeeIt(p *printer) error {
	p.heading("See it yourself", '-')
	p.code(
		"vxrouter explain --service "+j.o.Service.String()+" --pcap service.pcap",
		"tshark -r service.pcap -d udp.port=="+fmt.Sprint(j.o.Port)+",vxlan",
		"sudo vxrouter demo",
	)
	p.para("The capture has three packets: the pod's %s on its veth (step 1), the frame on the underlay after DNAT (step 4), and %s on the pod's veth after conntrack's rewrite (step 6). `vxrouter demo` builds the same Service from kube-proxy's rules in network namespaces, connects to it twenty times, and shows the counters split between two backends and one connection captured before and after DNAT.",
		map[string]string{"tcp": "SYN", "udp": "datagram"}[j.o.Proto], j.answerWhat())
	return nil
}

// frameToPod is an IP packet as the pod receives it from its bridge.
func (j *Journey) frameToPod(pkt []byte) ([]byte, error) {
	eth := &layers.Ethernet{SrcMAC: j.brMAC, DstMAC: j.podMAC, EthernetType: layers.EthernetTypeIPv4}
	return serialize(eth, gopacket.Payload(pkt))
}

func decodeFrame(b []byte) (gopacket.Packet, error) {
	pkt := gopacket.NewPacket(b, layers.LayerTypeEthernet, gopacket.Default)
	if err := decodeError(pkt); err != nil {
		return nil, fmt.Errorf("decode frame: %w", err)
	}
	return pkt, nil
}

func decodeVXLAN(b []byte) (gopacket.Packet, error) {
	pkt := gopacket.NewPacket(b, layers.LayerTypeVXLAN, gopacket.Default)
	if err := decodeError(pkt); err != nil {
		return nil, fmt.Errorf("decode the VXLAN payload: %w", err)
	}
	return pkt, nil
}
