package kube

import (
	"errors"
	"net"
	"net/netip"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"vxrouter/lease"
	"vxrouter/node"
)

// Source is what a node takes its lease and peers from.
var _ node.Source = (*Source)(nil)

func TestNewAnnotations(t *testing.T) {
	for _, c := range []struct{ prefix, publicIP string }{
		{"flannel.alpha.coreos.com", "flannel.alpha.coreos.com/public-ip"},
		{"flannel.alpha.coreos.com/", "flannel.alpha.coreos.com/public-ip"},
		{"example.com/net", "example.com/net-public-ip"},
		{"example.com/net-", "example.com/net-public-ip"},
		{"a-b_c.example.com/x_y", "a-b_c.example.com/x_y-public-ip"},
	} {
		a, err := NewAnnotations(c.prefix)
		if err != nil {
			t.Errorf("%q: %v", c.prefix, err)
			continue
		}
		if a.PublicIP != c.publicIP {
			t.Errorf("%q: public-ip is %q, want %q", c.prefix, a.PublicIP, c.publicIP)
		}
	}
	a, _ := NewAnnotations(DefaultAnnotationPrefix)
	want := Annotations{
		Prefix:              "flannel.alpha.coreos.com/",
		KubeSubnetManager:   "flannel.alpha.coreos.com/kube-subnet-manager",
		BackendType:         "flannel.alpha.coreos.com/backend-type",
		BackendData:         "flannel.alpha.coreos.com/backend-data",
		BackendV6Data:       "flannel.alpha.coreos.com/backend-v6-data",
		PublicIP:            "flannel.alpha.coreos.com/public-ip",
		PublicIPv6:          "flannel.alpha.coreos.com/public-ipv6",
		PublicIPOverwrite:   "flannel.alpha.coreos.com/public-ip-overwrite",
		PublicIPv6Overwrite: "flannel.alpha.coreos.com/public-ipv6-overwrite",
		NodePublicIP:        "flannel.alpha.coreos.com/node-public-ip",
		NodePublicIPv6:      "flannel.alpha.coreos.com/node-public-ipv6",
	}
	if a != want {
		t.Errorf("default annotations\n got %+v\nwant %+v", a, want)
	}
	for _, bad := range []string{"", "flannel", "a/b/c", "Flannel.io", "example.com/Net", "example..com", "example.com/-", ".example.com", "exa mple.com"} {
		if _, err := NewAnnotations(bad); err == nil || !strings.Contains(err.Error(), "--kube-annotation-prefix") {
			t.Errorf("%q: err = %v, want one naming the flag", bad, err)
		}
	}
}

func attrs(t *testing.T, ip, mac string, partial bool) lease.Attrs {
	t.Helper()
	m, err := net.ParseMAC(mac)
	if err != nil {
		t.Fatal(err)
	}
	return lease.Attrs{PublicIP: netip.MustParseAddr(ip), BackendType: "vxlan", VNI: 1, VtepMAC: m, PartialCsum: partial}
}

