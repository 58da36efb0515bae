package explain

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"slices"
	"strings"
)

// NAT as the kernel does it: a rule decides once per connection, conntrack
// remembers the decision, and every packet of the connection is rewritten
// in place, its checksums updated incrementally (RFC 1624), never
// recomputed over the payload.

// natField is one field a rewrite changed.
type natField struct {
	name          string
	off           int // in the IP packet
	before, after []byte
	value         func([]byte) string // the field's value, readable
}

// sumUpdate is one checksum a rewrite updated: the field's value before,
// the RFC 1624 update from the words that changed, and the checksum
// recomputed over the whole rewritten header or segment, which must be the
// same.
type sumUpdate struct {
	name         string
	off          int
	old, new     uint16
	recomputed   uint16
	words        [][2]uint16 // each changed 16-bit word: old, new
	pseudoHeader bool        // the words include the pseudo-header's addresses
}

// rewrite is what one NAT rewrite did to one IPv4 packet.
type rewrite struct {
	before, after []byte
	fields        []natField
	sums          []sumUpdate // the IPv4 header's, then the ICMP, UDP or TCP one's
}

// natChange asks for one field of a packet to be set; invalid addresses
// and zero ports leave their field alone.
type natChange struct {
	src, dst     netip.Addr
	sport, dport uint16 // ICMP: sport is the echo identifier
}

// natRewrite rewrites a copy of the IPv4 packet pkt as c says, updating
// both checksums the way the kernel does (csum_replace4 and
// inet_proto_csum_replace4/2: one's complement arithmetic over the words
// that changed), and checks the result against checksums recomputed from
// scratch.
func natRewrite(pkt []byte, c natChange) (rewrite, error) {
	if len(pkt) < 20 || pkt[0]>>4 != 4 {
		return rewrite{}, fmt.Errorf("nat: not an IPv4 packet")
	}
	hl := int(pkt[0]&0x0f) * 4
	proto := pkt[9]
	l4 := pkt[hl:]
	rw := rewrite{before: slices.Clone(pkt), after: slices.Clone(pkt)}
	out := rw.after

	var l4Name string
	var l4Sum int // offset of the L4 checksum in the segment
	var pseudo bool
	switch proto {
	case 1:
		l4Name, l4Sum = "ICMP checksum", 2
	case 6:
		l4Name, l4Sum, pseudo = "TCP checksum", 16, true
	case 17:
		l4Name, l4Sum, pseudo = "UDP checksum", 6, true
	default:
		return rewrite{}, fmt.Errorf("nat: protocol %d", proto)
	}
	if len(l4) < l4Sum+2 {
		return rewrite{}, fmt.Errorf("nat: segment too short")
	}
	ipSum := sumUpdate{name: "IPv4 header checksum", off: 10, old: binary.BigEndian.Uint16(pkt[10:])}
	l4Up := sumUpdate{name: l4Name, off: hl + l4Sum, old: binary.BigEndian.Uint16(l4[l4Sum:]), pseudoHeader: pseudo}

	set := func(name string, off int, b []byte, inIP, inL4 bool, value func([]byte) string) {
		old := out[off : off+len(b)]
		if slices.Equal(old, b) {
			return
		}
		rw.fields = append(rw.fields, natField{name: name, off: off, before: slices.Clone(old), after: slices.Clone(b), value: value})
		for i := 0; i < len(b); i += 2 {
			w := [2]uint16{binary.BigEndian.Uint16(old[i:]), binary.BigEndian.Uint16(b[i:])}
			if inIP {
				ipSum.words = append(ipSum.words, w)
			}
			if inL4 {
				l4Up.words = append(l4Up.words, w)
			}
		}
		copy(old, b)
	}
	addr := func(b []byte) string { a, _ := netip.AddrFromSlice(b); return a.String() }
	port := func(b []byte) string { return fmt.Sprint(binary.BigEndian.Uint16(b)) }
	u16 := func(v uint16) []byte { return binary.BigEndian.AppendUint16(nil, v) }
	if c.src.IsValid() {
		set("source", 12, c.src.AsSlice(), true, pseudo, addr)
	}
	if c.dst.IsValid() {
		set("destination", 16, c.dst.AsSlice(), true, pseudo, addr)
	}
	switch {
	case proto == 1 && c.sport != 0:
		set("identifier", hl+4, u16(c.sport), false, true, port)
	case proto != 1 && c.sport != 0:
		set("source port", hl, u16(c.sport), false, true, port)
	}
	if proto != 1 && c.dport != 0 {
		set("destination port", hl+2, u16(c.dport), false, true, port)
	}

	ipSum.new = incremental(ipSum.old, ipSum.words)
	binary.BigEndian.PutUint16(out[10:], ipSum.new)
	l4Up.new = incremental(l4Up.old, l4Up.words)
	binary.BigEndian.PutUint16(out[hl+l4Sum:], l4Up.new)

	// Recomputed from scratch, with the field zeroed, as the sender did.
	hdr := slices.Clone(out[:hl])
	hdr[10], hdr[11] = 0, 0
	ipSum.recomputed = checksum(hdr)
	seg := slices.Clone(out[hl:])
	seg[l4Sum], seg[l4Sum+1] = 0, 0
	if pseudo {
		src, _ := netip.AddrFromSlice(out[12:16])
		dst, _ := netip.AddrFromSlice(out[16:20])
		l4Up.recomputed = l4Checksum(src, dst, proto, seg)
	} else {
		l4Up.recomputed = checksum(seg)
	}
	rw.sums = []sumUpdate{ipSum, l4Up}
	for _, s := range rw.sums {
		if !sameSum(s.new, s.recomputed) {
			return rewrite{}, fmt.Errorf("nat: %s updated to 0x%04x, recomputed 0x%04x", s.name, s.new, s.recomputed)
		}
	}
	return rw, nil
}

