package tunnel

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync"

	"golang.org/x/sys/unix"
)

// Flow entropy (RFC 7348 section 5): a VXLAN sender should pick the outer
// UDP source port from a hash of the inner flow, so that the fabric's
// ECMP and the receiving NIC's RSS spread an overlay's flows as they
// would spread the flows themselves. Linux's vxlan hashes into the host's
// ip_local_port_range. A UDP socket sends from the one port it is bound
// to, so the underlay sends from a pool of sockets instead, each bound to
// a port of the range, and picks one per flow: the datagrams of one flow
// always leave from one port (never reordered), and a flow's datagrams
// still go in batches, with GSO, as from one socket.

// PortRange is a range of UDP ports, both ends included. The zero value
// means the host's ephemeral range (ip_local_port_range), from which the
// kernel picks when a socket binds port 0.
type PortRange struct{ Lo, Hi uint16 }

// ParsePortRange reads "LO-HI" (e.g. "49152-65535").
func ParsePortRange(s string) (PortRange, error) {
	lo, hi, ok := strings.Cut(s, "-")
	a, err1 := strconv.ParseUint(strings.TrimSpace(lo), 10, 16)
	b, err2 := strconv.ParseUint(strings.TrimSpace(hi), 10, 16)
	if !ok || err1 != nil || err2 != nil || a == 0 || a > b {
		return PortRange{}, fmt.Errorf("port range %q: want LO-HI with 1 <= LO <= HI <= 65535, e.g. 49152-65535", s)
	}
	return PortRange{uint16(a), uint16(b)}, nil
}

func (r PortRange) String() string {
	if r == (PortRange{}) {
		return "ephemeral"
	}
	return fmt.Sprintf("%d-%d", r.Lo, r.Hi)
}

// DefaultSourcePool is how many source ports (sockets) an underlay socket
// sends from when flow entropy is on: enough for ECMP and RSS to spread
// flows over their paths and queues, few enough to cost little.
const DefaultSourcePool = 32

// dropAll is a socket filter that drops every datagram: the pool's
// sockets only send, and nothing sent to them should sit in a buffer.
var dropAll = []unix.SockFilter{{Code: unix.BPF_RET | unix.BPF_K, K: 0}}

// openSourcePool opens n sending sockets on u's address, each bound to a
// port of r, for WriteFlows.
func (u *UDP) openSourcePool(n int, r PortRange, o UDPOptions) (err error) {
	defer func() {
		if err != nil {
			u.closePool()
		}
	}()
	size := int(r.Hi) - int(r.Lo) + 1
	if r != (PortRange{}) {
		n = min(n, size)
	}
	// A dual-stack socket's pool sends from its source addresses too.
	po := UDPOptions{NoGSO: o.NoGSO, NoGRO: true, Source4: o.Source4, Source6: o.Source6}
	for i := range n {
		var s *UDP
		if r == (PortRange{}) {
			s, err = ListenUDPOptions(netip.AddrPortFrom(u.local.Addr(), 0), po)
		} else {
			// Spread over the range; a port someone holds gives way to
			// the next free one.
			start := int(r.Lo) + i*size/n
			for k := range size {
				p := uint16(int(r.Lo) + (start-int(r.Lo)+k)%size)
				// Taken (by someone else, or by a socket of this pool):
				// try the next.
				if s, err = ListenUDPOptions(netip.AddrPortFrom(u.local.Addr(), p), po); err == nil || !errors.Is(err, unix.EADDRINUSE) {
					break
				}
			}
		}
		if err != nil {
			return fmt.Errorf("source port pool of %s (%s): %w", u.local, r, err)
		}
		fprog := unix.SockFprog{Len: uint16(len(dropAll)), Filter: &dropAll[0]}
		var serr error
		if err := s.raw.Control(func(fd uintptr) {
			serr = unix.SetsockoptSockFprog(int(fd), unix.SOL_SOCKET, unix.SO_ATTACH_FILTER, &fprog)
		}); err != nil || serr != nil {
			s.Close()
			return fmt.Errorf("source port pool of %s: %w", u.local, errors.Join(err, os.NewSyscallError("setsockopt SO_ATTACH_FILTER", serr)))
		}
		u.pool = append(u.pool, s)
	}
	return nil
}

func (u *UDP) closePool() {
	if !u.sharedPool {
		for _, s := range u.pool {
			s.Close()
		}
	}
	u.pool = nil
}

// SourcePorts returns the ports the underlay sends from, one per socket
// of its pool, or just its own port without one.
func (u *UDP) SourcePorts() []uint16 {
	if len(u.pool) == 0 {
		return []uint16{u.local.Port()}
	}
	ports := make([]uint16, len(u.pool))
	for i, s := range u.pool {
		ports[i] = s.local.Port()
	}
	return ports
}

// flowGroups is WriteFlows' scratch: the datagrams of one pool socket,
// gathered from a batch, allocated once.
type flowGroups struct {
	mu   sync.Mutex
	bufs [MaxBatch][]byte
	to   [MaxBatch]netip.AddrPort
	done [MaxBatch]bool
}

// WriteFlows is Write, with the inner flow of each datagram: datagram i
// leaves from the source port the underlay picks for flows[i] (with a
// pool; without one, from the socket's own port, as Write). Datagrams of
// one flow go from one port in their order; a batch of one flow is one
// Write of one socket. len(flows) must be >= len(bufs).
func (u *UDP) WriteFlows(bufs [][]byte, to []netip.AddrPort, flows []uint32) (int, error) {
	if len(u.pool) == 0 {
		return u.Write(bufs, to)
	}
	if len(to) < len(bufs) || len(flows) < len(bufs) {
		return 0, fmt.Errorf("write udp %s: %w", u.local, errArgsLen)
	}
	n := uint32(len(u.pool))
	s0 := flows[0] % n
	one := true
	for _, f := range flows[1:len(bufs)] {
		if f%n != s0 {
			one = false
			break
		}
	}
	if one {
		return u.pool[s0].Write(bufs, to)
	}
	g := &u.gw
	g.mu.Lock()
	defer g.mu.Unlock()
	sent := 0
	var first error
	for off := 0; off < len(bufs); off += MaxBatch {
		end := min(off+MaxBatch, len(bufs))
		done := g.done[:end-off]
		clear(done)
		for i := range done {
			if done[i] {
				continue
			}
			s := flows[off+i] % n
			k := 0
			for j := i; j < len(done); j++ {
				if !done[j] && flows[off+j]%n == s {
					g.bufs[k], g.to[k] = bufs[off+j], to[off+j]
					done[j] = true
					k++
				}
			}
			w, err := u.pool[s].Write(g.bufs[:k], g.to[:k])
			sent += w
			if err != nil && first == nil {
				first = err
			}
		}
	}
	clear(g.bufs[:])
	return sent, first
}
