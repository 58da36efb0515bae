package encap_test

import (
	"bytes"
	"math"
	"math/rand/v2"
	"net"
	"net/netip"
	"testing"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"

	"vxrouter/encap"
)

func TestConstants(t *testing.T) {
	// MTU computations elsewhere rely on these; check them against the
	// header sizes spelled out (outer IP, UDP, VXLAN, inner Ethernet; the
	// outer Ethernet header is not part of an MTU).
	if encap.HeaderLen != 8+14 {
		t.Errorf("HeaderLen %d, want 22", encap.HeaderLen)
	}
	if encap.OverheadIPv4 != 20+8+8+14 || encap.OverheadIPv6 != 40+8+8+14 {
		t.Errorf("overheads %d/%d, want 50/70 (flannel's MTU 1450 on a 1500 underlay)", encap.OverheadIPv4, encap.OverheadIPv6)
	}
}

func TestNewHeaderBytes(t *testing.T) {
	h := mustHeader(t, 0xabcdef, macA, macB)
	want := []byte{
		0x08, 0, 0, 0, 0xab, 0xcd, 0xef, 0, // VXLAN: I flag, VNI, reserved
		0xd6, 0x51, 0x2e, 0x80, 0x5c, 0x69, // inner dst: B's VTEP
		0xb6, 0xbf, 0x4c, 0x81, 0xcf, 0x3b, // inner src: A's VTEP
		0x08, 0x00, // IPv4 until Encap says otherwise
	}
	if !bytes.Equal(h[:], want) {
		t.Errorf("NewHeader:\n got %x\nwant %x", h[:], want)
	}
}

func TestNewHeaderErrors(t *testing.T) {
	for _, tc := range []struct {
		name     string
		vni      uint32
		src, dst net.HardwareAddr
	}{
		{"vni 2^24", 1 << 24, macA, macB},
		{"vni max uint32", math.MaxUint32, macA, macB},
		{"short src", 1, macA[:5], macB},
		{"nil dst", 1, macA, nil},
		{"eui-64 dst", 1, macA, mustMAC("02:00:5e:10:00:00:00:01")},
	} {
		if _, err := encap.NewHeader(tc.vni, tc.src, tc.dst); err == nil {
			t.Errorf("NewHeader %s: no error", tc.name)
		}
	}
	for _, tc := range []struct {
		name  string
		vni   uint32
		local net.HardwareAddr
	}{
		{"vni 2^24", 1 << 24, macB},
		{"nil mac", 1, nil},
		{"short mac", 1, macB[:5]},
		{"eui-64 mac", 1, mustMAC("02:00:5e:10:00:00:00:01")},
	} {
		if _, err := encap.NewDecoder(tc.vni, tc.local); err == nil {
			t.Errorf("NewDecoder %s: no error", tc.name)
		}
	}
	// The largest VNI is legal.
	if _, err := encap.NewHeader(1<<24-1, macA, macB); err != nil {
		t.Errorf("NewHeader with VNI 2^24-1: %v", err)
	}
	d, err := encap.NewDecoder(1<<24-1, macB)
	if err != nil || d.VNI() != 1<<24-1 {
		t.Errorf("NewDecoder(2^24-1): VNI %d, err %v", d.VNI(), err)
	}
}

func TestReasonString(t *testing.T) {
	want := map[encap.Reason]string{
		encap.OK:               "ok",
		encap.Short:            "short",
		encap.NoIFlag:          "no-i-flag",
		encap.ForeignVNI:       "foreign-vni",
		encap.ForeignMAC:       "foreign-mac",
		encap.UnknownEtherType: "unknown-ethertype",
		encap.BadInner:         "bad-inner",
	}
	if len(want) != int(encap.NumReasons) {
		t.Fatalf("test knows %d reasons, package has %d", len(want), encap.NumReasons)
	}
	for r, s := range want {
		if got := r.String(); got != s {
			t.Errorf("Reason(%d).String() = %q, want %q", r, got, s)
		}
	}
	if got := encap.NumReasons.String(); got != "reason(7)" {
		t.Errorf("NumReasons.String() = %q", got)
	}
}