// The annotations are flannel's, byte for byte where flannel writes them
// (its vxlan backend marshals {VNI uint16, VtepMAC} with encoding/json);
// vxrouter's PartialCsum follows its own.
func TestWant(t *testing.T) {
	a, _ := NewAnnotations(DefaultAnnotationPrefix)
	got, err := a.want(attrs(t, "10.0.0.2", "d6:51:2e:80:5c:69", false), nil)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		"flannel.alpha.coreos.com/kube-subnet-manager": "true",
		"flannel.alpha.coreos.com/backend-type":        "vxlan",
		"flannel.alpha.coreos.com/backend-data":        `{"VNI":1,"VtepMAC":"d6:51:2e:80:5c:69"}`,
		"flannel.alpha.coreos.com/public-ip":           "10.0.0.2",
	}
	if len(got) != len(want) {
		t.Errorf("got %v, want %v", got, want)
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %q, want %q", k, got[k], v)
		}
	}
	got, _ = a.want(attrs(t, "10.0.0.2", "d6:51:2e:80:5c:69", true), nil)
	if bd := got[a.BackendData]; bd != `{"VNI":1,"VtepMAC":"d6:51:2e:80:5c:69","PartialCsum":true}` {
		t.Errorf("backend-data with partial checksums = %s", bd)
	}

	// Dual-stack: each family's data and address; an IPv6-only node
	// writes no public-ip and no backend-data, as flanneld.
	dual := attrs(t, "10.0.0.2", "d6:51:2e:80:5c:69", true)
	dual.PublicIPv6 = netip.MustParseAddr("fd77::2")
	dual.BackendV6Data = &lease.VXLANData{VNI: 1, VtepMAC: dual.VtepMAC, PartialCsum: true}
	got, err = a.want(dual, map[string]string{a.PublicIPv6Overwrite: "2001:db8::7"})
	if err != nil || got[a.BackendV6Data] != `{"VNI":1,"VtepMAC":"d6:51:2e:80:5c:69","PartialCsum":true}` || got[a.PublicIPv6] != "2001:db8::7" || got[a.PublicIP] != "10.0.0.2" || len(got) != 6 {
		t.Errorf("dual-stack: %v %v", got, err)
	}
	v6only := dual
	v6only.PublicIP, v6only.VNI, v6only.VtepMAC, v6only.PartialCsum = netip.Addr{}, 0, nil, false
	got, err = a.want(v6only, nil)
	if _, ok := got[a.PublicIP]; err != nil || ok || got[a.BackendData] != "" || got[a.PublicIPv6] != "fd77::2" || len(got) != 4 {
		t.Errorf("IPv6-only: %v %v", got, err)
	}
	if _, err := a.want(dual, map[string]string{a.PublicIPv6Overwrite: "192.0.2.7"}); err == nil || !strings.Contains(err.Error(), "public-ipv6-overwrite") {
		t.Errorf("an IPv4 public-ipv6-overwrite: %v", err)
	}

	// An operator's overwrite is what peers are told.
	got, err = a.want(attrs(t, "10.0.0.2", "d6:51:2e:80:5c:69", false), map[string]string{a.PublicIPOverwrite: "192.0.2.7"})
	if err != nil || got[a.PublicIP] != "192.0.2.7" {
		t.Errorf("with public-ip-overwrite: public-ip %q, %v", got[a.PublicIP], err)
	}
	for _, bad := range []string{"nope", "fd00::1", "0.0.0.0"} {
		if _, err := a.want(attrs(t, "10.0.0.2", "d6:51:2e:80:5c:69", false), map[string]string{a.PublicIPOverwrite: bad}); err == nil || !strings.Contains(err.Error(), "public-ip-overwrite") {
			t.Errorf("overwrite %q: err = %v", bad, err)
		}
	}
}

func kubeNode(name string, spec corev1.NodeSpec, ann map[string]string) *corev1.Node {
	return &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Annotations: ann}, Spec: spec}
}

// flannelAnnotations are what flanneld (vxlan, IPv4) writes on its Node.
func flannelAnnotations(ip, mac string) map[string]string {
	return map[string]string{
		"flannel.alpha.coreos.com/kube-subnet-manager": "true",
		"flannel.alpha.coreos.com/backend-type":        "vxlan",
		"flannel.alpha.coreos.com/backend-data":        `{"VNI":1,"VtepMAC":"` + mac + `"}`,
		"flannel.alpha.coreos.com/public-ip":           ip,
		"node.alpha.kubernetes.io/ttl":                 "0",
	}
}

