package route

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/bits"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"vxrouter/encap"
	"vxrouter/tunnel"
)

// Headroom is the space the forwarder leaves in front of every packet read
// from the TUN device, so the VXLAN header is written in place.
const Headroom = encap.HeaderLen

// maxDatagram bounds one datagram read from the underlay.
const maxDatagram = 65535

// Forwarder moves packets between a TUN device and the underlay: one
// pair of loops (TUN -> encap -> UDP, UDP -> decap -> TUN) per queue.
type Forwarder struct {
	Counters

	queues []Queue
	// moved counts, per queue, the bytes its two loops carried (both
	// directions): how the load spreads over the queues.
	moved  []atomic.Uint64
	table  *Table
	dec    encap.Decoder
	log    *slog.Logger
	tap    atomic.Pointer[tapHolder] // nil unless something is capturing
	// checkSources drops datagrams whose inner source is not in the
	// sending peer's subnet (CheckSources).
	checkSources bool
	// Answers to what cannot be carried (AnswerFrom, icmp.go): their
	// source addresses, none if invalid; the largest inner packet the
	// underlay carries, 0 for no limit; the rate limit.
	answer4, answer6 netip.Addr
	maxInner         int
	limiter          icmpLimiter
}

// AnswerFrom has the forwarder answer a packet it cannot carry with an
// ICMP (or ICMPv6) error written back into the TUN device, from src4 (or
// src6; an invalid one answers nothing of its family), at most
// icmpRate a second: "network unreachable" when no lease covers the
// destination, "fragmentation needed" / "packet too big" when the packet
// is longer than maxInner (the overlay MTU the underlay carries; 0: no
// limit) and may not be fragmented. Call it before Run.
func (f *Forwarder) AnswerFrom(src4, src6 netip.Addr, maxInner int) {
	f.answer4, f.answer6, f.maxInner = src4, src6, maxInner
}

// answer is a packet of a TUN batch that gets an ICMP error.
type answer struct {
	i    int // index in the batch
	kind int // icmpNoRoute, icmpTooBig
}

// CheckSources turns source checks on or off; call it before Run. With
// them on, a datagram from a known peer is delivered only if its inner
// source address is in that peer's subnet: a host that can send from a
// peer's underlay address (or spoof it, on an underlay that does not
// stop that) cannot inject packets that claim to come from another
// node's pods, or from outside the overlay. Neither flannel nor the
// kernel's vxlan checks this. Turn it off where a peer routes other
// networks' traffic into the overlay without masquerading it (a gateway
// node); such packets are then dropped and counted (decap-foreign-source).
func (f *Forwarder) CheckSources(on bool) { f.checkSources = on }

// Tap sees every datagram the forwarder sends to a peer and every one it
// accepts from a peer (the UDP payload: VXLAN header, inner Ethernet,
// inner packet), for packet capture. It is called from the forwarding
// loops, so it must be quick and must not keep the slices.
type Tap interface {
	Sent(frame []byte, to netip.AddrPort)
	Received(frame []byte, from netip.AddrPort)
}

type tapHolder struct{ Tap }

// SetTap starts showing datagrams to t, or stops with nil. Without a tap
// the loops pay one atomic load per batch.
func (f *Forwarder) SetTap(t Tap) {
	if t == nil {
		f.tap.Store(nil)
		return
	}
	f.tap.Store(&tapHolder{t})
}

// Queue is one queue of the TUN device and the underlay socket that goes
// with it. Each queue gets its own pair of loops, so a flow that the
// kernel keeps on one queue (a multi-queue TUN picks the queue by flow
// hash, SO_REUSEPORT picks the socket by 4-tuple) is never reordered.
type Queue struct {
	Dev      tunnel.Device
	Underlay tunnel.Underlay
}

// NewForwarder returns a forwarder between dev and ul that routes with
// table and accepts datagrams that dec accepts. Run starts it.
func NewForwarder(dev tunnel.Device, ul tunnel.Underlay, table *Table, dec encap.Decoder, log *slog.Logger) *Forwarder {
	return NewForwarderQueues([]Queue{{Dev: dev, Underlay: ul}}, table, dec, log)
}