// validFrame returns a datagram from A to B (VNI 1) carrying pkt.
func validFrame(t testing.TB, pkt []byte) []byte {
	t.Helper()
	h := mustHeader(t, 1, macA, macB)
	f, r := h.Encap(withHeadroom(pkt), encap.HeaderLen, len(pkt))
	if r != encap.OK {
		t.Fatalf("Encap: %v", r)
	}
	return f
}

func TestDecapReasons(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	v4 := randomIPv4(rng, 60)
	v4[0] = 0x45
	v6 := randomIPv6(rng, 80)

	// edit returns a valid v4 frame changed by f.
	edit := func(pkt []byte, f func(b []byte)) []byte {
		b := validFrame(t, pkt)
		f(b)
		return b
	}
	const ip = encap.HeaderLen // where the inner IP header starts
	tests := []struct {
		name    string
		frame   []byte
		want    encap.Reason
		wantLen int // of the inner packet, when OK
	}{
		{"v4", validFrame(t, v4), encap.OK, 60},
		{"v6", validFrame(t, v6), encap.OK, 80},
		{"reserved bits set are ignored", edit(v4, func(b []byte) { b[0], b[1], b[2], b[3], b[7] = 0xff, 0xff, 0xff, 0xff, 0xff }), encap.OK, 60},
		{"ethernet padding trimmed", append(validFrame(t, v4), make([]byte, 10)...), encap.OK, 60},
		{"v4 with options", edit(v4, func(b []byte) { b[ip] = 0x4f }), encap.OK, 60},
		{"v4 total length == IHL*4", edit(v4, func(b []byte) { b[ip+2], b[ip+3] = 0, 20 }), encap.OK, 20},
		{"v6 payload length 0", edit(v6, func(b []byte) { b[ip+4], b[ip+5] = 0, 0 }), encap.OK, 40},

		{"empty", nil, encap.Short, 0},
		{"21 bytes", validFrame(t, v4)[:21], encap.Short, 0},
		{"header only", validFrame(t, v4)[:encap.HeaderLen], encap.Short, 0},

		{"I flag clear", edit(v4, func(b []byte) { b[0] = 0 }), encap.NoIFlag, 0},
		{"all flags but I", edit(v4, func(b []byte) { b[0] = 0xf7 }), encap.NoIFlag, 0},

		{"VNI 2", edit(v4, func(b []byte) { b[6] = 2 }), encap.ForeignVNI, 0},
		{"VNI high byte", edit(v4, func(b []byte) { b[4] = 1 }), encap.ForeignVNI, 0},
		{"VNI 0", edit(v4, func(b []byte) { b[6] = 0 }), encap.ForeignVNI, 0},

		{"dst MAC is the sender's", edit(v4, func(b []byte) { copy(b[8:14], macA) }), encap.ForeignMAC, 0},
		{"dst MAC broadcast", edit(v4, func(b []byte) { copy(b[8:14], []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}) }), encap.ForeignMAC, 0},
		{"dst MAC last byte", edit(v4, func(b []byte) { b[13] ^= 1 }), encap.ForeignMAC, 0},

		{"ARP", edit(v4, func(b []byte) { b[20], b[21] = 0x08, 0x06 }), encap.UnknownEtherType, 0},
		{"VLAN tag", edit(v4, func(b []byte) { b[20], b[21] = 0x81, 0x00 }), encap.UnknownEtherType, 0},
		{"length field, not a type", edit(v4, func(b []byte) { b[20], b[21] = 0x00, 0x2e }), encap.UnknownEtherType, 0},

		{"v6 packet, v4 ethertype", edit(v6, func(b []byte) { b[20], b[21] = 0x08, 0x00 }), encap.BadInner, 0},
		{"v4 packet, v6 ethertype", edit(append(v4, make([]byte, 40)...), func(b []byte) { b[20], b[21] = 0x86, 0xdd }), encap.BadInner, 0},
		{"version 5", edit(v4, func(b []byte) { b[ip] = 0x55 }), encap.BadInner, 0},
		{"v4 IHL 4", edit(v4, func(b []byte) { b[ip] = 0x44 }), encap.BadInner, 0},
		{"v4 IHL 0", edit(v4, func(b []byte) { b[ip] = 0x40 }), encap.BadInner, 0},
		{"v4 total length > data", edit(v4, func(b []byte) { b[ip+2], b[ip+3] = 0, 61 }), encap.BadInner, 0},
		{"v4 total length 0xffff", edit(v4, func(b []byte) { b[ip+2], b[ip+3] = 0xff, 0xff }), encap.BadInner, 0},
		{"v4 total length < IHL*4", edit(v4, func(b []byte) { b[ip] = 0x46; b[ip+2], b[ip+3] = 0, 20 }), encap.BadInner, 0},
		{"v4 total length 0", edit(v4, func(b []byte) { b[ip+2], b[ip+3] = 0, 0 }), encap.BadInner, 0},
		{"v4 19 bytes", validFrame(t, v4)[:ip+19], encap.BadInner, 0},
		{"v6 39 bytes", validFrame(t, v6)[:ip+39], encap.BadInner, 0},
		{"v6 payload length > data", edit(v6, func(b []byte) { b[ip+4], b[ip+5] = 0, 41 }), encap.BadInner, 0},
		{"v6 truncated by one", validFrame(t, v6)[:ip+79], encap.BadInner, 0},
	}
	d := mustDecoder(t, 1, macB)
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, r := d.Decap(tc.frame)
			if r != tc.want {
				t.Fatalf("Decap: %v, want %v", r, tc.want)
			}
			if r != encap.OK {
				if got != nil {
					t.Errorf("Decap dropped (%v) but returned %d bytes", r, len(got))
				}
				return
			}
			if len(got) != tc.wantLen || !bytes.Equal(got, tc.frame[encap.HeaderLen:encap.HeaderLen+tc.wantLen]) {
				t.Errorf("Decap returned %d bytes, want frame[22:22+%d]", len(got), tc.wantLen)
			}
		})
	}
}

