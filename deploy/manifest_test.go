package deploy

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/restmapper"

	"vxrouter/internal/kubetest"
	"vxrouter/kube"
	"vxrouter/lease"
)

const manifest = "kube-vxrouter.yml"

// objects reads the manifest's documents.
func objects(t *testing.T) []*unstructured.Unstructured {
	t.Helper()
	b, err := os.ReadFile(manifest)
	if err != nil {
		t.Fatal(err)
	}
	dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(b), 4096)
	var out []*unstructured.Unstructured
	for {
		var u unstructured.Unstructured
		err := dec.Decode(&u.Object)
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatalf("%s: %v", manifest, err)
		}
		if len(u.Object) > 0 {
			out = append(out, &u)
		}
	}
}

func find(t *testing.T, objs []*unstructured.Unstructured, kind string, into any) {
	t.Helper()
	for _, u := range objs {
		if u.GetKind() == kind {
			if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, into); err != nil {
				t.Fatalf("%s: %v", kind, err)
			}
			return
		}
	}
	t.Fatalf("%s: no %s", manifest, kind)
}

// TestManifestShape: the DaemonSet is what the Kubernetes mode needs:
// the host's network, NET_ADMIN and NET_RAW, the node's name, the TUN
// device, /run/flannel for subnet.env, flannel's CNI install, and a
// net-conf.json and CNI config that parse.
func TestManifestShape(t *testing.T) {
	objs := objects(t)
	var ds appsv1.DaemonSet
	find(t, objs, "DaemonSet", &ds)
	pod := ds.Spec.Template.Spec
	if !pod.HostNetwork {
		t.Error("not hostNetwork")
	}
	if len(pod.Containers) != 1 {
		t.Fatalf("%d containers", len(pod.Containers))
	}
	c := pod.Containers[0]
	if !slices.Contains(c.Args, "--kube-subnet-mgr") {
		t.Errorf("args %v: no --kube-subnet-mgr", c.Args)
	}
	caps := c.SecurityContext.Capabilities.Add
	if !slices.Contains(caps, "NET_ADMIN") || !slices.Contains(caps, "NET_RAW") {
		t.Errorf("capabilities %v", caps)
	}
	env := map[string]string{}
	for _, e := range c.Env {
		if e.ValueFrom != nil && e.ValueFrom.FieldRef != nil {
			env[e.Name] = e.ValueFrom.FieldRef.FieldPath
		}
	}
	if env["NODE_NAME"] != "spec.nodeName" {
		t.Errorf("NODE_NAME from %q", env["NODE_NAME"])
	}
	mounts := map[string]string{}
	for _, m := range c.VolumeMounts {
		mounts[m.MountPath] = m.Name
	}
	for _, p := range []string{"/run/flannel", "/dev/net/tun", "/etc/kube-flannel/", "/var/lib/vxrouter"} {
		if mounts[p] == "" {
			t.Errorf("nothing mounted at %s", p)
		}
	}
	var cni bool
	for _, ic := range pod.InitContainers {
		if slices.Contains(ic.Args, "/etc/cni/net.d/10-flannel.conflist") {
			cni = true
		}
	}
	if !cni {
		t.Error("no init container installs the CNI config")
	}

	var cm corev1.ConfigMap
	find(t, objs, "ConfigMap", &cm)
	if _, err := lease.ParseConfig([]byte(cm.Data["net-conf.json"])); err != nil {
		t.Errorf("net-conf.json: %v", err)
	}
	if !json.Valid([]byte(cm.Data["cni-conf.json"])) {
		t.Error("cni-conf.json is not JSON")
	}
}

