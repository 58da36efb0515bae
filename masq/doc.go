// Package masq owns the node's IP masquerading (`vxrouter run --ip-masq`):
// flannel's rules in the kernel's nat table, written, kept and checked.
//
// # The rules
//
// For each address family the overlay has, with C the overlay's network
// (the config's Network) and P this node's subnet (its lease), in this
// order, in a chain of their own that POSTROUTING jumps to:
//
//  1. packets kube-proxy marked (mark 0x4000/0x4000) return: kube-proxy
//     masquerades them itself, and a second NAT breaks some kernels;
//  2. P to C returns, and 3. C to P returns: pod to pod is never
//     translated, in either direction;
//  4. from outside C to P returns: a client outside the overlay that a
//     route sends to this node's pods keeps its own address;
//  5. from C to anything but multicast is masqueraded: a pod reaching
//     the world shows up with the node's address, so hosts with no route
//     to pod addresses can answer;
//  6. from outside C to C is masqueraded: outside traffic this node
//     forwards into another node's subnet comes back through this node.
//
// MASQUERADE takes flannel's --random-fully where both the iptables
// binary and the kernel have it (unless Options.RandomFullyDisable).
//
// # Where they live
//
// By default in iptables (github.com/coreos/go-iptables, which runs the
// iptables and ip6tables binaries): chain FLANNEL-POSTRTG of the nat
// table, each rule and the jump from POSTROUTING with the comment
// "flanneld masq". With the config's EnableNFTables, in nftables
// (github.com/google/nftables, over netlink): chain postrtg (type nat,
// hook postrouting, priority srcnat) of table flannel-ipv4 (family ip)
// or flannel-ipv6 (family ip6). Both are flannel's own names and
// rules, so a host that moves from flanneld to vxrouter, or back, ends up
// with one set of rules, not two: each program takes the other's chain
// for its own. Writing the rules of one mode removes those of the other,
// as flanneld does at start.
//
// # Use
//
// New finds the tools and asks the kernel whether it takes every rule,
// leaving nothing behind: a node calls it before it takes a lease, so a
// host that cannot masquerade fails with nothing done. Write puts the
// rules in once the node's subnet is known: the chain's whole content is
// replaced, so a restart or a new subnet never adds a second copy, and a
// chain that already holds exactly these rules is left untouched. Run
// checks every period that the chain and the jump are still there and
// still exactly these, and rewrites what another program flushed,
// deleted or added. Nothing removes the rules when the node stops: pods
// keep reaching the world across a restart, as with flanneld.
//
// Every operation acts in the network namespace of the calling thread
// (the iptables binaries are started from it; netlink sockets are opened
// in it). A Masq is not safe for concurrent use.
//
// # Debugging
//
//	iptables -t nat -S FLANNEL-POSTRTG
//	iptables -t nat -S POSTROUTING
//	nft list chain ip flannel-ipv4 postrtg
//	conntrack -L -p tcp      # what was translated to what
package masq
