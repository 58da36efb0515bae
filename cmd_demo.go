package main

import (
	"fmt"
	"net/netip"
	"os"

	"github.com/urfave/cli/v2"

	"vxrouter/demo"
)

func demoCommand() *cli.Command {
	env := func(name string) []string { return []string{"VXROUTER_DEMO_" + name} }
	return &cli.Command{
		Name:  "demo",
		Usage: "build a small cluster network in network namespaces and send packets across it, narrated",
		Description: "demo starts an etcd, builds a node network and N hosts in network namespaces,\n" +
			"runs a vxrouter node and a pod on each, and follows the three journeys of a\n" +
			"Kubernetes cluster's packets, telling what happens at each step: pod to pod\n" +
			"across the overlay (the leases, the TUN devices and routes, a ping from every\n" +
			"pod to every other), pod to a host outside the overlay (the node's masquerade\n" +
			"rule, captures before and after it), and pod to a Service's ClusterIP (kube-\n" +
			"proxy's nat rules, their counters splitting between two backends, one\n" +
			"connection before and after DNAT and on the overlay). It exits 0 only if every\n" +
			"step worked and removes everything it made, also on Ctrl-C; with --keep it\n" +
			"leaves the lab up to poke at, and `vxrouter demo --down` removes it. Needs root,\n" +
			"iptables and tcpdump.",
		Flags: []cli.Flag{
			logLevelFlag(),
			&cli.IntFlag{Name: "nodes", Value: demo.DefaultNodes, Usage: fmt.Sprintf("how many vxrouter nodes (%d to %d)", demo.MinNodes, demo.MaxNodes), EnvVars: env("NODES")},
			&cli.StringFlag{Name: "network", Value: demo.DefaultNetwork.String(), Usage: "the overlay: the pod network", EnvVars: env("NETWORK")},
			&cli.StringFlag{Name: "service-network", Value: demo.DefaultServiceNetwork.String(), Usage: "the Services' network; the demo's ClusterIP is its 10th address", EnvVars: env("SERVICE_NETWORK")},
			&cli.StringFlag{Name: "prefix", Value: demo.DefaultPrefix, Usage: "name prefix of the demo's namespaces", EnvVars: env("PREFIX")},
			&cli.BoolFlag{Name: "keep", Usage: "leave the lab running, and print commands to explore it", EnvVars: env("KEEP")},
			&cli.BoolFlag{Name: "down", Usage: "remove a lab left by --keep, and exit", EnvVars: env("DOWN")},
			&cli.StringSliceFlag{Name: "run-arg", Usage: "pass this flag on to every `vxrouter run` (repeatable), e.g. --run-arg=--tun-backend=water", EnvVars: env("RUN_ARGS")},
			&cli.StringFlag{Name: "svg", Usage: "also draw the pod-to-pod journey, with the lab's addresses, to this SVG `FILE`", EnvVars: env("SVG")},
			&cli.DurationFlag{Name: "timeout", Value: demo.DefaultTimeout, Usage: "give up after this long", EnvVars: env("TIMEOUT")},
		},
		Action: func(c *cli.Context) error {
			if c.NArg() > 0 {
				return fmt.Errorf("demo takes no arguments, only flags (got %q)", c.Args().First())
			}
			log, err := newLogger(c)
			if err != nil {
				return err
			}
			bin, err := os.Executable()
			if err != nil {
				return fmt.Errorf("find own binary: %w", err)
			}
			o := demo.Options{
				Binary:  bin,
				Nodes:   c.Int("nodes"),
				Prefix:  c.String("prefix"),
				Keep:    c.Bool("keep"),
				RunArgs: c.StringSlice("run-arg"),
				SVG:     c.String("svg"),
				Timeout: c.Duration("timeout"),
				Out:     c.App.Writer,
				Log:     log,
			}
			if o.Network, err = netip.ParsePrefix(c.String("network")); err != nil {
				return fmt.Errorf("--network: %w", err)
			}
			if o.ServiceNetwork, err = netip.ParsePrefix(c.String("service-network")); err != nil {
				return fmt.Errorf("--service-network: %w", err)
			}
			if err := o.Check(); err != nil {
				return err
			}
			if c.Bool("down") {
				if os.Geteuid() != 0 {
					return fmt.Errorf("demo --down needs root, as the demo did")
				}
				if err := demo.Down(o.Prefix); err != nil {
					return err
				}
				fmt.Fprintf(o.Out, "removed the demo lab %q\n", o.Prefix)
				return nil
			}
			return demo.Run(c.Context, o)
		},
	}
}
