package masq

import (
	"fmt"
	"net"
	"net/netip"
	"reflect"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"

	"github.com/coreos/go-iptables/iptables"
)

// flannel's nftables names (its EnableNFTables mode): the table of each
// family and the chain in it that holds the rules.
const (
	NFTable4 = "flannel-ipv4"
	NFTable6 = "flannel-ipv6"
	NFTChain = "postrtg"
	// nftCheckTable is where New tries the rules out, in a batch that
	// also deletes it: it never exists outside the kernel's transaction.
	nftCheckTable = "vxrouter-masq-check"
)

// nftBackend writes one family's rules with nftables, over netlink.
type nftBackend struct {
	v6 bool
}

func newNFTables(v6 bool) (*nftBackend, error) {
	b := &nftBackend{v6: v6}
	c, err := nftables.New()
	if err == nil {
		_, err = c.ListTablesOfFamily(b.family())
	}
	if err != nil {
		return nil, fmt.Errorf("nftables not usable: %w (does the kernel have nf_tables? modprobe nf_tables; or leave EnableNFTables out of the config to use iptables)", err)
	}
	return b, nil
}

func (b *nftBackend) name() string { return "nftables" }

func (b *nftBackend) family() nftables.TableFamily {
	if b.v6 {
		return nftables.TableFamilyIPv6
	}
	return nftables.TableFamilyIPv4
}

func (b *nftBackend) tableName() string {
	if b.v6 {
		return NFTable6
	}
	return NFTable4
}

// addChain adds (if absent) table and its nat chain to c's batch.
func (b *nftBackend) addChain(c *nftables.Conn, table string) *nftables.Chain {
	t := c.AddTable(&nftables.Table{Name: table, Family: b.family()})
	return c.AddChain(&nftables.Chain{
		Name:     NFTChain,
		Table:    t,
		Type:     nftables.ChainTypeNAT,
		Hooknum:  nftables.ChainHookPostrouting,
		Priority: nftables.ChainPriorityNATSource,
	})
}

// addRules adds rs to ch in c's batch.
func addRules(c *nftables.Conn, ch *nftables.Chain, rs []rule) {
	for _, r := range rs {
		c.AddRule(&nftables.Rule{Table: ch.Table, Chain: ch, Exprs: exprs(r), UserData: ruleComment})
	}
}

// ruleComment is flannel's iptables comment, shown by `nft list`.
var ruleComment = userdata.AppendString(nil, userdata.TypeComment, comment)

// check adds a scratch table with rs and deletes it in one batch: the
// kernel refuses the batch, or takes it and is left as it was.
func (b *nftBackend) check(rs []rule) error {
	c, err := nftables.New()
	if err != nil {
		return err
	}
	ch := b.addChain(c, nftCheckTable)
	addRules(c, ch, rs)
	c.DelTable(ch.Table)
	return c.Flush()
}

// rules reads our chain's rules, and whether the chain exists.
func (b *nftBackend) rules(c *nftables.Conn) ([]*nftables.Rule, bool, error) {
	chains, err := c.ListChainsOfTableFamily(b.family())
	if err != nil {
		return nil, false, err
	}
	for _, ch := range chains {
		if ch.Table.Name == b.tableName() && ch.Name == NFTChain {
			rs, err := c.GetRules(ch.Table, ch)
			return rs, true, err
		}
	}
	return nil, false, nil
}

// same reports whether the kernel's rules have rs's expressions, in
// order, and nothing else.
func same(have []*nftables.Rule, rs []rule) bool {
	if len(have) != len(rs) {
		return false
	}
	for i, r := range rs {
		if !reflect.DeepEqual(have[i].Exprs, exprs(r)) {
			return false
		}
	}
	return true
}

// write replaces the chain's content in one batch: flush and add are one
// transaction, so no packet ever meets a half-written chain.
func (b *nftBackend) write(rs []rule) (bool, error) {
	c, err := nftables.New()
	if err != nil {
		return false, err
	}
	have, _, err := b.rules(c)
	if err != nil {
		return false, err
	}
	if same(have, rs) {
		return false, nil
	}
	ch := b.addChain(c, b.tableName())
	c.FlushChain(ch)
	addRules(c, ch, rs)
	return true, c.Flush()
}

