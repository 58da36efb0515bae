package encap_test

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
	"golang.org/x/sys/unix"

	"vxrouter/encap"
	"vxrouter/internal/nettest"
)

// TestKernelLive re-checks the codec against the running kernel rather than
// a stored capture. Node A is the kernel's vxlan driver set up as flannel
// does it (testdata/README.md); node B is this test, a UDP socket on
// 10.0.0.2:8472 in its own namespace. B sends A an echo request made with
// Encap, so A's kernel must accept our bytes; A's kernel answers through its
// vxlan device, and the answer must be exactly what Encap makes of the same
// inner packet, and Decap must return that packet.
func TestKernelLive(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: creates network namespaces and a kernel vxlan device")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("needs iproute2's ip:", err)
	}
	tag := nettest.Name()
	nsA, nsB := tag+"-a", tag+"-b"
	for _, ns := range []string{nsA, nsB} {
		ipCmd(t, "netns", "add", ns)
		t.Cleanup(func() {
			if out, err := exec.Command("ip", "netns", "del", ns).CombinedOutput(); err != nil {
				t.Errorf("ip netns del %s: %v: %s", ns, err, out)
			}
		})
	}
	ipCmd(t, "link", "add", "veth0", "netns", nsA, "type", "veth", "peer", "name", "veth1", "netns", nsB)
	ipCmd(t, "-n", nsA, "addr", "add", "10.0.0.1/24", "dev", "veth0")
	ipCmd(t, "-n", nsB, "addr", "add", "10.0.0.2/24", "dev", "veth1")
	for _, c := range [][]string{
		{"-n", nsA, "link", "set", "lo", "up"},
		{"-n", nsB, "link", "set", "lo", "up"},
		{"-n", nsA, "link", "set", "veth0", "up"},
		{"-n", nsB, "link", "set", "veth1", "up"},
	} {
		ipCmd(t, c...)
	}
	out, err := exec.Command("ip", "-n", nsA, "link", "add", "flannel.1", "type", "vxlan",
		"id", "1", "local", "10.0.0.1", "dev", "veth0", "dstport", "8472", "nolearning").CombinedOutput()
	if err != nil {
		t.Skipf("kernel or ip without vxlan: %v: %s", err, out)
	}
	for _, c := range [][]string{
		{"link", "set", "flannel.1", "address", macA.String()},
		{"link", "set", "flannel.1", "addrgenmode", "none"},
		{"addr", "add", "172.16.99.0/32", "dev", "flannel.1"},
		{"addr", "add", "fd00:16:99::/128", "dev", "flannel.1", "nodad"},
		{"link", "set", "flannel.1", "up"},
		{"addr", "add", "172.16.99.8/32", "dev", "lo"},
		{"addr", "add", "fd00:16:99::8/128", "dev", "lo", "nodad"},
		{"route", "add", "172.16.57.0/24", "via", "172.16.57.0", "dev", "flannel.1", "onlink"},
		{"neigh", "add", "172.16.57.0", "lladdr", macB.String(), "dev", "flannel.1", "nud", "permanent"},
		{"-6", "route", "add", "fd00:16:57::/64", "via", "fd00:16:57::", "dev", "flannel.1", "onlink"},
		{"-6", "neigh", "add", "fd00:16:57::", "lladdr", macB.String(), "dev", "flannel.1", "nud", "permanent"},
	} {
		ipCmd(t, append([]string{"-n", nsA}, c...)...)
	}
	if out, err := exec.Command("bridge", "-n", nsA, "fdb", "add", macB.String(), "dev", "flannel.1", "dst", "10.0.0.2").CombinedOutput(); err != nil {
		t.Fatalf("bridge fdb add: %v: %s", err, out)
	}

	conn, err := listenUDPInNetns(nsB, netip.AddrPortFrom(underlayB, encap.DefaultPort))
	if err != nil {
		t.Fatalf("listen in %s: %v", nsB, err)
	}
	t.Cleanup(func() { conn.Close() })

	hBA := mustHeader(t, 1, macB, macA)
	hAB := mustHeader(t, 1, macA, macB)
	dB := mustDecoder(t, 1, macB)
	toA := netip.AddrPortFrom(underlayA, encap.DefaultPort)

	for i, tc := range []struct {
		name      string
		pod, peer netip.Addr // pod on B (this test), peer pod on A (the kernel)
	}{
		{"ipv4", netip.MustParseAddr("172.16.57.15"), netip.MustParseAddr("172.16.99.8")},
		{"ipv6", netip.MustParseAddr("fd00:16:57::15"), netip.MustParseAddr("fd00:16:99::8")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			id, seq := uint16(0x5678+i), uint16(1)
			req := echoRequest(t, tc.pod, tc.peer, id, seq)
			dgram, r := hBA.Encap(withHeadroom(req), encap.HeaderLen, len(req))
			if r != encap.OK {
				t.Fatalf("Encap request: %v", r)
			}

			buf := make([]byte, 65536)
			deadline := time.Now().Add(5 * time.Second)
			for attempt := 0; ; attempt++ {
				if time.Now().After(deadline) {
					t.Fatalf("no echo reply from the kernel after %d requests", attempt)
				}
				// Resend now and then: the first may wait on ARP for the underlay.
				if _, err := conn.WriteToUDPAddrPort(dgram, toA); err != nil {
					t.Fatalf("send request: %v", err)
				}
				if err := conn.SetReadDeadline(time.Now().Add(500 * time.Millisecond)); err != nil {
					t.Fatal(err)
				}
				n, from, err := conn.ReadFromUDPAddrPort(buf)
				if errors.Is(err, os.ErrDeadlineExceeded) {
					continue
				}
				if err != nil {
					t.Fatalf("receive: %v", err)
				}
				got := buf[:n]
				if from.Addr().Unmap() != underlayA || len(got) <= encap.HeaderLen || !isEchoReply(got[encap.HeaderLen:], tc.peer, tc.pod, id, seq) {
					t.Logf("ignoring a %d-byte datagram from %s", n, from)
					continue
				}

				inner := got[encap.HeaderLen:]
				want, r := hAB.Encap(withHeadroom(inner), encap.HeaderLen, len(inner))
				if r != encap.OK {
					t.Fatalf("Encap the kernel's inner packet: %v", r)
				}
				if !bytes.Equal(got, want) {
					t.Errorf("the kernel sent header %x, Encap writes %x", got[:encap.HeaderLen], want[:encap.HeaderLen])
				}
				ip, r := dB.Decap(got)
				if r != encap.OK || !bytes.Equal(ip, inner) {
					t.Errorf("Decap of the kernel's datagram: %v, %d bytes, want the %d-byte inner packet", r, len(ip), len(inner))
				}
				return
			}
		})
	}
}

