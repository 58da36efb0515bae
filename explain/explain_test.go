package explain

import (
	"bytes"
	"flag"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"

	"vxrouter/encap"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden from the current output")

// cases are the journeys with golden texts and byte checks.
var cases = []struct {
	name string
	opts func(*Options)
}{
	{"default", func(*Options) {}},
	{"udp", func(o *Options) { o.Proto = "udp"; o.Size = 100 }},
	{"tcp", func(o *Options) { o.Proto = "tcp"; o.Size = 1410 }},
	{"ipv6", func(o *Options) {
		o.Src = netip.MustParseAddr("fd00:16:99::8")
		o.Dst = netip.MustParseAddr("fd00:16:57::15")
	}},
	{"vni-port", func(o *Options) { o.VNI = 4096; o.Port = 4789; o.MTU = 9000 }},
}

func walk(t *testing.T, f func(*Options)) *Journey {
	t.Helper()
	o := DefaultOptions()
	f(&o)
	j, err := Walk(o)
	if err != nil {
		t.Fatalf("Walk: %v", err)
	}
	return j
}

func TestGolden(t *testing.T) {
	for _, c := range cases {
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

func firstDiff(got, want string) string {
	g, w := strings.Split(got, "\n"), strings.Split(want, "\n")
	for i := 0; i < max(len(g), len(w)); i++ {
		var gl, wl string
		if i < len(g) {
			gl = g[i]
		}
		if i < len(w) {
			wl = w[i]
		}
		if gl != wl {
			return "line " + strconv.Itoa(i+1) + ":\n got: " + gl + "\nwant: " + wl
		}
	}
	return ""
}

// TestTextShape checks what makes the text usable in a terminal and a
// README: 80 columns (but for the verbatim etcd value), no control
// characters, no trailing spaces, the seven steps in order, and the same
// text every time.
func TestTextShape(t *testing.T) {
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			j := walk(t, c.opts)
			var a, b bytes.Buffer
			if err := j.WriteText(&a); err != nil {
				t.Fatal(err)
			}
			if err := walk(t, c.opts).WriteText(&b); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(a.Bytes(), b.Bytes()) {
				t.Fatal("two walks with the same options wrote different text")
			}
			text := a.String()
			for i, l := range strings.Split(strings.TrimSuffix(text, "\n"), "\n") {
				if len(l) > 80 && !strings.HasPrefix(l, `    {"PublicIP":`) {
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
			for _, h := range []string{"\n1. The pod sends\n", "\n2. ", "\n3. ", "\n4. ", "\n5. ", "\n6. ", "\n7. Node B", "\nSee it yourself\n"} {
				k := strings.Index(text[at:], h)
				if k < 0 {
					t.Fatalf("heading %q missing or out of order", h)
				}
				at += k
			}
			if strings.Contains(text, "WRONG") || strings.Contains(text, "accepted") {
				t.Error("text reports a wrong checksum or a check that did not fail")
			}
		})
	}
}

// TestDefaultText pins the facts of DESIGN.md's journey that the text must
// state, independent of the golden file.
func TestDefaultText(t *testing.T) {
	var b bytes.Buffer
	if err := walk(t, func(*Options) {}).WriteText(&b); err != nil {
		t.Fatal(err)
	}
	text := b.String()
	for _, want := range []string{
		"default via 172.16.99.1 dev eth0",
		"172.16.0.0/16 dev vxr0",
		"172.16.99.0/24 dev cni0",
		"$ etcdctl get /coreos.com/network/subnets/172.16.57.0-24\n",
		"\n    " + `{"PublicIP":"10.0.0.2","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"d6:51:2e:80:5c:69"}}` + "\n",
		"172.16.57.0 lladdr d6:51:2e:80:5c:69 PERMANENT",
		"d6:51:2e:80:5c:69 dst 10.0.0.2 self permanent",
		"0x08, the I flag",
		"1450  the largest inner packet: the MTU of vxr0",
		"FLANNEL_MTU=1450",
		"tshark -r journey.pcap -d udp.port==8472,vxlan -V",
		"0-13  outer Ethernet",
		"42-49  VXLAN",
		"decap-foreign-vni",
		`Decap returns "ok"`,
	} {
		if !strings.Contains(text, want) {
			t.Errorf("text lacks %q", want)
		}
	}
}

// TestFrames cross-checks the bytes with gopacket, independently of the
// code that printed them: the frame on the wire decodes, with the VXLAN
// layer decoded explicitly from the UDP payload, to the options' values;
// checksums are right; the inner packet survives the round trip.
func TestFrames(t *testing.T) {
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			j := walk(t, c.opts)
			o := j.Options()
			f := j.Frames()

			if got, want := len(f.Wire), encap.EthernetLen+encap.OverheadIPv4+len(f.TUN); got != want {
				t.Errorf("wire frame is %d bytes, want %d (Ethernet + overhead + inner)", got, want)
			}
			wire := gopacket.NewPacket(f.Wire, layers.LayerTypeEthernet, gopacket.Default)
			if e := wire.ErrorLayer(); e != nil {
				t.Fatalf("decode wire frame: %v", e.Error())
			}
			eth := wire.Layer(layers.LayerTypeEthernet).(*layers.Ethernet)
			ip := wire.Layer(layers.LayerTypeIPv4).(*layers.IPv4)
			udp := wire.Layer(layers.LayerTypeUDP).(*layers.UDP)
			if eth.EthernetType != layers.EthernetTypeIPv4 {
				t.Errorf("outer EtherType %v", eth.EthernetType)
			}
			if !ip.SrcIP.Equal(o.SrcNode.AsSlice()) || !ip.DstIP.Equal(o.DstNode.AsSlice()) || ip.Protocol != layers.IPProtocolUDP {
				t.Errorf("outer IPv4 %v -> %v proto %v, want %v -> %v UDP", ip.SrcIP, ip.DstIP, ip.Protocol, o.SrcNode, o.DstNode)
			}
			if int(ip.Length) != len(f.Wire)-encap.EthernetLen || int(ip.Length) > o.MTU {
				t.Errorf("outer IPv4 length %d, frame %d, MTU %d", ip.Length, len(f.Wire), o.MTU)
			}
			if checksum(ip.Contents) != 0 {
				t.Errorf("outer IPv4 header checksum 0x%04x is wrong", ip.Checksum)
			}
			// The source port is the inner flow's: in the range, and the
			// one route picks for the packet in the TUN frame.
			if sp := uint16(udp.SrcPort); uint16(udp.DstPort) != o.Port || sp < entropyLo || sp > entropyHi || sp != entropyPort(f.TUN) {
				t.Errorf("UDP ports %d -> %d, want the flow's port in %d-%d -> %d", udp.SrcPort, udp.DstPort, entropyLo, entropyHi, o.Port)
			}
			if l4Checksum(o.SrcNode, o.DstNode, 17, f.Wire[encap.EthernetLen+20:]) != 0 {
				t.Errorf("outer UDP checksum 0x%04x is wrong", udp.Checksum)
			}
			if !bytes.Equal(udp.Payload, f.Payload) {
				t.Error("UDP payload is not what Encap returned")
			}

			// gopacket maps only 4789 to VXLAN; decode 8472 explicitly.
			inner := gopacket.NewPacket(udp.Payload, layers.LayerTypeVXLAN, gopacket.Default)
			if e := inner.ErrorLayer(); e != nil {
				t.Fatalf("decode VXLAN payload: %v", e.Error())
			}
			vx := inner.Layer(layers.LayerTypeVXLAN).(*layers.VXLAN)
			if !vx.ValidIDFlag || vx.VNI != o.VNI {
				t.Errorf("VXLAN I flag %v VNI %d, want true %d", vx.ValidIDFlag, vx.VNI, o.VNI)
			}
			ieth := inner.Layer(layers.LayerTypeEthernet).(*layers.Ethernet)
			wantET := layers.EthernetTypeIPv4
			if o.Src.Is6() {
				wantET = layers.EthernetTypeIPv6
			}
			if ieth.DstMAC.String() != o.DstMAC.String() || ieth.SrcMAC.String() != o.SrcMAC.String() || ieth.EthernetType != wantET {
				t.Errorf("inner Ethernet %v -> %v %v, want %v -> %v %v", ieth.SrcMAC, ieth.DstMAC, ieth.EthernetType, o.SrcMAC, o.DstMAC, wantET)
			}
			if !bytes.Equal(ieth.Payload, f.TUN) {
				t.Error("inner Ethernet payload is not the packet read from TUN")
			}
			nl := inner.NetworkLayer()
			if nl == nil {
				t.Fatal("no inner network layer")
			}
			src, dst := nl.NetworkFlow().Endpoints()
			if src.String() != o.Src.String() || dst.String() != o.Dst.String() {
				t.Errorf("inner %v -> %v, want %v -> %v", src, dst, o.Src, o.Dst)
			}
			if ip4, ok := nl.(*layers.IPv4); ok {
				if checksum(ip4.Contents) != 0 {
					t.Errorf("inner IPv4 header checksum 0x%04x is wrong", ip4.Checksum)
				}
				if ip4.TTL != podTTL-1 {
					t.Errorf("inner TTL %d, want %d (one hop after the pod)", ip4.TTL, podTTL-1)
				}
			}
			var payload []byte
			if icmp6, ok := inner.Layer(layers.LayerTypeICMPv6).(*layers.ICMPv6); ok {
				payload = icmp6.Payload[4:] // gopacket's ICMPv6Echo drops it
			} else if app := inner.ApplicationLayer(); app != nil {
				payload = app.Payload()
			}
			if !bytes.Equal(payload, payloadBytes(o.Size)) {
				t.Errorf("inner payload is %d bytes %q, want %d", len(payload), payload, o.Size)
			}
			// The transport checksum over the pseudo-header.
			proto := map[string]uint8{"udp": 17, "tcp": 6, "icmp": 1}[o.Proto]
			if o.Src.Is6() && proto == 1 {
				proto = 58
			}
			seg := f.TUN[ipHeaderLen(o.Src):]
			if proto == 1 {
				if checksum(seg) != 0 {
					t.Error("inner ICMP checksum is wrong")
				}
			} else if l4Checksum(o.Src, o.Dst, proto, seg) != 0 {
				t.Errorf("inner %s checksum is wrong", o.Proto)
			}

			// Node B: Decap of the wire's UDP payload gives the packet back.
			dec, err := encap.NewDecoder(o.VNI, o.DstMAC)
			if err != nil {
				t.Fatal(err)
			}
			got, r := dec.Decap(udp.Payload)
			if r != encap.OK || !bytes.Equal(got, f.TUN) || !bytes.Equal(f.Delivered, f.TUN) {
				t.Errorf("Decap = %v, %d bytes; want ok and the %d-byte TUN packet", r, len(got), len(f.TUN))
			}

			// The veth frame is the same packet one hop earlier.
			veth := gopacket.NewPacket(f.Veth, layers.LayerTypeEthernet, gopacket.Default)
			if e := veth.ErrorLayer(); e != nil {
				t.Fatalf("decode veth frame: %v", e.Error())
			}
			vnet := veth.NetworkLayer()
			if vnet == nil || !bytes.Equal(vnet.LayerPayload(), nl.LayerPayload()) {
				t.Error("veth frame does not carry the same transport bytes")
			}
		})
	}
}

