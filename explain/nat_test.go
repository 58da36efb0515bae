package explain

import (
	"bytes"
	"encoding/binary"
	"math/rand/v2"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
)

// natCases are the journeys through NAT, with golden texts.
var natCases = []struct {
	name string
	opts func(*Options)
}{
	{"service", func(o *Options) { o.Service = netip.MustParseAddrPort("192.168.3.10:80"); o.Proto = "tcp" }},
	{"service-udp", func(o *Options) {
		o.Service = netip.MustParseAddrPort("192.168.3.53:53")
		o.Proto, o.Size, o.TargetPort = "udp", 40, 5353
	}},
	{"outside", func(o *Options) { o.ToOutside = true; o.Dst = DefaultOutside }},
	{"outside-tcp", func(o *Options) { o.ToOutside = true; o.Dst = netip.MustParseAddr("93.184.215.14"); o.Proto = "tcp" }},
}

func natJourney(t *testing.T, name string) *Journey {
	t.Helper()
	for _, c := range natCases {
		if c.name == name {
			return walk(t, c.opts)
		}
	}
	t.Fatalf("no case %q", name)
	return nil
}

func TestNATGolden(t *testing.T) {
	for _, c := range natCases {
		t.Run(c.name, func(t *testing.T) {
			var b bytes.Buffer
			if err := walk(t, c.opts).WriteText(&b); err != nil {
				t.Fatal(err)
			}
			path := filepath.Join("testdata", c.name+".golden")
			if *update {
				if err := os.WriteFile(path, b.Bytes(), 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (run go test ./explain/ -update to write it)", err)
			}
			if !bytes.Equal(b.Bytes(), want) {
				t.Errorf("text differs from %s (go test ./explain/ -update rewrites it; read the diff):\n%s", path, firstDiff(b.String(), string(want)))
			}
		})
	}
}

// TestNATTextShape: 80 columns, plain characters, the steps in order, and
// no checksum that failed to follow a rewrite.
func TestNATTextShape(t *testing.T) {
	headings := map[bool][]string{
		true:  {"\n1. The pod sends to the ClusterIP\n", "\n2. Node A's nat PREROUTING", "\n3. DNAT", "\n4. Across the overlay", "\n5. Node B delivers", "\n6. The answer's way back\n", "\nSee it yourself\n"},
		false: {"\n1. The pod sends\n", "\n2. Node A routes it out of eth0", "\n3. nat POSTROUTING", "\n4. The rewrite", "\n5. The answer's way back\n", "\nSee it yourself\n"},
	}
	for _, c := range natCases {
		t.Run(c.name, func(t *testing.T) {
			var b bytes.Buffer
			j := walk(t, c.opts)
			if err := j.WriteText(&b); err != nil {
				t.Fatal(err)
			}
			text := b.String()
			for i, l := range strings.Split(strings.TrimSuffix(text, "\n"), "\n") {
				if len(l) > 80 {
					t.Errorf("line %d is %d columns: %q", i+1, len(l), l)
				}
				if strings.TrimRight(l, " ") != l {
					t.Errorf("line %d ends in spaces: %q", i+1, l)
				}
				for _, r := range l {
					if r < ' ' || r > '~' {
						t.Errorf("line %d has character %q", i+1, r)
						break
					}
				}
			}
			at := 0
			for _, h := range headings[j.svc != nil] {
				k := strings.Index(text[at:], h)
				if k < 0 {
					t.Fatalf("heading %q missing or out of order", h)
				}
				at += k
			}
			for _, bad := range []string{"WRONG", "(0 in one's complement)"} {
				if strings.Contains(text, bad) {
					t.Errorf("text says %q", bad)
				}
			}
		})
	}
}

// TestServiceText pins what the Service journey must state, apart from
// the golden file: kube-proxy's chains, the rewrite and its checksums, the
// conntrack entry, the way back.
func TestServiceText(t *testing.T) {
	var b bytes.Buffer
	j := natJourney(t, "service")
	if err := j.WriteText(&b); err != nil {
		t.Fatal(err)
	}
	text := b.String()
	for _, want := range []string{
		"service   192.168.3.0/24",
		"-A KUBE-SERVICES -m comment --comment \"default/web cluster IP\" -m tcp \\\n        -p tcp -d 192.168.3.10 --dport 80 -j KUBE-SVC-LOLE4ISW44XBNF3G",
		"--probability 0.5000000000",
		"-j DNAT --to-destination 172.16.57.15:8080",
		"16    destination        192.168.3.10   172.16.57.15",
		"                         c0 a8 03 0a    ac 10 39 0f",
		"recomputed over the whole rewritten packet: 3460, the same",
		"SYN_SENT src=172.16.99.8 dst=192.168.3.10 sport=40000 dport=80\n",
		"[UNREPLIED] src=172.16.57.15 dst=172.16.99.8 sport=8080 dport=40000\n",
		"12    source            172.16.57.15   192.168.3.10",
		"40  02 04 05 82        options           MSS 1410",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("text lacks %q", want)
		}
	}
}

