package lab

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"sync"
	"time"
)

// Names of the devices lab creates. They are fixed, like on a real node,
// so commands from tutorials work unchanged inside the namespaces.
const (
	UnderlayBridge = "ul0"  // the switch joining all hosts, in <prefix>-ul
	UnderlayDev    = "eth0" // a host's underlay interface and a pod's only interface
	PodBridge      = "cni0" // the bridge a host's pods hang off, as flannel's CNI makes it
)

// Defaults for Options.
const (
	DefaultPrefix = "vxr"
	DefaultMTU    = 1500
)

// DefaultUnderlay is the underlay network when Options.Underlay is unset.
var DefaultUnderlay = netip.MustParsePrefix("10.213.0.0/24")

// ErrClosed is returned by the methods of a Lab that has been closed.
var ErrClosed = errors.New("lab closed")

// commandTimeout bounds each setup command: ip never takes long, and a
// hung one must not hang a test run.
const commandTimeout = 30 * time.Second

// netnsDir is where `ip netns add` keeps its namespace handles.
const netnsDir = "/var/run/netns"

// Options change the defaults of a Lab. The zero value is valid.
type Options struct {
	// Prefix starts every namespace name; Cleanup finds leftovers by it.
	// Lowercase letters and digits, at most 12, no "-" (so that one
	// prefix is never the start of another's names). Default "vxr".
	Prefix string
	// Underlay is the network of the hosts' eth0; host i gets its i-th
	// address. IPv4 or IPv6. Default 10.213.0.0/24.
	Underlay netip.Prefix
	// Underlay6, an IPv6 network beside an IPv4 Underlay, makes the
	// hosts dual-stack: eth0 gets its i-th address of both, on the one
	// switch. Default none.
	Underlay6 netip.Prefix
	// MTU of the underlay links. Default 1500.
	MTU int
	// PodMTU of the pods' veth pairs. Default MTU-50: what flannel's CNI
	// gives pods, so a pod's packet fits in one VXLAN datagram.
	PodMTU int
	// Log receives every command lab runs, at debug level. Default: discard.
	Log *slog.Logger
}

func (o *Options) setDefaults() error {
	if o.Prefix == "" {
		o.Prefix = DefaultPrefix
	}
	if !o.Underlay.IsValid() {
		o.Underlay = DefaultUnderlay
	}
	o.Underlay = o.Underlay.Masked()
	if o.MTU == 0 {
		o.MTU = DefaultMTU
	}
	if o.PodMTU == 0 {
		o.PodMTU = o.MTU - 50
	}
	if o.Log == nil {
		o.Log = discard()
	}
	if err := validPrefix(o.Prefix); err != nil {
		return err
	}
	if _, err := hostAddr(o.Underlay, 2); err != nil {
		return fmt.Errorf("underlay %s: too small for two hosts", o.Underlay)
	}
	if o.Underlay6.IsValid() {
		o.Underlay6 = o.Underlay6.Masked()
		if !o.Underlay.Addr().Is4() || !o.Underlay6.Addr().Is6() || o.Underlay6.Addr().Is4In6() {
			return fmt.Errorf("underlay %s and %s: a dual-stack underlay is an IPv4 Underlay and an IPv6 Underlay6", o.Underlay, o.Underlay6)
		}
		if _, err := hostAddr(o.Underlay6, 2); err != nil {
			return fmt.Errorf("underlay %s: too small for two hosts", o.Underlay6)
		}
	}
	if o.MTU < 1280 || o.MTU > 65535 {
		return fmt.Errorf("underlay MTU %d: want 1280..65535", o.MTU)
	}
	if o.PodMTU < 576 || o.PodMTU > 65535 {
		return fmt.Errorf("pod MTU %d: want 576..65535", o.PodMTU)
	}
	return nil
}

// Lab is one topology: an underlay switch and the hosts and pods on it.
// Its methods are safe for concurrent use.
type Lab struct {
	opts Options
	r    *runner
	ul   string // the underlay namespace

	mu        sync.Mutex
	hosts     []*Host
	mainHosts int // hosts on the main underlay (ul0)
	segments  []*Segment
	closed    bool
}

// New removes what a crashed lab with the same prefix left behind, then
// builds the underlay: namespace <prefix>-ul holding the bridge ul0.
func New(opts Options) (*Lab, error) {
	if err := opts.setDefaults(); err != nil {
		return nil, fmt.Errorf("lab options: %w", err)
	}
	r := &runner{log: opts.Log}
	if err := cleanup(r, opts.Prefix); err != nil {
		return nil, fmt.Errorf("remove leftovers of lab %q: %w", opts.Prefix, err)
	}
	l := &Lab{opts: opts, r: r, ul: opts.Prefix + "-ul"}
	err := r.all(
		[]string{"ip", "netns", "add", l.ul},
		[]string{"ip", "-n", l.ul, "link", "add", UnderlayBridge, "type", "bridge"},
		[]string{"ip", "-n", l.ul, "link", "set", UnderlayBridge, "up"},
	)
	if err != nil {
		return nil, errors.Join(fmt.Errorf("build underlay: %w", err), l.Close())
	}
	return l, nil
}

