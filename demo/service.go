package demo

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"time"

	"vxrouter/kubeproxy"
	"vxrouter/lab"
)

// The Service of the demo: default/web, port 80 of its ClusterIP to
// port 8080 of two pods.
const (
	servicePort   = 80
	targetPort    = 8080
	clusterIPHost = 10 // the ClusterIP is this address of the service network
	connections   = 20 // enough that both backends are picked (all to one: 2 in a million)
	connTimeout   = 10 * time.Second
)

// backend is one pod behind the Service, with a server the demo runs in
// the pod's namespace.
type backend struct {
	name string
	node *node
	pod  *lab.Pod
	ln   net.Listener
	wg   sync.WaitGroup
}

// serve answers each connection with one line that names the backend and
// the address the connection came from, and closes it.
func (b *backend) serve() error {
	err := b.pod.Do(func() (err error) {
		b.ln, err = net.Listen("tcp", netip.AddrPortFrom(b.pod.Addr, targetPort).String())
		return err
	})
	if err != nil {
		return fmt.Errorf("listen in %s: %w", b.pod.NS, err)
	}
	b.wg.Go(func() {
		for {
			c, err := b.ln.Accept()
			if err != nil {
				return // closed
			}
			c.SetDeadline(time.Now().Add(connTimeout))
			fmt.Fprintf(c, "%s %s\n", b.name, c.RemoteAddr())
			c.Close()
		}
	})
	return nil
}

func (b *backend) close() {
	if b.ln != nil {
		b.ln.Close()
	}
	b.wg.Wait()
}

// answer is what one connection to the Service heard.
type answer struct {
	local   netip.AddrPort // the client's end
	backend string         // who answered
	saw     string         // the client's address as the backend saw it
}

// connect opens one connection from pod to the Service and reads the
// backend's line.
func connect(pod *lab.Pod, to netip.AddrPort) (answer, error) {
	var c net.Conn
	err := pod.Do(func() (err error) {
		c, err = net.DialTimeout("tcp", to.String(), connTimeout)
		return err
	})
	if err != nil {
		return answer{}, fmt.Errorf("connect %s -> %s: %w", pod.Addr, to, err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(connTimeout))
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return answer{}, fmt.Errorf("read from %s: %w", to, err)
	}
	f := strings.Fields(line)
	if len(f) != 2 {
		return answer{}, fmt.Errorf("%s answered %q", to, line)
	}
	local, _ := netip.ParseAddrPort(c.LocalAddr().String())
	return answer{local: local, backend: f[0], saw: f[1]}, nil
}

