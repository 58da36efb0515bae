package masq

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"strings"
	"time"
)

// DefaultResync is how often Run checks the rules: flanneld's
// --iptables-resync default.
const DefaultResync = 5 * time.Second

// Network is one address family of the overlay on this node.
type Network struct {
	Cluster netip.Prefix // the overlay's network, e.g. 172.16.0.0/16
	Pod     netip.Prefix // this node's subnet in it, e.g. 172.16.57.0/24
}

func (n Network) String() string { return fmt.Sprintf("network %s, subnet %s", n.Cluster, n.Pod) }

// Options say how to masquerade. The zero value is flannel's default:
// iptables, --random-fully where available.
type Options struct {
	// NFTables writes the rules with nftables instead of iptables (the
	// config's EnableNFTables).
	NFTables bool
	// RandomFullyDisable never asks for fully random source ports
	// (flanneld's --ip-masq-fully-random-disable).
	RandomFullyDisable bool
	Log                *slog.Logger
}

// backend writes one family's rules with one tool.
type backend interface {
	// check asks the kernel whether it takes rs, leaving nothing behind.
	check(rs []rule) error
	// write makes the chain hold exactly rs and POSTROUTING jump to it
	// once. It reports whether it changed anything. On error it leaves
	// no half-written chain behind.
	write(rs []rule) (changed bool, err error)
	// ensure checks that the chain still holds what write last put there
	// and that the jump is there once, puts back what is not, and says
	// what it repaired ("" for nothing).
	ensure(rs []rule) (repaired string, err error)
	// remove takes the chain and the jump out, if they are there.
	remove() error
	// removeOther removes the rules the other mode (iptables when this is
	// nftables, and the reverse) would have written for this family.
	removeOther() error
	// name is the tool, for messages: "iptables", "ip6tables", "nftables".
	name() string
}

// family is the state of one address family.
type family struct {
	cluster netip.Prefix
	b       backend
	random  bool // MASQUERADE --random-fully
	rules   []rule
}

// Masq holds the rules of each family the overlay has. See the package
// doc for its life.
type Masq struct {
	opts Options
	log  *slog.Logger
	fams []*family
}

// New prepares masquerading for the overlay's networks (one per address
// family): it finds the tools and asks the kernel whether it takes every
// rule, with each whole network standing in for the node's subnet, which
// is not known yet. It leaves nothing in the kernel's tables. Its errors
// say what to install or change.
func New(clusters []netip.Prefix, opts Options) (*Masq, error) {
	if opts.Log == nil {
		opts.Log = slog.New(slog.DiscardHandler)
	}
	if len(clusters) == 0 {
		return nil, errors.New("ip masquerade: no network")
	}
	m := &Masq{opts: opts, log: opts.Log}
	for _, c := range clusters {
		if !c.IsValid() {
			return nil, fmt.Errorf("ip masquerade: network %v is not a CIDR", c)
		}
		c = c.Masked()
		for _, f := range m.fams {
			if f.cluster.Addr().Is4() == c.Addr().Is4() {
				return nil, fmt.Errorf("ip masquerade: two networks of one address family: %s and %s", f.cluster, c)
			}
		}
		f, err := m.prepare(c)
		if err != nil {
			return nil, err
		}
		m.fams = append(m.fams, f)
	}
	return m, nil
}

// prepare makes the backend for cluster's family and finds out, by
// asking the kernel, whether MASQUERADE may be fully random.
func (m *Masq) prepare(cluster netip.Prefix) (*family, error) {
	v6 := cluster.Addr().Is6()
	var (
		b      backend
		random bool
		err    error
	)
	if m.opts.NFTables {
		b, err = newNFTables(v6)
		random = true
	} else {
		var ipt *iptablesBackend
		ipt, err = newIPTables(v6)
		b = ipt
		if err == nil {
			random = ipt.t.HasRandomFully()
		}
	}
	if err != nil {
		return nil, fmt.Errorf("ip masquerade: %w", err)
	}
	random = random && !m.opts.RandomFullyDisable
	f := &family{cluster: cluster, b: b, random: random}
	probe := Network{Cluster: cluster, Pod: cluster}
	err = b.check(masqRules(probe, random))
	if err != nil && random {
		// An iptables new enough to know --random-fully on a kernel too
		// old for it: masquerade without, as flanneld does where its
		// iptables lacks the option.
		if b.check(masqRules(probe, false)) == nil {
			m.log.Warn("ip masquerade: the kernel refuses fully random source ports; masquerading without", "tool", b.name(), "err", err)
			f.random, err = false, nil
		}
	}
	if err != nil {
		return nil, fmt.Errorf("ip masquerade: %s refuses the rules for %s: %w", b.name(), cluster, err)
	}
	return f, nil
}

