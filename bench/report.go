package bench

import (
	"math"
	"slices"
	"time"
)

// Baseline is the scenario every ratio is relative to: the kernel's vxlan,
// which is what a userspace router has to be measured against.
const Baseline = "kernel-vxlan"

// Underlay is the scenario without an overlay, whose machine CPU the
// overlay CPU figures subtract.
const Underlay = "underlay"

// Metric is one figure the bench reports, as a row of the table, a panel
// of the chart and a key of the JSON.
type Metric struct {
	Key  string // JSON key, e.g. "tcp1_gbps"
	Test string // the test that produces it: tcp1, tcp4, cost, udp64, udp1400, latency
	Name string // e.g. "TCP, 1 stream"
	Unit string // as shown: "Gbit/s", "kpps", "%", "ms", "s/GB"
	// Scale turns the stored value into the shown one (kpps = pps/1000).
	Scale float64
	// Digits after the decimal point when shown.
	Digits int
	// HigherBetter is false for latency, loss and CPU cost.
	HigherBetter bool
	// Ratio says whether a ratio to the baseline means something (not
	// for loss, not for the routers' CPU, which the kernel's data planes
	// have no process to charge to).
	Ratio bool
	// Chart says whether the metric gets a panel in the SVG.
	Chart bool
	// Process says the figure is the vxrouter processes' own: a kernel
	// data plane has none, shown as "-".
	Process bool
	// MinusUnderlay makes the figure a difference the report derives
	// after the rounds: the scenario's median of the metric keyed
	// MinusUnderlay less the underlay scenario's. Such a row is shown
	// only when the underlay scenario is in the report.
	MinusUnderlay string
}

