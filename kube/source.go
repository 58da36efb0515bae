package kube

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/netip"
	"os"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	listersv1 "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/clientcmd"

	"vxrouter/internal/retry"
	"vxrouter/lease"
)

// DefaultNetConfPath is flanneld's --net-config-path: where
// kube-flannel.yml mounts net-conf.json from its ConfigMap.
const DefaultNetConfPath = "/etc/kube-flannel/net-conf.json"

// The NetworkUnavailable condition a node sets once it forwards: flannel's
// reason, so tools that look for it find it.
const (
	ConditionReason  = "FlannelIsUp"
	ConditionMessage = "vxrouter (flannel-compatible) is running on this node"
)

// Options say how to reach the API server and which Node is this one.
type Options struct {
	// APIURL (--kube-api-url) and Kubeconfig (--kubeconfig-file) say where
	// the API server is and who we are; with neither, the pod's own
	// service account (in-cluster config).
	APIURL     string
	Kubeconfig string
	// REST, if set, is used instead of APIURL and Kubeconfig.
	REST *rest.Config
	// NodeName is this node's Node; if empty, the Node the pod
	// PodNamespace/PodName runs on.
	NodeName     string
	PodName      string
	PodNamespace string
	// NetConfPath is net-conf.json, the same JSON as etcd's config key
	// (default DefaultNetConfPath).
	NetConfPath string
	// AnnotationPrefix, default DefaultAnnotationPrefix.
	AnnotationPrefix string
	// SetNetworkUnavailable sets the Node's NetworkUnavailable condition
	// to False once the node forwards (flanneld's
	// --set-node-network-unavailable).
	SetNetworkUnavailable bool
	// Timeout bounds each step of Open that talks to the API server
	// (default 30s); the wait for a podCIDR is not bounded.
	Timeout time.Duration
	Log     *slog.Logger
}

// Source is a node.Source backed by the Kubernetes API: the lease is the
// Node's podCIDR, the peers are the other Nodes. Open it, hand it to
// node.Config.Source, Close it when the node has stopped.
type Source struct {
	client  kubernetes.Interface
	host    string // the API server, for errors
	name    string // our Node
	ann     Annotations
	cfg     *lease.Config
	subnet  netip.Prefix // our podCIDR of each family cfg carries, checked against it
	subnet6 netip.Prefix
	nodeIP  netip.Addr // node-public-ip, if set (else unspecified)
	nodeIP6 netip.Addr // node-public-ipv6, likewise
	setCond bool
	timeout time.Duration
	log     *slog.Logger

	factory informers.SharedInformerFactory
	nodes   cache.SharedIndexInformer
	lister  listersv1.NodeLister
	stop    context.CancelFunc
}