// TestOutsideText pins what the journey to the outside must state.
func TestOutsideText(t *testing.T) {
	var b bytes.Buffer
	if err := natJourney(t, "outside").WriteText(&b); err != nil {
		t.Fatal(err)
	}
	text := b.String()
	for _, want := range []string{
		"-A FLANNEL-POSTRTG -s 172.16.0.0/16 ! -d 224.0.0.0/4 -m comment \\\n        --comment \"flanneld masq\" -j MASQUERADE --random-fully",
		"5  -s 172.16.0.0/16 ! -d 224.0.0.0/4 -j MASQUERADE\n           yes: MASQUERADE",
		"6  ! -s 172.16.0.0/16 -d 172.16.0.0/16 -j MASQUERADE\n           not reached",
		"12    source            172.16.99.8   10.0.0.1",
		"24    identifier        4242          47193",
		"ICMP checksum (covers the message, with no pseudo-header)",
		"id=4242\n        [UNREPLIED] src=10.0.0.100 dst=10.0.0.1 type=0 code=0 id=47193\n",
		"16    destination       10.0.0.1      172.16.99.8",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("text lacks %q", want)
		}
	}
}

// ipOf decodes a bare IPv4 packet or an Ethernet frame holding one, and
// checks both its checksums from scratch.
func ipOf(t *testing.T, b []byte, framed bool) (*layers.IPv4, gopacket.Packet) {
	t.Helper()
	first := layers.LayerTypeIPv4
	if framed {
		first = layers.LayerTypeEthernet
	}
	pkt := gopacket.NewPacket(b, first, gopacket.Default)
	if err := decodeError(pkt); err != nil {
		t.Fatalf("decode: %v", err)
	}
	ip, ok := pkt.Layer(layers.LayerTypeIPv4).(*layers.IPv4)
	if !ok {
		t.Fatal("no IPv4 layer")
	}
	if checksum(ip.Contents) != 0 {
		t.Errorf("IPv4 header checksum 0x%04x is wrong", ip.Checksum)
	}
	src, _ := netip.AddrFromSlice(ip.SrcIP.To4())
	dst, _ := netip.AddrFromSlice(ip.DstIP.To4())
	seg := ip.Payload
	switch ip.Protocol {
	case layers.IPProtocolICMPv4:
		if checksum(seg) != 0 {
			t.Error("ICMP checksum is wrong")
		}
	default:
		if l4Checksum(src, dst, uint8(ip.Protocol), seg) != 0 {
			t.Errorf("%v checksum is wrong", ip.Protocol)
		}
	}
	return ip, pkt
}

// ports reads the transport ports (ICMP: the echo identifier as src).
func ports(pkt gopacket.Packet) (src, dst uint16) {
	switch l := pkt.TransportLayer().(type) {
	case *layers.TCP:
		return uint16(l.SrcPort), uint16(l.DstPort)
	case *layers.UDP:
		return uint16(l.SrcPort), uint16(l.DstPort)
	}
	if icmp, ok := pkt.Layer(layers.LayerTypeICMPv4).(*layers.ICMPv4); ok {
		return icmp.Id, 0
	}
	return 0, 0
}

