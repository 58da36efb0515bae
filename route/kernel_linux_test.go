package route

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"

	"vxrouter/encap"
	"vxrouter/tunnel"
)

// kernelPeer is the other side of TestKernelVXLANPeer: a namespace with
// the kernel's vxlan device programmed as flannel programs flannel.1,
// for both families, over an IPv4 underlay.
type kernelPeer struct {
	name   string
	under  netip.Addr
	addr4  netip.Addr // on flannel.1: <subnet>.0/32, as flannel has it
	addr6  netip.Addr
	subnet [2]netip.Prefix // IPv4, IPv6
	vtep   net.HardwareAddr
}

// TestKernelVXLANPeer runs the forwarder against the kernel's own vxlan,
// with the traffic users send: TCP (4 MB each way, byte for byte) and UDP
// (each way), with IPv4 and IPv6 inside, every device's offloads at their
// defaults. The kernel's sender leaves its TCP and UDP checksums to
// offload, and nothing on a veth path finishes them, so what the
// forwarder reads carries checksums still pending, and its TSO packets
// arrive whole (one datagram of up to 64 KB): the forwarder must deliver
// both as the kernel's own vxlan would. ICMP would prove none of it: its
// checksum is never offloaded. Last, a datagram whose inner UDP checksum
// is really wrong must be dropped and counted.
func TestKernelVXLANPeer(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: network namespaces, veth, TUN and vxlan devices")
	}
	for _, c := range []tcpCase{
		{name: "offload", backend: tunnel.BackendOffload, queues: 2},
		{name: "water", backend: tunnel.BackendWater, queues: 1},
	} {
		t.Run(c.name, func(t *testing.T) { testKernelVXLANPeer(t, c) })
	}
}

