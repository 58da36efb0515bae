// Package lab builds small network topologies out of Linux network
// namespaces on one machine: an underlay switch, hosts ("nodes") on it,
// pods on the hosts, and, for comparison, hosts whose overlay is the
// kernel's vxlan programmed exactly as flannel's vxlan backend programs it.
// `vxrouter demo`, `vxrouter bench` and the end-to-end tests run on it.
// It needs root.
//
// # What it builds
//
// With the defaults (prefix "vxr", underlay 10.213.0.0/24, MTU 1500), two
// hosts and a pod on each:
//
//	 namespace vxr-ul
//	┌──────────────────────────────────────────────┐
//	│                bridge ul0                     │
//	│        v-node1 ─┘      └─ v-node2             │
//	└────────│─────────────────────│───────────────┘
//	         │ veth, MTU 1500      │
//	 vxr-node1                     vxr-node2
//	┌────────│─────────────┐      ┌──────│────────────────┐
//	│ eth0 10.213.0.1/24   │      │ eth0 10.213.0.2/24    │
//	│ flannel.1            │      │ flannel.1             │ (KernelVXLAN,
//	│   172.16.99.0/32     │      │   172.16.57.0/32      │  or a vxrouter
//	│ cni0 172.16.99.1/24  │      │ cni0 172.16.57.1/24   │  TUN instead)
//	│   └─ v-pa            │      │   └─ v-pb             │
//	└──────│───────────────┘      └──────│────────────────┘
//	       │ veth, MTU 1450              │
//	 vxr-node1-pa                  vxr-node2-pb
//	   eth0 172.16.99.2/24           eth0 172.16.57.2/24
//	   default via 172.16.99.1       default via 172.16.57.1
//
// A host has lo up, net.ipv4.ip_forward=1 (and IPv6 forwarding) and
// rp_filter 0, set before its interfaces exist so they all inherit it.
// A pod is what a CNI bridge plugin makes: one veth into the host's cni0,
// an address from the host's subnet (.2, .3, ... or one given), a default
// route via the bridge's subnet.1, MTU 1450 so a packet fits in one VXLAN
// datagram.
//
// Host.KernelVXLAN and KernelVXLAN.AddPeer make and program flannel.<VNI>
// as flannel does (checked against flannel's pkg/backend/vxlan): a vxlan
// device with local <underlay IP> dev eth0 dstport 8472 nolearning, MTU
// underlay-50, address <subnet>.0/32; then per peer a permanent neighbour
// entry <subnet>.0 -> VTEP MAC, a permanent FDB entry VTEP MAC -> public
// IP, and last the route <subnet> via <subnet>.0 dev flannel.1 onlink.
//
// With DirectRouting, flannel routes an on-link peer (Host.OnLink: `ip
// route get` answers one route without a gateway) with just
// KernelVXLAN.AddDirectPeer: <subnet> via <public IP>.
//
// Lab.AddSegment makes a host the router of a second underlay segment
// (bridge ul1 in its namespace); Segment.AddHost puts hosts on it, one
// hop from the main underlay, and Segment.Attach gives a host on the
// main underlay a second interface (eth1) on it: the layouts where an
// overlay must tell on-link peers from the others, or choose among a
// host's interfaces.
//
// # Dual-stack and IPv6
//
// Options.Underlay may be IPv6 (an IPv6-only underlay), and
// Options.Underlay6 beside an IPv4 Underlay makes every host of the main
// underlay dual-stack: eth0 gets its n-th address of both networks
// (Host.Underlay6; segments stay IPv4). A
// KernelVXLAN with an IPv6 Subnet is flannel's flannel-v6.<VNI>: local
// <Underlay6> dev eth0 dstport 8472 nolearning, its own MAC, asked for
// the underlay MTU - 50 as flannel asks (the kernel caps it at - 70),
// address <subnet>::/128; AddPeer programs its neighbour, FDB (dst the
// peer's PublicIPv6) and onlink route as flannel does. PodConfig.Subnet6
// gives a pod an IPv6 address beside its IPv4 one and a default IPv6
// route via cni0's <subnet6>::1. Hosts run without IPv6 duplicate address
// detection (net.ipv6.conf.default.accept_dad=0): a tentative link-local
// address sends no neighbour solicitation, and a new bridge's would hold
// up its first forwarded packets for a second.
//
// lab drives iproute2 (ip, bridge) and sysctl; nothing is hidden in
// netlink calls. Options.Log gets every command at debug level, and
// Lab.Commands returns them all, a script of the topology a learner can
// read or replay.
//
// # Names and cleanup
//
// Every namespace is named <prefix>-ul, <prefix>-<host> or
// <prefix>-<host>-<pod>; interfaces live inside them, so nothing is made in
// the machine's own namespace. Prefixes and host names have no "-", so
// one lab's names never match another's pattern. Tests use a random
// prefix per test ("vxrt" and four characters).
//
// Close kills every process in the lab's namespaces, whoever started
// it (found with `ip netns pids`), then deletes the namespaces, which takes
// every link, address, route and TUN in them along. Cleanup(prefix) does
// the same for a lab whose program died before Close; New calls it first,
// so rerunning after a crash just works. By hand:
//
//	for ns in $(ip netns list | awk '/^vxr-/ {print $1}'); do
//		ip netns pids $ns | xargs -r kill -9; ip netns del $ns
//	done
//
// # Running things inside
//
// Host.Command and Pod.Command return an exec.Cmd for
// `ip netns exec <ns> prog args...`; Run runs one and returns its output;
// Ping pings and parses the summary (an error wrapping ErrLoss if any echo
// went unanswered). Host.Do and Pod.Do run a Go function on an OS thread
// inside the namespace: sockets, listeners and TUN devices it opens stay
// in that namespace wherever they are used later, but goroutines it starts
// do not run there.
//
// A Lab, its Hosts and Pods are safe for concurrent use.
//
// # Poking at it by hand
//
// While a lab runs (a test paused, or `vxrouter demo`):
//
//	ip netns list                                   # the namespaces
//	ip netns exec vxr-node1 ip route                # a host's routes
//	ip -n vxr-node1 -d link show flannel.1          # the vxlan device
//	ip -n vxr-node1 neigh show dev flannel.1        # flannel's ARP entries
//	bridge -n vxr-node1 fdb show dev flannel.1      # flannel's FDB entries
//	ip netns exec vxr-node1-pa ping 172.16.57.2     # pod to pod
//	ip netns exec vxr-node1 tcpdump -i eth0 -n udp port 8472   # on the wire
//	ip netns exec vxr-node1 tcpdump -i cni0 -n icmp            # before encap
//
// tcpdump decodes port 8472 as OTV, whose header is VXLAN's, and shows
// the inner packet after it.
package lab
