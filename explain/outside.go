package explain

import (
	"fmt"
	"net"
	"net/netip"
	"strings"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
)

// natPort is the source port (or ICMP echo identifier) MASQUERADE
// --random-fully picks for the example; the kernel picks it at random.
const natPort = 47193

// outsideStory is the journey of a packet from a pod to a host outside
// the overlay: flannel's masquerade rule on node A rewrites its source,
// conntrack undoes it on the reply.
type outsideStory struct {
	rules   []flannelRule
	matched int // the rule that masquerades it

	routed  []byte  // the packet in node A's POSTROUTING, before the rewrite
	masq    rewrite // MASQUERADE
	reply   ipPacket
	unMasq  rewrite // conntrack, in node A's PREROUTING
	gateway netip.Addr
	hostMAC net.HardwareAddr // the next hop's MAC on the node network

	// frames for the capture
	wire, replyWire, replyToPod []byte
}

// walkOutside works out node A's part of a packet to the outside: the
// rule that masquerades it, the rewrite, and the rewrite of the answer.
func (j *Journey) walkOutside() error {
	o := j.o
	s := &outsideStory{rules: flannelRules(o.Network, o.SrcSubnet), matched: -1}
	for i, r := range s.rules {
		if ok, _ := r.match(o.Src, o.Dst); ok {
			s.matched = i
			break
		}
	}
	if s.matched < 0 || !s.rules[s.matched].masquerade {
		return fmt.Errorf("--to-outside: flannel's rules would not masquerade %s -> %s", o.Src, o.Dst)
	}
	nextHop := o.Dst
	if !nodeNetwork(o.SrcNode).Contains(o.Dst) {
		s.gateway = lastAddr(nodeNetwork(o.SrcNode)).Prev()
		nextHop = s.gateway
	}
	s.hostMAC = madeUpMAC(0x02, 0x00, nextHop)

	pk := j.pkt
	pk.ttl = podTTL - 1 // node A forwarded it before POSTROUTING
	var err error
	if s.routed, err = pk.build(nil); err != nil {
		return fmt.Errorf("build the routed packet: %w", err)
	}
	if s.masq, err = natRewrite(s.routed, natChange{src: o.SrcNode, sport: natPort}); err != nil {
		return fmt.Errorf("MASQUERADE: %w", err)
	}
	eth := &layers.Ethernet{SrcMAC: j.srcNIC, DstMAC: s.hostMAC, EthernetType: layers.EthernetTypeIPv4}
	if s.wire, err = serialize(eth, gopacket.Payload(s.masq.after)); err != nil {
		return err
	}

	// The outside host answers the address it saw: node A's.
	s.reply = ipPacket{src: o.Dst, dst: o.SrcNode, ttl: podTTL, id: replyIPID, proto: o.Proto, reply: true, size: pk.size}
	undo := natChange{dst: o.Src}
	switch o.Proto {
	case "icmp":
		s.reply.sport = natPort
		undo.sport = icmpID
	default:
		s.reply.sport, s.reply.dport = pk.dport, natPort
		s.reply.syn = pk.syn
		undo.dport = appSrcPort
	}
	answer, err := s.reply.build(nil)
	if err != nil {
		return fmt.Errorf("build the answer: %w", err)
	}
	if s.unMasq, err = natRewrite(answer, undo); err != nil {
		return fmt.Errorf("undo MASQUERADE: %w", err)
	}
	back := &layers.Ethernet{SrcMAC: s.hostMAC, DstMAC: j.srcNIC, EthernetType: layers.EthernetTypeIPv4}
	if s.replyWire, err = serialize(back, gopacket.Payload(answer)); err != nil {
		return err
	}
	// Node A forwards the rewritten answer to cni0: one less TTL.
	toPod := s.reply
	toPod.dst, toPod.ttl = o.Src, podTTL-1
	if o.Proto == "icmp" {
		toPod.sport = icmpID
	} else {
		toPod.dport = appSrcPort
	}
	delivered, err := toPod.build(nil)
	if err != nil {
		return err
	}
	if s.replyToPod, err = j.frameToPod(delivered); err != nil {
		return err
	}
	j.out = s
	return nil
}

