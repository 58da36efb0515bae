package e2e

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"vxrouter/lab"
)

// doer is a namespace to run code in: a lab host or pod.
type doer interface{ Do(func() error) error }

// seenAs opens a TCP connection from from's namespace to a listener on
// to in at's namespace, and returns the source address the listener
// saw: who the connection said it came from when it arrived.
func (o *overlay) seenAs(from, at doer, to netip.AddrPort) netip.Addr {
	o.t.Helper()
	var ln *net.TCPListener
	if err := at.Do(func() error {
		l, err := net.Listen("tcp", to.String())
		if err == nil {
			ln = l.(*net.TCPListener)
		}
		return err
	}); err != nil {
		o.t.Fatalf("listen on %s: %v", to, err)
	}
	defer ln.Close()
	ln.SetDeadline(time.Now().Add(20 * time.Second))
	type result struct {
		peer netip.Addr
		err  error
	}
	done := make(chan result, 1)
	go func() {
		c, err := ln.AcceptTCP()
		if err != nil {
			done <- result{err: err}
			return
		}
		defer c.Close()
		done <- result{peer: c.RemoteAddr().(*net.TCPAddr).AddrPort().Addr().Unmap()}
	}()
	if err := from.Do(func() error {
		c, err := net.DialTimeout("tcp", to.String(), 10*time.Second)
		if err != nil {
			return err
		}
		return c.Close()
	}); err != nil {
		o.t.Fatalf("connect to %s: %v", to, err)
	}
	r := <-done
	if r.err != nil {
		o.t.Fatalf("accept on %s: %v", to, r.err)
	}
	return r.peer
}

// restart stops n and starts it again with args, and returns once the
// new process has written its subnet.env (the old one is removed first:
// it would say the node is up before it is). The subnet stays: the node
// finds its own live lease.
func (o *overlay) restart(n *lab.Node, args ...string) *lab.Node {
	o.t.Helper()
	o.stop(n)
	if err := os.Remove(n.SubnetFile); err != nil {
		o.t.Fatal(err)
	}
	m, _ := o.start(n.Host, args...)
	return m
}

// masqChain is flannel's chain for network and subnet, as `iptables -t
// nat -S` prints it, and the jump to it.
func masqChain(network, subnet netip.Prefix) []string {
	return []string{
		`-N FLANNEL-POSTRTG`,
		`-A POSTROUTING -m comment --comment "flanneld masq" -j FLANNEL-POSTRTG`,
		`-A FLANNEL-POSTRTG -m mark --mark 0x4000/0x4000 -m comment --comment "flanneld masq" -j RETURN`,
		fmt.Sprintf(`-A FLANNEL-POSTRTG -s %s -d %s -m comment --comment "flanneld masq" -j RETURN`, subnet, network),
		fmt.Sprintf(`-A FLANNEL-POSTRTG -s %s -d %s -m comment --comment "flanneld masq" -j RETURN`, network, subnet),
		fmt.Sprintf(`-A FLANNEL-POSTRTG ! -s %s -d %s -m comment --comment "flanneld masq" -j RETURN`, network, subnet),
		fmt.Sprintf(`-A FLANNEL-POSTRTG -s %s ! -d 224.0.0.0/4 -m comment --comment "flanneld masq" -j MASQUERADE --random-fully`, network),
		fmt.Sprintf(`-A FLANNEL-POSTRTG ! -s %s -d %s -m comment --comment "flanneld masq" -j MASQUERADE --random-fully`, network, network),
	}
}

// natRules is every line of the host's nat table that has to do with
// FLANNEL-POSTRTG, in order.
func (o *overlay) natRules(h *lab.Host) []string {
	o.t.Helper()
	out, err := h.Run(o.ctx, "iptables", "-t", "nat", "-S")
	if err != nil {
		o.t.Fatal(err)
	}
	var lines []string
	for _, l := range strings.Split(out, "\n") {
		if strings.Contains(l, "FLANNEL-POSTRTG") {
			lines = append(lines, strings.TrimSpace(l))
		}
	}
	return lines
}