func TestEncapReasons(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	h := mustHeader(t, 1, macA, macB)
	pkt := func(version byte, n int) []byte {
		p := make([]byte, n)
		if n > 0 {
			p[0] = version << 4
		}
		return p
	}
	tests := []struct {
		name      string
		buf       []byte
		offset, n int
		want      encap.Reason
	}{
		{"v4 20 bytes", withHeadroom(randomIPv4(rng, 20)), 22, 20, encap.OK},
		{"v6 40 bytes", withHeadroom(randomIPv6(rng, 40)), 22, 40, encap.OK},
		{"v4 in a larger buffer, more headroom", append(make([]byte, 10), withHeadroom(randomIPv4(rng, 100))...), 32, 100, encap.OK},
		{"v4, n shorter than the buffer", withHeadroom(randomIPv4(rng, 100)), 22, 50, encap.OK},

		{"n 0", withHeadroom(nil), 22, 0, encap.Short},
		{"n negative", withHeadroom(pkt(4, 40)), 22, -1, encap.Short},
		{"headroom 21", withHeadroom(pkt(4, 40))[1:], 21, 40, encap.Short},
		{"offset 0", pkt(4, 40), 0, 40, encap.Short},
		{"offset negative", withHeadroom(pkt(4, 40)), -22, 40, encap.Short},
		{"packet runs past buf", withHeadroom(pkt(4, 40)), 22, 41, encap.Short},
		{"offset past buf", withHeadroom(pkt(4, 40)), 63, 1, encap.Short},
		{"offset+n overflows", withHeadroom(pkt(4, 40)), 22, math.MaxInt, encap.Short},
		{"nil buf", nil, 22, 20, encap.Short},

		{"version 0", withHeadroom(pkt(0, 40)), 22, 40, encap.UnknownEtherType},
		{"version 5", withHeadroom(pkt(5, 40)), 22, 40, encap.UnknownEtherType},
		{"version 15", withHeadroom(pkt(15, 40)), 22, 40, encap.UnknownEtherType},

		{"v4 19 bytes", withHeadroom(pkt(4, 19)), 22, 19, encap.BadInner},
		{"v6 39 bytes", withHeadroom(pkt(6, 39)), 22, 39, encap.BadInner},
		{"v4 1 byte", withHeadroom(pkt(4, 1)), 22, 1, encap.BadInner},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before := bytes.Clone(tc.buf)
			got, r := h.Encap(tc.buf, tc.offset, tc.n)
			if r != tc.want {
				t.Fatalf("Encap: %v, want %v", r, tc.want)
			}
			if r != encap.OK {
				if got != nil {
					t.Errorf("Encap refused (%v) but returned %d bytes", r, len(got))
				}
				if !bytes.Equal(tc.buf, before) {
					t.Error("Encap refused but wrote into buf")
				}
				return
			}
			if len(got) != encap.HeaderLen+tc.n || &got[0] != &tc.buf[tc.offset-encap.HeaderLen] {
				t.Fatalf("Encap returned %d bytes, not buf[offset-22:offset+n]", len(got))
			}
			if !bytes.Equal(got[:20], h[:20]) {
				t.Errorf("header %x, want %x", got[:20], h[:20])
			}
			wantType := []byte{0x08, 0x00}
			if tc.buf[tc.offset]>>4 == 6 {
				wantType = []byte{0x86, 0xdd}
			}
			if !bytes.Equal(got[20:22], wantType) {
				t.Errorf("ethertype %x, want %x", got[20:22], wantType)
			}
			// Only the headroom may change.
			if !bytes.Equal(tc.buf[:tc.offset-encap.HeaderLen], before[:tc.offset-encap.HeaderLen]) ||
				!bytes.Equal(tc.buf[tc.offset:], before[tc.offset:]) {
				t.Error("Encap wrote outside the headroom")
			}
		})
	}
}

