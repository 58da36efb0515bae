package tunnel

import (
	"net/netip"
	"os"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// A dual-stack socket with Sources sends from them, not from what the
// route would pick, in both families, with and without GSO; a source the
// host does not have, or Sources on a socket bound to one address, is an
// error when the socket opens.
func TestUDPDualStackSources(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: adds addresses in a new network namespace")
	}
	ns := newNetns(t)
	nl, err := netlink.NewHandleAt(ns)
	if err != nil {
		t.Fatal(err)
	}
	defer nl.Close()
	lo, err := nl.LinkByName("lo")
	if err != nil {
		t.Fatal(err)
	}
	if err := nl.LinkSetUp(lo); err != nil {
		t.Fatal(err)
	}
	// A second IPv6 address on lo; 127.0.0.2 is lo's already (127/8).
	src6 := netip.MustParseAddr("fd00:99::2")
	a, _ := netlink.ParseAddr(src6.String() + "/128")
	a.Flags = unix.IFA_F_NODAD // usable at once
	if err := nl.AddrAdd(lo, a); err != nil {
		t.Fatal(err)
	}
	src4 := netip.MustParseAddr("127.0.0.2")

	inNetns(t, ns, func() {
		for _, gso := range []bool{false, true} {
			dual, err := ListenUDPOptions(netip.MustParseAddrPort("[::]:0"), UDPOptions{Source4: src4, Source6: src6, NoGSO: !gso})
			if err != nil {
				t.Fatal(err)
			}
			defer dual.Close()
			v4, v6 := listen(t, "127.0.0.1"), listen(t, "::1")
			// Runs of three equal datagrams to one peer: one GSO message
			// each where the kernel has GSO.
			var bufs [][]byte
			var to []netip.AddrPort
			for _, rx := range []*UDP{v4, v6, v4, v6} {
				for range 3 {
					bufs = append(bufs, []byte("a datagram of 28 bytes......"))
					to = append(to, rx.LocalAddr())
				}
			}
			if n, err := dual.Write(bufs, to); n != len(bufs) || err != nil {
				t.Fatalf("gso=%v: Write = %d, %v; want %d", gso, n, err, len(bufs))
			}
			if g, _ := dual.Offloads(); gso && g && dual.w.gsoSends == 0 {
				t.Fatalf("gso=%v: no GSO send, so the control messages were not tried together", gso)
			}
			if !raceEnabled {
				if allocs := testing.AllocsPerRun(50, func() { dual.Write(bufs, to) }); allocs != 0 {
					t.Errorf("gso=%v: Write with Sources: %v allocations, want 0", gso, allocs)
				}
			}
			port := dual.LocalAddr().Port()
			for _, c := range []struct {
				rx   *UDP
				from netip.Addr
			}{{v4, src4}, {v6, src6}} {
				want := 6
				if !raceEnabled {
					want += 51 * 6 // what the allocation test sent (AllocsPerRun runs once more)
				}
				got, _ := readN(t, c.rx, want)
				for _, r := range got {
					if r.from != netip.AddrPortFrom(c.from, port) {
						t.Fatalf("gso=%v: %s got a datagram from %s, want from %s", gso, c.rx.LocalAddr(), r.from, netip.AddrPortFrom(c.from, port))
					}
				}
			}
		}

		// The source port pool (flow entropy) sends from the sources too.
		pooled, err := ListenUDPOptions(netip.MustParseAddrPort("[::]:0"), UDPOptions{Source4: src4, Source6: src6, SourcePool: 4})
		if err != nil {
			t.Fatal(err)
		}
		defer pooled.Close()
		v4, v6 := listen(t, "127.0.0.1"), listen(t, "::1")
		var bufs [][]byte
		var to []netip.AddrPort
		var flows []uint32
		for f := range uint32(8) {
			for _, rx := range []*UDP{v4, v6} {
				bufs = append(bufs, []byte("from the pool"))
				to = append(to, rx.LocalAddr())
				flows = append(flows, f)
			}
		}
		if n, err := pooled.WriteFlows(bufs, to, flows); n != len(bufs) || err != nil {
			t.Fatalf("WriteFlows = %d, %v; want %d", n, err, len(bufs))
		}
		for _, c := range []struct {
			rx   *UDP
			from netip.Addr
		}{{v4, src4}, {v6, src6}} {
			got, _ := readN(t, c.rx, 8)
			for _, r := range got {
				if r.from.Addr() != c.from || r.from.Port() == pooled.LocalAddr().Port() {
					t.Fatalf("pool: %s got a datagram from %s, want from %s and a pool port", c.rx.LocalAddr(), r.from, c.from)
				}
			}
		}

		ip := netip.MustParseAddr
		for _, tc := range []struct {
			addr string
			o    UDPOptions
			want string
		}{
			{"[::]:0", UDPOptions{Source4: ip("10.9.9.9")}, "source address 10.9.9.9 is not an address of this host"},
			{"[::]:0", UDPOptions{Source6: ip("fd00:99::3")}, "source address fd00:99::3 is not an address of this host"},
			{"[::]:0", UDPOptions{Source4: src6}, "IPv4 in Source4 and IPv6 in Source6"},
			{"[::]:0", UDPOptions{Source6: ip("::")}, "want a unicast address"},
			{"127.0.0.1:0", UDPOptions{Source4: src4}, "source addresses are for a dual-stack socket"},
		} {
			u, err := ListenUDPOptions(netip.MustParseAddrPort(tc.addr), tc.o)
			if err == nil {
				u.Close()
				t.Errorf("ListenUDPOptions(%s, %+v) succeeded, want %q", tc.addr, tc.o, tc.want)
				continue
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("ListenUDPOptions(%s, %+v) = %v, want %q", tc.addr, tc.o, err, tc.want)
			}
		}
	})
}
