package kube

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"

	"vxrouter/internal/kubetest"
	"vxrouter/lease"
)

// cluster is one test's API server, an admin client, and net-conf.json.
type cluster struct {
	t       *testing.T
	ctx     context.Context
	api     *kubetest.APIServer
	c       kubernetes.Interface
	netConf string
	ann     Annotations
}

const netConf = `{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan"}}`

func newCluster(t *testing.T, o kubetest.Options) *cluster {
	t.Helper()
	api := kubetest.New(t, o)
	c, err := kubernetes.NewForConfig(api.REST(""))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	p := filepath.Join(t.TempDir(), "net-conf.json")
	if err := os.WriteFile(p, []byte(netConf), 0o644); err != nil {
		t.Fatal(err)
	}
	ann, _ := NewAnnotations(DefaultAnnotationPrefix)
	return &cluster{t: t, ctx: ctx, api: api, c: c, netConf: p, ann: ann}
}

// node creates a Node as kubelet registers one: with an annotation of
// its own already, and podCIDR as the controller manager gives it ("" for
// none yet).
func (k *cluster) node(name, podCIDR string, ann map[string]string) *corev1.Node {
	k.t.Helper()
	a := map[string]string{"node.alpha.kubernetes.io/ttl": "0"}
	for key, v := range ann {
		a[key] = v
	}
	n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Annotations: a}, Spec: corev1.NodeSpec{PodCIDR: podCIDR}}
	if podCIDR != "" {
		n.Spec.PodCIDRs = []string{podCIDR}
	}
	n, err := k.c.CoreV1().Nodes().Create(k.ctx, n, metav1.CreateOptions{})
	if err != nil {
		k.t.Fatal(err)
	}
	return n
}

func (k *cluster) get(name string) *corev1.Node {
	k.t.Helper()
	n, err := k.c.CoreV1().Nodes().Get(k.ctx, name, metav1.GetOptions{})
	if err != nil {
		k.t.Fatal(err)
	}
	return n
}

func (k *cluster) patch(name, patch string) {
	k.t.Helper()
	if _, err := k.c.CoreV1().Nodes().Patch(k.ctx, name, types.StrategicMergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
		k.t.Fatal(err)
	}
}

func (k *cluster) options(name string, log *slog.Logger) Options {
	return Options{REST: k.api.REST(""), NodeName: name, NetConfPath: k.netConf, SetNetworkUnavailable: true, Timeout: 10 * time.Second, Log: log}
}

func (k *cluster) open(name string) *Source {
	k.t.Helper()
	s, err := Open(k.ctx, k.options(name, slog.New(slog.NewTextHandler(testWriter{k.t}, nil))))
	if err != nil {
		k.t.Fatal(err)
	}
	k.t.Cleanup(func() { s.Close() })
	return s
}

