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
	BackendV6Data     string // the same for the IPv6 overlay
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

// backendData is what a node writes as backend-data and backend-v6-data:
// the bytes of the etcd lease value's BackendData and BackendV6Data,
// {"VNI":1,"VtepMAC":"d6:51:2e:80:5c:69"} as flannel writes them, with
// vxrouter's "PartialCsum":true after them when attrs say so (flannel
// ignores it). Each is "" when attrs have none.
func backendData(attrs lease.Attrs) (v4, v6 string, err error) {
	b, err := attrs.MarshalJSON()
	if err != nil {
		return "", "", err
	}
	var v struct{ BackendData, BackendV6Data json.RawMessage }
	if err := json.Unmarshal(b, &v); err != nil {
		return "", "", fmt.Errorf("backend data: %w", err)
	}
	if attrs.PublicIP.IsValid() {
		v4 = string(v.BackendData)
	}
	if attrs.PublicIPv6.IsValid() && attrs.BackendV6Data != nil {
		v6 = string(v.BackendV6Data)
	}
	return v4, v6, nil
}

// want is the annotations a node with attrs writes on its own Node, given
// the annotations already there: each family's backend data and public
// address, for the families attrs have, as flannel writes them (an
// operator's public-ip-overwrite or public-ipv6-overwrite wins over the
// node's own address).
func (a Annotations) want(attrs lease.Attrs, have map[string]string) (map[string]string, error) {
	bd, bd6, err := backendData(attrs)
	if err != nil {
		return nil, err
	}
	m := map[string]string{a.KubeSubnetManager: "true", a.BackendType: attrs.BackendType}
	if bd != "" {
		ip, err := overwrite(a.PublicIPOverwrite, have, attrs.PublicIP)
		if err != nil {
			return nil, err
		}
		m[a.BackendData], m[a.PublicIP] = bd, ip.String()
	}
	if bd6 != "" {
		ip, err := overwrite(a.PublicIPv6Overwrite, have, attrs.PublicIPv6)
		if err != nil {
			return nil, err
		}
		m[a.BackendV6Data], m[a.PublicIPv6] = bd6, ip.String()
	}
	return m, nil
}

// overwrite is the address the operator's annotation name in have says,
// if any, else own; it must be of own's family.
func overwrite(name string, have map[string]string, own netip.Addr) (netip.Addr, error) {
	o := have[name]
	if o == "" {
		return own, nil
	}
	ip, err := netip.ParseAddr(o)
	if err != nil || ip.Is4() != own.Is4() || ip.Is4In6() || ip.Zone() != "" || ip.IsUnspecified() {
		family := "IPv4"
		if !own.Is4() {
			family = "IPv6"
		}
		return netip.Addr{}, fmt.Errorf("annotation %s=%q is not an %s address peers can send to: fix or remove it", name, o, family)
	}
	return ip, nil
}

// errNotPeer says a Node is no peer, and no mistake either: it runs no
// kube subnet manager (yet), or has no podCIDR yet.
var errNotPeer = errors.New("not a peer")

// peerLease reads a Node's lease from its spec and annotations, as
// strictly as lease.ParseAttrs reads an etcd value: a Node whose
// annotations do not parse is an error (the caller warns and skips it);
// one without kube-subnet-manager=true or without a podCIDR is
// errNotPeer. The lease has the subnet of each family the Node publishes
// an address for (public-ip, public-ipv6), as flannel's would.
func (a Annotations) peerLease(n *corev1.Node) (lease.Lease, error) {
	if n.Annotations[a.KubeSubnetManager] != "true" {
		return lease.Lease{}, errNotPeer
	}
	v4, v6, err := podCIDRs(n)
	if err != nil {
		return lease.Lease{}, err
	}
	if !v4.IsValid() && !v6.IsValid() {
		return lease.Lease{}, errNotPeer
	}
	// The etcd value's JSON, assembled from the annotations, so a Node is
	// held to exactly what a lease in etcd is.
	v := struct {
		PublicIP      *string         `json:",omitempty"`
		PublicIPv6    *string         `json:",omitempty"`
		BackendType   *string         `json:",omitempty"`
		BackendData   json.RawMessage `json:",omitempty"`
		BackendV6Data json.RawMessage `json:",omitempty"`
	}{}
	ann := func(name string) *string {
		if s, ok := n.Annotations[name]; ok {
			return &s
		}
		return nil
	}
	v.PublicIP, v.PublicIPv6, v.BackendType = ann(a.PublicIP), ann(a.PublicIPv6), ann(a.BackendType)
	if v.PublicIP == nil && v.PublicIPv6 != nil {
		// An IPv6-only node: flannel writes no public-ip, and its etcd
		// lease says 0.0.0.0.
		unspecified := "0.0.0.0"
		v.PublicIP = &unspecified
	}
	for _, d := range []struct {
		name string
		raw  *json.RawMessage
	}{{a.BackendData, &v.BackendData}, {a.BackendV6Data, &v.BackendV6Data}} {
		if s := n.Annotations[d.name]; s != "" {
			if !json.Valid([]byte(s)) {
				return lease.Lease{}, fmt.Errorf("annotation %s=%q is not JSON", d.name, s)
			}
			*d.raw = json.RawMessage(s)
		}
	}
	b, err := json.Marshal(v)
	if err != nil {
		return lease.Lease{}, fmt.Errorf("annotations: %w", err)
	}
	attrs, err := lease.ParseAttrs(b)
	if err != nil {
		return lease.Lease{}, fmt.Errorf("annotations %s…: %w", a.Prefix, err)
	}
	l := lease.Lease{Attrs: attrs}
	if attrs.PublicIP.IsValid() {
		l.Subnet = v4
	}
	if attrs.PublicIPv6.IsValid() {
		l.IPv6Subnet = v6
	}
	if !l.Subnet.IsValid() && !l.IPv6Subnet.IsValid() {
		return lease.Lease{}, fmt.Errorf("podCIDRs %q: none of the family of its public address", podCIDRList(n))
	}
	return l, nil
}

// podCIDRList is a Node's pod CIDRs: spec.podCIDRs, else spec.podCIDR.
func podCIDRList(n *corev1.Node) []string {
	if len(n.Spec.PodCIDRs) == 0 && n.Spec.PodCIDR != "" {
		return []string{n.Spec.PodCIDR}
	}
	return n.Spec.PodCIDRs
}

// podCIDRs is a Node's pod CIDR of each family (one at most of each), of
// spec.podCIDRs, else spec.podCIDR. Invalid, no error, for a family it
// has none of (yet); an error when what it has does not parse.
func podCIDRs(n *corev1.Node) (v4, v6 netip.Prefix, err error) {
	cidrs := podCIDRList(n)
	if len(cidrs) > 2 {
		return v4, v6, fmt.Errorf("podCIDRs %q: more than one per address family", cidrs)
	}
	for _, c := range cidrs {
		p, err := netip.ParsePrefix(c)
		if err != nil || p.Addr().Zone() != "" || p.Addr().Is4In6() {
			return netip.Prefix{}, netip.Prefix{}, fmt.Errorf("podCIDR %q is not a CIDR", c)
		}
		if p.Masked() != p {
			return netip.Prefix{}, netip.Prefix{}, fmt.Errorf("podCIDR %q has host bits set", c)
		}
		at := &v6
		if p.Addr().Is4() {
			at = &v4
		}
		if at.IsValid() {
			return netip.Prefix{}, netip.Prefix{}, fmt.Errorf("podCIDRs %q: two of one family", cidrs)
		}
		*at = p
	}
	return v4, v6, nil
}
