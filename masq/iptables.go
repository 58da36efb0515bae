package masq

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/coreos/go-iptables/iptables"
)

// flannel's names, so that flanneld and vxrouter find each other's rules
// (see the package doc).
const (
	// Chain is the nat table's chain that holds the rules.
	Chain = "FLANNEL-POSTRTG"
	// comment marks each rule and the jump, in both modes.
	comment     = "flanneld masq"
	natTable    = "nat"
	postrouting = "POSTROUTING"
	// checkChain is where New tries the rules out; it never outlives New.
	checkChain = "VXROUTER-MASQ-CHECK"
)

// lockWait bounds how long one iptables command waits for the xtables
// lock another program holds (go-iptables' Timeout, in seconds).
const lockWait = 10

// iptablesBackend writes one family's rules with iptables or ip6tables.
type iptablesBackend struct {
	t  *iptables.IPTables
	v6 bool
	// listed is the chain as iptables printed it (-S) after the last
	// write: what ensure compares with, in iptables' own spelling.
	listed []string
}

func newIPTables(v6 bool) (*iptablesBackend, error) {
	proto := iptables.ProtocolIPv4
	if v6 {
		proto = iptables.ProtocolIPv6
	}
	b := &iptablesBackend{v6: v6}
	t, err := iptables.New(iptables.IPFamily(proto), iptables.Timeout(lockWait))
	if err != nil {
		return nil, fmt.Errorf("%s not usable: %w (install the iptables package, or set \"EnableNFTables\":true in the config to use nftables)", b.name(), err)
	}
	b.t = t
	// The nat table needs the kernel's NAT: find out now, not at the
	// first rule.
	if _, err := t.List(natTable, postrouting); err != nil {
		return nil, fmt.Errorf("%s cannot read the nat table: %w (does the kernel have NAT for this address family? modprobe %s)", b.name(), err, natModule(v6))
	}
	return b, nil
}

func natModule(v6 bool) string {
	if v6 {
		return "ip6table_nat"
	}
	return "iptable_nat"
}

func (b *iptablesBackend) name() string {
	if b.v6 {
		return "ip6tables"
	}
	return "iptables"
}

// spec is r as iptables arguments, flannel's byte for byte.
func spec(r rule) []string {
	var s []string
	if r.mark {
		s = append(s, "-m", "mark", "--mark", fmt.Sprintf("%#x/%#x", kubeProxyMark, kubeProxyMark))
	}
	if r.src.IsValid() {
		if r.notSrc {
			s = append(s, "!")
		}
		s = append(s, "-s", r.src.String())
	}
	if r.dst.IsValid() {
		if r.notDst {
			s = append(s, "!")
		}
		s = append(s, "-d", r.dst.String())
	}
	s = append(s, "-m", "comment", "--comment", comment)
	switch {
	case r.masquerade && r.random:
		s = append(s, "-j", "MASQUERADE", "--random-fully")
	case r.masquerade:
		s = append(s, "-j", "MASQUERADE")
	default:
		s = append(s, "-j", "RETURN")
	}
	return s
}

var jumpSpec = []string{"-m", "comment", "--comment", comment, "-j", Chain}

// printed is how `iptables -S` prints rule s of chain: what a chain
// holding exactly our rules lists.
func printed(chain string, s []string) string {
	q := slices.Clone(s)
	for i, a := range q {
		if strings.ContainsRune(a, ' ') {
			q[i] = `"` + a + `"`
		}
	}
	return "-A " + chain + " " + strings.Join(q, " ")
}

// check fills a scratch chain with rs and deletes it: iptables and the
// kernel refuse a rule there, or take them all, and either way the
// scratch chain goes.
func (b *iptablesBackend) check(rs []rule) (err error) {
	if err := b.t.ClearChain(natTable, checkChain); err != nil {
		return err
	}
	defer func() {
		if derr := b.t.ClearAndDeleteChain(natTable, checkChain); derr != nil {
			err = errors.Join(err, derr)
		}
	}()
	for _, r := range rs {
		if err := b.t.Append(natTable, checkChain, spec(r)...); err != nil {
			return fmt.Errorf("rule %q: %w", r, err)
		}
	}
	return nil
}