// toService makes a ClusterIP Service of two backend pods out of the
// rules kube-proxy writes, connects to it from the first node's pod again
// and again, and shows the rules that chose a backend, their counters, and
// one connection before and after DNAT and on the overlay.
func (r *run) toService() error {
	client := r.nodes[0]
	ip, err := nthAddr(r.o.ServiceNetwork, clusterIPHost)
	if err != nil {
		return err
	}
	vip := netip.AddrPortFrom(ip, servicePort)

	var backends []*backend
	defer func() {
		for _, b := range backends {
			b.close()
		}
	}()
	svc := kubeproxy.Service{
		Namespace: "default", Name: "web", Protocol: "tcp",
		ClusterIP: ip, Port: servicePort, ClusterCIDR: r.o.Network,
	}
	for i := range 2 {
		// The nodes after the client's, in turn: with two nodes both
		// backends are on the second.
		n := r.nodes[1+i%(len(r.nodes)-1)]
		b := &backend{name: fmt.Sprintf("web-%d", i), node: n}
		if b.pod, err = n.Host.AddPod(b.name, n.env.Subnet.Masked()); err != nil {
			return err
		}
		backends = append(backends, b)
		if err := b.serve(); err != nil {
			return err
		}
		svc.Endpoints = append(svc.Endpoints, netip.AddrPortFrom(b.pod.Addr, targetPort))
	}
	rs, err := kubeproxy.Rules(svc)
	if err != nil {
		return err
	}
	r.p("   Service default/web: ClusterIP %s, port %d, to port %d of", ip, servicePort, targetPort)
	for _, b := range backends {
		r.p("     %-6s %-15s on %s", b.name, b.pod.Addr, b.node.name())
	}
	r.p("   kube-proxy, on every node, turns that into nat rules and loads them with")
	r.p("   `iptables-restore --noflush`; here the demo does it, with these lines:")
	r.indent("      ", rs.RestoreInput())
	for _, n := range r.nodes {
		cmd := n.Host.Command(r.ctx, "iptables-restore", "--noflush", "-w", "5")
		cmd.Stdin = strings.NewReader(rs.RestoreInput())
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("iptables-restore on %s: %w: %s", n.name(), err, out)
		}
	}
	r.p("   %s is on no device of any node, and no node has a route to it:", ip)
	r.cmd(client.Host, "ip", "route", "get", ip.String())
	r.p("   It exists only in those rules: a packet to it is rewritten in nat PREROUTING,")
	r.p("   before %s routes it.", client.name())

	syn := "tcp[tcpflags] & tcp-syn != 0 and tcp[tcpflags] & tcp-ack == 0"
	caps := []struct {
		dev, filter, what string
	}{
		// The pod's veth, not the bridge: where br_netfilter is loaded the
		// bridge runs nat PREROUTING before cni0 sees the packet.
		{client.pod.HostDev, syn + " and dst port " + strconv.Itoa(servicePort), "on " + client.pod.HostDev + ", the pod's veth, as the pod sent it"},
		{"vxr0", syn + " and dst port " + strconv.Itoa(targetPort), "on vxr0, after DNAT and routing"},
		{"eth0", "udp dst port 8472 and src host " + client.Host.Underlay.String(), "on eth0, inside VXLAN, to the backend's node"},
	}
	var started []*capture
	for _, c := range caps {
		cp, err := r.startCapture(client.Host, c.dev, c.filter, 1)
		if err != nil {
			for _, s := range started {
				s.stop()
			}
			return err
		}
		started = append(started, cp)
	}
	r.p("   One connection from %s's pod to %s, captured on %s:", client.name(), vip, client.name())
	first, err := connect(client.pod, vip)
	if err != nil {
		for _, s := range started {
			s.stop()
		}
		r.fail("%v", err)
		return nil
	}
	for i, cp := range started {
		lines, err := cp.wait()
		r.p("   %s:", caps[i].what)
		if err != nil {
			r.fail("%v", err)
			continue
		}
		r.indent("      ", strings.Join(lines, "\n"))
	}
	r.p("   %s answered. It saw the connection come from %s,", first.backend, first.saw)
	r.p("   the client's own address: only the destination was rewritten.")
	r.p("   %s's conntrack entry:", client.name())
	local := strconv.Itoa(int(first.local.Port()))
	for _, l := range r.conntrack(client.Host, "dst="+ip.String(), "sport="+local) {
		r.p("      %s", l)
	}
	r.p("   The second tuple is the reply conntrack expects, from the backend; when")
	r.p("   it comes back over the overlay, %s rewrites its source back to", client.name())
	r.p("   %s (in POSTROUTING, on the way to cni0), so the pod sees its", vip)
	r.p("   answer come from the address it connected to.")

	tally := map[string]int{first.backend: 1}
	for i := 1; i < connections; i++ {
		a, err := connect(client.pod, vip)
		if err != nil {
			r.fail("connection %d: %v", i+1, err)
			continue
		}
		tally[a.backend]++
	}
	r.p("   %d connections in all; the rules' counters on %s:", connections, client.name())
	listing, counts, err := r.ruleCounters(client.Host, svc.SVCChain())
	if err != nil {
		r.fail("read %s's counters on %s: %v", svc.SVCChain(), client.name(), err)
		return nil
	}
	r.p("   %s$ iptables -t nat -L %s -v -n -x", client.name(), svc.SVCChain())
	r.indent("      ", listing)
	var mismatch []string
	for i, b := range backends {
		sep := svc.SEPChain(svc.Endpoints[i])
		var counted uint64
		for _, c := range counts {
			if c.target == sep {
				counted = c.packets
			}
		}
		r.p("   %s answered %2d; its rule, -j %s, counted %d", b.name, tally[b.name], sep, counted)
		if counted != uint64(tally[b.name]) {
			mismatch = append(mismatch, fmt.Sprintf("%s answered %d, counted %d", b.name, tally[b.name], counted))
		}
	}
	if len(mismatch) > 0 {
		r.fail("the DNAT counters do not match the answers: %s", strings.Join(mismatch, ", "))
		return nil
	}
	r.p("   One count per connection: the nat table sees only a connection's first")
	r.p("   packet (the SYN); conntrack rewrites the rest. The first rule matches half")
	r.p("   of what reaches it (--probability 0.5), the last one takes the rest.")
	return nil
}

// nthAddr is the n-th address of p (the network address is the 0th).
func nthAddr(p netip.Prefix, n int) (netip.Addr, error) {
	a := p.Masked().Addr()
	for range n {
		a = a.Next()
	}
	if !p.Contains(a) {
		return netip.Addr{}, errors.New("address " + strconv.Itoa(n) + " of " + p.String() + ": out of range")
	}
	return a, nil
}