// within retries f until it succeeds or d passes.
func within(t *testing.T, d time.Duration, what string, f func() error) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s: %v", what, d, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestAcquire: a node with a podCIDR gets it as its lease, and its Node
// the annotations flanneld writes, byte for byte; nothing else on the
// Node changes. Acquiring again writes nothing new.
func TestAcquire(t *testing.T) {
	k := newCluster(t, kubetest.Options{})
	k.node("a", "10.244.7.0/24", map[string]string{"example.com/keep": "me"})
	s := k.open("a")
	cfg, err := s.Config(k.ctx)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Network != netip.MustParsePrefix("10.244.0.0/16") || cfg.SubnetLen != 24 {
		t.Errorf("config %+v", cfg)
	}
	l, err := s.AcquireSubnets(k.ctx, cfg, attrs(t, "192.0.2.1", "d6:51:2e:80:5c:69", true), nil, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if l.Subnet != netip.MustParsePrefix("10.244.7.0/24") {
		t.Errorf("lease %s, want the podCIDR", l.Subnet)
	}
	n := k.get("a")
	want := map[string]string{
		"flannel.alpha.coreos.com/kube-subnet-manager": "true",
		"flannel.alpha.coreos.com/backend-type":        "vxlan",
		"flannel.alpha.coreos.com/backend-data":        `{"VNI":1,"VtepMAC":"d6:51:2e:80:5c:69","PartialCsum":true}`,
		"flannel.alpha.coreos.com/public-ip":           "192.0.2.1",
		"example.com/keep":                             "me",
		"node.alpha.kubernetes.io/ttl":                 "0",
	}
	if fmt.Sprint(n.Annotations) != fmt.Sprint(want) {
		t.Errorf("annotations\n got %v\nwant %v", n.Annotations, want)
	}
	rv := n.ResourceVersion
	if _, err := s.AcquireSubnets(k.ctx, cfg, attrs(t, "192.0.2.1", "d6:51:2e:80:5c:69", true), nil, time.Hour); err != nil {
		t.Fatal(err)
	}
	if n := k.get("a"); n.ResourceVersion != rv {
		t.Errorf("acquiring the same again wrote the Node (resourceVersion %s -> %s)", rv, n.ResourceVersion)
	}

	// A watcher alone in the cluster hears that it knows every peer: none.
	ctx, cancel := context.WithTimeout(k.ctx, 20*time.Second)
	defer cancel()
	err = s.WatchBatches(ctx, func(evs []lease.Event) {
		if len(evs) != 0 {
			t.Errorf("events %v", evs)
		}
		cancel()
	})
	if !errors.Is(err, context.Canceled) {
		t.Errorf("no first batch: %v", err)
	}
}

// TestAcquireOverwrite: an operator's public-ip-overwrite is what the
// Node says; node-public-ip is handed to the node as its own address;
// garbage in either is an error that names the annotation, and nothing
// is written.
func TestAcquireOverwrite(t *testing.T) {
	k := newCluster(t, kubetest.Options{})
	k.node("a", "10.244.7.0/24", map[string]string{k.ann.PublicIPOverwrite: "203.0.113.9", k.ann.NodePublicIP: "192.0.2.5", k.ann.NodePublicIPv6: "fd77::5"})
	s := k.open("a")
	if s.NodePublicIP() != netip.MustParseAddr("192.0.2.5") || s.NodePublicIPv6() != netip.MustParseAddr("fd77::5") {
		t.Errorf("node-public-ip %v, node-public-ipv6 %v", s.NodePublicIP(), s.NodePublicIPv6())
	}
	cfg, _ := s.Config(k.ctx)
	if _, err := s.AcquireSubnets(k.ctx, cfg, attrs(t, "192.0.2.5", "d6:51:2e:80:5c:69", false), nil, time.Hour); err != nil {
		t.Fatal(err)
	}
	if got := k.get("a").Annotations[k.ann.PublicIP]; got != "203.0.113.9" {
		t.Errorf("public-ip %q, want the overwrite", got)
	}

	k.node("b", "10.244.8.0/24", map[string]string{k.ann.PublicIPOverwrite: "not-an-ip"})
	sb := k.open("b")
	_, err := sb.AcquireSubnets(k.ctx, cfg, attrs(t, "192.0.2.6", "d6:51:2e:80:5c:6a", false), nil, time.Hour)
	if err == nil || !strings.Contains(err.Error(), "public-ip-overwrite") {
		t.Errorf("bad overwrite: err = %v", err)
	}
	if _, ok := k.get("b").Annotations[k.ann.KubeSubnetManager]; ok {
		t.Error("annotations written despite the error")
	}

	k.node("c", "10.244.9.0/24", map[string]string{k.ann.NodePublicIP: "fd00::1"})
	if _, err := Open(k.ctx, k.options("c", nil)); err == nil || !strings.Contains(err.Error(), "node-public-ip") {
		t.Errorf("bad node-public-ip: err = %v", err)
	}
}

// TestOpenWaitsForPodCIDR: with no podCIDR yet, Open waits and says which
// Node and what to check, and goes on once the controller manager (here
// the test) assigns one.
func TestOpenWaitsForPodCIDR(t *testing.T) {
	k := newCluster(t, kubetest.Options{})
	k.node("a", "", nil)
	var buf syncBuffer
	type result struct {
		s   *Source
		err error
	}
	done := make(chan result, 1)
	go func() {
		s, err := Open(k.ctx, k.options("a", slog.New(slog.NewTextHandler(&buf, nil))))
		done <- result{s, err}
	}()
	within(t, 20*time.Second, "the wait is logged", func() error {
		if s := buf.String(); !strings.Contains(s, "waiting for the Node's podCIDR") || !strings.Contains(s, "--allocate-node-cidrs") || !strings.Contains(s, "node=a") {
			return fmt.Errorf("log: %s", s)
		}
		return nil
	})
	select {
	case r := <-done:
		t.Fatalf("Open returned before there was a podCIDR: %v", r.err)
	default:
	}
	k.patch("a", `{"spec":{"podCIDR":"10.244.3.0/24","podCIDRs":["10.244.3.0/24"]}}`)
	select {
	case r := <-done:
		if r.err != nil {
			t.Fatal(r.err)
		}
		defer r.s.Close()
		if r.s.subnet != netip.MustParsePrefix("10.244.3.0/24") {
			t.Errorf("subnet %s", r.s.subnet)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("Open did not see the podCIDR")
	}

	// A dual-stack overlay waits for both, and says which are missing;
	// the lengths of the podCIDRs are the config's.
	k.node("b", "", nil)
	dualConf := filepath.Join(t.TempDir(), "dual.json")
	os.WriteFile(dualConf, []byte(`{"Network":"10.244.0.0/16","EnableIPv6":true,"IPv6Network":"fd00:244::/56","Backend":{"Type":"vxlan"}}`), 0o644)
	var buf2 syncBuffer
	o := k.options("b", slog.New(slog.NewTextHandler(&buf2, nil)))
	o.NetConfPath = dualConf
	go func() {
		s, err := Open(k.ctx, o)
		done <- result{s, err}
	}()
	within(t, 20*time.Second, "the wait is logged", func() error {
		if s := buf2.String(); !strings.Contains(s, `missing="IPv4 and IPv6"`) {
			return fmt.Errorf("log: %s", s)
		}
		return nil
	})
	k.patch("b", `{"spec":{"podCIDR":"10.244.5.0/25","podCIDRs":["10.244.5.0/25","fd00:244:0:5::/80"]}}`)
	select {
	case r := <-done:
		if r.err != nil {
			t.Fatal(r.err)
		}
		defer r.s.Close()
		cfg, err := r.s.Config(k.ctx)
		if err != nil || r.s.subnet6 != netip.MustParsePrefix("fd00:244:0:5::/80") || cfg.SubnetLen != 25 || cfg.IPv6SubnetLen != 80 {
			t.Errorf("subnets %s %s, config %+v %v", r.s.subnet, r.s.subnet6, cfg, err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("Open did not see the podCIDRs")
	}
}

// TestOpenErrors: what cannot work is a clear error from Open, before
// anything is written.
func TestOpenErrors(t *testing.T) {
	k := newCluster(t, kubetest.Options{})
	k.node("outside", "10.99.1.0/24", nil)
	dual := &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: "dual", Annotations: map[string]string{"node.alpha.kubernetes.io/ttl": "0"}},
		Spec:       corev1.NodeSpec{PodCIDR: "fd00:1::/64", PodCIDRs: []string{"fd00:1::/64", "10.244.4.0/24"}},
	}
	if _, err := k.c.CoreV1().Nodes().Create(k.ctx, dual, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	badConf := filepath.Join(t.TempDir(), "bad.json")
	os.WriteFile(badConf, []byte(`{"Network":"10.244.0.0/16"}`), 0o644)

	for _, c := range []struct {
		name string
		edit func(*Options)
		want string
	}{
		{"outside", nil, "outside Network 10.244.0.0/16"},
		{"missing", nil, `Node "missing" not found`},
		{"outside", func(o *Options) { o.REST = k.api.REST("wrong-token") }, "refused our credentials"},
		{"outside", func(o *Options) { o.NetConfPath = "/nonexistent/net-conf.json" }, "--net-config-path"},
		{"outside", func(o *Options) { o.NetConfPath = badConf }, "Backend is missing"},
		{"outside", func(o *Options) { o.AnnotationPrefix = "Bad" }, "--kube-annotation-prefix"},
		{"", nil, "set NODE_NAME"},
		{"", func(o *Options) { o.PodName, o.PodNamespace = "nope", "default" }, "pod default/nope"},
	} {
		o := k.options(c.name, nil)
		if c.edit != nil {
			c.edit(&o)
		}
		s, err := Open(k.ctx, o)
		if err == nil {
			s.Close()
		}
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: err = %v, want %q", c.name, err, c.want)
		}
	}
	for _, name := range []string{"outside", "dual"} {
		if _, ok := k.get(name).Annotations[k.ann.KubeSubnetManager]; ok {
			t.Errorf("%s: annotated despite the error", name)
		}
	}
	// Dual-stack podCIDRs: the IPv4 one, wherever it is.
	s := k.open("dual")
	if s.subnet != netip.MustParsePrefix("10.244.4.0/24") {
		t.Errorf("dual-stack: subnet %s", s.subnet)
	}
}

// events collects WatchBatches' batches.
type events struct {
	mu      sync.Mutex
	batches [][]lease.Event
}

func (e *events) add(evs []lease.Event) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.batches = append(e.batches, append([]lease.Event(nil), evs...))
}

// peers is what the batches so far add up to: subnet -> public IP.
func (e *events) peers() map[string]string {
	e.mu.Lock()
	defer e.mu.Unlock()
	m := map[string]string{}
	for _, b := range e.batches {
		for _, ev := range b {
			if ev.Type == lease.Removed {
				delete(m, ev.Lease.Subnet.String())
			} else {
				m[ev.Lease.Subnet.String()] = ev.Lease.Attrs.PublicIP.String()
			}
		}
	}
	return m
}

func (e *events) count() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return len(e.batches)
}

