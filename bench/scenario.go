package bench

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"vxrouter/lab"
	"vxrouter/lease"
)

// The overlay every scenario uses, with the subnets of DESIGN.md's story
// for the scenarios without etcd.
var (
	overlayNetwork = netip.MustParsePrefix("172.16.0.0/16")
	subnetA        = netip.MustParsePrefix("172.16.99.0/24")
	subnetB        = netip.MustParsePrefix("172.16.57.0/24")
)

// Setup limits: a node is up in about a second; the first packet across a
// fresh overlay may wait for a peer's lease to arrive.
const (
	nodeStartTimeout = 30 * time.Second
	reachTimeout     = 20 * time.Second
	nodeStopTimeout  = 5 * time.Second
	logTailLines     = 12
)

// Env is what a Scenario needs to build its topology.
type Env struct {
	Prefix string // namespace prefix for lab.New
	Dir    string // scratch directory for etcd and node state; must exist
	Binary string // the vxrouter binary, for the vxrouter scenarios
	// RunArgs are appended to every vxrouter node's `run` flags, after
	// the scenario's own.
	RunArgs []string
	Log     *slog.Logger
}

// Scenario is one data plane to measure. Build makes a fresh topology of
// two hosts with one pod each, reachable from each other.
type Scenario struct {
	Name        string
	Description string
	// Kernel is true when the data plane is in the kernel: there is no
	// process to charge CPU time to.
	Kernel bool
	// RunArgs are this scenario's flags for `vxrouter run`.
	RunArgs []string
	build   func(ctx context.Context, s Scenario, env Env, t *Topology) error
}

// Scenarios returns the scenarios the bench knows, in the order it runs
// them.
func Scenarios() []Scenario {
	return []Scenario{
		{
			Name:        "underlay",
			Description: "no overlay: pods routed host to host over the underlay without encapsulation (flannel's host-gw)",
			Kernel:      true,
			build:       buildUnderlay,
		},
		{
			Name:        "kernel-vxlan",
			Description: "the kernel's vxlan device, programmed as flannel's vxlan backend does (static peers)",
			Kernel:      true,
			build:       buildKernelVXLAN,
		},
		{
			Name:        "vxrouter-water",
			Description: "two vxrouter nodes, plain TUN (one packet per read), leases in an embedded etcd",
			RunArgs:     []string{"--tun-backend", "water"},
			build:       buildVXRouter,
		},
		{
			Name:        "vxrouter-offload",
			Description: "two vxrouter nodes, TUN with offloads (TSO/GRO super-packets), leases in an embedded etcd",
			RunArgs:     []string{"--tun-backend", "offload"},
			build:       buildVXRouter,
		},
		{
			Name:        "vxrouter-to-kernel",
			Description: "mixed overlay: client on a vxrouter node (offload), server on a kernel-vxlan node programmed as flannel does, default offloads everywhere",
			RunArgs:     []string{"--tun-backend", "offload"},
			build:       buildMixed(true),
		},
		{
			Name:        "kernel-to-vxrouter",
			Description: "mixed overlay: client on a kernel-vxlan node programmed as flannel does, server on a vxrouter node (offload), default offloads everywhere",
			RunArgs:     []string{"--tun-backend", "offload"},
			build:       buildMixed(false),
		},
	}
}

// LookupScenario returns the scenario called name.
func LookupScenario(name string) (Scenario, bool) {
	for _, s := range Scenarios() {
		if s.Name == name {
			return s, true
		}
	}
	return Scenario{}, false
}

// Topology is a built scenario: traffic goes from Client to Server.
type Topology struct {
	Client, Server *lab.Pod
	// Pids are the vxrouter processes whose CPU time the bench reads;
	// empty for a kernel data plane.
	Pids []int
	// Notes say where the topology differs from what was asked for.
	Notes []string

	nodes   []*lab.Node
	closers []func() error // run in reverse order by Close
	once    sync.Once
	err     error
}