// Open reads net-conf.json, connects to the API server, finds this node's
// Node, starts watching every Node and waits until this one has a
// podCIDR of each family the config carries (logging what to check while
// it waits), each in its family's network. Nothing is written to the API
// server yet.
func Open(ctx context.Context, o Options) (_ *Source, err error) {
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.Timeout <= 0 {
		o.Timeout = 30 * time.Second
	}
	if o.NetConfPath == "" {
		o.NetConfPath = DefaultNetConfPath
	}
	if o.AnnotationPrefix == "" {
		o.AnnotationPrefix = DefaultAnnotationPrefix
	}
	s := &Source{setCond: o.SetNetworkUnavailable, timeout: o.Timeout, log: o.Log}
	if s.ann, err = NewAnnotations(o.AnnotationPrefix); err != nil {
		return nil, err
	}
	b, err := os.ReadFile(o.NetConfPath)
	if err != nil {
		return nil, fmt.Errorf("--net-config-path: %w", err)
	}
	if s.cfg, err = lease.ParseConfig(b); err != nil {
		return nil, fmt.Errorf("%s: %w", o.NetConfPath, err)
	}

	rc := o.REST
	if rc == nil {
		if rc, err = restConfig(o.APIURL, o.Kubeconfig); err != nil {
			return nil, err
		}
	}
	s.host = rc.Host
	if s.client, err = kubernetes.NewForConfig(rc); err != nil {
		return nil, fmt.Errorf("kubernetes client for %s: %w", rc.Host, err)
	}
	if s.name, err = s.nodeName(ctx, o); err != nil {
		return nil, err
	}
	s.log = s.log.With("node", s.name)
	if err := s.firstContact(ctx); err != nil {
		return nil, err
	}

	ictx, stop := context.WithCancel(context.WithoutCancel(ctx))
	s.stop = stop
	defer func() {
		if err != nil {
			s.Close()
		}
	}()
	// The nodes the API server lists are in the cache until it tells of
	// a change; five minutes of resync is flannel's, and costs nothing
	// but a pass over the cache.
	s.factory = informers.NewSharedInformerFactory(s.client, 5*time.Minute)
	s.nodes = s.factory.Core().V1().Nodes().Informer()
	s.lister = s.factory.Core().V1().Nodes().Lister()
	s.factory.Start(ictx.Done())
	sctx, cancel := context.WithTimeout(ctx, o.Timeout)
	defer cancel()
	if !cache.WaitForCacheSync(sctx.Done(), s.nodes.HasSynced) {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, fmt.Errorf("list the Nodes of %s: not done within %s (check that the API server is up and this node may list and watch nodes)", s.host, o.Timeout)
	}
	if err := s.waitPodCIDR(ctx); err != nil {
		return nil, err
	}
	n, err := s.lister.Get(s.name)
	if err != nil {
		return nil, s.nodeErr(err)
	}
	// An operator's own address for the node: overwrite's check, with no
	// address of the node's own to fall back to.
	if s.nodeIP, err = overwrite(s.ann.NodePublicIP, n.Annotations, netip.IPv4Unspecified()); err != nil {
		return nil, fmt.Errorf("Node %q: %w", s.name, err)
	}
	if s.nodeIP6, err = overwrite(s.ann.NodePublicIPv6, n.Annotations, netip.IPv6Unspecified()); err != nil {
		return nil, fmt.Errorf("Node %q: %w", s.name, err)
	}
	return s, nil
}

// restConfig is flanneld's choice: the API URL and kubeconfig if given,
// else the pod's service account.
func restConfig(apiURL, kubeconfig string) (*rest.Config, error) {
	if apiURL == "" && kubeconfig == "" {
		rc, err := rest.InClusterConfig()
		if err != nil {
			return nil, fmt.Errorf("no --kubeconfig-file or --kube-api-url, and not in a pod: %w", err)
		}
		return rc, nil
	}
	rc, err := clientcmd.BuildConfigFromFlags(apiURL, kubeconfig)
	if err != nil {
		return nil, fmt.Errorf("kubernetes client config (--kube-api-url %q, --kubeconfig-file %q): %w", apiURL, kubeconfig, err)
	}
	return rc, nil
}

// nodeName is NODE_NAME, or the node the pod POD_NAMESPACE/POD_NAME runs
// on, as in flanneld.
func (s *Source) nodeName(ctx context.Context, o Options) (string, error) {
	if o.NodeName != "" {
		return o.NodeName, nil
	}
	if o.PodName == "" || o.PodNamespace == "" {
		return "", errors.New("which Node is this? set NODE_NAME (the DaemonSet gives it from spec.nodeName), or POD_NAME and POD_NAMESPACE")
	}
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	pod, err := s.client.CoreV1().Pods(o.PodNamespace).Get(ctx, o.PodName, metav1.GetOptions{})
	if err != nil {
		return "", fmt.Errorf("find this node from pod %s/%s at %s: %w", o.PodNamespace, o.PodName, s.host, s.apiErr(err))
	}
	if pod.Spec.NodeName == "" {
		return "", fmt.Errorf("pod %s/%s is not scheduled on a node yet: set NODE_NAME", o.PodNamespace, o.PodName)
	}
	return pod.Spec.NodeName, nil
}

// firstContact reads our Node once, so that a refused token, missing
// permissions or a wrong node name are one clear error, not an informer
// retrying forever. An API server that does not answer is retried until
// the timeout.
func (s *Source) firstContact(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	bo := retry.Backoff{Min: 200 * time.Millisecond, Max: 5 * time.Second}
	for {
		_, err := s.client.CoreV1().Nodes().Get(ctx, s.name, metav1.GetOptions{})
		if err == nil {
			return nil
		}
		if apierrors.IsNotFound(err) || apierrors.IsUnauthorized(err) || apierrors.IsForbidden(err) {
			return s.nodeErr(err)
		}
		if ctx.Err() != nil {
			return fmt.Errorf("API server %s did not answer within %s: %w (check --kube-api-url or the kubeconfig, and that the API server is up)", s.host, s.timeout, err)
		}
		s.log.Warn("API server not reachable yet", "server", s.host, "err", err)
		if !retry.Sleep(ctx, bo.Next()) {
			return fmt.Errorf("API server %s did not answer within %s: %w", s.host, s.timeout, err)
		}
	}
}