// TestChecks checks node B's table: each mutated copy is dropped for the
// reason the check names.
func TestChecks(t *testing.T) {
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			j := walk(t, c.opts)
			want := []string{"unknown-sender", "decap-short", "decap-no-i-flag", "decap-foreign-vni", "decap-foreign-mac", "decap-unknown-ethertype", "decap-bad-inner"}
			if len(j.checks) != len(want) {
				t.Fatalf("%d checks, want %d", len(j.checks), len(want))
			}
			for i, w := range want {
				if j.checks[i].ifNot != w {
					t.Errorf("check %q: a failing copy gets %q, want %q", j.checks[i].what, j.checks[i].ifNot, w)
				}
			}
			if j.decap != encap.OK {
				t.Errorf("the datagram itself got %v", j.decap)
			}
		})
	}
}

func TestFramesAreCopies(t *testing.T) {
	j := walk(t, func(*Options) {})
	f := j.Frames()
	f.Wire[0] ^= 0xff
	f.TUN[0] ^= 0xff
	g := j.Frames()
	if g.Wire[0] == f.Wire[0] || g.TUN[0] == f.TUN[0] {
		t.Error("Frames returns the journey's own slices")
	}
}

func TestDerived(t *testing.T) {
	j := walk(t, func(*Options) {})
	o := j.Options()
	if o.SrcSubnet.String() != "172.16.99.0/24" || o.DstSubnet.String() != "172.16.57.0/24" || o.Network.String() != "172.16.0.0/16" {
		t.Errorf("derived %v %v %v", o.SrcSubnet, o.DstSubnet, o.Network)
	}
	j = walk(t, cases[3].opts)
	o = j.Options()
	if o.SrcSubnet.String() != "fd00:16:99::/64" || o.DstSubnet.String() != "fd00:16:57::/64" || o.Network.String() != "fd00:16::/32" {
		t.Errorf("derived %v %v %v", o.SrcSubnet, o.DstSubnet, o.Network)
	}
}

