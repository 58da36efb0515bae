package main

import (
	"context"
	"log/slog"
	"os"
	"testing"

	"github.com/urfave/cli/v2"
)

// TestLogLevelBeforeOrAfterCommand: --log-level counts before the command
// and after it; after it wins.
func TestLogLevelBeforeOrAfterCommand(t *testing.T) {
	t.Setenv("VXROUTER_LOG_LEVEL", "") // restored after the test
	os.Unsetenv("VXROUTER_LOG_LEVEL")
	for _, c := range []struct {
		args  []string
		debug bool
	}{
		{[]string{"vxrouter", "--log-level", "debug", "cmd"}, true},
		{[]string{"vxrouter", "cmd", "--log-level", "debug"}, true},
		{[]string{"vxrouter", "--log-level", "error", "cmd", "--log-level", "debug"}, true},
		{[]string{"vxrouter", "--log-level", "debug", "cmd", "--log-level", "warn"}, false},
		{[]string{"vxrouter", "cmd"}, false},
	} {
		var debug bool
		app := &cli.App{
			Flags: []cli.Flag{logLevelFlag()},
			Commands: []*cli.Command{{
				Name:  "cmd",
				Flags: []cli.Flag{logLevelFlag()},
				Action: func(cc *cli.Context) error {
					log, err := newLogger(cc)
					if err != nil {
						return err
					}
					debug = log.Enabled(context.Background(), slog.LevelDebug)
					return nil
				},
			}},
		}
		if err := app.Run(c.args); err != nil {
			t.Fatalf("%q: %v", c.args, err)
		}
		if debug != c.debug {
			t.Errorf("%q: debug logging %v, want %v", c.args, debug, c.debug)
		}
	}
}
