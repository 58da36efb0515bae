package demo

import (
	"errors"
	"fmt"
	"strings"
)

// ipMasqFlag is the flag of `vxrouter run` that writes flannel's
// masquerade rules (nat POSTROUTING -> FLANNEL-POSTRTG), and masqChain
// that chain.
const (
	ipMasqFlag = "--ip-masq"
	masqChain  = "FLANNEL-POSTRTG"
)

// toOutside pings, from the first node's pod, a host on the node network
// that is no node and knows no pod route, and shows the masquerade rule
// that makes the answer come back: its counter, and the echo request on
// both sides of the node, before and after the rewrite of its source.
func (r *run) toOutside() error {
	a := r.nodes[0]
	h, err := r.lab.AddHost("outside")
	if err != nil {
		return err
	}
	r.outside = h
	dst := h.Underlay.String()
	r.p("   Host %q (netns %s, eth0 %s) is on the node network", h.Name, h.NS, dst)
	r.p("   but is no node: it knows no route to the pod network %s.", r.o.Network)
	r.cmd(h, "ip", "route")
	r.p("   A packet from pod %s could reach it, but the answer could not", a.pod.Addr)
	r.p("   find its way back. So the nodes run with %s: each has flannel's", ipMasqFlag)
	r.p("   chain in nat POSTROUTING, which hands what leaves the pod network to")
	r.p("   MASQUERADE: the node rewrites the source to the address of the device")
	r.p("   the packet leaves by.")
	if _, err := r.iptables(a.Host, "-t", "nat", "-S", masqChain); err != nil {
		r.fail("%s has no chain %s: %v", a.name(), masqChain, err)
		return nil
	}
	_, before, err := r.ruleCounters(a.Host, masqChain)
	if err != nil {
		r.fail("read %s's counters on %s: %v", masqChain, a.name(), err)
		return nil
	}

	filter := "icmp and dst host " + dst
	veth := a.pod.HostDev // the pod's side: see toService
	inside, err := r.startCapture(a.Host, veth, filter, 1)
	if err != nil {
		return err
	}
	outside, err := r.startCapture(a.Host, "eth0", filter, 1)
	if err != nil {
		inside.stop()
		return err
	}
	r.p("   (tcpdump listens on %s's %s, the pod's veth, and on its eth0)", a.name(), veth)
	res, err := pingUntilUp(r.ctx, a.pod, h.Underlay)
	if err != nil || res.Received < res.Sent || res.Sent == 0 {
		r.fail("ping %s -> %s: %d/%d replies (%v)", a.pod.Addr, dst, res.Received, res.Sent, err)
		inside.stop()
		outside.stop()
		return nil
	}
	r.p("   %s %-15s -> %s %-15s %d/%d replies, avg %.3f ms", a.name(), a.pod.Addr, h.Name, dst,
		res.Received, res.Sent, float64(res.RTTAvg.Microseconds())/1000)

	in, ierr := inside.wait()
	out, oerr := outside.wait()
	r.p("   The first echo request, on %s, before nat POSTROUTING:", veth)
	r.indent("      ", strings.Join(in, "\n"))
	r.p("   and on eth0, after it:")
	r.indent("      ", strings.Join(out, "\n"))
	wantIn := fmt.Sprintf("IP %s > %s: ICMP echo request", a.pod.Addr, dst)
	wantOut := fmt.Sprintf("IP %s > %s: ICMP echo request", a.Host.Underlay, dst)
	switch {
	case ierr != nil || oerr != nil:
		r.fail("capture: %v", errors.Join(ierr, oerr))
	case len(in) == 0 || !strings.HasPrefix(in[0], wantIn):
		r.fail("on %s, want %q", veth, wantIn)
	case len(out) == 0 || !strings.HasPrefix(out[0], wantOut):
		r.fail("on eth0, want %q: the source was not rewritten", wantOut)
	default:
		r.p("   The source %s became %s, %s's own address on eth0.", a.pod.Addr, a.Host.Underlay, a.name())
		if idIn, idOut := echoID(in[0]), echoID(out[0]); idIn != idOut {
			r.p("   The echo id %s became %s: MASQUERADE --random-fully picks it, as it", idIn, idOut)
			r.p("   picks a TCP or UDP source port, so the ICMP checksum changed too.")
		}
	}

	listing, after, err := r.ruleCounters(a.Host, masqChain)
	if err != nil {
		r.fail("read %s's counters on %s: %v", masqChain, a.name(), err)
		return nil
	}
	r.p("   %s$ iptables -t nat -L %s -v -n -x", a.name(), masqChain)
	r.indent("      ", listing)
	moved := masqueraded(after) - masqueraded(before)
	if moved == 0 {
		r.fail("the MASQUERADE rule of %s did not count the ping", masqChain)
		return nil
	}
	r.p("   The MASQUERADE rule for %s counted %d more packet(s), one", r.o.Network, moved)
	r.p("   per ping run (each has its own echo id), not one per echo. The nat table")
	r.p("   sees only the first packet of a connection; conntrack rewrites the rest,")
	r.p("   and the replies, from what it remembers:")
	for _, l := range r.conntrack(a.Host, "icmp", "src="+a.pod.Addr.String(), "dst="+dst) {
		r.p("      %s", l)
	}
	r.p("   The reply tuple (src=%s dst=%s) is what comes back; conntrack", dst, a.Host.Underlay)
	r.p("   turns its destination back into %s in PREROUTING, before %s", a.pod.Addr, a.name())
	r.p("   routes it to cni0.")
	return nil
}

// masqueraded adds up the counters of the chain's MASQUERADE rules.
func masqueraded(rs []ruleCount) uint64 {
	var n uint64
	for _, r := range rs {
		if r.target == "MASQUERADE" {
			n += r.packets
		}
	}
	return n
}

// echoID is the echo identifier in tcpdump's line for an ICMP echo.
func echoID(line string) string {
	_, rest, ok := strings.Cut(line, ", id ")
	if !ok {
		return ""
	}
	id, _, _ := strings.Cut(rest, ",")
	return id
}
