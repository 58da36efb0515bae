package explain

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"

	"vxrouter/encap"
)

// Options describe the packet to follow and the two nodes it crosses. Zero
// subnets and network are derived from the pod addresses; everything else
// must be set (DefaultOptions has the example of DESIGN.md).
type Options struct {
	Src, Dst netip.Addr // the pods: the packet's inner source and destination

	// SrcSubnet and DstSubnet are the node subnets (leases) the pods live
	// in; zero means the /24 (IPv4) or /64 (IPv6) around the pod.
	SrcSubnet, DstSubnet netip.Prefix
	// Network is the whole overlay, routed into the TUN device; zero means
	// the longest prefix both subnets share, rounded down to a multiple of
	// 8 bits (IPv4) or 16 bits (IPv6).
	Network netip.Prefix

	SrcNode, DstNode netip.Addr       // the nodes' public (underlay) IPv4 addresses
	SrcMAC, DstMAC   net.HardwareAddr // the nodes' VTEP MACs

	Proto string // "icmp" (echo request), "udp" or "tcp"
	Size  int    // payload bytes after the ICMP, UDP or TCP header
	VNI   uint32 // VXLAN network identifier, 24 bits
	Port  uint16 // VXLAN UDP port
	MTU   int    // the underlay's MTU (largest outer IP packet)

	// Service, if set, makes the journey a connection from Src to this
	// ClusterIP and port (TCP or UDP): node A's kube-proxy rules DNAT it to
	// the backend pod Dst, port TargetPort (zero: 8080), before it crosses
	// the overlay. ServiceNetwork, the range of ClusterIPs, is the /24
	// around Service when zero.
	Service        netip.AddrPort
	TargetPort     uint16
	ServiceNetwork netip.Prefix

	// ToOutside makes the journey go from Src to Dst outside the overlay
	// (by default DefaultOutside), a host on the node network: node A
	// masquerades it with flannel's --ip-masq rule, and no tunnel carries
	// it. Dst's subnet, node and MAC are not used.
	ToOutside bool
}

// DefaultOutside is the host outside the overlay of the journey
// --to-outside: a machine on the nodes' network that is no node.
var DefaultOutside = netip.MustParseAddr("10.0.0.100")

// DefaultTargetPort is the backend pods' port when Options.TargetPort is 0.
const DefaultTargetPort = 8080

// Protos are the values Options.Proto accepts.
var Protos = []string{"icmp", "udp", "tcp"}

// DefaultOptions returns the journey of DESIGN.md: a ping from pod
// 172.16.99.8 on node A (10.0.0.1) to pod 172.16.57.15 on node B (10.0.0.2)
// in the overlay 172.16.0.0/16, flannel's VNI 1 and port 8472, underlay MTU
// 1500.
func DefaultOptions() Options {
	return Options{
		Src:     netip.MustParseAddr("172.16.99.8"),
		Dst:     netip.MustParseAddr("172.16.57.15"),
		SrcNode: netip.MustParseAddr("10.0.0.1"),
		DstNode: netip.MustParseAddr("10.0.0.2"),
		SrcMAC:  net.HardwareAddr{0xb6, 0xbf, 0x4c, 0x81, 0xcf, 0x3b},
		DstMAC:  net.HardwareAddr{0xd6, 0x51, 0x2e, 0x80, 0x5c, 0x69},
		Proto:   "icmp",
		Size:    56, // ping's default
		VNI:     encap.DefaultVNI,
		Port:    encap.DefaultPort,
		MTU:     1500,
	}
}

const maxVNI = 1<<24 - 1

// resolve checks o and fills in what is derived. Every error names the
// option (as the command's flag) and says what would be right.
func (o Options) resolve() (Options, error) {
	if o.ToOutside && o.Service.IsValid() {
		return o, errors.New("--to-outside and --service: one journey at a time")
	}
	var err error
	if o.Src, err = podAddr("src", o.Src); err != nil {
		return o, err
	}
	if o.ToOutside {
		o, err = o.resolveOutside()
	} else {
		o, err = o.resolvePods()
	}
	if err != nil {
		return o, err
	}
	if o.Service.IsValid() {
		if o, err = o.resolveService(); err != nil {
			return o, err
		}
	}
	return o.resolvePacket()
}

