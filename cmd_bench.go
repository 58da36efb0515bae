package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/urfave/cli/v2"

	"vxrouter/bench"
)

func benchCommand() *cli.Command {
	return &cli.Command{
		Name:  "bench",
		Usage: "measure vxrouter against the kernel's vxlan and the bare underlay, pod to pod",
		Description: "bench builds each scenario in network namespaces on this machine (two hosts,\n" +
			"a pod on each), measures pod to pod with its own traffic generator (TCP 1 and\n" +
			"4 streams with their retransmits and CPU per GB: the whole machine's, the\n" +
			"overlay's (the machine's less the underlay's) and the vxrouter processes'; the\n" +
			"cost test: one TCP stream paced to --cost-rate, with the same CPU figures at\n" +
			"equal load, below saturation, which is what to compare data planes' cost on;\n" +
			"UDP packets/s at 64 and 1400 bytes; round-trip latency) and tears it down again.\n" +
			"Scenarios: underlay (pods routed without encapsulation), kernel-vxlan\n" +
			"(flannel's vxlan backend), vxrouter-water, vxrouter-offload, and\n" +
			"vxrouter-to-kernel and kernel-to-vxrouter (a vxrouter node and a kernel-vxlan\n" +
			"node in one overlay, the client on the first named). It prints a table with\n" +
			"each figure's ratio to kernel-vxlan; --json and --svg write the details and a\n" +
			"chart. Progress goes to stderr. Exits non-zero if a scenario failed entirely.\n" +
			"Needs root.",
		Flags: []cli.Flag{
			&cli.DurationFlag{Name: "duration", Value: bench.DefaultDuration, Usage: "length of each throughput test", EnvVars: []string{"VXROUTER_BENCH_DURATION"}},
			&cli.IntFlag{Name: "rounds", Value: 1, Usage: "run every scenario this often, round-robin, and report medians", EnvVars: []string{"VXROUTER_BENCH_ROUNDS"}},
			&cli.StringFlag{Name: "scenarios", Usage: "comma list of scenarios (default all: " + strings.Join(benchScenarioNames(), ",") + ")", EnvVars: []string{"VXROUTER_BENCH_SCENARIOS"}},
			&cli.StringFlag{Name: "tests", Usage: "comma list of tests (default all: " + strings.Join(bench.Tests, ",") + ")", EnvVars: []string{"VXROUTER_BENCH_TESTS"}},
			&cli.IntFlag{Name: "round-trips", Value: bench.DefaultRoundTrips, Usage: "round trips of the latency test", EnvVars: []string{"VXROUTER_BENCH_ROUND_TRIPS"}},
			&cli.BoolFlag{Name: "quick", Usage: "a smoke run of seconds: 0.5s tests and 200 round trips unless set otherwise", EnvVars: []string{"VXROUTER_BENCH_QUICK"}},
			&cli.StringFlag{Name: "json", Usage: "write every figure, each round's raw values and the machine to this file", EnvVars: []string{"VXROUTER_BENCH_JSON"}},
			&cli.StringFlag{Name: "svg", Usage: "write a bar chart to this file", EnvVars: []string{"VXROUTER_BENCH_SVG"}},
			&cli.StringFlag{Name: "cost-rate", Value: "1G", Usage: "pace of the cost test's TCP stream in bit/s, with k, M or G (e.g. 500M, 2.5G); every scenario should reach it: the default is below vxrouter-water's ~1.5 Gbit/s on 2 CPUs", EnvVars: []string{"VXROUTER_BENCH_COST_RATE"}},
			&cli.BoolFlag{Name: "iperf3", Usage: "take the tcp1 and tcp4 figures from iperf3 (must be installed) instead of the own generator; the cost test always uses the own, which paces its socket", EnvVars: []string{"VXROUTER_BENCH_IPERF3"}},
			&cli.StringFlag{Name: "binary", Usage: "the vxrouter binary the nodes run (default: this program)", EnvVars: []string{"VXROUTER_BENCH_BINARY"}},
			&cli.StringSliceFlag{Name: "run-arg", Usage: "an extra flag for every node's \"vxrouter run\" (repeat it; e.g. --run-arg=--queues=2)", EnvVars: []string{"VXROUTER_BENCH_RUN_ARGS"}},
			&cli.StringFlag{Name: "prefix", Value: bench.DefaultPrefix, Usage: "name prefix of the bench's network namespaces", EnvVars: []string{"VXROUTER_BENCH_PREFIX"}},
		},
		Action: func(c *cli.Context) error {
			log, err := newLogger(c)
			if err != nil {
				return err
			}
			costRate, err := bench.ParseRate(c.String("cost-rate"))
			if err != nil {
				return fmt.Errorf("--cost-rate (or $VXROUTER_BENCH_COST_RATE): %w", err)
			}
			o := bench.Options{
				Scenarios:  benchList(c.String("scenarios")),
				Tests:      benchList(c.String("tests")),
				Duration:   c.Duration("duration"),
				RoundTrips: c.Int("round-trips"),
				Rounds:     c.Int("rounds"),
				Quick:      c.Bool("quick"),
				CostRate:   costRate,
				IPerf3:     c.Bool("iperf3"),
				Binary:     c.String("binary"),
				RunArgs:    c.StringSlice("run-arg"),
				Prefix:     c.String("prefix"),
				Log:        log,
			}
			if o.Quick {
				// Quick's own defaults apply unless the flag was given.
				if !c.IsSet("duration") {
					o.Duration = 0
				}
				if !c.IsSet("round-trips") {
					o.RoundTrips = 0
				}
			}
			rep, runErr := bench.Run(c.Context, o, c.App.ErrWriter)
			if rep == nil {
				return runErr
			}
			if runErr != nil {
				// Cancelled: show what was measured, blame no scenario.
				fmt.Fprintln(c.App.Writer)
				return errors.Join(runErr, rep.WriteTable(c.App.Writer))
			}
			var errs []error
			fmt.Fprintln(c.App.Writer)
			errs = append(errs, rep.WriteTable(c.App.Writer))
			if path := c.String("json"); path != "" {
				errs = append(errs, writeBenchFile(path, rep.WriteJSON))
			}
			if path := c.String("svg"); path != "" {
				errs = append(errs, writeBenchFile(path, rep.WriteSVG))
			}
			var failed []string
			for _, s := range rep.Scenarios {
				if s.Failed() {
					failed = append(failed, s.Name)
				}
			}
			if len(failed) > 0 {
				errs = append(errs, fmt.Errorf("%d of %d scenarios failed: %s", len(failed), len(rep.Scenarios), strings.Join(failed, ", ")))
			}
			return errors.Join(errs...)
		},
	}
}

func benchScenarioNames() []string {
	var ns []string
	for _, s := range bench.Scenarios() {
		ns = append(ns, s.Name)
	}
	return ns
}

// benchList splits a comma list, dropping blanks.
func benchList(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}

// writeBenchFile writes a report to path with write.
func writeBenchFile(path string, write func(io.Writer) error) error {
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("write report: %w", err)
	}
	if err := write(f); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("write report %s: %w", path, err)
	}
	return nil
}
