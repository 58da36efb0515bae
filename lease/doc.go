// Package lease is vxrouter's registry of who owns which subnet of the
// overlay. It keeps flannel's etcd layout, so vxrouter nodes and flannel
// nodes (vxlan backend) can share one overlay, and it owns:
//
//   - the network config (Config, ParseConfig) at <prefix>/config;
//   - subnet leases (Acquire, KeepAlive) and their values (Attrs);
//   - the view of every peer (Leases, Watch, WatchBatches), which the
//     router turns into its table;
//   - operators' changes (PutConfigJSON, Reserve, Release);
//   - subnet.env for CNI and Docker (WriteSubnetEnv, ReadSubnetEnv);
//   - the etcd client's config, TLS and auth in one place (ClientConfig,
//     Dial), and a one-member embedded etcd for demos and tests
//     (StartEmbedded).
//
// It knows nothing of packets or devices.
//
// # etcd layout
//
// The prefix defaults to /coreos.com/network.
//
//	<prefix>/config
//	    {"Network":"172.16.0.0/16","SubnetLen":24,"SubnetMin":"172.16.1.0",
//	     "SubnetMax":"172.16.255.0","Backend":{"Type":"vxlan","VNI":1,"Port":8472}}
//	<prefix>/subnets/172.16.57.0-24
//	    {"PublicIP":"10.0.0.2","PublicIPv6":null,"BackendType":"vxlan",
//	     "BackendData":{"VNI":1,"VtepMAC":"d6:51:2e:80:5c:69"}}
//
// A subnet key is attached to an etcd lease (TTL DefaultTTL, 24h, renewed
// every third of it). A key without an etcd lease is a reservation, put
// there by an operator: nobody takes it but the node with its PublicIP.
//
// Dual-stack ("EnableIPv6":true beside IPv4) and IPv6-only
// ("EnableIPv4":false) overlays are flannel's too:
//
//	<prefix>/config
//	    {"Network":"172.16.0.0/16","EnableIPv6":true,"IPv6Network":"fd00:16::/48",...}
//	<prefix>/subnets/172.16.57.0-24&fd00:16:0:39::-64
//	    {"PublicIP":"10.0.0.2","PublicIPv6":"fd77::2","BackendType":"vxlan",
//	     "BackendData":{"VNI":1,"VtepMAC":"d6:51:2e:80:5c:69"},
//	     "BackendV6Data":{"VNI":1,"VtepMAC":"d6:51:2e:80:5c:69"}}
//	<prefix>/subnets/fd00:16:0:39::-64           (IPv6-only: vxrouter's own key shape)
//	    {"PublicIP":"0.0.0.0","PublicIPv6":"fd77::2","BackendType":"vxlan",
//	     "BackendV6Data":{"VNI":1,"VtepMAC":"d6:51:2e:80:5c:69"}}
//
// flannel's etcd mode always writes an IPv4 part in a key, so an
// IPv6-only key has no flannel shape; flannel's key parser passes over
// it. A dual-stack key written otherwise than KeyName writes it (an IPv6
// part in a long form) is read and never written to.
//
// Config's defaults are flannel's: SubnetLen 24 (Network's length + 2 for
// networks smaller than /22), SubnetMin the second subnet, SubnetMax the
// last; IPv6SubnetLen 64 (IPv6Network's length + 2 for networks smaller
// than /62), IPv6SubnetMin and IPv6SubnetMax likewise; VNI 1, Port 8472.
// Only the vxlan backend is accepted.
//
// # Taking a subnet
//
// Acquire prefers, in order, a key that already holds the node's PublicIP
// (PublicIPv6 for an IPv6-only node; a restart keeps its subnet), the
// subnet in the previous subnet.env, and a random free subnet; in a
// dual-stack overlay one of each family, picked each on its own, in one
// key. A key is created in a transaction that succeeds
// only if the key does not exist; losing that race to another node means
// listing again and trying another subnet. KeepAlive renews the lease and
// takes the subnet again if it is lost (deleted, expired, overwritten).
//
// # Concurrency
//
// A Registry is safe for concurrent use by many goroutines; it has no
// state of its own beyond the etcd client. Watch calls its function from
// the goroutine that called Watch, one event at a time (WatchBatches, a
// batch at a time). KeepAlive calls onChange from its own goroutine (the
// caller's).
//
// # Cost at scale
//
// A node costs etcd about five requests to join (list, transaction, lease
// grant, watch) plus one renewal every third of the TTL; each change is
// one watch event to every node. Watch does not ask for every lease's
// expiry (that would be N² requests across N nodes); Leases does.
//
// # Debugging
//
// Everything is plain etcd data; look at it with etcdctl:
//
//	ETCDCTL_API=3 etcdctl get --prefix /coreos.com/network
//	ETCDCTL_API=3 etcdctl get /coreos.com/network/subnets/172.16.57.0-24 -w json   # lease ID, revisions
//	ETCDCTL_API=3 etcdctl lease timetolive --keys <lease ID in hex>
//	ETCDCTL_API=3 etcdctl watch --prefix /coreos.com/network/subnets/
//
// With the embedded etcd, point etcdctl at its socket:
// --endpoints unix:///<dir>/etcd.sock. Deleting a node's key (etcdctl del)
// makes its KeepAlive take a subnet again within moments; putting a key
// without --lease reserves a subnet for the PublicIP in its value.
//
// Errors name the key and say what to change; bad data found in etcd is
// skipped with a warning on the Registry's logger.
package lease