// incremental is RFC 1624's equation 3 applied to each changed word:
// HC' = ~(~HC + ~m + m').
func incremental(hc uint16, words [][2]uint16) uint16 {
	sum := uint32(^hc)
	for _, w := range words {
		sum += uint32(^w[0]) + uint32(w[1])
	}
	for sum > 0xffff {
		sum = sum>>16 + sum&0xffff
	}
	return ^uint16(sum)
}

// sameSum reports whether two checksums are the same number in one's
// complement, where 0x0000 and 0xffff are both zero: an incremental
// update can give one where a full computation gives the other (RFC 1624,
// section 3), and a receiver accepts either.
func sameSum(a, b uint16) bool {
	return a == b || a|b == 0xffff && a&b == 0
}

// formula is the update written out, as the text shows it.
func (s sumUpdate) formula() string {
	if len(s.words) == 0 {
		return fmt.Sprintf("no word it covers changed: 0x%04x", s.old)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "~(~%04x", s.old)
	for _, w := range s.words {
		fmt.Fprintf(&b, " + ~%04x + %04x", w[0], w[1])
	}
	fmt.Fprintf(&b, ") = %04x", s.new)
	return b.String()
}

// writeRewrite prints what a rewrite changed, field by field, and how each
// checksum followed.
func writeRewrite(p *printer, rw rewrite) {
	rows := []string{"off\tfield\tbefore\tafter"}
	for _, f := range rw.fields {
		rows = append(rows,
			fmt.Sprintf("%d\t%s\t%s\t%s", f.off, f.name, f.value(f.before), f.value(f.after)),
			fmt.Sprintf("\t\t%s\t%s", hexBytes(f.before), hexBytes(f.after)))
	}
	for _, s := range rw.sums {
		name := "header checksum"
		if s.off != 10 {
			name = s.name
		}
		rows = append(rows, fmt.Sprintf("%d\t%s\t0x%04x\t0x%04x", s.off, name, s.old, s.new))
	}
	p.table(rows...)
	for _, s := range rw.sums {
		covers := "the header"
		switch {
		case s.pseudoHeader:
			covers = "the pseudo-header's addresses and the segment"
		case s.off != 10:
			covers = "the message, with no pseudo-header"
		}
		lines := []string{fmt.Sprintf("%s (covers %s):", s.name, covers)}
		if len(s.words) > 0 {
			lines = append(lines, "  RFC 1624: ~(~HC + ~m + m') over each 16-bit word m that became m'")
		}
		lines = append(lines, "  "+s.formula())
		lines = append(lines, fmt.Sprintf("  recomputed over the whole rewritten packet: %04x, %s", s.recomputed, map[bool]string{true: "the same", false: "the same number (0 in one's complement)"}[s.recomputed == s.new]))
		p.code(lines...)
	}
}