// Metrics are the figures in the order the table and the chart show them.
// Every value is stored unscaled in the JSON (bit/s as Gbit/s, pps, µs).
//
// Each TCP test, and the paced one of the cost test, has three costs, in
// CPU seconds per GB (1e9 bytes) the server received: the whole
// machine's busy time over the test; the overlay's, which is the
// machine's less the underlay's for the same test; and the vxrouter
// processes' alone. Only the cost test's are charted: the TCP tests run
// flat out, and on a small machine their CPU per GB is NumCPU over the
// throughput, which the throughput's own panel already shows.
var Metrics = []Metric{
	{Key: "tcp1_gbps", Test: "tcp1", Name: "TCP, 1 stream", Unit: "Gbit/s", Scale: 1, Digits: 2, HigherBetter: true, Ratio: true, Chart: true},
	{Key: "tcp1_retrans", Test: "tcp1", Name: "TCP, 1 stream retransmits", Unit: "segs", Scale: 1, Digits: 0},
	{Key: "tcp1_machine_s_per_gb", Test: "tcp1", Name: "TCP, 1 stream machine CPU", Unit: "s/GB", Scale: 1, Digits: 2, Ratio: true},
	{Key: "tcp1_overlay_s_per_gb", Test: "tcp1", Name: "TCP, 1 stream overlay CPU", Unit: "s/GB", Scale: 1, Digits: 2, Ratio: true, MinusUnderlay: "tcp1_machine_s_per_gb"},
	{Key: "tcp1_router_s_per_gb", Test: "tcp1", Name: "TCP, 1 stream router CPU", Unit: "s/GB", Scale: 1, Digits: 2, Process: true},
	{Key: "tcp4_gbps", Test: "tcp4", Name: "TCP, 4 streams", Unit: "Gbit/s", Scale: 1, Digits: 2, HigherBetter: true, Ratio: true, Chart: true},
	{Key: "tcp4_retrans", Test: "tcp4", Name: "TCP, 4 streams retransmits", Unit: "segs", Scale: 1, Digits: 0},
	{Key: "tcp4_machine_s_per_gb", Test: "tcp4", Name: "TCP, 4 streams machine CPU", Unit: "s/GB", Scale: 1, Digits: 2, Ratio: true},
	{Key: "tcp4_overlay_s_per_gb", Test: "tcp4", Name: "TCP, 4 streams overlay CPU", Unit: "s/GB", Scale: 1, Digits: 2, Ratio: true, MinusUnderlay: "tcp4_machine_s_per_gb"},
	{Key: "tcp4_router_s_per_gb", Test: "tcp4", Name: "TCP, 4 streams router CPU", Unit: "s/GB", Scale: 1, Digits: 2, Process: true},
	// What the paced stream achieved has no ratio: every scenario that
	// reaches the pace has the same.
	{Key: "cost_gbps", Test: "cost", Name: "Paced TCP", Unit: "Gbit/s", Scale: 1, Digits: 2, HigherBetter: true},
	{Key: "cost_machine_busy_pct", Test: "cost", Name: "Paced TCP machine busy", Unit: "%", Scale: 1, Digits: 0},
	{Key: "cost_machine_s_per_gb", Test: "cost", Name: "Paced TCP machine CPU", Unit: "s/GB", Scale: 1, Digits: 2, Ratio: true, Chart: true},
	{Key: "cost_overlay_s_per_gb", Test: "cost", Name: "Paced TCP overlay CPU", Unit: "s/GB", Scale: 1, Digits: 2, Ratio: true, Chart: true, MinusUnderlay: "cost_machine_s_per_gb"},
	{Key: "cost_router_s_per_gb", Test: "cost", Name: "Paced TCP router CPU", Unit: "s/GB", Scale: 1, Digits: 2, Process: true},
	{Key: "udp64_pps", Test: "udp64", Name: "UDP 64 B received", Unit: "kpps", Scale: 1e-3, Digits: 1, HigherBetter: true, Ratio: true, Chart: true},
	{Key: "udp64_loss_pct", Test: "udp64", Name: "UDP 64 B loss", Unit: "%", Scale: 1, Digits: 1},
	{Key: "udp1400_pps", Test: "udp1400", Name: "UDP 1400 B received", Unit: "kpps", Scale: 1e-3, Digits: 1, HigherBetter: true, Ratio: true, Chart: true},
	{Key: "udp1400_loss_pct", Test: "udp1400", Name: "UDP 1400 B loss", Unit: "%", Scale: 1, Digits: 1},
	{Key: "rtt_p50_us", Test: "latency", Name: "round trip p50", Unit: "ms", Scale: 1e-3, Digits: 3, Ratio: true, Chart: true},
	{Key: "rtt_p99_us", Test: "latency", Name: "round trip p99", Unit: "ms", Scale: 1e-3, Digits: 3, Ratio: true, Chart: true},
}

// Tests are the test names Options.Tests accepts, in the order they run.
var Tests = []string{"tcp1", "tcp4", "cost", "udp64", "udp1400", "latency"}

// costReached is the share of the pace a scenario's paced stream must
// reach for its cost to count as measured at the pace. Where the path
// keeps up, pacing holds the goodput to within a percent of the rate up
// to a few Gbit/s; a scenario that falls short ran flat out, at
// saturation, and its cost is not at the others' load.
const costReached = 0.9

// Report is the outcome of one Run: every scenario's raw values per round,
// and the medians the table and chart show.
type Report struct {
	Machine    Machine   `json:"machine"`
	Started    time.Time `json:"started"`
	ElapsedSec float64   `json:"elapsed_s"`
	// DurationSec is the length of each throughput test.
	DurationSec float64  `json:"duration_s"`
	RoundTrips  int      `json:"round_trips"`
	Rounds      int      `json:"rounds"`
	Tests       []string `json:"tests"`
	// Generator says what produced the TCP figures: "vxrouter bench" (the
	// bench's own) or "iperf3".
	Generator string `json:"tcp_generator"`
	// CostRate is the pace of the cost test's stream in bit/s, 0 when
	// the cost test did not run.
	CostRate  uint64           `json:"cost_rate_bps,omitempty"`
	Baseline  string           `json:"baseline"`
	Scenarios []ScenarioResult `json:"scenarios"`
}

