package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"

	"vxrouter/internal/kubetest"
	"vxrouter/lab"
	"vxrouter/lease"
)

// kubeCluster is a Kubernetes control plane beside an overlay's lab: a
// real kube-apiserver on the overlay's etcd, running in a host of its own
// on the underlay, where nodes reach it as they would a cluster's.
type kubeCluster struct {
	o          *overlay
	api        *kubetest.APIServer
	c          kubernetes.Interface
	kubeconfig string
	netConf    string
}

const kubePrefix = "flannel.alpha.coreos.com/"

func (o *overlay) kube() *kubeCluster {
	o.t.Helper()
	bin := kubetest.Binary(o.t)
	h := o.host("api")
	dir := filepath.Join(o.dir, "kube")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		o.t.Fatal(err)
	}
	dial := func(ctx context.Context, network, addr string) (c net.Conn, err error) {
		err = h.Do(func() error {
			var d net.Dialer
			c, err = d.DialContext(ctx, network, addr)
			return err
		})
		return c, err
	}
	k := &kubeCluster{o: o, kubeconfig: filepath.Join(dir, "kubeconfig"), netConf: filepath.Join(dir, "net-conf.json")}
	api, err := kubetest.Start(o.ctx, kubetest.Options{
		Binary:  bin,
		Dir:     dir,
		Etcd:    o.etcd.UnixEndpoint(),
		Addr:    h.Underlay,
		Port:    6443,
		Command: func(name string, args ...string) *exec.Cmd { return h.Command(context.Background(), name, args...) },
		Dial:    dial,
	})
	if err != nil {
		o.t.Fatal(err)
	}
	o.t.Cleanup(func() {
		// The nodes first, as the harness would after this: an API server
		// with their watches open takes long to stop.
		for _, n := range o.nodes {
			if err := n.Stop(10 * time.Second); err != nil {
				o.t.Errorf("stop %s: %v", n.Host.Name, err)
			}
			if o.t.Failed() {
				o.t.Logf("--- log of %s\n%s", n.Host.Name, n.Log())
			}
		}
		o.nodes = nil
		if k.api == nil {
			return // stopped by the test
		}
		if err := k.api.Close(); err != nil {
			o.t.Error(err)
		}
		if o.t.Failed() {
			o.t.Logf("--- kube-apiserver log (last 40 lines)\n%s", k.api.LogTail(40))
		}
	})
	k.api = api
	if k.c, err = kubernetes.NewForConfig(api.REST("")); err != nil {
		o.t.Fatal(err)
	}
	if err := api.WriteKubeconfig(k.kubeconfig, ""); err != nil {
		o.t.Fatal(err)
	}
	b, err := o.cfg.MarshalJSON()
	if err != nil {
		o.t.Fatal(err)
	}
	if err := os.WriteFile(k.netConf, b, 0o644); err != nil {
		o.t.Fatal(err)
	}
	return k
}

// node registers a Node as kubelet does (with an annotation of its own
// and NetworkUnavailable=True, as a cluster whose network is not up has
// it), with podCIDRs as the controller manager assigns them ("" for none
// yet, "v4,v6" for dual-stack), and more annotations.
func (k *kubeCluster) node(name, podCIDRs string, ann map[string]string) {
	k.o.t.Helper()
	a := map[string]string{"node.alpha.kubernetes.io/ttl": "0"}
	for key, v := range ann {
		a[key] = v
	}
	n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Annotations: a}}
	if podCIDRs != "" {
		cidrs := strings.Split(podCIDRs, ",")
		n.Spec = corev1.NodeSpec{PodCIDR: cidrs[0], PodCIDRs: cidrs}
	}
	if _, err := k.c.CoreV1().Nodes().Create(k.o.ctx, n, metav1.CreateOptions{}); err != nil {
		k.o.t.Fatal(err)
	}
	patch := `{"status":{"conditions":[{"type":"NetworkUnavailable","status":"True","reason":"NoRouteCreated","message":"no network yet"}]}}`
	if _, err := k.c.CoreV1().Nodes().PatchStatus(k.o.ctx, name, []byte(patch)); err != nil {
		k.o.t.Fatal(err)
	}
}

