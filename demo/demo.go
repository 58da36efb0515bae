package demo

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"vxrouter/lab"
	"vxrouter/lease"
)

// Defaults of Options.
var (
	DefaultNetwork        = netip.MustParsePrefix("172.16.0.0/16")
	DefaultServiceNetwork = netip.MustParsePrefix("192.168.3.0/24")
)

const (
	DefaultNodes   = 3
	DefaultPrefix  = "vxrdemo"
	DefaultTimeout = 90 * time.Second
	MinNodes       = 2
	MaxNodes       = 20
)

// Options say what demo to run. Check them with Check; Run does.
type Options struct {
	// Binary is the vxrouter binary the demo starts its etcd and nodes
	// from, normally the running one.
	Binary string
	// Nodes is how many vxrouter nodes, MinNodes to MaxNodes. With three or
	// more, the Service's two backends live on two nodes other than the
	// client's; with two, both live on the second node.
	Nodes int
	// Network is the overlay (the pod network); ServiceNetwork the range
	// the Service's ClusterIP is taken from (its 10th address).
	Network, ServiceNetwork netip.Prefix
	// Prefix names the namespaces (<prefix>-node1, ...) and Dir.
	Prefix string
	// Keep leaves the lab up when the demo ends well; Down removes it.
	Keep bool
	// RunArgs are passed on to every `vxrouter run`.
	RunArgs []string
	// Timeout bounds the whole run.
	Timeout time.Duration
	// SVG, if set, is where the picture of the pod-to-pod journey, with the
	// lab's own addresses, is written (as `vxrouter explain --svg` draws it).
	SVG string
	// Out gets the narration; Log the lab's commands (debug) and warnings.
	Out io.Writer
	Log *slog.Logger
}

// Check says what is wrong with o, naming the flag, before anything is
// built: a network etcd would refuse, or with fewer subnets than nodes,
// would fail half-way through, less clearly.
func (o Options) Check() error {
	if o.Nodes < MinNodes || o.Nodes > MaxNodes {
		return fmt.Errorf("--nodes %d: want %d to %d", o.Nodes, MinNodes, MaxNodes)
	}
	if len(o.Prefix) == 0 || len(o.Prefix) > 8 {
		return fmt.Errorf("--prefix %q: want 1 to 8 characters (interface names are short)", o.Prefix)
	}
	cfg, err := lease.ParseConfig(fmt.Appendf(nil, `{"Network":%q,"Backend":{"Type":"vxlan"}}`, o.Network.String()))
	if err != nil {
		return fmt.Errorf("--network: %w", err)
	}
	if n := cfg.SubnetCount(); uint64(o.Nodes) > n {
		return fmt.Errorf("--network %s holds %d subnets of /%d: too few for --nodes %d", o.Network, n, cfg.SubnetLen, o.Nodes)
	}
	s := o.ServiceNetwork
	switch {
	case !s.IsValid() || !s.Addr().Is4():
		return fmt.Errorf("--service-network %v: want an IPv4 network like %s", s, DefaultServiceNetwork)
	case s.Bits() > 28:
		return fmt.Errorf("--service-network %s: too small; want /28 or larger (the ClusterIP is its 10th address)", s)
	case s.Overlaps(o.Network):
		return fmt.Errorf("--service-network %s overlaps the pod network %s: ClusterIPs must be addresses no pod has", s, o.Network)
	case s.Overlaps(lab.DefaultUnderlay):
		return fmt.Errorf("--service-network %s overlaps the demo's node network %s", s, lab.DefaultUnderlay)
	}
	if o.Network.Overlaps(lab.DefaultUnderlay) {
		return fmt.Errorf("--network %s overlaps the demo's node network %s", o.Network, lab.DefaultUnderlay)
	}
	if o.Timeout <= 0 {
		return fmt.Errorf("--timeout %s: want a positive duration", o.Timeout)
	}
	return nil
}

