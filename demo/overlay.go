package demo

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"vxrouter/lab"
	"vxrouter/lease"
)

// The steps that build the overlay and cross it pod to pod, in the order
// Run calls them.

func (r *run) networks() error {
	o := r.o
	r.p("   A Kubernetes cluster has three networks; this one has them too:")
	r.p("   node network     %-15s the hosts' eth0 on one bridge: the underlay", lab.DefaultUnderlay)
	r.p("   pod network      %-15s the overlay: each node leases a /24 of it", o.Network)
	r.p("                                    in etcd and gives its pods addresses in it")
	r.p("   service network  %-15s Services' ClusterIPs: on no device, only", o.ServiceNetwork)
	r.p("                                    in kube-proxy's nat rules")
	r.p("   A packet from pod to pod crosses the node network inside VXLAN; one to the")
	r.p("   outside leaves with its node's address (masquerade); one to a ClusterIP is")
	r.p("   rewritten to a pod's address (DNAT) before its node routes it.")
	return nil
}

// etcd starts etcd as its own process, so that Keep can leave it running.
func (r *run) etcd() error {
	etcdDir := filepath.Join(r.dir, "etcd")
	logFile := filepath.Join(r.dir, "etcd.log")
	cmd := exec.Command(r.o.Binary, "etcd", "--data-dir", etcdDir, "--network", r.o.Network.String(), "--log-level", "warn")
	logf, err := os.Create(logFile)
	if err != nil {
		return err
	}
	defer logf.Close() // the child has its own copy
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true} // Ctrl-C reaches the demo, which stops things in order
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start etcd: %w", err)
	}
	go cmd.Wait()
	r.etcdCmd = cmd
	if err := os.WriteFile(filepath.Join(r.dir, "etcd.pid"), []byte(strconv.Itoa(cmd.Process.Pid)), 0o644); err != nil {
		return err
	}
	r.endpoint = "unix://" + filepath.Join(etcdDir, "etcd.sock")
	if r.cli, err = waitEtcd(r.ctx, r.endpoint, logFile); err != nil {
		return err
	}
	r.reg = lease.NewRegistry(r.cli, lease.DefaultPrefix, r.o.Log)
	r.p("   etcd (pid %d) serves %s", cmd.Process.Pid, r.endpoint)
	r.p("   (a unix socket: the nodes, each in its own network namespace, all reach it)")
	if b, err := r.reg.ConfigJSON(r.ctx); err == nil {
		r.p("   %s = %s", r.reg.ConfigKey(), b)
	}
	return nil
}

