package bench

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"runtime"
	"slices"
	"strings"
	"time"
)

// Defaults for Options.
const (
	DefaultDuration   = 5 * time.Second
	DefaultRoundTrips = 2000
	DefaultPrefix     = "vxrbench"
	// DefaultCostRate is the cost test's pace: the most a round figure
	// can be while every data plane reaches it with room to spare on two
	// CPUs (vxrouter-water, the slowest, moves about 1.5 Gbit/s flat
	// out). The higher the pace, the more bytes the CPU is divided by, so
	// the less the 10 ms ticks and the machine's other work weigh.
	DefaultCostRate = 1e9

	QuickDuration   = 500 * time.Millisecond
	QuickRoundTrips = 200
)

// Options say what Run measures. The zero value runs everything once with
// the defaults.
type Options struct {
	Scenarios []string      // names from Scenarios(); default all, in their order
	Tests     []string      // from Tests; default all
	Duration  time.Duration // of each throughput test; default 5s (Quick: 0.5s)
	// RoundTrips of the latency test; default 2000 (Quick: 200).
	RoundTrips int
	Rounds     int  // how often to run every scenario, round-robin; default 1
	Quick      bool // seconds, not minutes: for a smoke test
	// CostRate is the pace of the cost test's TCP stream, in bit/s;
	// default DefaultCostRate, MinCostRate to MaxCostRate.
	CostRate uint64
	// IPerf3 takes the tcp1 and tcp4 figures from iperf3 instead of the
	// bench's own generator; the cost test always uses its own, which
	// paces its socket. Run fails if iperf3 is not installed.
	IPerf3 bool
	// Binary is the vxrouter binary the vxrouter scenarios run; default
	// this program (os.Executable).
	Binary string
	// RunArgs go to every vxrouter node's `run`, after the scenario's
	// own flags (e.g. --queues 2).
	RunArgs []string
	// Prefix of the lab's namespaces; default "vxrbench". Leftovers with
	// this prefix from a crashed run are removed first.
	Prefix string
	// Log gets the lab's commands at debug level. Default: discard.
	Log *slog.Logger
}