// chainRules lists our chain (its rules, without the -N line), and
// whether it exists.
func (b *iptablesBackend) chainRules() ([]string, bool, error) {
	ok, err := b.t.ChainExists(natTable, Chain)
	if err != nil || !ok {
		return nil, false, err
	}
	lines, err := b.t.List(natTable, Chain)
	if err != nil {
		return nil, false, err
	}
	return slices.DeleteFunc(lines, func(l string) bool { return !strings.HasPrefix(l, "-A ") }), true, nil
}

func (b *iptablesBackend) write(rs []rule) (changed bool, err error) {
	want := make([]string, len(rs))
	for i, r := range rs {
		want[i] = printed(Chain, spec(r))
	}
	have, exists, err := b.chainRules()
	if err != nil {
		return false, err
	}
	if !slices.Equal(have, want) {
		if err := b.fill(rs, exists); err != nil {
			return true, err
		}
		changed = true
		if have, _, err = b.chainRules(); err != nil {
			return true, err
		}
	}
	b.listed = have
	jumped, err := b.ensureJump()
	return changed || jumped, err
}

// fill replaces the chain's content with rs. Without iptables-restore
// there is no transaction: the chain is flushed and refilled in order,
// returns first, so a packet meeting it half-filled is at worst not
// masqueraded. On error it flushes what it wrote.
func (b *iptablesBackend) fill(rs []rule, exists bool) error {
	var err error
	if exists {
		err = b.t.ClearChain(natTable, Chain)
	} else {
		err = b.t.NewChain(natTable, Chain)
	}
	if err != nil {
		return err
	}
	for _, r := range rs {
		if err := b.t.Append(natTable, Chain, spec(r)...); err != nil {
			return errors.Join(fmt.Errorf("rule %q: %w", r, err), b.t.ClearChain(natTable, Chain))
		}
	}
	return nil
}

// ensureJump makes POSTROUTING jump to the chain exactly once, and says
// whether it had to change anything.
func (b *iptablesBackend) ensureJump() (bool, error) {
	lines, err := b.t.List(natTable, postrouting)
	if err != nil {
		return false, err
	}
	line := printed(postrouting, jumpSpec)
	n := 0
	for _, l := range lines {
		if l == line {
			n++
		}
	}
	if n == 0 {
		// Listed in another spelling, perhaps: ask iptables.
		ok, err := b.t.Exists(natTable, postrouting, jumpSpec...)
		if err != nil || ok {
			return false, err
		}
		return true, b.t.Append(natTable, postrouting, jumpSpec...)
	}
	changed := n > 1
	for ; n > 1; n-- {
		if err := b.t.Delete(natTable, postrouting, jumpSpec...); err != nil {
			return true, err
		}
	}
	return changed, nil
}

func (b *iptablesBackend) ensure(rs []rule) (string, error) {
	have, exists, err := b.chainRules()
	if err != nil {
		return "", err
	}
	var repaired []string
	if !exists || !slices.Equal(have, b.listed) {
		switch {
		case !exists:
			repaired = append(repaired, "chain "+Chain+" (deleted)")
		case len(have) == 0:
			repaired = append(repaired, "chain "+Chain+" (flushed)")
		default:
			repaired = append(repaired, fmt.Sprintf("chain %s (%d rules, %d ours)", Chain, len(have), len(rs)))
		}
		if err := b.fill(rs, exists); err != nil {
			return "", err
		}
		if b.listed, _, err = b.chainRules(); err != nil {
			return "", err
		}
	}
	jumped, err := b.ensureJump()
	if err != nil {
		return "", err
	}
	if jumped {
		repaired = append(repaired, "jump from "+postrouting)
	}
	return strings.Join(repaired, ", "), nil
}

func (b *iptablesBackend) remove() error {
	// No chain, no jump: iptables refuses a jump to a missing chain.
	if ok, err := b.t.ChainExists(natTable, Chain); err != nil || !ok {
		return err
	}
	for {
		ok, err := b.t.Exists(natTable, postrouting, jumpSpec...)
		if err != nil || !ok {
			if err != nil {
				return err
			}
			break
		}
		if err := b.t.Delete(natTable, postrouting, jumpSpec...); err != nil {
			return err
		}
	}
	return b.t.ClearAndDeleteChain(natTable, Chain)
}

// removeOther removes flannel's nftables chain of this family.
func (b *iptablesBackend) removeOther() error {
	return removeNFTables(b.v6)
}
