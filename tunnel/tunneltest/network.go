package tunneltest

import (
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"sync/atomic"

	"vxrouter/tunnel"
)

// firstEphemeral is where port numbers for Listen with port 0 start, as
// in Linux's default ip_local_port_range.
const firstEphemeral = 32768

// Network is an in-memory UDP network joining the Underlays it hands out.
type Network struct {
	mu       sync.Mutex
	socks    map[netip.AddrPort]*Underlay
	nextPort uint16

	unrouted atomic.Uint64
	free     freeList // datagram buffers, recycled by Read
}

// NewNetwork returns an empty network.
func NewNetwork() *Network {
	return &Network{socks: make(map[netip.AddrPort]*Underlay), nextPort: firstEphemeral, free: newFreeList()}
}

// Listen returns a socket bound to addr whose Reads return up to batch
// datagrams (at least 1). Port 0 picks a free port; LocalAddr tells which.
// An unspecified address (0.0.0.0, ::) receives datagrams sent to any
// address of its family on its port that no specific listener has.
//
// Listen panics if addr is invalid or already taken: in a test that is a
// bug in the test, and the signature stays as simple as a fake's should.
func (n *Network) Listen(addr netip.AddrPort, batch int) *Underlay {
	addr = normalize(addr)
	if !addr.Addr().IsValid() {
		panic(fmt.Sprintf("tunneltest: Listen on invalid address %s", addr))
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if addr.Port() == 0 {
		for {
			p := n.nextPort
			n.nextPort++
			if n.nextPort == 0 {
				n.nextPort = firstEphemeral
			}
			if try := netip.AddrPortFrom(addr.Addr(), p); n.socks[try] == nil {
				addr = try
				break
			}
		}
	}
	if n.socks[addr] != nil {
		panic(fmt.Sprintf("tunneltest: Listen on %s: address already in use", addr))
	}
	u := &Underlay{
		net:    n,
		addr:   addr,
		batch:  max(batch, 1),
		in:     make(chan datagram, QueueLen),
		closed: make(chan struct{}),
	}
	n.socks[addr] = u
	return u
}

// Unrouted counts datagrams sent to an address nobody listened on.
func (n *Network) Unrouted() uint64 { return n.unrouted.Load() }

// lookup finds who receives a datagram to dst: its exact listener, else
// a listener on the unspecified address of dst's family and port.
func (n *Network) lookup(dst netip.AddrPort) *Underlay {
	n.mu.Lock()
	defer n.mu.Unlock()
	if u := n.socks[dst]; u != nil {
		return u
	}
	wild := netip.IPv4Unspecified()
	if dst.Addr().Is6() {
		wild = netip.IPv6Unspecified()
	}
	return n.socks[netip.AddrPortFrom(wild, dst.Port())]
}

func (n *Network) remove(u *Underlay) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.socks[u.addr] == u {
		delete(n.socks, u.addr)
	}
}

// normalize makes one address have one spelling: IPv4-mapped IPv6 is
// IPv4, and zones are dropped.
func normalize(a netip.AddrPort) netip.AddrPort {
	return netip.AddrPortFrom(a.Addr().Unmap().WithZone(""), a.Port())
}

type datagram struct {
	data []byte
	from netip.AddrPort
}

// Underlay is a fake UDP socket on a Network. It implements
// tunnel.Underlay.
type Underlay struct {
	net   *Network
	addr  netip.AddrPort
	batch int

	in      chan datagram
	dropped atomic.Uint64

	wmu       sync.Mutex // one Write at a time keeps a batch in order
	closed    chan struct{}
	closeOnce sync.Once
}

var _ tunnel.Underlay = (*Underlay)(nil)

var errNoAddr = errors.New("invalid address")

// Read returns the datagrams that are ready, at least one, up to
// min(len(bufs), batch), each copied to bufs[i] (truncated to the buffer
// if longer) with its sender's address in from[i].
func (u *Underlay) Read(bufs [][]byte, sizes []int, from []netip.AddrPort) (int, error) {
	n := min(len(bufs), u.batch)
	if n == 0 {
		return 0, nil
	}
	if len(sizes) < n || len(from) < n {
		return 0, fmt.Errorf("read udp %s: %d sizes and %d addresses for %d buffers", u.addr, len(sizes), len(from), n)
	}
	select {
	case <-u.closed:
		return 0, u.closedErr("read")
	default:
	}
	var d datagram
	select {
	case d = <-u.in:
	case <-u.closed:
		return 0, u.closedErr("read")
	}
	sizes[0], from[0] = copy(bufs[0], d.data), d.from
	u.net.free.put(d.data)
	got := 1
	for got < n {
		select {
		case d = <-u.in:
			sizes[got], from[got] = copy(bufs[got], d.data), d.from
			u.net.free.put(d.data)
			got++
		default:
			return got, nil
		}
	}
	return got, nil
}

// Write delivers a copy of each bufs[i] to the listener at to[i]. As with
// UDP, a datagram to an address nobody listens on, or to a listener whose
// QueueLen datagrams wait unread, counts as sent and is lost; an invalid
// address or port 0 is refused and the rest still go.
func (u *Underlay) Write(bufs [][]byte, to []netip.AddrPort) (int, error) {
	if len(to) < len(bufs) {
		return 0, fmt.Errorf("write udp %s: %d addresses for %d buffers", u.addr, len(to), len(bufs))
	}
	u.wmu.Lock()
	defer u.wmu.Unlock()
	sent := 0
	var first error
	for i, b := range bufs {
		select {
		case <-u.closed:
			return sent, u.closedErr("write")
		default:
		}
		dst := normalize(to[i])
		if !dst.Addr().IsValid() || dst.Port() == 0 {
			if first == nil {
				first = fmt.Errorf("write udp %s: send to %s: %w", u.addr, to[i], errNoAddr)
			}
			continue
		}
		sent++
		peer := u.net.lookup(dst)
		if peer == nil {
			u.net.unrouted.Add(1)
			continue
		}
		data := append(u.net.free.get(), b...)
		select {
		case peer.in <- datagram{data: data, from: u.addr}:
		default:
			u.net.free.put(data)
			peer.dropped.Add(1)
		}
	}
	return sent, first
}

// Dropped counts datagrams lost because QueueLen of them waited unread
// here, the fake's "receive buffer errors".
func (u *Underlay) Dropped() uint64 { return u.dropped.Load() }

func (u *Underlay) closedErr(op string) error {
	return fmt.Errorf("%s udp %s: %w", op, u.addr, tunnel.ErrClosed)
}

// BatchSize is the batch given to Listen.
func (u *Underlay) BatchSize() int { return u.batch }

// LocalAddr is the listening address, with the port picked for port 0.
func (u *Underlay) LocalAddr() netip.AddrPort { return u.addr }

// Close unblocks a pending Read, frees the address for another Listen and
// drops datagrams still queued. Later calls do nothing.
func (u *Underlay) Close() error {
	u.closeOnce.Do(func() {
		close(u.closed)
		u.net.remove(u)
	})
	return nil
}