// NewForwarderQueues returns a forwarder with one pair of loops per
// queue, all routing with table and sharing the counters. Devices that
// can (tunnel.ChecksumLeaver) leave the checksums of packets to peers
// that take them pending (Peer.PartialCsum) unfinished.
func NewForwarderQueues(queues []Queue, table *Table, dec encap.Decoder, log *slog.Logger) *Forwarder {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	for _, q := range queues {
		if l, ok := q.Dev.(tunnel.ChecksumLeaver); ok {
			l.LeaveChecksums(table.PartialCsum)
		}
	}
	return &Forwarder{queues: queues, moved: make([]atomic.Uint64, len(queues)), table: table, dec: dec, log: log}
}

// QueueBytes returns, for each queue, the bytes its loops have carried so
// far, both directions: one flow stays on one queue, so this tells how
// many queues (and CPUs) the traffic can use.
func (f *Forwarder) QueueBytes() []uint64 {
	out := make([]uint64, len(f.moved))
	for i := range f.moved {
		out[i] = f.moved[i].Load()
	}
	return out
}

// Run forwards in both directions until ctx ends or one side fails for
// good. When ctx ends it closes every device and underlay, which unblocks
// the loops; Run returns nil then. Run takes ownership of them.
func (f *Forwarder) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var closeOnce sync.Once
	closeAll := func() {
		closeOnce.Do(func() {
			for _, q := range f.queues {
				q.Dev.Close()
				q.Underlay.Close()
			}
		})
	}
	go func() {
		<-ctx.Done()
		closeAll()
	}()

	loops := 2 * len(f.queues)
	errc := make(chan error, loops)
	for i, q := range f.queues {
		go func() { errc <- f.tunToUnderlay(ctx, q, &f.moved[i]) }()
		go func() { errc <- f.underlayToTUN(ctx, q, &f.moved[i]) }()
	}
	err := <-errc
	cancel() // stop the other loops
	closeAll()
	for range loops - 1 {
		if err2 := <-errc; err == nil {
			err = err2
		}
	}
	return err
}

// closed reports whether err means the device or socket was closed, which
// is how the loops learn of shutdown.
func closed(err error) bool {
	return errors.Is(err, net.ErrClosed) || errors.Is(err, os.ErrClosed)
}

// errGone is returned when a device or socket is closed, or its device
// removed, while the forwarder should still be running: nothing can be
// forwarded any more, and the node must say so (exit non-zero, so a
// supervisor restarts it) instead of running on, deaf.
var errGone = errors.New("closed while forwarding")

// readFailed decides what a failed read means: shutdown (stop quietly),
// the device or socket gone under us (stop with an error), or a passing
// error (count, pause briefly so a broken device cannot spin a core, go
// on).
func (f *Forwarder) readFailed(ctx context.Context, side string, err error) (stop bool, _ error) {
	if ctx.Err() != nil {
		return true, nil
	}
	if closed(err) || errors.Is(err, unix.EBADFD) || errors.Is(err, unix.ENXIO) || errors.Is(err, unix.ENODEV) {
		return true, fmt.Errorf("%s: %w: %w", side, errGone, err)
	}
	if n := f.ReadErrors.Add(1); n&(n-1) == 0 { // log the 1st, 2nd, 4th, 8th... error
		f.log.Warn("read failed", "side", side, "err", err, "count", n)
	}
	select {
	case <-ctx.Done():
		return true, nil
	case <-time.After(10 * time.Millisecond):
		return false, nil
	}
}

