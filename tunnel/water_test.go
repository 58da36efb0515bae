package tunnel

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"vxrouter/internal/nettest"
)

// newNetns creates a namespace of the test's own (see nettest.AddNetns).
func newNetns(t testing.TB) netns.NsHandle {
	return nettest.AddNetns(t, nettest.Name())
}

// inNetns runs fn inside ns (see nettest.InNetns).
func inNetns(t testing.TB, ns netns.NsHandle, fn func()) { nettest.InNetns(t, ns, fn) }

// Addresses inside the test's namespace: the TUN device has tunAddr/24,
// and the kernel routes the rest of the /24 (peerAddr) into it.
var (
	tunAddr  = netip.MustParseAddr("10.99.0.1")
	peerAddr = netip.MustParseAddr("10.99.0.2")
)

const headroom = 22 // what the forwarder leaves for VXLAN + inner Ethernet

// tunRig is a water TUN device up in a fresh namespace, with two UDP
// sockets in that namespace on its address.
type tunRig struct {
	dev            Device
	link           netlink.Link
	nl             *netlink.Handle
	sender, recver *net.UDPConn
	packets        chan readResult // from readLoop
	startReading   func()          // starts readLoop, once
}

func newTunRig(t *testing.T) *tunRig {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: creates a TUN device in a new network namespace")
	}
	ns := newNetns(t)
	nl, err := netlink.NewHandleAt(ns)
	if err != nil {
		t.Fatalf("netlink in netns: %v", err)
	}
	t.Cleanup(nl.Close)

	r := &tunRig{nl: nl}
	inNetns(t, ns, func() {
		dev, err := OpenWater("vxtt0")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { dev.Close() })
		r.dev = dev
		if r.link, err = nl.LinkByName("vxtt0"); err != nil {
			t.Fatalf("TUN device is not in the namespace: %v", err)
		}
		addr := &netlink.Addr{IPNet: &net.IPNet{IP: tunAddr.AsSlice(), Mask: net.CIDRMask(24, 32)}}
		if err := nl.AddrAdd(r.link, addr); err != nil {
			t.Fatalf("add address: %v", err)
		}
		if err := nl.LinkSetUp(r.link); err != nil {
			t.Fatalf("link up: %v", err)
		}
		// Sockets must be made on this thread to be in the namespace.
		for _, c := range []**net.UDPConn{&r.sender, &r.recver} {
			if *c, err = net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.AddrPortFrom(tunAddr, 0))); err != nil {
				t.Fatal(err)
			}
			conn := *c
			t.Cleanup(func() { conn.Close() })
		}
	})
	r.packets = make(chan readResult, 64)
	done := make(chan struct{})
	t.Cleanup(func() { close(done) }) // runs before the device's Close
	r.startReading = sync.OnceFunc(func() { go readLoop(r.dev, r.packets, done) })
	return r
}

// readResult is one Read from the device: a packet or an error.
type readResult struct {
	pkt []byte
	err error
}

// readLoop is the device's one reader for the whole test (a second one
// would take packets meant for the first). It sends each packet read, or
// the error that ends it, and checks Read leaves the headroom alone.
func readLoop(dev Device, out chan<- readResult, done <-chan struct{}) {
	buf := make([]byte, headroom+65535)
	junk := bytes.Repeat([]byte{0xee}, headroom)
	sizes := make([]int, 1)
	for {
		copy(buf, junk)
		n, err := dev.Read([][]byte{buf}, sizes, headroom)
		switch {
		case err != nil:
		case n != 1:
			err = fmt.Errorf("Read returned %d packets from a BatchSize 1 device", n)
		case !bytes.Equal(buf[:headroom], junk):
			err = fmt.Errorf("Read wrote into the headroom: % x", buf[:headroom])
		}
		res := readResult{err: err}
		if err == nil {
			res.pkt = append([]byte(nil), buf[headroom:headroom+sizes[0]]...)
		}
		select {
		case out <- res:
		case <-done: // the test is over; nobody reads out
			return
		}
		if err != nil {
			return
		}
	}
}

