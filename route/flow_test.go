package route

import (
	"fmt"
	"net/netip"
	"testing"

	"vxrouter/encap"
)

// TestEncapBatchFlows: the hash encapBatch gives each packet is its own
// flow's, also when flows interleave in a batch (it reuses the last
// packet's hash when the flow is the same), for IPv4 and IPv6.
func TestEncapBatchFlows(t *testing.T) {
	tb := mustTable(t)
	tb.Set(netip.MustParsePrefix("172.16.57.0/24"), netip.MustParseAddrPort("10.0.0.2:8472"), macB)
	tb.Set(netip.MustParsePrefix("fd00:57::/64"), netip.MustParseAddrPort("10.0.0.2:8472"), macB)
	dec, _ := encap.NewDecoder(1, macB)
	f := NewForwarder(nil, nil, tb, dec, nil)
	var pkts [][]byte
	for i := range 12 {
		dst := fmt.Sprintf("172.16.57.%d", 10+i%3) // three flows, interleaved
		if i%4 == 3 {
			pkts = append(pkts, ipv6UDP(t, "fd00:99::8", fmt.Sprintf("fd00:57::%d", i%2), []byte("six")))
			continue
		}
		pkts = append(pkts, ipv4UDP(t, "172.16.99.8", dst, []byte("four")))
	}
	pkts = append(pkts, pkts[0], pkts[0]) // the same flow twice in a row
	bufs, sizes := make([][]byte, len(pkts)), make([]int, len(pkts))
	want := make([]uint32, len(pkts))
	for i, p := range pkts {
		bufs[i] = append(make([]byte, Headroom), p...)
		sizes[i] = len(p)
		want[i] = PacketFlow(p)
	}
	_, _, flows, _ := f.encapBatch(bufs, sizes, nil, nil, make([]uint32, 0, len(pkts)), nil)
	if len(flows) != len(pkts) {
		t.Fatalf("%d hashes for %d packets", len(flows), len(pkts))
	}
	for i := range flows {
		if flows[i] != want[i] {
			t.Errorf("packet %d: hash %#x, want its flow's %#x", i, flows[i], want[i])
		}
	}
}
