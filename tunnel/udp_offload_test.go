package tunnel

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"net/netip"
	"testing"
)

// offloadDatagram is datagram i of a sender, size bytes: a sender tag, the
// index, then bytes that depend on both.
func offloadDatagram(tag uint32, i, size int) []byte {
	b := make([]byte, size)
	binary.BigEndian.PutUint32(b[0:4], tag)
	binary.BigEndian.PutUint32(b[4:8], uint32(i))
	for j := 8; j < size; j++ {
		b[j] = byte(int(tag)*3 + i*7 + j)
	}
	return b
}

// TestUDPSegmentationOffload sends batches shaped as the forwarder makes
// them (runs of equal-size datagrams to one peer, the last of a run
// shorter; runs to different peers interleaved; sizes that cannot be
// merged) from two senders, with GSO and GRO on and off at either end,
// and wants every datagram back whole, in each sender's order, from its
// sender's address. With both on, it wants GSO sends and GRO reads to have
// happened.
func TestUDPSegmentationOffload(t *testing.T) {
	type shape struct {
		name  string
		sizes []int
		peer  []int // which receiver datagram i goes to
	}
	equal := make([]int, 100) // more than one GSO message holds
	for i := range equal {
		equal[i] = 1400
	}
	var runs, interleaved, mixed []int
	var runsPeer, interPeer, mixedPeer []int
	for r := range 6 {
		for i := range 10 {
			size := 1200
			if i == 9 {
				size = 300 + r // a shorter last one ends the run
			}
			runs, runsPeer = append(runs, size), append(runsPeer, 0)
		}
	}
	for i := range 60 {
		interleaved, interPeer = append(interleaved, 1000), append(interPeer, (i/5)%2)
		mixed, mixedPeer = append(mixed, 20+(i*397)%1400), append(mixedPeer, 0)
	}
	shapes := []shape{
		{"equal", equal, make([]int, len(equal))},
		{"runs with a shorter last", runs, runsPeer},
		{"two peers interleaved", interleaved, interPeer},
		{"unequal sizes", mixed, mixedPeer},
	}
	for _, opt := range []struct {
		name   string
		tx, rx UDPOptions
	}{
		{"gso+gro", UDPOptions{}, UDPOptions{}},
		{"gso, no gro", UDPOptions{}, UDPOptions{NoGRO: true}},
		{"no gso, gro", UDPOptions{NoGSO: true}, UDPOptions{}},
		{"neither", UDPOptions{NoGSO: true}, UDPOptions{NoGRO: true}},
		// A reader that yields before it parks reads the same.
		{"gso+gro, yields", UDPOptions{}, UDPOptions{Yields: 3}},
		{"no gro, yields", UDPOptions{}, UDPOptions{NoGRO: true, Yields: 3}},
	} {
		for _, sh := range shapes {
			for _, views := range []bool{false, true} {
				name := opt.name + "/" + sh.name
				if views {
					name += "/views"
				}
				t.Run(name, func(t *testing.T) {
					open := func(o UDPOptions) *UDP {
						u, err := ListenUDPOptions(netip.MustParseAddrPort("127.0.0.1:0"), o)
						if err != nil {
							t.Fatal(err)
						}
						t.Cleanup(func() { u.Close() })
						return u
					}
					rxs := []*UDP{open(opt.rx), open(opt.rx)}
					txs := []*UDP{open(opt.tx), open(opt.tx)}
					want := make([][][]byte, len(rxs)) // per receiver, in order per sender
					for s, tx := range txs {
						bufs := make([][]byte, len(sh.sizes))
						to := make([]netip.AddrPort, len(bufs))
						for i, size := range sh.sizes {
							bufs[i] = offloadDatagram(uint32(s), i, size)
							to[i] = rxs[sh.peer[i]].LocalAddr()
							want[sh.peer[i]] = append(want[sh.peer[i]], bufs[i])
						}
						if n, err := tx.Write(bufs, to); n != len(bufs) || err != nil {
							t.Fatalf("sender %d: Write = %d, %v; want %d, nil", s, n, err, len(bufs))
						}
					}
					for r, rx := range rxs {
						got, _ := readNFrom(t, rx, len(want[r]), views)
						next := map[uint32]int{}
						for k, g := range got {
							s, i := binary.BigEndian.Uint32(g.data[0:4]), int(binary.BigEndian.Uint32(g.data[4:8]))
							if s > 1 {
								t.Fatalf("receiver %d datagram %d: sender tag %d", r, k, s)
							}
							if g.from != txs[s].LocalAddr() {
								t.Fatalf("receiver %d datagram %d: from %s, want sender %d at %s", r, k, g.from, s, txs[s].LocalAddr())
							}
							// i must be the next index this sender sent this receiver.
							for next[s] < len(sh.sizes) && sh.peer[next[s]] != r {
								next[s]++
							}
							if i != next[s] {
								t.Fatalf("receiver %d: sender %d datagram %d, want %d", r, s, i, next[s])
							}
							if w := offloadDatagram(s, i, sh.sizes[i]); !bytes.Equal(g.data, w) {
								t.Fatalf("receiver %d: sender %d datagram %d: %d bytes, want the %d sent", r, s, i, len(g.data), len(w))
							}
							next[s]++
						}
					}
					gso, _ := txs[0].Offloads()
					_, gro := rxs[0].Offloads()
					sends, coalesced := txs[0].w.gsoSends+txs[1].w.gsoSends, rxs[0].r.coalesced+rxs[1].r.coalesced
					t.Logf("gso %v (%d sends), gro %v (%d coalesced reads)", gso, sends, gro, coalesced)
					if opt.tx.NoGSO && (gso || sends > 0) || opt.rx.NoGRO && (gro || coalesced > 0) {
						t.Errorf("an offload turned off was used")
					}
					if gso && sh.name != "unequal sizes" && sends == 0 {
						t.Errorf("runs of equal sizes went without GSO")
					}
					if gso && gro && sh.name != "unequal sizes" && coalesced == 0 {
						t.Errorf("GSO sends to a GRO socket came back as single datagrams")
					}
				})
			}
		}
	}
}

