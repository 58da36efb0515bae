package lab

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strconv"
)

// Segment is a second underlay network behind a router: a bridge in the
// router host's namespace, holding the router's address on it. Hosts on
// it (Segment.AddHost) reach the main underlay through the router, one
// hop away, so they are not on-link with the hosts there; a host can
// also have a leg on it besides its eth0 (Segment.Attach).
//
//	main underlay ul0 (10.213.0.0/24)
//	  │            │                 │
//	node1        node2            router eth0 10.213.0.3
//	                                 │ bridge ul1 10.213.1.1/24
//	                                 │
//	                               node3 eth0 10.213.1.2, default via 10.213.1.1
//
// Every host on the main underlay, those added later too, gets the route
// "<segment> via <router's underlay address>"; the router forwards, as
// every lab host does.
type Segment struct {
	Bridge  string       // in the router's namespace: ul1, ul2...
	Prefix  netip.Prefix // the segment's network
	Router  *Host
	Gateway netip.Addr // the router's address on it: the first of Prefix

	lab  *Lab
	next int // the next host address on it (under lab.mu)
}

// AddSegment makes router, a host on the main underlay, the router of a
// new segment with network prefix (of the underlay's family, overlapping
// no other): a bridge ulN in its namespace with the first address of
// prefix, and a route to prefix via the router in every other host on the
// main underlay.
func (l *Lab) AddSegment(router *Host, prefix netip.Prefix) (*Segment, error) {
	prefix = prefix.Masked()
	if router == nil || router.lab != l || router.Segment != nil {
		return nil, errors.New("add segment: the router must be a host of this lab on the main underlay")
	}
	if !prefix.IsValid() || prefix.Addr().Is4() != l.opts.Underlay.Addr().Is4() {
		return nil, fmt.Errorf("add segment %s: want a prefix of the underlay's family", prefix)
	}
	gw, err := hostAddr(prefix, 1)
	if err != nil {
		return nil, fmt.Errorf("add segment %s: %w", prefix, err)
	}
	if _, err := hostAddr(prefix, 2); err != nil {
		return nil, fmt.Errorf("add segment %s: too small for a router and a host", prefix)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return nil, fmt.Errorf("add segment %s: %w", prefix, ErrClosed)
	}
	for _, other := range append([]netip.Prefix{l.opts.Underlay}, segmentPrefixes(l.segments)...) {
		if other.Overlaps(prefix) {
			return nil, fmt.Errorf("add segment %s: overlaps %s", prefix, other)
		}
	}
	s := &Segment{
		Bridge:  "ul" + strconv.Itoa(len(l.segments)+1), // ul0 is the main underlay's
		Prefix:  prefix,
		Router:  router,
		Gateway: gw,
		lab:     l,
		next:    2,
	}
	ns := router.NS
	cmds := [][]string{
		{"ip", "-n", ns, "link", "add", s.Bridge, "mtu", strconv.Itoa(l.opts.MTU), "type", "bridge"},
		{"ip", "-n", ns, "link", "set", s.Bridge, "up"},
		addrAdd(ns, gw, prefix.Bits(), s.Bridge),
	}
	for _, h := range l.hosts {
		if h.Segment == nil && h != router {
			cmds = append(cmds, s.routeFrom(h.NS))
		}
	}
	if err := l.r.all(cmds...); err != nil {
		// Undo the bridge and the routes that made it in; deleting one
		// that never did fails, as expected, so those errors are no news.
		_, derr := l.r.run(context.Background(), "ip", "-n", ns, "link", "del", s.Bridge)
		for _, h := range l.hosts {
			if h.Segment == nil && h != router {
				l.r.run(context.Background(), "ip", "-n", h.NS, "route", "del", prefix.String(), "via", router.Underlay.String())
			}
		}
		return nil, errors.Join(fmt.Errorf("add segment %s behind %s: %w", prefix, router.Name, err), derr)
	}
	l.segments = append(l.segments, s)
	return s, nil
}

// AddHost adds a host whose eth0 is on the segment: the segment's next
// address, a default route via the router. See Lab.AddHost.
func (s *Segment) AddHost(name string) (*Host, error) {
	return s.lab.addHost(name, s)
}

// Attach gives h one more interface, eth1 for its first, on the segment,
// with the segment's next address, and returns its name and address. A
// host on the main underlay then reaches the segment on-link through it
// instead of through the router. The router, and hosts whose eth0 is on
// the segment, cannot be attached; neither can a host twice to one
// router.
func (s *Segment) Attach(h *Host) (dev string, addr netip.Addr, err error) {
	l := s.lab
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return "", netip.Addr{}, fmt.Errorf("attach %s to %s: %w", h.Name, s.Prefix, ErrClosed)
	}
	if h.lab != l || h == s.Router || h.Segment != nil {
		return "", netip.Addr{}, fmt.Errorf("attach %s to %s: only a host on the main underlay, not its router, can have a leg on a segment", h.Name, s.Prefix)
	}
	for _, seg := range h.legs {
		if seg.Router == s.Router {
			return "", netip.Addr{}, fmt.Errorf("attach %s to %s: it has a leg behind router %s already", h.Name, s.Prefix, s.Router.Name)
		}
	}
	if addr, err = hostAddr(s.Prefix, s.next); err != nil {
		return "", netip.Addr{}, fmt.Errorf("attach %s to %s: segment full: %w", h.Name, s.Prefix, err)
	}
	dev = "eth" + strconv.Itoa(len(h.legs)+1)
	peer := "v-" + h.Name // in the router's namespace
	mtu := strconv.Itoa(l.opts.MTU)
	err = l.r.all(
		// The route via the router gives way to the connected one.
		[]string{"ip", "-n", h.NS, "route", "del", s.Prefix.String(), "via", s.Router.Underlay.String()},
		[]string{"ip", "-n", s.Router.NS, "link", "add", peer, "mtu", mtu, "type", "veth",
			"peer", "name", dev, "mtu", mtu, "netns", h.NS},
		[]string{"ip", "-n", s.Router.NS, "link", "set", peer, "master", s.Bridge, "up"},
		addrAdd(h.NS, addr, s.Prefix.Bits(), dev),
		[]string{"ip", "-n", h.NS, "link", "set", dev, "up"},
	)
	if err == nil {
		err = l.r.waitForwarding(s.Router.NS, peer)
	}
	if err != nil {
		// Deleting the router's end takes both; the host gets its
		// route via the router back.
		_, derr := l.r.run(context.Background(), "ip", "-n", s.Router.NS, "link", "del", peer)
		_, rerr := l.r.run(context.Background(), "ip", "-n", h.NS, "route", "replace", s.Prefix.String(), "via", s.Router.Underlay.String())
		return "", netip.Addr{}, errors.Join(fmt.Errorf("attach %s to %s: %w", h.Name, s.Prefix, err), derr, rerr)
	}
	s.next++
	h.mu.Lock()
	h.legs = append(h.legs, s)
	h.mu.Unlock()
	return dev, addr, nil
}

// routeFrom is the command that routes the segment via its router in
// namespace ns.
func (s *Segment) routeFrom(ns string) []string {
	return []string{"ip", "-n", ns, "route", "add", s.Prefix.String(), "via", s.Router.Underlay.String()}
}

func segmentPrefixes(segs []*Segment) []netip.Prefix {
	out := make([]netip.Prefix, len(segs))
	for i, s := range segs {
		out[i] = s.Prefix
	}
	return out
}