func testKernelVXLANPeer(t *testing.T, c tcpCase) {
	tag := fmt.Sprintf("vxrrt%06x", rand.Uint32()&0xffffff)
	a := &tcpNode{name: tag + "a", under: netip.MustParseAddr("10.231.0.1"), tunAddr: netip.MustParseAddr("172.16.99.1"),
		subnet: netip.MustParsePrefix("172.16.99.0/24"), vtep: net.HardwareAddr{0x02, 0, 0, 0, 0, 0xa}}
	tunAddr6, subnet6 := netip.MustParseAddr("fd16:99::1"), netip.MustParsePrefix("fd16:99::/64")
	k := &kernelPeer{name: tag + "k", under: netip.MustParseAddr("10.231.0.2"),
		addr4: netip.MustParseAddr("172.16.57.0"), addr6: netip.MustParseAddr("fd16:57::1"),
		subnet: [2]netip.Prefix{netip.MustParsePrefix("172.16.57.0/24"), netip.MustParsePrefix("fd16:57::/64")},
		vtep:   net.HardwareAddr{0xd6, 0x51, 0x2e, 0x80, 0x5c, 0x69}}
	a.ns = addNetns(t, a.name)
	kns := addNetns(t, k.name)
	run(t, "ip", "link", "add", "ul0", "netns", a.name, "type", "veth", "peer", "name", "ul0", "netns", k.name)
	const mtu = 1450
	for _, n := range []struct {
		ns    string
		under netip.Addr
	}{{a.name, a.under}, {k.name, k.under}} {
		run(t, "ip", "-n", n.ns, "addr", "add", n.under.String()+"/24", "dev", "ul0")
		run(t, "ip", "-n", n.ns, "link", "set", "ul0", "up")
		run(t, "ip", "-n", n.ns, "link", "set", "lo", "up")
	}

	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	t.Cleanup(func() { cancel(); wg.Wait() })
	a.start(ctx, t, &wg, c, mtu)
	run(t, "ip", "-n", a.name, "addr", "add", tunAddr6.String()+"/128", "dev", "vxt0", "nodad")
	run(t, "ip", "-n", a.name, "-6", "route", "add", "fd16::/16", "dev", "vxt0", "src", tunAddr6.String())
	for _, s := range k.subnet {
		if err := a.table.Set(s, netip.AddrPortFrom(k.under, 8472), k.vtep); err != nil {
			t.Fatal(err)
		}
	}

	// flannel.1 as flannel makes it, and a's leases as flannel programs
	// them: neighbour, FDB entry, route via <subnet>.0 onlink. No
	// ethtool: the offloads stay as the kernel sets them.
	v := []string{"ip", "-n", k.name}
	run(t, append(v, "link", "add", "flannel.1", "address", k.vtep.String(), "mtu", fmt.Sprint(mtu), "type", "vxlan",
		"id", "1", "local", k.under.String(), "dev", "ul0", "dstport", "8472", "nolearning")...)
	run(t, append(v, "addr", "add", k.addr4.String()+"/32", "dev", "flannel.1")...)
	run(t, append(v, "addr", "add", k.addr6.String()+"/128", "dev", "flannel.1", "nodad")...)
	run(t, append(v, "link", "set", "flannel.1", "up")...)
	gw4, gw6 := a.subnet.Addr().String(), subnet6.Addr().String()
	run(t, append(v, "neigh", "replace", gw4, "lladdr", a.vtep.String(), "dev", "flannel.1", "nud", "permanent")...)
	run(t, append(v, "-6", "neigh", "replace", gw6, "lladdr", a.vtep.String(), "dev", "flannel.1", "nud", "permanent")...)
	run(t, "bridge", "-n", k.name, "fdb", "replace", a.vtep.String(), "dev", "flannel.1", "dst", a.under.String(), "self", "permanent")
	run(t, append(v, "route", "replace", a.subnet.String(), "via", gw4, "dev", "flannel.1", "onlink")...)
	run(t, append(v, "-6", "route", "replace", subnet6.String(), "via", gw6, "dev", "flannel.1", "onlink")...)

	kIn := func(fn func()) { inNetns(t, kns, fn) }
	aIn := func(fn func()) { inNetns(t, a.ns, fn) }
	for _, fam := range []struct {
		name   string
		aAddr  netip.Addr
		kAddr  netip.Addr
		ignore int // of the forwarder's drops: none
	}{
		{"ipv4", a.tunAddr, k.addr4, 0},
		{"ipv6", tunAddr6, k.addr6, 0},
	} {
		t.Run(fam.name, func(t *testing.T) {
			d := tcpStream(t, "kernel -> vxrouter", kIn, aIn, fam.kAddr, fam.aAddr, 4<<20, a)
			t.Logf("kernel -> vxrouter: 4 MB of TCP in %s", d.Round(time.Millisecond))
			d = tcpStream(t, "vxrouter -> kernel", aIn, kIn, fam.aAddr, fam.kAddr, 4<<20, a)
			t.Logf("vxrouter -> kernel: 4 MB of TCP in %s", d.Round(time.Millisecond))
			udpBurst(t, "kernel -> vxrouter", kIn, aIn, fam.kAddr, fam.aAddr)
			udpBurst(t, "vxrouter -> kernel", aIn, kIn, fam.aAddr, fam.kAddr)
		})
	}
	// IPv6 router solicitations and MLD reports from a's own kernel go
	// into its TUN device to addresses no lease covers: no-route.
	if d := a.fwd.Drops() - a.fwd.NoRoute.Load(); d > 0 {
		t.Errorf("the forwarder dropped %d packets: %v", d, a.fwd.Snapshot())
	}

	t.Run("corrupt inner checksum", func(t *testing.T) {
		// A datagram from the peer's address whose inner UDP checksum
		// was computed, and is wrong: the kernel's vxlan would drop it;
		// so must we, and count it.
		var ln *net.UDPConn
		aIn(func() {
			var err error
			if ln, err = net.ListenUDP("udp4", &net.UDPAddr{IP: a.tunAddr.AsSlice(), Port: 7009}); err != nil {
				t.Fatal(err)
			}
		})
		defer ln.Close()
		h, err := encap.NewHeader(1, k.vtep, a.vtep)
		if err != nil {
			t.Fatal(err)
		}
		inner := innerUDP(t, k.addr4, a.tunAddr, 7009)
		frame := append(h[:], inner...)
		frame[len(frame)-1] ^= 0x40
		before := a.fwd.BadChecksum.Load()
		kIn(func() {
			conn, err := net.DialUDP("udp4", &net.UDPAddr{IP: k.under.AsSlice()}, &net.UDPAddr{IP: a.under.AsSlice(), Port: 8472})
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			if _, err := conn.Write(frame); err != nil {
				t.Fatal(err)
			}
		})
		deadline := time.Now().Add(5 * time.Second)
		for a.fwd.BadChecksum.Load() == before && time.Now().Before(deadline) {
			time.Sleep(5 * time.Millisecond)
		}
		if d := a.fwd.BadChecksum.Load() - before; d != 1 {
			t.Fatalf("decap-bad-checksum went up by %d, want 1: %v", d, a.fwd.Snapshot())
		}
		ln.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
		if n, _, err := ln.ReadFromUDP(make([]byte, 100)); err == nil {
			t.Errorf("the corrupt datagram was delivered: %d bytes", n)
		}
	})
}