// flannelRule is one rule of flannel's masquerade chain FLANNEL-POSTRTG,
// which flanneld --ip-masq (and vxrouter run --ip-masq) writes: a zero
// prefix matches any address.
type flannelRule struct {
	mark           bool // kube-proxy's mark 0x4000
	src, dst       netip.Prefix
	notSrc, notDst bool
	masquerade     bool // else RETURN
}

// flannelRules is flannel's chain for a node with subnet in cluster, in
// flannel's order (pkg/trafficmngr/iptables: masqRules).
func flannelRules(cluster, subnet netip.Prefix) []flannelRule {
	return []flannelRule{
		{mark: true},
		{src: subnet, dst: cluster},
		{src: cluster, dst: subnet},
		{src: cluster, notSrc: true, dst: subnet},
		{src: cluster, dst: netip.MustParsePrefix("224.0.0.0/4"), notDst: true, masquerade: true},
		{src: cluster, notSrc: true, dst: cluster, masquerade: true},
	}
}

// String is the rule as `iptables -t nat -S FLANNEL-POSTRTG` prints it.
func (r flannelRule) String() string {
	var b strings.Builder
	b.WriteString("-A FLANNEL-POSTRTG")
	if r.mark {
		b.WriteString(" -m mark --mark 0x4000/0x4000")
	}
	not := map[bool]string{true: " !", false: ""}
	if r.src.IsValid() {
		fmt.Fprintf(&b, "%s -s %s", not[r.notSrc], r.src)
	}
	if r.dst.IsValid() {
		fmt.Fprintf(&b, "%s -d %s", not[r.notDst], r.dst)
	}
	b.WriteString(` -m comment --comment "flanneld masq"`)
	if r.masquerade {
		b.WriteString(" -j MASQUERADE --random-fully")
	} else {
		b.WriteString(" -j RETURN")
	}
	return b.String()
}

// short is the rule's matches and target, without chain and comment.
func (r flannelRule) short() string {
	s := strings.TrimPrefix(r.String(), "-A FLANNEL-POSTRTG ")
	s = strings.Replace(s, ` -m comment --comment "flanneld masq"`, "", 1)
	return strings.Replace(s, " --random-fully", "", 1)
}

// match says whether the rule matches a packet from src to dst without
// kube-proxy's mark, and why.
func (r flannelRule) match(src, dst netip.Addr) (bool, string) {
	if r.mark {
		return false, "no: kube-proxy marked nothing"
	}
	in := func(p netip.Prefix, not bool, a netip.Addr, what string) (bool, string) {
		if !p.IsValid() {
			return true, ""
		}
		ok := p.Contains(a) != not
		switch {
		case ok:
			return true, ""
		case not:
			return false, fmt.Sprintf("no: %s %s is in %s", what, a, p)
		}
		return false, fmt.Sprintf("no: %s %s is not in %s", what, a, p)
	}
	if ok, why := in(r.src, r.notSrc, src, "source"); !ok {
		return false, why
	}
	if ok, why := in(r.dst, r.notDst, dst, "destination"); !ok {
		return false, why
	}
	if r.masquerade {
		return true, "yes: MASQUERADE"
	}
	return true, "yes: RETURN, no masquerade"
}