// nodeErr says what an error reading or writing our Node means.
func (s *Source) nodeErr(err error) error {
	if apierrors.IsNotFound(err) {
		return fmt.Errorf("Node %q not found at %s: check NODE_NAME or --node-name (kubelet registers its Node under the host's name unless --hostname-override says otherwise)", s.name, s.host)
	}
	return fmt.Errorf("Node %q at %s: %w", s.name, s.host, s.apiErr(err))
}

// apiErr adds what to check to the API server's refusals.
func (s *Source) apiErr(err error) error {
	switch {
	case apierrors.IsUnauthorized(err):
		return fmt.Errorf("%w: the API server refused our credentials (check the token or client certificate in the kubeconfig, or the service account's)", err)
	case apierrors.IsForbidden(err):
		return fmt.Errorf("%w: our user may not do this (it needs get, list and watch on nodes, patch on nodes/status, and get on pods with POD_NAME: see deploy/kube-vxrouter.yml's ClusterRole)", err)
	}
	return err
}

// waitPodCIDR waits, as long as ctx lasts, for our Node to have a
// podCIDR of each family the config carries, and checks each against its
// network.
func (s *Source) waitPodCIDR(ctx context.Context) error {
	kick, done, err := s.watchNodes()
	if err != nil {
		return err
	}
	defer done()
	var waitingSince time.Time
	var lastSaid time.Time
	for {
		n, err := s.lister.Get(s.name)
		if err != nil {
			return s.nodeErr(err)
		}
		v4, v6, err := podCIDRs(n)
		if err != nil {
			return fmt.Errorf("Node %q: %w", s.name, err)
		}
		have4, have6 := v4.IsValid() || !s.cfg.IPv4Enabled(), v6.IsValid() || !s.cfg.IPv6Enabled()
		if have4 && have6 {
			for _, f := range []struct {
				subnet, network netip.Prefix
				field, flag     string
			}{
				{v4, s.cfg.Network, "Network", "--cluster-cidr"},
				{v6, s.cfg.IPv6Network, "IPv6Network", "--cluster-cidr's IPv6 CIDR"},
			} {
				if f.network.IsValid() && (!f.network.Contains(f.subnet.Addr()) || f.subnet.Bits() < f.network.Bits()) {
					return fmt.Errorf("Node %q has podCIDR %s, outside %s %s of net-conf.json: the controller manager's %s and the %s must be the same network", s.name, f.subnet, f.field, f.network, f.flag, f.field)
				}
			}
			if !waitingSince.IsZero() {
				s.log.Info("podCIDR assigned", "pod-cidrs", podCIDRList(n), "after", time.Since(waitingSince).Round(time.Second))
			}
			if s.cfg.IPv4Enabled() {
				s.subnet = v4
			}
			if s.cfg.IPv6Enabled() {
				s.subnet6 = v6
			}
			return nil
		}
		if waitingSince.IsZero() {
			waitingSince = time.Now()
		}
		// Once at first, then every half minute: this is the most
		// asked-about wait of flannel's ("pod cidr not assigned").
		if time.Since(lastSaid) >= 30*time.Second {
			lastSaid = time.Now()
			s.log.Warn("waiting for the Node's podCIDR: the controller manager assigns it when run with --allocate-node-cidrs=true and --cluster-cidr="+s.networks()+
				" (kubeadm: --pod-network-cidr); or set it: kubectl patch node "+s.name+` -p '{"spec":{"podCIDR":"…","podCIDRs":["…"]}}'`,
				"missing", missingFamilies(have4, have6), "pod-cidrs", podCIDRList(n), "waiting", time.Since(waitingSince).Round(time.Second))
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("Node %q has no podCIDR: %w", s.name, ctx.Err())
		case <-kick:
		case <-time.After(30 * time.Second):
		}
	}
}

// missingFamilies says which podCIDRs a Node still lacks.
func missingFamilies(have4, have6 bool) string {
	switch {
	case !have4 && !have6:
		return "IPv4 and IPv6"
	case !have4:
		return "IPv4"
	}
	return "IPv6"
}