// tunToUnderlay reads IP packets from the TUN device, encapsulates each for
// the peer owning its destination and sends them to the peers in batches.
func (f *Forwarder) tunToUnderlay(ctx context.Context, q Queue, moved *atomic.Uint64) error {
	batch := max(q.Dev.BatchSize(), 1)
	mtu, err := q.Dev.MTU()
	if err != nil || mtu <= 0 {
		mtu = maxDatagram - Headroom
	}
	bufs := make([][]byte, batch)
	for i := range bufs {
		bufs[i] = make([]byte, Headroom+mtu)
	}
	sizes := make([]int, batch)
	out := make([][]byte, 0, batch)
	to := make([]netip.AddrPort, 0, batch)
	answers := make([]answer, 0, batch)
	// With a FlowWriter, each datagram leaves from its inner flow's
	// source port; flows holds their hashes.
	fw, _ := q.Underlay.(tunnel.FlowWriter)
	var flows []uint32
	if fw != nil {
		flows = make([]uint32, 0, batch)
	}
	icmpBuf, icmpOut := make([]byte, maxICMP), make([][]byte, 1)
	drops, _ := q.Dev.(tunnel.DropCounter)
	var dropped uint64 // what drops said last time

	for {
		n, err := q.Dev.Read(bufs, sizes, Headroom)
		if drops != nil {
			if d := drops.Dropped(); d != dropped {
				f.tunDropped(q.Dev.Name(), d-dropped)
				dropped = d
			}
		}
		if err != nil && n == 0 {
			if stop, err := f.readFailed(ctx, "tun", err); stop {
				return err
			}
			continue
		}
		out, to, flows, answers = f.encapBatch(bufs[:n], sizes[:n], out[:0], to[:0], flows[:0], answers[:0])
		if len(answers) > 0 {
			if err := f.sendAnswers(ctx, q.Dev, bufs, sizes, answers, icmpBuf, icmpOut); err != nil {
				return err
			}
		}
		if len(out) == 0 {
			continue
		}
		if t := f.tap.Load(); t != nil {
			for i := range out {
				t.Sent(out[i], to[i])
			}
		}
		var sent int
		if fw != nil {
			sent, err = fw.WriteFlows(out, to, flows)
		} else {
			sent, err = q.Underlay.Write(out, to)
		}
		var bytes uint64
		for _, b := range out[:sent] {
			bytes += uint64(len(b))
		}
		f.TxPackets.Add(uint64(sent))
		f.TxBytes.Add(bytes)
		moved.Add(bytes)
		if err != nil {
			if stop, err := f.writeFailed(ctx, "underlay", err, len(out)-sent, &f.SendErrors); stop {
				return err
			}
		}
	}
}

// writeFailed decides what a failed write means: shutdown (stop quietly),
// the device or socket closed under us (stop with an error), or refused
// packets (count them in c, go on).
func (f *Forwarder) writeFailed(ctx context.Context, side string, err error, refused int, c *atomic.Uint64) (stop bool, _ error) {
	if !closed(err) {
		c.Add(uint64(refused))
		return false, nil
	}
	if ctx.Err() != nil {
		return true, nil
	}
	return true, fmt.Errorf("%s: %w: %w", side, errGone, err)
}

// tunDropped counts packets the TUN device dropped on read, and says so
// in the log the 1st, 2nd, 4th, 8th... time: a drop there is no passing
// error (see tunnel.DropCounter) and must not go unseen.
func (f *Forwarder) tunDropped(dev string, n uint64) {
	total := f.TUNDropped.Add(n)
	if prev := total - n; bits.Len64(prev) != bits.Len64(total) || prev == 0 {
		f.log.Warn("tun device dropped packets on read (malformed, or larger than the buffers sized from the MTU at start: restart the node after raising the MTU)", "dev", dev, "count", total)
	}
}

// sendAnswers writes the ICMP errors of a batch's packets into dev, as the
// rate limit allows, and counts them. Only a device gone for good stops
// the loop.
func (f *Forwarder) sendAnswers(ctx context.Context, dev tunnel.Device, bufs [][]byte, sizes []int, answers []answer, buf []byte, out [][]byte) error {
	now := time.Now()
	for _, a := range answers {
		pkt := bufs[a.i][Headroom : Headroom+sizes[a.i]]
		src := f.answer4
		if pkt[0]>>4 == 6 {
			src = f.answer6
		}
		if !src.IsValid() {
			continue
		}
		if !f.limiter.allow(now) {
			f.ICMPLimited.Add(1)
			continue
		}
		out[0] = buildICMP(buf, a.kind, src, pkt, f.maxInner)
		if _, err := dev.Write(out, 0); err != nil {
			if stop, err := f.writeFailed(ctx, "tun", err, 1, &f.WriteErrors); stop {
				return err
			}
			continue
		}
		f.ICMPSent.Add(1)
	}
	return nil
}