// tcpStream sends size bytes of random data over TCP from src (in the
// namespace from runs in) to dst (in to's), as one write so the kernel
// may send super-packets, fails the test unless every byte arrives in
// order, and returns how long it took. nodes' counters go in the errors.
func tcpStream(t *testing.T, what string, from, to func(func()), src, dst netip.Addr, size int, nodes ...*tcpNode) time.Duration {
	t.Helper()
	data := make([]byte, size)
	rand.NewChaCha8([32]byte{4}).Read(data)
	counters := func() string {
		var b strings.Builder
		for _, n := range nodes {
			fmt.Fprintf(&b, " %s: %v", n.name, n.fwd.Snapshot())
		}
		return b.String()
	}
	var ln net.Listener
	to(func() {
		var err error
		if ln, err = net.Listen("tcp", net.JoinHostPort(dst.String(), "5002")); err != nil {
			t.Fatal(err)
		}
	})
	defer ln.Close()
	got := make(chan []byte, 1)
	go func() {
		conn, err := ln.Accept()
		if err != nil {
			got <- nil
			return
		}
		defer conn.Close()
		conn.SetDeadline(time.Now().Add(30 * time.Second))
		b, _ := io.ReadAll(conn)
		got <- b
	}()
	var conn net.Conn
	from(func() {
		d := net.Dialer{Timeout: 10 * time.Second, LocalAddr: &net.TCPAddr{IP: src.AsSlice()}}
		var err error
		if conn, err = d.Dial("tcp", net.JoinHostPort(dst.String(), "5002")); err != nil {
			t.Fatalf("%s: dial %s: %v (%s)", what, dst, err, counters())
		}
	})
	start := time.Now()
	conn.SetDeadline(time.Now().Add(30 * time.Second))
	_, err := conn.Write(data)
	conn.Close()
	if err != nil {
		t.Fatalf("%s: write: %v (%s)", what, err, counters())
	}
	recv := <-got
	elapsed := time.Since(start)
	if !bytes.Equal(recv, data) {
		t.Fatalf("%s: %d bytes arrived, want the %d sent, byte for byte (%s)", what, len(recv), len(data), counters())
	}
	return elapsed
}

// udpBurst sends 200 datagrams of 1000 bytes from src to dst, a few at a
// time, and fails unless all arrive intact. Paced so that no socket
// buffer on the way can be the reason one is missing.
func udpBurst(t *testing.T, what string, from, to func(func()), src, dst netip.Addr) {
	t.Helper()
	const count, size = 200, 1000
	var rc, sc *net.UDPConn
	to(func() {
		var err error
		if rc, err = net.ListenUDP("udp", &net.UDPAddr{IP: dst.AsSlice()}); err != nil {
			t.Fatal(err)
		}
	})
	defer rc.Close()
	from(func() {
		var err error
		if sc, err = net.DialUDP("udp", &net.UDPAddr{IP: src.AsSlice()}, rc.LocalAddr().(*net.UDPAddr)); err != nil {
			t.Fatal(err)
		}
	})
	defer sc.Close()
	done := make(chan int, 1)
	go func() {
		buf := make([]byte, 2*size)
		n := 0
		rc.SetReadDeadline(time.Now().Add(10 * time.Second))
		for n < count {
			m, err := rc.Read(buf)
			if err != nil {
				break
			}
			if m == size && binary.BigEndian.Uint32(buf) < count {
				n++
			}
		}
		done <- n
	}()
	msg := make([]byte, size)
	for i := range count {
		binary.BigEndian.PutUint32(msg, uint32(i))
		if _, err := sc.Write(msg); err != nil {
			t.Fatalf("%s: send: %v", what, err)
		}
		if i%20 == 19 {
			time.Sleep(time.Millisecond)
		}
	}
	if n := <-done; n != count {
		t.Fatalf("%s: %d of %d UDP datagrams arrived", what, n, count)
	}
}

// innerUDP is an IPv4 UDP packet from src to dst:port with a computed
// checksum.
func innerUDP(t *testing.T, src, dst netip.Addr, port uint16) []byte {
	t.Helper()
	ip := &layers.IPv4{Version: 4, TTL: 64, Protocol: layers.IPProtocolUDP, SrcIP: src.AsSlice(), DstIP: dst.AsSlice()}
	udp := &layers.UDP{SrcPort: 7000, DstPort: layers.UDPPort(port)}
	udp.SetNetworkLayerForChecksum(ip)
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true},
		ip, udp, gopacket.Payload("a corrupt datagram")); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}