// watchNodes returns a channel that receives (without blocking the
// informer) after any Node changes, and a func to stop it.
func (s *Source) watchNodes() (<-chan struct{}, func(), error) {
	kick := make(chan struct{}, 1)
	poke := func() {
		select {
		case kick <- struct{}{}:
		default:
		}
	}
	reg, err := s.nodes.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { poke() },
		UpdateFunc: func(any, any) { poke() },
		DeleteFunc: func(any) { poke() },
	})
	if err != nil {
		return nil, nil, fmt.Errorf("watch Nodes: %w", err)
	}
	poke() // look once at what is there already
	return kick, func() { s.nodes.RemoveEventHandler(reg) }, nil
}

// NodeName is this node's Node.
func (s *Source) NodeName() string { return s.name }

// String names the source for the log and systemd's STATUS.
func (s *Source) String() string { return "the Kubernetes API, Node " + s.name }

// NodePublicIP is the Node's node-public-ip annotation, invalid if unset:
// the node's own address, as --public-ip (flanneld lets it win over the
// flag).
func (s *Source) NodePublicIP() netip.Addr { return set(s.nodeIP) }

// NodePublicIPv6 is the node-public-ipv6 annotation, as --public-ipv6.
func (s *Source) NodePublicIPv6() netip.Addr { return set(s.nodeIP6) }

// set is a, invalid if it is unspecified.
func set(a netip.Addr) netip.Addr {
	if a.IsUnspecified() {
		return netip.Addr{}
	}
	return a
}

// Annotations are the annotation names this source reads and writes.
func (s *Source) Annotations() Annotations { return s.ann }

// Config is net-conf.json's config, with the podCIDRs' lengths as
// SubnetLen and IPv6SubnetLen: the controller manager's
// --node-cidr-mask-size, not the config, decides them here (flannel
// ignores them in this mode too), and SubnetMin and SubnetMax mean
// nothing.
func (s *Source) Config(context.Context) (*lease.Config, error) {
	c := *s.cfg
	if s.subnet.IsValid() {
		c.SubnetLen, c.SubnetMin, c.SubnetMax = s.subnet.Bits(), netip.Addr{}, netip.Addr{}
	}
	if s.subnet6.IsValid() {
		c.IPv6SubnetLen, c.IPv6SubnetMin, c.IPv6SubnetMax = s.subnet6.Bits(), netip.Addr{}, netip.Addr{}
	}
	b, err := c.MarshalJSON()
	if err == nil {
		var p *lease.Config
		if p, err = lease.ParseConfig(b); err == nil {
			return p, nil
		}
	}
	return nil, fmt.Errorf("Node %q's podCIDRs %s do not fit the networks of net-conf.json: %w", s.name, s.subnets(), err)
}

// networks is the config's networks, for messages.
func (s *Source) networks() string {
	var out []string
	for _, p := range []netip.Prefix{s.cfg.Network, s.cfg.IPv6Network} {
		if p.IsValid() {
			out = append(out, p.String())
		}
	}
	return strings.Join(out, ",")
}

// subnets is our podCIDRs, for messages.
func (s *Source) subnets() string {
	var out []string
	for _, p := range []netip.Prefix{s.subnet, s.subnet6} {
		if p.IsValid() {
			out = append(out, p.String())
		}
	}
	return strings.Join(out, ",")
}

// AcquireSubnets writes attrs as the Node's annotations (flannel's, with
// public-ip-overwrite honoured) and returns the lease on its podCIDRs.
// previous and ttl mean nothing here: the controller manager assigns the
// subnets and they last as long as the Node.
func (s *Source) AcquireSubnets(ctx context.Context, cfg *lease.Config, attrs lease.Attrs, _ []netip.Prefix, _ time.Duration) (*lease.Lease, error) {
	n, err := s.lister.Get(s.name)
	if err != nil {
		return nil, s.nodeErr(err)
	}
	if err := s.annotate(ctx, n, attrs); err != nil {
		return nil, err
	}
	s.log.Info("Node annotated", "pod-cidrs", s.subnets(), "public-ip", attrs.PublicIP, "public-ipv6", attrs.PublicIPv6, "annotations", s.ann.Prefix+"…")
	return &lease.Lease{Subnet: s.subnet, IPv6Subnet: s.subnet6, Attrs: attrs}, nil
}

// LeaseKey names the Node that holds l.
func (s *Source) LeaseKey(*lease.Lease) string { return "Node " + s.name }