// Build makes the scenario's topology. On error nothing it made is left
// behind; the error carries the vxrouter nodes' log tails if any.
func (s Scenario) Build(ctx context.Context, env Env) (*Topology, error) {
	if env.Log == nil {
		env.Log = slog.New(slog.DiscardHandler)
	}
	t := &Topology{}
	if err := s.build(ctx, s, env, t); err != nil {
		// Stopped first, so that a node still starting when another one
		// failed has written what it has to say; the logs go with Close.
		for _, n := range t.nodes {
			n.Stop(nodeStopTimeout)
		}
		logs := t.Logs()
		cerr := t.Close()
		if logs != "" {
			err = &BuildError{Err: err, Log: logs}
		}
		return nil, errors.Join(fmt.Errorf("build %s: %w", s.Name, err), cerr)
	}
	return t, nil
}

// BuildError is a failed build of a scenario with vxrouter nodes; Log is
// the tail of their logs, which usually says why.
type BuildError struct {
	Err error
	Log string
}

func (e *BuildError) Error() string { return e.Err.Error() }
func (e *BuildError) Unwrap() error { return e.Err }

// Close stops the vxrouter nodes, removes the lab's namespaces and the
// etcd. It may be called more than once.
func (t *Topology) Close() error {
	t.once.Do(func() {
		var errs []error
		for i := len(t.closers) - 1; i >= 0; i-- {
			errs = append(errs, t.closers[i]())
		}
		t.err = errors.Join(errs...)
	})
	return t.err
}

// Check reports an error, with its log, if a vxrouter node has exited.
func (t *Topology) Check() error {
	for _, n := range t.nodes {
		select {
		case <-n.Done():
			return fmt.Errorf("vxrouter on %s exited during the tests:\n%s", n.Host.Name, tail(n.Log(), logTailLines))
		default:
		}
	}
	return nil
}

// Logs returns the last lines of every vxrouter node's log.
func (t *Topology) Logs() string {
	var b strings.Builder
	for _, n := range t.nodes {
		fmt.Fprintf(&b, "--- vxrouter on %s (%s)\n%s\n", n.Host.Name, n.LogFile, tail(n.Log(), logTailLines))
	}
	return strings.TrimSpace(b.String())
}

func (t *Topology) onClose(f func() error) { t.closers = append(t.closers, f) }

// twoHosts builds a lab with hosts node1 and node2.
func twoHosts(env Env, t *Topology) (*lab.Lab, *lab.Host, *lab.Host, error) {
	l, err := lab.New(lab.Options{Prefix: env.Prefix, Log: env.Log})
	if err != nil {
		return nil, nil, nil, err
	}
	t.onClose(l.Close)
	h1, err := l.AddHost("node1")
	if err != nil {
		return nil, nil, nil, err
	}
	h2, err := l.AddHost("node2")
	if err != nil {
		return nil, nil, nil, err
	}
	return l, h1, h2, nil
}

// addPods puts pod "pa" on h1 in sa and "pb" on h2 in sb, and waits until
// pa reaches pb.
func addPods(ctx context.Context, t *Topology, h1, h2 *lab.Host, sa, sb netip.Prefix) error {
	var err error
	if t.Client, err = h1.AddPod("pa", sa); err != nil {
		return err
	}
	if t.Server, err = h2.AddPod("pb", sb); err != nil {
		return err
	}
	return t.Client.WaitReachable(ctx, t.Server.Addr, reachTimeout)
}

// buildUnderlay routes each host's pod subnet to the other host's
// underlay address: the path has every hop the overlays have (pod veth,
// bridge, forwarding, underlay veth and bridge) but no encapsulation.
func buildUnderlay(ctx context.Context, _ Scenario, env Env, t *Topology) error {
	_, h1, h2, err := twoHosts(env, t)
	if err != nil {
		return err
	}
	if _, err := h1.Run(ctx, "ip", "route", "add", subnetB.String(), "via", h2.Underlay.String()); err != nil {
		return err
	}
	if _, err := h2.Run(ctx, "ip", "route", "add", subnetA.String(), "via", h1.Underlay.String()); err != nil {
		return err
	}
	return addPods(ctx, t, h1, h2, subnetA, subnetB)
}

