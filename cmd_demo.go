package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/urfave/cli/v2"
	clientv3 "go.etcd.io/etcd/client/v3"

	"vxrouter/lab"
	"vxrouter/lease"
)

func demoCommand() *cli.Command {
	return &cli.Command{
		Name:  "demo",
		Usage: "build a small overlay in network namespaces and ping across it, narrated",
		Description: "demo starts an etcd, builds an underlay and N hosts in network namespaces,\n" +
			"runs a vxrouter node and a pod on each, and pings every pod from every other,\n" +
			"telling what happens at each step: the leases, the TUN devices and routes, the\n" +
			"packet's path, the counters. It exits 0 only if every ping was answered and\n" +
			"removes everything it made, also on Ctrl-C; with --keep it leaves the lab up\n" +
			"to poke at, and `vxrouter demo --down` removes it. Needs root.",
		Flags: []cli.Flag{
			logLevelFlag(),
			&cli.IntFlag{Name: "nodes", Value: 2, Usage: "how many vxrouter nodes (2 to 20)", EnvVars: []string{"VXROUTER_DEMO_NODES"}},
			&cli.StringFlag{Name: "network", Value: "172.16.0.0/16", Usage: "the overlay network", EnvVars: []string{"VXROUTER_DEMO_NETWORK"}},
			&cli.StringFlag{Name: "prefix", Value: "vxrdemo", Usage: "name prefix of the demo's namespaces", EnvVars: []string{"VXROUTER_DEMO_PREFIX"}},
			&cli.BoolFlag{Name: "keep", Usage: "leave the lab running, and print commands to explore it", EnvVars: []string{"VXROUTER_DEMO_KEEP"}},
			&cli.BoolFlag{Name: "down", Usage: "remove a lab left by --keep, and exit", EnvVars: []string{"VXROUTER_DEMO_DOWN"}},
			&cli.StringSliceFlag{Name: "run-arg", Usage: "pass this flag on to every `vxrouter run` (repeatable), e.g. --run-arg=--tun-backend=water", EnvVars: []string{"VXROUTER_DEMO_RUN_ARGS"}},
			&cli.DurationFlag{Name: "timeout", Value: 90 * time.Second, Usage: "give up after this long", EnvVars: []string{"VXROUTER_DEMO_TIMEOUT"}},
		},
		Action: func(c *cli.Context) error {
			log, err := newLogger(c)
			if err != nil {
				return err
			}
			o := demoOptions{
				Nodes:   c.Int("nodes"),
				Prefix:  c.String("prefix"),
				Keep:    c.Bool("keep"),
				RunArgs: c.StringSlice("run-arg"),
				Timeout: c.Duration("timeout"),
				Out:     c.App.Writer,
				Log:     log,
			}
			if o.Nodes < 2 || o.Nodes > 20 {
				return fmt.Errorf("--nodes %d: want 2 to 20", o.Nodes)
			}
			if o.Network, err = netip.ParsePrefix(c.String("network")); err != nil {
				return fmt.Errorf("--network: %w", err)
			}
			// Checked as etcd will check it, before anything is built:
			// a network etcd refuses, or one with fewer subnets than
			// nodes, would fail half-way through, less clearly.
			cfg, err := vxlanConfig(o.Network.String())
			if err != nil {
				return err
			}
			if n := cfg.SubnetCount(); uint64(o.Nodes) > n {
				return fmt.Errorf("--network %s holds %d subnets of /%d: too few for --nodes %d", o.Network, n, cfg.SubnetLen, o.Nodes)
			}
			if len(o.Prefix) == 0 || len(o.Prefix) > 8 {
				return fmt.Errorf("--prefix %q: want 1 to 8 characters (interface names are short)", o.Prefix)
			}
			if os.Geteuid() != 0 {
				return errors.New("demo needs root: it creates network namespaces, TUN devices and veth pairs (run it with sudo)")
			}
			if c.Bool("down") {
				if err := demoDown(o.Prefix); err != nil {
					return err
				}
				fmt.Fprintf(o.Out, "removed the demo lab %q\n", o.Prefix)
				return nil
			}
			return runDemo(c.Context, o)
		},
	}
}