func (j *Journey) outsideWhat() string {
	switch j.o.Proto {
	case "udp":
		return fmt.Sprintf("a UDP datagram (%d bytes of data, port %d to %d)", j.o.Size, appSrcPort, udpDstPort)
	case "tcp":
		return fmt.Sprintf("a TCP SYN, opening a connection (port %d to %d)", appSrcPort, tcpDstPort)
	}
	return "a ping"
}

// portWord is what MASQUERADE picks besides the address.
func (j *Journey) portWord() string {
	if j.o.Proto == "icmp" {
		return "echo identifier"
	}
	return "source port"
}

func (j *Journey) outsideIntro(p *printer) error {
	o := j.o
	p.heading("The journey of a packet out of the cluster", '=')
	p.para("Pod %s on node A sends %s to %s, a host on the nodes' network that is not part of the cluster and knows no route to the pods. Step by step with the real bytes: node A routes it out of its eth0, no tunnel involved; flannel's masquerade rule rewrites its source to node A's address; conntrack rewrites the answer back.",
		o.Src, j.outsideWhat(), o.Dst)
	p.para("A cluster has three networks; this packet leaves the pod network for the node network:")
	j.networksTable(p, false)
	p.table(
		"\taddress\tsubnet",
		fmt.Sprintf("node A\t%s\t%s", o.SrcNode, o.SrcSubnet),
		fmt.Sprintf("outside host\t%s\t-", o.Dst),
	)
	p.para("Node A runs vxrouter (or flanneld) with --ip-masq, which writes flannel's masquerade rules into its nat table.")
	return nil
}

func (j *Journey) outsideStep1(p *printer) error {
	o := j.o
	p.heading("1. The pod sends", '-')
	p.para("%s is not in the pod's %s, so the packet goes to the default gateway, the bridge cni0 on node A. As it enters node A:", o.Dst, o.SrcSubnet)
	pk := j.pkt
	pk.ttl = podTTL
	b, err := pk.build(nil)
	if err != nil {
		return err
	}
	return ipPacketFields(p, b, map[string]string{"identification": "fixed for the example"})
}

func (j *Journey) outsideStep2(p *printer) error {
	o, s := j.o, j.out
	p.heading("2. Node A routes it out of eth0", '-')
	lines := []string{
		"nodeA$ ip route",
	}
	if s.gateway.IsValid() {
		lines = append(lines, fmt.Sprintf("default via %s dev eth0", s.gateway))
	}
	lines = append(lines,
		fmt.Sprintf("%s dev eth0 proto kernel scope link src %s", nodeNetwork(o.SrcNode), o.SrcNode),
		fmt.Sprintf("%s dev vxr0 scope link src %s", o.Network, o.SrcSubnet.Addr()),
		fmt.Sprintf("%s dev cni0 proto kernel scope link src %s", o.SrcSubnet, j.srcGW),
	)
	p.code(lines...)
	via := "the node network, directly on eth0"
	if s.gateway.IsValid() {
		via = fmt.Sprintf("the default route, via %s on eth0", s.gateway)
	}
	p.para("%s is not in the overlay %s, so it never reaches vxr0 and vxrouter never sees it: it takes %s. Forwarding takes one from the TTL (%d becomes %d, and the header checksum follows). Unchanged, it would reach %s with the source %s, and the answer would go to %s, which that host routes nowhere it could be found: the pod would wait for nothing.",
		o.Dst, o.Network, via, podTTL, podTTL-1, o.Dst, o.Src, o.Src)
	return nil
}