// buildKernelVXLAN makes flannel.1 on both hosts and programs each with
// the other as a peer, as flannel would on seeing the other's lease.
func buildKernelVXLAN(ctx context.Context, _ Scenario, env Env, t *Topology) error {
	_, h1, h2, err := twoHosts(env, t)
	if err != nil {
		return err
	}
	k1, err := h1.KernelVXLAN(lab.KernelVXLANConfig{Subnet: subnetA})
	if err != nil {
		return err
	}
	k2, err := h2.KernelVXLAN(lab.KernelVXLANConfig{Subnet: subnetB})
	if err != nil {
		return err
	}
	if err := k1.AddPeer(subnetB, h2.Underlay, k2.VtepMAC); err != nil {
		return err
	}
	if err := k2.AddPeer(subnetA, h1.Underlay, k1.VtepMAC); err != nil {
		return err
	}
	return addPods(ctx, t, h1, h2, subnetA, subnetB)
}

// buildVXRouter starts an embedded etcd with the overlay's config and a
// vxrouter node on each host, and puts the pods in the subnets the nodes
// leased.
func buildVXRouter(ctx context.Context, s Scenario, env Env, t *Topology) error {
	o, err := startOverlay(ctx, s, env, t)
	if err != nil {
		return err
	}
	_, h1, h2, err := twoHosts(env, t)
	if err != nil {
		return err
	}
	subnets, err := o.startNodes(ctx, t, h1, h2)
	if err != nil {
		return err
	}
	if err := addPods(ctx, t, h1, h2, subnets[0], subnets[1]); err != nil {
		return err
	}
	return t.Check()
}

// kernelPeerMAC is the VTEP MAC of the kernel-vxlan node of the mixed
// scenarios: node B's of DESIGN.md's story.
var kernelPeerMAC = net.HardwareAddr{0xd6, 0x51, 0x2e, 0x80, 0x5c, 0x69}

// buildMixed is a vxrouter node and a kernel-vxlan node in one overlay,
// the kernel's programmed as flannel programs it: the kernel node takes a
// lease in etcd as flanneld would (which the vxrouter node learns from
// its watch), and gets the vxrouter node's lease as a route, neighbour
// and FDB entry. The client is on the vxrouter node if vxClient, else on
// the kernel node.
func buildMixed(vxClient bool) func(ctx context.Context, s Scenario, env Env, t *Topology) error {
	return func(ctx context.Context, s Scenario, env Env, t *Topology) error {
		o, err := startOverlay(ctx, s, env, t)
		if err != nil {
			return err
		}
		_, hv, hk, err := twoHosts(env, t)
		if err != nil {
			return err
		}
		attrs := lease.Attrs{PublicIP: hk.Underlay, BackendType: "vxlan", VNI: o.cfg.Backend.VNI, VtepMAC: kernelPeerMAC}
		own, err := o.reg.Acquire(ctx, o.cfg, attrs, netip.Prefix{}, time.Hour)
		if err != nil {
			return fmt.Errorf("kernel node's lease: %w", err)
		}
		k, err := hk.KernelVXLAN(lab.KernelVXLANConfig{
			VNI:     uint32(o.cfg.Backend.VNI),
			Port:    uint16(o.cfg.Backend.Port),
			VtepMAC: kernelPeerMAC,
			Subnet:  own.Subnet,
		})
		if err != nil {
			return err
		}
		subnets, err := o.startNodes(ctx, t, hv)
		if err != nil {
			return err
		}
		vx, err := o.leaseOf(ctx, subnets[0])
		if err != nil {
			return err
		}
		if err := k.AddPeer(vx.Subnet, vx.Attrs.PublicIP, vx.Attrs.VtepMAC); err != nil {
			return err
		}
		if vxClient {
			err = addPods(ctx, t, hv, hk, subnets[0], own.Subnet)
		} else {
			err = addPods(ctx, t, hk, hv, own.Subnet, subnets[0])
		}
		if err != nil {
			return err
		}
		return t.Check()
	}
}

// overlay is a scenario's etcd, with the overlay's config in it, and
// what starting vxrouter nodes on it takes.
type overlay struct {
	etcd *lease.Embedded
	reg  *lease.Registry
	cfg  *lease.Config
	dir  string
	args []string
	bin  string
}

