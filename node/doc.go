// Package node runs one vxrouter node: the only place where leases,
// the kernel's network configuration and the data plane meet.
//
// A node's life, in order:
//
//  0. open the admin endpoint (admin.go): one node per unix socket, so a
//     second node given a live node's socket is refused here, before it
//     touches etcd; /healthz answers from now on, /readyz says 503;
//  1. load its VTEP MAC from the state directory, or make one (locally
//     administered, unicast) and keep it there, so a restart keeps it;
//  2. read the overlay's config from etcd, and find the underlay for the
//     families it carries: the interface (chosen as flanneld's --iface,
//     --iface-regex and --iface-can-reach choose it, or the one the
//     default route uses), its first IPv4 address (the node's PublicIP)
//     and, in a dual-stack or IPv6-only overlay, its first global IPv6
//     address (PublicIPv6), and its MTU;
//  3. open the TUN device and the underlay sockets (bound to the public
//     address, or to [::] sending from each public address in a
//     dual-stack overlay), then acquire a subnet lease: the live lease
//     with this PublicIP (PublicIPv6 if IPv6-only), else the subnets from
//     subnet.env, else free ones, one per family, in one key (or, with
//     Config.Source, from another Source: package kube takes the
//     Kubernetes Node's podCIDRs);
//  4. configure the TUN device: MTU = underlay MTU (or the config's
//     Backend.MTU) - 50 (- 70 when IPv6 is carried), for each family the
//     address <subnet>.0/32 (or <subnet>::/128) and a route to the whole
//     overlay network, via netlink;
//  5. write subnet.env for CNI and Docker;
//  6. learn every peer's lease (list, then watch) into the route table,
//     each family's subnet to that family's public address and VTEP (and,
//     with Backend.DirectRouting, a kernel route for each on-link peer),
//     renew its own lease, and forward until told to stop.
//
// Once the first list of peers is in the route table the node is ready:
// /readyz answers 200 and, under systemd (Type=notify, $NOTIFY_SOCKET),
// it says READY=1, then a STATUS= line whenever peers join or leave, and
// STOPPING=1 when it shuts down (lifecycle.go).
//
// On SIGINT or SIGTERM the node closes its TUN device (the kernel removes
// the device and its routes with it) and its socket, and leaves its lease
// in etcd so that a restart gets the same subnet, and its direct routes in
// the kernel, as flannel does.
package node
