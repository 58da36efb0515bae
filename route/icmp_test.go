package route

import (
	"bytes"
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
)

// TestBuildICMP checks each answer byte for byte against the same answer
// serialized by gopacket, with its checksums.
func TestBuildICMP(t *testing.T) {
	src4, src6 := netip.MustParseAddr("172.16.99.0"), netip.MustParseAddr("fd00:99::")
	p4 := ipv4UDP(t, "172.16.99.8", "172.16.3.3", bytes.Repeat([]byte{7}, 1000))
	p6 := ipv6UDP(t, "fd00:99::8", "fd00:3::3", bytes.Repeat([]byte{7}, 1500))
	for _, c := range []struct {
		name string
		kind int
		src  netip.Addr
		pkt  []byte
		want func() []gopacket.SerializableLayer
	}{
		{"v4 no route", icmpNoRoute, src4, p4, func() []gopacket.SerializableLayer {
			return []gopacket.SerializableLayer{
				&layers.IPv4{Version: 4, TTL: 64, Protocol: layers.IPProtocolICMPv4, SrcIP: src4.AsSlice(), DstIP: p4[12:16]},
				&layers.ICMPv4{TypeCode: layers.CreateICMPv4TypeCode(3, 0)},
				gopacket.Payload(p4[:icmp4Quote]),
			}
		}},
		{"v4 too big", icmpTooBig, src4, p4, func() []gopacket.SerializableLayer {
			return []gopacket.SerializableLayer{
				&layers.IPv4{Version: 4, TTL: 64, Protocol: layers.IPProtocolICMPv4, SrcIP: src4.AsSlice(), DstIP: p4[12:16]},
				&layers.ICMPv4{TypeCode: layers.CreateICMPv4TypeCode(3, 4), Seq: 1400},
				gopacket.Payload(p4[:icmp4Quote]),
			}
		}},
		{"v6 no route", icmpNoRoute, src6, p6, func() []gopacket.SerializableLayer {
			ip := &layers.IPv6{Version: 6, HopLimit: 255, NextHeader: layers.IPProtocolICMPv6, SrcIP: src6.AsSlice(), DstIP: p6[8:24]}
			icmp := &layers.ICMPv6{TypeCode: layers.CreateICMPv6TypeCode(1, 0)}
			icmp.SetNetworkLayerForChecksum(ip)
			return []gopacket.SerializableLayer{ip, icmp, gopacket.Payload(append(make([]byte, 4), p6[:icmp6Quote]...))}
		}},
		{"v6 too big", icmpTooBig, src6, p6, func() []gopacket.SerializableLayer {
			ip := &layers.IPv6{Version: 6, HopLimit: 255, NextHeader: layers.IPProtocolICMPv6, SrcIP: src6.AsSlice(), DstIP: p6[8:24]}
			icmp := &layers.ICMPv6{TypeCode: layers.CreateICMPv6TypeCode(2, 0)}
			icmp.SetNetworkLayerForChecksum(ip)
			return []gopacket.SerializableLayer{ip, icmp, gopacket.Payload(append([]byte{0, 0, 0x05, 0x78}, p6[:icmp6Quote]...))}
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			got := buildICMP(make([]byte, maxICMP), c.kind, c.src, c.pkt, 1400)
			buf := gopacket.NewSerializeBuffer()
			if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}, c.want()...); err != nil {
				t.Fatal(err)
			}
			if want := buf.Bytes(); !bytes.Equal(got, want) {
				t.Fatalf("answer\n got % x\nwant % x", got[:64], want[:64])
			}
			if len(got) > 1280 || (c.pkt[0]>>4 == 4 && len(got) > 576) {
				t.Errorf("answer of %d bytes", len(got))
			}
		})
	}
	if buildICMP(make([]byte, maxICMP), icmpNoRoute, src6, p4, 0) != nil {
		t.Error("an IPv4 packet answered from an IPv6 address")
	}
}