// readUntil waits up to 5 s for a packet from the device that match
// accepts, skipping what the kernel sends on its own (IPv6 router
// solicitations, MLD reports).
func (r *tunRig) readUntil(t *testing.T, what string, match func(gopacket.Packet) bool) gopacket.Packet {
	t.Helper()
	r.startReading()
	deadline := time.After(5 * time.Second)
	for {
		select {
		case res := <-r.packets:
			if res.err != nil {
				t.Fatalf("waiting for %s: %v", what, res.err)
			}
			if len(res.pkt) == 0 || res.pkt[0]>>4 != 4 {
				continue // IPv6 chatter
			}
			if p := gopacket.NewPacket(res.pkt, layers.LayerTypeIPv4, gopacket.Default); match(p) {
				return p
			}
		case <-deadline:
			t.Fatalf("no %s came out of the TUN device", what)
		}
	}
}

// serialize builds an IPv4 packet from layers with lengths and checksums
// filled in.
func serialize(t testing.TB, ls ...gopacket.SerializableLayer) []byte {
	t.Helper()
	buf := gopacket.NewSerializeBuffer()
	opts := gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}
	if err := gopacket.SerializeLayers(buf, opts, ls...); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func udpPacket(t *testing.T, src, dst netip.AddrPort, payload []byte) []byte {
	ip := &layers.IPv4{Version: 4, TTL: 64, Protocol: layers.IPProtocolUDP,
		SrcIP: src.Addr().AsSlice(), DstIP: dst.Addr().AsSlice()}
	udp := &layers.UDP{SrcPort: layers.UDPPort(src.Port()), DstPort: layers.UDPPort(dst.Port())}
	udp.SetNetworkLayerForChecksum(ip)
	return serialize(t, ip, udp, gopacket.Payload(payload))
}

// withHeadroom returns pkt behind headroom bytes of junk, as the forwarder
// hands a decapsulated datagram to Write.
func withHeadroom(pkt []byte) []byte {
	return append(bytes.Repeat([]byte{0xab}, headroom), pkt...)
}