type demoOptions struct {
	Nodes   int
	Network netip.Prefix
	Prefix  string
	Keep    bool
	RunArgs []string
	Timeout time.Duration
	Out     io.Writer
	Log     *slog.Logger
}

// demoDir is where a demo keeps etcd's data, the nodes' state and logs;
// fixed per prefix, so `--down` finds what `--keep` left.
func demoDir(prefix string) string {
	return filepath.Join(os.TempDir(), "vxrouter-demo-"+prefix)
}

// demoDown removes what a demo with this prefix left: its nodes and pods
// (every process in its namespaces), the namespaces, its etcd, its files.
func demoDown(prefix string) error {
	dir := demoDir(prefix)
	err := lab.Cleanup(prefix)
	if b, rerr := os.ReadFile(filepath.Join(dir, "etcd.pid")); rerr == nil {
		if pid, perr := strconv.Atoi(strings.TrimSpace(string(b))); perr == nil && isOurEtcd(pid, dir) {
			// Asked first, so it shuts down cleanly; on a busy machine that
			// can take a while, and an etcd left running would keep its
			// directory, so then it is killed (if the pid is still its).
			if !stop(pid, syscall.SIGTERM, 5*time.Second) && isOurEtcd(pid, dir) && !stop(pid, syscall.SIGKILL, 5*time.Second) {
				err = errors.Join(err, fmt.Errorf("etcd (pid %d) survives SIGKILL", pid))
			}
		}
	}
	return errors.Join(err, os.RemoveAll(dir))
}

// stop sends sig to pid and reports whether it has exited within timeout.
func stop(pid int, sig syscall.Signal, timeout time.Duration) bool {
	syscall.Kill(pid, sig)
	for deadline := time.Now().Add(timeout); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if syscall.Kill(pid, 0) != nil {
			return true
		}
	}
	return false
}

// isOurEtcd reports whether pid is still the etcd a demo started in dir
// (pids are reused; never signal a stranger).
func isOurEtcd(pid int, dir string) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	return err == nil && bytes.Contains(b, []byte(filepath.Join(dir, "etcd")))
}

type demoNode struct {
	node *lab.Node
	env  lease.SubnetEnv
	pod  *lab.Pod
}