// encapBatch encapsulates each packet in place and appends the frames and
// their destinations to out and to, their inner flows' hashes to flows
// unless it is nil, and the packets that get an ICMP error instead to
// answers.
//
// A batch is mostly the segments of one super-packet, all to one
// destination, so the last lookup is kept for the batch: a route lookup
// hashes one prefix per mask length, which cost more than the rest of the
// encapsulation. Within a batch this is as if every lookup were made at
// the first, which a table changing under the loop allows anyway.
func (f *Forwarder) encapBatch(bufs [][]byte, sizes []int, out [][]byte, to []netip.AddrPort, flows []uint32, answers []answer) ([][]byte, []netip.AddrPort, []uint32, []answer) {
	var lastDst netip.Addr
	var last *Peer
	var d drops
	tooBig := 0
	defer func() {
		d.flush(&f.Encap, &f.NoRoute)
		if tooBig > 0 {
			f.TooBig.Add(uint64(tooBig))
		}
	}()
	answering := f.answer4.IsValid() || f.answer6.IsValid()
	var lastFlow [2]uint64 // flowKey4 of the last packet hashed, if haveFlow
	var haveFlow bool
	var lastHash uint32
	for i, buf := range bufs {
		pkt := buf[Headroom : Headroom+sizes[i]]
		dst, r := destination(pkt)
		if r != encap.OK {
			d.reasons[r]++
			continue
		}
		p := last
		if dst != lastDst {
			p = f.table.Lookup(dst)
			lastDst, last = dst, p
		}
		if p == nil {
			d.other++
			if answering && answerable(pkt) {
				answers = append(answers, answer{i, icmpNoRoute})
			}
			continue
		}
		// Too long for the tunnel, and not to be fragmented (IPv4 with
		// DF; IPv6 is never fragmented on the way): the sender must hear
		// the MTU that fits. Without DF, the kernel fragments the outer
		// datagram. The length is the IP header's: a TUN MTU raised
		// under a running node gives packets longer than the buffers,
		// which come truncated.
		if f.maxInner > 0 && ipLength(pkt) > f.maxInner && (pkt[0]>>4 == 6 || pkt[6]&0x40 != 0) {
			tooBig++
			if answering && answerable(pkt) {
				answers = append(answers, answer{i, icmpTooBig})
			}
			continue
		}
		frame, r := p.Header.Encap(buf, Headroom, sizes[i])
		if r != encap.OK {
			d.reasons[r]++
			continue
		}
		out = append(out, frame)
		to = append(to, p.Addr)
		if flows != nil {
			// A batch is mostly one flow's segments: hash a flow once.
			if k, ok := flowKey4(pkt); !ok || !haveFlow || k != lastFlow {
				lastHash = PacketFlow(pkt)
				lastFlow, haveFlow = k, ok
			}
			flows = append(flows, lastHash)
		}
	}
	return out, to, flows, answers
}

// drops tallies one batch's dropped packets, by encap reason and one other
// cause (no route, unknown sender), and adds them to the shared counters
// once per batch: a flood of bad packets then costs no atomic add per
// packet on counters that every queue's loops share.
type drops struct {
	reasons [encap.NumReasons]uint32
	other   uint32
}

func (d *drops) flush(reasons *[encap.NumReasons]atomic.Uint64, other *atomic.Uint64) {
	for r, n := range d.reasons {
		if n > 0 {
			reasons[r].Add(uint64(n))
		}
	}
	if d.other > 0 {
		other.Add(uint64(d.other))
	}
}

// ipLength is the length an IP packet's header says it has; destination
// has checked that the fixed header is there.
func ipLength(pkt []byte) int {
	if pkt[0]>>4 == 4 {
		return int(pkt[2])<<8 | int(pkt[3])
	}
	return 40 + (int(pkt[4])<<8 | int(pkt[5]))
}

// destination reads an IP packet's destination address.
func destination(pkt []byte) (netip.Addr, encap.Reason) {
	if len(pkt) == 0 {
		return netip.Addr{}, encap.Short
	}
	switch pkt[0] >> 4 {
	case 4:
		if len(pkt) < 20 {
			return netip.Addr{}, encap.BadInner
		}
		return netip.AddrFrom4([4]byte(pkt[16:20])), encap.OK
	case 6:
		if len(pkt) < 40 {
			return netip.Addr{}, encap.BadInner
		}
		return netip.AddrFrom16([16]byte(pkt[24:40])), encap.OK
	}
	return netip.Addr{}, encap.UnknownEtherType
}