// TestServiceBytes checks the Service journey's bytes with gopacket and
// checksums computed from scratch, independently of natRewrite: the pod's
// packet goes to the ClusterIP, the one in VXLAN to the backend, with
// every checksum right; the answer reaches the pod from the ClusterIP.
func TestServiceBytes(t *testing.T) {
	for _, name := range []string{"service", "service-udp"} {
		t.Run(name, func(t *testing.T) {
			j := natJourney(t, name)
			o, f := j.Options(), j.Frames()
			ip, pkt := ipOf(t, f.Veth, true)
			if sp, dp := ports(pkt); ip.DstIP.String() != o.Service.Addr().String() || dp != o.Service.Port() || sp != appSrcPort {
				t.Errorf("the pod sends to %v:%d from port %d, want %v from %d", ip.DstIP, dp, sp, o.Service, appSrcPort)
			}
			ip, pkt = ipOf(t, f.TUN, false)
			if _, dp := ports(pkt); ip.DstIP.String() != o.Dst.String() || dp != o.TargetPort || ip.TTL != podTTL-1 {
				t.Errorf("vxr0 gets a packet to %v:%d TTL %d, want %v:%d TTL %d", ip.DstIP, dp, ip.TTL, o.Dst, o.TargetPort, podTTL-1)
			}
			// The DNAT's output is the packet vxr0 gets, but for the TTL
			// and the header checksum node A's forwarding changes.
			after := slices.Clone(j.svc.dnat.after)
			tun := slices.Clone(f.TUN)
			for _, b := range [][]byte{after, tun} {
				b[8], b[10], b[11] = 0, 0, 0
			}
			if !bytes.Equal(after, tun) {
				t.Errorf("the DNATed packet and the packet on vxr0 differ beyond TTL and checksum:\n% x\n% x", after, tun)
			}
			if !bytes.Equal(f.Delivered, f.TUN) {
				t.Error("node B does not deliver the DNATed packet")
			}
			ip, pkt = ipOf(t, f.Reply, true)
			if sp, dp := ports(pkt); ip.SrcIP.String() != o.Service.Addr().String() || sp != o.Service.Port() || ip.DstIP.String() != o.Src.String() || dp != appSrcPort {
				t.Errorf("the pod's answer comes from %v:%d to %v:%d, want %v to %v:%d", ip.SrcIP, sp, ip.DstIP, dp, o.Service, o.Src, appSrcPort)
			}
			if o.Proto == "tcp" {
				tcp := pkt.Layer(layers.LayerTypeTCP).(*layers.TCP)
				if !tcp.SYN || !tcp.ACK || tcp.Ack != tcpSeq+1 {
					t.Errorf("the answer is not the SYN-ACK of the pod's SYN: %+v", tcp)
				}
			}
		})
	}
}

// TestOutsideBytes checks the journey to the outside the same way: the
// frame on eth0 comes from node A's address, the answer reaches the pod
// from the host, with its own identifier or port.
func TestOutsideBytes(t *testing.T) {
	for _, name := range []string{"outside", "outside-tcp"} {
		t.Run(name, func(t *testing.T) {
			j := natJourney(t, name)
			o, f := j.Options(), j.Frames()
			if f.TUN != nil || f.Payload != nil {
				t.Error("a packet to the outside went through the tunnel")
			}
			ip, pkt := ipOf(t, f.Wire, true)
			if sp, _ := ports(pkt); ip.SrcIP.String() != o.SrcNode.String() || ip.DstIP.String() != o.Dst.String() || sp != natPort {
				t.Errorf("on eth0: %v (port %d) -> %v, want %v (port %d) -> %v", ip.SrcIP, sp, ip.DstIP, o.SrcNode, natPort, o.Dst)
			}
			eth := pkt.Layer(layers.LayerTypeEthernet).(*layers.Ethernet)
			next := o.Dst
			if !nodeNetwork(o.SrcNode).Contains(o.Dst) {
				next = lastAddr(nodeNetwork(o.SrcNode)).Prev()
			}
			if eth.DstMAC.String() != madeUpMAC(0x02, 0x00, next).String() {
				t.Errorf("frame to %v, want the MAC of next hop %v", eth.DstMAC, next)
			}
			ip, pkt = ipOf(t, f.Reply, true)
			sp, dp := ports(pkt)
			want := uint16(icmpID)
			got := sp
			if o.Proto != "icmp" {
				want, got = appSrcPort, dp
			}
			if ip.SrcIP.String() != o.Dst.String() || ip.DstIP.String() != o.Src.String() || got != want {
				t.Errorf("the pod's answer: %v -> %v port/id %d, want %v -> %v %d", ip.SrcIP, ip.DstIP, got, o.Dst, o.Src, want)
			}
		})
	}
}