func TestPeerLease(t *testing.T) {
	a, _ := NewAnnotations(DefaultAnnotationPrefix)
	l, err := a.peerLease(kubeNode("n1", corev1.NodeSpec{PodCIDR: "10.244.3.0/24"}, flannelAnnotations("10.0.0.3", "aa:bb:cc:dd:ee:03")))
	if err != nil {
		t.Fatal(err)
	}
	if l.Subnet != netip.MustParsePrefix("10.244.3.0/24") || l.Attrs.PublicIP != netip.MustParseAddr("10.0.0.3") ||
		l.Attrs.VtepMAC.String() != "aa:bb:cc:dd:ee:03" || l.Attrs.VNI != 1 || l.Attrs.BackendType != "vxlan" || l.Attrs.PartialCsum {
		t.Errorf("lease %+v", l)
	}
	// Dual-stack podCIDRs, IPv6 first: the IPv4 one is the lease.
	l, err = a.peerLease(kubeNode("n1", corev1.NodeSpec{PodCIDR: "fd00:10:244:3::/64", PodCIDRs: []string{"fd00:10:244:3::/64", "10.244.3.0/24"}}, flannelAnnotations("10.0.0.3", "aa:bb:cc:dd:ee:03")))
	if err != nil || l.Subnet != netip.MustParsePrefix("10.244.3.0/24") {
		t.Errorf("dual-stack: %v %v", l.Subnet, err)
	}
	// flanneld's dual-stack Node: both families, each to its own address.
	ann6 := flannelAnnotations("10.0.0.3", "aa:bb:cc:dd:ee:03")
	ann6[a.PublicIPv6], ann6[a.BackendV6Data] = "fd77::3", `{"VNI":1,"VtepMAC":"aa:bb:cc:dd:ee:13"}`
	l, err = a.peerLease(kubeNode("n1", corev1.NodeSpec{PodCIDR: "10.244.3.0/24", PodCIDRs: []string{"10.244.3.0/24", "fd00:10:244:3::/64"}}, ann6))
	if err != nil || l.Subnet != netip.MustParsePrefix("10.244.3.0/24") || l.IPv6Subnet != netip.MustParsePrefix("fd00:10:244:3::/64") ||
		l.Attrs.PublicIPv6 != netip.MustParseAddr("fd77::3") || l.Attrs.BackendV6Data == nil || l.Attrs.BackendV6Data.VtepMAC.String() != "aa:bb:cc:dd:ee:13" {
		t.Errorf("dual-stack peer: %+v %v", l, err)
	}
	// An IPv6-only one writes no public-ip and no backend-data.
	only6 := map[string]string{a.KubeSubnetManager: "true", a.BackendType: "vxlan", a.PublicIPv6: "fd77::4", a.BackendV6Data: `{"VNI":1,"VtepMAC":"aa:bb:cc:dd:ee:14"}`}
	l, err = a.peerLease(kubeNode("n1", corev1.NodeSpec{PodCIDR: "fd00:10:244:4::/64"}, only6))
	if err != nil || l.Subnet.IsValid() || l.IPv6Subnet != netip.MustParsePrefix("fd00:10:244:4::/64") || l.Attrs.PublicIP.IsValid() {
		t.Errorf("IPv6-only peer: %+v %v", l, err)
	}
	// vxrouter's own, with partial checksums.
	ann := flannelAnnotations("10.0.0.3", "aa:bb:cc:dd:ee:03")
	ann[a.BackendData] = `{"VNI":1,"VtepMAC":"aa:bb:cc:dd:ee:03","PartialCsum":true}`
	if l, err = a.peerLease(kubeNode("n1", corev1.NodeSpec{PodCIDR: "10.244.3.0/24"}, ann)); err != nil || !l.Attrs.PartialCsum {
		t.Errorf("PartialCsum: %+v %v", l, err)
	}

	notPeers := map[string]*corev1.Node{
		"no annotations": kubeNode("n", corev1.NodeSpec{PodCIDR: "10.244.3.0/24"}, nil),
		"manager false":  kubeNode("n", corev1.NodeSpec{PodCIDR: "10.244.3.0/24"}, map[string]string{a.KubeSubnetManager: "false"}),
		"no podCIDR":     kubeNode("n", corev1.NodeSpec{}, flannelAnnotations("10.0.0.3", "aa:bb:cc:dd:ee:03")),
	}
	for what, n := range notPeers {
		if _, err := a.peerLease(n); !errors.Is(err, errNotPeer) {
			t.Errorf("%s: err = %v, want errNotPeer", what, err)
		}
	}

	bad := map[string]func(map[string]string, *corev1.NodeSpec){
		"public-ip garbage":     func(m map[string]string, _ *corev1.NodeSpec) { m[a.PublicIP] = "ten.0.0.3" },
		"public-ip missing":     func(m map[string]string, _ *corev1.NodeSpec) { delete(m, a.PublicIP) },
		"public-ip IPv6":        func(m map[string]string, _ *corev1.NodeSpec) { m[a.PublicIP] = "fd00::3" },
		"backend-data missing":  func(m map[string]string, _ *corev1.NodeSpec) { delete(m, a.BackendData) },
		"backend-data not JSON": func(m map[string]string, _ *corev1.NodeSpec) { m[a.BackendData] = `{"VNI":1,` },
		"backend-data bad MAC":  func(m map[string]string, _ *corev1.NodeSpec) { m[a.BackendData] = `{"VNI":1,"VtepMAC":"zz"}` },
		"backend-data no VNI":   func(m map[string]string, _ *corev1.NodeSpec) { m[a.BackendData] = `{"VtepMAC":"aa:bb:cc:dd:ee:03"}` },
		"backend-type missing":  func(m map[string]string, _ *corev1.NodeSpec) { delete(m, a.BackendType) },
		"podCIDR garbage":       func(_ map[string]string, s *corev1.NodeSpec) { s.PodCIDR = "10.244.3/24" },
		"podCIDR host bits":     func(_ map[string]string, s *corev1.NodeSpec) { s.PodCIDR = "10.244.3.1/24" },
		"two IPv4 podCIDRs":     func(_ map[string]string, s *corev1.NodeSpec) { s.PodCIDRs = []string{"10.244.3.0/24", "10.244.4.0/24"} },
		"three podCIDRs": func(_ map[string]string, s *corev1.NodeSpec) {
			s.PodCIDRs = []string{"10.244.3.0/24", "fd00::/64", "fd01::/64"}
		},
		"two IPv6 podCIDRs": func(_ map[string]string, s *corev1.NodeSpec) { s.PodCIDRs = []string{"fd00::/64", "fd01::/64"} },
		// An IPv4 node (public-ip) with an IPv6 podCIDR only.
		"no podCIDR of its family": func(_ map[string]string, s *corev1.NodeSpec) { s.PodCIDR = "fd00::/64" },
		"public-ipv6 not IPv6":     func(m map[string]string, _ *corev1.NodeSpec) { m[a.PublicIPv6] = "10.0.0.3" },
		"backend-v6-data bad MAC": func(m map[string]string, _ *corev1.NodeSpec) {
			m[a.PublicIPv6], m[a.BackendV6Data] = "fd77::3", `{"VNI":1,"VtepMAC":"zz"}`
		},
		"backend-v6-data, no public-ipv6": func(m map[string]string, _ *corev1.NodeSpec) {
			m[a.BackendV6Data] = `{"VNI":1,"VtepMAC":"aa:bb:cc:dd:ee:03"}`
		},
	}
	for what, spoil := range bad {
		ann := flannelAnnotations("10.0.0.3", "aa:bb:cc:dd:ee:03")
		spec := corev1.NodeSpec{PodCIDR: "10.244.3.0/24"}
		spoil(ann, &spec)
		if _, err := a.peerLease(kubeNode("n", spec, ann)); err == nil || errors.Is(err, errNotPeer) {
			t.Errorf("%s: err = %v, want a parse error", what, err)
		}
	}
}

