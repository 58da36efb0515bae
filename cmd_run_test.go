package main

import (
	"flag"
	"os"
	"strings"
	"testing"

	"github.com/urfave/cli/v2"
)

func TestGOMAXPROCS(t *testing.T) {
	for _, c := range []struct {
		flag, goDefault int
		envSet          bool
		want            int
	}{
		{0, 1, false, 1},
		{0, 2, false, 1}, // a 2-core host: one P
		{0, 4, false, 4}, // cores to spare: Go's default
		{0, 2, true, 2},  // GOMAXPROCS=2 in the environment wins
		{3, 2, false, 3}, // and --gomaxprocs over everything
		{2, 8, true, 2},
	} {
		if got := gomaxprocs(c.flag, c.goDefault, c.envSet); got != c.want {
			t.Errorf("gomaxprocs(%d, %d, env %v) = %d, want %d", c.flag, c.goDefault, c.envSet, got, c.want)
		}
	}
}

// TestRunRejectsBadFlags: run's flags are checked, each out-of-range
// number refused with an error naming the flag, in nodeConfig, which runs
// before anything touches etcd or the network.
func TestRunRejectsBadFlags(t *testing.T) {
	// The flags read VXROUTER_* variables; none may leak in.
	for _, kv := range os.Environ() {
		if k, _, _ := strings.Cut(kv, "="); strings.HasPrefix(k, "VXROUTER_") {
			t.Setenv(k, "") // restored after the test
			os.Unsetenv(k)
		}
	}
	config := func(args ...string) error {
		set := flag.NewFlagSet("run", flag.ContinueOnError)
		for _, f := range runCommand().Flags {
			if err := f.Apply(set); err != nil {
				t.Fatal(err)
			}
		}
		if err := set.Parse(args); err != nil {
			t.Fatal(err)
		}
		_, err := nodeConfig(cli.NewContext(newApp(), set, nil))
		return err
	}
	if err := config(); err != nil {
		t.Fatalf("run's defaults: %v", err)
	}
	for _, c := range []struct{ flag, value string }{
		{"--poll-yields", "-1"},
		{"--poll-yields", "101"},
		{"--queues", "0"},
		{"--capture-limit", "0"},
	} {
		err := config(c.flag, c.value)
		if err == nil || !strings.Contains(err.Error(), c.flag+" "+c.value) {
			t.Errorf("run %s %s: %v, want an error naming the flag and value", c.flag, c.value, err)
		}
	}
}

// TestHealthzFlags: flannel's --healthz-ip and --healthz-port name the
// admin endpoint's TCP address, as --metrics-addr does; each is checked,
// and the two ways must agree.
func TestHealthzFlags(t *testing.T) {
	for _, kv := range os.Environ() {
		if k, _, _ := strings.Cut(kv, "="); strings.HasPrefix(k, "VXROUTER_") {
			t.Setenv(k, "")
			os.Unsetenv(k)
		}
	}
	config := func(args ...string) (string, error) {
		set := flag.NewFlagSet("run", flag.ContinueOnError)
		for _, f := range runCommand().Flags {
			if err := f.Apply(set); err != nil {
				t.Fatal(err)
			}
		}
		if err := set.Parse(args); err != nil {
			t.Fatal(err)
		}
		cfg, err := nodeConfig(cli.NewContext(newApp(), set, nil))
		return cfg.MetricsAddr, err
	}
	for _, c := range []struct {
		args    []string
		want    string // the address, when no error
		wantErr string
	}{
		{args: nil, want: ""},
		{args: []string{"--metrics-addr", "127.0.0.1:9472"}, want: "127.0.0.1:9472"},
		{args: []string{"--healthz-port", "10256"}, want: "0.0.0.0:10256"}, // flannel's default IP
		{args: []string{"--healthz-ip", "127.0.0.1", "--healthz-port", "10256"}, want: "127.0.0.1:10256"},
		{args: []string{"--healthz-ip", "::1", "--healthz-port", "10256"}, want: "[::1]:10256"},
		{args: []string{"--healthz-port", "10256", "--metrics-addr", "0.0.0.0:10256"}, want: "0.0.0.0:10256"},
		{args: []string{"--healthz-port", "10256", "--metrics-addr", "127.0.0.1:9472"}, wantErr: "give one"},
		{args: []string{"--healthz-port", "70000"}, wantErr: "--healthz-port 70000"},
		{args: []string{"--healthz-port", "-1"}, wantErr: "--healthz-port -1"},
		{args: []string{"--healthz-ip", "localhost", "--healthz-port", "10256"}, wantErr: `--healthz-ip "localhost"`},
		{args: []string{"--healthz-ip", "127.0.0.1"}, wantErr: "without --healthz-port"},
		{args: []string{"--metrics-addr", "9472"}, wantErr: `--metrics-addr "9472"`},
	} {
		got, err := config(c.args...)
		switch {
		case c.wantErr != "" && (err == nil || !strings.Contains(err.Error(), c.wantErr)):
			t.Errorf("run %q: err %v, want one with %q", c.args, err, c.wantErr)
		case c.wantErr == "" && (err != nil || got != c.want):
			t.Errorf("run %q: address %q, %v; want %q", c.args, got, err, c.want)
		}
	}
}
