// Package node runs one vxrouter node: the only place where leases,
// the kernel's network configuration and the data plane meet.
//
// A node's life, in order:
//
//  1. find the underlay: the interface (chosen as flanneld's --iface,
//     --iface-regex and --iface-can-reach choose it, or the one the
//     default route uses), its first IPv4 address (the node's PublicIP)
//     and its MTU;
//  2. load its VTEP MAC from the state directory, or make one (locally
//     administered, unicast) and keep it there, so a restart keeps it;
//  3. read the overlay's config from etcd and acquire a subnet lease:
//     the live lease with this PublicIP, else the subnet from subnet.env,
//     else a free one;
//  4. create the TUN device, give it MTU = underlay MTU (or the config's
//     Backend.MTU) - 50, the address <subnet>.0/32 and a route to the
//     whole overlay network, via netlink;
//  5. write subnet.env for CNI and Docker;
//  6. learn every peer's lease (list, then watch) into the route table
//     (and, with Backend.DirectRouting, a kernel route for each on-link
//     peer), renew its own lease, and forward until told to stop.
//
// On SIGINT or SIGTERM the node closes its TUN device (the kernel removes
// the device and its routes with it) and its socket, and leaves its lease
// in etcd so that a restart gets the same subnet, and its direct routes in
// the kernel, as flannel does.
package node