// TestRoundTrip sends random IPv4 and IPv6 packets of every size class
// through Encap and Decap and expects each back unchanged.
func TestRoundTrip(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	h := mustHeader(t, 42, macA, macB)
	d := mustDecoder(t, 42, macB)
	for i := range 4000 {
		var pkt []byte
		if i%2 == 0 {
			pkt = randomIPv4(rng, 20+rng.IntN(1480))
		} else {
			pkt = randomIPv6(rng, 40+rng.IntN(1460))
		}
		headroom := encap.HeaderLen + rng.IntN(64)
		tail := rng.IntN(64)
		buf := make([]byte, headroom+len(pkt)+tail)
		copy(buf[headroom:], pkt)
		frame, r := h.Encap(buf, headroom, len(pkt))
		if r != encap.OK {
			t.Fatalf("packet %d (v%d, %d bytes): Encap: %v", i, pkt[0]>>4, len(pkt), r)
		}
		// Pretend the datagram also carried trailing padding, as an
		// Ethernet frame from a hardware VTEP may.
		padded := buf[headroom-encap.HeaderLen:]
		for _, in := range [][]byte{frame, padded} {
			got, r := d.Decap(in)
			if r != encap.OK {
				t.Fatalf("packet %d (v%d, %d bytes): Decap: %v", i, pkt[0]>>4, len(pkt), r)
			}
			if !bytes.Equal(got, pkt) {
				t.Fatalf("packet %d (v%d, %d bytes): round trip changed it", i, pkt[0]>>4, len(pkt))
			}
		}
	}
}