// waitEtcd waits until etcd at endpoint answers.
func waitEtcd(ctx context.Context, endpoint, logFile string) (*clientv3.Client, error) {
	cli, err := lease.NewClient([]string{endpoint})
	if err != nil {
		return nil, err
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		cctx, cancel := context.WithTimeout(ctx, time.Second)
		_, err := cli.Get(cctx, "/")
		cancel()
		if err == nil {
			return cli, nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			cli.Close()
			b, _ := os.ReadFile(logFile)
			return nil, fmt.Errorf("etcd did not start: %w\n%s", err, b)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (r *run) underlay() error {
	l, err := lab.New(lab.Options{Prefix: r.o.Prefix, Log: r.o.Log})
	if err != nil {
		return fmt.Errorf("build lab: %w", err)
	}
	r.lab = l
	for i := 1; i <= r.o.Nodes; i++ {
		h, err := l.AddHost(fmt.Sprintf("node%d", i))
		if err != nil {
			return err
		}
		r.p("   %-6s netns %-16s eth0 %s", h.Name, h.NS, h.Underlay)
	}
	r.p("   bridge %s in netns %s joins the hosts' eth0 on %s (MTU %d)", lab.UnderlayBridge, l.UnderlayNS(), l.Underlay(), l.MTU())
	return nil
}

// nodeArgs are the flags of every `vxrouter run`: --ip-masq, as flannel
// runs in most clusters (the step to the outside shows its rule), and the
// user's.
func (r *run) nodeArgs() []string {
	return append([]string{ipMasqFlag}, r.o.RunArgs...)
}

func (r *run) startNodes() error {
	for _, h := range r.lab.Hosts() {
		n, err := h.StartVXRouter(lab.NodeOptions{
			Binary: r.o.Binary,
			Etcd:   r.endpoint,
			Dir:    filepath.Join(r.dir, h.Name),
			Args:   r.nodeArgs(),
			Detach: true,
		})
		if err != nil {
			return err
		}
		dn := &node{Node: n}
		r.nodes = append(r.nodes, dn)
		if dn.env, err = n.WaitSubnet(r.ctx); err != nil {
			return err
		}
		subnet := dn.env.Subnet.Masked()
		r.p("   %s: vxrouter run %s(pid %d) took %s", h.Name, strings.Join(append(r.nodeArgs(), ""), " "), n.Pid(), subnet)
		key := r.reg.Key(subnet)
		if resp, err := r.cli.Get(r.ctx, key); err == nil && len(resp.Kvs) == 1 {
			r.p("      %s", key)
			r.p("      = %s", resp.Kvs[0].Value)
		}
	}
	return nil
}

func (r *run) pods() error {
	for _, n := range r.nodes {
		var err error
		if n.pod, err = n.Host.AddPod("pod", n.env.Subnet.Masked()); err != nil {
			return err
		}
		r.p("   %-16s %s, default via %s", n.pod.NS, n.pod.Addr, n.pod.Gateway)
	}
	return nil
}

func (r *run) tunAndRoutes() error {
	for _, n := range r.nodes {
		r.cmd(n.Host, "ip", "-brief", "address", "show", "dev", "vxr0")
		r.cmd(n.Host, "ip", "route")
		env, _ := os.ReadFile(n.SubnetFile)
		r.p("   %s$ cat %s", n.name(), n.SubnetFile)
		r.indent("      ", string(env))
	}
	r.p("   The whole overlay goes to vxr0, where vxrouter reads it; the node's own")
	r.p("   subnet is more specific and stays on the pods' bridge cni0.")
	return nil
}

func (r *run) podToPod() error {
	a, b := r.nodes[0], r.nodes[1]
	r.p("   The path of %s -> %s:", a.pod.Addr, b.pod.Addr)
	r.p("     the pod's eth0 -> cni0 on %s -> route %s dev vxr0", a.name(), r.o.Network)
	r.p("     -> vxrouter reads it from vxr0, finds the lease %s", b.env.Subnet.Masked())
	r.p("        (public IP %s), writes inner Ethernet + VXLAN in front", b.Host.Underlay)
	r.p("     -> UDP from %s (a port picked by the flow) to %s:8472", a.Host.Underlay, b.Host.Underlay)
	r.p("     -> vxrouter on %s checks it, strips the 22 bytes, writes it to vxr0", b.name())
	r.p("     -> cni0 on %s -> the pod's eth0", b.name())
	r.p("   (`vxrouter explain` shows every byte of it, `--svg` draws it.)")
	for _, from := range r.nodes {
		for _, to := range r.nodes {
			if from == to {
				continue
			}
			res, err := pingUntilUp(r.ctx, from.pod, to.pod.Addr)
			line := fmt.Sprintf("   %s %-15s -> %s %-15s ", from.name(), from.pod.Addr, to.name(), to.pod.Addr)
			if err != nil || res.Received < res.Sent || res.Sent == 0 {
				r.p("%sFAILED: %d/%d replies (%v)", line, res.Received, res.Sent, err)
				r.failures = append(r.failures, fmt.Sprintf("ping %s -> %s", from.pod.Addr, to.pod.Addr))
				continue
			}
			r.p("%s%d/%d replies, avg %.3f ms", line, res.Received, res.Sent, float64(res.RTTAvg.Microseconds())/1000)
		}
	}
	return nil
}

// pingUntilUp waits until one echo is answered (nodes learn each other's
// leases within moments of starting), then pings three times for the record.
func pingUntilUp(ctx context.Context, pod *lab.Pod, dst netip.Addr) (lab.PingResult, error) {
	if err := pod.WaitReachable(ctx, dst, 15*time.Second); err != nil {
		// Its first line says it; the ping output after it is for logs.
		msg, _, _ := strings.Cut(err.Error(), "\n")
		return lab.PingResult{}, errors.New(msg)
	}
	return pod.Ping(ctx, dst, 3)
}

func (r *run) counters() error {
	for _, n := range r.nodes {
		c, err := n.Counters(r.ctx)
		if err != nil {
			r.p("   %s: %v", n.name(), err)
			continue
		}
		r.p("   %s: sent %d packets (%d bytes) to peers, delivered %d (%d bytes), %s",
			n.name(), c["tx-packets"], c["tx-bytes"], c["rx-packets"], c["rx-bytes"], drops(c))
	}
	return nil
}

// drops says what a node dropped, by reason.
func drops(c map[string]uint64) string {
	var parts []string
	for k, v := range c {
		switch k {
		case "tx-packets", "tx-bytes", "rx-packets", "rx-bytes":
		default:
			parts = append(parts, fmt.Sprintf("%s %d", k, v))
		}
	}
	if len(parts) == 0 {
		return "dropped nothing"
	}
	return "dropped " + strings.Join(parts, ", ")
}

func (r *run) keepMessage() {
	first, second := r.nodes[0], r.nodes[1]
	r.p("")
	r.p("The lab stays up (--keep). Look around:")
	r.p("  ip netns list")
	r.p("  ip netns exec %s ip route", first.Host.NS)
	r.p("  ip netns exec %s tcpdump -ni eth0 udp port 8472", first.Host.NS)
	r.p("  ip netns exec %s ping %s", first.pod.NS, second.pod.Addr)
	r.p("  ip netns exec %s iptables-save -t nat", first.Host.NS)
	r.p("  ip netns exec %s cat /proc/net/nf_conntrack", first.Host.NS)
	r.p("  curl --unix-socket %s http://node/metrics", first.AdminSocket)
	r.p("  ETCDCTL_API=3 etcdctl --endpoints %s get --prefix %s", r.endpoint, lease.DefaultPrefix)
	r.p("  less %s", first.LogFile)
	r.p("(The Service's web servers ran inside the demo and are gone; its rules stay.)")
	r.p("Remove it with: vxrouter demo --down --prefix %s", r.o.Prefix)
}