func ipCmd(t *testing.T, args ...string) {
	t.Helper()
	if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
		t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
	}
}

// listenUDPInNetns opens a UDP socket inside the named network namespace.
// A socket stays in the namespace it was made in, so only its creation
// needs the thread switched over.
func listenUDPInNetns(ns string, addr netip.AddrPort) (*net.UDPConn, error) {
	type result struct {
		conn *net.UDPConn
		err  error
	}
	ch := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		// No UnlockOSThread unless the thread is back in its own
		// namespace: a locked thread dies with its goroutine, so a
		// thread stuck in ns never runs other goroutines.
		orig, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			ch <- result{err: err}
			return
		}
		defer orig.Close()
		target, err := os.Open("/run/netns/" + ns)
		if err != nil {
			ch <- result{err: err}
			return
		}
		defer target.Close()
		if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
			ch <- result{err: fmt.Errorf("setns %s: %w", ns, err)}
			return
		}
		conn, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(addr))
		if err := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); err != nil {
			if conn != nil {
				conn.Close()
			}
			ch <- result{err: fmt.Errorf("setns back: %w", err)}
			return
		}
		runtime.UnlockOSThread()
		ch <- result{conn, err}
	}()
	r := <-ch
	return r.conn, r.err
}

// echoRequest builds an ICMP or ICMPv6 echo request from src to dst.
func echoRequest(t *testing.T, src, dst netip.Addr, id, seq uint16) []byte {
	t.Helper()
	payload := gopacket.Payload("vxrouter encap live test")
	opts := gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}
	buf := gopacket.NewSerializeBuffer()
	var err error
	if src.Is4() {
		ip := &layers.IPv4{Version: 4, IHL: 5, TTL: 64, Protocol: layers.IPProtocolICMPv4, SrcIP: src.AsSlice(), DstIP: dst.AsSlice()}
		icmp := &layers.ICMPv4{TypeCode: layers.CreateICMPv4TypeCode(layers.ICMPv4TypeEchoRequest, 0), Id: id, Seq: seq}
		err = gopacket.SerializeLayers(buf, opts, ip, icmp, payload)
	} else {
		ip := &layers.IPv6{Version: 6, HopLimit: 64, NextHeader: layers.IPProtocolICMPv6, SrcIP: src.AsSlice(), DstIP: dst.AsSlice()}
		icmp := &layers.ICMPv6{TypeCode: layers.CreateICMPv6TypeCode(layers.ICMPv6TypeEchoRequest, 0)}
		if err := icmp.SetNetworkLayerForChecksum(ip); err != nil {
			t.Fatal(err)
		}
		echo := &layers.ICMPv6Echo{Identifier: id, SeqNumber: seq}
		err = gopacket.SerializeLayers(buf, opts, ip, icmp, echo, payload)
	}
	if err != nil {
		t.Fatalf("build echo request: %v", err)
	}
	return buf.Bytes()
}

// isEchoReply says whether pkt is the echo reply from src to dst for id/seq.
func isEchoReply(pkt []byte, src, dst netip.Addr, id, seq uint16) bool {
	if src.Is4() {
		p := gopacket.NewPacket(pkt, layers.LayerTypeIPv4, gopacket.Default)
		ip, _ := p.Layer(layers.LayerTypeIPv4).(*layers.IPv4)
		icmp, _ := p.Layer(layers.LayerTypeICMPv4).(*layers.ICMPv4)
		return ip != nil && icmp != nil &&
			ip.SrcIP.Equal(src.AsSlice()) && ip.DstIP.Equal(dst.AsSlice()) &&
			icmp.TypeCode.Type() == layers.ICMPv4TypeEchoReply && icmp.Id == id && icmp.Seq == seq
	}
	p := gopacket.NewPacket(pkt, layers.LayerTypeIPv6, gopacket.Default)
	ip, _ := p.Layer(layers.LayerTypeIPv6).(*layers.IPv6)
	icmp, _ := p.Layer(layers.LayerTypeICMPv6).(*layers.ICMPv6)
	echo, _ := p.Layer(layers.LayerTypeICMPv6Echo).(*layers.ICMPv6Echo)
	return ip != nil && icmp != nil && echo != nil &&
		ip.SrcIP.Equal(src.AsSlice()) && ip.DstIP.Equal(dst.AsSlice()) &&
		icmp.TypeCode.Type() == layers.ICMPv6TypeEchoReply && echo.Identifier == id && echo.SeqNumber == seq
}