// FuzzPeerLease: whatever a Node's spec and annotations hold, reading it
// never panics, and what it accepts is a lease the node can route to.
func FuzzPeerLease(f *testing.F) {
	f.Add("true", "vxlan", `{"VNI":1,"VtepMAC":"aa:bb:cc:dd:ee:03"}`, "10.0.0.3", "", "", "10.244.3.0/24", "")
	f.Add("true", "vxlan", `{"VNI":1,"VtepMAC":"aa:bb:cc:dd:ee:03","PartialCsum":true}`, "10.0.0.3", `{"VNI":1,"VtepMAC":"aa:bb:cc:dd:ee:13"}`, "fd77::3", "10.244.3.0/24", "fd00::/64")
	f.Add("true", "vxlan", "", "", `{"VNI":1,"VtepMAC":"aa:bb:cc:dd:ee:13"}`, "fd77::3", "fd00::/64", "")
	f.Add("true", "host-gw", `null`, "10.0.0.3", "null", "", "fd00::/64", "10.244.3.0/24")
	f.Add("true", "vxlan", `{"VNI":-1,"VtepMAC":""}`, "0.0.0.0", "", "::", "0.0.0.0/0", "")
	f.Add("true", "vxlan", `{"VNI":1e9,"VtepMAC":"aa:bb:cc:dd:ee:03:04:05"}`, "::ffff:10.0.0.3", "{", "fe80::1%eth0", "10.244.3.1/24", "x")
	f.Add("false", "", "", "", "", "", "", "")
	f.Add("true", "vxlan", `"just a string"`, "10.0.0.3%eth0", `[]`, "fd77::3", "10.244.3.0/33", "::ffff:10.0.0.0/120")
	a, _ := NewAnnotations(DefaultAnnotationPrefix)
	f.Fuzz(func(t *testing.T, managed, btype, bdata, publicIP, bdata6, publicIPv6, cidr1, cidr2 string) {
		ann := map[string]string{a.KubeSubnetManager: managed, a.BackendType: btype, a.BackendData: bdata, a.PublicIP: publicIP, a.BackendV6Data: bdata6, a.PublicIPv6: publicIPv6}
		for k, v := range ann {
			if v == "" && k != a.KubeSubnetManager {
				delete(ann, k) // absent, as flanneld leaves what it does not write
			}
		}
		spec := corev1.NodeSpec{PodCIDR: cidr1}
		if cidr2 != "" {
			spec.PodCIDRs = []string{cidr1, cidr2}
		}
		l, err := a.peerLease(kubeNode("n", spec, ann))
		if err != nil {
			return
		}
		if !l.Subnet.IsValid() && !l.IPv6Subnet.IsValid() {
			t.Fatal("accepted a lease with no subnet")
		}
		if l.Subnet.IsValid() && (!l.Subnet.Addr().Is4() || l.Subnet.Masked() != l.Subnet || !l.Attrs.PublicIP.Is4() || l.Attrs.PublicIP.IsUnspecified()) {
			t.Fatalf("accepted IPv4 part %v to %v", l.Subnet, l.Attrs.PublicIP)
		}
		if l.IPv6Subnet.IsValid() && (!l.IPv6Subnet.Addr().Is6() || l.IPv6Subnet.Masked() != l.IPv6Subnet || !l.Attrs.PublicIPv6.Is6() || l.Attrs.PublicIPv6.IsUnspecified()) {
			t.Fatalf("accepted IPv6 part %v to %v", l.IPv6Subnet, l.Attrs.PublicIPv6)
		}
		if l.Attrs.BackendType != "vxlan" {
			return
		}
		if l.Subnet.IsValid() && (len(l.Attrs.VtepMAC) != 6 || l.Attrs.VNI < 0 || l.Attrs.VNI >= 1<<24) {
			t.Fatalf("accepted vxlan attrs %+v", l.Attrs)
		}
		// What was accepted can be written back and read again alike.
		back, err := a.want(l.Attrs, nil)
		if err != nil {
			t.Fatalf("accepted %+v, cannot write it: %v", l.Attrs, err)
		}
		again, err := a.peerLease(kubeNode("n", spec, back))
		if err != nil || !again.Attrs.Equal(l.Attrs) || again.Subnet != l.Subnet || again.IPv6Subnet != l.IPv6Subnet {
			t.Fatalf("round trip: %+v -> %v -> %+v %v", l, back, again, err)
		}
	})
}