// TestIncremental checks RFC 1624's update against a full computation on
// random packets and random rewrites: the kernel's way and the sender's
// must agree, or a NATed packet would be dropped.
func TestIncremental(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	addr := func() netip.Addr {
		var b [4]byte
		binary.BigEndian.PutUint32(b[:], r.Uint32())
		return netip.AddrFrom4(b)
	}
	for i := range 20000 {
		pk := ipPacket{
			src: addr(), dst: addr(), ttl: uint8(r.UintN(255) + 1), id: uint16(r.Uint32()),
			proto: []string{"icmp", "udp", "tcp"}[i%3], sport: uint16(r.Uint32()), dport: uint16(r.Uint32()),
			syn: r.IntN(2) == 0, reply: r.IntN(2) == 0, mss: 1410, size: r.IntN(64),
		}
		b, err := pk.build(nil)
		if err != nil {
			t.Fatal(err)
		}
		c := natChange{src: addr(), sport: uint16(r.Uint32())}
		if r.IntN(2) == 0 {
			c = natChange{dst: addr(), dport: uint16(r.Uint32())}
		}
		rw, err := natRewrite(b, c)
		if err != nil {
			t.Fatalf("packet %d (%+v, %+v): %v", i, pk, c, err)
		}
		_, pkt := ipOf(t, rw.after, false)
		if t.Failed() {
			t.Fatalf("packet %d: %+v rewritten with %+v", i, pk, c)
		}
		sp, dp := ports(pkt)
		if c.sport != 0 && sp != c.sport || c.dport != 0 && pk.proto != "icmp" && dp != c.dport {
			t.Fatalf("packet %d: ports %d %d after %+v", i, sp, dp, c)
		}
	}
}

// TestIncrementalKnown is RFC 1624's own example (section 4): a header
// checksum of 0xdd2f, a word 0x5555 that becomes 0x3285, gives 0x0000 by
// equation 3.
func TestIncrementalKnown(t *testing.T) {
	if got := incremental(0xdd2f, [][2]uint16{{0x5555, 0x3285}}); got != 0x0000 {
		t.Errorf("incremental = 0x%04x, want 0x0000", got)
	}
}

// FuzzWalkNAT feeds the journeys through NAT arbitrary options: an error
// or a journey that prints, captures and draws, never a panic.
func FuzzWalkNAT(f *testing.F) {
	f.Add(uint8(0), []byte{192, 168, 3, 10}, uint16(80), uint16(8080), uint8(2), 0, []byte{10, 0, 0, 100})
	f.Add(uint8(1), []byte{192, 168, 3, 53}, uint16(53), uint16(5353), uint8(1), 40, []byte{8, 8, 8, 8})
	f.Add(uint8(1), []byte{172, 16, 0, 1}, uint16(0), uint16(0), uint8(0), -1, []byte{224, 0, 0, 1})
	f.Fuzz(func(t *testing.T, mode uint8, svc []byte, port, target uint16, proto uint8, size int, dst []byte) {
		o := DefaultOptions()
		o.Proto = []string{"icmp", "udp", "tcp"}[proto%3]
		o.Size = size
		if mode%2 == 0 {
			a, _ := netip.AddrFromSlice(svc)
			o.Service, o.TargetPort = netip.AddrPortFrom(a, port), target
		} else {
			o.ToOutside = true
			o.Dst, _ = netip.AddrFromSlice(dst)
		}
		j, err := Walk(o)
		if err != nil {
			return
		}
		var b bytes.Buffer
		if err := j.WriteText(&b); err != nil {
			t.Fatalf("Walk accepted %+v but WriteText failed: %v", o, err)
		}
		if err := j.WritePcap(&b); err != nil {
			t.Fatal(err)
		}
		if err := j.WriteSVG(&b); err != nil {
			t.Fatal(err)
		}
	})
}
