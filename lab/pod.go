package lab

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os/exec"
	"strconv"
	"time"
)

// Pod is a namespace hanging off its host's cni0 bridge, like a
// Kubernetes pod: one eth0, one address in the host's subnet, a default
// route via the bridge.
type Pod struct {
	Name    string       // e.g. "pa"
	NS      string       // <prefix>-<host>-<name>
	Addr    netip.Addr   // eth0's address
	Subnet  netip.Prefix // the host's pod subnet the address is in
	Gateway netip.Addr   // cni0's address in Subnet: subnet.1
	// Addr6, Subnet6 and Gateway6 are a dual-stack pod's IPv6 address,
	// subnet and gateway (PodConfig.Subnet6); invalid otherwise.
	Addr6    netip.Addr
	Subnet6  netip.Prefix
	Gateway6 netip.Addr
	HostDev  string // the host end of the pod's veth pair, on cni0
	Host     *Host
}

// PodConfig describes a pod for AddPodConfig.
type PodConfig struct {
	Subnet netip.Prefix // required: the host's pod subnet
	Addr   netip.Addr   // optional: default the next free address from .2
	MTU    int          // optional: default Options.PodMTU
	// Subnet6, optional, an IPv6 subnet beside an IPv4 Subnet, makes
	// the pod dual-stack, as flannel's CNI does in a dual-stack overlay:
	// a second address, the next free one of Subnet6 from ::2, and a
	// default IPv6 route via cni0's Subnet6::1.
	Subnet6 netip.Prefix
}

// AddPod adds a pod with the next free address in subnet; see AddPodConfig.
func (h *Host) AddPod(name string, subnet netip.Prefix) (*Pod, error) {
	return h.AddPodConfig(name, PodConfig{Subnet: subnet})
}

