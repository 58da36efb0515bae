package tunnel

import (
	"bytes"
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// offloadRig is an offload TUN device with queues queues, up in a fresh
// namespace ns with its addresses, and two UDP sockets on the first one.
type offloadRig struct {
	devs           []Device
	ns             netns.NsHandle
	nl             *netlink.Handle
	sender, recver *net.UDPConn
}

// newOffloadRig is a rig with tunAddr/24.
func newOffloadRig(t testing.TB, queues int) *offloadRig {
	return newOffloadRigAddrs(t, queues, netip.PrefixFrom(tunAddr, 24))
}

// newOffloadRigAddrs is a rig with addrs on the device (IPv6 ones without
// duplicate address detection, so they are usable at once).
func newOffloadRigAddrs(t testing.TB, queues int, addrs ...netip.Prefix) *offloadRig {
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
	r := &offloadRig{ns: ns, nl: nl}
	inNetns(t, ns, func() {
		// Yields as vxrouter run has them: reads yield before they
		// park or end a batch.
		devs, backend, err := OpenTUN("vxtt1", TUNOptions{Queues: queues, Yields: 3})
		if err != nil {
			t.Fatal(err)
		}
		if backend != BackendOffload {
			t.Skipf("kernel refused offloads: backend %s", backend)
		}
		r.devs = devs
		t.Cleanup(func() {
			for _, d := range devs {
				d.Close()
			}
		})
		link, err := nl.LinkByName("vxtt1")
		if err != nil {
			t.Fatalf("TUN device is not in the namespace: %v", err)
		}
		for _, a := range addrs {
			addr := &netlink.Addr{IPNet: &net.IPNet{IP: a.Addr().AsSlice(), Mask: net.CIDRMask(a.Bits(), a.Addr().BitLen())}}
			if a.Addr().Is6() {
				addr.Flags = unix.IFA_F_NODAD
			}
			if err := nl.AddrAdd(link, addr); err != nil {
				t.Fatalf("add address %s: %v", a, err)
			}
		}
		if err := nl.LinkSetUp(link); err != nil {
			t.Fatalf("link up: %v", err)
		}
		// Loopback up too: the first socket of the process may be made
		// here, and Go probes for IPv6 once, by binding to ::1; with lo
		// down it would decide, for every later test, that there is none.
		lo, err := nl.LinkByName("lo")
		if err == nil {
			err = nl.LinkSetUp(lo)
		}
		if err != nil {
			t.Fatalf("loopback up: %v", err)
		}
		for _, c := range []**net.UDPConn{&r.sender, &r.recver} {
			if *c, err = net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(addrs[0].Addr(), 0))); err != nil {
				t.Fatal(err)
			}
			conn := *c
			t.Cleanup(func() { conn.Close() })
		}
	})
	return r
}

// batch allocates what the forwarder gives an offload device's Read.
func batch(dev Device) ([][]byte, []int) {
	bufs := make([][]byte, dev.BatchSize())
	for i := range bufs {
		bufs[i] = make([]byte, headroom+65535)
	}
	return bufs, make([]int, len(bufs))
}