// TestGopacketDecodes checks Encap's frames with gopacket's own decoder,
// written independently of this package: VXLAN -> Ethernet -> IP -> UDP.
// It also serializes the whole frame with gopacket (the slow path) and
// expects the same bytes.
func TestGopacketDecodes(t *testing.T) {
	const vni = 0x123456
	payload := bytes.Repeat([]byte("overlay!"), 20)
	udp := &layers.UDP{SrcPort: 40000, DstPort: 5201}
	ip4 := &layers.IPv4{Version: 4, IHL: 5, TTL: 64, Protocol: layers.IPProtocolUDP,
		SrcIP: net.IP{172, 16, 99, 8}, DstIP: net.IP{172, 16, 57, 15}}
	ip6 := &layers.IPv6{Version: 6, HopLimit: 64, NextHeader: layers.IPProtocolUDP,
		SrcIP: netip.MustParseAddr("fd00:16:99::8").AsSlice(), DstIP: netip.MustParseAddr("fd00:16:57::15").AsSlice()}
	opts := gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}

	for _, tc := range []struct {
		name      string
		ip        gopacket.SerializableLayer
		ipType    gopacket.LayerType
		etherType layers.EthernetType
	}{
		{"ipv4", ip4, layers.LayerTypeIPv4, layers.EthernetTypeIPv4},
		{"ipv6", ip6, layers.LayerTypeIPv6, layers.EthernetTypeIPv6},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := udp.SetNetworkLayerForChecksum(tc.ip.(gopacket.NetworkLayer)); err != nil {
				t.Fatal(err)
			}
			sb := gopacket.NewSerializeBuffer()
			if err := gopacket.SerializeLayers(sb, opts, tc.ip, udp, gopacket.Payload(payload)); err != nil {
				t.Fatalf("serialize inner packet: %v", err)
			}
			inner := sb.Bytes()

			h := mustHeader(t, vni, macA, macB)
			frame, r := h.Encap(withHeadroom(inner), encap.HeaderLen, len(inner))
			if r != encap.OK {
				t.Fatalf("Encap: %v", r)
			}

			pkt := gopacket.NewPacket(frame, layers.LayerTypeVXLAN, gopacket.Default)
			if el := pkt.ErrorLayer(); el != nil {
				t.Fatalf("gopacket: %v", el.Error())
			}
			var types []gopacket.LayerType
			for _, l := range pkt.Layers() {
				types = append(types, l.LayerType())
			}
			wantTypes := []gopacket.LayerType{layers.LayerTypeVXLAN, layers.LayerTypeEthernet, tc.ipType, layers.LayerTypeUDP, gopacket.LayerTypePayload}
			if len(types) != len(wantTypes) {
				t.Fatalf("layers %v, want %v", types, wantTypes)
			}
			for i := range types {
				if types[i] != wantTypes[i] {
					t.Fatalf("layers %v, want %v", types, wantTypes)
				}
			}
			vx := pkt.Layer(layers.LayerTypeVXLAN).(*layers.VXLAN)
			if !vx.ValidIDFlag || vx.VNI != vni || vx.GBPExtension || vx.GBPApplied || vx.GBPDontLearn || vx.GBPGroupPolicyID != 0 {
				t.Errorf("VXLAN %+v, want I flag, VNI %#x, nothing else", vx, vni)
			}
			eth := pkt.Layer(layers.LayerTypeEthernet).(*layers.Ethernet)
			if !bytes.Equal(eth.SrcMAC, macA) || !bytes.Equal(eth.DstMAC, macB) || eth.EthernetType != tc.etherType {
				t.Errorf("Ethernet %s -> %s type %v, want %s -> %s type %v", eth.SrcMAC, eth.DstMAC, eth.EthernetType, macA, macB, tc.etherType)
			}
			switch ip := pkt.NetworkLayer().(type) {
			case *layers.IPv4:
				if !ip.SrcIP.Equal(ip4.SrcIP) || !ip.DstIP.Equal(ip4.DstIP) || int(ip.Length) != len(inner) {
					t.Errorf("IPv4 %s -> %s length %d", ip.SrcIP, ip.DstIP, ip.Length)
				}
			case *layers.IPv6:
				if !ip.SrcIP.Equal(ip6.SrcIP) || !ip.DstIP.Equal(ip6.DstIP) || int(ip.Length) != len(inner)-40 {
					t.Errorf("IPv6 %s -> %s length %d", ip.SrcIP, ip.DstIP, ip.Length)
				}
			}
			if app := pkt.ApplicationLayer(); app == nil || !bytes.Equal(app.Payload(), payload) {
				t.Error("UDP payload lost")
			}

			// The same frame from gopacket's serializers, layer by layer.
			full := gopacket.NewSerializeBuffer()
			err := gopacket.SerializeLayers(full, opts,
				&layers.VXLAN{ValidIDFlag: true, VNI: vni},
				&layers.Ethernet{SrcMAC: macA, DstMAC: macB, EthernetType: tc.etherType},
				tc.ip, udp, gopacket.Payload(payload))
			if err != nil {
				t.Fatalf("serialize full frame: %v", err)
			}
			if !bytes.Equal(full.Bytes(), frame) {
				t.Errorf("gopacket serializes\n%x\nEncap wrote\n%x", full.Bytes(), frame)
			}
		})
	}
}

