// Package encap is vxrouter's VXLAN codec (RFC 7348): it puts the 22 bytes
// that turn an overlay IP packet into the payload of a VXLAN datagram, and
// checks and strips them again on the way in. It owns the wire format of
// that payload and nothing else: it knows no sockets, no TUN devices and no
// routing table.
//
// # Wire layout
//
// One datagram on an IPv4 underlay; the kernel adds the outer three headers,
// this package writes and reads the UDP payload:
//
//	outer Ethernet 14 | outer IPv4 20 | UDP 8 | VXLAN 8 | inner Ethernet 14 | inner IP packet
//	                                          |<-------- HeaderLen 22 ------->|
//	                                          |<------------ UDP payload (Encap's result) ------------>|
//
// The 22 bytes, offset by offset:
//
//	 0      flags: 0x08, the I flag ("the VNI is valid"); all other bits 0
//	 1..3   reserved, 0
//	 4..6   VNI, 24 bits big endian (flannel's default is 1)
//	 7      reserved, 0
//	 8..13  inner destination MAC: the receiving node's VTEP MAC
//	14..19  inner source MAC: the sending node's VTEP MAC
//	20..21  inner ethertype: 0x0800 (IPv4) or 0x86DD (IPv6)
//
// Counted against the underlay's MTU (outer IP, UDP and these 22 bytes; the
// outer Ethernet header is not part of an MTU) that is 50 bytes on an IPv4
// underlay (OverheadIPv4) and 70 on IPv6 (OverheadIPv6), so the TUN MTU is
// the underlay MTU minus that: 1450 on a 1500-byte network.
//
// # Use
//
// On the way out, build a [Header] once per peer when its lease appears
// (NewHeader serializes it with gopacket), then for each packet read from
// TUN into a buffer with HeaderLen bytes of headroom call [Header.Encap]: it
// writes the template in front of the packet and returns the datagram's
// payload, without copying the packet.
//
// On the way in, a [Decoder] knows the local VNI and VTEP MAC;
// [Decoder.Decap] validates a received UDP payload and returns the inner IP
// packet as a subslice of it, or a [Reason] for dropping it. Neither call
// allocates; a Reason is meant to index a drop counter (NumReasons long).
//
// # Concurrency
//
// Header and Decoder are small values that are never changed after they are
// made; Encap and Decap only read them, so one value may be used from any
// number of goroutines at once. The buffers passed in belong to the caller:
// Encap writes into buf, and the slices returned alias the caller's buffer.
//
// # Debugging
//
// The bytes are those of the Linux kernel's vxlan driver as flannel sets it
// up; testdata/kernel.pcap is a capture of it (see testdata/README.md) and
// the tests compare Encap and Decap with it byte for byte. Open a capture of
// vxrouter's traffic with `tshark -d udp.port==8472,vxlan` to see the
// layers decoded.
package encap