func TestOffloadTUN(t *testing.T) {
	r := newOffloadRig(t, 2)

	t.Run("queues and flags", func(t *testing.T) {
		if len(r.devs) != 2 {
			t.Fatalf("%d devices, want one per queue, 2", len(r.devs))
		}
		for i, d := range r.devs {
			if d.Name() != "vxtt1" || d.BatchSize() < 64 {
				t.Errorf("queue %d: Name %q, BatchSize %d; want vxtt1, >= 64", i, d.Name(), d.BatchSize())
			}
		}
		link, err := r.nl.LinkByName("vxtt1")
		if err != nil {
			t.Fatal(err)
		}
		tt, ok := link.(*netlink.Tuntap)
		if !ok {
			t.Fatalf("vxtt1 is a %T", link)
		}
		want := netlink.TUNTAP_VNET_HDR | netlink.TUNTAP_MULTI_QUEUE | netlink.TUNTAP_NO_PI
		if tt.Flags&want != want || tt.Queues != 2 {
			t.Errorf("flags %#x, queues %d; want %#x set and 2 queues", tt.Flags, tt.Queues, want)
		}
		if err := r.nl.LinkSetMTU(link, 1400); err != nil {
			t.Fatal(err)
		}
		if mtu, err := r.devs[1].MTU(); mtu != 1400 || err != nil {
			t.Errorf("MTU = %d, %v; want 1400", mtu, err)
		}
	})

	t.Run("read, write and no allocations", func(t *testing.T) {
		// A datagram routed into the device comes out of one of its
		// queues: read both until it shows.
		dst := netip.AddrPortFrom(peerAddr, 9000)
		payload := []byte("out of an offload TUN")
		if _, err := r.sender.WriteToUDPAddrPort(payload, dst); err != nil {
			t.Fatal(err)
		}
		found := make(chan int, 2)
		for q, d := range r.devs {
			go func() {
				bufs, sizes := batch(d)
				for {
					n, err := d.Read(bufs, sizes, headroom)
					if err != nil {
						return
					}
					for i := range n {
						if bytes.HasSuffix(bufs[i][headroom:headroom+sizes[i]], payload) {
							found <- q
							return
						}
					}
				}
			}()
		}
		var q int
		select {
		case q = <-found:
		case <-time.After(5 * time.Second):
			t.Fatal("the datagram never came out of the device")
		}
		t.Logf("flow on queue %d", q)

		to := r.recver.LocalAddr().(*net.UDPAddr).AddrPort()
		pkt := withHeadroom(udpPacket(t, netip.AddrPortFrom(peerAddr, 7777), to, []byte("into an offload TUN")))
		bufs := [][]byte{pkt}
		write := func() {
			if n, err := r.devs[0].Write(bufs, headroom); n != 1 || err != nil {
				t.Fatalf("Write = %d, %v", n, err)
			}
		}
		write()
		r.recver.SetReadDeadline(time.Now().Add(5 * time.Second))
		got := make([]byte, 2048)
		if n, _, err := r.recver.ReadFromUDPAddrPort(got); err != nil || string(got[:n]) != "into an offload TUN" {
			t.Fatalf("socket got %q, %v", got[:n], err)
		}
		if raceEnabled {
			return
		}
		if allocs := testing.AllocsPerRun(50, write); allocs != 0 {
			t.Errorf("Write: %v allocations per packet, want 0", allocs)
		}
		for range 51 {
			if _, _, err := r.recver.ReadFromUDPAddrPort(got); err != nil {
				t.Fatal(err)
			}
		}
	})

	t.Run("bad arguments", func(t *testing.T) {
		d := r.devs[0]
		if n, err := d.Write([][]byte{withHeadroom([]byte{0x45})}, -1); n != 0 || err == nil {
			t.Errorf("Write with a negative offset = %d, %v; want an error", n, err)
		}
		// No headroom needed; the kernel refuses the packet that is
		// neither IPv4 nor IPv6 (EINVAL) and Write goes on with the rest.
		to := r.recver.LocalAddr().(*net.UDPAddr).AddrPort()
		good := udpPacket(t, netip.AddrPortFrom(peerAddr, 7777), to, []byte("after a bad one"))
		if n, err := d.Write([][]byte{{0x75, 0, 0, 0}, good}, 0); n != 1 || !errors.Is(err, unix.EINVAL) || !strings.Contains(err.Error(), "packet 0") {
			t.Errorf("Write of an IPv7 packet and a datagram at offset 0 = %d, %v; want 1 and EINVAL naming packet 0", n, err)
		}
		r.recver.SetReadDeadline(time.Now().Add(5 * time.Second))
		got := make([]byte, 100)
		if n, _, err := r.recver.ReadFromUDPAddrPort(got); err != nil || string(got[:n]) != "after a bad one" {
			t.Errorf("socket got %q, %v; want the datagram after the bad one", got[:n], err)
		}
		bufs, sizes := batch(d)
		if _, err := d.Read(bufs, sizes[:1], headroom); err == nil {
			t.Error("Read with too few sizes succeeded")
		}
		// Any buffer may be filled, so each must reach past offset: a
		// short one further on is an error, not a panic mid-batch.
		short := append([][]byte{}, bufs...)
		short[3] = make([]byte, headroom)
		if _, err := d.Read(short, sizes, headroom); err == nil || !strings.Contains(err.Error(), "outside a") {
			t.Errorf("Read with buffer 3 no longer than the offset = %v, want an error", err)
		}
	})

	t.Run("close", func(t *testing.T) {
		for _, d := range r.devs {
			if err := d.Close(); err != nil {
				t.Fatalf("Close: %v", err)
			}
		}
		bufs, sizes := batch(r.devs[0])
		if _, err := r.devs[0].Read(bufs, sizes, headroom); !errors.Is(err, ErrClosed) {
			t.Errorf("Read after Close = %v, want ErrClosed", err)
		}
		if _, err := r.devs[0].Write([][]byte{withHeadroom([]byte{0x45, 0})}, headroom); !errors.Is(err, ErrClosed) {
			t.Errorf("Write after Close = %v, want ErrClosed", err)
		}
		gone := time.Now().Add(5 * time.Second)
		for {
			_, err := r.nl.LinkByName("vxtt1")
			if errors.As(err, new(netlink.LinkNotFoundError)) {
				break
			}
			if time.Now().After(gone) {
				t.Fatalf("vxtt1 still there after closing every queue (LinkByName: %v)", err)
			}
			time.Sleep(20 * time.Millisecond)
		}
	})
}

// TestOpenTUNFallsBackToWater makes the offload probe fail, as a kernel
// without TUNSETOFFLOAD would, and wants a working water device and a
// warning.
func TestOpenTUNFallsBackToWater(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: creates a TUN device in a new network namespace")
	}
	ns := newNetns(t)
	var logBuf bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logBuf, nil))
	inNetns(t, ns, func() {
		devs, backend, err := OpenTUN("vxtt2", TUNOptions{Queues: 2, Log: log,
			probe: func(int) error { return unix.EINVAL }})
		if err != nil {
			t.Fatal(err)
		}
		defer func() {
			for _, d := range devs {
				d.Close()
			}
		}()
		if backend != BackendWater || len(devs) != 1 || devs[0].BatchSize() != 1 || devs[0].Name() != "vxtt2" {
			t.Fatalf("backend %s, %d devices; want water, 1 device named vxtt2 with BatchSize 1", backend, len(devs))
		}
	})
	if !strings.Contains(logBuf.String(), "level=WARN") || !strings.Contains(logBuf.String(), "water") {
		t.Errorf("no warning about the fallback in the log:\n%s", logBuf.String())
	}

	// A device that cannot be opened at all is an error, not a fallback.
	if _, _, err := OpenTUN("a-name-longer-than-ifnamsiz", TUNOptions{}); err == nil {
		t.Error("OpenTUN with a 27-byte name succeeded")
	}
	if _, _, err := OpenTUN("vxtt3", TUNOptions{Backend: "dpdk"}); err == nil {
		t.Error("OpenTUN with an unknown backend succeeded")
	}
}