// Prefix is the prefix of every namespace of this lab.
func (l *Lab) Prefix() string { return l.opts.Prefix }

// UnderlayNS is the namespace holding the underlay bridge ul0.
func (l *Lab) UnderlayNS() string { return l.ul }

// Underlay is the underlay network.
func (l *Lab) Underlay() netip.Prefix { return l.opts.Underlay }

// Underlay6 is the IPv6 underlay network of a dual-stack lab, or the
// underlay of an IPv6 one; invalid in an IPv4 lab.
func (l *Lab) Underlay6() netip.Prefix {
	if l.opts.Underlay.Addr().Is6() {
		return l.opts.Underlay
	}
	return l.opts.Underlay6
}

// MTU is the underlay MTU.
func (l *Lab) MTU() int { return l.opts.MTU }

// Hosts returns the hosts in the order they were added.
func (l *Lab) Hosts() []*Host {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]*Host(nil), l.hosts...)
}

// Commands returns every command lab has run so far, one shell line
// each, in order: the whole topology as a script a learner can read.
func (l *Lab) Commands() []string { return l.r.transcript() }

// Close kills every process in the lab's namespaces (whoever started
// them) and deletes the namespaces, and with them every link, address and
// route in them. It may be called more than once.
func (l *Lab) Close() error {
	l.mu.Lock()
	l.closed = true
	l.mu.Unlock()
	if err := cleanup(l.r, l.opts.Prefix); err != nil {
		return fmt.Errorf("close lab %q: %w", l.opts.Prefix, err)
	}
	return nil
}

// Cleanup kills the processes in, and deletes, every namespace named
// prefix-*: what a lab that never reached Close left behind.
func Cleanup(prefix string) error {
	if err := validPrefix(prefix); err != nil {
		return fmt.Errorf("cleanup: %w", err)
	}
	r := &runner{log: discard()}
	if err := cleanup(r, prefix); err != nil {
		return fmt.Errorf("cleanup lab %q: %w", prefix, err)
	}
	return nil
}