// AddPodConfig adds a pod: namespace <prefix>-<host>-<name>, a veth pair
// from its eth0 to the host's bridge cni0. cni0 is made on first use, and
// gets the address subnet.1 the first time a pod of subnet is added (and
// subnet6::1 for a pod of Subnet6).
func (h *Host) AddPodConfig(name string, c PodConfig) (*Pod, error) {
	if err := validPodName(name); err != nil {
		return nil, fmt.Errorf("add pod: %w", err)
	}
	if !c.Subnet.IsValid() {
		return nil, fmt.Errorf("add pod %q: no subnet", name)
	}
	c.Subnet = c.Subnet.Masked()
	if c.Subnet6.IsValid() {
		c.Subnet6 = c.Subnet6.Masked()
		if !c.Subnet.Addr().Is4() || !c.Subnet6.Addr().Is6() || c.Subnet6.Addr().Is4In6() {
			return nil, fmt.Errorf("add pod %q: subnets %s and %s: a dual-stack pod has an IPv4 Subnet and an IPv6 Subnet6", name, c.Subnet, c.Subnet6)
		}
		if _, err := hostAddr(c.Subnet6, 2); err != nil {
			return nil, fmt.Errorf("add pod %q: subnet %s: %w", name, c.Subnet6, err)
		}
	}
	if c.MTU == 0 {
		c.MTU = h.lab.opts.PodMTU
	}
	gw, err := hostAddr(c.Subnet, 1)
	if err != nil {
		return nil, fmt.Errorf("add pod %q: subnet %s: %w", name, c.Subnet, err)
	}
	if c.MTU < 576 || c.MTU > 65535 {
		return nil, fmt.Errorf("add pod %q: MTU %d: want 576..65535", name, c.MTU)
	}

	l := h.lab
	l.mu.Lock()
	closed := l.closed
	l.mu.Unlock()
	if closed {
		return nil, fmt.Errorf("add pod %q: %w", name, ErrClosed)
	}

	h.mu.Lock()
	defer h.mu.Unlock()
	for _, p := range h.pods {
		if p.Name == name {
			return nil, fmt.Errorf("add pod %q on %s: exists", name, h.Name)
		}
	}
	if !h.bridge {
		// No MTU on the bridge: it follows the smallest of its ports.
		err := l.r.all(
			[]string{"ip", "-n", h.NS, "link", "add", PodBridge, "type", "bridge"},
			[]string{"ip", "-n", h.NS, "link", "set", PodBridge, "up"})
		if err != nil {
			return nil, fmt.Errorf("add pod %q on %s: %w", name, h.Name, err)
		}
		h.bridge = true
	}
	sn, err := h.podSubnet(c.Subnet, name)
	if err != nil {
		return nil, err
	}
	addr, err := sn.pick(c.Subnet, c.Addr)
	if err != nil {
		return nil, fmt.Errorf("add pod %q: %w", name, err)
	}
	var sn6 *podSubnet
	var addr6, gw6 netip.Addr
	if c.Subnet6.IsValid() {
		if sn6, err = h.podSubnet(c.Subnet6, name); err != nil {
			return nil, err
		}
		if addr6, err = sn6.pick(c.Subnet6, netip.Addr{}); err != nil {
			return nil, fmt.Errorf("add pod %q: %w", name, err)
		}
		gw6, _ = hostAddr(c.Subnet6, 1)
	}

	p := &Pod{
		Name:     name,
		NS:       h.NS + "-" + name,
		Addr:     addr,
		Subnet:   c.Subnet,
		Gateway:  gw,
		Addr6:    addr6,
		Subnet6:  c.Subnet6,
		Gateway6: gw6,
		HostDev:  "v-" + name,
		Host:     h,
	}
	if len(p.HostDev) > 15 { // IFNAMSIZ-1
		p.HostDev = "vp" + strconv.Itoa(len(h.pods)+1)
	}
	mtu := strconv.Itoa(c.MTU)
	route := func(gw netip.Addr) []string {
		if gw.Is6() {
			return []string{"ip", "-n", p.NS, "-6", "route", "add", "default", "via", gw.String()}
		}
		return []string{"ip", "-n", p.NS, "route", "add", "default", "via", gw.String()}
	}
	cmds := [][]string{
		{"ip", "netns", "add", p.NS},
		{"ip", "-n", p.NS, "link", "set", "lo", "up"},
		{"ip", "-n", p.NS, "link", "add", UnderlayDev, "mtu", mtu, "type", "veth",
			"peer", "name", p.HostDev, "mtu", mtu, "netns", h.NS},
		{"ip", "-n", h.NS, "link", "set", p.HostDev, "master", PodBridge, "up"},
		addrAdd(p.NS, addr, c.Subnet.Bits(), UnderlayDev),
	}
	if addr6.IsValid() {
		cmds = append(cmds, addrAdd(p.NS, addr6, c.Subnet6.Bits(), UnderlayDev))
	}
	cmds = append(cmds, []string{"ip", "-n", p.NS, "link", "set", UnderlayDev, "up"}, route(gw))
	if addr6.IsValid() {
		cmds = append(cmds, route(gw6))
	}
	err = l.r.all(cmds...)
	if err == nil {
		err = l.r.waitForwarding(h.NS, p.HostDev)
	}
	if err != nil {
		return nil, errors.Join(fmt.Errorf("add pod %q on %s: %w", name, h.Name, err), l.delNS(p.NS))
	}
	sn.used[addr] = true
	if sn6 != nil {
		sn6.used[addr6] = true
	}
	h.pods = append(h.pods, p)
	return p, nil
}

// podSubnet returns the host's record of a pod subnet on cni0, giving
// cni0 the subnet's first address when it is new. h.mu is held.
func (h *Host) podSubnet(subnet netip.Prefix, pod string) (*podSubnet, error) {
	if sn := h.subnets[subnet]; sn != nil {
		return sn, nil
	}
	for s := range h.subnets {
		if s.Overlaps(subnet) {
			return nil, fmt.Errorf("add pod %q: subnet %s overlaps %s on %s", pod, subnet, s, h.Name)
		}
	}
	gw, _ := hostAddr(subnet, 1)
	if err := h.lab.r.all(addrAdd(h.NS, gw, subnet.Bits(), PodBridge)); err != nil {
		return nil, fmt.Errorf("add pod %q on %s: %w", pod, h.Name, err)
	}
	sn := &podSubnet{used: map[netip.Addr]bool{gw: true}}
	h.subnets[subnet] = sn
	return sn, nil
}

