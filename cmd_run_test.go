package main

import (
	"flag"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/urfave/cli/v2"

	"vxrouter/node"
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
	unsetVXROUTER(t)
	parse := func(args ...string) (node.Config, error) { return runConfig(t, args...) }
	config := func(args ...string) error {
		_, err := parse(args...)
		return err
	}
	if err := config(); err != nil {
		t.Fatalf("run's defaults: %v", err)
	}
	// flanneld's command line for masquerading is vxrouter's.
	cfg, err := parse("--ip-masq", "--ip-masq-fully-random-disable", "--iptables-resync", "7")
	if err != nil || !cfg.IPMasq || !cfg.IPMasqRandomFullyDisable || cfg.IPTablesResync != 7*time.Second {
		t.Fatalf("--ip-masq --ip-masq-fully-random-disable --iptables-resync 7: %+v, %v", cfg, err)
	}
	if err := config("--public-ipv6", "fd77::1", "--public-ip", "10.0.0.1"); err != nil {
		t.Fatalf("run --public-ipv6 fd77::1: %v", err)
	}
	for _, c := range []struct{ flag, value string }{
		{"--poll-yields", "-1"},
		{"--poll-yields", "101"},
		{"--queues", "0"},
		{"--capture-limit", "0"},
		{"--iface-regex", "eth[0-9"},
		{"--iface-can-reach", "eth0"},
		{"--iptables-resync", "0"},
		{"--public-ipv6", "10.0.0.1"},
		{"--public-ipv6", "fe80::1"},
		{"--public-ipv6", "::"},
		{"--public-ipv6", "::ffff:10.0.0.1"},
		{"--public-ip", "fd77::1"},
	} {
		err := config(c.flag, c.value)
		if err == nil || !strings.Contains(err.Error(), c.flag+" "+c.value) && !strings.Contains(err.Error(), c.flag+" "+strconv.Quote(c.value)) {
			t.Errorf("run %s %s: %v, want an error naming the flag and value", c.flag, c.value, err)
		}
	}
	for _, v := range []string{"0-100", "60000-50000", "any"} {
		if err := config("--src-port-range", v); err == nil || !strings.Contains(err.Error(), "--src-port-range") || !strings.Contains(err.Error(), v) {
			t.Errorf("run --src-port-range %s: %v, want an error naming the flag and value", v, err)
		}
	}
	for _, v := range []string{"auto", "fixed", "49152-65535"} {
		if err := config("--src-port-range", v); err != nil {
			t.Errorf("run --src-port-range %s: %v", v, err)
		}
	}
}

// unsetVXROUTER keeps VXROUTER_* variables of the environment out of a
// test of the flags.
func unsetVXROUTER(t *testing.T) {
	for _, kv := range os.Environ() {
		if k, _, _ := strings.Cut(kv, "="); strings.HasPrefix(k, "VXROUTER_") {
			t.Setenv(k, "") // restored after the test
			os.Unsetenv(k)
		}
	}
}

// runConfig parses run's flags as the command would and returns the
// node.Config they make.
func runConfig(t *testing.T, args ...string) (node.Config, error) {
	t.Helper()
	set := flag.NewFlagSet("run", flag.ContinueOnError)
	for _, f := range runCommand().Flags {
		if err := f.Apply(set); err != nil {
			t.Fatal(err)
		}
	}
	if err := set.Parse(args); err != nil {
		t.Fatal(err)
	}
	return nodeConfig(cli.NewContext(newApp(), set, nil))
}

// TestRunUnderlayFlags: --iface repeats (and takes commas), --iface-regex
// repeats and keeps each regex whole, commas and all, and the command line
// replaces what the environment says.
func TestRunUnderlayFlags(t *testing.T) {
	unsetVXROUTER(t)
	regexes := func(c node.Config) []string {
		var out []string
		for _, re := range c.IfaceRegex {
			out = append(out, re.String())
		}
		return out
	}
	c, err := runConfig(t, "--iface", "eth9", "--iface", "eth1,10.0.0.1",
		"--iface-regex", `^10\.213\.[0-9]{1,3}\.`, "--iface-regex", "^eth", "--iface-can-reach", "10.213.1.7")
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"eth9", "eth1", "10.0.0.1"}; !slices.Equal(c.Iface, want) {
		t.Errorf("Iface = %q, want %q", c.Iface, want)
	}
	if got, want := regexes(c), []string{`^10\.213\.[0-9]{1,3}\.`, "^eth"}; !slices.Equal(got, want) {
		t.Errorf("IfaceRegex = %q, want %q", got, want)
	}
	if c.IfaceCanReach != netip.MustParseAddr("10.213.1.7") {
		t.Errorf("IfaceCanReach = %s", c.IfaceCanReach)
	}

	t.Setenv("VXROUTER_IFACE", "eth2,eth3")
	t.Setenv("VXROUTER_IFACE_REGEX", `^10\.0\.[0-9]{1,3}\.1$`)
	if c, err = runConfig(t); err != nil {
		t.Fatal(err)
	}
	if got, want := regexes(c), []string{`^10\.0\.[0-9]{1,3}\.1$`}; !slices.Equal(c.Iface, []string{"eth2", "eth3"}) || !slices.Equal(got, want) {
		t.Errorf("from the environment: Iface %q IfaceRegex %q, want [eth2 eth3] %q", c.Iface, got, want)
	}
	if c, err = runConfig(t, "--iface", "eth4", "--iface-regex", "a", "--iface-regex", "b"); err != nil {
		t.Fatal(err)
	}
	if got := regexes(c); !slices.Equal(c.Iface, []string{"eth4"}) || !slices.Equal(got, []string{"a", "b"}) {
		t.Errorf("the command line over the environment: Iface %q IfaceRegex %q, want [eth4] [a b]", c.Iface, got)
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