// underlayToTUN reads datagrams from the underlay, checks and decapsulates
// each, and writes the inner packets to the TUN device in batches.
//
// An underlay that lends its datagrams (tunnel.ViewReader, the UDP socket)
// is read without a copy: the inner packets go to the TUN device straight
// from the socket's buffers.
func (f *Forwarder) underlayToTUN(ctx context.Context, q Queue, moved *atomic.Uint64) error {
	batch := max(q.Underlay.BatchSize(), 1)
	bufs := make([][]byte, batch)
	sizes := make([]int, batch)
	from := make([]netip.AddrPort, batch)
	out := make([][]byte, 0, batch)
	bad, _ := q.Dev.(tunnel.BadChecksumCounter)
	var badSeen uint64 // what bad said last time
	read := func() (int, error) { return q.Underlay.Read(bufs, sizes, from) }
	if vr, ok := q.Underlay.(tunnel.ViewReader); ok {
		read = func() (int, error) {
			n, err := vr.ReadViews(bufs, from)
			for i := range n {
				sizes[i] = len(bufs[i])
			}
			return n, err
		}
	} else {
		for i := range bufs {
			bufs[i] = make([]byte, maxDatagram)
		}
	}

	for {
		n, err := read()
		if err != nil && n == 0 {
			if stop, err := f.readFailed(ctx, "underlay", err); stop {
				return err
			}
			continue
		}
		out = f.decapBatch(bufs[:n], sizes[:n], from[:n], out[:0])
		if len(out) == 0 {
			continue
		}
		var bytes uint64
		for _, b := range out {
			bytes += uint64(len(b) - encap.HeaderLen)
		}
		taken, err := q.Dev.Write(out, encap.HeaderLen)
		written := taken
		if bad != nil {
			// Taken, but dropped for a wrong checksum: not written.
			if b := bad.BadChecksums(); b != badSeen {
				f.BadChecksum.Add(b - badSeen)
				written -= int(min(b-badSeen, uint64(taken)))
				badSeen = b
			}
		}
		if written < len(out) {
			// Write says how many, not which, failed or were dropped;
			// count their share.
			bytes = bytes * uint64(written) / uint64(len(out))
		}
		f.RxBytes.Add(bytes)
		f.RxPackets.Add(uint64(written))
		moved.Add(bytes)
		if err != nil {
			if stop, err := f.writeFailed(ctx, "tun", err, len(out)-taken, &f.WriteErrors); stop {
				return err
			}
		}
	}
}

// decapBatch validates each datagram and appends, for each good one, the
// buffer up to the end of its inner packet: the inner packet starts at
// encap.HeaderLen, where the TUN write begins.
//
// The sender check is kept for the batch, as encapBatch keeps its route:
// a batch mostly comes from one peer.
func (f *Forwarder) decapBatch(bufs [][]byte, sizes []int, from []netip.AddrPort, out [][]byte) [][]byte {
	tap := f.tap.Load()
	var lastFrom netip.Addr
	var subnets []netip.Prefix // of lastFrom; none: not a peer
	var d drops
	foreign := 0
	defer func() {
		d.flush(&f.Decap, &f.UnknownSender)
		if foreign > 0 {
			f.ForeignSource.Add(uint64(foreign))
		}
	}()
	for i, buf := range bufs {
		if a := from[i].Addr(); a != lastFrom || !lastFrom.IsValid() {
			lastFrom, subnets = a, f.table.SenderSubnets(a)
		}
		if len(subnets) == 0 {
			d.other++
			continue
		}
		inner, r := f.dec.Decap(buf[:sizes[i]])
		if r != encap.OK {
			d.reasons[r]++
			continue
		}
		if f.checkSources && !fromSubnets(inner, subnets) {
			foreign++
			continue
		}
		if tap != nil {
			tap.Received(buf[:sizes[i]], from[i])
		}
		out = append(out, buf[:encap.HeaderLen+len(inner)])
	}
	return out
}

// fromSubnets reports whether the IP packet pkt (whole, as Decap returns
// it) has its source address in one of subnets.
func fromSubnets(pkt []byte, subnets []netip.Prefix) bool {
	var src netip.Addr
	if pkt[0]>>4 == 4 {
		src = netip.AddrFrom4([4]byte(pkt[12:16]))
	} else {
		src = netip.AddrFrom16([16]byte(pkt[8:24]))
	}
	for _, s := range subnets {
		if s.Contains(src) {
			return true
		}
	}
	return false
}
