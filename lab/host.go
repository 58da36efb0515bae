package lab

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"sync"
	"time"
)

// Host is one machine on the underlay: a namespace with eth0 on the
// underlay switch, forwarding on, rp_filter off (an overlay's packets
// arrive on one device and leave by another).
type Host struct {
	Name     string     // e.g. "node1"
	NS       string     // its namespace, <prefix>-<name>
	Index    int        // 1 for the first host, 2 for the second...
	Underlay netip.Addr // eth0's address: the Index-th address of the underlay

	lab *Lab

	mu      sync.Mutex
	pods    []*Pod
	bridge  bool                        // cni0 exists
	subnets map[netip.Prefix]*podSubnet // on cni0
	vxlans  map[uint32]*KernelVXLAN
}

// podSubnet tracks the addresses handed out in one subnet on cni0.
type podSubnet struct {
	used map[netip.Addr]bool
}

// AddHost adds a host: namespace <prefix>-<name>, a veth pair from its
// eth0 to the underlay bridge, the next underlay address, lo up,
// forwarding on, rp_filter off.
func (l *Lab) AddHost(name string) (*Host, error) {
	if err := validHostName(name); err != nil {
		return nil, fmt.Errorf("add host: %w", err)
	}
	// Held for the whole build: the index, the address and the peer
	// interface name must stay unique while the commands run.
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return nil, fmt.Errorf("add host %q: %w", name, ErrClosed)
	}
	for _, h := range l.hosts {
		if h.Name == name {
			return nil, fmt.Errorf("add host %q: exists", name)
		}
	}
	idx := len(l.hosts) + 1
	addr, err := hostAddr(l.opts.Underlay, idx)
	if err != nil {
		return nil, fmt.Errorf("add host %q: underlay full: %w", name, err)
	}
	h := &Host{
		Name:     name,
		NS:       l.opts.Prefix + "-" + name,
		Index:    idx,
		Underlay: addr,
		lab:      l,
		subnets:  make(map[netip.Prefix]*podSubnet),
		vxlans:   make(map[uint32]*KernelVXLAN),
	}
	if err := h.build(); err != nil {
		// Deleting the namespace takes the half-built host with it (the
		// veth pair dies with either end).
		return nil, errors.Join(fmt.Errorf("add host %q: %w", name, err), l.delNS(h.NS))
	}
	l.hosts = append(l.hosts, h)
	return h, nil
}

func (h *Host) build() error {
	l := h.lab
	mtu := strconv.Itoa(l.opts.MTU)
	peer := "v-" + h.Name // in the underlay namespace
	addCmd := addrAdd(h.NS, h.Underlay, l.opts.Underlay.Bits(), UnderlayDev)
	err := l.r.all(
		[]string{"ip", "netns", "add", h.NS},
		// Before any interface exists, so that every one made later
		// inherits rp_filter=0 from "default".
		sysctlCmd(h.NS, hostSysctls()...),
		[]string{"ip", "-n", h.NS, "link", "set", "lo", "up"},
		[]string{"ip", "-n", l.ul, "link", "add", peer, "mtu", mtu, "type", "veth",
			"peer", "name", UnderlayDev, "mtu", mtu, "netns", h.NS},
		[]string{"ip", "-n", l.ul, "link", "set", peer, "master", UnderlayBridge, "up"},
		addCmd,
		[]string{"ip", "-n", h.NS, "link", "set", UnderlayDev, "up"},
	)
	if err != nil {
		return err
	}
	if err := l.r.waitForwarding(l.ul, peer); err != nil {
		return err
	}
	return l.r.waitAddr(h.NS, UnderlayDev, h.Underlay)
}

func hostSysctls() []string {
	s := []string{
		"net.ipv4.ip_forward=1",
		"net.ipv4.conf.all.rp_filter=0",
		"net.ipv4.conf.default.rp_filter=0",
	}
	if ipv6Enabled() {
		s = append(s, "net.ipv6.conf.all.forwarding=1")
	}
	return s
}

func ipv6Enabled() bool {
	_, err := os.Stat("/proc/sys/net/ipv6")
	return err == nil
}

// sysctlCmd writes sysctls inside namespace ns; /proc/sys/net shows the
// namespace of the process that opens it.
func sysctlCmd(ns string, settings ...string) []string {
	return append([]string{"ip", "netns", "exec", ns, "sysctl", "-q", "-w"}, settings...)
}

func nsExists(ns string) bool {
	_, err := os.Stat(netnsDir + "/" + ns)
	return err == nil
}

// Pods returns the host's pods in the order they were added.
func (h *Host) Pods() []*Pod {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.pods)
}

// Command returns a command that runs name in the host's namespace
// (`ip netns exec NS name args...`). Close and Cleanup kill it, and
// anything it starts, if it still runs then.
func (h *Host) Command(ctx context.Context, name string, args ...string) *exec.Cmd {
	return command(ctx, h.lab.r, h.NS, name, args...)
}

// Run runs name in the host's namespace and returns its combined output.
// The error names the command and includes the output.
func (h *Host) Run(ctx context.Context, name string, args ...string) (string, error) {
	return h.lab.r.runIn(ctx, h.NS, name, args...)
}

// Ping pings dst from the host; see Pod.Ping.
func (h *Host) Ping(ctx context.Context, dst netip.Addr, count int) (PingResult, error) {
	return echo(ctx, h.Do, dst, count, 200*time.Millisecond)
}

// Do runs fn on an OS thread inside the host's namespace, so sockets,
// listeners and TUN devices fn creates belong to the host. Goroutines fn
// starts run outside it; a socket keeps its namespace wherever it is used.
func (h *Host) Do(fn func() error) error {
	return doInNamespace(h.NS, fn)
}

// delNS deletes namespace ns, taking everything in it along (a veth
// pair dies with either end); a namespace that is already gone is no
// error.
func (l *Lab) delNS(ns string) error {
	_, err := l.r.run(context.Background(), "ip", "netns", "del", ns)
	if err != nil && !nsExists(ns) {
		return nil
	}
	return err
}

// runIn runs name in namespace ns and returns its combined output; the
// error names the command and includes the output.
func (r *runner) runIn(ctx context.Context, ns, name string, args ...string) (string, error) {
	return r.run(ctx, "ip", append([]string{"netns", "exec", ns, name}, args...)...)
}

func command(ctx context.Context, r *runner, ns, name string, args ...string) *exec.Cmd {
	// ip netns exec execs name in place, so the Cmd's process is the
	// program itself and cancelling ctx kills the program, not a wrapper.
	cmd := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", ns, name}, args...)...)
	r.record(cmd.Args)
	return cmd
}