// Dir is where a demo keeps etcd's data, the nodes' state and logs; fixed
// per prefix, so that Down finds what Keep left.
func Dir(prefix string) string {
	return filepath.Join(os.TempDir(), "vxrouter-demo-"+prefix)
}

// Down removes what a demo with this prefix left: the processes in its
// namespaces (nodes, captures), the namespaces with everything in them
// (links, routes, iptables rules), its etcd and its files.
func Down(prefix string) error {
	dir := Dir(prefix)
	err := lab.Cleanup(prefix)
	if b, rerr := os.ReadFile(filepath.Join(dir, "etcd.pid")); rerr == nil {
		if pid, perr := strconv.Atoi(strings.TrimSpace(string(b))); perr == nil && isOurEtcd(pid, dir) {
			syscall.Kill(pid, syscall.SIGTERM)
			for i := 0; i < 50 && syscall.Kill(pid, 0) == nil; i++ {
				time.Sleep(100 * time.Millisecond)
			}
		}
	}
	return errors.Join(err, os.RemoveAll(dir))
}

// isOurEtcd reports whether pid is still the etcd a demo started in dir
// (pids are reused; never signal a stranger).
func isOurEtcd(pid int, dir string) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	return err == nil && bytes.Contains(b, []byte(filepath.Join(dir, "etcd")))
}

// tools are the programs the demo runs besides ip, and the Debian
// package of each.
var tools = []struct{ name, pkg string }{
	{"iptables-restore", "iptables"},
	{"iptables", "iptables"},
	{"tcpdump", "tcpdump"},
	{"sysctl", "procps"},
}

// run is one demo's state, filled in step by step.
type run struct {
	o   Options
	ctx context.Context
	w   io.Writer
	dir string

	endpoint string // etcd's
	etcdCmd  *exec.Cmd
	cli      *clientv3.Client
	reg      *lease.Registry
	lab      *lab.Lab
	nodes    []*node
	outside  *lab.Host

	captures []*capture // every tcpdump started, to stop and reap at the end
	step     int
	failures []string
}

// node is one vxrouter node of the demo, with its lease and its pod.
type node struct {
	*lab.Node
	env lease.SubnetEnv
	pod *lab.Pod
}

func (n *node) name() string { return n.Host.Name }