// startOverlay starts an embedded etcd in a scratch directory of the
// scenario's and writes the overlay's config.
func startOverlay(ctx context.Context, s Scenario, env Env, t *Topology) (*overlay, error) {
	if env.Binary == "" {
		return nil, errors.New("no vxrouter binary")
	}
	dir, err := os.MkdirTemp(env.Dir, s.Name+"-")
	if err != nil {
		return nil, err
	}
	t.onClose(func() error { return os.RemoveAll(dir) })

	// lease.StartEmbedded binds its socket in etcdDir but does not make it.
	etcdDir := filepath.Join(dir, "etcd")
	if err := os.MkdirAll(etcdDir, 0o700); err != nil {
		return nil, err
	}
	etcd, err := lease.StartEmbedded(etcdDir)
	if err != nil {
		return nil, fmt.Errorf("start embedded etcd: %w", err)
	}
	t.onClose(etcd.Close)
	cli, err := etcd.Client()
	if err != nil {
		return nil, err
	}
	t.onClose(cli.Close)
	cfg, err := lease.DefaultConfig(overlayNetwork)
	if err != nil {
		return nil, err
	}
	reg := lease.NewRegistry(cli, lease.DefaultPrefix, env.Log)
	if err := reg.SetConfig(ctx, cfg); err != nil {
		return nil, err
	}
	return &overlay{etcd: etcd, reg: reg, cfg: cfg, dir: dir, args: slices.Concat(s.RunArgs, env.RunArgs), bin: env.Binary}, nil
}

// startNodes starts a vxrouter node on each of hosts and returns the
// subnets they leased, in order.
func (o *overlay) startNodes(ctx context.Context, t *Topology, hosts ...*lab.Host) ([]netip.Prefix, error) {
	var nodes []*lab.Node
	for _, h := range hosts {
		n, err := h.StartVXRouter(lab.NodeOptions{
			Binary: o.bin,
			Etcd:   o.etcd.UnixEndpoint(),
			Dir:    filepath.Join(o.dir, h.Name),
			Args:   o.args,
		})
		if err != nil {
			return nil, err
		}
		nodes = append(nodes, n)
		t.nodes = append(t.nodes, n)
		// Before the lab's Close (registered earlier, so run later): a
		// node stopped by SIGTERM exits cleanly, one killed with its
		// namespace does not.
		t.onClose(func() error {
			n.Stop(nodeStopTimeout) // its exit status is no concern of the bench's
			return nil
		})
		t.Pids = append(t.Pids, n.Pid())
	}
	var subnets []netip.Prefix
	for _, n := range nodes {
		wctx, cancel := context.WithTimeout(ctx, nodeStartTimeout)
		env, err := n.WaitSubnet(wctx)
		cancel()
		if err != nil {
			return nil, err
		}
		subnets = append(subnets, env.Lease())
		t.Notes = append(t.Notes, dataPlaneNotes(n.Host.Name, n.Log(), o.args)...)
	}
	return subnets, nil
}

// leaseOf reads the lease of subnet from etcd.
func (o *overlay) leaseOf(ctx context.Context, subnet netip.Prefix) (lease.Lease, error) {
	ls, _, err := o.reg.Leases(ctx)
	if err != nil {
		return lease.Lease{}, err
	}
	for _, l := range ls {
		if l.Subnet == subnet {
			return l, nil
		}
	}
	return lease.Lease{}, fmt.Errorf("no lease of %s in etcd", subnet)
}

// dataPlaneNotes finds the node's "data plane" log line, which says what
// it really runs: the offload backend falls back to water where the
// kernel refuses offloads, and a figure must not be credited to a backend
// that did not produce it.
func dataPlaneNotes(host, log string, runArgs []string) []string {
	const marker = `msg="data plane" `
	var line string
	for l := range strings.Lines(log) {
		if i := strings.Index(l, marker); i >= 0 {
			line = strings.TrimSpace(l[i+len(marker):])
		}
	}
	if line == "" {
		return nil
	}
	notes := []string{host + ": " + line}
	if i := slices.Index(runArgs, "--tun-backend"); i >= 0 && i+1 < len(runArgs) {
		if want := "tun-backend=" + runArgs[i+1]; !slices.Contains(strings.Fields(line), want) {
			notes = append(notes, fmt.Sprintf("%s: WARNING: asked for %s, runs %s", host, want, line))
		}
	}
	return notes
}

// tail returns the last n lines of s.
func tail(s string, n int) string {
	s = strings.TrimRight(s, "\n")
	lines := strings.Split(s, "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