// waitNAT waits until the host's rules read want, and fails the test
// with what they read if they do not within 20 s.
func (o *overlay) waitNAT(h *lab.Host, read func(*lab.Host) []string, want []string) {
	o.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		got := read(h)
		if slices.Equal(got, want) {
			return
		}
		if time.Now().After(deadline) {
			o.t.Fatalf("%s's rules:\n%s\nwant:\n%s", h.Name, strings.Join(got, "\n"), strings.Join(want, "\n"))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestIPMasq: with --ip-masq a pod reaches a host outside the overlay
// that has no route back to pod addresses, and that host sees the node's
// address; pod to pod keeps the pods' own addresses; a host outside
// reaching in through the node keeps its address to the node's own pods
// and shows the node's overlay address to the others. The rules are
// flannel's, there exactly once after a restart, and come back within
// --iptables-resync after someone flushes the chain or deletes the jump.
func TestIPMasq(t *testing.T) {
	o := newOverlay(t, network16)
	h1, h2, out := o.host("m1"), o.host("m2"), o.host("outside")
	masqArgs := []string{"--ip-masq", "--iptables-resync", "1"}

	// Without --ip-masq the outside host cannot answer a pod: the test
	// can tell.
	n1, env1 := o.start(h1)
	p1 := o.pod(h1, env1.Subnet.Masked())
	if res, err := p1.Ping(o.ctx, out.Underlay, 1); err == nil || res.Received != 0 {
		t.Fatalf("without --ip-masq, the outside host answered the pod: %v\n%s", err, res.Output)
	}
	if env1.IPMasq {
		t.Fatal("subnet.env says FLANNEL_IPMASQ=true without --ip-masq")
	}

	n1 = o.restart(n1, masqArgs...)
	n2, env2 := o.start(h2, masqArgs...)
	p2 := o.pod(h2, env2.Subnet.Masked())
	for _, n := range []*lab.Node{n1, n2} {
		raw, err := os.ReadFile(n.SubnetFile)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasSuffix(string(raw), "\nFLANNEL_IPMASQ=true\n") {
			t.Fatalf("%s subnet.env with --ip-masq:\n%s", n.Host.Name, raw)
		}
	}
	subnet1 := env1.Subnet.Masked()
	want1 := masqChain(o.cfg.Network, subnet1)
	if got := o.natRules(h1); !slices.Equal(got, want1) {
		t.Fatalf("nat rules:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want1, "\n"))
	}

	outside := func() {
		t.Helper()
		res, err := p1.Ping(o.ctx, out.Underlay, 3)
		if err != nil || res.Received != 3 {
			t.Fatalf("pod -> outside host: %d/3 replies: %v\n%s", res.Received, err, res.Output)
		}
		if got := o.seenAs(p1, out, netip.AddrPortFrom(out.Underlay, 7001)); got != h1.Underlay {
			t.Fatalf("the outside host saw the pod's connection come from %s, want the node's %s", got, h1.Underlay)
		}
		t.Logf("pod %s -> outside %s: 3/3 pings, TCP seen from %s", p1.Addr, out.Underlay, h1.Underlay)
	}
	outside()

	o.mustPing(p1, p2)
	if got := o.seenAs(p1, p2, netip.AddrPortFrom(p2.Addr, 7002)); got != p1.Addr {
		t.Fatalf("pod %s -> pod %s seen from %s", p1.Addr, p2.Addr, got)
	}
	if got := o.seenAs(p2, p1, netip.AddrPortFrom(p1.Addr, 7003)); got != p2.Addr {
		t.Fatalf("pod %s -> pod %s seen from %s", p2.Addr, p1.Addr, got)
	}
	t.Logf("pod to pod across the two nodes: each saw the other's own address")

	// The outside host routes the overlay through node 1.
	if _, err := out.Run(o.ctx, "ip", "route", "add", o.cfg.Network.String(), "via", h1.Underlay.String()); err != nil {
		t.Fatal(err)
	}
	if got := o.seenAs(out, p1, netip.AddrPortFrom(p1.Addr, 7004)); got != out.Underlay {
		t.Fatalf("outside -> node 1's pod seen from %s, want the outside host's %s", got, out.Underlay)
	}
	if got := o.seenAs(out, p2, netip.AddrPortFrom(p2.Addr, 7005)); got != subnet1.Addr() {
		t.Fatalf("outside -> node 2's pod through node 1 seen from %s, want node 1's overlay address %s", got, subnet1.Addr())
	}
	t.Logf("outside -> pods through node 1: its own pod saw %s, node 2's pod saw %s", out.Underlay, subnet1.Addr())

	n1 = o.restart(n1, masqArgs...)
	if got := o.natRules(h1); !slices.Equal(got, want1) {
		t.Fatalf("after a restart:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want1, "\n"))
	}
	if !strings.Contains(n1.Log(), "rules already in place") {
		t.Errorf("the restarted node rewrote rules that were right:\n%s", n1.Log())
	}
	t.Logf("after a restart, iptables -t nat -S | grep FLANNEL-POSTRTG:\n%s", strings.Join(o.natRules(h1), "\n"))

	for _, meddle := range [][]string{
		{"iptables", "-t", "nat", "-F", "FLANNEL-POSTRTG"},
		{"iptables", "-t", "nat", "-D", "POSTROUTING", "-m", "comment", "--comment", "flanneld masq", "-j", "FLANNEL-POSTRTG"},
		{"iptables", "-t", "nat", "-A", "FLANNEL-POSTRTG", "-j", "RETURN"},
	} {
		if _, err := h1.Run(o.ctx, meddle[0], meddle[1:]...); err != nil {
			t.Fatal(err)
		}
		o.waitNAT(h1, o.natRules, want1)
		t.Logf("%s: put back", strings.Join(meddle, " "))
	}
	if !strings.Contains(n1.Log(), "put back") {
		t.Errorf("the node did not say it put the rules back:\n%s", n1.Log())
	}
	outside()
}

// nftRules is the host's chain of flannel's nftables mode, its rule
// lines only; nil if there is no such chain.
func (o *overlay) nftRules(h *lab.Host) []string {
	o.t.Helper()
	out, err := h.Run(o.ctx, "nft", "list", "chain", "ip", "flannel-ipv4", "postrtg")
	if err != nil {
		if strings.Contains(out, "No such file or directory") {
			return nil
		}
		o.t.Fatal(err)
	}
	var lines []string
	for _, l := range strings.Split(out, "\n") {
		l = strings.TrimSpace(l)
		if strings.HasPrefix(l, "ip ") || strings.HasPrefix(l, "meta ") {
			lines = append(lines, l)
		}
	}
	return lines
}

// TestIPMasqNFTables: with the config's EnableNFTables the same rules
// go to nftables, flannel's table and chain; a pod reaches the outside
// host as the node; the chain comes back after a flush and is there once
// after a restart; turning EnableNFTables off moves the rules back to
// iptables and leaves no nftables chain.
func TestIPMasqNFTables(t *testing.T) {
	o := newOverlay(t, `{"Network":"172.16.0.0/16","Backend":{"Type":"vxlan"},"EnableNFTables":true}`)
	h1, out := o.host("m1"), o.host("outside")
	args := []string{"--ip-masq", "--iptables-resync", "1"}
	n1, env1 := o.start(h1, args...)
	p1 := o.pod(h1, env1.Subnet.Masked())
	subnet := env1.Subnet.Masked()
	want := []string{
		`meta mark & 0x00004000 == 0x00004000 return comment "flanneld masq"`,
		fmt.Sprintf(`ip saddr %s ip daddr 172.16.0.0/16 return comment "flanneld masq"`, subnet),
		fmt.Sprintf(`ip saddr 172.16.0.0/16 ip daddr %s return comment "flanneld masq"`, subnet),
		fmt.Sprintf(`ip saddr != 172.16.0.0/16 ip daddr %s return comment "flanneld masq"`, subnet),
		`ip saddr 172.16.0.0/16 ip daddr != 224.0.0.0/4 masquerade fully-random comment "flanneld masq"`,
		`ip saddr != 172.16.0.0/16 ip daddr 172.16.0.0/16 masquerade fully-random comment "flanneld masq"`,
	}
	if got := o.nftRules(h1); !slices.Equal(got, want) {
		t.Fatalf("nft list chain ip flannel-ipv4 postrtg:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if got := o.natRules(h1); len(got) != 0 {
		t.Fatalf("iptables rules in nftables mode:\n%s", strings.Join(got, "\n"))
	}
	t.Logf("nft list chain ip flannel-ipv4 postrtg:\n%s", strings.Join(o.nftRules(h1), "\n"))
	if got := o.seenAs(p1, out, netip.AddrPortFrom(out.Underlay, 7001)); got != h1.Underlay {
		t.Fatalf("outside host saw %s, want the node's %s", got, h1.Underlay)
	}
	t.Logf("pod %s -> outside %s: TCP seen from %s", p1.Addr, out.Underlay, h1.Underlay)

	if _, err := h1.Run(o.ctx, "nft", "flush", "chain", "ip", "flannel-ipv4", "postrtg"); err != nil {
		t.Fatal(err)
	}
	o.waitNAT(h1, o.nftRules, want)
	t.Log("nft flush chain ip flannel-ipv4 postrtg: put back")

	n1 = o.restart(n1, args...)
	if got := o.nftRules(h1); !slices.Equal(got, want) {
		t.Fatalf("after a restart:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}

	// Back to iptables, as flanneld would switch.
	if _, err := o.cli.Put(o.ctx, "/coreos.com/network/config", network16); err != nil {
		t.Fatal(err)
	}
	o.restart(n1, args...)
	if got := o.nftRules(h1); got != nil {
		t.Fatalf("nftables chain left after switching to iptables:\n%s", strings.Join(got, "\n"))
	}
	if got, want := o.natRules(h1), masqChain(o.cfg.Network, subnet); !slices.Equal(got, want) {
		t.Fatalf("iptables after the switch:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if got := o.seenAs(p1, out, netip.AddrPortFrom(out.Underlay, 7002)); got != h1.Underlay {
		t.Fatalf("after the switch the outside host saw %s, want the node's %s", got, h1.Underlay)
	}
	t.Logf("EnableNFTables off: the rules moved to iptables, the nftables chain is gone, the outside host still sees %s", h1.Underlay)
}

// TestIPMasqRefused: a host that cannot masquerade (no iptables; an
// iptables that refuses a rule) stops the node before it takes a lease,
// with an error that says what to fix, and nothing left in the nat
// table.
func TestIPMasqRefused(t *testing.T) {
	o := newOverlay(t, network16)
	h := o.host("bad")
	real, err := exec.LookPath("iptables")
	if err != nil {
		t.Fatal(err)
	}
	refusing := t.TempDir()
	script := fmt.Sprintf(`#!/bin/sh
for a; do
	if [ "$a" = MASQUERADE ]; then
		echo "iptables: No chain/target/match by that name." >&2
		exit 1
	fi
done
exec %s "$@"
`, real)
	if err := os.WriteFile(filepath.Join(refusing, "iptables"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		path string
		want []string
	}{
		{"no iptables", t.TempDir(), []string{"iptables not usable", "install the iptables package"}},
		{"MASQUERADE refused", refusing + ":" + os.Getenv("PATH"), []string{"iptables refuses the rules for 172.16.0.0/16", "masquerade", "No chain/target/match"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			log := o.startFailingEnv(t, h, []string{"PATH=" + tc.path}, "--ip-masq")
			t.Logf("exit 1: %s", log[strings.LastIndex(log, "\n")+1:])
			for _, w := range tc.want {
				if !strings.Contains(log, w) {
					t.Errorf("log does not say %q:\n%s", w, log)
				}
			}
			out, err := h.Run(o.ctx, "iptables", "-t", "nat", "-S")
			if err != nil {
				t.Fatal(err)
			}
			if strings.Contains(out, "-N ") || strings.Contains(out, "-A ") {
				t.Errorf("a refused node left rules:\n%s", out)
			}
			if out, _ := h.Run(o.ctx, "ip", "route", "show"); strings.Contains(out, "172.16.") {
				t.Errorf("a refused node left routes:\n%s", out)
			}
		})
	}
}
