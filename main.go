// Command vxrouter is a userspace VXLAN router: it carries an overlay
// network's packets between a TUN device and UDP, and finds its peers
// through flannel-compatible leases in etcd.
package main

import (
	"context"
	"fmt"
	"io"
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
		// --version (-v) prints it in one line; `version` in detail.
		Version: currentVersion().String(),
		Flags:   []cli.Flag{logLevelFlag()},
		Commands: []*cli.Command{
			runCommand(),
			demoCommand(),
			explainCommand(),
			etcdCommand(),
			benchCommand(),
			leaseCommand(),
			versionCommand(),
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

// newLogger returns the logger every command uses, writing to stderr at
// the level --log-level asks for, or info.
func newLogger(c *cli.Context) (*slog.Logger, error) {
	return cmdLogger(c, os.Stderr, slog.LevelInfo)
}

// cmdLogger returns a logger writing to w at the level of the first
// --log-level set (or in the environment) from the command outwards, so
// one given after the command wins over one given before it, and one
// given before it counts; def where none is. (c.String alone would answer
// with the command's own default and never look before the command.)
func cmdLogger(c *cli.Context, w io.Writer, def slog.Level) (*slog.Logger, error) {
	level := def
	for _, cc := range c.Lineage() {
		if !cc.IsSet("log-level") {
			continue
		}
		s := cc.String("log-level")
		if err := level.UnmarshalText([]byte(strings.ToLower(s))); err != nil {
			return nil, fmt.Errorf("--log-level %q: want debug, info, warn or error", s)
		}
		break
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: level})), nil
}
