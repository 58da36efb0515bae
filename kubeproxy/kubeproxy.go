// Package kubeproxy writes the nat rules that kube-proxy, in its iptables
// mode, writes for a Service of type ClusterIP: the chains KUBE-SERVICES,
// KUBE-SVC-<hash> and one KUBE-SEP-<hash> per endpoint, KUBE-MARK-MASQ and
// KUBE-POSTROUTING, and the jumps into them from nat PREROUTING, OUTPUT and
// POSTROUTING. It is for teaching: `vxrouter explain --service` prints them
// and `vxrouter demo` loads them into its lab's nodes with iptables-restore,
// so that a pod's connection to a ClusterIP takes the path it takes in a
// cluster, without a Kubernetes.
//
// The rules are kube-proxy's (pkg/proxy/iptables/proxier.go), argument for
// argument, for what a ClusterIP Service needs: the chain names are
// derived from a SHA-256 of the service port's name as kube-proxy derives
// them, each endpoint but the last is chosen with `-m statistic --mode
// random --probability 1/n` with kube-proxy's formatting, the hairpin and
// off-cluster masquerade marks are there. Left out, because a ClusterIP
// Service in a lab does not need them: the filter table's chains
// (KUBE-FORWARD, KUBE-PROXY-FIREWALL, the REJECT of a Service without
// endpoints), KUBE-NODEPORTS and the last rule of KUBE-SERVICES that jumps
// to it, session affinity, and the Local traffic policies.
package kubeproxy