// TestAllReasonsReachable guards the claim that every Reason can happen:
// each one has an input in the tables above; this lists them in one place
// so that a new Reason without a test fails here.
func TestAllReasonsReachable(t *testing.T) {
	h := mustHeader(t, 1, macA, macB)
	d := mustDecoder(t, 1, macB)
	good := validFrame(t, randomIPv4(rand.New(rand.NewPCG(7, 8)), 40))
	mod := func(i int, v byte) []byte { b := bytes.Clone(good); b[i] = v; return b }
	seen := map[encap.Reason]bool{}
	for _, f := range [][]byte{good, good[:10], mod(0, 0), mod(6, 9), mod(8, 0), mod(21, 6), mod(22, 0x44)} {
		_, r := d.Decap(f)
		seen[r] = true
	}
	for _, p := range [][]byte{{0x45}, {0x15, 0, 0, 0}} {
		_, r := h.Encap(withHeadroom(p), encap.HeaderLen, len(p))
		seen[r] = true
	}
	_, r := h.Encap(withHeadroom(nil), encap.HeaderLen, 0)
	seen[r] = true
	for r := encap.OK; r < encap.NumReasons; r++ {
		if !seen[r] {
			t.Errorf("no input produced %v", r)
		}
	}
}

func TestHotPathAllocs(t *testing.T) {
	h := mustHeader(t, 1, macA, macB)
	d := mustDecoder(t, 1, macB)
	pkt := randomIPv4(rand.New(rand.NewPCG(9, 10)), 1400)
	buf := withHeadroom(pkt)
	frame := validFrame(t, pkt)
	bad := bytes.Clone(frame)
	bad[6] = 7 // foreign VNI: the drop path must not allocate either
	for name, f := range map[string]func(){
		"Encap":       func() { h.Encap(buf, encap.HeaderLen, len(pkt)) },
		"Decap":       func() { d.Decap(frame) },
		"Decap drop":  func() { d.Decap(bad) },
		"Encap short": func() { h.Encap(buf, 0, len(pkt)) },
	} {
		if n := testing.AllocsPerRun(1000, f); n != 0 {
			t.Errorf("%s: %v allocations per run, want 0", name, n)
		}
	}
}

const benchLen = 1400

func benchPackets() map[string][]byte {
	rng := rand.New(rand.NewPCG(11, 12))
	v4 := randomIPv4(rng, benchLen)
	v4[0] = 0x45
	return map[string][]byte{"ipv4": v4, "ipv6": randomIPv6(rng, benchLen)}
}

func BenchmarkEncap(b *testing.B) {
	h := mustHeader(b, 1, macA, macB)
	for _, name := range []string{"ipv4", "ipv6"} {
		pkt := benchPackets()[name]
		b.Run(name, func(b *testing.B) {
			buf := withHeadroom(pkt)
			b.ReportAllocs()
			b.SetBytes(benchLen)
			for b.Loop() {
				if _, r := h.Encap(buf, encap.HeaderLen, benchLen); r != encap.OK {
					b.Fatal(r)
				}
			}
		})
	}
}

func BenchmarkDecap(b *testing.B) {
	d := mustDecoder(b, 1, macB)
	for _, name := range []string{"ipv4", "ipv6"} {
		frame := validFrame(b, benchPackets()[name])
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(benchLen)
			for b.Loop() {
				if _, r := d.Decap(frame); r != encap.OK {
					b.Fatal(r)
				}
			}
		})
	}
}

func BenchmarkEncapDecap(b *testing.B) {
	h := mustHeader(b, 1, macA, macB)
	d := mustDecoder(b, 1, macB)
	for _, name := range []string{"ipv4", "ipv6"} {
		pkt := benchPackets()[name]
		b.Run(name, func(b *testing.B) {
			buf := withHeadroom(pkt)
			b.ReportAllocs()
			b.SetBytes(benchLen)
			for b.Loop() {
				frame, r := h.Encap(buf, encap.HeaderLen, benchLen)
				if r != encap.OK {
					b.Fatal(r)
				}
				if _, r := d.Decap(frame); r != encap.OK {
					b.Fatal(r)
				}
			}
		})
	}
}
