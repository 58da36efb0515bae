package e2e

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"

	"vxrouter/encap"
	"vxrouter/lab"
)

// TestAntiSpoofing: a namespace that holds a peer's underlay address (the
// peer's own host) sends VXLAN to a node whose inner source is a third
// node's pod. The target pod never sees it and the node counts it
// (decap-foreign-source); the same datagram with the sending peer's own
// pod as source is delivered, which shows the crafted path works. A node
// run with --anti-spoofing=false delivers both.
func TestAntiSpoofing(t *testing.T) {
	o := newOverlay(t, network16)
	h1, h2, h3 := o.host("s1"), o.host("s2"), o.host("s3")
	n1, env1 := o.start(h1)
	n2, env2 := o.start(h2)
	n3, env3 := o.start(h3, "--anti-spoofing=false")
	p1, p2, p3 := o.pod(h1, env1.Subnet.Masked()), o.pod(h2, env2.Subnet.Masked()), o.pod(h3, env3.Subnet.Masked())
	o.mustPing(p2, p1)
	o.mustPing(p2, p3)

	for _, c := range []struct {
		name      string
		target    *lab.Node
		pod       *lab.Pod
		src       netip.Addr
		delivered bool
	}{
		{"own pod", n1, p1, p2.Addr, true},
		{"another node's pod", n1, p1, p3.Addr, false},
		{"outside the overlay", n1, p1, netip.MustParseAddr("192.0.2.7"), false},
		{"check off", n3, p3, p1.Addr, true},
	} {
		t.Run(strings.ReplaceAll(c.name, " ", "_"), func(t *testing.T) {
			var ln *net.UDPConn
			if err := c.pod.Do(func() (err error) {
				ln, err = net.ListenUDP("udp4", &net.UDPAddr{IP: c.pod.Addr.AsSlice(), Port: 7011})
				return err
			}); err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			before, err := c.target.Counters(o.ctx)
			if err != nil {
				t.Fatal(err)
			}
			frame := vxlanFrame(t, n2, c.target, c.src, c.pod.Addr, 7011)
			if err := h2.Do(func() error {
				conn, err := net.DialUDP("udp4", &net.UDPAddr{IP: h2.Underlay.AsSlice()},
					&net.UDPAddr{IP: c.target.Host.Underlay.AsSlice(), Port: 8472})
				if err != nil {
					return err
				}
				defer conn.Close()
				_, err = conn.Write(frame)
				return err
			}); err != nil {
				t.Fatal(err)
			}
			buf := make([]byte, 100)
			ln.SetReadDeadline(time.Now().Add(2 * time.Second))
			n, from, err := ln.ReadFromUDPAddrPort(buf)
			switch {
			case c.delivered && err != nil:
				t.Fatalf("nothing from %s arrived: %v", c.src, err)
			case c.delivered && from.Addr() != c.src:
				t.Fatalf("got %q from %s, want it from %s", buf[:n], from, c.src)
			case !c.delivered && err == nil:
				t.Fatalf("the pod got %q from %s", buf[:n], from)
			}
			want := uint64(1)
			if c.delivered {
				want = 0
			}
			o.within(5*time.Second, "the counter", func() error {
				after, err := c.target.Counters(o.ctx)
				if err != nil {
					return err
				}
				if d := after["decap-foreign-source"] - before["decap-foreign-source"]; d != want {
					return fmt.Errorf("decap-foreign-source went up by %d, want %d: %v", d, want, after)
				}
				return nil
			})
		})
	}
}

// vxlanFrame is the UDP payload from's node would send to to's node: the
// VXLAN and inner Ethernet header (VNI 1, the nodes' VTEP MACs), then an
// IPv4 UDP datagram from src to dst:port.
func vxlanFrame(t *testing.T, from, to *lab.Node, src, dst netip.Addr, port uint16) []byte {
	t.Helper()
	macOf := func(n *lab.Node) net.HardwareAddr {
		b, err := os.ReadFile(filepath.Join(n.Dir, "vtep-mac"))
		if err != nil {
			t.Fatal(err)
		}
		m, err := net.ParseMAC(strings.TrimSpace(string(b)))
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	h, err := encap.NewHeader(1, macOf(from), macOf(to))
	if err != nil {
		t.Fatal(err)
	}
	ip := &layers.IPv4{Version: 4, TTL: 63, Protocol: layers.IPProtocolUDP, SrcIP: src.AsSlice(), DstIP: dst.AsSlice()}
	udp := &layers.UDP{SrcPort: 7012, DstPort: layers.UDPPort(port)}
	udp.SetNetworkLayerForChecksum(ip)
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true},
		ip, udp, gopacket.Payload("from "+src.String())); err != nil {
		t.Fatal(err)
	}
	return append(h[:], buf.Bytes()...)
}
