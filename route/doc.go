// Package route owns the overlay's routing table and the forwarder that
// moves packets between the TUN device and the underlay.
//
// # The table
//
// A Table maps overlay subnets (netip.Prefix) to the Peer that owns them: the
// peer's underlay address and VTEP MAC, and the 22-byte VXLAN + inner
// Ethernet header built for it once, when its lease appears. For the kernel's
// vxlan driver the same facts live in three places (a route per subnet, a
// permanent neighbour entry and an FDB entry); here the table is all three.
//
// Readers (the forwarder's loops) load an immutable snapshot through an
// atomic pointer: a lookup takes no lock and allocates nothing. Writers
// (lease events) are serialised by a mutex and publish a new snapshot.
// Lookups are longest-prefix match over the prefix lengths present, one map
// probe per length; a flannel overlay has one length, so one probe.
//
// # The forwarder
//
// A Forwarder runs two loops, each working in batches:
//
//	TUN -> lookup -> encap (in headroom) -> UDP     (tunToUnderlay)
//	UDP -> known sender? -> decap -> TUN            (underlayToTUN)
//
// Every packet that is not forwarded is counted by reason in Counters; the
// loops never log per packet. Run stops when its context ends (it closes the
// device and the underlay to unblock the reads) or when either side fails
// for good.
//
// # Debugging
//
// Counters.Snapshot gives every counter by name; `vxrouter run` logs them on
// shutdown. A rising "no-route" count means a destination no lease covers;
// "unknown-sender" means a datagram from an address that is not a peer
// (often a node whose lease this one has not seen yet).
package route
