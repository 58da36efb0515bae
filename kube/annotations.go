package kube

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"strings"

	corev1 "k8s.io/api/core/v1"

	"vxrouter/lease"
)

// DefaultAnnotationPrefix is flanneld's --kube-annotation-prefix.
const DefaultAnnotationPrefix = "flannel.alpha.coreos.com"

// Annotations are the names of the Node annotations a node writes and
// reads, flannel's names under one prefix:
// flannel.alpha.coreos.com/public-ip and so on.
type Annotations struct {
	Prefix            string // what every name starts with: "flannel.alpha.coreos.com/", "example.com/net-"
	KubeSubnetManager string // "true": this Node's subnet manager is the Kubernetes API; only such Nodes are peers
	BackendType       string // "vxlan"
	BackendData       string // {"VNI":1,"VtepMAC":"…"}, as the etcd lease's BackendData
	BackendV6Data     string // the same for the IPv6 overlay (not written: vxrouter carries IPv4)
	PublicIP          string // the address peers send to
	PublicIPv6        string
	// PublicIPOverwrite, set by an operator, is written as PublicIP
	// instead of the node's own address (a node behind NAT).
	PublicIPOverwrite   string
	PublicIPv6Overwrite string
	// NodePublicIP, set by an operator, is the node's own address, as
	// --public-ip: it picks the underlay interface.
	NodePublicIP   string
	NodePublicIPv6 string
}

// NewAnnotations returns the annotation names under prefix, by flannel's
// rules: a prefix with no slash gets one at its end ("example.com" ->
// "example.com/public-ip"); one whose part after the slash is not empty
// is joined with a dash ("example.com/net" -> "example.com/net-public-ip").
// The part before the slash must be a DNS name (lower case letters,
// digits, '-', '_', at least one dot) and the part after it, if any, of
// the same letters without dots.
func NewAnnotations(prefix string) (Annotations, error) {
	bad := func(why string) (Annotations, error) {
		return Annotations{}, fmt.Errorf("--kube-annotation-prefix %q: %s (want e.g. %s or example.com/net)", prefix, why, DefaultAnnotationPrefix)
	}
	domain, name, _ := strings.Cut(prefix, "/")
	if strings.Contains(name, "/") {
		return bad("more than one slash")
	}
	labels := strings.Split(domain, ".")
	if len(labels) < 2 {
		return bad("the part before the slash is not a domain name with a dot")
	}
	for _, l := range labels {
		if l == "" || !annotationWord(l) {
			return bad(fmt.Sprintf("%q is not a domain name of lower case letters, digits, '-' and '_'", domain))
		}
	}
	if name == "-" {
		return bad("nothing before the dash after the slash")
	}
	name = strings.TrimSuffix(name, "-")
	if name != "" && !annotationWord(name) {
		return bad(fmt.Sprintf("%q after the slash is not lower case letters, digits, '-' and '_'", name))
	}
	p := domain + "/"
	if name != "" {
		p += name + "-"
	}
	return Annotations{
		Prefix:              p,
		KubeSubnetManager:   p + "kube-subnet-manager",
		BackendType:         p + "backend-type",
		BackendData:         p + "backend-data",
		BackendV6Data:       p + "backend-v6-data",
		PublicIP:            p + "public-ip",
		PublicIPv6:          p + "public-ipv6",
		PublicIPOverwrite:   p + "public-ip-overwrite",
		PublicIPv6Overwrite: p + "public-ipv6-overwrite",
		NodePublicIP:        p + "node-public-ip",
		NodePublicIPv6:      p + "node-public-ipv6",
	}, nil
}