// Machine describes where the numbers were taken; they mean little
// without it.
type Machine struct {
	NumCPU    int    `json:"nproc"`
	Kernel    string `json:"kernel"`
	GoVersion string `json:"go_version"`
	// TCPCongestion is the host's TCP congestion control, which the
	// bench's namespaces inherit: it shapes every TCP figure (with bbr
	// the sender paces; with cubic it bursts, and both the kernel's vxlan
	// and vxrouter move more).
	TCPCongestion string `json:"tcp_congestion_control"`
}

// ScenarioResult is one data plane's figures.
type ScenarioResult struct {
	Name        string `json:"name"`
	Description string `json:"description"`
	// RunArgs are the flags given to `vxrouter run` (vxrouter scenarios).
	RunArgs []string      `json:"run_args,omitempty"`
	Notes   []string      `json:"notes,omitempty"`
	Rounds  []RoundResult `json:"rounds"`
	// Median is, per key, the median over the rounds that produced it;
	// and the figures of Metrics with MinusUnderlay, derived from the
	// medians of this scenario and the underlay's.
	Median map[string]float64 `json:"median"`
	// Error is the first failure: the scenario's build, or a test. With
	// an empty Median the scenario failed as a whole.
	Error string `json:"error,omitempty"`
	// Log is the tail of the vxrouter nodes' logs when something failed.
	Log string `json:"log,omitempty"`
}

// RoundResult is one round of one scenario.
type RoundResult struct {
	Round int `json:"round"`
	// Values holds the figures of Metrics and the raw counts behind them
	// (e.g. tcp1_sent_bytes, udp64_received, rtt_lost; per TCP test
	// tcp1_cpu_window_s, the wall time the CPU was read over,
	// tcp1_machine_busy_s, the machine's busy CPU seconds in it, and
	// tcp1_router_cpu_s, the vxrouter processes' CPU seconds in it).
	Values map[string]float64 `json:"values"`
	// Errors holds, per test (or "build", "nodes"), what went wrong.
	Errors map[string]string `json:"errors,omitempty"`
}

// Failed reports whether the scenario produced no figure at all.
func (s *ScenarioResult) Failed() bool { return len(s.Median) == 0 }

// Scenario returns the result of the named scenario, or nil.
func (r *Report) Scenario(name string) *ScenarioResult {
	for i := range r.Scenarios {
		if r.Scenarios[i].Name == name {
			return &r.Scenarios[i]
		}
	}
	return nil
}

// Ratio returns the scenario's median of key divided by the baseline's,
// and false when there is no ratio to give (no baseline, no value, a
// metric without ratios, a baseline of zero or less, a value below zero).
func (r *Report) Ratio(scenario string, m Metric) (float64, bool) {
	if !m.Ratio {
		return 0, false
	}
	s, b := r.Scenario(scenario), r.Scenario(Baseline)
	if s == nil || b == nil {
		return 0, false
	}
	v, ok := s.Median[m.Key]
	bv, bok := b.Median[m.Key]
	// A difference (overlay CPU) can come out below zero when the
	// machine's noise outweighs it; a ratio of that means nothing.
	if !ok || !bok || bv <= 0 || v < 0 {
		return 0, false
	}
	return v / bv, true
}

// shown returns the metrics whose test ran, less those derived from the
// underlay when it is not in the report.
func (r *Report) shown() []Metric {
	var ms []Metric
	for _, m := range Metrics {
		if !slices.Contains(r.Tests, m.Test) || m.MinusUnderlay != "" && r.Scenario(Underlay) == nil {
			continue
		}
		ms = append(ms, m)
	}
	return ms
}

// paced reports whether the report has the cost test's figures.
func (r *Report) paced() bool { return r.CostRate > 0 && slices.Contains(r.Tests, "cost") }