// TestManifestOnAPIServer: a real API server takes every object of the
// manifest in a server-side dry run; and with RBAC on, the manifest's
// ClusterRole is all a node needs: one with the service account's
// identity finds its Node through its pod, annotates it, sets its
// condition and lists its peers, while a user without the binding is
// refused with an error that names what is missing.
func TestManifestOnAPIServer(t *testing.T) {
	objs := objects(t)
	saToken, noneToken := "sa-token-for-the-test", "no-role-token-for-the-test"
	api := kubetest.New(t, kubetest.Options{RBAC: true, Users: []kubetest.User{
		{Name: "system:serviceaccount:kube-vxrouter:vxrouter", Token: saToken, Groups: []string{"system:serviceaccounts", "system:serviceaccounts:kube-vxrouter", "system:authenticated"}},
		{Name: "nobody", Token: noneToken, Groups: []string{"system:authenticated"}},
	}})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	rc := api.REST("")
	dyn, err := dynamic.NewForConfig(rc)
	if err != nil {
		t.Fatal(err)
	}
	disc, err := discovery.NewDiscoveryClientForConfig(rc)
	if err != nil {
		t.Fatal(err)
	}
	groups, err := restmapper.GetAPIGroupResources(disc)
	if err != nil {
		t.Fatal(err)
	}
	mapper := restmapper.NewDiscoveryRESTMapper(groups)
	res := func(u *unstructured.Unstructured) dynamic.ResourceInterface {
		gvk := u.GroupVersionKind()
		m, err := mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
		if err != nil {
			t.Fatalf("%s: %v", gvk, err)
		}
		if m.Scope.Name() == "namespace" {
			return dyn.Resource(m.Resource).Namespace(u.GetNamespace())
		}
		return dyn.Resource(m.Resource)
	}
	dry := metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}, FieldValidation: "Strict"}
	// The namespace first, for real: a dry run of what goes in it needs it.
	for _, u := range objs {
		if u.GetKind() == "Namespace" {
			if _, err := res(u).Create(ctx, u, dry); err != nil {
				t.Fatalf("dry run of Namespace: %v", err)
			}
			if _, err := res(u).Create(ctx, u, metav1.CreateOptions{}); err != nil {
				t.Fatal(err)
			}
		}
	}
	for _, u := range objs {
		if u.GetKind() == "Namespace" {
			continue
		}
		if _, err := res(u).Create(ctx, u, dry); err != nil {
			t.Errorf("dry run of %s %s: %v", u.GetKind(), u.GetName(), err)
		}
	}
	cs, err := kubernetes.NewForConfig(rc)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cs.AppsV1().DaemonSets("kube-vxrouter").Get(ctx, "kube-vxrouter-ds", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("the dry run left a DaemonSet behind: %v", err)
	}

	// The RBAC objects for real, a Node, and the DaemonSet's pod on it.
	var netConf string
	for _, u := range objs {
		switch u.GetKind() {
		case "ClusterRole", "ClusterRoleBinding", "ServiceAccount":
			if _, err := res(u).Create(ctx, u, metav1.CreateOptions{}); err != nil {
				t.Fatal(err)
			}
		case "ConfigMap":
			netConf, _, _ = unstructured.NestedString(u.Object, "data", "net-conf.json")
		}
	}
	node := &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: "w1", Annotations: map[string]string{"node.alpha.kubernetes.io/ttl": "0"}},
		Spec:       corev1.NodeSpec{PodCIDR: "10.244.1.0/24", PodCIDRs: []string{"10.244.1.0/24"}},
	}
	if _, err := cs.CoreV1().Nodes().Create(ctx, node, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "kube-vxrouter-ds-w1", Namespace: "kube-vxrouter"},
		Spec:       corev1.PodSpec{NodeName: "w1", ServiceAccountName: "vxrouter", Containers: []corev1.Container{{Name: "vxrouter", Image: "vxrouter:latest"}}},
	}
	if _, err := cs.CoreV1().Pods("kube-vxrouter").Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	confPath := filepath.Join(t.TempDir(), "net-conf.json")
	if err := os.WriteFile(confPath, []byte(netConf), 0o644); err != nil {
		t.Fatal(err)
	}
	opts := func(token string) kube.Options {
		return kube.Options{
			REST: api.REST(token), PodName: pod.Name, PodNamespace: pod.Namespace,
			NetConfPath: confPath, SetNetworkUnavailable: true, Timeout: 10 * time.Second,
			Log: slog.New(slog.DiscardHandler),
		}
	}

	if _, err := kube.Open(ctx, opts(noneToken)); err == nil || !strings.Contains(err.Error(), "forbidden") || !strings.Contains(err.Error(), "ClusterRole") {
		t.Errorf("a user without the role: %v", err)
	}

	src, err := kube.Open(ctx, opts(saToken))
	if err != nil {
		t.Fatalf("the service account: %v", err)
	}
	defer src.Close()
	if src.NodeName() != "w1" {
		t.Errorf("node %q from the pod, want w1", src.NodeName())
	}
	cfg, err := src.Config(ctx)
	if err != nil {
		t.Fatal(err)
	}
	attrs := lease.Attrs{PublicIP: netip.MustParseAddr("192.0.2.1"), BackendType: "vxlan", VNI: 1, VtepMAC: net.HardwareAddr{0xd6, 0x51, 0x2e, 0x80, 0x5c, 0x69}}
	l, err := src.AcquireSubnets(ctx, cfg, attrs, nil, 0)
	if err != nil {
		t.Fatalf("annotate as the service account: %v", err)
	}
	kctx, kcancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- src.KeepAlive(kctx, cfg, l, nil) }()
	deadline := time.Now().Add(20 * time.Second)
	for {
		n, err := cs.CoreV1().Nodes().Get(ctx, "w1", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if slices.ContainsFunc(n.Status.Conditions, func(c corev1.NodeCondition) bool {
			return c.Type == corev1.NodeNetworkUnavailable && c.Status == corev1.ConditionFalse
		}) {
			break
		}
		if time.Now().After(deadline) {
			kcancel()
			t.Fatalf("no NetworkUnavailable=False as the service account: %v", <-done)
		}
		time.Sleep(100 * time.Millisecond)
	}
	kcancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Errorf("KeepAlive as the service account: %v", err)
	}
	wctx, wcancel := context.WithCancel(ctx)
	if err := src.WatchBatches(wctx, func([]lease.Event) { wcancel() }); !errors.Is(err, context.Canceled) {
		t.Errorf("watch as the service account: %v", err)
	}
	wcancel()
}
