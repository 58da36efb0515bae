package route

import (
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
)

var (
	macA = net.HardwareAddr{0xb6, 0xbf, 0x4c, 0x81, 0xcf, 0x3b}
	macB = net.HardwareAddr{0xd6, 0x51, 0x2e, 0x80, 0x5c, 0x69}
	macC = net.HardwareAddr{0x02, 0x00, 0x00, 0x00, 0x00, 0x0c}
)

func mustTable(t testing.TB) *Table {
	t.Helper()
	tb, err := NewTable(1, macA)
	if err != nil {
		t.Fatal(err)
	}
	return tb
}

func TestTableLookupLongestPrefix(t *testing.T) {
	tb := mustTable(t)
	set := func(pfx, addr string, mac net.HardwareAddr) {
		t.Helper()
		if err := tb.Set(netip.MustParsePrefix(pfx), netip.MustParseAddrPort(addr), mac); err != nil {
			t.Fatal(err)
		}
	}
	set("172.16.0.0/16", "10.0.0.9:8472", macC)
	set("172.16.57.0/24", "10.0.0.2:8472", macB)
	set("172.16.57.128/25", "10.0.0.3:8472", macC)
	set("fd00:1::/64", "10.0.0.4:8472", macB)

	for _, tc := range []struct {
		dst  string
		want string // subnet, or "" for no peer
	}{
		{"172.16.57.15", "172.16.57.0/24"},
		{"172.16.57.200", "172.16.57.128/25"},
		{"172.16.1.1", "172.16.0.0/16"},
		{"172.17.0.1", ""},
		{"fd00:1::5", "fd00:1::/64"},
		{"fd00:2::5", ""},
		{"::ffff:172.16.57.15", ""}, // a v4-mapped v6 address is IPv6 to the kernel too
	} {
		p := tb.Lookup(netip.MustParseAddr(tc.dst))
		got := ""
		if p != nil {
			got = p.Subnet.String()
		}
		if got != tc.want {
			t.Errorf("Lookup(%s) = %q, want %q", tc.dst, got, tc.want)
		}
	}

	p := tb.Lookup(netip.MustParseAddr("172.16.57.15"))
	if p.Addr != netip.MustParseAddrPort("10.0.0.2:8472") || p.VTEP.String() != macB.String() {
		t.Errorf("peer = %v %v, want 10.0.0.2:8472 %v", p.Addr, p.VTEP, macB)
	}
	// The header template carries both MACs: destination first.
	if got := net.HardwareAddr(p.Header[8:14]); got.String() != macB.String() {
		t.Errorf("header dst MAC = %v, want %v", got, macB)
	}
	if got := net.HardwareAddr(p.Header[14:20]); got.String() != macA.String() {
		t.Errorf("header src MAC = %v, want %v", got, macA)
	}

	if !tb.Delete(netip.MustParsePrefix("172.16.57.128/25")) {
		t.Fatal("Delete of a present subnet reported false")
	}
	if tb.Delete(netip.MustParsePrefix("172.16.57.128/25")) {
		t.Fatal("second Delete reported true")
	}
	if p := tb.Lookup(netip.MustParseAddr("172.16.57.200")); p == nil || p.Subnet.String() != "172.16.57.0/24" {
		t.Errorf("after delete, Lookup = %v, want 172.16.57.0/24", p)
	}
	if tb.Len() != 3 {
		t.Errorf("Len = %d, want 3", tb.Len())
	}
}

// knownSender reports whether addr is the underlay address of some peer
// of tb.
func knownSender(tb *Table, addr netip.Addr) bool { return len(tb.SenderSubnets(addr)) > 0 }

func TestTableKnownSender(t *testing.T) {
	tb := mustTable(t)
	a := netip.MustParseAddrPort("10.0.0.2:8472")
	tb.Set(netip.MustParsePrefix("172.16.57.0/24"), a, macB)
	tb.Set(netip.MustParsePrefix("172.16.58.0/24"), a, macB) // two subnets behind one node
	if !knownSender(tb, netip.MustParseAddr("10.0.0.2")) {
		t.Error("10.0.0.2 not known")
	}
	if !knownSender(tb, netip.MustParseAddr("::ffff:10.0.0.2")) {
		t.Error("v4-mapped 10.0.0.2 not known (a dual-stack socket reports senders so)")
	}
	if knownSender(tb, netip.MustParseAddr("10.0.0.3")) {
		t.Error("10.0.0.3 known")
	}
	tb.Delete(netip.MustParsePrefix("172.16.57.0/24"))
	if !knownSender(tb, netip.MustParseAddr("10.0.0.2")) {
		t.Error("10.0.0.2 forgotten while it still owns 172.16.58.0/24")
	}
	tb.Delete(netip.MustParsePrefix("172.16.58.0/24"))
	if knownSender(tb, netip.MustParseAddr("10.0.0.2")) {
		t.Error("10.0.0.2 still known with no subnet")
	}
}

func TestTableRejectsBadPeers(t *testing.T) {
	tb := mustTable(t)
	ok := netip.MustParseAddrPort("10.0.0.2:8472")
	for _, tc := range []struct {
		name   string
		subnet netip.Prefix
		addr   netip.AddrPort
		mac    net.HardwareAddr
	}{
		{"unmasked subnet", netip.MustParsePrefix("172.16.57.1/24"), ok, macB},
		{"zero subnet", netip.Prefix{}, ok, macB},
		{"zero address", netip.MustParsePrefix("172.16.57.0/24"), netip.AddrPort{}, macB},
		{"port 0", netip.MustParsePrefix("172.16.57.0/24"), netip.MustParseAddrPort("10.0.0.2:0"), macB},
		{"short MAC", netip.MustParsePrefix("172.16.57.0/24"), ok, macB[:5]},
	} {
		if err := tb.Set(tc.subnet, tc.addr, tc.mac); err == nil {
			t.Errorf("%s: Set succeeded", tc.name)
		}
	}
	if tb.Len() != 0 {
		t.Errorf("a rejected peer was kept: Len = %d", tb.Len())
	}
	if _, err := NewTable(1<<24, macA); err == nil {
		t.Error("NewTable accepted a 25-bit VNI")
	}
}