// resolvePods checks the two pods and nodes of a journey across the
// overlay.
func (o Options) resolvePods() (Options, error) {
	var err error
	if o.Dst, err = podAddr("dst", o.Dst); err != nil {
		return o, err
	}
	if o.Src.Is4() != o.Dst.Is4() {
		return o, fmt.Errorf("--src %s and --dst %s: one is IPv4, the other IPv6; a packet has one family", o.Src, o.Dst)
	}
	if o.Src == o.Dst {
		return o, fmt.Errorf("--src and --dst are both %s: a pod talking to itself never leaves it", o.Src)
	}
	if o.SrcSubnet, err = podSubnet("src", o.Src, o.SrcSubnet); err != nil {
		return o, err
	}
	if o.DstSubnet, err = podSubnet("dst", o.Dst, o.DstSubnet); err != nil {
		return o, err
	}
	if o.SrcSubnet.Overlaps(o.DstSubnet) {
		if o.SrcSubnet == o.DstSubnet {
			return o, fmt.Errorf("--src %s and --dst %s are both in %s: pods of one node talk over its bridge, no tunnel is involved (pick pods on two nodes, or set --src-subnet/--dst-subnet)", o.Src, o.Dst, o.SrcSubnet)
		}
		return o, fmt.Errorf("node subnets %s and %s overlap: each node leases its own subnet", o.SrcSubnet, o.DstSubnet)
	}
	if o.Network, err = network(o.Network, o.SrcSubnet, o.DstSubnet); err != nil {
		return o, err
	}

	if o.SrcNode, err = nodeAddr("src-node-ip", o.SrcNode, o.Network); err != nil {
		return o, err
	}
	if o.DstNode, err = nodeAddr("dst-node-ip", o.DstNode, o.Network); err != nil {
		return o, err
	}
	if o.SrcNode == o.DstNode {
		return o, fmt.Errorf("--src-node-ip and --dst-node-ip are both %s: the two nodes need two addresses", o.SrcNode)
	}
	if err := vtepMAC("src-mac", o.SrcMAC); err != nil {
		return o, err
	}
	if err := vtepMAC("dst-mac", o.DstMAC); err != nil {
		return o, err
	}
	if slices.Equal(o.SrcMAC, o.DstMAC) {
		return o, fmt.Errorf("--src-mac and --dst-mac are both %s: every VTEP needs its own MAC", o.SrcMAC)
	}
	o.SrcMAC, o.DstMAC = slices.Clone(o.SrcMAC), slices.Clone(o.DstMAC)
	return o, nil
}

// resolvePacket checks what the packet is and what carries it.
func (o Options) resolvePacket() (Options, error) {
	o.Proto = strings.ToLower(o.Proto)
	if !slices.Contains(Protos, o.Proto) {
		return o, fmt.Errorf("--proto %q: want one of %s", o.Proto, strings.Join(Protos, ", "))
	}
	if o.VNI > maxVNI {
		return o, fmt.Errorf("--vni %d: a VNI has 24 bits, 0 to %d", o.VNI, maxVNI)
	}
	if o.Port == 0 {
		return o, fmt.Errorf("--port 0: want a UDP port, 1 to 65535 (8472 is Linux's and flannel's, 4789 IANA's)")
	}

	// The TUN MTU must carry the smallest packet the pods' IP version
	// requires every link to carry.
	minTUN, family := 68, "IPv4"
	if o.Src.Is6() {
		minTUN, family = 1280, "IPv6"
	}
	if o.MTU > 65535 {
		return o, fmt.Errorf("--mtu %d: an IPv4 packet is at most 65535 bytes", o.MTU)
	}
	if o.MTU-encap.OverheadIPv4 < minTUN {
		return o, fmt.Errorf("--mtu %d: minus the %d bytes of VXLAN overhead that leaves %d for the pods, and %s needs at least %d; want --mtu %d or more",
			o.MTU, encap.OverheadIPv4, o.MTU-encap.OverheadIPv4, family, minTUN, minTUN+encap.OverheadIPv4)
	}
	if o.Size < 0 {
		return o, fmt.Errorf("--size %d: want 0 or more payload bytes", o.Size)
	}
	// A NAT is explained by a connection's first packet, the one its
	// rules see: a TCP SYN carries no data.
	if o.opensConnection() {
		o.Size = 0
	}
	tunMTU := o.MTU - encap.OverheadIPv4
	headers := ipHeaderLen(o.Src) + o.l4HeaderLen()
	if headers+o.Size > tunMTU {
		return o, fmt.Errorf("--size %d: the inner packet would be %d bytes (%d of headers + %d of payload), more than vxr0's MTU of %d (underlay MTU %d - %d of VXLAN overhead): "+
			"the pod's kernel would fragment it, or refuse it with DF set, before it reached the tunnel; want --size %d or less, or a larger --mtu",
			o.Size, headers+o.Size, headers, o.Size, tunMTU, o.MTU, encap.OverheadIPv4, tunMTU-headers)
	}
	return o, nil
}