// annotate patches the Node's annotations that differ from what attrs
// want, retrying until ctx ends; an error that retrying cannot mend
// (a refusal, a Node that is gone, a bad overwrite) ends it at once.
// The patch goes to the status subresource, as flannel's: its RBAC role
// may patch nodes/status only, and metadata goes along there.
func (s *Source) annotate(ctx context.Context, n *corev1.Node, attrs lease.Attrs) error {
	want, err := s.ann.want(attrs, n.Annotations)
	if err != nil {
		return fmt.Errorf("Node %q: %w", s.name, err)
	}
	diff := map[string]string{}
	for k, v := range want {
		if n.Annotations[k] != v {
			diff[k] = v
		}
	}
	if len(diff) == 0 {
		return nil
	}
	patch, err := json.Marshal(map[string]any{"metadata": map[string]any{"annotations": diff}})
	if err != nil {
		return fmt.Errorf("annotations patch: %w", err)
	}
	return s.patchStatus(ctx, "annotate", patch)
}

// patchStatus sends a strategic merge patch to the Node's status
// subresource, retrying what may pass later.
func (s *Source) patchStatus(ctx context.Context, what string, patch []byte) error {
	bo := retry.Backoff{Min: 200 * time.Millisecond, Max: 5 * time.Second}
	for {
		_, err := s.client.CoreV1().Nodes().Patch(ctx, s.name, types.StrategicMergePatchType, patch, metav1.PatchOptions{FieldManager: "vxrouter"}, "status")
		if err == nil {
			return nil
		}
		if apierrors.IsNotFound(err) || apierrors.IsUnauthorized(err) || apierrors.IsForbidden(err) || apierrors.IsInvalid(err) || apierrors.IsBadRequest(err) {
			return fmt.Errorf("%s: %w", what, s.nodeErr(err))
		}
		s.log.Warn("patching the Node failed; trying again", "what", what, "err", err)
		if !retry.Sleep(ctx, bo.Next()) {
			return fmt.Errorf("%s Node %q at %s: %w (last error: %v)", what, s.name, s.host, ctx.Err(), err)
		}
	}
}

// WatchBatches hands fn the leases of every other Node that runs a kube
// subnet manager and has a podCIDR: first all of them in one batch (also
// when there are none), then the differences after each change. A Node
// whose annotations do not parse is skipped with a warning (and, if it
// was a peer, Removed), as a garbled etcd value is.
func (s *Source) WatchBatches(ctx context.Context, fn func([]lease.Event)) error {
	kick, done, err := s.watchNodes()
	if err != nil {
		return err
	}
	defer done()
	known := map[string]lease.Lease{}
	warned := map[string]string{}
	first := true
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-kick:
		}
		nodes, err := s.lister.List(labels.Everything())
		if err != nil {
			return fmt.Errorf("list Nodes: %w", err)
		}
		evs := s.diff(nodes, known, warned)
		if len(evs) > 0 || first {
			fn(evs)
		}
		first = false
	}
}

// diff turns the Nodes now known into events against known (by Node
// name), and updates known: removals first, so a subnet that moves from
// one Node to another is not removed after it is added.
func (s *Source) diff(nodes []*corev1.Node, known map[string]lease.Lease, warned map[string]string) []lease.Event {
	now := make(map[string]lease.Lease, len(nodes))
	for _, n := range nodes {
		if n.Name == s.name {
			continue
		}
		l, err := s.ann.peerLease(n)
		if errors.Is(err, errNotPeer) {
			delete(warned, n.Name)
			continue
		}
		if err != nil {
			if warned[n.Name] != err.Error() {
				warned[n.Name] = err.Error()
				s.log.Warn("peer skipped: its Node's podCIDR or annotations do not parse", "peer", n.Name, "err", err)
			}
			continue
		}
		delete(warned, n.Name)
		now[n.Name] = l
	}
	for name := range warned {
		if _, err := s.lister.Get(name); err != nil {
			delete(warned, name) // gone
		}
	}
	var removed, added []lease.Event
	for _, name := range slices.Sorted(maps.Keys(known)) {
		old := known[name]
		if l, ok := now[name]; !ok || l.Subnet != old.Subnet {
			removed = append(removed, lease.Event{Type: lease.Removed, Lease: old})
			delete(known, name)
		}
	}
	for _, name := range slices.Sorted(maps.Keys(now)) {
		l := now[name]
		if old, ok := known[name]; ok && old.Attrs.Equal(l.Attrs) {
			continue
		}
		added = append(added, lease.Event{Type: lease.Added, Lease: l})
		known[name] = l
	}
	return append(removed, added...)
}