// TestTableConcurrent runs lookups against writers; run with -race.
func TestTableConcurrent(t *testing.T) {
	tb := mustTable(t)
	stable := netip.MustParsePrefix("172.16.1.0/24")
	tb.Set(stable, netip.MustParseAddrPort("10.0.0.1:8472"), macB)
	var wg sync.WaitGroup
	done := make(chan struct{})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; i < 200; i++ {
			pfx := netip.MustParsePrefix(fmt.Sprintf("172.16.%d.0/24", 2+i%100))
			tb.Set(pfx, netip.MustParseAddrPort("10.0.0.2:8472"), macC)
			tb.Delete(pfx)
		}
		close(done)
	}()
	for {
		select {
		case <-done:
			wg.Wait()
			return
		default:
		}
		if p := tb.Lookup(netip.MustParseAddr("172.16.1.9")); p == nil || p.Subnet != stable {
			t.Fatalf("stable peer lost during updates: %v", p)
		}
	}
}

func TestTableLookupAllocs(t *testing.T) {
	tb := mustTable(t)
	tb.Set(netip.MustParsePrefix("172.16.57.0/24"), netip.MustParseAddrPort("10.0.0.2:8472"), macB)
	dst := netip.MustParseAddr("172.16.57.15")
	if n := testing.AllocsPerRun(1000, func() { tb.Lookup(dst); tb.SenderSubnets(dst) }); n != 0 {
		t.Errorf("Lookup+SenderSubnets allocate %.1f times per call, want 0", n)
	}
}

func BenchmarkLookup(b *testing.B) {
	for _, n := range []int{1, 100, 10000} {
		b.Run(fmt.Sprintf("peers=%d", n), func(b *testing.B) {
			tb := mustTable(b)
			peers := make(map[netip.Prefix]*Peer, n)
			for i := 0; i < n; i++ {
				// 10.128.0.0/9 split in /24s: room for 32768 peers.
				pfx := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(128 + i>>8), byte(i), 0}), 24)
				peers[pfx] = &Peer{Subnet: pfx, Addr: netip.AddrPortFrom(netip.AddrFrom4([4]byte{192, 0, byte(i >> 8), byte(i)}), 8472)}
			}
			tb.snap.Store(build(peers))
			dsts := make([]netip.Addr, 256)
			for i := range dsts {
				j := i * 7919 % n
				dsts[i] = netip.AddrFrom4([4]byte{10, byte(128 + j>>8), byte(j), 15})
			}
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if tb.Lookup(dsts[i&255]) == nil {
					b.Fatal("no peer")
				}
			}
		})
	}
}

func TestTableApplyBatch(t *testing.T) {
	tb := mustTable(t)
	tb.Set(netip.MustParsePrefix("172.16.1.0/24"), netip.MustParseAddrPort("10.0.0.1:8472"), macB)
	err := tb.Apply([]Change{
		{Subnet: netip.MustParsePrefix("172.16.2.0/24"), Addr: netip.MustParseAddrPort("10.0.0.2:8472"), VTEP: macB},
		{Subnet: netip.MustParsePrefix("172.16.3.0/24"), Addr: netip.MustParseAddrPort("10.0.0.3:8472"), VTEP: macC[:3]}, // bad MAC
		{Subnet: netip.MustParsePrefix("172.16.1.0/24"), Delete: true},
		{Subnet: netip.MustParsePrefix("172.16.4.0/24"), Addr: netip.MustParseAddrPort("10.0.0.4:8472"), VTEP: macC},
	})
	if err == nil || !strings.Contains(err.Error(), "172.16.3.0/24") {
		t.Errorf("Apply error = %v, want one naming the bad peer", err)
	}
	var got []string
	for _, p := range tb.Peers() {
		got = append(got, p.Subnet.String())
	}
	if want := []string{"172.16.2.0/24", "172.16.4.0/24"}; !slices.Equal(got, want) {
		t.Errorf("peers after Apply = %v, want %v", got, want)
	}
	if knownSender(tb, netip.MustParseAddr("10.0.0.1")) || !knownSender(tb, netip.MustParseAddr("10.0.0.4")) {
		t.Error("senders not updated with the batch")
	}
}

// BenchmarkLearnPeers is what a node does when it starts in an overlay of
// n nodes: learn every lease from one list, in one batch.
func BenchmarkLearnPeers(b *testing.B) {
	for _, n := range []int{1000, 10000} {
		b.Run(fmt.Sprintf("peers=%d", n), func(b *testing.B) {
			changes := make([]Change, n)
			for i := range changes {
				changes[i] = Change{
					Subnet: netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(128 + i>>8), byte(i), 0}), 24),
					Addr:   netip.AddrPortFrom(netip.AddrFrom4([4]byte{192, 0, byte(i >> 8), byte(i)}), 8472),
					VTEP:   macB,
				}
			}
			b.ReportAllocs()
			for i := 0; i < b.N; i++ {
				tb := mustTable(b)
				if err := tb.Apply(changes); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
