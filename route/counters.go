package route

import (
	"sync/atomic"

	"vxrouter/encap"
)

// Counters count what the forwarder did with every packet. All fields are
// updated atomically, once per batch where possible.
type Counters struct {
	TxPackets atomic.Uint64 // VXLAN datagrams sent to peers
	TxBytes   atomic.Uint64 // their UDP payload bytes
	RxPackets atomic.Uint64 // inner packets written to the TUN device
	RxBytes   atomic.Uint64 // their bytes

	NoRoute       atomic.Uint64 // TUN packet to an address no lease covers
	UnknownSender atomic.Uint64 // datagram from an address that is no peer
	SendErrors    atomic.Uint64 // datagrams the underlay refused
	WriteErrors   atomic.Uint64 // packets the TUN device refused
	ReadErrors    atomic.Uint64 // failed reads on either side (not counting shutdown)
	TUNDropped    atomic.Uint64 // packets the TUN device dropped on read (tunnel.DropCounter)
	// BadChecksum counts inner TCP and UDP packets dropped on the way to
	// the TUN device because their checksum is wrong, where the kernel
	// would have dropped them (tunnel.BadChecksumCounter).
	BadChecksum atomic.Uint64
	// TooBig counts TUN packets too long for the tunnel that may not be
	// fragmented (see Forwarder.AnswerFrom).
	TooBig atomic.Uint64
	// ICMPSent and ICMPLimited count the ICMP errors written back into
	// the TUN device for packets that could not be carried, and those the
	// rate limit held back.
	ICMPSent, ICMPLimited atomic.Uint64
	// ForeignSource counts datagrams from a known peer whose inner
	// source address is not in that peer's subnet (see CheckSources).
	ForeignSource atomic.Uint64

	Encap [encap.NumReasons]atomic.Uint64 // TUN packets dropped, by reason
	Decap [encap.NumReasons]atomic.Uint64 // datagrams dropped, by reason
}

// Snapshot returns every nonzero counter by name, plus the four traffic
// counters always. Drops are named "encap-<reason>" and "decap-<reason>".
func (c *Counters) Snapshot() map[string]uint64 {
	m := map[string]uint64{
		"tx-packets": c.TxPackets.Load(),
		"tx-bytes":   c.TxBytes.Load(),
		"rx-packets": c.RxPackets.Load(),
		"rx-bytes":   c.RxBytes.Load(),
	}
	put := func(name string, v uint64) {
		if v != 0 {
			m[name] = v
		}
	}
	put("no-route", c.NoRoute.Load())
	put("unknown-sender", c.UnknownSender.Load())
	put("send-errors", c.SendErrors.Load())
	put("write-errors", c.WriteErrors.Load())
	put("read-errors", c.ReadErrors.Load())
	put("tun-dropped", c.TUNDropped.Load())
	put("decap-bad-checksum", c.BadChecksum.Load())
	put("decap-foreign-source", c.ForeignSource.Load())
	put("too-big", c.TooBig.Load())
	put("icmp-sent", c.ICMPSent.Load())
	put("icmp-limited", c.ICMPLimited.Load())
	for r := encap.Reason(1); r < encap.NumReasons; r++ {
		put("encap-"+r.String(), c.Encap[r].Load())
		put("decap-"+r.String(), c.Decap[r].Load())
	}
	return m
}

// Drops returns the total of every drop counter.
func (c *Counters) Drops() uint64 {
	n := c.NoRoute.Load() + c.UnknownSender.Load() + c.SendErrors.Load() + c.WriteErrors.Load() + c.TUNDropped.Load() + c.BadChecksum.Load() + c.ForeignSource.Load() + c.TooBig.Load()
	for r := range c.Encap {
		n += c.Encap[r].Load() + c.Decap[r].Load()
	}
	return n
}