func (j *Journey) outsideStep3(p *printer) error {
	o, s := j.o, j.out
	p.heading("3. nat POSTROUTING: flannel's masquerade rule", '-')
	p.para("As the packet leaves, netfilter's nat table looks at it in POSTROUTING. --ip-masq put a jump to flannel's chain there, and the chain itself:")
	lines := []string{`-A POSTROUTING -m comment --comment "flanneld masq" -j FLANNEL-POSTRTG`}
	for _, r := range s.rules {
		lines = append(lines, wrapRule(r.String(), 74)...)
	}
	p.code(lines...)
	p.para("The packet's way through the chain, rule by rule (%s -> %s):", o.Src, o.Dst)
	var rows []string
	for i, r := range s.rules {
		why := "not reached"
		if i <= s.matched {
			_, why = r.match(o.Src, o.Dst)
		}
		rows = append(rows, fmt.Sprintf("%d  %s", i+1, r.short()), "       "+why)
	}
	p.code(rows...)
	p.para("The RETURN rules keep addresses inside the cluster as they are: pod to pod, a Service's packets marked by kube-proxy (it masquerades those itself), and the node reaching its own pods. What leaves the pod network for anywhere else, multicast aside, is masqueraded.")
	p.para("MASQUERADE is SNAT to the address of the device the packet leaves by, eth0, %s, looked up when the connection's first packet leaves (and forgotten if that device goes down: it suits addresses that change, like DHCP's). The %s must change too when another connection from %s to that host already has it; --random-fully picks it at random every time, which closes a race between two connections taking the same one at once (flannel asks for it where the kernel has it). Here %d stands for the random pick.",
		o.SrcNode, j.portWord(), o.SrcNode, natPort)
	return nil
}

func (j *Journey) outsideStep4(p *printer) error {
	o, s := j.o, j.out
	p.heading("4. The rewrite, byte by byte", '-')
	p.para("The kernel rewrites the source address and the %s in place, and updates the checksums that cover them (RFC 1624):", j.portWord())
	writeRewrite(p, s.masq)
	if o.Proto == "icmp" {
		p.para("An ICMP checksum has no pseudo-header: the new address does not change it, the new identifier does.")
	} else {
		p.para("A %s checksum covers a pseudo-header with both addresses, so the new source address changes it as much as the new port.", strings.ToUpper(o.Proto))
	}
	p.para("Conntrack keeps both tuples, the second the answer it now expects:")
	pk := j.srcPacket()
	reply := natChange{dst: o.SrcNode, dport: natPort}
	p.code(conntrackLines(pk, reply, "SYN_SENT")...)
	p.para("The frame on the node network, %d bytes, from node A's eth0 to %s:", len(s.wire), map[bool]string{true: "the gateway", false: "the host"}[s.gateway.IsValid()])
	wire, err := decodeFrame(s.wire)
	if err != nil {
		return err
	}
	eth := len(wire.Layers()[0].LayerContents())
	inner, err := decodeIP(s.wire[eth:])
	if err != nil {
		return err
	}
	p.dump(s.wire, append([]span{{"Ethernet", 0, eth, false}}, layerSpans(inner, eth, "")...))
	return nil
}

func (j *Journey) outsideStep5(p *printer) error {
	o, s := j.o, j.out
	p.heading("5. The answer's way back", '-')
	p.para("%s answers the address it saw, %s. Node A's conntrack recognises the answer by its reply tuple and, in PREROUTING, before node A routes it, turns the destination back into the pod's:", o.Dst, o.SrcNode)
	writeRewrite(p, s.unMasq)
	p.para("Now the destination is %s, so node A routes the answer to cni0 and the pod, which gets it from %s as if nothing had happened. No rule in the nat table saw the answer: only a connection's first packet goes through the rules.", o.Src, o.Dst)
	return nil
}

func (j *Journey) outsideSeeIt(p *printer) error {
	p.heading("See it yourself", '-')
	p.code(
		"vxrouter explain --to-outside --pcap outside.pcap",
		"tshark -r outside.pcap",
		"sudo vxrouter demo",
	)
	p.para("The capture has four packets: the pod's frame on its veth (step 1), the masqueraded frame on node A's eth0 (step 4), the answer on eth0, and the answer on the pod's veth after conntrack's rewrite (step 5). `vxrouter demo` pings such a host from a pod in network namespaces with nodes running --ip-masq, and shows the rule's counter and captures on both sides of the node.")
	return nil
}