func TestWaterTUN(t *testing.T) {
	r := newTunRig(t)

	t.Run("name and MTU", func(t *testing.T) {
		if r.dev.Name() != "vxtt0" {
			t.Errorf("Name = %q, want vxtt0", r.dev.Name())
		}
		if r.dev.BatchSize() != 1 {
			t.Errorf("BatchSize = %d, want 1", r.dev.BatchSize())
		}
		// Set from outside; MTU must ask the kernel in the device's
		// namespace (this goroutine is not in it).
		if err := r.nl.LinkSetMTU(r.link, 1400); err != nil {
			t.Fatal(err)
		}
		if mtu, err := r.dev.MTU(); mtu != 1400 || err != nil {
			t.Errorf("MTU = %d, %v; want 1400", mtu, err)
		}
	})

	// Before "read": readLoop must not be running yet, this subtest reads.
	t.Run("no allocations", func(t *testing.T) {
		if raceEnabled {
			t.Skip("the race detector allocates")
		}
		buf, sizes := [][]byte{make([]byte, headroom+65535)}, make([]int, 1)
		payload, dst := []byte("count my allocations"), netip.AddrPortFrom(peerAddr, 9000)
		readAllocs := testing.AllocsPerRun(50, func() {
			// Each Read returns a packet: this datagram or one the kernel
			// sent on its own.
			r.sender.WriteToUDPAddrPort(payload, dst)
			if _, err := r.dev.Read(buf, sizes, headroom); err != nil {
				t.Fatal(err)
			}
		})
		to := r.recver.LocalAddr().(*net.UDPAddr).AddrPort()
		pkt := [][]byte{withHeadroom(udpPacket(t, netip.AddrPortFrom(peerAddr, 7777), to, payload))}
		writeAllocs := testing.AllocsPerRun(50, func() {
			if _, err := r.dev.Write(pkt, headroom); err != nil {
				t.Fatal(err)
			}
		})
		if readAllocs != 0 || writeAllocs != 0 {
			t.Errorf("allocations per packet: Read (with a socket send) %v, Write %v; want 0", readAllocs, writeAllocs)
		}
		// Take the 51 datagrams Write delivered, so later subtests see only theirs.
		r.recver.SetReadDeadline(time.Now().Add(5 * time.Second))
		b := make([]byte, 2048)
		for i := range 51 {
			if _, _, err := r.recver.ReadFromUDPAddrPort(b); err != nil {
				t.Fatalf("datagram %d of 51 written: %v", i, err)
			}
		}
	})

	t.Run("read", func(t *testing.T) {
		payload := []byte("from a socket, into the tunnel")
		dst := netip.AddrPortFrom(peerAddr, 9999)
		if _, err := r.sender.WriteToUDPAddrPort(payload, dst); err != nil {
			t.Fatal(err)
		}
		src := r.sender.LocalAddr().(*net.UDPAddr).AddrPort()
		p := r.readUntil(t, "UDP datagram to "+dst.String(), func(p gopacket.Packet) bool {
			udp, ok := p.Layer(layers.LayerTypeUDP).(*layers.UDP)
			return ok && udp.DstPort == 9999
		})
		ip := p.Layer(layers.LayerTypeIPv4).(*layers.IPv4)
		udp := p.Layer(layers.LayerTypeUDP).(*layers.UDP)
		if !ip.SrcIP.Equal(tunAddr.AsSlice()) || !ip.DstIP.Equal(peerAddr.AsSlice()) {
			t.Errorf("IPv4 %s -> %s, want %s -> %s", ip.SrcIP, ip.DstIP, tunAddr, peerAddr)
		}
		if int(udp.SrcPort) != int(src.Port()) {
			t.Errorf("UDP source port %d, want %d", udp.SrcPort, src.Port())
		}
		if !bytes.Equal(udp.Payload, payload) {
			t.Errorf("payload %q, want %q", udp.Payload, payload)
		}
		if err := p.ErrorLayer(); err != nil {
			t.Errorf("packet does not decode: %v", err.Error())
		}
	})

	t.Run("write", func(t *testing.T) {
		to := r.recver.LocalAddr().(*net.UDPAddr).AddrPort()
		from := netip.AddrPortFrom(peerAddr, 7777)
		var bufs [][]byte
		for i := range 3 {
			bufs = append(bufs, withHeadroom(udpPacket(t, from, to, []byte(fmt.Sprintf("into the kernel %d", i)))))
		}
		if n, err := r.dev.Write(bufs, headroom); n != 3 || err != nil {
			t.Fatalf("Write = %d, %v; want 3, nil", n, err)
		}
		r.recver.SetReadDeadline(time.Now().Add(5 * time.Second))
		buf := make([]byte, 2048)
		for i := range 3 {
			n, src, err := r.recver.ReadFromUDPAddrPort(buf)
			if err != nil {
				t.Fatalf("datagram %d: %v", i, err)
			}
			if want := fmt.Sprintf("into the kernel %d", i); string(buf[:n]) != want || src != from {
				t.Errorf("socket got %q from %s, want %q from %s", buf[:n], src, want, from)
			}
		}
	})

	t.Run("ping", func(t *testing.T) {
		// An echo request written into the device comes back as the
		// kernel's echo reply, read from the device.
		ip := &layers.IPv4{Version: 4, TTL: 64, Protocol: layers.IPProtocolICMPv4,
			SrcIP: peerAddr.AsSlice(), DstIP: tunAddr.AsSlice()}
		icmp := &layers.ICMPv4{TypeCode: layers.CreateICMPv4TypeCode(layers.ICMPv4TypeEchoRequest, 0), Id: 0x4242, Seq: 7}
		req := serialize(t, ip, icmp, gopacket.Payload("are you there"))
		if n, err := r.dev.Write([][]byte{withHeadroom(req)}, headroom); n != 1 || err != nil {
			t.Fatalf("Write = %d, %v", n, err)
		}
		p := r.readUntil(t, "echo reply", func(p gopacket.Packet) bool {
			icmp, ok := p.Layer(layers.LayerTypeICMPv4).(*layers.ICMPv4)
			return ok && icmp.TypeCode.Type() == layers.ICMPv4TypeEchoReply && icmp.Id == 0x4242
		})
		reply := p.Layer(layers.LayerTypeICMPv4).(*layers.ICMPv4)
		ipr := p.Layer(layers.LayerTypeIPv4).(*layers.IPv4)
		if reply.Seq != 7 || string(reply.Payload) != "are you there" || !ipr.DstIP.Equal(peerAddr.AsSlice()) {
			t.Errorf("echo reply seq %d payload %q to %s; want 7, %q, %s", reply.Seq, reply.Payload, ipr.DstIP, "are you there", peerAddr)
		}
	})

	t.Run("refused packet does not stop the batch", func(t *testing.T) {
		to := r.recver.LocalAddr().(*net.UDPAddr).AddrPort()
		good := udpPacket(t, netip.AddrPortFrom(peerAddr, 7777), to, []byte("after the bad one"))
		bufs := [][]byte{
			withHeadroom([]byte{0x00, 0x01, 0x02, 0x03}), // IP version 0: EINVAL
			withHeadroom(good),
		}
		n, err := r.dev.Write(bufs, headroom)
		if n != 1 || err == nil || !strings.Contains(err.Error(), "vxtt0") {
			t.Fatalf("Write = %d, %v; want 1 and an error naming the device", n, err)
		}
		r.recver.SetReadDeadline(time.Now().Add(5 * time.Second))
		buf := make([]byte, 2048)
		k, _, err := r.recver.ReadFromUDPAddrPort(buf)
		if err != nil || string(buf[:k]) != "after the bad one" {
			t.Fatalf("socket got %q, %v", buf[:k], err)
		}
	})

	t.Run("close unblocks read", func(t *testing.T) {
		// readLoop is blocked in Read: nothing is routed into the device
		// now but IPv6 chatter.
		r.startReading()
		time.Sleep(100 * time.Millisecond)
		if err := r.dev.Close(); err != nil {
			t.Fatalf("Close: %v", err)
		}
		deadline := time.After(5 * time.Second)
	wait:
		for {
			select {
			case res := <-r.packets:
				if res.err == nil {
					continue // a packet read before Close
				}
				if !errors.Is(res.err, ErrClosed) || !errors.Is(res.err, os.ErrClosed) {
					t.Fatalf("pending Read returned %v; want an error matching ErrClosed and os.ErrClosed", res.err)
				}
				break wait
			case <-deadline:
				t.Fatal("Close did not unblock Read")
			}
		}
		if _, err := r.dev.Read([][]byte{make([]byte, 100)}, make([]int, 1), 0); !errors.Is(err, ErrClosed) {
			t.Errorf("Read after Close = %v, want ErrClosed", err)
		}
		if _, err := r.dev.Write([][]byte{withHeadroom([]byte{0x45})}, headroom); !errors.Is(err, ErrClosed) {
			t.Errorf("Write after Close = %v, want ErrClosed", err)
		}
		if _, err := r.dev.MTU(); !errors.Is(err, ErrClosed) {
			t.Errorf("MTU after Close = %v, want ErrClosed", err)
		}
		if err := r.dev.Close(); err != nil {
			t.Errorf("second Close = %v, want nil", err)
		}
		// Closing the last file of a non-persistent TUN removes it.
		gone := time.Now().Add(5 * time.Second)
		for {
			_, err := r.nl.LinkByName("vxtt0")
			if errors.As(err, new(netlink.LinkNotFoundError)) {
				break
			}
			if time.Now().After(gone) {
				t.Fatalf("vxtt0 still there after Close (LinkByName: %v)", err)
			}
			time.Sleep(20 * time.Millisecond)
		}
	})
}