// resolveOutside checks the pod, its node and the outside host of a
// journey to the outside.
func (o Options) resolveOutside() (Options, error) {
	var err error
	if !o.Src.Is4() {
		return o, fmt.Errorf("--to-outside: --src %s is IPv6; this journey follows flannel's IPv4 masquerade rule, give an IPv4 pod", o.Src)
	}
	if o.SrcSubnet, err = podSubnet("src", o.Src, o.SrcSubnet); err != nil {
		return o, err
	}
	if !o.Network.IsValid() {
		// Nothing on the other side to share a prefix with: the /16 of
		// flannel's usual networks, or the /8 around a shorter subnet.
		bits := 16
		if o.SrcSubnet.Bits() <= 16 {
			bits = 8
		}
		o.Network = netip.PrefixFrom(o.Src, bits).Masked()
	} else if o.Network, err = network(o.Network, o.SrcSubnet, o.SrcSubnet); err != nil {
		return o, err
	}
	if o.SrcNode, err = nodeAddr("src-node-ip", o.SrcNode, o.Network); err != nil {
		return o, err
	}
	if err := vtepMAC("src-mac", o.SrcMAC); err != nil {
		return o, err
	}
	o.SrcMAC = slices.Clone(o.SrcMAC)
	d := o.Dst.Unmap()
	switch {
	case !d.IsValid():
		return o, errors.New("--dst: the outside host's address is needed")
	case !d.Is4():
		return o, fmt.Errorf("--dst %s: want an IPv4 address outside the overlay", d)
	case d.IsMulticast():
		return o, fmt.Errorf("--dst %s is multicast: flannel's rule masquerades everything from the pods but multicast (! -d 224.0.0.0/4), which has no one to answer", d)
	case d.IsUnspecified() || d.IsLoopback() || d.IsLinkLocalUnicast() || d == netip.AddrFrom4([4]byte{255, 255, 255, 255}):
		return o, fmt.Errorf("--dst %s: want a unicast address of a host", d)
	case o.Network.Contains(d):
		return o, fmt.Errorf("--dst %s is in the overlay %s: that is pod to pod, leave out --to-outside", d, o.Network)
	case d == o.SrcNode:
		return o, fmt.Errorf("--dst %s is node A itself: a pod reaching its own node is not masqueraded (flannel returns traffic to the pod subnet); pick a host outside the cluster", d)
	}
	o.Dst = d
	o.DstSubnet, o.DstNode, o.DstMAC = netip.Prefix{}, netip.Addr{}, nil
	return o, nil
}

