package encap_test

import (
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"testing"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
	"github.com/google/gopacket/pcapgo"

	"vxrouter/encap"
)

// The two nodes of DESIGN.md's story; testdata/kernel.pcap was made with them.
var (
	macA = mustMAC("b6:bf:4c:81:cf:3b")
	macB = mustMAC("d6:51:2e:80:5c:69")

	underlayA = netip.MustParseAddr("10.0.0.1")
	underlayB = netip.MustParseAddr("10.0.0.2")
)

func mustMAC(s string) net.HardwareAddr {
	mac, err := net.ParseMAC(s)
	if err != nil {
		panic(err)
	}
	return mac
}

func mustHeader(t testing.TB, vni uint32, src, dst net.HardwareAddr) encap.Header {
	t.Helper()
	h, err := encap.NewHeader(vni, src, dst)
	if err != nil {
		t.Fatalf("NewHeader(%d, %s, %s): %v", vni, src, dst, err)
	}
	return h
}

func mustDecoder(t testing.TB, vni uint32, local net.HardwareAddr) encap.Decoder {
	t.Helper()
	d, err := encap.NewDecoder(vni, local)
	if err != nil {
		t.Fatalf("NewDecoder(%d, %s): %v", vni, local, err)
	}
	return d
}

// withHeadroom returns a fresh buffer holding pkt after HeaderLen bytes of
// headroom, as the TUN reader leaves it.
func withHeadroom(pkt []byte) []byte {
	buf := make([]byte, encap.HeaderLen+len(pkt))
	copy(buf[encap.HeaderLen:], pkt)
	return buf
}

// randomIPv4 returns an n-byte IPv4 packet (n >= 20) whose header passes
// Decap's checks: IHL between 5 and what fits, total length n; every other
// byte is random.
func randomIPv4(rng *rand.Rand, n int) []byte {
	p := make([]byte, n)
	for i := range p {
		p[i] = byte(rng.Uint32())
	}
	maxIHL := min(15, n/4)
	ihl := 5 + rng.IntN(maxIHL-5+1)
	p[0] = 0x40 | byte(ihl)
	p[2], p[3] = byte(n>>8), byte(n)
	return p
}

// randomIPv6 returns an n-byte IPv6 packet (n >= 40) with payload length
// n-40 and random everything else.
func randomIPv6(rng *rand.Rand, n int) []byte {
	p := make([]byte, n)
	for i := range p {
		p[i] = byte(rng.Uint32())
	}
	p[0] = 0x60 | p[0]&0x0f
	pl := n - 40
	p[4], p[5] = byte(pl>>8), byte(pl)
	return p
}

// kernelDatagram is one VXLAN datagram from testdata/kernel.pcap.
type kernelDatagram struct {
	src, dst netip.Addr // outer (underlay) addresses
	payload  []byte     // the UDP payload: VXLAN + inner Ethernet + inner IP
}

// readKernelPcap returns the VXLAN datagrams captured from the Linux
// kernel's vxlan driver (see testdata/README.md), in capture order.
func readKernelPcap(t testing.TB) []kernelDatagram {
	t.Helper()
	f, err := os.Open(filepath.Join("testdata", "kernel.pcap"))
	if err != nil {
		t.Fatalf("open capture: %v", err)
	}
	defer f.Close()
	r, err := pcapgo.NewReader(f)
	if err != nil {
		t.Fatalf("read capture header: %v", err)
	}
	var out []kernelDatagram
	for {
		data, _, err := r.ReadPacketData()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("read capture packet %d: %v", len(out)+1, err)
		}
		pkt := gopacket.NewPacket(data, r.LinkType(), gopacket.Default)
		ip4, _ := pkt.Layer(layers.LayerTypeIPv4).(*layers.IPv4)
		udp, _ := pkt.Layer(layers.LayerTypeUDP).(*layers.UDP)
		if ip4 == nil || udp == nil || udp.DstPort != encap.DefaultPort {
			t.Fatalf("capture packet %d is not a VXLAN datagram over IPv4 to port %d: %v", len(out)+1, encap.DefaultPort, pkt)
		}
		src, _ := netip.AddrFromSlice(ip4.SrcIP)
		dst, _ := netip.AddrFromSlice(ip4.DstIP)
		out = append(out, kernelDatagram{src: src, dst: dst, payload: udp.Payload})
	}
	return out
}