func TestOpenWaterRejectsLongName(t *testing.T) {
	// Refused before anything is opened, so no root needed.
	if _, err := OpenWater("a-name-longer-than-ifnamsiz"); err == nil || !strings.Contains(err.Error(), "longer") {
		t.Fatalf("OpenWater with a 27-byte name: %v, want an error about its length", err)
	}
}

// TestWaterWriteChecksums: the water device cannot tell the kernel that a
// checksum is pending, so it finishes one itself; it cuts a TCP packet
// bigger than the MTU (as a kernel sender's TSO packet arrives whole
// through the kernel's vxlan on one host) into segments; and it drops,
// and counts, a datagram whose checksum is wrong.
func TestWaterWriteChecksums(t *testing.T) {
	r := newTunRig(t)
	to := r.recver.LocalAddr().(*net.UDPAddr).AddrPort()
	pending := withHeadroom(udpPacket(t, netip.AddrPortFrom(peerAddr, 7001), to, []byte("pending")))
	pend(pending)
	bad := withHeadroom(udpPacket(t, netip.AddrPortFrom(peerAddr, 7002), to, []byte("corrupt")))
	bad[len(bad)-1] ^= 0x20
	good := withHeadroom(udpPacket(t, netip.AddrPortFrom(peerAddr, 7003), to, []byte("good")))
	orig := [][]byte{bytes.Clone(pending), bytes.Clone(bad), bytes.Clone(good)}
	if n, err := r.dev.Write([][]byte{pending, bad, good}, headroom); n != 3 || err != nil {
		t.Fatalf("Write = %d, %v; want 3 (the bad one dropped, and taken)", n, err)
	}
	for i, b := range [][]byte{pending, bad, good} {
		if !bytes.Equal(b, orig[i]) {
			t.Fatalf("Write changed the caller's packet %d", i)
		}
	}
	receiveAll(t, r.recver, [][]byte{[]byte("pending"), []byte("good")})
	if got := r.dev.(BadChecksumCounter).BadChecksums(); got != 1 {
		t.Errorf("BadChecksums = %d, want 1", got)
	}

	// 20 KB of TCP, its checksum pending, to a port no one listens on:
	// the kernel must see MTU-size segments with right checksums, and
	// answer the first with a reset.
	big := flow(netip.AddrPortFrom(peerAddr, 7004), netip.AddrPortFrom(tunAddr, 9), false, 1, 20000)[0]
	pkt := withHeadroom(big.bytes(t))
	pend(pkt)
	mtu, err := r.dev.MTU()
	if err != nil {
		t.Fatal(err)
	}
	rxBefore := rxPackets(t, r)
	if n, err := r.dev.Write([][]byte{pkt}, headroom); n != 1 || err != nil {
		t.Fatalf("Write of a 20 KB segment = %d, %v; want 1", n, err)
	}
	hl := 20 + 32 // IPv4, TCP with timestamps
	if got, want := rxPackets(t, r)-rxBefore, uint64((20000+mtu-hl-1)/(mtu-hl)); got != want {
		t.Errorf("the kernel took %d packets, want the 20 KB cut in %d at MTU %d", got, want, mtu)
	}
	r.readUntil(t, "a reset for the cut segments", func(p gopacket.Packet) bool {
		tcp, _ := p.Layer(layers.LayerTypeTCP).(*layers.TCP)
		return tcp != nil && tcp.RST && tcp.DstPort == 7004
	})
	if got := r.dev.(BadChecksumCounter).BadChecksums(); got != 1 {
		t.Errorf("BadChecksums = %d after the big segment, want still 1", got)
	}
}

// rxPackets is how many packets the rig's TUN device handed the kernel
// (its "RX" counter: from the kernel's side, written packets arrive).
func rxPackets(t *testing.T, r *tunRig) uint64 {
	t.Helper()
	l, err := r.nl.LinkByName("vxtt0")
	if err != nil {
		t.Fatal(err)
	}
	return l.Attrs().Statistics.RxPackets
}
