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
	Underlay netip.Addr // eth0's address: on the main underlay the n-th for its n-th host (the Index-th without segments)
	// Underlay6 is eth0's IPv6 address on the main underlay: the n-th of
	// Options.Underlay6 in a dual-stack lab, Underlay itself in an IPv6
	// one; invalid in an IPv4 one and on a segment (segments are IPv4).
	Underlay6 netip.Addr
	// Segment is the segment eth0 is on, behind its router; nil for the
	// main underlay.
	Segment *Segment

	lab *Lab

	mu      sync.Mutex
	pods    []*Pod
	bridge  bool                        // cni0 exists
	subnets map[netip.Prefix]*podSubnet // on cni0
	vxlans  map[vxlanKey]*KernelVXLAN
	legs    []*Segment // segments Attach gave it an interface on: eth1, eth2...
}

// vxlanKey names a host's kernel vxlan device: flannel makes one per VNI
// and family.
type vxlanKey struct {
	vni uint32
	v6  bool
}

// podSubnet tracks the addresses handed out in one subnet on cni0.
type podSubnet struct {
	used map[netip.Addr]bool
}

// AddHost adds a host: namespace <prefix>-<name>, a veth pair from its
// eth0 to the underlay bridge, the next underlay address, lo up,
// forwarding on, rp_filter off.
func (l *Lab) AddHost(name string) (*Host, error) { return l.addHost(name, nil) }

// addHost adds a host on seg, or on the main underlay when seg is nil.
func (l *Lab) addHost(name string, seg *Segment) (*Host, error) {
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
	network, n := l.opts.Underlay, l.mainHosts+1
	if seg != nil {
		network, n = seg.Prefix, seg.next
	}
	addr, err := hostAddr(network, n)
	if err != nil {
		return nil, fmt.Errorf("add host %q: underlay full: %w", name, err)
	}
	h := &Host{
		Name:     name,
		NS:       l.opts.Prefix + "-" + name,
		Index:    len(l.hosts) + 1,
		Underlay: addr,
		Segment:  seg,
		lab:      l,
		subnets:  make(map[netip.Prefix]*podSubnet),
		vxlans:   make(map[vxlanKey]*KernelVXLAN),
	}
	if u6 := l.Underlay6(); u6.IsValid() && seg == nil {
		if h.Underlay6, err = hostAddr(u6, n); err != nil {
			return nil, fmt.Errorf("add host %q: underlay full: %w", name, err)
		}
	}
	if err := h.build(); err != nil {
		// Deleting the namespace takes the half-built host with it (the
		// veth pair dies with either end).
		return nil, errors.Join(fmt.Errorf("add host %q: %w", name, err), l.delNS(h.NS))
	}
	if seg == nil {
		l.mainHosts++
	} else {
		seg.next++
	}
	l.hosts = append(l.hosts, h)
	return h, nil
}

// build makes the host's namespace and plugs its eth0 into its
// underlay's bridge: ul0 in the underlay namespace, or its segment's in
// the segment's router. A host on the main underlay gets a route to each
// segment via its router; a host on a segment, a default route via its
// router.
func (h *Host) build() error {
	l := h.lab
	mtu := strconv.Itoa(l.opts.MTU)
	peer := "v-" + h.Name // in the bridge's namespace
	brNS, bridge, bits := l.ul, UnderlayBridge, l.opts.Underlay.Bits()
	if h.Segment != nil {
		brNS, bridge, bits = h.Segment.Router.NS, h.Segment.Bridge, h.Segment.Prefix.Bits()
	}
	cmds := [][]string{
		{"ip", "netns", "add", h.NS},
		// Before any interface exists, so that every one made later
		// inherits rp_filter=0 from "default".
		sysctlCmd(h.NS, hostSysctls()...),
		{"ip", "-n", h.NS, "link", "set", "lo", "up"},
		{"ip", "-n", brNS, "link", "add", peer, "mtu", mtu, "type", "veth",
			"peer", "name", UnderlayDev, "mtu", mtu, "netns", h.NS},
		{"ip", "-n", brNS, "link", "set", peer, "master", bridge, "up"},
		addrAdd(h.NS, h.Underlay, bits, UnderlayDev),
	}
	if h.Underlay6.IsValid() && h.Underlay6 != h.Underlay {
		cmds = append(cmds, addrAdd(h.NS, h.Underlay6, l.opts.Underlay6.Bits(), UnderlayDev))
	}
	cmds = append(cmds, []string{"ip", "-n", h.NS, "link", "set", UnderlayDev, "up"})
	if h.Segment != nil {
		cmds = append(cmds, []string{"ip", "-n", h.NS, "route", "add", "default", "via", h.Segment.Gateway.String()})
	} else {
		for _, s := range l.segments {
			cmds = append(cmds, s.routeFrom(h.NS))
		}
	}
	if err := l.r.all(cmds...); err != nil {
		return err
	}
	return l.r.waitForwarding(brNS, peer)
}

func hostSysctls() []string {
	s := []string{
		"net.ipv4.ip_forward=1",
		"net.ipv4.conf.all.rp_filter=0",
		"net.ipv4.conf.default.rp_filter=0",
	}
	if ipv6Enabled() {
		// No duplicate address detection: every address here is the
		// lab's to give, and while a new interface's link-local address
		// is tentative (a second) the kernel sends no neighbour
		// solicitation from it, so the first packets a host forwards
		// to a new pod over IPv6 would wait for the retry.
		s = append(s, "net.ipv6.conf.all.forwarding=1", "net.ipv6.conf.default.accept_dad=0")
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
