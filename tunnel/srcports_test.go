package tunnel

import (
	"fmt"
	"net/netip"
	"slices"
	"testing"
	"time"
)

// TestWriteFlowsSourcePorts: with a source pool, each flow leaves from
// one port of the pool, every datagram of it, in order; flows that hash
// to other sockets leave from other ports; nothing sent to a pool port
// is kept.
func TestWriteFlowsSourcePorts(t *testing.T) {
	for _, r := range []PortRange{{}, {Lo: 41000, Hi: 41007}} {
		t.Run(r.String(), func(t *testing.T) {
			lo := netip.MustParseAddr("127.0.0.1")
			u, err := ListenUDPOptions(netip.AddrPortFrom(lo, 0), UDPOptions{SourcePool: 4, SourcePorts: r})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { u.Close() })
			ports := u.SourcePorts()
			if len(ports) != 4 || len(slices.Compact(slices.Sorted(slices.Values(ports)))) != 4 {
				t.Fatalf("source ports %v, want 4 distinct", ports)
			}
			for _, p := range ports {
				switch {
				case p == u.LocalAddr().Port():
					t.Errorf("pool port %d is the socket's own", p)
				case r != (PortRange{}) && (p < r.Lo || p > r.Hi):
					t.Errorf("pool port %d outside %s", p, r)
				}
			}
			rcv := listen(t, "127.0.0.1")
			// 40 datagrams of 4 flows, interleaved, flow f on socket f.
			var bufs [][]byte
			var to []netip.AddrPort
			var flows []uint32
			for i := range 40 {
				bufs = append(bufs, []byte(fmt.Sprintf("flow %d datagram %02d", i%4, i)))
				to = append(to, rcv.LocalAddr())
				flows = append(flows, uint32(i%4)+4*uint32(i))
			}
			if n, err := u.WriteFlows(bufs, to, flows); n != 40 || err != nil {
				t.Fatalf("WriteFlows = %d, %v", n, err)
			}
			got, _ := readN(t, rcv, 40)
			if len(got) != 40 {
				t.Fatalf("%d of 40 arrived", len(got))
			}
			last := map[int]int{} // flow -> index of its last datagram
			for _, g := range got {
				var f, i int
				fmt.Sscanf(string(g.data), "flow %d datagram %d", &f, &i)
				if want := ports[flows[i]%4]; g.from.Port() != want {
					t.Errorf("datagram %d of flow %d came from port %d, want %d", i, f, g.from.Port(), want)
				}
				if p, ok := last[f]; ok && p > i {
					t.Errorf("flow %d: datagram %d after %d", f, i, p)
				}
				last[f] = i
			}
			// A pool socket keeps nothing sent to it.
			if n, err := rcv.Write([][]byte{[]byte("to the pool")}, []netip.AddrPort{netip.AddrPortFrom(lo, ports[0])}); n != 1 || err != nil {
				t.Fatal(err)
			}
			c := u.pool[0].conn
			c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
			if n, _, err := c.ReadFromUDPAddrPort(make([]byte, 100)); err == nil {
				t.Errorf("a pool socket received %d bytes", n)
			}
		})
	}
}

func TestParsePortRange(t *testing.T) {
	for _, s := range []string{"0-10", "10-9", "1-65536", "abc", "5", "-5", "10-"} {
		if r, err := ParsePortRange(s); err == nil {
			t.Errorf("ParsePortRange(%q) = %v, want an error", s, r)
		}
	}
	if r, err := ParsePortRange(" 49152-65535"); err != nil || r != (PortRange{49152, 65535}) {
		t.Errorf("ParsePortRange = %v, %v", r, err)
	}
}

// TestSourcePoolShared: the queues of one address share one source pool,
// so a flow the TUN device moves to another queue keeps its port; only
// the first queue's Close closes it.
func TestSourcePoolShared(t *testing.T) {
	us, err := ListenUDPQueues(netip.MustParseAddrPort("127.0.0.1:0"), 2, UDPOptions{SourcePool: 4})
	if err != nil {
		t.Fatal(err)
	}
	defer us[0].Close()
	if a, b := us[0].SourcePorts(), us[1].SourcePorts(); !slices.Equal(a, b) || len(a) != 4 {
		t.Fatalf("queue ports %v and %v, want one pool of 4", a, b)
	}
	us[1].Close()
	rcv := listen(t, "127.0.0.1")
	if n, err := us[0].WriteFlows([][]byte{[]byte("after the other queue closed")}, []netip.AddrPort{rcv.LocalAddr()}, []uint32{1}); n != 1 || err != nil {
		t.Fatalf("WriteFlows after the second queue's Close = %d, %v", n, err)
	}
}