func cleanup(r *runner, prefix string) error {
	nss, err := listNamespaces(r, prefix)
	if err != nil {
		return err
	}
	if len(nss) == 0 {
		return nil
	}
	// Kill first: a process keeps its namespace (and its TUN and sockets)
	// alive after `ip netns del` removes the name.
	var errs []error
	deadline := time.Now().Add(3 * time.Second)
	for _, ns := range nss {
		for {
			pids, err := namespacePIDs(r, ns)
			if err != nil {
				errs = append(errs, err)
				break
			}
			if len(pids) == 0 {
				break
			}
			if time.Now().After(deadline) {
				errs = append(errs, fmt.Errorf("processes %v in namespace %s survive SIGKILL", pids, ns))
				break
			}
			for _, pid := range pids {
				if p, err := os.FindProcess(pid); err == nil {
					_ = p.Kill() // it may have exited meanwhile; the next round checks
				}
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	for _, ns := range nss {
		if _, err := r.run(context.Background(), "ip", "netns", "del", ns); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// Namespaces returns the network namespaces named prefix-*: what a lab
// with that prefix made and has not removed (tests check that none is
// left).
func Namespaces(prefix string) ([]string, error) {
	return listNamespaces(&runner{log: discard()}, prefix)
}

// listNamespaces returns the namespaces named prefix-*.
func listNamespaces(r *runner, prefix string) ([]string, error) {
	out, err := r.run(context.Background(), "ip", "netns", "list")
	if err != nil {
		return nil, err
	}
	var nss []string
	for line := range strings.Lines(out) {
		// A line is "name" or "name (id: 3)".
		f := strings.Fields(line)
		if len(f) > 0 && strings.HasPrefix(f[0], prefix+"-") {
			nss = append(nss, f[0])
		}
	}
	return nss, nil
}

// namespacePIDs returns the processes living in namespace ns.
func namespacePIDs(r *runner, ns string) ([]int, error) {
	out, err := r.run(context.Background(), "ip", "netns", "pids", ns)
	if err != nil {
		return nil, err
	}
	var pids []int
	for _, f := range strings.Fields(out) {
		var pid int
		if _, err := fmt.Sscan(f, &pid); err == nil && pid > 0 && pid != os.Getpid() {
			pids = append(pids, pid)
		}
	}
	return pids, nil
}

var (
	prefixRE   = regexp.MustCompile(`^[a-z][a-z0-9]{0,11}$`)
	hostNameRE = regexp.MustCompile(`^[a-z][a-z0-9]{0,12}$`)
	podNameRE  = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,19}$`)
)

func validPrefix(p string) error {
	if !prefixRE.MatchString(p) {
		return fmt.Errorf("prefix %q: want 1-12 lowercase letters and digits, starting with a letter", p)
	}
	return nil
}

// validHostName keeps host names free of "-" so that a host's namespace
// <prefix>-<host> can never be taken for a pod's <prefix>-<host>-<pod>,
// and short enough for "v-<host>" to be an interface name (15 bytes).
func validHostName(n string) error {
	if !hostNameRE.MatchString(n) || n == "ul" {
		return fmt.Errorf("host name %q: want 1-13 lowercase letters and digits, starting with a letter, not \"ul\"", n)
	}
	return nil
}

func validPodName(n string) error {
	if !podNameRE.MatchString(n) {
		return fmt.Errorf("pod name %q: want 1-20 lowercase letters, digits and dashes", n)
	}
	return nil
}

// runner runs commands, logs them and keeps a transcript.
type runner struct {
	log *slog.Logger

	mu   sync.Mutex
	cmds []string
}

// run runs one command and returns its combined output; the error names
// the command and carries its output, which is where ip says what is wrong.
func (r *runner) run(ctx context.Context, name string, args ...string) (string, error) {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, commandTimeout)
		defer cancel()
	}
	cmd := exec.CommandContext(ctx, name, args...)
	r.record(cmd.Args)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s: %w: %s", shellLine(cmd.Args), err, strings.TrimSpace(string(out)))
	}
	return string(out), nil
}

// all runs commands in order and stops at the first failure.
func (r *runner) all(cmds ...[]string) error {
	for _, c := range cmds {
		if _, err := r.run(context.Background(), c[0], c[1:]...); err != nil {
			return err
		}
	}
	return nil
}

func (r *runner) record(argv []string) {
	line := shellLine(argv)
	r.log.Debug("lab", "cmd", line)
	r.mu.Lock()
	r.cmds = append(r.cmds, line)
	r.mu.Unlock()
}

func (r *runner) transcript() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.cmds...)
}

// shellLine renders argv so it can be pasted into a shell.
func shellLine(argv []string) string {
	var b strings.Builder
	for i, a := range argv {
		if i > 0 {
			b.WriteByte(' ')
		}
		if a != "" && strings.IndexFunc(a, func(c rune) bool {
			return !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.ContainsRune("-_./:=,+@%", c))
		}) < 0 {
			b.WriteString(a)
			continue
		}
		b.WriteString("'" + strings.ReplaceAll(a, "'", `'\''`) + "'")
	}
	return b.String()
}

// hostAddr returns the n-th address of p (n >= 1; the network address is
// the 0th). For IPv4 the broadcast address is not a host address.
func hostAddr(p netip.Prefix, n int) (netip.Addr, error) {
	p = p.Masked()
	if n < 1 {
		return netip.Addr{}, fmt.Errorf("address %d of %s: want >= 1", n, p)
	}
	hostBits := p.Addr().BitLen() - p.Bits()
	if hostBits < 63 && uint64(n) >= uint64(1)<<hostBits-boolUint(p.Addr().Is4()) {
		return netip.Addr{}, fmt.Errorf("address %d of %s: out of range", n, p)
	}
	b := p.Addr().AsSlice()
	carry := uint64(n)
	for i := len(b) - 1; i >= 0 && carry > 0; i-- {
		s := uint64(b[i]) + carry&0xff
		b[i] = byte(s)
		carry = carry>>8 + s>>8
	}
	a, _ := netip.AddrFromSlice(b)
	return a, nil
}

func boolUint(v bool) uint64 {
	if v {
		return 1
	}
	return 0
}

func discard() *slog.Logger { return slog.New(slog.DiscardHandler) }

// waitForwarding waits until port, a bridge port in namespace ns, forwards.
// A port whose veth peer comes up after it was enslaved starts disabled,
// and the kernel enables it from its link-watch work, which a busy host
// may put off for up to a second: packets sent before then (the first
// ping of a test) vanish. It polls without recording each look.
func (r *runner) waitForwarding(ns, port string) error {
	deadline := time.Now().Add(5 * time.Second)
	var state string
	for {
		ctx, cancel := context.WithTimeout(context.Background(), commandTimeout)
		out, err := exec.CommandContext(ctx, "ip", "-n", ns, "-d", "-j", "link", "show", "dev", port).Output()
		cancel()
		var links []struct {
			LinkInfo struct {
				SlaveData struct {
					State string `json:"state"`
				} `json:"info_slave_data"`
			} `json:"linkinfo"`
		}
		if err == nil && json.Unmarshal(out, &links) == nil && len(links) == 1 {
			state = links[0].LinkInfo.SlaveData.State
			if state == "forwarding" {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("bridge port %s in %s: state %q after 5s, want forwarding (%v)", port, ns, state, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