func wantPeers(t *testing.T, e *events, want map[string]string) {
	t.Helper()
	within(t, 20*time.Second, "peers", func() error {
		if got := e.peers(); fmt.Sprint(got) != fmt.Sprint(want) {
			return fmt.Errorf("peers %v, want %v", got, want)
		}
		return nil
	})
}

// TestWatchBatches: peers are the other Nodes with kube-subnet-manager
// and a podCIDR, flanneld's as well as vxrouter's; a Node with garbage
// is skipped with a warning; changes, late podCIDRs and deleted Nodes
// are followed.
func TestWatchBatches(t *testing.T) {
	k := newCluster(t, kubetest.Options{})
	k.node("self", "10.244.1.0/24", flannelAnnotations("192.0.2.1", "aa:bb:cc:dd:ee:01"))
	k.node("flannel", "10.244.2.0/24", flannelAnnotations("192.0.2.2", "aa:bb:cc:dd:ee:02"))
	garbage := flannelAnnotations("192.0.2.3", "aa:bb:cc:dd:ee:03")
	garbage[k.ann.BackendData] = `{"VNI":1,"VtepMAC":"not a mac"}`
	k.node("garbage", "10.244.3.0/24", garbage)
	k.node("plain", "10.244.4.0/24", nil)                                    // no subnet manager: no peer
	k.node("late", "", flannelAnnotations("192.0.2.5", "aa:bb:cc:dd:ee:05")) // no podCIDR yet

	var buf syncBuffer
	s, err := Open(k.ctx, k.options("self", slog.New(slog.NewTextHandler(&buf, nil))))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx, cancel := context.WithCancel(k.ctx)
	var ev events
	done := make(chan error, 1)
	go func() { done <- s.WatchBatches(ctx, ev.add) }()
	wantPeers(t, &ev, map[string]string{"10.244.2.0/24": "192.0.2.2"})
	if !strings.Contains(buf.String(), "peer=garbage") || !strings.Contains(buf.String(), "VtepMAC") {
		t.Errorf("no warning about the garbage Node:\n%s", buf.String())
	}

	k.patch("late", `{"spec":{"podCIDR":"10.244.5.0/24","podCIDRs":["10.244.5.0/24"]}}`)
	wantPeers(t, &ev, map[string]string{"10.244.2.0/24": "192.0.2.2", "10.244.5.0/24": "192.0.2.5"})
	k.patch("garbage", `{"metadata":{"annotations":{"flannel.alpha.coreos.com/backend-data":"{\"VNI\":1,\"VtepMAC\":\"aa:bb:cc:dd:ee:03\"}"}}}`)
	wantPeers(t, &ev, map[string]string{"10.244.2.0/24": "192.0.2.2", "10.244.3.0/24": "192.0.2.3", "10.244.5.0/24": "192.0.2.5"})
	k.patch("flannel", `{"metadata":{"annotations":{"flannel.alpha.coreos.com/public-ip":"192.0.2.22"}}}`)
	wantPeers(t, &ev, map[string]string{"10.244.2.0/24": "192.0.2.22", "10.244.3.0/24": "192.0.2.3", "10.244.5.0/24": "192.0.2.5"})
	// A peer turned to garbage is no peer any more.
	k.patch("late", `{"metadata":{"annotations":{"flannel.alpha.coreos.com/public-ip":"-"}}}`)
	wantPeers(t, &ev, map[string]string{"10.244.2.0/24": "192.0.2.22", "10.244.3.0/24": "192.0.2.3"})
	if err := k.c.CoreV1().Nodes().Delete(k.ctx, "garbage", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	wantPeers(t, &ev, map[string]string{"10.244.2.0/24": "192.0.2.22"})
	// Changes to what is no peer send nothing: after two of them and a
	// peer's change, one batch has come, the peer's.
	n := ev.count()
	k.patch("plain", `{"metadata":{"annotations":{"example.com/x":"y"}}}`)
	k.patch("self", `{"metadata":{"annotations":{"example.com/x":"y"}}}`)
	k.patch("flannel", `{"metadata":{"annotations":{"flannel.alpha.coreos.com/public-ip":"192.0.2.23"}}}`)
	wantPeers(t, &ev, map[string]string{"10.244.2.0/24": "192.0.2.23"})
	if got := ev.count() - n; got != 1 {
		t.Errorf("%d batches for one change to a peer and two to no peer, want 1", got)
	}
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Errorf("WatchBatches returned %v", err)
	}
}