func TestUDPOffloadsDoNotAllocate(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector allocates")
	}
	for _, c := range []struct {
		o     UDPOptions
		views bool
	}{{UDPOptions{}, false}, {UDPOptions{NoGSO: true, NoGRO: true}, false}, {UDPOptions{}, true}, {UDPOptions{NoGSO: true, NoGRO: true}, true}} {
		o := c.o
		t.Run(fmt.Sprintf("%+v/views=%v", o, c.views), func(t *testing.T) {
			e := newExchange(t, 64, 1400)
			e.views = c.views
			for _, u := range []**UDP{&e.tx, &e.rx} {
				nu, err := ListenUDPOptions(netip.MustParseAddrPort("127.0.0.1:0"), o)
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { nu.Close() })
				*u = nu
			}
			for i := range e.to {
				e.to[i] = e.rx.LocalAddr()
			}
			var err error
			allocs := testing.AllocsPerRun(100, func() {
				if rerr := e.run(); rerr != nil && err == nil {
					err = rerr
				}
			})
			if err != nil {
				t.Fatal(err)
			}
			if allocs != 0 {
				t.Errorf("Write+Read of 64 datagrams: %v allocations, want 0", allocs)
			}
		})
	}
}

func TestListenUDPQueues(t *testing.T) {
	us, err := ListenUDPQueues(netip.MustParseAddrPort("127.0.0.1:0"), 3, UDPOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		for _, u := range us {
			u.Close()
		}
	}()
	if len(us) != 3 {
		t.Fatalf("%d sockets, want 3", len(us))
	}
	for _, u := range us[1:] {
		if u.LocalAddr() != us[0].LocalAddr() {
			t.Errorf("socket on %s, want %s shared", u.LocalAddr(), us[0].LocalAddr())
		}
	}
	// A port someone holds is refused, not shared.
	if more, err := ListenUDPQueues(us[0].LocalAddr(), 2, UDPOptions{}); err == nil {
		for _, u := range more {
			u.Close()
		}
		t.Errorf("ListenUDPQueues on a port in use succeeded")
	}
}