import (
	"crypto/sha256"
	"encoding/base32"
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// Chains every Service's rules hang off, and the mark kube-proxy sets on
// packets to masquerade (its --iptables-masquerade-bit, 14).
const (
	ServicesChain    = "KUBE-SERVICES"
	MarkMasqChain    = "KUBE-MARK-MASQ"
	PostroutingChain = "KUBE-POSTROUTING"
	MasqMark         = "0x4000"
)

// Service is one port of a Service of type ClusterIP and its ready
// endpoints.
type Service struct {
	Namespace, Name string
	PortName        string // "" for the unnamed port of a one-port Service
	Protocol        string // "tcp" or "udp", as kube-proxy writes it
	ClusterIP       netip.Addr
	Port            uint16
	// Endpoints are the backends, pod address and target port, in the
	// order kube-proxy lists them.
	Endpoints []netip.AddrPort
	// ClusterCIDR is kube-proxy's --cluster-cidr, the pod network:
	// connections to the ClusterIP from outside it get masqueraded. Zero
	// leaves that rule out.
	ClusterCIDR netip.Prefix
}

// Check says what is wrong with s, if anything.
func (s Service) Check() error {
	switch {
	case s.Namespace == "" || s.Name == "":
		return errors.New("kube-proxy service: want a namespace and a name")
	case s.Protocol != "tcp" && s.Protocol != "udp":
		return fmt.Errorf("kube-proxy service %s: protocol %q, want tcp or udp", s.PortNameString(), s.Protocol)
	case !s.ClusterIP.Is4():
		return fmt.Errorf("kube-proxy service %s: cluster IP %v, want an IPv4 address", s.PortNameString(), s.ClusterIP)
	case s.Port == 0:
		return fmt.Errorf("kube-proxy service %s: port 0", s.PortNameString())
	case len(s.Endpoints) == 0:
		return fmt.Errorf("kube-proxy service %s: no endpoints (kube-proxy would REJECT in the filter table, which this package does not write)", s.PortNameString())
	}
	for _, ep := range s.Endpoints {
		if !ep.Addr().Is4() || ep.Port() == 0 {
			return fmt.Errorf("kube-proxy service %s: endpoint %v, want IPv4 address:port", s.PortNameString(), ep)
		}
	}
	return nil
}

// PortNameString is kube-proxy's name of the service port, the text its
// comments show and its chain names hash: "default/web", or
// "default/web:http" for a named port.
func (s Service) PortNameString() string {
	n := s.Namespace + "/" + s.Name
	if s.PortName != "" {
		n += ":" + s.PortName
	}
	return n
}

// SVCChain is the service port's chain, KUBE-SVC- and 16 characters of
// the base32 SHA-256 of its name and protocol.
func (s Service) SVCChain() string {
	return "KUBE-SVC-" + hash16(s.PortNameString()+s.Protocol)
}

// SEPChain is the chain of one endpoint, KUBE-SEP- and 16 characters of
// the base32 SHA-256 of the port's name, protocol and endpoint.
func (s Service) SEPChain(ep netip.AddrPort) string {
	return "KUBE-SEP-" + hash16(s.PortNameString()+s.Protocol+ep.String())
}

// hash16 is how kube-proxy keeps chain names within iptables' 28
// characters and still tells services apart.
func hash16(s string) string {
	sum := sha256.Sum256([]byte(s))
	return base32.StdEncoding.EncodeToString(sum[:])[:16]
}

// Probability is the --probability kube-proxy gives the rule that picks
// one of n endpoints still to choose from: 1/n with ten decimals
// (iptables-save prints eleven).
func Probability(n int) string {
	return fmt.Sprintf("%0.10f", 1.0/float64(n))
}

// Rule is one rule of the nat table: the chain it is in and its arguments.
type Rule struct {
	Chain string
	Args  []string
	// Insert puts the rule first in its chain (kube-proxy ensures its
	// jumps from the built-in chains so) instead of last.
	Insert bool
}

// String is the rule as iptables-restore reads it and kube-proxy writes
// it, an argument with a space in double quotes.
func (r Rule) String() string {
	var b strings.Builder
	if r.Insert {
		b.WriteString("-I ")
	} else {
		b.WriteString("-A ")
	}
	b.WriteString(r.Chain)
	for _, a := range r.Args {
		b.WriteByte(' ')
		if strings.ContainsAny(a, " \t") {
			b.WriteString(`"` + a + `"`)
		} else {
			b.WriteString(a)
		}
	}
	return b.String()
}

// Target is the chain or target the rule jumps to.
func (r Rule) Target() string {
	for i, a := range r.Args {
		if a == "-j" && i+1 < len(r.Args) {
			return r.Args[i+1]
		}
	}
	return ""
}

// Ruleset is what kube-proxy writes into the nat table for some Services.
type Ruleset struct {
	Chains []string // the chains it makes (or flushes), in its order
	Rules  []Rule   // the jumps from the built-in chains first, then every chain's rules
}

// Rules returns the nat rules for svcs, in kube-proxy's order: the jumps
// into its chains, KUBE-POSTROUTING and KUBE-MARK-MASQ, then per Service
// port its KUBE-SERVICES rule, its KUBE-SVC chain and its KUBE-SEP chains.
func Rules(svcs ...Service) (Ruleset, error) {
	rs := Ruleset{Chains: []string{ServicesChain, PostroutingChain, MarkMasqChain}}
	comment := func(c string) []string { return []string{"-m", "comment", "--comment", c} }
	jump := func(from, to, c string) Rule {
		return Rule{Chain: from, Insert: true, Args: append(comment(c), "-j", to)}
	}
	rs.Rules = append(rs.Rules,
		jump("OUTPUT", ServicesChain, "kubernetes service portals"),
		jump("PREROUTING", ServicesChain, "kubernetes service portals"),
		jump("POSTROUTING", PostroutingChain, "kubernetes postrouting rules"),
		Rule{Chain: PostroutingChain, Args: []string{"-m", "mark", "!", "--mark", MasqMark + "/" + MasqMark, "-j", "RETURN"}},
		// The mark goes, so a packet that passes the stack again is not
		// masqueraded twice.
		Rule{Chain: PostroutingChain, Args: []string{"-j", "MARK", "--xor-mark", MasqMark}},
		Rule{Chain: PostroutingChain, Args: append(comment("kubernetes service traffic requiring SNAT"), "-j", "MASQUERADE", "--random-fully")},
		Rule{Chain: MarkMasqChain, Args: []string{"-j", "MARK", "--or-mark", MasqMark}},
	)
	for _, s := range svcs {
		if err := s.Check(); err != nil {
			return Ruleset{}, err
		}
		name, proto, svc := s.PortNameString(), s.Protocol, s.SVCChain()
		match := append(comment(name+" cluster IP"),
			"-m", proto, "-p", proto, "-d", s.ClusterIP.String(), "--dport", strconv.Itoa(int(s.Port)))
		rs.Rules = append(rs.Rules, Rule{Chain: ServicesChain, Args: append(clone(match), "-j", svc)})
		rs.Chains = append(rs.Chains, svc)
		if s.ClusterCIDR.IsValid() {
			// Off-cluster clients reaching the ClusterIP through a node
			// are masqueraded: the reply must come back through it.
			rs.Rules = append(rs.Rules, Rule{Chain: svc, Args: append(clone(match),
				"!", "-s", s.ClusterCIDR.Masked().String(), "-j", MarkMasqChain)})
		}
		n := len(s.Endpoints)
		for i, ep := range s.Endpoints {
			args := comment(name + " -> " + ep.String())
			if i < n-1 {
				args = append(args, "-m", "statistic", "--mode", "random", "--probability", Probability(n-i))
			}
			rs.Rules = append(rs.Rules, Rule{Chain: svc, Args: append(args, "-j", s.SEPChain(ep))})
		}
		for _, ep := range s.Endpoints {
			sep := s.SEPChain(ep)
			rs.Chains = append(rs.Chains, sep)
			rs.Rules = append(rs.Rules,
				// Hairpin: a pod reaching itself through its Service.
				Rule{Chain: sep, Args: append(comment(name), "-s", ep.Addr().String(), "-j", MarkMasqChain)},
				Rule{Chain: sep, Args: append(comment(name), "-m", proto, "-p", proto, "-j", "DNAT", "--to-destination", ep.String())},
			)
		}
	}
	return rs, nil
}

func clone(s []string) []string { return append([]string(nil), s...) }

// RestoreInput is the ruleset as input for `iptables-restore --noflush`:
// the nat table only, its chains declared (which creates or flushes
// them), the rules, COMMIT. kube-proxy ensures the jumps from the
// built-in chains with separate `iptables -I` calls, so that restoring
// never touches the other rules of those chains; with --noflush, -I lines
// in the input do the same.
func (rs Ruleset) RestoreInput() string {
	var b strings.Builder
	b.WriteString("*nat\n")
	for _, c := range rs.Chains {
		fmt.Fprintf(&b, ":%s - [0:0]\n", c)
	}
	for _, r := range rs.Rules {
		b.WriteString(r.String())
		b.WriteByte('\n')
	}
	b.WriteString("COMMIT\n")
	return b.String()
}

// Chain returns the rules of one chain, in order.
func (rs Ruleset) Chain(name string) []Rule {
	var out []Rule
	for _, r := range rs.Rules {
		if r.Chain == name {
			out = append(out, r)
		}
	}
	return out
}
