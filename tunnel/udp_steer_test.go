package tunnel

import (
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"os"
	"testing"
	"time"
)

// vxlanTCPDatagram is a VXLAN datagram carrying an inner IPv4 or IPv6 TCP
// header with the given ports: what the steering program reads.
func vxlanTCPDatagram(v6 bool, sport, dport uint16) []byte {
	b := make([]byte, 22+40+20+16)
	b[0] = 0x08 // I flag
	if v6 {
		b[20], b[21] = 0x86, 0xdd
		b[22] = 0x60
		copy(b[22+8:], netip.MustParseAddr("fd00::1").AsSlice())
		copy(b[22+24:], netip.MustParseAddr("fd00::2").AsSlice())
		binary.BigEndian.PutUint16(b[62:], sport)
		binary.BigEndian.PutUint16(b[64:], dport)
		return b
	}
	b[20], b[21] = 0x08, 0x00
	b[22] = 0x45
	copy(b[22+12:], []byte{172, 16, 99, 8})
	copy(b[22+16:], []byte{172, 16, 57, 15})
	binary.BigEndian.PutUint16(b[42:], sport)
	binary.BigEndian.PutUint16(b[44:], dport)
	return b
}

// TestListenUDPQueuesSteersByInnerFlow sends many inner flows from one
// outer source port, as a VXLAN peer does, and checks that each flow lands
// on exactly one socket and that the flows spread over all of them.
func TestListenUDPQueuesSteersByInnerFlow(t *testing.T) {
	for _, v6 := range []bool{false, true} {
		name := "ipv4-inner"
		if v6 {
			name = "ipv6-inner"
		}
		t.Run(name, func(t *testing.T) {
			const queues, flows, perFlow = 2, 16, 4
			us, err := ListenUDPQueues(netip.MustParseAddrPort("127.0.0.1:0"), queues, UDPOptions{})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() {
				for _, u := range us {
					u.Close()
				}
			})
			c, err := net.DialUDP("udp4", nil, net.UDPAddrFromAddrPort(us[0].LocalAddr()))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { c.Close() })
			for i := range flows {
				// Even ports, as connect() picks them: a hash of the low
				// bits alone would put every flow on one socket.
				d := vxlanTCPDatagram(v6, uint16(40000+2*i), 5201)
				for range perFlow {
					if _, err := c.Write(d); err != nil {
						t.Fatal(err)
					}
				}
			}
			got := map[uint16]map[int]int{} // source port -> socket -> datagrams
			l4 := 42
			if v6 {
				l4 = 62
			}
			for q, u := range us {
				bufs, sizes, from := make([][]byte, 8), make([]int, 8), make([]netip.AddrPort, 8)
				for i := range bufs {
					bufs[i] = make([]byte, 2048)
				}
				for {
					u.conn.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
					n, err := u.Read(bufs, sizes, from)
					if errors.Is(err, os.ErrDeadlineExceeded) {
						break
					}
					if err != nil {
						t.Fatal(err)
					}
					for i := range n {
						sp := binary.BigEndian.Uint16(bufs[i][l4:])
						if got[sp] == nil {
							got[sp] = map[int]int{}
						}
						got[sp][q]++
					}
				}
			}
			if len(got) != flows {
				t.Fatalf("%d flows arrived, want %d", len(got), flows)
			}
			perQueue := make([]int, queues)
			for sp, qs := range got {
				if len(qs) != 1 {
					t.Errorf("flow from port %d split over sockets: %v", sp, qs)
				}
				for q, k := range qs {
					perQueue[q]++
					if k != perFlow {
						t.Errorf("flow from port %d: %d datagrams on socket %d, want %d", sp, k, q, perFlow)
					}
				}
			}
			for q, k := range perQueue {
				if k == 0 {
					t.Errorf("no flow on socket %d (flows per socket %v): not steered by inner flow", q, perQueue)
				}
			}
		})
	}
}