func (o *Options) setDefaults() error {
	if len(o.Scenarios) == 0 {
		o.Scenarios = scenarioNames()
	}
	for _, n := range o.Scenarios {
		if _, ok := LookupScenario(n); !ok {
			return fmt.Errorf("scenario %q: want one of %s", n, strings.Join(scenarioNames(), ", "))
		}
	}
	if len(o.Tests) == 0 {
		o.Tests = slices.Clone(Tests)
	}
	for _, t := range o.Tests {
		if !slices.Contains(Tests, t) {
			return fmt.Errorf("test %q: want one of %s", t, strings.Join(Tests, ", "))
		}
	}
	// Run the tests in their canonical order whatever order was asked.
	var tests []string
	for _, t := range Tests {
		if slices.Contains(o.Tests, t) {
			tests = append(tests, t)
		}
	}
	o.Tests = tests
	if o.Duration == 0 {
		o.Duration = DefaultDuration
		if o.Quick {
			o.Duration = QuickDuration
		}
	}
	if o.Duration < 100*time.Millisecond || o.Duration > 10*time.Minute {
		return fmt.Errorf("duration %s: want 100ms to 10m", o.Duration)
	}
	if o.RoundTrips == 0 {
		o.RoundTrips = DefaultRoundTrips
		if o.Quick {
			o.RoundTrips = QuickRoundTrips
		}
	}
	if o.RoundTrips < 10 || o.RoundTrips > 1_000_000 {
		return fmt.Errorf("round trips %d: want 10 to 1000000", o.RoundTrips)
	}
	if o.Rounds == 0 {
		o.Rounds = 1
	}
	if o.Rounds < 1 || o.Rounds > 100 {
		return fmt.Errorf("rounds %d: want 1 to 100", o.Rounds)
	}
	if o.CostRate == 0 {
		o.CostRate = DefaultCostRate
	}
	if o.CostRate < MinCostRate || o.CostRate > MaxCostRate {
		return fmt.Errorf("cost rate %s: want %s to %s", FormatRate(float64(o.CostRate)), FormatRate(MinCostRate), FormatRate(MaxCostRate))
	}
	if o.IPerf3 && !HaveIPerf3() {
		return errors.New("iperf3: not installed (apt-get install iperf3), or run without --iperf3")
	}
	if o.Prefix == "" {
		o.Prefix = DefaultPrefix
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.Binary == "" && slices.ContainsFunc(o.Scenarios, func(n string) bool {
		s, _ := LookupScenario(n)
		return !s.Kernel
	}) {
		b, err := os.Executable()
		if err != nil {
			return fmt.Errorf("find the vxrouter binary: %w", err)
		}
		o.Binary = b
	}
	return nil
}

func scenarioNames() []string {
	var ns []string
	for _, s := range Scenarios() {
		ns = append(ns, s.Name)
	}
	return ns
}

// Run builds each scenario in turn, runs the tests in it and tears it
// down; with several rounds it goes round-robin, each round starting one
// scenario further on, so slow drift of the machine favours none. A
// scenario or test that fails is recorded in the report and the rest go
// on. Progress lines go to progress (nil: none). Run returns an error
// only for bad options, missing privileges or a cancelled ctx; the report
// then holds what was measured so far.
func Run(ctx context.Context, o Options, progress io.Writer) (*Report, error) {
	if progress == nil {
		progress = io.Discard
	}
	if err := o.setDefaults(); err != nil {
		return nil, fmt.Errorf("bench: %w", err)
	}
	if os.Geteuid() != 0 {
		return nil, errors.New("bench needs root: it creates network namespaces, TUN devices and veth pairs (run it with sudo)")
	}
	dir, err := os.MkdirTemp("", "vxrbench-")
	if err != nil {
		return nil, fmt.Errorf("bench: %w", err)
	}
	defer os.RemoveAll(dir)

	rep := &Report{
		Machine:     machine(),
		Started:     time.Now(),
		DurationSec: o.Duration.Seconds(),
		RoundTrips:  o.RoundTrips,
		Rounds:      o.Rounds,
		Tests:       o.Tests,
		Generator:   "vxrouter bench",
		Baseline:    Baseline,
	}
	if o.IPerf3 {
		rep.Generator = "iperf3"
	}
	if slices.Contains(o.Tests, "cost") {
		rep.CostRate = o.CostRate
	}
	var scens []Scenario
	for _, n := range o.Scenarios {
		s, _ := LookupScenario(n)
		scens = append(scens, s)
		res := ScenarioResult{Name: s.Name, Description: s.Description}
		if !s.Kernel {
			res.RunArgs = slices.Concat(s.RunArgs, o.RunArgs)
		}
		rep.Scenarios = append(rep.Scenarios, res)
	}
	env := Env{Prefix: o.Prefix, Dir: dir, Binary: o.Binary, RunArgs: o.RunArgs, Log: o.Log}
	p := func(format string, args ...any) { fmt.Fprintf(progress, format+"\n", args...) }
	p("bench: %d scenarios x %d tests, %s per throughput test, %d round trips, %d round(s); TCP by %s%s",
		len(scens), len(o.Tests), o.Duration, o.RoundTrips, o.Rounds, rep.Generator, rep.costHeader())

	var runErr error
rounds:
	for r := 1; r <= o.Rounds; r++ {
		for i := range scens {
			k := (i + r - 1) % len(scens)
			if ctx.Err() != nil {
				runErr = ctx.Err()
				break rounds
			}
			rd, notes, log := runScenario(ctx, scens[k], env, o, r, p)
			res := &rep.Scenarios[k]
			res.Rounds = append(res.Rounds, rd)
			for _, n := range notes {
				if !slices.Contains(res.Notes, n) {
					res.Notes = append(res.Notes, n)
				}
			}
			if res.Log == "" && log != "" {
				res.Log = log
			}
		}
	}
	if runErr == nil {
		runErr = ctx.Err()
	}
	for i := range rep.Scenarios {
		slices.SortFunc(rep.Scenarios[i].Rounds, func(a, b RoundResult) int { return a.Round - b.Round })
	}
	rep.summarize()
	rep.ElapsedSec = time.Since(rep.Started).Seconds()
	if runErr != nil {
		return rep, fmt.Errorf("bench: %w", runErr)
	}
	return rep, nil
}

// runScenario builds one scenario, runs the tests and tears it down. It
// returns the round's values and errors, notes, and the nodes' log tail
// if anything failed.
func runScenario(ctx context.Context, s Scenario, env Env, o Options, round int, p func(string, ...any)) (rd RoundResult, notes []string, log string) {
	rd = RoundResult{Round: round, Values: map[string]float64{}, Errors: map[string]string{}}
	tag := fmt.Sprintf("[%d/%d] %s:", round, o.Rounds, s.Name)
	p("%s building (%s)", tag, s.Description)
	t0 := time.Now()
	topo, err := s.Build(ctx, env)
	if err != nil {
		rd.Errors["build"] = err.Error()
		var be *BuildError
		if errors.As(err, &be) {
			log = be.Log
		}
		p("%s FAILED: %s", tag, firstLine(err.Error()))
		return rd, nil, log
	}
	defer func() {
		if err := topo.Close(); err != nil {
			rd.Errors["cleanup"] = err.Error()
			p("%s cleanup: %v", tag, err)
		}
	}()
	notes = topo.Notes
	for _, n := range notes {
		p("%s note: %s", tag, n)
	}
	p("%s up in %.1fs: %s -> %s", tag, time.Since(t0).Seconds(), topo.Client.Addr, topo.Server.Addr)

	for _, test := range o.Tests {
		if ctx.Err() != nil {
			break
		}
		costed := costedTests[test]
		var before cpuClocks
		if costed {
			before = readClocks(topo.Pids)
		}
		line, err := runTest(ctx, test, topo, o, rd.Values)
		if err != nil {
			rd.Errors[test] = err.Error()
			p("%s %-8s FAILED: %s", tag, test, firstLine(err.Error()))
			continue
		}
		if costed {
			line += storeCost(test, before, readClocks(topo.Pids), runtime.NumCPU(), rd.Values, rd.Errors)
		}
		p("%s %-8s %s", tag, test, line)
	}
	if err := topo.Check(); err != nil {
		rd.Errors["nodes"] = err.Error()
		p("%s FAILED: %s", tag, firstLine(err.Error()))
	}
	if len(rd.Errors) > 0 {
		log = topo.Logs()
	}
	return rd, notes, log
}

// costedTests are the tests whose CPU cost is measured: the TCP ones,
// flat out and paced.
var costedTests = map[string]bool{"tcp1": true, "tcp4": true, "cost": true}

// cpuClocks are what a TCP test's cost is read from: the whole
// machine's busy CPU time and the vxrouter processes' CPU time (none for
// a kernel data plane), each with the error that kept it from being read.
type cpuClocks struct {
	at                    time.Time
	machine, routers      float64
	machineErr, routerErr error
	hasRouters            bool
}

// readClocks reads the clocks now; pids are the vxrouter processes.
func readClocks(pids []int) cpuClocks {
	c := cpuClocks{at: time.Now(), hasRouters: len(pids) > 0}
	c.machine, c.machineErr = machineBusySeconds()
	if c.hasRouters {
		c.routers, c.routerErr = cpuSeconds(pids)
	}
	return c
}

// storeCost stores in vals, under test's keys, the CPU seconds from
// before to after, what they cost per GB the server received and how
// busy the machine's ncpu CPUs were, and returns the costs for the
// progress line. A clock that could not be read leaves its figures out
// and its error in errs under "cpu".
func storeCost(test string, before, after cpuClocks, ncpu int, vals map[string]float64, errs map[string]string) string {
	if err := cmp.Or(before.machineErr, after.machineErr, before.routerErr, after.routerErr); err != nil {
		errs["cpu"] = err.Error()
	}
	gb := vals[test+"_received_bytes"] / 1e9
	var line string
	if before.machineErr == nil && after.machineErr == nil {
		busy := after.machine - before.machine
		window := after.at.Sub(before.at).Seconds()
		vals[test+"_cpu_window_s"] = window
		vals[test+"_machine_busy_s"] = busy
		if window > 0 && ncpu > 0 {
			vals[test+"_machine_busy_pct"] = 100 * busy / (window * float64(ncpu))
			line += fmt.Sprintf(", machine %.0f%% busy", vals[test+"_machine_busy_pct"])
		}
		if gb > 0 {
			vals[test+"_machine_s_per_gb"] = busy / gb
			line += fmt.Sprintf(", %.2f s/GB machine", busy/gb)
		}
	}
	if before.hasRouters && before.routerErr == nil && after.routerErr == nil {
		sec := after.routers - before.routers
		vals[test+"_router_cpu_s"] = sec
		if gb > 0 {
			vals[test+"_router_s_per_gb"] = sec / gb
			line += fmt.Sprintf(", %.2f s/GB routers", sec/gb)
		}
	}
	return line
}

// runTest runs one test, stores its figures and raw counts in vals and
// returns a progress line.
func runTest(ctx context.Context, test string, t *Topology, o Options, vals map[string]float64) (string, error) {
	switch test {
	case "tcp1", "tcp4":
		streams := 1
		if test == "tcp4" {
			streams = 4
		}
		measure := MeasureTCP
		if o.IPerf3 {
			measure = IPerf3TCP
		}
		r, err := measure(ctx, t.Client, t.Server, streams, o.Duration)
		if err != nil {
			return "", err
		}
		vals[test+"_gbps"] = r.Gbps()
		vals[test+"_sent_bytes"] = float64(r.Sent)
		vals[test+"_received_bytes"] = float64(r.Received)
		vals[test+"_elapsed_s"] = r.Elapsed.Seconds()
		vals[test+"_retrans"] = float64(r.Retransmits)
		return fmt.Sprintf("%.2f Gbit/s (%d MB in %.2fs, %d retransmits)", r.Gbps(), r.Received/1e6, r.Elapsed.Seconds(), r.Retransmits), nil
	case "cost":
		r, err := MeasurePacedTCP(ctx, t.Client, t.Server, o.CostRate, o.Duration)
		if err != nil {
			return "", err
		}
		vals["cost_gbps"] = r.Gbps()
		vals["cost_sent_bytes"] = float64(r.Sent)
		vals["cost_received_bytes"] = float64(r.Received)
		vals["cost_elapsed_s"] = r.Elapsed.Seconds()
		vals["cost_retrans"] = float64(r.Retransmits)
		return fmt.Sprintf("%.2f Gbit/s paced to %s (%d MB in %.2fs, %d retransmits)",
			r.Gbps(), FormatRate(float64(o.CostRate)), r.Received/1e6, r.Elapsed.Seconds(), r.Retransmits), nil
	case "udp64", "udp1400":
		size := 64
		if test == "udp1400" {
			size = 1400
		}
		r, err := MeasureUDP(ctx, t.Client, t.Server, size, o.Duration)
		if err != nil {
			return "", err
		}
		vals[test+"_pps"] = r.PPS()
		vals[test+"_loss_pct"] = r.LossPct()
		vals[test+"_sent"] = float64(r.Sent)
		vals[test+"_received"] = float64(r.Received)
		return fmt.Sprintf("%.1f kpps received, %.1f%% of %d lost", r.PPS()/1e3, r.LossPct(), r.Sent), nil
	case "latency":
		r, err := MeasureLatency(ctx, t.Client, t.Server, o.RoundTrips)
		if err != nil {
			return "", err
		}
		us := func(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }
		vals["rtt_p50_us"] = us(r.P50)
		vals["rtt_p99_us"] = us(r.P99)
		vals["rtt_min_us"] = us(r.Min)
		vals["rtt_max_us"] = us(r.Max)
		vals["rtt_lost"] = float64(r.Lost)
		return fmt.Sprintf("p50 %.3f ms, p99 %.3f ms (%d round trips, %d lost)", us(r.P50)/1e3, us(r.P99)/1e3, r.Count, r.Lost), nil
	}
	return "", fmt.Errorf("unknown test %q", test)
}

// machine describes this machine.
func machine() Machine {
	m := Machine{NumCPU: runtime.NumCPU(), GoVersion: runtime.Version()}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = "Linux " + strings.TrimSpace(string(b))
	}
	// Read in the bench's own namespace; the namespaces it makes start
	// with the initial namespace's value, which this is when the bench
	// runs on the host, as it is meant to.
	if b, err := os.ReadFile("/proc/sys/net/ipv4/tcp_congestion_control"); err == nil {
		m.TCPCongestion = strings.TrimSpace(string(b))
	}
	return m
}

func firstLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i] + " ..."
	}
	return s
}