// conntrackLines is a connection's entry as `conntrack -L` shows it on
// one line, broken here before each part: the original tuple, the reply
// tuple the kernel expects back, the rest.
func conntrackLines(pk ipPacket, reply natChange, state string) []string {
	orig, rest, _ := strings.Cut(conntrackLine(pk, reply, state), " [UNREPLIED] ")
	tuple, tail, _ := strings.Cut(rest, " mark=")
	return []string{"nodeA$ conntrack -L", orig, "    [UNREPLIED] " + tuple, "    mark=" + tail}
}

// conntrackLine is a connection's entry as `conntrack -L` shows it.
func conntrackLine(pk ipPacket, reply natChange, state string) string {
	rsrc, rdst, rsport, rdport := pk.dst, pk.src, pk.dport, pk.sport
	if reply.src.IsValid() {
		rsrc = reply.src
	}
	if reply.dst.IsValid() {
		rdst = reply.dst
	}
	if reply.sport != 0 {
		rsport = reply.sport
	}
	if reply.dport != 0 {
		rdport = reply.dport
	}
	switch pk.proto {
	case "icmp":
		return fmt.Sprintf("icmp 1 30 src=%s dst=%s type=8 code=0 id=%d [UNREPLIED] src=%s dst=%s type=0 code=0 id=%d mark=0 use=1",
			pk.src, pk.dst, pk.sport, rsrc, rdst, rdport)
	case "tcp":
		return fmt.Sprintf("tcp 6 120 %s src=%s dst=%s sport=%d dport=%d [UNREPLIED] src=%s dst=%s sport=%d dport=%d mark=0 use=1",
			state, pk.src, pk.dst, pk.sport, pk.dport, rsrc, rdst, rsport, rdport)
	}
	return fmt.Sprintf("udp 17 30 src=%s dst=%s sport=%d dport=%d [UNREPLIED] src=%s dst=%s sport=%d dport=%d mark=0 use=1",
		pk.src, pk.dst, pk.sport, pk.dport, rsrc, rdst, rsport, rdport)
}

// wrapRule breaks an iptables rule longer than width before its options,
// with a backslash at the end of every line but the last.
func wrapRule(rule string, width int) []string {
	var lines []string
	cur := ""
	for _, tok := range splitRule(rule) {
		if cur != "" && len(cur)+1+len(tok)+2 > width {
			lines = append(lines, cur+` \`)
			cur = "    " + tok
			continue
		}
		if cur != "" {
			cur += " "
		}
		cur += tok
	}
	return append(lines, cur)
}

// splitRule cuts a rule into its options with their values ("-d
// 192.168.3.10", "! -s 172.16.0.0/16", `--comment "a b"`), the pieces
// wrapRule may put on separate lines.
func splitRule(rule string) []string {
	var words []string
	for rest := rule; rest != ""; {
		rest = strings.TrimLeft(rest, " ")
		if strings.HasPrefix(rest, `"`) {
			end := strings.Index(rest[1:], `"`) + 2
			words = append(words, rest[:end])
			rest = rest[end:]
			continue
		}
		w, r, _ := strings.Cut(rest, " ")
		words = append(words, w)
		rest = r
	}
	var toks []string
	for i := 0; i < len(words); i++ {
		t := words[i]
		if t == "!" && i+1 < len(words) {
			i++
			t += " " + words[i]
		}
		if strings.HasPrefix(t, "-") || strings.HasPrefix(t, "! -") {
			for i+1 < len(words) && !strings.HasPrefix(words[i+1], "-") && words[i+1] != "!" {
				i++
				t += " " + words[i]
			}
		}
		toks = append(toks, t)
	}
	return toks
}