// KeepAlive sets the Node's NetworkUnavailable condition to False (if
// asked to) and then follows the Node: annotations that someone changed
// are written again, a podCIDR that changed is reported to onChange, and
// a Node that is deleted is an error (its podCIDR may go to another
// node). The node calls it once it forwards.
func (s *Source) KeepAlive(ctx context.Context, cfg *lease.Config, l *lease.Lease, onChange func(*lease.Lease)) error {
	if s.setCond {
		if err := s.setNetworkAvailable(ctx); err != nil {
			return err
		}
	}
	kick, done, err := s.watchNodes()
	if err != nil {
		return err
	}
	defer done()
	cur := *l
	bo := retry.Backoff{Min: time.Second, Max: time.Minute}
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-kick:
		}
		n, err := s.lister.Get(s.name)
		if apierrors.IsNotFound(err) {
			// The cache says so; ask the API server before giving up.
			gctx, cancel := context.WithTimeout(ctx, s.timeout)
			_, err = s.client.CoreV1().Nodes().Get(gctx, s.name, metav1.GetOptions{})
			cancel()
			if apierrors.IsNotFound(err) {
				return fmt.Errorf("Node %q was deleted from %s: this node's podCIDRs %s may go to another; restart once the Node is back", s.name, s.host, s.subnets())
			}
			continue
		}
		if err != nil {
			return s.nodeErr(err)
		}
		v4, v6, err := podCIDRs(n)
		if !s.cfg.IPv4Enabled() {
			v4 = netip.Prefix{}
		}
		if !s.cfg.IPv6Enabled() {
			v6 = netip.Prefix{}
		}
		if err != nil || v4 != cur.Subnet || v6 != cur.IPv6Subnet {
			if err != nil || v4.IsValid() != cur.Subnet.IsValid() || v6.IsValid() != cur.IPv6Subnet.IsValid() {
				return fmt.Errorf("Node %q's podCIDRs changed from %s to %q: %v", s.name, s.subnets(), podCIDRList(n), err)
			}
			cur.Subnet, cur.IPv6Subnet = v4, v6
			if onChange != nil {
				c := cur
				onChange(&c)
			}
			continue
		}
		want, err := s.ann.want(cur.Attrs, n.Annotations)
		if err != nil {
			s.log.Warn("annotations not checked", "err", err)
			continue
		}
		changed := false
		for k, v := range want {
			if n.Annotations[k] != v {
				changed = true
			}
		}
		if !changed {
			bo.Reset()
			continue
		}
		// Someone else wrote them (or removed them): write ours again,
		// but not in a tight loop against another writer.
		s.log.Warn("the Node's annotations changed under us; writing them again")
		if !retry.Sleep(ctx, bo.Next()) {
			return ctx.Err()
		}
		if err := s.annotate(ctx, n, cur.Attrs); err != nil {
			return err
		}
	}
}

// setNetworkAvailable sets the Node's NetworkUnavailable condition to
// False, with flannel's reason.
func (s *Source) setNetworkAvailable(ctx context.Context) error {
	now := metav1.Now()
	cond := corev1.NodeCondition{
		Type:               corev1.NodeNetworkUnavailable,
		Status:             corev1.ConditionFalse,
		Reason:             ConditionReason,
		Message:            ConditionMessage,
		LastTransitionTime: now,
		LastHeartbeatTime:  now,
	}
	// Conditions merge by type in a strategic merge patch: the other
	// conditions stay as they are.
	patch, err := json.Marshal(map[string]any{"status": map[string]any{"conditions": []corev1.NodeCondition{cond}}})
	if err != nil {
		return fmt.Errorf("condition patch: %w", err)
	}
	if err := s.patchStatus(ctx, "set NetworkUnavailable=False on", patch); err != nil {
		return err
	}
	s.log.Info("Node condition NetworkUnavailable=False", "reason", ConditionReason)
	return nil
}

// Close stops watching the Nodes.
func (s *Source) Close() error {
	if s.stop != nil {
		s.stop()
	}
	if s.factory != nil {
		s.factory.Shutdown()
	}
	return nil
}
