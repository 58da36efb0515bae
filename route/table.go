package route

import (
	"cmp"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"

	"vxrouter/encap"
)

// Peer is another node of the overlay, as its lease describes it.
type Peer struct {
	Subnet netip.Prefix     // the overlay subnet the peer owns
	Addr   netip.AddrPort   // where its VXLAN datagrams go (PublicIP:port)
	VTEP   net.HardwareAddr // its VTEP MAC: the inner Ethernet destination
	Header encap.Header     // built once from VNI, our VTEP MAC and VTEP
	// PartialCsum: the peer takes inner TCP and UDP checksums still
	// pending (its lease says so), so they need not be computed for it.
	PartialCsum bool
}

// snapshot is immutable once published.
type snapshot struct {
	peers   map[netip.Prefix]*Peer
	lens4   []int // prefix lengths present among IPv4 subnets, longest first
	lens6   []int
	senders map[netip.Addr][]netip.Prefix // underlay address -> the subnets behind it
}

// Table is the routing table. Lookup and SenderSubnets are safe for
// concurrent use with each other and with Set and Delete.
type Table struct {
	vni   uint32
	local net.HardwareAddr

	mu   sync.Mutex // serialises writers
	snap atomic.Pointer[snapshot]
}

// NewTable returns an empty table for a node whose VTEP MAC is local, in
// the overlay with the given VNI.
func NewTable(vni uint32, local net.HardwareAddr) (*Table, error) {
	// Validate once here, so Set only fails on the peer's own data.
	if _, err := encap.NewHeader(vni, local, local); err != nil {
		return nil, fmt.Errorf("route table: %w", err)
	}
	t := &Table{vni: vni, local: slices.Clone(local)}
	t.snap.Store(&snapshot{peers: map[netip.Prefix]*Peer{}, senders: map[netip.Addr][]netip.Prefix{}})
	return t, nil
}

// Change is one update for Apply: the peer owning Subnet is now at Addr
// with VTEP (and takes pending checksums if PartialCsum), or, with
// Delete, there is none.
type Change struct {
	Subnet      netip.Prefix
	Addr        netip.AddrPort
	VTEP        net.HardwareAddr
	PartialCsum bool
	Delete      bool
}

// Set adds the peer owning subnet, or replaces what the table knew of it.
func (t *Table) Set(subnet netip.Prefix, addr netip.AddrPort, vtep net.HardwareAddr) error {
	return t.Apply([]Change{{Subnet: subnet, Addr: addr, VTEP: vtep}})
}

// Delete removes the peer owning subnet and reports whether there was one.
func (t *Table) Delete(subnet netip.Prefix) bool {
	_, ok := t.snap.Load().peers[subnet]
	if ok {
		t.Apply([]Change{{Subnet: subnet, Delete: true}})
	}
	return ok
}

// Apply makes every change and publishes one new snapshot: the table is
// copied once per batch, not once per peer, so learning N peers from one
// list costs N, not N². A change with bad data is skipped and its error
// returned (joined with the others'); the rest still apply.
func (t *Table) Apply(changes []Change) error {
	var errs []error
	peers := make([]*Peer, len(changes))
	for i, c := range changes {
		if c.Delete {
			continue
		}
		p, err := t.newPeer(c)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		peers[i] = p
	}

	t.mu.Lock()
	defer t.mu.Unlock()
	old := t.snap.Load()
	next := make(map[netip.Prefix]*Peer, len(old.peers)+len(changes))
	for k, v := range old.peers {
		next[k] = v
	}
	for i, c := range changes {
		switch {
		case c.Delete:
			delete(next, c.Subnet)
		case peers[i] != nil:
			next[c.Subnet] = peers[i]
		}
	}
	t.snap.Store(build(next))
	return errors.Join(errs...)
}

// newPeer checks a change and builds its peer, header template included.
func (t *Table) newPeer(c Change) (*Peer, error) {
	if !c.Subnet.IsValid() || c.Subnet != c.Subnet.Masked() {
		return nil, fmt.Errorf("route: subnet %s is not a masked prefix", c.Subnet)
	}
	if !c.Addr.IsValid() || c.Addr.Port() == 0 {
		return nil, fmt.Errorf("route: peer %s: underlay address %s is not valid", c.Subnet, c.Addr)
	}
	h, err := encap.NewHeader(t.vni, t.local, c.VTEP)
	if err != nil {
		return nil, fmt.Errorf("route: peer %s: %w", c.Subnet, err)
	}
	return &Peer{Subnet: c.Subnet, Addr: unmapPort(c.Addr), VTEP: slices.Clone(c.VTEP), Header: h, PartialCsum: c.PartialCsum}, nil
}

func build(peers map[netip.Prefix]*Peer) *snapshot {
	s := &snapshot{peers: peers, senders: make(map[netip.Addr][]netip.Prefix, len(peers))}
	seen := map[int]bool{}
	for pfx, p := range peers {
		s.senders[p.Addr.Addr()] = append(s.senders[p.Addr.Addr()], pfx)
		key := pfx.Bits()
		if pfx.Addr().Is6() {
			key = -key - 1
		}
		if seen[key] {
			continue
		}
		seen[key] = true
		if pfx.Addr().Is4() {
			s.lens4 = append(s.lens4, pfx.Bits())
		} else {
			s.lens6 = append(s.lens6, pfx.Bits())
		}
	}
	desc := func(a, b int) int { return cmp.Compare(b, a) }
	slices.SortFunc(s.lens4, desc)
	slices.SortFunc(s.lens6, desc)
	return s
}

// Lookup returns the peer whose subnet holds dst (longest prefix wins), or
// nil. The Peer must not be modified.
func (t *Table) Lookup(dst netip.Addr) *Peer {
	s := t.snap.Load()
	lens := s.lens4
	if dst.Is6() {
		lens = s.lens6
	}
	for _, bits := range lens {
		pfx, _ := dst.Prefix(bits) // bits is valid for dst's family by construction
		if p, ok := s.peers[pfx]; ok {
			return p
		}
	}
	return nil
}

// PartialCsum reports whether packets to dst may leave with their TCP or
// UDP checksum pending: dst's peer takes them so. For a TUN device's
// read path (tunnel.ChecksumLeaver), once per packet or super-packet.
func (t *Table) PartialCsum(dst netip.Addr) bool {
	p := t.Lookup(dst)
	return p != nil && p.PartialCsum
}

// SenderSubnets returns the subnets of the peer(s) at underlay address
// addr, nil for no peer: what the inner source of a datagram from addr
// may be. The slice must not be modified.
func (t *Table) SenderSubnets(addr netip.Addr) []netip.Prefix {
	return t.snap.Load().senders[addr.Unmap()]
}

// Peers returns a copy of every peer, sorted by subnet.
func (t *Table) Peers() []Peer {
	s := t.snap.Load()
	out := make([]Peer, 0, len(s.peers))
	for _, p := range s.peers {
		out = append(out, *p)
	}
	slices.SortFunc(out, func(a, b Peer) int {
		if c := a.Subnet.Addr().Compare(b.Subnet.Addr()); c != 0 {
			return c
		}
		return cmp.Compare(a.Subnet.Bits(), b.Subnet.Bits())
	})
	return out
}

// Len returns the number of peers.
func (t *Table) Len() int { return len(t.snap.Load().peers) }

func unmapPort(ap netip.AddrPort) netip.AddrPort {
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}