func (k *kubeCluster) get(name string) *corev1.Node {
	k.o.t.Helper()
	n, err := k.c.CoreV1().Nodes().Get(k.o.ctx, name, metav1.GetOptions{})
	if err != nil {
		k.o.t.Fatal(err)
	}
	return n
}

// args are run's flags for a node in this cluster as Node name.
func (k *kubeCluster) args(name string, more ...string) []string {
	return append([]string{"--kube-subnet-mgr", "--kubeconfig-file", k.kubeconfig, "--net-config-path", k.netConf, "--node-name", name}, more...)
}

// start starts a vxrouter node in kube mode on h as Node name.
func (k *kubeCluster) start(h *lab.Host, name string, more ...string) (*lab.Node, lease.SubnetEnv) {
	return k.o.start(h, k.args(name, more...)...)
}

// checkNode checks what a vxrouter node wrote on its Node: flannel's
// annotations with its addresses (publicIPv6 invalid in an IPv4
// overlay) and VTEP MAC, and NetworkUnavailable=False with flannel's
// reason.
func (k *kubeCluster) checkNode(name string, publicIP, publicIPv6 netip.Addr, vtep string) {
	t := k.o.t
	t.Helper()
	n := k.get(name)
	data := `{"VNI":1,"VtepMAC":"` + vtep + `","PartialCsum":true}`
	want := map[string]string{
		kubePrefix + "kube-subnet-manager": "true",
		kubePrefix + "backend-type":        "vxlan",
		kubePrefix + "backend-data":        data,
		kubePrefix + "public-ip":           publicIP.String(),
		"node.alpha.kubernetes.io/ttl":     "0",
	}
	if publicIPv6.IsValid() {
		want[kubePrefix+"backend-v6-data"] = data
		want[kubePrefix+"public-ipv6"] = publicIPv6.String()
	}
	for key, v := range want {
		if n.Annotations[key] != v {
			t.Errorf("Node %s: annotation %s = %q, want %q", name, key, n.Annotations[key], v)
		}
	}
	if len(n.Annotations) != len(want) {
		t.Errorf("Node %s: annotations %v, want %v", name, n.Annotations, want)
	}
	k.o.within(20*time.Second, "NetworkUnavailable=False on "+name, func() error {
		for _, c := range k.get(name).Status.Conditions {
			if c.Type == corev1.NodeNetworkUnavailable {
				if c.Status != corev1.ConditionFalse || c.Reason != "FlannelIsUp" {
					return fmt.Errorf("condition %+v", c)
				}
				return nil
			}
		}
		return fmt.Errorf("no NetworkUnavailable condition")
	})
}