func (b *nftBackend) ensure(rs []rule) (string, error) {
	c, err := nftables.New()
	if err != nil {
		return "", err
	}
	have, exists, err := b.rules(c)
	if err != nil || same(have, rs) {
		return "", err
	}
	what := fmt.Sprintf("chain %s %s (%d rules, %d ours)", b.tableName(), NFTChain, len(have), len(rs))
	switch {
	case !exists:
		what = fmt.Sprintf("chain %s %s (deleted)", b.tableName(), NFTChain)
	case len(have) == 0:
		what = fmt.Sprintf("chain %s %s (flushed)", b.tableName(), NFTChain)
	}
	_, err = b.write(rs)
	return what, err
}

func (b *nftBackend) remove() error { return removeNFTables(b.v6) }

// removeOther removes flannel's iptables chain of this family.
func (b *nftBackend) removeOther() error {
	proto := iptables.ProtocolIPv4
	if b.v6 {
		proto = iptables.ProtocolIPv6
	}
	t, err := iptables.New(iptables.IPFamily(proto), iptables.Timeout(lockWait))
	if err != nil {
		return err // no iptables, no iptables rules
	}
	ipt := &iptablesBackend{t: t, v6: b.v6}
	return ipt.remove()
}

// removeNFTables deletes flannel's nftables chain of one family, and its
// table if that leaves it empty.
func removeNFTables(v6 bool) error {
	b := &nftBackend{v6: v6}
	c, err := nftables.New()
	if err != nil {
		return err
	}
	chains, err := c.ListChainsOfTableFamily(b.family())
	if err != nil {
		return err
	}
	var ours *nftables.Chain
	others := 0
	for _, ch := range chains {
		if ch.Table.Name != b.tableName() {
			continue
		}
		if ch.Name == NFTChain {
			ours = ch
		} else {
			others++
		}
	}
	if ours == nil {
		return nil
	}
	c.FlushChain(ours)
	c.DelChain(ours)
	if others == 0 {
		c.DelTable(ours.Table)
	}
	return c.Flush()
}

// exprs is r as nftables expressions, what nft makes of the rule's text
// (see rule.String).
func exprs(r rule) []expr.Any {
	var e []expr.Any
	if r.mark {
		e = append(e,
			&expr.Meta{Key: expr.MetaKeyMARK, Register: 1},
			&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4,
				Mask: binaryutil.NativeEndian.PutUint32(kubeProxyMark), Xor: make([]byte, 4)},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.NativeEndian.PutUint32(kubeProxyMark)},
		)
	}
	e = appendAddr(e, r.src, r.notSrc, true)
	e = appendAddr(e, r.dst, r.notDst, false)
	switch {
	case r.masquerade:
		e = append(e, &expr.Masq{FullyRandom: r.random})
	default:
		e = append(e, &expr.Verdict{Kind: expr.VerdictReturn})
	}
	return e
}

// appendAddr matches the source or destination address against p (not
// in it, with not); a zero p matches anything and adds nothing.
func appendAddr(e []expr.Any, p netip.Prefix, not, src bool) []expr.Any {
	if !p.IsValid() {
		return e
	}
	// Where the address is in the IP header.
	off := uint32(16) // IPv4 destination
	switch {
	case p.Addr().Is4() && src:
		off = 12
	case p.Addr().Is6() && src:
		off = 8
	case p.Addr().Is6():
		off = 24
	}
	n := uint32(p.Addr().BitLen() / 8)
	e = append(e, &expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: off, Len: n})
	if p.Bits() < p.Addr().BitLen() {
		e = append(e, &expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: n,
			Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen()), Xor: make([]byte, n)})
	}
	op := expr.CmpOpEq
	if not {
		op = expr.CmpOpNeq
	}
	return append(e, &expr.Cmp{Op: op, Register: 1, Data: p.Masked().Addr().AsSlice()})
}