// offPace reports why the scenario's paced figures are not what the cost
// test is for, equal load below saturation: its stream fell short of the
// pace (below costReached of it), so the data plane ran flat out; or it
// reached the pace but the machine was saturated all the same (a median
// busy share of saturated or more), by other work on it or by a data
// plane near its limit, and its CPU per GB is then about NumCPU over the
// pace and counts whatever else ran.
func (r *Report) offPace(s *ScenarioResult) (short, busy bool) {
	if !r.paced() {
		return false, false
	}
	if v, ok := s.Median["cost_gbps"]; ok && v*1e9 < costReached*float64(r.CostRate) {
		return true, false
	}
	b, ok := s.Median["cost_machine_busy_pct"]
	return false, ok && b >= 100*saturated
}

// machineBusy returns the least and the most the machine was busy over
// those of tests the report shows, as a share of all its CPUs' time in
// the window (from each round's raw clocks), and false when no round has
// them. Near 1 the machine was saturated: its CPU per GB is then about
// NumCPU over the throughput, and counts whatever else ran.
func (r *Report) machineBusy(tests ...string) (lo, hi float64, ok bool) {
	if r.Machine.NumCPU < 1 {
		return 0, 0, false
	}
	lo = math.Inf(1)
	for _, s := range r.Scenarios {
		for _, rd := range s.Rounds {
			for _, test := range tests {
				if !slices.Contains(r.Tests, test) {
					continue
				}
				busy, bok := rd.Values[test+"_machine_busy_s"]
				window, wok := rd.Values[test+"_cpu_window_s"]
				if !bok || !wok || window <= 0 {
					continue
				}
				share := busy / (window * float64(r.Machine.NumCPU))
				lo, hi, ok = min(lo, share), max(hi, share), true
			}
		}
	}
	if !ok {
		return 0, 0, false
	}
	return lo, hi, true
}

// summarize fills every scenario's medians and errors, then the figures
// derived from the medians: the overlay's CPU is the machine's less the
// underlay's, for the same test (0 for the underlay itself). Without an
// underlay figure for the test there is none.
func (r *Report) summarize() {
	for i := range r.Scenarios {
		r.Scenarios[i].summarize()
	}
	u := r.Scenario(Underlay)
	if u == nil {
		return
	}
	for _, m := range Metrics {
		if m.MinusUnderlay == "" {
			continue
		}
		uv, ok := u.Median[m.MinusUnderlay]
		if !ok {
			continue
		}
		for i := range r.Scenarios {
			s := &r.Scenarios[i]
			if v, ok := s.Median[m.MinusUnderlay]; ok {
				s.Median[m.Key] = v - uv
			}
		}
	}
}

// summarize fills Median with the medians of the rounds' values, and
// Error with the earliest failure.
func (s *ScenarioResult) summarize() {
	vals := map[string][]float64{}
	for _, rd := range s.Rounds {
		for k, v := range rd.Values {
			vals[k] = append(vals[k], v)
		}
		if s.Error == "" {
			s.Error = firstError(rd.Errors)
		}
	}
	s.Median = make(map[string]float64, len(vals))
	for k, vs := range vals {
		s.Median[k] = median(vs)
	}
}

// firstError picks the error of the earliest step: build before nodes
// before the tests in their order, so the report names the root cause.
func firstError(errs map[string]string) string {
	for _, k := range append([]string{"build"}, append(Tests, "nodes")...) {
		if e, ok := errs[k]; ok {
			return k + ": " + e
		}
	}
	for k, e := range errs {
		return k + ": " + e
	}
	return ""
}

// median of vs; vs is reordered. The mean of the two middle values for
// an even count.
func median(vs []float64) float64 {
	if len(vs) == 0 {
		return 0
	}
	slices.Sort(vs)
	n := len(vs)
	if n%2 == 1 {
		return vs[n/2]
	}
	return (vs[n/2-1] + vs[n/2]) / 2
}
