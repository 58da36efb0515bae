package node

import (
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"testing"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
	"github.com/google/gopacket/pcapgo"
)

// A capture rebuilds each datagram's outer headers in the family of the
// peer it went to or came from, from or to the node's public address of
// that family: IPv4 and IPv6 datagrams of a dual-stack node side by side.
func TestCaptureBothFamilies(t *testing.T) {
	path := filepath.Join(t.TempDir(), "c.pcap")
	local := []netip.AddrPort{netip.MustParseAddrPort("10.0.0.1:8472"), netip.MustParseAddrPort("[fd77::1]:8472")}
	c, err := startCapture(path, local, 1<<20, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	frame := []byte{0x08, 0, 0, 0, 0, 0, 1, 0, 1, 2, 3, 4, 5, 6, 7, 8}
	c.Sent(frame, netip.MustParseAddrPort("10.0.0.2:8472"))
	c.Received(frame, netip.MustParseAddrPort("[fd77::2]:8472"))
	if err := c.stop(); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	r, err := pcapgo.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for {
		data, _, err := r.ReadPacketData()
		if err != nil {
			break
		}
		p := gopacket.NewPacket(data, layers.LayerTypeEthernet, gopacket.Default)
		udp, _ := p.Layer(layers.LayerTypeUDP).(*layers.UDP)
		if udp == nil || string(udp.Payload) != string(frame) {
			t.Fatalf("packet %d: no UDP with the frame: %v", len(got), p)
		}
		if ip, ok := p.NetworkLayer().(*layers.IPv4); ok {
			got = append(got, ip.SrcIP.String()+">"+ip.DstIP.String())
		}
		if ip, ok := p.NetworkLayer().(*layers.IPv6); ok {
			got = append(got, ip.SrcIP.String()+">"+ip.DstIP.String())
		}
	}
	if len(got) != 2 || got[0] != "10.0.0.1>10.0.0.2" || got[1] != "fd77::2>fd77::1" {
		t.Fatalf("captured %q, want 10.0.0.1>10.0.0.2 (IPv4) and fd77::2>fd77::1 (IPv6)", got)
	}
}