// TestKubeOverlay: two vxrouter nodes in Kubernetes mode, no etcd of the
// overlay's own, a real API server: each takes its Node's podCIDR, writes
// flannel's annotations and the NetworkUnavailable condition, learns the
// other from its Node, and their pods ping and carry TCP and UDP both
// ways. A Node that is deleted stops its node with an error that says so,
// and its peer forgets it.
func TestKubeOverlay(t *testing.T) {
	o := newOverlay(t, network16)
	k := o.kube()
	k.node("n1", "172.16.11.0/24", nil)
	k.node("n2", "172.16.22.0/24", nil)
	h1, h2 := o.host("h1"), o.host("h2")
	n1, env1 := k.start(h1, "n1")
	n2, env2 := k.start(h2, "n2")
	if env1.Subnet != netip.MustParsePrefix("172.16.11.1/24") || env2.Subnet != netip.MustParsePrefix("172.16.22.1/24") {
		t.Fatalf("subnet.env says %s and %s, want the podCIDRs", env1.Subnet, env2.Subnet)
	}
	if env1.Network != netip.MustParsePrefix("172.16.0.0/16") || env1.MTU != 1450 {
		t.Errorf("subnet.env %+v", env1)
	}
	p1, p2 := o.pod(h1, env1.Subnet.Masked()), o.pod(h2, env2.Subnet.Masked())
	o.mustPing(p1, p2)
	o.mustPing(p2, p1)
	o.mustCarry(p1, p2)
	o.mustCarry(p2, p1)
	k.checkNode("n1", h1.Underlay, netip.Addr{}, vtepMAC(t, n1))
	k.checkNode("n2", h2.Underlay, netip.Addr{}, vtepMAC(t, n2))
	// Nothing went to etcd: the overlay's own keys are the config alone.
	if leases, _, err := o.reg.Leases(o.ctx); err != nil || len(leases) != 0 {
		t.Errorf("leases in etcd: %v %v", leases, err)
	}

	if err := k.c.CoreV1().Nodes().Delete(o.ctx, "n2", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	select {
	case <-n2.Done():
	case <-time.After(30 * time.Second):
		t.Fatal("the node of a deleted Node goes on")
	}
	if err := n2.Stop(time.Second); err == nil || !strings.Contains(err.Error(), `Node "n2" was deleted`) {
		t.Errorf("node n2 ended with %v", err)
	}
	for i, m := range o.nodes { // stopped already, with that error
		if m == n2 {
			o.nodes = append(o.nodes[:i], o.nodes[i+1:]...)
			break
		}
	}
	o.within(20*time.Second, "n1 forgets n2", func() error {
		if ok, err := knows(o.ctx, n1, netip.MustParsePrefix("172.16.22.0/24")); ok || err != nil {
			return fmt.Errorf("still a peer (%v)", err)
		}
		return nil
	})
}

// flannelKubeNode runs a node as flanneld --kube-subnet-mgr with its vxlan
// backend would: its Node annotated exactly as flanneld annotates it, the
// kernel's vxlan device, and every other Node's annotations read as
// flanneld reads them (public-ip, and backend-data decoded into its
// {VNI, VtepMAC}) and programmed into the kernel.
func (k *kubeCluster) flannelKubeNode(h *lab.Host, name, podCIDR, vtep string) {
	t := k.o.t
	t.Helper()
	subnet := netip.MustParsePrefix(podCIDR)
	k.node(name, podCIDR, map[string]string{
		kubePrefix + "kube-subnet-manager": "true",
		kubePrefix + "backend-type":        "vxlan",
		kubePrefix + "backend-data":        `{"VNI":1,"VtepMAC":"` + vtep + `"}`,
		kubePrefix + "public-ip":           h.Underlay.String(),
	})
	kv, err := h.KernelVXLAN(lab.KernelVXLANConfig{
		VNI: 1, Port: 8472, VtepMAC: mustMAC(t, vtep), Subnet: subnet, MTU: 1450,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(k.o.ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		programmed := map[string]bool{}
		for ctx.Err() == nil {
			nodes, err := k.c.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
			if err == nil {
				for _, n := range nodes.Items {
					if n.Name == name || programmed[n.Name] || n.Annotations[kubePrefix+"kube-subnet-manager"] != "true" {
						continue
					}
					// flanneld's reading: the public IP, and backend-data into
					// a struct of VNI and VtepMAC (other fields ignored).
					var bd struct {
						VNI     uint16
						VtepMAC string
					}
					ip, err1 := netip.ParseAddr(n.Annotations[kubePrefix+"public-ip"])
					err2 := json.Unmarshal([]byte(n.Annotations[kubePrefix+"backend-data"]), &bd)
					p, err3 := netip.ParsePrefix(n.Spec.PodCIDR)
					mac, err4 := net.ParseMAC(bd.VtepMAC)
					if err1 != nil || err2 != nil || err3 != nil || err4 != nil || bd.VNI != 1 {
						continue
					}
					if err := kv.AddPeer(p, ip, mac); err != nil {
						t.Errorf("flanneld node %s: program %s: %v", name, n.Name, err)
					}
					programmed[n.Name] = true
				}
			}
			select {
			case <-ctx.Done():
			case <-time.After(200 * time.Millisecond):
			}
		}
	}()
	t.Cleanup(func() { cancel(); <-done })
}

// TestKubeMixed: a vxrouter node and a flanneld node (kernel vxlan) in
// one cluster's Kubernetes mode see each other as peers through their
// Nodes' annotations, and their pods ping and carry TCP and UDP both ways.
func TestKubeMixed(t *testing.T) {
	o := newOverlay(t, network16)
	k := o.kube()
	hv, hf := o.host("vx"), o.host("fl")
	k.flannelKubeNode(hf, "flannel", "172.16.7.0/24", "d6:51:2e:80:5c:69")
	k.node("vx", "172.16.8.0/24", nil)
	nv, env := k.start(hv, "vx")
	pv, pf := o.pod(hv, env.Subnet.Masked()), o.pod(hf, netip.MustParsePrefix("172.16.7.0/24"))
	o.mustPing(pv, pf)
	o.mustPing(pf, pv)
	o.mustCarry(pv, pf)
	o.mustCarry(pf, pv)
	k.checkNode("vx", hv.Underlay, netip.Addr{}, vtepMAC(t, nv))
	// The flanneld node's Node is as it wrote it.
	if got := k.get("flannel").Annotations[kubePrefix+"backend-data"]; got != `{"VNI":1,"VtepMAC":"d6:51:2e:80:5c:69"}` {
		t.Errorf("flanneld's backend-data changed to %s", got)
	}
	peers, err := nv.Peers(o.ctx)
	if err != nil || len(peers) != 1 || peers[0].VtepMAC != "d6:51:2e:80:5c:69" || peers[0].PartialCsum {
		t.Errorf("vxrouter's peers %+v %v: want the flanneld node, checksums complete", peers, err)
	}
}

// TestKubeBadInput: a Node with no podCIDR yet makes the node wait and
// say which Node and what to check, then come up once it has one; a
// podCIDR outside Network, a token the API server refuses and a Node that
// does not exist stop the node with an error that says so, before it
// writes anything: no annotation, no subnet.env, no device.
func TestKubeBadInput(t *testing.T) {
	o := newOverlay(t, network16)
	k := o.kube()
	k.node("late", "", nil)
	k.node("outside", "10.99.0.0/24", nil)
	badKubeconfig := filepath.Join(o.dir, "bad-kubeconfig")
	if err := k.api.WriteKubeconfig(badKubeconfig, "not-the-token"); err != nil {
		t.Fatal(err)
	}

	for i, c := range []struct {
		node, want string
		args       []string
	}{
		{"outside", "podCIDR 10.99.0.0/24, outside Network 172.16.0.0/16", nil},
		{"missing", `Node "missing" not found`, nil},
		{"outside", "refused our credentials", []string{"--kubeconfig-file", badKubeconfig}},
	} {
		h := o.host("bad" + strconv.Itoa(i))
		n, err := h.StartVXRouter(lab.NodeOptions{
			Binary: binary, Etcd: o.etcd.UnixEndpoint(), Dir: filepath.Join(o.dir, h.Name),
			Args: append(k.args(c.node), c.args...),
		})
		if err != nil {
			t.Fatal(err)
		}
		select {
		case <-n.Done():
		case <-time.After(30 * time.Second):
			n.Stop(time.Second)
			t.Fatalf("%s: the node goes on:\n%s", c.want, n.Log())
		}
		err = n.Stop(time.Second)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("node %s: %v, want an error saying %q", c.node, err, c.want)
		}
		if _, err := os.Stat(n.SubnetFile); err == nil {
			t.Errorf("node %s wrote subnet.env", c.node)
		}
		if out, _ := h.Run(o.ctx, "ip", "-o", "link", "show"); strings.Contains(out, "vxr0") {
			t.Errorf("node %s left its device: %s", c.node, out)
		}
	}
	if ann := k.get("outside").Annotations; len(ann) != 1 {
		t.Errorf("Node outside annotated: %v", ann)
	}

	h := o.host("late")
	n, err := h.StartVXRouter(lab.NodeOptions{Binary: binary, Etcd: o.etcd.UnixEndpoint(), Dir: filepath.Join(o.dir, "late"), Args: k.args("late")})
	if err != nil {
		t.Fatal(err)
	}
	o.nodes = append(o.nodes, n)
	o.within(20*time.Second, "the node says what it waits for", func() error {
		if l := n.Log(); !strings.Contains(l, "waiting for the Node's podCIDR") || !strings.Contains(l, "node=late") || !strings.Contains(l, "--allocate-node-cidrs=true") {
			return fmt.Errorf("log:\n%s", l)
		}
		return nil
	})
	if _, err := os.Stat(n.SubnetFile); err == nil {
		t.Error("subnet.env written before there was a podCIDR")
	}
	if _, err := k.c.CoreV1().Nodes().Patch(o.ctx, "late", types.StrategicMergePatchType, []byte(`{"spec":{"podCIDR":"172.16.33.0/24","podCIDRs":["172.16.33.0/24"]}}`), metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(o.ctx, 30*time.Second)
	defer cancel()
	env, err := n.WaitSubnet(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if env.Subnet != netip.MustParsePrefix("172.16.33.1/24") {
		t.Errorf("subnet.env %s", env.Subnet)
	}
	k.checkNode("late", h.Underlay, netip.Addr{}, vtepMAC(t, n))
}

// TestKubeDualStack: in a dual-stack cluster (podCIDRs of both families,
// net-conf.json with EnableIPv6), two vxrouter nodes take both podCIDRs,
// write backend-v6-data and public-ipv6 beside the IPv4 annotations, and
// their pods ping and carry TCP and UDP over IPv4 and IPv6, both ways.
func TestKubeDualStack(t *testing.T) {
	o := newOverlay(t, dualNetwork)
	k := o.kube()
	k.node("d1", "172.16.11.0/24,fd00:16:0:11::/64", nil)
	k.node("d2", "fd00:16:0:22::/64,172.16.22.0/24", nil)
	h1, h2 := o.host("d1"), o.host("d2")
	n1, env1 := k.start(h1, "d1")
	n2, env2 := k.start(h2, "d2")
	if env1.Lease() != netip.MustParsePrefix("172.16.11.0/24") || env1.IPv6Lease() != netip.MustParsePrefix("fd00:16:0:11::/64") ||
		env2.Lease() != netip.MustParsePrefix("172.16.22.0/24") || env2.IPv6Lease() != netip.MustParsePrefix("fd00:16:0:22::/64") {
		t.Fatalf("subnet.env %+v and %+v, want the podCIDRs", env1, env2)
	}
	p1, p2 := o.podOf(h1, env1), o.podOf(h2, env2)
	for _, c := range []struct{ from, to *lab.Pod }{{p1, p2}, {p2, p1}} {
		o.mustPingAddr(c.from, c.to.Addr)
		o.mustPingAddr(c.from, c.to.Addr6)
		o.mustCarryTo(c.from, c.to, c.to.Addr)
		o.mustCarryTo(c.from, c.to, c.to.Addr6)
	}
	k.checkNode("d1", h1.Underlay, h1.Underlay6, vtepMAC(t, n1))
	k.checkNode("d2", h2.Underlay, h2.Underlay6, vtepMAC(t, n2))
}

// TestKubeAPIServerOutage: with the API server down, nodes go on
// forwarding between the peers they know; once it is back they learn a
// node that joined meanwhile (its Node written to etcd while the API
// server was away would be the same; here it joins after), and a pod of
// each reaches the newcomer's.
func TestKubeAPIServerOutage(t *testing.T) {
	o := newOverlay(t, network16)
	k := o.kube()
	k.node("o1", "172.16.1.0/24", nil)
	k.node("o2", "172.16.2.0/24", nil)
	h1, h2 := o.host("o1"), o.host("o2")
	n1, env1 := k.start(h1, "o1")
	_, env2 := k.start(h2, "o2")
	p1, p2 := o.pod(h1, env1.Subnet.Masked()), o.pod(h2, env2.Subnet.Masked())
	o.mustPing(p1, p2)
	k.checkNode("o1", h1.Underlay, netip.Addr{}, vtepMAC(t, n1)) // up, and said so

	opts := k.api.Options()
	if err := k.api.Close(); err != nil {
		t.Fatal(err)
	}
	k.api = nil
	o.mustPing(p1, p2)
	o.mustCarry(p2, p1)

	api, err := kubetest.Start(o.ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	k.api = api
	k.node("o3", "172.16.3.0/24", nil)
	h3 := o.host("o3")
	_, env3 := k.start(h3, "o3")
	p3 := o.pod(h3, env3.Subnet.Masked())
	// The nodes' informers come back after their backoff (up to half a
	// minute in client-go).
	o.within(60*time.Second, "o1 learns o3", func() error {
		if ok, err := knows(o.ctx, n1, env3.Subnet.Masked()); !ok || err != nil {
			return fmt.Errorf("not yet (%v)", err)
		}
		return nil
	})
	o.mustPing(p1, p3)
	o.mustPing(p3, p2)
	for _, n := range o.nodes {
		select {
		case <-n.Done():
			t.Errorf("node %s stopped during the outage:\n%s", n.Host.Name, n.Log())
		default:
		}
	}
}