func annotationWord(s string) bool {
	for _, c := range s {
		if !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

// backendData is what a node writes as BackendData: the bytes of the
// etcd lease value's BackendData, {"VNI":1,"VtepMAC":"d6:51:2e:80:5c:69"}
// as flannel writes it, with vxrouter's "PartialCsum":true after them
// when attrs say so (flannel ignores it).
func backendData(attrs lease.Attrs) (string, error) {
	b, err := attrs.MarshalJSON()
	if err != nil {
		return "", err
	}
	var v struct{ BackendData json.RawMessage }
	if err := json.Unmarshal(b, &v); err != nil {
		return "", fmt.Errorf("backend data: %w", err)
	}
	return string(v.BackendData), nil
}

// want is the annotations a node with attrs writes on its own Node, given
// the annotations already there (an operator's public-ip-overwrite wins
// over attrs.PublicIP, as in flannel).
func (a Annotations) want(attrs lease.Attrs, have map[string]string) (map[string]string, error) {
	bd, err := backendData(attrs)
	if err != nil {
		return nil, err
	}
	publicIP := attrs.PublicIP.String()
	if o := have[a.PublicIPOverwrite]; o != "" {
		ip, err := netip.ParseAddr(o)
		if err != nil || !ip.Is4() || ip.IsUnspecified() {
			return nil, fmt.Errorf("annotation %s=%q is not an IPv4 address peers can send to: fix or remove it", a.PublicIPOverwrite, o)
		}
		publicIP = ip.String()
	}
	return map[string]string{
		a.KubeSubnetManager: "true",
		a.BackendType:       attrs.BackendType,
		a.BackendData:       bd,
		a.PublicIP:          publicIP,
	}, nil
}

// errNotPeer says a Node is no peer, and no mistake either: it runs no
// kube subnet manager (yet), or has no podCIDR yet.
var errNotPeer = errors.New("not a peer")

// peerLease reads a Node's lease from its spec and annotations, as
// strictly as lease.ParseAttrs reads an etcd value: a Node whose
// annotations do not parse is an error (the caller warns and skips it);
// one without kube-subnet-manager=true or without a podCIDR is
// errNotPeer.
func (a Annotations) peerLease(n *corev1.Node) (lease.Lease, error) {
	if n.Annotations[a.KubeSubnetManager] != "true" {
		return lease.Lease{}, errNotPeer
	}
	subnet, err := podCIDR4(n)
	if err != nil {
		return lease.Lease{}, err
	}
	if !subnet.IsValid() {
		return lease.Lease{}, errNotPeer
	}
	// The etcd value's JSON, assembled from the annotations, so a Node is
	// held to exactly what a lease in etcd is.
	v := struct {
		PublicIP    *string         `json:",omitempty"`
		BackendType *string         `json:",omitempty"`
		BackendData json.RawMessage `json:",omitempty"`
	}{}
	if s, ok := n.Annotations[a.PublicIP]; ok {
		v.PublicIP = &s
	}
	if s, ok := n.Annotations[a.BackendType]; ok {
		v.BackendType = &s
	}
	if s := n.Annotations[a.BackendData]; s != "" {
		if !json.Valid([]byte(s)) {
			return lease.Lease{}, fmt.Errorf("annotation %s=%q is not JSON", a.BackendData, s)
		}
		v.BackendData = json.RawMessage(s)
	}
	b, err := json.Marshal(v)
	if err != nil {
		return lease.Lease{}, fmt.Errorf("annotations: %w", err)
	}
	attrs, err := lease.ParseAttrs(b)
	if err != nil {
		return lease.Lease{}, fmt.Errorf("annotations %s…: %w", a.Prefix, err)
	}
	return lease.Lease{Subnet: subnet, Attrs: attrs}, nil
}

// podCIDR4 is a Node's IPv4 pod CIDR: the IPv4 one of spec.podCIDRs (one
// of each family at most), else spec.podCIDR if it is IPv4. Invalid, no
// error, when it has none (yet); an error when what it has does not
// parse.
func podCIDR4(n *corev1.Node) (netip.Prefix, error) {
	cidrs := n.Spec.PodCIDRs
	if len(cidrs) == 0 && n.Spec.PodCIDR != "" {
		cidrs = []string{n.Spec.PodCIDR}
	}
	if len(cidrs) > 2 {
		return netip.Prefix{}, fmt.Errorf("podCIDRs %q: more than one per address family", cidrs)
	}
	var v4 netip.Prefix
	for _, c := range cidrs {
		p, err := netip.ParsePrefix(c)
		if err != nil {
			return netip.Prefix{}, fmt.Errorf("podCIDR %q is not a CIDR", c)
		}
		if p.Masked() != p {
			return netip.Prefix{}, fmt.Errorf("podCIDR %q has host bits set", c)
		}
		if p.Addr().Is4() {
			if v4.IsValid() {
				return netip.Prefix{}, fmt.Errorf("podCIDRs %q: two IPv4 CIDRs", cidrs)
			}
			v4 = p
		}
	}
	return v4, nil
}
