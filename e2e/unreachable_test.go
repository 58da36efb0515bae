package e2e

import (
	"errors"
	"net"
	"net/netip"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestUnreachableFailsFast: a pod that connects to, or pings, an overlay
// address no lease covers hears at once that there is no route (the node
// answers with ICMP network unreachable through its TUN device), instead
// of waiting for a timeout; the node counts what it answered.
func TestUnreachableFailsFast(t *testing.T) {
	o := newOverlay(t, network16)
	h := o.host("u1")
	n, env := o.start(h)
	p := o.pod(h, env.Subnet.Masked())
	// The last /24 of the overlay: no node has it (the network has 255).
	nowhere := netip.MustParseAddr("172.16.255.9")
	if env.Subnet.Masked().Contains(nowhere) {
		t.Skip("this node took the last subnet")
	}

	start := time.Now()
	err := p.Do(func() error {
		c, err := net.DialTimeout("tcp4", netip.AddrPortFrom(nowhere, 80).String(), 4*time.Second)
		if err == nil {
			c.Close()
		}
		return err
	})
	took := time.Since(start)
	if !errors.Is(err, syscall.ENETUNREACH) {
		c, _ := n.Counters(o.ctx)
		t.Fatalf("connect to %s: %v after %s; want network unreachable (counters %v)", nowhere, err, took, c)
	}
	if took > 3*time.Second {
		t.Errorf("connect took %s to fail; the answer should come at once", took)
	}
	t.Logf("connect to %s: %v, after %s", nowhere, err, took.Round(time.Millisecond))

	res, _ := p.Ping(o.ctx, nowhere, 1)
	if res.Received != 0 {
		t.Fatalf("a ping to %s was answered:\n%s", nowhere, res.Output)
	}
	c, err := n.Counters(o.ctx)
	if err != nil {
		t.Fatal(err)
	}
	if c["icmp-sent"] < 1 || c["no-route"] < 2 {
		t.Errorf("counters %v: want icmp-sent and no-route for the connect and the ping", c)
	}
}

// TestTooBigAnswered: with the TUN device's MTU raised past what the
// underlay carries (an operator's mistake), a packet that may not be
// fragmented is answered with "fragmentation needed" and the MTU that
// fits, which the sender's kernel remembers; vxrouter counts it.
func TestTooBigAnswered(t *testing.T) {
	if _, err := exec.LookPath("ping"); err != nil {
		t.Skip("needs iputils' ping:", err)
	}
	o := newOverlay(t, network16)
	h1, h2 := o.host("b1"), o.host("b2")
	n1, _ := o.start(h1)
	_, env2 := o.start(h2)
	p2 := o.pod(h2, env2.Subnet.Masked())
	if _, err := h1.Run(o.ctx, "ip", "link", "set", "vxr0", "mtu", "1500"); err != nil {
		t.Fatal(err)
	}
	o.within(20*time.Second, "node 1 routes to node 2's pod", func() error {
		_, err := h1.Run(o.ctx, "ping", "-c", "1", "-W", "1", p2.Addr.String())
		return err
	})
	// 1472 bytes of ICMP payload: a 1500-byte packet with DF set.
	out, _ := h1.Run(o.ctx, "ping", "-c", "2", "-M", "do", "-s", "1472", "-W", "1", p2.Addr.String())
	if !strings.Contains(out, "mtu = 1450") && !strings.Contains(out, "mtu=1450") {
		t.Fatalf("ping with DF did not hear the MTU that fits:\n%s", out)
	}
	c, err := n1.Counters(o.ctx)
	if err != nil {
		t.Fatal(err)
	}
	if c["too-big"] < 1 || c["icmp-sent"] < 1 {
		t.Errorf("counters %v: want too-big and icmp-sent", c)
	}
	t.Logf("%s", out)
}