// resolveService checks the ClusterIP and ports of a journey to a Service.
func (o Options) resolveService() (Options, error) {
	ip := o.Service.Addr().Unmap()
	switch {
	case !ip.Is4() || !o.Src.Is4():
		return o, fmt.Errorf("--service %s: want an IPv4 ClusterIP:port, like 192.168.3.10:80, and IPv4 pods", o.Service)
	case o.Service.Port() == 0:
		return o, fmt.Errorf("--service %s: port 0; want the Service's port, like 192.168.3.10:80", o.Service)
	case o.Network.Contains(ip):
		return o, fmt.Errorf("--service %s is in the pod network %s: ClusterIPs come from a range of their own, the service network", o.Service, o.Network)
	case nodeNetwork(o.SrcNode).Contains(ip):
		return o, fmt.Errorf("--service %s is in the nodes' network %s: ClusterIPs come from a range of their own, the service network", o.Service, nodeNetwork(o.SrcNode))
	case !ip.IsGlobalUnicast() && !ip.IsPrivate():
		return o, fmt.Errorf("--service %s: want a unicast address", o.Service)
	}
	o.Service = netip.AddrPortFrom(ip, o.Service.Port())
	if o.Proto == "icmp" {
		return o, errors.New("--proto icmp: a Service forwards TCP and UDP ports, not pings; no device has a ClusterIP, so nothing would answer one (use --proto tcp or udp)")
	}
	if o.TargetPort == 0 {
		o.TargetPort = DefaultTargetPort
	}
	if !o.ServiceNetwork.IsValid() {
		o.ServiceNetwork = netip.PrefixFrom(ip, 24).Masked()
	}
	sn := o.ServiceNetwork
	switch {
	case !sn.Addr().Is4() || sn != sn.Masked():
		return o, fmt.Errorf("--service-network %s: want an IPv4 network like 192.168.3.0/24", sn)
	case !sn.Contains(ip):
		return o, fmt.Errorf("--service %s is not in --service-network %s", o.Service, sn)
	case sn.Overlaps(o.Network):
		return o, fmt.Errorf("--service-network %s overlaps the pod network %s", sn, o.Network)
	}
	return o, nil
}

// nodeNetwork is the network of the nodes' public addresses: the /24
// around node A's.
func nodeNetwork(node netip.Addr) netip.Prefix {
	return netip.PrefixFrom(node, 24).Masked()
}

func podAddr(flag string, a netip.Addr) (netip.Addr, error) {
	if !a.IsValid() {
		return a, fmt.Errorf("--%s: a pod address is needed", flag)
	}
	a = a.Unmap()
	if a.Zone() != "" {
		return a, fmt.Errorf("--%s %s: a pod address has no zone", flag, a)
	}
	if a.IsUnspecified() || a.IsMulticast() || a.IsLoopback() || a.IsLinkLocalUnicast() || a == netip.AddrFrom4([4]byte{255, 255, 255, 255}) {
		return a, fmt.Errorf("--%s %s: want a unicast pod address (not unspecified, loopback, link-local, multicast or broadcast)", flag, a)
	}
	return a, nil
}

// podSubnet returns the node subnet of pod a, derived when p is zero, and
// checks that a is a pod's address in it: not the subnet's own address, not
// the bridge's (the first host address), not IPv4's broadcast address.
func podSubnet(flag string, a netip.Addr, p netip.Prefix) (netip.Prefix, error) {
	if !p.IsValid() {
		p = derivedSubnet(a)
	}
	p = netip.PrefixFrom(p.Addr().Unmap(), p.Bits())
	if p.Addr().Is4() != a.Is4() {
		return p, fmt.Errorf("--%s-subnet %s: not the same IP version as the pod %s", flag, p, a)
	}
	if p != p.Masked() {
		return p, fmt.Errorf("--%s-subnet %s: host bits set, did you mean %s?", flag, p, p.Masked())
	}
	if !p.Contains(a) {
		return p, fmt.Errorf("--%s %s is not in its node's subnet %s", flag, a, p)
	}
	if a == p.Addr() {
		return p, fmt.Errorf("--%s %s is the address of the subnet %s itself (the node's TUN holds it), not a pod's", flag, a, p)
	}
	if a == p.Addr().Next() {
		return p, fmt.Errorf("--%s %s is the bridge's address in %s (the pods' gateway), not a pod's", flag, a, p)
	}
	if a.Is4() && a == lastAddr(p) {
		return p, fmt.Errorf("--%s %s is the broadcast address of %s, not a pod's", flag, a, p)
	}
	return p, nil
}