// runDemo builds the demo overlay, narrates it, pings across it and, unless
// asked to keep it, tears it down.
func runDemo(parent context.Context, o demoOptions) (err error) {
	ctx, cancel := context.WithTimeout(parent, o.Timeout)
	defer cancel()
	// Whatever failed on the way down, an interrupt or a timeout is what
	// the user needs to hear (the teardown below runs either way).
	defer func() {
		switch {
		case err == nil:
		case parent.Err() != nil:
			err = errors.New("interrupted; everything the demo made is removed")
		case ctx.Err() != nil:
			err = fmt.Errorf("gave up after --timeout %s (%v); everything the demo made is removed", o.Timeout, err)
		}
	}()
	bin, err := os.Executable()
	if err != nil {
		return fmt.Errorf("find own binary: %w", err)
	}
	// A kept demo of the same prefix, or a crashed one, goes first.
	if err := demoDown(o.Prefix); err != nil {
		return fmt.Errorf("remove an earlier demo: %w", err)
	}
	dir := demoDir(o.Prefix)
	// Made fresh and private: the demo runs as root in a world-writable
	// /tmp, and a directory someone else made there first must not be
	// trusted with etcd's socket or the nodes' state.
	if err := os.Mkdir(dir, 0o700); err != nil {
		return fmt.Errorf("demo directory: %w", err)
	}
	keep := false // set once everything is up and --keep asked for it
	var l *lab.Lab
	defer func() {
		if keep {
			return
		}
		// The lab first: Close kills the nodes by their process, also one
		// started a moment ago that is not in its namespace yet, which
		// demoDown, looking in the namespaces, would miss.
		var cerr error
		if l != nil {
			cerr = l.Close()
		}
		if derr := errors.Join(cerr, demoDown(o.Prefix)); derr != nil && err == nil {
			err = derr
		}
	}()
	w := o.Out
	p := func(format string, args ...any) { fmt.Fprintf(w, format+"\n", args...) }
	step := func(n int, title string) { p("\n%d. %s", n, title) }

	p("vxrouter demo: %d nodes share the overlay %s; VXLAN over UDP, leases in etcd.", o.Nodes, o.Network)

	// 1. etcd, as its own process, so that --keep can leave it running.
	step(1, "etcd holds the overlay's config")
	etcdDir := filepath.Join(dir, "etcd")
	etcdCmd := exec.Command(bin, "etcd", "--data-dir", etcdDir, "--network", o.Network.String(), "--log-level", "warn")
	etcdLog, err := os.Create(filepath.Join(dir, "etcd.log"))
	if err != nil {
		return err
	}
	defer etcdLog.Close()
	etcdCmd.Stdout, etcdCmd.Stderr = etcdLog, etcdLog
	etcdCmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true} // Ctrl-C reaches the demo, which stops things in order
	if err := etcdCmd.Start(); err != nil {
		return fmt.Errorf("start etcd: %w", err)
	}
	go etcdCmd.Wait()
	if err := os.WriteFile(filepath.Join(dir, "etcd.pid"), []byte(strconv.Itoa(etcdCmd.Process.Pid)), 0o644); err != nil {
		return err
	}
	endpoint := "unix://" + filepath.Join(etcdDir, "etcd.sock")
	cli, err := waitEtcd(ctx, endpoint, filepath.Join(dir, "etcd.log"))
	if err != nil {
		return err
	}
	defer cli.Close()
	reg := lease.NewRegistry(cli, lease.DefaultPrefix, o.Log)
	p("   etcd (pid %d) serves %s", etcdCmd.Process.Pid, endpoint)
	p("   (a unix socket: the nodes, each in its own network namespace, all reach it)")
	if b, err := reg.ConfigJSON(ctx); err == nil {
		p("   %s = %s", reg.ConfigKey(), b)
	}

	step(2, "The underlay: one bridge, a host per node")
	l, err = lab.New(lab.Options{Prefix: o.Prefix, Log: o.Log})
	if err != nil {
		return fmt.Errorf("build lab: %w", err)
	}
	var hosts []*lab.Host
	for i := 1; i <= o.Nodes; i++ {
		h, err := l.AddHost(fmt.Sprintf("node%d", i))
		if err != nil {
			return err
		}
		hosts = append(hosts, h)
	}
	p("   bridge %s in netns %s joins the hosts' eth0 on %s (MTU %d)", lab.UnderlayBridge, l.UnderlayNS(), l.Underlay(), l.MTU())
	for _, h := range hosts {
		p("   %-6s netns %-16s eth0 %s", h.Name, h.NS, h.Underlay)
	}

	step(3, "Each node starts vxrouter and takes a subnet lease")
	var nodes []*demoNode
	for _, h := range hosts {
		n, err := h.StartVXRouter(lab.NodeOptions{
			Binary: bin,
			Etcd:   endpoint,
			Dir:    filepath.Join(dir, h.Name),
			Args:   o.RunArgs,
			Detach: true,
		})
		if err != nil {
			return err
		}
		dn := &demoNode{node: n}
		nodes = append(nodes, dn)
		if dn.env, err = n.WaitSubnet(ctx); err != nil {
			return err
		}
		subnet := dn.env.Subnet.Masked()
		p("   %s: vxrouter run (pid %d) took %s", h.Name, n.Pid(), subnet)
		key := reg.Key(subnet)
		if resp, err := cli.Get(ctx, key); err == nil && len(resp.Kvs) == 1 {
			p("      %s", key)
			p("      = %s", resp.Kvs[0].Value)
		}
	}

	step(4, "A pod on each node, behind the bridge cni0")
	for _, dn := range nodes {
		if dn.pod, err = dn.node.Host.AddPod("pod", dn.env.Subnet.Masked()); err != nil {
			return err
		}
		p("   %-16s %s, default via %s", dn.pod.NS, dn.pod.Addr, dn.pod.Gateway)
	}

	step(5, "The TUN device, the routes and subnet.env on each node")
	for _, dn := range nodes {
		h := dn.node.Host
		addr, _ := h.Run(ctx, "ip", "-brief", "address", "show", "dev", "vxr0")
		routes, _ := h.Run(ctx, "ip", "route")
		env, _ := os.ReadFile(dn.node.SubnetFile)
		p("   %s$ ip -brief address show dev vxr0", h.Name)
		indent(w, "      ", addr)
		p("   %s$ ip route", h.Name)
		indent(w, "      ", routes)
		p("   %s$ cat %s", h.Name, dn.node.SubnetFile)
		indent(w, "      ", string(env))
	}
	p("   The whole overlay goes to vxr0, where vxrouter reads it; the node's own")
	p("   subnet is more specific and stays on the pods' bridge cni0.")

	step(6, "Ping, pod to pod across the overlay")
	a, b := nodes[0], nodes[1]
	p("   The path of %s -> %s:", a.pod.Addr, b.pod.Addr)
	p("     the pod's eth0 -> cni0 on %s -> route %s dev vxr0", a.node.Host.Name, o.Network)
	p("     -> vxrouter reads it from vxr0, finds the lease %s", b.env.Subnet.Masked())
	p("        (public IP %s), writes inner Ethernet + VXLAN in front", b.node.Host.Underlay)
	p("     -> UDP %s:8472 -> %s:8472", a.node.Host.Underlay, b.node.Host.Underlay)
	p("     -> vxrouter on %s checks it, strips the 22 bytes, writes it to vxr0", b.node.Host.Name)
	p("     -> cni0 on %s -> the pod's eth0", b.node.Host.Name)
	p("   (`vxrouter explain` shows every byte of it.)")
	failed, pairs := 0, 0
	for _, from := range nodes {
		for _, to := range nodes {
			if from == to {
				continue
			}
			pairs++
			res, err := pingUntilUp(ctx, from.pod, to.pod.Addr)
			status := fmt.Sprintf("%d/%d replies, avg %.3f ms", res.Received, res.Sent, float64(res.RTTAvg.Microseconds())/1000)
			if err != nil || res.Received < res.Sent || res.Sent == 0 {
				failed++
				status = fmt.Sprintf("FAILED: %d/%d replies (%v)", res.Received, res.Sent, err)
			}
			p("   %s %-15s -> %s %-15s %s", from.node.Host.Name, from.pod.Addr, to.node.Host.Name, to.pod.Addr, status)
		}
	}

	step(7, "What the nodes counted")
	for _, dn := range nodes {
		c, err := dn.node.Counters(ctx)
		if err != nil {
			p("   %s: %v", dn.node.Host.Name, err)
			continue
		}
		p("   %s: sent %d packets (%d bytes) to peers, delivered %d (%d bytes), %s",
			dn.node.Host.Name, c["tx-packets"], c["tx-bytes"], c["rx-packets"], c["rx-bytes"], drops(c))
	}

	p("")
	if failed > 0 && ctx.Err() == nil {
		for _, dn := range nodes {
			p("--- log of %s (%s)", dn.node.Host.Name, dn.node.LogFile)
			p("%s", dn.node.Log())
		}
		return fmt.Errorf("%d of %d pod pairs could not ping", failed, pairs)
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	p("result: every ping answered (%d pod pairs)", pairs)
	if o.Keep {
		keep = true
		first := nodes[0]
		p("")
		p("The lab stays up (--keep). Look around:")
		p("  ip netns list")
		p("  ip netns exec %s ip route", first.node.Host.NS)
		p("  ip netns exec %s tcpdump -ni eth0 udp port 8472", first.node.Host.NS)
		p("  ip netns exec %s ping %s", first.pod.NS, nodes[1].pod.Addr)
		p("  curl --unix-socket %s http://node/metrics", first.node.AdminSocket)
		p("  ETCDCTL_API=3 etcdctl --endpoints %s get --prefix %s", endpoint, lease.DefaultPrefix)
		p("  less %s", first.node.LogFile)
		p("Remove it with: vxrouter demo --down --prefix %s", o.Prefix)
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

func indent(w io.Writer, prefix, text string) {
	for _, line := range strings.Split(strings.TrimRight(text, "\n"), "\n") {
		fmt.Fprintf(w, "%s%s\n", prefix, strings.TrimRight(line, " "))
	}
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
