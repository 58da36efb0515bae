package demo

import (
	"bytes"
	"errors"
	"fmt"
	"os/exec"
	"strings"
)

// ipMasqFlag is the flag of `vxrouter run` that writes flannel's
// masquerade rules (nat POSTROUTING -> FLANNEL-POSTRTG), and masqChain
// that chain.
const (
	ipMasqFlag = "--ip-masq"
	masqChain  = "FLANNEL-POSTRTG"
)

// hasIPMasq reports whether bin's `run` has --ip-masq. It is asked, not
// assumed, because the flag came in a change of its own: a build without
// it runs every other step and says why it skips this one.
func hasIPMasq(bin string) bool {
	out, _ := exec.Command(bin, "run", "--help").CombinedOutput()
	return bytes.Contains(out, []byte(ipMasqFlag+" "))
}

// toOutside pings, from the first node's pod, a host on the node network
// that is no node and knows no pod route, and shows the masquerade rule
// that makes the answer come back: its counter, and the echo request on
// both sides of the node, before and after the rewrite of its source.
func (r *run) toOutside() error {
	if !r.ipMasq {
		r.p("   (skipped: this build's `vxrouter run` has no %s, which writes the", ipMasqFlag)
		r.p("   masquerade rules this step shows. `vxrouter explain --to-outside` follows")
		r.p("   the same packet offline, byte by byte.)")
		return nil
	}
	a := r.nodes[0]
	h, err := r.lab.AddHost("outside")
	if err != nil {
		return err
	}
	r.outside = h
	dst := h.Underlay.String()
	r.p("   Host %q (netns %s, eth0 %s) is on the node network but is", h.Name, h.NS, dst)
	r.p("   no node: it knows no route to the pod network %s.", r.o.Network)
	r.cmd(h, "ip", "route")
	r.p("   A packet from pod %s could reach it, but the answer could not find", a.pod.Addr)
	r.p("   its way back. So the nodes run with %s, and each has flannel's chain in", ipMasqFlag)
	r.p("   nat POSTROUTING, which hands what leaves the pod network to MASQUERADE:")
	r.p("   the node rewrites the source to the address of the device the packet leaves by.")
	if _, err := r.cmd(a.Host, "iptables", "-w", "5", "-t", "nat", "-S", masqChain); err != nil {
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
	r.p("   (tcpdump listens on %s's %s, the pod's veth, and eth0, the node network's)", a.name(), veth)
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
	r.p("   The MASQUERADE rule for %s counted %d more packet(s): one per ping run", r.o.Network)
	r.p("   (each has its own echo id), not one per echo. The nat table sees only")
	r.p("   the first packet of a connection; conntrack rewrites the rest, and the")
	r.p("   replies, from what it remembers:")
	for _, l := range r.conntrack(a.Host, "icmp", "src="+a.pod.Addr.String(), "dst="+dst) {
		r.p("      %s", l)
	}
	r.p("   The reply tuple (src=%s dst=%s) is what comes back; conntrack turns its", dst, a.Host.Underlay)
	r.p("   destination back into %s in PREROUTING, before %s routes it to cni0.", a.pod.Addr, a.name())
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
