// Package kube is a node's subnet and peers from the Kubernetes API, as
// flanneld's --kube-subnet-mgr has them, for clusters that give their
// overlay no etcd of its own. It owns:
//
//   - Source (Open), a node.Source: the overlay's config from
//     net-conf.json (the JSON of etcd's config key), the lease from the
//     Node's spec.podCIDR, or its podCIDRs of both families in a
//     dual-stack overlay, which the controller manager assigns and which
//     must lie in Network (IPv6Network);
//   - the annotations that publish a node to its peers, flannel's names
//     under --kube-annotation-prefix (Annotations): kube-subnet-manager,
//     backend-type, backend-data ({"VNI":1,"VtepMAC":…}, byte for byte
//     the etcd lease's BackendData) and public-ip, backend-v6-data and
//     public-ipv6 for the IPv6 overlay, with an operator's
//     public-ip-overwrite and node-public-ip (and their IPv6 twins)
//     honoured;
//   - the Node's NetworkUnavailable condition, set to False (reason
//     FlannelIsUp) once the node forwards;
//   - peers from a Node informer: every other Node with
//     kube-subnet-manager=true and a podCIDR, followed as Nodes come,
//     change and go.
//
// flanneld nodes and vxrouter nodes in one cluster read each other's
// annotations as their own.
//
// # What it needs from the API server
//
// get, list and watch on nodes; patch on nodes/status (annotations are
// written through the status subresource, as flannel does, so the role
// needs no patch on nodes); get on pods when the node is found through
// POD_NAME and POD_NAMESPACE. deploy/kube-vxrouter.yml has the role.
//
// # Debugging
//
//	kubectl get nodes -o custom-columns=NAME:.metadata.name,CIDR:.spec.podCIDR
//	kubectl get node NAME -o jsonpath='{.metadata.annotations}'
//	kubectl get node NAME -o jsonpath='{.status.conditions[?(@.type=="NetworkUnavailable")]}'
//
// A node with no podCIDR waits and says what to check every half minute;
// a Node whose annotations do not parse is skipped with a warning.
package kube
