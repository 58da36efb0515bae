// Package demo is `vxrouter demo`: it builds a small Kubernetes-shaped
// network on this machine out of network namespaces, runs real vxrouter
// nodes in it with their own etcd, sends real packets across it and says,
// step by step, what happens to them.
//
// It follows the three journeys every Kubernetes user meets, on the three
// networks of a cluster: the node network (the underlay, 10.213.0.0/24 by
// default), the pod network (the overlay, 172.16.0.0/16, a /24 leased per
// node) and the service network (ClusterIPs, 192.168.3.0/24):
//
//   - pod to pod: a ping from every pod to every other, across VXLAN;
//   - to the outside: a pod pings a host on the node network that knows no
//     pod route, and the node's masquerade rule (flannel's FLANNEL-POSTRTG,
//     written by `vxrouter run --ip-masq`) rewrites the source; captures
//     on both sides of the node show the address before and after;
//   - to a Service: a ClusterIP with two backend pods, made of the nat
//     rules kube-proxy writes (package kubeproxy, loaded with
//     iptables-restore into every node); a pod connects to it again and
//     again, the rule counters split between the backends, and captures
//     show one connection's destination before and after DNAT and the
//     overlay hop that follows.
//
// Each narrated step is one function of the run, in the order Run calls
// them; the CLI file only reads flags into Options.
//
// # What it leaves behind
//
// Nothing, unless Options.Keep: everything it makes lives in network
// namespaces named <prefix>-* (links, addresses, routes, TUN devices,
// iptables rules) and in Dir(prefix) (etcd's data, the nodes' state and
// logs), and Down removes both, with every process in those namespaces
// and the demo's etcd. Run calls Down first (a crashed or kept demo of the
// same prefix goes) and last, also when interrupted. No rule, link or
// route is ever added to the machine's own namespace.
//
// # Failing
//
// Run returns nil only if every step did what it shows: every ping
// answered, the masquerade counter moved, every connection to the Service
// answered by a backend whose DNAT counter counted it. A step that fails
// says so in the narration and the run goes on to show the rest; the
// error at the end lists what failed and the nodes' logs are printed.
package demo