// Write puts the rules for nets in the kernel's tables, one Network per
// network given to New, and removes those of the other mode. A chain that
// already holds exactly these rules (a restart) is left as it is; any
// other content (another subnet's rules, someone else's) is replaced.
// On error it removes what it wrote, in every family.
func (m *Masq) Write(nets []Network) (err error) {
	if len(nets) != len(m.fams) {
		return fmt.Errorf("ip masquerade: %d networks for %d prepared", len(nets), len(m.fams))
	}
	for i, f := range m.fams {
		n := nets[i]
		if n.Cluster.Masked() != f.cluster || !n.Pod.IsValid() || !f.cluster.Contains(n.Pod.Addr()) || n.Pod.Bits() < f.cluster.Bits() {
			return fmt.Errorf("ip masquerade: %s does not fit network %s", n, f.cluster)
		}
	}
	defer func() {
		if err != nil {
			err = errors.Join(err, m.Remove())
		}
	}()
	for i, f := range m.fams {
		n := nets[i]
		n.Pod = n.Pod.Masked()
		if err := f.b.removeOther(); err != nil {
			m.log.Debug("ip masquerade: other mode's rules not removed", "err", err)
		}
		rs := masqRules(n, f.random)
		// Set first, so that Remove takes out a half-written chain.
		f.rules = rs
		changed, err := f.b.write(rs)
		if err != nil {
			return fmt.Errorf("ip masquerade: write %s rules for %s: %w", f.b.name(), n, err)
		}
		if changed {
			m.log.Info("ip masquerade: rules written", "tool", f.b.name(), "network", n.Cluster, "subnet", n.Pod, "random-fully", f.random)
		} else {
			m.log.Info("ip masquerade: rules already in place", "tool", f.b.name(), "network", n.Cluster, "subnet", n.Pod, "random-fully", f.random)
		}
	}
	return nil
}

// Remove takes out the rules Write put in, for a node that fails after
// Write and must leave nothing behind. Before Write it does nothing: the
// rules of an earlier run stay, as they do when a node stops.
func (m *Masq) Remove() error {
	var errs []error
	for _, f := range m.fams {
		if f.rules == nil {
			continue
		}
		if err := f.b.remove(); err != nil {
			errs = append(errs, fmt.Errorf("ip masquerade: remove %s rules: %w", f.b.name(), err))
		}
		f.rules = nil
	}
	return errors.Join(errs...)
}

// Ensure checks each family's rules once and puts back what is missing
// or changed; it says what it repaired in the log.
func (m *Masq) Ensure() error {
	var errs []error
	for _, f := range m.fams {
		if f.rules == nil {
			continue
		}
		what, err := f.b.ensure(f.rules)
		if err != nil {
			errs = append(errs, fmt.Errorf("ip masquerade: check %s rules: %w", f.b.name(), err))
			continue
		}
		if what != "" {
			m.log.Warn("ip masquerade: rules were changed by someone else; put back", "tool", f.b.name(), "repaired", what)
		}
	}
	return errors.Join(errs...)
}

// Run calls Ensure every period until ctx ends. A failed check is
// logged and tried again the next period: the rules already in place
// keep working meanwhile.
func (m *Masq) Run(ctx context.Context, period time.Duration) {
	if period <= 0 {
		period = DefaultResync
	}
	t := time.NewTicker(period)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if err := m.Ensure(); err != nil {
				m.log.Warn("ip masquerade: check failed; trying again", "err", err, "in", period)
			}
		}
	}
}

// rule is one rule of the chain, in either tool's terms. A zero prefix
// matches any address.
type rule struct {
	mark           bool // only packets with kube-proxy's mark bit
	src, dst       netip.Prefix
	notSrc, notDst bool
	masquerade     bool // else return
	random         bool // masquerade with fully random source ports
}

// kubeProxyMark is the bit kube-proxy sets on packets it masquerades
// itself (its --iptables-masquerade-bit, 14).
const kubeProxyMark = 0x4000

// multicast is each family's multicast range, never masqueraded: a
// multicast packet has no single peer to answer it.
var (
	multicast4 = netip.MustParsePrefix("224.0.0.0/4")
	multicast6 = netip.MustParsePrefix("ff00::/8")
)

// masqRules is flannel's chain for n, in flannel's order: everything
// that returns comes before anything that masquerades, so a chain caught
// half-written masquerades too little, never pod to pod.
func masqRules(n Network, random bool) []rule {
	mc := multicast4
	if n.Cluster.Addr().Is6() {
		mc = multicast6
	}
	return []rule{
		{mark: true},
		{src: n.Pod, dst: n.Cluster},
		{src: n.Cluster, dst: n.Pod},
		{src: n.Cluster, notSrc: true, dst: n.Pod},
		{src: n.Cluster, dst: mc, notDst: true, masquerade: true, random: random},
		{src: n.Cluster, notSrc: true, dst: n.Cluster, masquerade: true, random: random},
	}
}

// String is the rule in nft's words, for logs and errors.
func (r rule) String() string {
	var b strings.Builder
	if r.mark {
		fmt.Fprintf(&b, "meta mark & %#x == %#x ", kubeProxyMark, kubeProxyMark)
	}
	for _, m := range []struct {
		what string
		p    netip.Prefix
		not  bool
	}{{"saddr", r.src, r.notSrc}, {"daddr", r.dst, r.notDst}} {
		if !m.p.IsValid() {
			continue
		}
		fam := "ip"
		if m.p.Addr().Is6() {
			fam = "ip6"
		}
		op := ""
		if m.not {
			op = "!= "
		}
		fmt.Fprintf(&b, "%s %s %s%s ", fam, m.what, op, m.p)
	}
	switch {
	case r.masquerade && r.random:
		b.WriteString("masquerade fully-random")
	case r.masquerade:
		b.WriteString("masquerade")
	default:
		b.WriteString("return")
	}
	return b.String()
}