func TestAnswerable(t *testing.T) {
	icmp := func(typ uint8) []byte {
		p := ipv4UDP(t, "172.16.99.8", "172.16.3.3", nil)
		p[9] = 1
		p[20] = typ
		return p
	}
	icmp6 := func(typ uint8) []byte {
		p := ipv6UDP(t, "fd00:99::8", "fd00:3::3", nil)
		p[6] = 58
		p[40] = typ
		return p
	}
	frag := ipv4UDP(t, "172.16.99.8", "172.16.3.3", nil)
	frag[7] = 0x10 // offset 16*8
	for _, c := range []struct {
		name string
		pkt  []byte
		want bool
	}{
		{"udp", ipv4UDP(t, "172.16.99.8", "172.16.3.3", nil), true},
		{"udp6", ipv6UDP(t, "fd00:99::8", "fd00:3::3", nil), true},
		{"echo request", icmp(8), true},
		{"unreachable", icmp(3), false},
		{"time exceeded", icmp(11), false},
		{"echo request v6", icmp6(128), true},
		{"packet too big v6", icmp6(2), false},
		{"to multicast", ipv4UDP(t, "172.16.99.8", "224.0.0.251", nil), false},
		{"to broadcast", ipv4UDP(t, "172.16.99.8", "255.255.255.255", nil), false},
		{"from unspecified", ipv4UDP(t, "0.0.0.0", "172.16.3.3", nil), false},
		{"v6 to multicast", ipv6UDP(t, "fd00:99::8", "ff02::2", nil), false},
		{"later fragment", frag, false},
	} {
		if got := answerable(c.pkt); got != c.want {
			t.Errorf("%s: answerable = %v, want %v", c.name, got, c.want)
		}
	}
}

// TestForwarderAnswersNoRoute: a packet no lease covers comes back as a
// network unreachable error into the TUN device it came from, quoting
// it; a flood is held to the rate limit and counted.
func TestForwarderAnswersNoRoute(t *testing.T) {
	src4 := netip.MustParseAddr("172.16.99.0")
	p := newPair(t, 8, func(a, _ *Forwarder) { a.AnswerFrom(src4, netip.Addr{}, 1450) })
	lost := ipv4UDP(t, "172.16.99.8", "172.16.3.3", []byte("anyone?"))
	p.devA.Inject(lost)
	got := receive(t, p.devA.Written())
	if got[9] != 1 || got[20] != 3 || got[21] != 0 || netip.AddrFrom4([4]byte(got[12:16])) != src4 || !bytes.Equal(got[28:], lost) {
		t.Fatalf("A's TUN got % x, want a network unreachable from %s quoting the packet", got, src4)
	}
	// IPv6 has no source to answer from: counted, not answered.
	p.devA.Inject(ipv6UDP(t, "fd00:99::8", "fd00:3::3", []byte("v6")))
	expectNothing(t, p.devA.Written())
	start := time.Now()
	for i := range 100 {
		p.devA.Inject(ipv4UDP(t, "172.16.99.8", "172.16.3.3", []byte(fmt.Sprint(i))))
	}
	for p.fwdA.NoRoute.Load() < 102 && time.Since(start) < 5*time.Second {
		time.Sleep(time.Millisecond)
	}
	// The bucket refills while the flood is read: allow for that, so a
	// slow machine does not fail the test.
	most := icmpBurst + int(time.Since(start).Seconds()*icmpRate) + 1
	answered := 0
	for deadline := time.After(2 * time.Second); ; {
		select {
		case <-p.devA.Written():
			answered++
			continue
		case <-deadline:
		}
		break
	}
	if answered > most || answered < icmpBurst-1 {
		t.Errorf("%d of 100 answered, want the burst of %d and at most %d", answered, icmpBurst, most)
	}
	if sent, limited := p.fwdA.ICMPSent.Load(), p.fwdA.ICMPLimited.Load(); sent != uint64(answered+1) || sent+limited != 101 {
		t.Errorf("icmp-sent %d, icmp-limited %d; want %d and %d", sent, limited, answered+1, 101-answered-1)
	}
	if nr := p.fwdA.NoRoute.Load(); nr != 102 {
		t.Errorf("no-route %d, want 102", nr)
	}
}

// BenchmarkPacketFlow is the flow hash each datagram costs with flow
// entropy on.
func BenchmarkPacketFlow(b *testing.B) {
	pkt := ipv4UDP(b, "172.16.99.8", "172.16.57.15", make([]byte, 1400))
	b.ReportAllocs()
	var h uint32
	for b.Loop() {
		h += PacketFlow(pkt)
	}
	_ = h
}