// Run builds the demo, narrates it to o.Out and, unless o.Keep, tears it
// down. It returns nil only if every step succeeded; see the package doc.
func Run(parent context.Context, o Options) (err error) {
	if err := o.Check(); err != nil {
		return err
	}
	if os.Geteuid() != 0 {
		return errors.New("demo needs root: it creates network namespaces, TUN devices, veth pairs and iptables rules (run it with sudo)")
	}
	for _, t := range tools {
		if _, err := exec.LookPath(t.name); err != nil {
			return fmt.Errorf("demo needs %s (apt-get install %s)", t.name, t.pkg)
		}
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	ctx, cancel := context.WithTimeout(parent, o.Timeout)
	defer cancel()
	// Whatever failed on the way down, an interrupt or a timeout is what
	// the user needs to hear (the teardown below runs either way).
	defer func() {
		switch {
		case err == nil:
		case parent.Err() != nil:
			err = errors.New("interrupted; everything the demo made is removed")
		case ctx.Err() != nil:
			err = fmt.Errorf("gave up after --timeout %s (%v); everything the demo made is removed", o.Timeout, err)
		}
	}()
	// A kept demo of the same prefix, or a crashed one, goes first.
	if err := Down(o.Prefix); err != nil {
		return fmt.Errorf("remove an earlier demo: %w", err)
	}
	r := &run{o: o, ctx: ctx, w: o.Out, dir: Dir(o.Prefix)}
	// Made fresh and private: the demo runs as root in a world-writable
	// /tmp, and a directory someone else made there first must not be
	// trusted with etcd's socket or the nodes' state.
	if err := os.Mkdir(r.dir, 0o700); err != nil {
		return fmt.Errorf("demo directory: %w", err)
	}
	keep := false // set once everything is up and Keep asked for it
	defer func() {
		if r.cli != nil {
			r.cli.Close()
		}
		if keep {
			return
		}
		for _, c := range r.captures {
			c.stop()
		}
		if derr := Down(o.Prefix); derr != nil && err == nil {
			err = derr
		}
		// Down killed the nodes; reap them before exiting, or they stay
		// zombies where init does not reap (some containers).
		deadline := time.After(5 * time.Second)
		for _, n := range r.nodes {
			select {
			case <-n.Done():
			case <-deadline:
			}
		}
	}()

	r.p("vxrouter demo: %d nodes, overlay %s, VXLAN over UDP, leases in etcd.", o.Nodes, o.Network)
	steps := []struct {
		title string
		do    func() error
	}{
		{"Three networks", r.networks},
		{"etcd holds the overlay's config", r.etcd},
		{"The node network: one bridge, a host per node", r.underlay},
		{"Each node starts vxrouter and takes a subnet lease", r.startNodes},
		{"A pod on each node, behind the bridge cni0", r.pods},
		{"The TUN device, the routes and subnet.env on each node", r.tunAndRoutes},
		{"Pod to pod: ping across the overlay", r.podToPod},
		{"Pod to the outside: the node masquerades", r.toOutside},
		{"Pod to a Service: kube-proxy's DNAT, then the overlay", r.toService},
		{"What the nodes counted", r.counters},
	}
	for _, s := range steps {
		if err := ctx.Err(); err != nil {
			return err
		}
		r.step++
		r.p("\n%d. %s", r.step, s.title)
		if err := s.do(); err != nil {
			return err
		}
	}
	if o.SVG != "" {
		if err := r.picture(o.SVG); err != nil {
			r.fail("picture: %v", err)
		}
	}

	r.p("")
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if len(r.failures) > 0 {
		for _, n := range r.nodes {
			r.p("--- log of %s (%s)", n.name(), n.LogFile)
			r.p("%s", n.Log())
		}
		return fmt.Errorf("%d step(s) failed: %s", len(r.failures), strings.Join(r.failures, "; "))
	}
	r.p("result: every step worked: every ping answered, the outside reached, every")
	r.p("connection to the Service answered by the backend its DNAT rule counted")
	if o.Keep {
		keep = true
		r.keepMessage()
	}
	return nil
}

// p prints one line of narration.
func (r *run) p(format string, args ...any) { fmt.Fprintf(r.w, format+"\n", args...) }

// indent prints text, a command's output, with every line indented.
func (r *run) indent(prefix, text string) {
	for _, line := range strings.Split(strings.TrimRight(text, "\n"), "\n") {
		fmt.Fprintf(r.w, "%s%s\n", prefix, strings.TrimRight(line, " "))
	}
}

// fail records a failed check; the run goes on and fails at the end.
func (r *run) fail(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	r.failures = append(r.failures, msg)
	r.p("   FAILED: %s", msg)
}

// cmd shows a command run on a host and its output.
func (r *run) cmd(h *lab.Host, name string, args ...string) (string, error) {
	out, err := h.Run(r.ctx, name, args...)
	r.p("   %s$ %s", h.Name, strings.Join(append([]string{name}, args...), " "))
	r.indent("      ", out)
	return out, err
}

// iptables runs iptables on a host and shows it; -w waits for the xtables
// lock, which a node's --ip-masq resync may hold a moment (legacy
// iptables), and is left out of what is shown.
func (r *run) iptables(h *lab.Host, args ...string) (string, error) {
	out, err := h.Run(r.ctx, "iptables", append([]string{"-w", "5"}, args...)...)
	r.p("   %s$ iptables %s", h.Name, strings.Join(args, " "))
	r.indent("      ", out)
	return out, err
}