func TestBadOptions(t *testing.T) {
	mac := func(s string) net.HardwareAddr { m, _ := net.ParseMAC(s); return m }
	addr := netip.MustParseAddr
	pfx := netip.MustParsePrefix
	for _, c := range []struct {
		name string
		f    func(*Options)
		want string // in the error
	}{
		{"no src", func(o *Options) { o.Src = netip.Addr{} }, "--src"},
		{"mixed families", func(o *Options) { o.Dst = addr("fd00::15") }, "one is IPv4"},
		{"same pod", func(o *Options) { o.Dst = o.Src }, "itself"},
		{"same subnet", func(o *Options) { o.Dst = addr("172.16.99.9") }, "both in 172.16.99.0/24"},
		{"pod is the bridge", func(o *Options) { o.Src = addr("172.16.99.1") }, "bridge"},
		{"pod is the subnet", func(o *Options) { o.Dst = addr("172.16.57.0") }, "subnet 172.16.57.0/24 itself"},
		{"pod is broadcast", func(o *Options) { o.Dst = addr("172.16.57.255") }, "broadcast"},
		{"multicast pod", func(o *Options) { o.Dst = addr("224.0.0.1") }, "--dst"},
		{"loopback pod", func(o *Options) { o.Src = addr("127.0.0.1") }, "--src"},
		{"pod outside subnet", func(o *Options) { o.SrcSubnet = pfx("172.16.98.0/24") }, "not in its node's subnet"},
		{"subnet host bits", func(o *Options) { o.DstSubnet = pfx("172.16.57.1/24") }, "host bits"},
		{"overlapping subnets", func(o *Options) { o.SrcSubnet = pfx("172.16.0.0/17") }, "overlap"},
		{"network too small", func(o *Options) { o.Network = pfx("172.16.64.0/18") }, "does not hold"},
		{"network is a subnet", func(o *Options) { o.Network = pfx("172.16.57.0/24") }, "does not hold"},
		{"no common prefix", func(o *Options) { o.Dst = addr("10.1.2.3") }, "--network"},
		{"IPv6 node", func(o *Options) { o.SrcNode = addr("2001:db8::1") }, "IPv4"},
		{"node in overlay", func(o *Options) { o.DstNode = addr("172.16.200.1") }, "inside the overlay"},
		{"same node", func(o *Options) { o.DstNode = o.SrcNode }, "two addresses"},
		{"short MAC", func(o *Options) { o.SrcMAC = net.HardwareAddr{1, 2, 3} }, "6 bytes"},
		{"long MAC", func(o *Options) { o.DstMAC = mac("00:00:00:00:fe:80:00:00:00:00:00:00:02:00:5e:10:00:00:00:01") }, "6 bytes"},
		{"multicast MAC", func(o *Options) { o.DstMAC = mac("01:00:5e:00:00:01") }, "multicast"},
		{"zero MAC", func(o *Options) { o.SrcMAC = mac("00:00:00:00:00:00") }, "all-zero"},
		{"same MAC", func(o *Options) { o.DstMAC = o.SrcMAC }, "own MAC"},
		{"proto", func(o *Options) { o.Proto = "sctp" }, "--proto"},
		{"VNI", func(o *Options) { o.VNI = 1 << 24 }, "24 bits"},
		{"port", func(o *Options) { o.Port = 0 }, "--port"},
		{"negative size", func(o *Options) { o.Size = -1 }, "--size"},
		{"too big", func(o *Options) { o.Size = 1423 }, "fragment"},
		{"too big tcp", func(o *Options) { o.Proto = "tcp"; o.Size = 1411 }, "--size 1410 or less"},
		{"MTU too small", func(o *Options) { o.MTU = 117 }, "--mtu 118"},
		{"MTU too small for IPv6", func(o *Options) {
			o.Src, o.Dst, o.MTU = addr("fd00:16:99::8"), addr("fd00:16:57::15"), 1300
		}, "IPv6 needs at least 1280"},
		{"MTU too big", func(o *Options) { o.MTU = 70000 }, "--mtu"},
	} {
		t.Run(c.name, func(t *testing.T) {
			o := DefaultOptions()
			c.f(&o)
			j, err := Walk(o)
			if err == nil {
				t.Fatalf("Walk accepted it: %+v", j.Options())
			}
			if !strings.Contains(err.Error(), c.want) {
				t.Errorf("error %q does not say %q", err, c.want)
			}
		})
	}
	// The edges that are fine.
	for _, f := range []func(*Options){
		func(o *Options) { o.Size = 1422 },
		func(o *Options) { o.Size = 0 },
		func(o *Options) { o.Proto = "UDP"; o.Size = 0 },
		func(o *Options) { o.VNI = 1<<24 - 1 },
		func(o *Options) { o.VNI = 0 },
		func(o *Options) { o.MTU = 118; o.Size = 40 },
		func(o *Options) { o.Port = 65535 },
	} {
		o := DefaultOptions()
		f(&o)
		if _, err := Walk(o); err != nil {
			t.Errorf("Walk(%+v): %v", o, err)
		}
	}
}