// network returns the overlay network, derived from the two subnets when n
// is zero, and checks that it holds both.
func network(n, a, b netip.Prefix) (netip.Prefix, error) {
	if !n.IsValid() {
		round := 8
		if a.Addr().Is6() {
			round = 16
		}
		bits := commonBits(a.Addr(), b.Addr()) / round * round
		if bits == 0 {
			return n, fmt.Errorf("node subnets %s and %s share no prefix of %d bits or more: give the overlay network with --network", a, b, round)
		}
		return netip.PrefixFrom(a.Addr(), bits).Masked(), nil
	}
	n = netip.PrefixFrom(n.Addr().Unmap(), n.Bits())
	if n.Addr().Is4() != a.Addr().Is4() {
		return n, fmt.Errorf("--network %s: not the same IP version as the pods", n)
	}
	if n != n.Masked() {
		return n, fmt.Errorf("--network %s: host bits set, did you mean %s?", n, n.Masked())
	}
	for _, s := range []netip.Prefix{a, b} {
		if !n.Contains(s.Addr()) || s.Bits() <= n.Bits() {
			return n, fmt.Errorf("--network %s does not hold the node subnet %s: every node's subnet is a part of the overlay network", n, s)
		}
	}
	return n, nil
}

// nodeAddr checks a node's public address. vxrouter's leases, like
// flannel's in etcd, carry an IPv4 PublicIP, so the underlay is IPv4.
func nodeAddr(flag string, a netip.Addr, overlay netip.Prefix) (netip.Addr, error) {
	if !a.IsValid() {
		return a, fmt.Errorf("--%s: the node's public address is needed", flag)
	}
	a = a.Unmap()
	if !a.Is4() {
		return a, fmt.Errorf("--%s %s: want an IPv4 address; vxrouter's leases (flannel's layout) carry an IPv4 public IP, so the underlay is IPv4", flag, a)
	}
	if a.IsUnspecified() || a.IsMulticast() || a.IsLoopback() || a == netip.AddrFrom4([4]byte{255, 255, 255, 255}) {
		return a, fmt.Errorf("--%s %s: want a unicast address a node can have on its network interface", flag, a)
	}
	if overlay.Contains(a) {
		return a, fmt.Errorf("--%s %s is inside the overlay network %s: the underlay must be outside it, or its packets would be routed into the tunnel", flag, a, overlay)
	}
	return a, nil
}

// vtepMAC checks a VTEP MAC: the inner Ethernet header needs a unicast
// address of 6 bytes.
func vtepMAC(flag string, m net.HardwareAddr) error {
	if len(m) != 6 {
		return fmt.Errorf("--%s %q: want 6 bytes, like d6:51:2e:80:5c:69", flag, m.String())
	}
	if m[0]&1 != 0 {
		return fmt.Errorf("--%s %s: a multicast MAC (lowest bit of the first byte set); a VTEP's MAC is unicast", flag, m)
	}
	if [6]byte(m) == [6]byte{} {
		return fmt.Errorf("--%s %s: the all-zero MAC is no device's address", flag, m)
	}
	return nil
}

// commonBits is the length of the prefix a and b share.
func commonBits(a, b netip.Addr) int {
	x, y := a.As16(), b.As16()
	n := 0
	if a.Is4() {
		n = -96 // As16 puts an IPv4 address behind 96 bits of ::ffff:0:0/96
	}
	for i := range x {
		d := x[i] ^ y[i]
		if d == 0 {
			n += 8
			continue
		}
		for d&0x80 == 0 {
			n++
			d <<= 1
		}
		break
	}
	return n
}

// lastAddr is the highest address in p.
func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Masked().Addr().AsSlice()
	for i := p.Bits(); i < len(b)*8; i++ {
		b[i/8] |= 0x80 >> (i % 8)
	}
	a, _ := netip.AddrFromSlice(b)
	return a
}

func ipHeaderLen(a netip.Addr) int {
	if a.Is4() {
		return 20
	}
	return 40
}

// opensConnection reports whether the journey's packet is a TCP SYN: the
// first packet of a connection is the one NAT rules decide on.
func (o Options) opensConnection() bool {
	return o.Proto == "tcp" && (o.Service.IsValid() || o.ToOutside)
}

// l4HeaderLen is the length of the packet's ICMP, UDP or TCP header: a
// SYN, which opens a connection to a Service, carries the MSS option.
func (o Options) l4HeaderLen() int {
	switch {
	case o.opensConnection():
		return 24
	case o.Proto == "tcp":
		return 20
	}
	return 8 // ICMP echo, ICMPv6 echo and UDP alike
}
