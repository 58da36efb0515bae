// Package tunnel does the I/O at both ends of the overlay's tunnel: the TUN
// device, where the overlay's bare IP packets go in and out of the kernel,
// and the UDP underlay socket, where their VXLAN-wrapped datagrams go to
// and come from the other nodes. It knows nothing of VXLAN, routes or
// leases; it moves bytes, in batches, without allocating per packet.
//
// # What it owns
//
//   - [Device]: a TUN device read and written in batches of IP packets.
//     [OpenTUN] opens one with the backend asked for, one Device per queue:
//     [BackendOffload] (IFF_VNET_HDR and TUNSETOFFLOAD: Read splits the
//     kernel's 64 KB TCP (and, with USO, UDP) super-packets into MTU-size
//     segments with their checksums, and reads on, without waiting, while
//     packets wait and buffers last; Write coalesces runs of TCP (and,
//     with USO, UDP) segments of a flow before they go to the kernel,
//     without copying them;
//     IFF_MULTI_QUEUE for more than one queue), falling back to
//     [BackendWater] with a warning where the kernel refuses offloads.
//     [OpenWater] opens a plain one with github.com/songgao/water
//     (IFF_TUN|IFF_NO_PI, one packet per syscall, one queue).
//   - [Underlay]: a UDP socket read and written in batches of datagrams.
//     [ListenUDP] opens one that uses recvmmsg and sendmmsg, up to
//     [MaxBatch] datagrams per syscall, with UDP GSO (UDP_SEGMENT: a run
//     of equal-size datagrams to one peer goes as one, gathered from the
//     callers' buffers) and UDP GRO (coalesced runs are split back into
//     datagrams on Read) where the kernel has them. [ListenUDPQueues]
//     opens one SO_REUSEPORT socket per queue, with a classic BPF
//     program that picks the socket by the VXLAN datagram's inner flow
//     (a peer sends every flow from one UDP port, so the kernel's own
//     4-tuple hash would put all of a peer's traffic on one queue). One
//     socket on [::] carries IPv4 and IPv6 peers both (a dual-stack
//     underlay); UDPOptions.Source4 and Source6 say which address it sends from in
//     each family, with an IP_PKTINFO or IPV6_PKTINFO control message.
//   - [ErrClosed]: how both report that they were closed.
//
// In-memory fakes of both, for tests of the code that drives them, live in
// package tunnel/tunneltest.
//
// # The batching contract
//
// A forwarding loop allocates, once, BatchSize() buffers, a sizes slice and
// (for the underlay) an address slice, and passes them to every Read:
//
//	bufs := make([][]byte, dev.BatchSize())
//	for i := range bufs {
//		bufs[i] = make([]byte, headroom+mtu)
//	}
//	sizes := make([]int, len(bufs))
//	for {
//		n, err := dev.Read(bufs, sizes, headroom)
//		// packet i is bufs[i][headroom : headroom+sizes[i]]
//	}
//
// Device.Read leaves offset bytes free in front of each packet, so the
// caller writes the 22-byte VXLAN and inner Ethernet header there and sends
// bufs[i][:headroom+sizes[i]] without copying the packet. Device.Write takes
// the same offset the other way: the decapsulated datagram's buffer goes in
// whole, and only bufs[i][offset:] reaches the kernel.
//
// On the offload backend one super-packet fills up to BatchSize()
// buffers; with fewer, the segments left over come first from the next
// Read. Write never changes the caller's buffers, on any backend.
//
// # The offload read path
//
// Each read(2) of the offload device gives one packet behind a virtio-net
// header. A plain one is copied to the caller; if the kernel left its
// checksum to the device (NEEDS_CSUM), Read finishes it as it copies. A
// GSO super-packet (TCP over IPv4 or IPv6, or UDP where the kernel has
// USO) is cut into gso_size segments as the kernel's own software
// segmentation would cut it: each with its IP header (lengths, the IPv4
// ID counting up, header checksum), its TCP header (sequence number; FIN
// and PSH on the last segment only, CWR on the first only) or UDP length,
// and a full checksum, summed while the payload is copied, in one pass.
// A packet whose virtio-net header and IP headers do not add up, or that
// is no TCP or UDP super-packet we can cut (an IPv6 routing header, an
// IPv4 fragment), is dropped and counted, and Read reads the next: one
// bad packet does not fail the call.
//
// # The offload write path
//
// The offload device's Write looks for runs of consecutive packets in the
// batch that Linux's own GRO would have merged: segments of one TCP flow
// in sequence, with the same IP fields, ack, window and options, equal in
// size but for a shorter last one, no flag but ACK (PSH ends a run), each
// with a valid checksum; or, where the kernel has USO, equal-size
// datagrams of one UDP flow. A run goes to the kernel as one packet of up
// to 64 KB with a virtio-net GSO header, in one writev: the virtio-net
// header and the merged IP and TCP or UDP header come from the device's
// scratch, the payloads straight from the caller's buffers. Its checksum
// field holds the pseudo-header sum (NEEDS_CSUM), so the kernel's TCP or
// UDP takes it as checked; that is why a segment joins a run only if its
// own checksums are right, or pending. Anything else (a lone segment, a
// SYN, ICMP) is written as it is behind an all-zero virtio-net header,
// for the kernel to check, but for two kinds of TCP or UDP packet that
// a kernel sender on the same host or hypervisor produces:
//
//   - A checksum still pending: the field holds the pseudo-header sum,
//     as Linux leaves it for a device to finish (CHECKSUM_PARTIAL), and
//     nothing on a path of veths or virtio-net finishes it; the kernel's
//     vxlan sends IPv4 with an outer UDP checksum of 0 and its receiver
//     trusts such a packet. Write hands it on marked NEEDS_CSUM, with
//     where its checksum starts and lies, as the kernel would have kept
//     it, instead of letting the receiving socket drop it as corrupt.
//     A computed checksum that happens to equal the pseudo-header sum is
//     right either way (see checksumPending).
//   - A TCP packet bigger than the MTU: a sender's TSO packet crosses the
//     kernel's vxlan and the veths whole, and arrives as one datagram of
//     up to 64 KB. Write asks the kernel to cut it into MTU-size
//     segments (GSO) on its way on.
//
// A TCP or UDP packet whose checksum is wrong, and not pending, is
// dropped and counted (BadChecksumCounter): the kernel would drop it too,
// but in the receiving pod, out of the node's sight. The water device,
// with no virtio-net header, finishes pending checksums and cuts big TCP
// packets itself. A coalesced packet the kernel refuses is written again
// a segment at a time.
//
// A Read blocks until at least one packet is there and returns as many as
// are ready, up to len(bufs) and BatchSize(); it does not wait to fill a
// batch, except that, with Yields set, a reader that finds nothing more
// yields its CPU a few times (sched_yield) and looks again before it ends
// the batch or parks: throughput under load for some latency. A Write tries every packet: one that
// the kernel refuses is skipped and the first error returned with the
// count of those that went, so one bad packet or unreachable peer does not
// cost the rest of its batch.
//
// # Shutdown and errors
//
// Close unblocks a pending Read; from then on Read and Write return an
// error e with errors.Is(e, ErrClosed). ErrClosed is net.ErrClosed, for
// devices as well as sockets (the water device's errors match os.ErrClosed
// too), so a loop needs one check to tell shutdown from a passing error.
// Every other error names the operation and the device or socket and wraps
// the cause, so errors.Is(err, unix.EMSGSIZE) and the like work.
//
// # Concurrency
//
// One goroutine may Read while another Writes: that is how the forwarder
// uses a Device and an Underlay, one loop in each direction. [UDP] keeps
// one set of preallocated message headers per direction, guarded by a
// mutex, so two concurrent Reads (or Writes) are safe but take turns. Other
// Device implementations need not support concurrent Reads at all. Close
// may be called at any time, from any goroutine, more than once.
//
// # Allocations
//
// UDP.Read calls recvmmsg directly and parses the source addresses (and
// the GRO segment size) out of preallocated buffers: no allocation. With
// GRO, Read copies each datagram once, from a scratch buffer into the
// caller's; ReadViews (what the forwarder uses) lends it instead: no
// copy. UDP.Write calls sendmmsg directly with preallocated messages,
// sockaddrs and UDP_SEGMENT control messages: no allocation, no copy. The
// water device reads and writes an *os.File; the offload device reads
// with read(2) into its own 64 KB buffer, which it splits into the
// caller's (one copy), and writes with writev from preallocated iovecs
// and headers: no allocation, and no copy on write. Errors allocate.
//
// # Network namespaces
//
// A TUN device and a socket belong to the network namespace of the thread
// that created them, for good. The water device also opens, next to the
// device, the socket it asks the MTU through, so MTU keeps working from
// any goroutine.
//
// # Debugging
//
// The TUN device, its flags and MTU (look for "tun type tun pi off"):
//
//	ip -d link show vxr0
//	ip -s link show vxr0          # rx/tx counters; "dropped" counts packets the kernel refused
//	cat /sys/class/net/vxr0/tun_flags   # 0x1001 = IFF_TUN|IFF_NO_PI (water);
//	                                    # 0x5101 adds IFF_VNET_HDR|IFF_MULTI_QUEUE (offload)
//	ethtool -k vxr0 | grep segmentation # TSO on: the kernel hands over super-packets
//	nstat -az TcpInCsumErrors UdpInCsumErrors  # corrupt packets written into the device
//
// The underlay socket, the process that owns it, and its buffers and drops
// (skmem rb = receive buffer, d = datagrams dropped because it was full):
//
//	ss -uanp 'sport = :8472'
//	ss -uanpm 'sport = :8472'
//	nstat -az UdpRcvbufErrors UdpSndbufErrors UdpInErrors
//
// Without CAP_NET_ADMIN the socket buffers are capped by
// net.core.rmem_max and wmem_max (sysctl); raise them if UdpRcvbufErrors
// grows. To watch the traffic itself, capture on either end:
//
//	tcpdump -ni vxr0
//	tcpdump -ni eth0 udp port 8472
package tunnel
