package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"vxrouter/lab"
	"vxrouter/lease"
)

func demoCommand() *cli.Command {
	return &cli.Command{
		Name:  "demo",
		Usage: "build a small overlay in network namespaces and ping across it",
		Description: "demo starts an embedded etcd, builds an underlay and N hosts in network\n" +
			"namespaces, runs a vxrouter node and a pod on each, and pings every pod from\n" +
			"every other. It prints the leases, the routes and the pings, exits 0 only if\n" +
			"every ping was answered, and removes everything it made, also on Ctrl-C.\n" +
			"Needs root.",
		Flags: []cli.Flag{
			logLevelFlag(),
			&cli.IntFlag{Name: "nodes", Value: 2, Usage: "how many vxrouter nodes (2 to 20)", EnvVars: []string{"VXROUTER_DEMO_NODES"}},
			&cli.StringFlag{Name: "network", Value: "172.16.0.0/16", Usage: "the overlay network", EnvVars: []string{"VXROUTER_DEMO_NETWORK"}},
			&cli.StringFlag{Name: "prefix", Value: "vxrdemo", Usage: "name prefix of the demo's namespaces", EnvVars: []string{"VXROUTER_DEMO_PREFIX"}},
			&cli.DurationFlag{Name: "timeout", Value: 60 * time.Second, Usage: "give up after this long", EnvVars: []string{"VXROUTER_DEMO_TIMEOUT"}},
		},
		Action: func(c *cli.Context) error {
			log, err := newLogger(c)
			if err != nil {
				return err
			}
			o := demoOptions{
				Nodes:   c.Int("nodes"),
				Prefix:  c.String("prefix"),
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
			if len(o.Prefix) == 0 || len(o.Prefix) > 8 {
				return fmt.Errorf("--prefix %q: want 1 to 8 characters (interface names are short)", o.Prefix)
			}
			return runDemo(c.Context, o)
		},
	}
}

type demoOptions struct {
	Nodes   int
	Network netip.Prefix
	Prefix  string
	Timeout time.Duration
	Out     io.Writer
	Log     *slog.Logger
}

// runDemo builds the demo overlay, pings across it and tears it down.
func runDemo(ctx context.Context, o demoOptions) (err error) {
	if os.Geteuid() != 0 {
		return errors.New("demo needs root: it creates network namespaces, TUN devices and veth pairs (run it with sudo)")
	}
	ctx, cancel := context.WithTimeout(ctx, o.Timeout)
	defer cancel()
	bin, err := os.Executable()
	if err != nil {
		return fmt.Errorf("find own binary: %w", err)
	}
	dir, err := os.MkdirTemp("", "vxrouter-demo-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	w := o.Out
	p := func(format string, args ...any) { fmt.Fprintf(w, format+"\n", args...) }

	p("vxrouter demo: %d nodes, overlay %s, VXLAN over UDP, leases in an embedded etcd", o.Nodes, o.Network)
	p("")

	if err := os.MkdirAll(filepath.Join(dir, "etcd"), 0o700); err != nil {
		return err
	}
	etcd, err := lease.StartEmbedded(filepath.Join(dir, "etcd"))
	if err != nil {
		return fmt.Errorf("start embedded etcd: %w", err)
	}
	defer etcd.Close()
	cli, err := etcd.Client()
	if err != nil {
		return err
	}
	defer cli.Close()
	reg := lease.NewRegistry(cli, lease.DefaultPrefix, o.Log)
	cfgJSON := fmt.Sprintf(`{"Network":%q,"Backend":{"Type":"vxlan"}}`, o.Network)
	cfg, err := lease.ParseConfig([]byte(cfgJSON))
	if err != nil {
		return fmt.Errorf("demo network: %w", err)
	}
	if err := reg.SetConfig(ctx, cfg); err != nil {
		return err
	}
	p("etcd      %s", etcd.UnixEndpoint())
	p("config    %s/config = %s", lease.DefaultPrefix, cfgJSON)

	l, err := lab.New(lab.Options{Prefix: o.Prefix, Log: o.Log})
	if err != nil {
		return fmt.Errorf("build lab: %w", err)
	}
	defer func() {
		if cerr := l.Close(); cerr != nil && err == nil {
			err = fmt.Errorf("clean up lab: %w", cerr)
		}
	}()

	var nodes []*lab.Node
	defer func() {
		for _, n := range nodes {
			if serr := n.Stop(10 * time.Second); serr != nil && err == nil && ctx.Err() == nil {
				err = serr
			}
		}
	}()
	for i := 1; i <= o.Nodes; i++ {
		h, err := l.AddHost(fmt.Sprintf("node%d", i))
		if err != nil {
			return err
		}
		n, err := h.StartVXRouter(lab.NodeOptions{
			Binary: bin,
			Etcd:   etcd.UnixEndpoint(),
			Dir:    filepath.Join(dir, h.Name),
		})
		if err != nil {
			return err
		}
		nodes = append(nodes, n)
	}

	type podInfo struct {
		pod  *lab.Pod
		node *lab.Node
	}
	var pods []podInfo
	for _, n := range nodes {
		env, err := n.WaitSubnet(ctx)
		if err != nil {
			return err
		}
		pod, err := n.Host.AddPod("pod", env.Subnet.Masked())
		if err != nil {
			return err
		}
		pods = append(pods, podInfo{pod, n})
	}

	p("")
	p("leases (%s/subnets/...):", lease.DefaultPrefix)
	leases, _, err := reg.Leases(ctx)
	if err != nil {
		return err
	}
	for _, ls := range leases {
		p("  %-18s public-ip %-12s vtep-mac %s  expires %s", ls.Subnet, ls.Attrs.PublicIP, ls.Attrs.VtepMAC, ls.Expiration.Format(time.RFC3339))
	}
	p("")
	p("nodes:")
	for _, pi := range pods {
		p("  %s  netns %s  eth0 %s  vxrouter pid %d  pod %s", pi.node.Host.Name, pi.node.Host.NS, pi.node.Host.Underlay, pi.node.Pid(), pi.pod.Addr)
		routes, _ := pi.node.Host.Run(ctx, "ip", "route")
		for _, r := range strings.Split(strings.TrimSpace(routes), "\n") {
			p("      %s", r)
		}
	}

	p("")
	p("ping, pod to pod across the overlay:")
	failed := 0
	for _, from := range pods {
		for _, to := range pods {
			if from.pod == to.pod {
				continue
			}
			res, err := pingUntilUp(ctx, from.pod, to.pod.Addr)
			status := fmt.Sprintf("%d/%d replies, avg %.3f ms", res.Received, res.Sent, float64(res.RTTAvg.Microseconds())/1000)
			if err != nil || res.Received < res.Sent || res.Sent == 0 {
				failed++
				status = fmt.Sprintf("FAILED %d/%d replies %v", res.Received, res.Sent, err)
			}
			p("  %s %-14s -> %s %-14s %s", from.node.Host.Name, from.pod.Addr, to.node.Host.Name, to.pod.Addr, status)
		}
	}
	p("")
	if failed > 0 {
		for _, n := range nodes {
			p("--- log of %s", n.Host.Name)
			p("%s", n.Log())
		}
		return fmt.Errorf("%d of %d pod pairs could not ping", failed, len(pods)*(len(pods)-1))
	}
	p("result: every ping answered (%d pod pairs)", len(pods)*(len(pods)-1))
	return nil
}

// pingUntilUp waits until one echo is answered (nodes learn each other's
// leases within moments of starting), then pings three times for the record.
func pingUntilUp(ctx context.Context, pod *lab.Pod, dst netip.Addr) (lab.PingResult, error) {
	deadline := time.Now().Add(15 * time.Second)
	for {
		res, err := pod.Ping(ctx, dst, 1)
		if err == nil && res.Received == 1 {
			break
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return res, fmt.Errorf("no reply within 15s: %v", err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	return pod.Ping(ctx, dst, 3)
}