// TestKeepAlive: NetworkUnavailable=False with flannel's reason, the
// Node's other conditions untouched; annotations someone removed are
// written again; a deleted Node is an error that says so.
func TestKeepAlive(t *testing.T) {
	k := newCluster(t, kubetest.Options{})
	k.node("a", "10.244.7.0/24", nil)
	// kubelet's condition, which must stay.
	if _, err := k.c.CoreV1().Nodes().PatchStatus(k.ctx, "a", []byte(`{"status":{"conditions":[{"type":"Ready","status":"True","reason":"KubeletReady","message":"kubelet is posting ready status"},{"type":"NetworkUnavailable","status":"True","reason":"NoRouteCreated","message":"not yet"}]}}`)); err != nil {
		t.Fatal(err)
	}
	s := k.open("a")
	cfg, _ := s.Config(k.ctx)
	a := attrs(t, "192.0.2.1", "d6:51:2e:80:5c:69", false)
	l, err := s.AcquireSubnets(k.ctx, cfg, a, nil, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- s.KeepAlive(k.ctx, cfg, l, nil) }()
	within(t, 20*time.Second, "condition", func() error {
		conds := map[corev1.NodeConditionType]corev1.NodeCondition{}
		for _, c := range k.get("a").Status.Conditions {
			conds[c.Type] = c
		}
		nu := conds[corev1.NodeNetworkUnavailable]
		if nu.Status != corev1.ConditionFalse || nu.Reason != "FlannelIsUp" {
			return fmt.Errorf("NetworkUnavailable %+v", nu)
		}
		if conds[corev1.NodeReady].Reason != "KubeletReady" {
			return fmt.Errorf("Ready %+v", conds[corev1.NodeReady])
		}
		return nil
	})

	k.patch("a", `{"metadata":{"annotations":{"flannel.alpha.coreos.com/backend-data":null,"flannel.alpha.coreos.com/public-ip":"192.0.2.99"}}}`)
	within(t, 20*time.Second, "annotations written again", func() error {
		n := k.get("a")
		if n.Annotations[k.ann.BackendData] != `{"VNI":1,"VtepMAC":"d6:51:2e:80:5c:69"}` || n.Annotations[k.ann.PublicIP] != "192.0.2.1" {
			return fmt.Errorf("annotations %v", n.Annotations)
		}
		return nil
	})

	if err := k.c.CoreV1().Nodes().Delete(k.ctx, "a", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), `Node "a" was deleted`) {
			t.Errorf("KeepAlive after the Node went: %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("KeepAlive did not notice the Node was deleted")
	}
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// testWriter sends log lines to t.Log.
type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}