// pick returns want if it is a free host address of subnet, or, if want
// is unset, the lowest free one from .2 up.
func (sn *podSubnet) pick(subnet netip.Prefix, want netip.Addr) (netip.Addr, error) {
	if want.IsValid() {
		last, err := lastHostAddr(subnet)
		if err != nil {
			return netip.Addr{}, err
		}
		if !subnet.Contains(want) || want == subnet.Addr() || want.Compare(last) > 0 {
			return netip.Addr{}, fmt.Errorf("address %s: not a host address of %s", want, subnet)
		}
		if sn.used[want] {
			return netip.Addr{}, fmt.Errorf("address %s: in use", want)
		}
		return want, nil
	}
	for n := 2; ; n++ {
		a, err := hostAddr(subnet, n)
		if err != nil {
			return netip.Addr{}, fmt.Errorf("subnet %s: no free address", subnet)
		}
		if !sn.used[a] {
			return a, nil
		}
	}
}

// lastHostAddr is the highest address of p that hostAddr hands out.
func lastHostAddr(p netip.Prefix) (netip.Addr, error) {
	p = p.Masked()
	b := p.Addr().AsSlice()
	for i := p.Bits(); i < len(b)*8; i++ {
		b[i/8] |= 0x80 >> (i % 8)
	}
	a, _ := netip.AddrFromSlice(b)
	if a.Is4() {
		a = a.Prev() // the broadcast address
	}
	if !a.IsValid() || a.Compare(p.Addr()) <= 0 {
		return netip.Addr{}, fmt.Errorf("subnet %s: no host addresses", p)
	}
	return a, nil
}

// addrAdd is the ip command that adds a/bits to dev in ns. IPv6 skips
// duplicate address detection: without it the address is unusable for a
// second or two.
func addrAdd(ns string, a netip.Addr, bits int, dev string) []string {
	c := []string{"ip", "-n", ns, "addr", "add", a.String() + "/" + strconv.Itoa(bits), "dev", dev}
	if a.Is6() {
		c = append(c, "nodad")
	}
	return c
}

// Command returns a command that runs name in the pod's namespace; see
// Host.Command.
func (p *Pod) Command(ctx context.Context, name string, args ...string) *exec.Cmd {
	return command(ctx, p.Host.lab.r, p.NS, name, args...)
}

// Run runs name in the pod's namespace and returns its combined output.
func (p *Pod) Run(ctx context.Context, name string, args ...string) (string, error) {
	return p.Host.lab.r.runIn(ctx, p.NS, name, args...)
}

// WaitReachable pings dst from the pod, one echo at a time, until one is
// answered (a node learns a new peer within moments of its lease), for
// up to timeout. The error names both ends and carries the last ping's
// output.
func (p *Pod) WaitReachable(ctx context.Context, dst netip.Addr, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		res, err := p.Ping(ctx, dst, 1)
		if err == nil && res.Received == 1 {
			return nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("%s (%s) never reached %s within %s: %v\n%s", p.NS, p.Addr, dst, timeout, err, res.Output)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// Ping sends count ICMP echo requests from the pod to dst, 200 ms apart,
// each waiting up to a second for its reply, with the program's own ICMP
// socket opened in the pod's namespace (no ping binary needed). The error is nil
// only if every echo was answered; with some lost it wraps ErrLoss and
// the result is still filled in.
func (p *Pod) Ping(ctx context.Context, dst netip.Addr, count int) (PingResult, error) {
	return echo(ctx, p.Do, dst, count, 200*time.Millisecond)
}

// Do runs fn inside the pod's namespace; see Host.Do.
func (p *Pod) Do(fn func() error) error {
	return doInNamespace(p.NS, fn)
}
