package main

import (
	"fmt"
	"os"

	"github.com/urfave/cli/v2"

	"vxrouter/lease"
)

func etcdCommand() *cli.Command {
	return &cli.Command{
		Name:  "etcd",
		Usage: "run a one-member etcd for a lab or a demo",
		Description: "etcd runs an embedded single-member etcd with its data in --data-dir, serving\n" +
			"clients on 127.0.0.1 (a free port) and on the unix socket <data-dir>/etcd.sock,\n" +
			"which processes in any network namespace of this machine can reach. It prints\n" +
			"the endpoints and runs until SIGINT or SIGTERM. For production, run a real etcd\n" +
			"cluster.",
		Flags: []cli.Flag{
			logLevelFlag(),
			&cli.StringFlag{Name: "data-dir", Required: true, Usage: "where etcd keeps its data and socket", EnvVars: []string{"VXROUTER_ETCD_DATA_DIR"}},
			&cli.StringFlag{Name: "network", Usage: "also write this overlay config if none is there, e.g. 172.16.0.0/16", EnvVars: []string{"VXROUTER_ETCD_NETWORK"}},
		},
		Action: func(c *cli.Context) error {
			log, err := newLogger(c)
			if err != nil {
				return err
			}
			dir := c.String("data-dir")
			if err := os.MkdirAll(dir, 0o700); err != nil {
				return err
			}
			e, err := lease.StartEmbedded(dir)
			if err != nil {
				return err
			}
			defer e.Close()
			if network := c.String("network"); network != "" {
				cfg, err := vxlanConfig(network)
				if err != nil {
					return err
				}
				cli, err := e.Client()
				if err != nil {
					return err
				}
				reg := lease.NewRegistry(cli, lease.DefaultPrefix, log)
				resp, err := cli.Get(c.Context, reg.ConfigKey())
				if err == nil && len(resp.Kvs) == 0 {
					err = reg.SetConfig(c.Context, cfg)
				}
				cli.Close()
				if err != nil {
					return fmt.Errorf("write overlay config: %w", err)
				}
			}
			for _, ep := range e.Endpoints() {
				fmt.Fprintln(c.App.Writer, ep)
			}
			log.Info("etcd ready", "endpoints", e.Endpoints())
			<-c.Context.Done()
			log.Info("etcd stopping")
			return nil
		},
	}
}

// vxlanConfig is the config etcd --network writes (and the demo asks it
// to): network, flannel's defaults, the vxlan backend.
func vxlanConfig(network string) (*lease.Config, error) {
	cfg, err := lease.ParseConfig(fmt.Appendf(nil, `{"Network":%q,"Backend":{"Type":"vxlan"}}`, network))
	if err != nil {
		return nil, fmt.Errorf("--network: %w", err)
	}
	return cfg, nil
}
