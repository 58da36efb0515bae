// Package node runs one vxrouter node: the only place where leases,
// the kernel's network configuration and the data plane meet.
//
// A node's life, in order:
//
//  0. open the admin endpoint (admin.go): one node per unix socket, so a
//     second node given a live node's socket is refused here, before it
//     touches etcd; /healthz answers from now on, /readyz says 503;
//  1. find the underlay: the interface (by name or address, or the one the
//     default route uses), its first IPv4 address (the node's PublicIP)
//     and its MTU;
//  2. load its VTEP MAC from the state directory, or make one (locally
//     administered, unicast) and keep it there, so a restart keeps it;
//  3. read the overlay's config from etcd and acquire a subnet lease:
//     the live lease with this PublicIP, else the subnet from subnet.env,
//     else a free one;
//  4. create the TUN device, give it MTU = underlay MTU - 50, the address
//     <subnet>.0/32 and a route to the whole overlay network, via netlink;
//  5. write subnet.env for CNI and Docker;
//  6. learn every peer's lease (list, then watch) into the route table,
//     renew its own lease, and forward until told to stop.
//
// Once the first list of peers is in the route table the node is ready:
// /readyz answers 200 and, under systemd (Type=notify, $NOTIFY_SOCKET),
// it says READY=1, then a STATUS= line whenever peers join or leave, and
// STOPPING=1 when it shuts down (lifecycle.go).
//
// On SIGINT or SIGTERM the node closes its TUN device (the kernel removes
// the device and its routes with it) and its socket, and leaves its lease
// in etcd so that a restart gets the same subnet, as flannel does.
package node
