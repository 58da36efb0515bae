// Command vxrouter is a userspace VXLAN router: it carries an overlay
// network's packets between a TUN device and UDP, and finds its peers
// through flannel-compatible leases in etcd.
package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/urfave/cli/v2"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	app := newApp()
	if err := app.RunContext(ctx, flagsFirst(app, os.Args)); err != nil {
		fmt.Fprintln(os.Stderr, "vxrouter:", err)
		stop()
		os.Exit(1)
	}
}

func newApp() *cli.App {
	return &cli.App{
		Name:  "vxrouter",
		Usage: "a userspace VXLAN router that shares an overlay with flannel",
		Description: "vxrouter reads IP packets from a TUN device, wraps them in VXLAN and sends them\n" +
			"over UDP to the node that owns the destination subnet. Nodes find each other\n" +
			"through leases in etcd, in flannel's layout, so vxrouter nodes and flannel nodes\n" +
			"using the kernel's vxlan driver share one overlay.",
		Flags: []cli.Flag{logLevelFlag()},
		Commands: []*cli.Command{
			runCommand(),
			demoCommand(),
			explainCommand(),
			etcdCommand(),
			benchCommand(),
			leaseCommand(),
		},
		EnableBashCompletion: true,
	}
}

// logLevelFlag is accepted before the command and after it, so both
// `vxrouter --log-level debug run` and `vxrouter run --log-level debug` work.
func logLevelFlag() cli.Flag {
	return &cli.StringFlag{
		Name:    "log-level",
		Value:   "info",
		Usage:   "debug, info, warn or error",
		EnvVars: []string{"VXROUTER_LOG_LEVEL"},
	}
}

// newLogger returns the logger every command uses, at the level the global
// --log-level flag asks for.
func newLogger(c *cli.Context) (*slog.Logger, error) {
	var level slog.Level
	if err := level.UnmarshalText([]byte(strings.ToLower(c.String("log-level")))); err != nil {
		return nil, fmt.Errorf("--log-level %q: want debug, info, warn or error", c.String("log-level"))
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level})), nil
}
