package bench

import (
	"bytes"
	"encoding/json"
	"encoding/xml"
	"errors"
	"io"
	"math"
	"strings"
	"testing"
	"time"
)

// fixedReport has four scenarios over three rounds: the kernel ones
// without router CPU figures, vxrouter-offload failed in every round,
// and vxrouter-water missing udp64 in one round (the median then comes
// from two). Machine CPU medians, s/GB, tcp1 and tcp4: underlay 1.1 and
// 0.9, kernel-vxlan 1.5 and 1.2, water 8 and 6; so overlay CPU: 0 and 0,
// 0.4 and 0.3, 6.9 and 5.1. Water's router CPU: 2 and 1.5.
//
// The cost test, paced to 1 Gbit/s: underlay and kernel-vxlan reach
// 0.99 Gbit/s, water only 0.8 (short of the pace) with the machine 96%
// busy. Machine CPU medians 0.8, 1.2 and 19.2 s/GB, so overlay 0, 0.4
// and 18.4; water's router CPU 6.
func fixedReport() *Report {
	rep := fixedRounds()
	rep.summarize()
	return rep
}

// fixedRounds is fixedReport before summarize.
func fixedRounds() *Report {
	rep := &Report{
		Machine:     Machine{NumCPU: 2, Kernel: "Linux 6.1.0", GoVersion: "go1.26.8", TCPCongestion: "bbr"},
		Started:     time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC),
		DurationSec: 5,
		RoundTrips:  2000,
		Rounds:      3,
		Tests:       Tests,
		Generator:   "vxrouter bench",
		CostRate:    1e9,
		Baseline:    Baseline,
	}
	vals := func(tcp1, tcp4, p64, p1400, p50, p99 float64) map[string]float64 {
		return map[string]float64{
			"tcp1_gbps": tcp1, "tcp4_gbps": tcp4,
			"udp64_pps": p64, "udp64_loss_pct": 10, "udp1400_pps": p1400, "udp1400_loss_pct": 1,
			"rtt_p50_us": p50, "rtt_p99_us": p99,
		}
	}
	under := ScenarioResult{Name: "underlay", Description: "no overlay <&>"}
	kern := ScenarioResult{Name: "kernel-vxlan", Description: "flannel"}
	water := ScenarioResult{Name: "vxrouter-water", Description: "water", RunArgs: []string{"--tun-backend", "water"}}
	off := ScenarioResult{Name: "vxrouter-offload", Description: "offload", RunArgs: []string{"--tun-backend", "offload"},
		Log: "--- vxrouter on node1\nflag provided but not defined: -tun-backend"}
	// The raw clocks of tcp1 (5 s windows on 2 CPUs): the machine busy
	// 99% of the time in the underlay, 95% in kernel-vxlan, 60% in water.
	machine := func(v map[string]float64, tcp1, tcp4, tcp1Busy float64) map[string]float64 {
		v["tcp1_machine_s_per_gb"], v["tcp4_machine_s_per_gb"] = tcp1, tcp4
		v["tcp1_cpu_window_s"], v["tcp1_machine_busy_s"] = 5, tcp1Busy
		return v
	}
	// The cost test's figures and raw clocks, 5 s windows on 2 CPUs.
	cost := func(v map[string]float64, gbps, perGB, busy float64) map[string]float64 {
		v["cost_gbps"], v["cost_machine_s_per_gb"] = gbps, perGB
		v["cost_cpu_window_s"], v["cost_machine_busy_s"] = 5, busy
		v["cost_machine_busy_pct"] = 100 * busy / 10
		return v
	}
	for r := 1; r <= 3; r++ {
		f := float64(r)
		under.Rounds = append(under.Rounds, RoundResult{Round: r,
			Values: cost(machine(vals(11+f, 14, 900e3, 700e3, 40, 90), []float64{1.0, 1.2, 1.1}[r-1], 0.9, 9.9), 0.99, []float64{0.7, 0.8, 0.9}[r-1], 0.5)})
		// kernel medians: tcp1 10, tcp4 12, udp64 500k, udp1400 400k, p50 100, p99 200
		kern.Rounds = append(kern.Rounds, RoundResult{Round: r,
			Values: cost(machine(vals([]float64{9, 10, 11}[r-1], 12, 500e3, 400e3, 100, []float64{150, 250, 200}[r-1]), []float64{1.5, 1.6, 1.4}[r-1], 1.2, 9.5),
				[]float64{0.99, 0.98, 0.99}[r-1], []float64{1.2, 1.3, 1.1}[r-1], 0.8)})
		w := cost(machine(vals([]float64{3.5, 2.5, 3.0}[r-1], 4, []float64{100e3, 0, 200e3}[r-1], 100e3, 250, 800), []float64{9, 7, 8}[r-1], 6, 6),
			[]float64{0.8, 0.85, 0.7}[r-1], []float64{19.2, 18, 20}[r-1], 9.6)
		w["tcp1_router_s_per_gb"] = []float64{2, 1, 4}[r-1]
		w["tcp4_router_s_per_gb"] = 1.5
		w["cost_router_s_per_gb"] = 6
		rd := RoundResult{Round: r, Values: w}
		if r == 2 {
			delete(rd.Values, "udp64_pps")
			delete(rd.Values, "udp64_loss_pct")
			rd.Errors = map[string]string{"udp64": "udp test: send: boom"}
		}
		water.Rounds = append(water.Rounds, rd)
		off.Rounds = append(off.Rounds, RoundResult{Round: r, Values: map[string]float64{},
			Errors: map[string]string{"build": "build vxrouter-offload: node node1 exited (exit status 1):\nflag provided but not defined"}})
	}
	rep.Scenarios = []ScenarioResult{under, kern, water, off}
	return rep
}

func TestMedian(t *testing.T) {
	for _, c := range []struct {
		in   []float64
		want float64
	}{
		{nil, 0},
		{[]float64{7}, 7},
		{[]float64{3, 1, 2}, 2},
		{[]float64{4, 1}, 2.5},
		{[]float64{5, 1, 4, 2}, 3},
	} {
		if got := median(append([]float64(nil), c.in...)); got != c.want {
			t.Errorf("median(%v) = %v, want %v", c.in, got, c.want)
		}
	}
}

func TestSummarize(t *testing.T) {
	rep := fixedReport()
	u, k, w, o := rep.Scenario("underlay"), rep.Scenario("kernel-vxlan"), rep.Scenario("vxrouter-water"), rep.Scenario("vxrouter-offload")
	checks := []struct {
		s    *ScenarioResult
		key  string
		want float64
	}{
		{k, "tcp1_gbps", 10},
		{k, "rtt_p99_us", 200},
		{w, "tcp1_gbps", 3},
		{w, "udp64_pps", 150e3}, // rounds 1 and 3 only
		{w, "tcp1_router_s_per_gb", 2},
		{w, "tcp4_router_s_per_gb", 1.5},
		{u, "tcp1_machine_s_per_gb", 1.1},
		{k, "tcp1_machine_s_per_gb", 1.5},
		{w, "tcp1_machine_s_per_gb", 8},
		// Overlay: the scenario's machine median less the underlay's.
		{u, "tcp1_overlay_s_per_gb", 0},
		{k, "tcp1_overlay_s_per_gb", 0.4},
		{w, "tcp1_overlay_s_per_gb", 6.9},
		{u, "tcp4_overlay_s_per_gb", 0},
		{k, "tcp4_overlay_s_per_gb", 0.3},
		{w, "tcp4_overlay_s_per_gb", 5.1},
		{k, "cost_gbps", 0.99},
		{w, "cost_gbps", 0.8},
		{w, "cost_machine_busy_pct", 96},
		{u, "cost_machine_s_per_gb", 0.8},
		{k, "cost_machine_s_per_gb", 1.2},
		{w, "cost_machine_s_per_gb", 19.2},
		{u, "cost_overlay_s_per_gb", 0},
		{k, "cost_overlay_s_per_gb", 0.4},
		{w, "cost_overlay_s_per_gb", 18.4},
		{w, "cost_router_s_per_gb", 6},
	}
	for _, c := range checks {
		if got, ok := c.s.Median[c.key]; !ok || math.Abs(got-c.want) > 1e-9 {
			t.Errorf("%s median %s = %v (present %v), want %v", c.s.Name, c.key, got, ok, c.want)
		}
	}
	for _, key := range []string{"tcp1_router_s_per_gb", "tcp4_router_s_per_gb", "cost_router_s_per_gb"} {
		if _, ok := k.Median[key]; ok {
			t.Errorf("kernel-vxlan has a median %s", key)
		}
	}
	if _, ok := o.Median["tcp1_overlay_s_per_gb"]; ok {
		t.Error("failed offload has an overlay figure")
	}
	// Derived figures are in the medians only, not in a round.
	if _, ok := w.Rounds[0].Values["tcp1_overlay_s_per_gb"]; ok {
		t.Error("overlay CPU stored in a round")
	}
	if !o.Failed() || !strings.HasPrefix(o.Error, "build: ") {
		t.Errorf("offload: failed %v, error %q; want failed with the build error", o.Failed(), o.Error)
	}
	if w.Failed() || w.Error != "udp64: udp test: send: boom" {
		t.Errorf("water: failed %v, error %q; want not failed, with the udp64 error", w.Failed(), w.Error)
	}
}

func TestRatio(t *testing.T) {
	rep := fixedReport()
	metric := func(key string) Metric {
		for _, m := range Metrics {
			if m.Key == key {
				return m
			}
		}
		t.Fatalf("no metric %s", key)
		return Metric{}
	}
	for _, c := range []struct {
		scen, key string
		want      float64
		ok        bool
	}{
		{"vxrouter-water", "tcp1_gbps", 0.3, true},
		{"underlay", "tcp1_gbps", 1.3, true},
		{"kernel-vxlan", "tcp1_gbps", 1, true},
		{"vxrouter-water", "udp64_pps", 0.3, true},
		{"vxrouter-water", "rtt_p50_us", 2.5, true},
		{"vxrouter-water", "tcp1_machine_s_per_gb", 8 / 1.5, true},
		{"vxrouter-water", "cost_machine_s_per_gb", 19.2 / 1.2, true},
		{"vxrouter-water", "cost_overlay_s_per_gb", 18.4 / 0.4, true},
		{"vxrouter-water", "cost_gbps", 0, false}, // the pace, not a figure to compare
		{"vxrouter-water", "tcp1_overlay_s_per_gb", 6.9 / 0.4, true},
		{"underlay", "tcp1_overlay_s_per_gb", 0, true},
		{"vxrouter-water", "udp64_loss_pct", 0, false},       // no ratio for loss
		{"vxrouter-water", "tcp1_router_s_per_gb", 0, false}, // nor for the routers' CPU
		{"vxrouter-offload", "tcp1_gbps", 0, false},          // failed
	} {
		got, ok := rep.Ratio(c.scen, metric(c.key))
		if ok != c.ok || math.Abs(got-c.want) > 1e-9 {
			t.Errorf("Ratio(%s, %s) = %v, %v; want %v, %v", c.scen, c.key, got, ok, c.want, c.ok)
		}
	}
	// An overlay figure below zero (noise larger than the overlay's
	// cost) has no ratio, nor has anything over a baseline below zero.
	overlay := metric("tcp1_overlay_s_per_gb")
	w, k := rep.Scenario("vxrouter-water"), rep.Scenario("kernel-vxlan")
	w.Median[overlay.Key] = -0.1
	if got, ok := rep.Ratio("vxrouter-water", overlay); ok {
		t.Errorf("ratio %v of a negative overlay figure", got)
	}
	w.Median[overlay.Key], k.Median[overlay.Key] = 0.5, -0.1
	if got, ok := rep.Ratio("vxrouter-water", overlay); ok {
		t.Errorf("ratio %v over a negative baseline", got)
	}
	// Without the baseline in the report there are no ratios.
	rep.Scenarios = rep.Scenarios[2:]
	if _, ok := rep.Ratio("vxrouter-water", metric("tcp1_gbps")); ok {
		t.Error("ratio without a baseline")
	}
}

func TestWriteTable(t *testing.T) {
	var b bytes.Buffer
	if err := fixedReport().WriteTable(&b); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	t.Logf("\n%s", out)
	lines := strings.Split(out, "\n")
	row := func(prefix string) string {
		for _, l := range lines {
			if strings.HasPrefix(l, prefix) {
				return l
			}
		}
		t.Fatalf("no row %q in\n%s", prefix, out)
		return ""
	}
	fieldsOf := func(l string) string { return strings.Join(strings.Fields(l), " ") }
	for _, c := range []struct{ row, want string }{
		{"vxrouter bench:", "vxrouter bench: pod to pod, 2 CPUs, Linux 6.1.0, go1.26.8, TCP congestion control bbr"},
		{"TCP, 1 stream", "TCP, 1 stream Gbit/s 13.00 1.30x 10.00 1.00x 3.00 0.30x failed"},
		{"UDP 64 B received", "UDP 64 B received kpps 900.0 1.80x 500.0 1.00x 150.0 0.30x failed"},
		{"UDP 64 B loss", "UDP 64 B loss % 10.0 10.0 10.0 failed"},
		{"round trip p99", "round trip p99 ms 0.090 0.45x 0.200 1.00x 0.800 4.00x failed"},
		{"TCP, 1 stream machine CPU", "TCP, 1 stream machine CPU s/GB 1.10 0.73x 1.50 1.00x 8.00 5.33x failed"},
		{"TCP, 1 stream overlay CPU", "TCP, 1 stream overlay CPU s/GB 0.00 0.00x 0.40 1.00x 6.90 17.25x failed"},
		{"TCP, 1 stream router CPU", "TCP, 1 stream router CPU s/GB - - 2.00 failed"},
		{"TCP, 4 streams machine CPU", "TCP, 4 streams machine CPU s/GB 0.90 0.75x 1.20 1.00x 6.00 5.00x failed"},
		{"TCP, 4 streams overlay CPU", "TCP, 4 streams overlay CPU s/GB 0.00 0.00x 0.30 1.00x 5.10 17.00x failed"},
		{"TCP, 4 streams router CPU", "TCP, 4 streams router CPU s/GB - - 1.50 failed"},
		// Water fell short of the pace: its paced figures are marked.
		{"Paced TCP  ", "Paced TCP Gbit/s 0.99 0.99 0.80 * failed"},
		{"Paced TCP machine busy", "Paced TCP machine busy % 5 8 96 * failed"},
		{"Paced TCP machine CPU", "Paced TCP machine CPU s/GB 0.80 0.67x 1.20 1.00x 19.20 16.00x * failed"},
		{"Paced TCP overlay CPU", "Paced TCP overlay CPU s/GB 0.00 0.00x 0.40 1.00x 18.40 46.00x * failed"},
		{"Paced TCP router CPU", "Paced TCP router CPU s/GB - - 6.00 * failed"},
		{"5s per", "5s per throughput test, 2000 round trips, median of 3 round(s), TCP by vxrouter bench, paced TCP at 1 Gbit/s; ratio = scenario / kernel-vxlan"},
	} {
		if got := fieldsOf(row(c.row)); got != c.want {
			t.Errorf("row %q:\n got  %q\n want %q", c.row, got, c.want)
		}
	}
	// Each TCP test's costs follow its throughput and retransmits.
	var order []string
	for _, l := range lines {
		if strings.HasPrefix(l, "TCP, 1 stream") {
			order = append(order, strings.Join(strings.Fields(l)[3:5], " "))
		}
	}
	if got := strings.Join(order, ", "); got != "Gbit/s 13.00, retransmits segs, machine CPU, overlay CPU, router CPU" {
		t.Errorf("rows of TCP, 1 stream: %s", got)
	}
	hdr := fieldsOf(lines[3])
	if hdr != "underlay kernel-vxlan vxrouter-water vxrouter-offload" {
		t.Errorf("header %q", hdr)
	}
	// Columns line up: each cell sits under its scenario's name.
	h := lines[3]
	r := row("TCP, 1 stream")
	names := []string{"underlay", "kernel-vxlan", "vxrouter-water", "vxrouter-offload"}
	cells := []string{"13.00  1.30x", "10.00  1.00x", "3.00  0.30x", "failed"}
	for i, name := range names {
		from, to := strings.Index(h, name), len(r)
		if i+1 < len(names) {
			to = strings.Index(h, names[i+1])
		}
		if from <= 0 || to > len(r) || r[from-1] != ' ' || strings.TrimSpace(r[from:to]) != cells[i] {
			t.Errorf("column %s [%d:%d] of %q is not %q", name, from, to, r, cells[i])
		}
	}
	for _, want := range []string{
		"vxrouter-offload FAILED: build: build vxrouter-offload: node node1 exited (exit status 1): ...",
		"    flag provided but not defined: -tun-backend",
		"vxrouter-water had an error: udp64: udp test: send: boom",
		"vxrouter run --tun-backend water",
		"underlay:",
		"Machine CPU: all CPUs' ",
		"Overlay CPU: machine CPU less the underlay's",
		"Router CPU: the vxrouter processes' ",
		"The machine was busy 60-99% of its 2 CPUs' time in the TCP tests. Where it was saturated (95% or more), machine CPU per GB is about 2 CPUs / throughput and counts what else ran.",
		"Paced TCP: one TCP stream paced to 1 Gbit/s (SO_MAX_PACING_RATE) for 5s, the same load in every scenario, below saturation: compare data planes on its CPU rows.",
		"* vxrouter-water fell short of the pace (below 90% of 1 Gbit/s). Marked figures were taken at saturation, of the data plane or of the machine, not at equal load below it.",
		"The TCP tests run flat out: on a small machine they saturate it, and their machine and overlay rows are then about NumCPU / throughput, counting whatever else ran; compare data planes on the paced rows instead.",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("table lacks %q", want)
		}
	}
}

// A report of some tests shows only their rows.
func TestWriteTableSubset(t *testing.T) {
	rep := fixedReport()
	rep.Tests = []string{"latency"}
	var b bytes.Buffer
	if err := rep.WriteTable(&b); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	if strings.Contains(out, "TCP, ") || strings.Contains(out, "s/GB") || strings.Contains(out, "CPU:") || strings.Contains(out, "UDP") || !strings.Contains(out, "round trip p50") {
		t.Errorf("latency-only table:\n%s", out)
	}

	rep.Tests = []string{"tcp4"}
	b.Reset()
	if err := rep.WriteTable(&b); err != nil {
		t.Fatal(err)
	}
	out = b.String()
	if strings.Contains(out, "TCP, 1 stream") || !strings.Contains(out, "TCP, 4 streams overlay CPU") || !strings.Contains(out, "Machine CPU:") ||
		strings.Contains(out, "Paced") || strings.Contains(out, "paced") || !strings.Contains(out, "The TCP tests run flat out") {
		t.Errorf("tcp4-only table:\n%s", out)
	}

	rep.Tests = []string{"cost"}
	b.Reset()
	if err := rep.WriteTable(&b); err != nil {
		t.Fatal(err)
	}
	out = b.String()
	if strings.Contains(out, "TCP, ") || strings.Contains(out, "The TCP tests") || strings.Contains(out, "in the TCP tests") ||
		!strings.Contains(out, "Paced TCP overlay CPU") || !strings.Contains(out, "Paced TCP: one TCP stream") || !strings.Contains(out, "Machine CPU:") {
		t.Errorf("cost-only table:\n%s", out)
	}
}

// The busy note follows the raw clocks: no saturation caveat below 95%,
// no note without clocks or with no such test shown. The table has the
// TCP tests' note, the chart the paced test's.
func TestBusyNote(t *testing.T) {
	rep := fixedReport()
	if got := strings.Join(rep.busyNote("the TCP tests", "tcp1", "tcp4"), " "); !strings.HasPrefix(got, "The machine was busy 60-99% ") || !strings.Contains(got, "saturated") {
		t.Errorf("fixture: %q", got)
	}
	var svg bytes.Buffer
	if err := rep.WriteSVG(&svg); err != nil {
		t.Fatal(err)
	}
	texts := func() string {
		_, texts := parseSVG(t, svg.Bytes())
		return strings.Join(texts, "\n")
	}
	if got := texts(); !strings.Contains(got, "The machine was busy 5-96% of its 2 CPUs' time in the paced test.\nWhere it was saturated") ||
		strings.Contains(got, "in the TCP tests") {
		t.Errorf("SVG lacks the paced test's busy note, one sentence a line, or has the TCP tests':\n%s", got)
	}
	for i := range rep.Scenarios {
		for _, rd := range rep.Scenarios[i].Rounds {
			if b, ok := rd.Values["tcp1_machine_busy_s"]; ok {
				rd.Values["tcp1_machine_busy_s"] = b * 0.9 // 54% to 89%
			}
		}
	}
	if got := rep.busyNote("the TCP tests", "tcp1", "tcp4"); len(got) != 1 || got[0] != "The machine was busy 54-89% of its 2 CPUs' time in the TCP tests." {
		t.Errorf("unsaturated: %q", got)
	}
	rep.Scenarios = rep.Scenarios[:1] // the underlay alone: 89.1% in every round
	if got := rep.busyNote("the TCP tests", "tcp1", "tcp4"); len(got) != 1 || got[0] != "The machine was busy 89% of its 2 CPUs' time in the TCP tests." {
		t.Errorf("one share: %q", got)
	}
	if got := rep.busyNote("the paced test", "cost"); len(got) != 1 || got[0] != "The machine was busy 5% of its 2 CPUs' time in the paced test." {
		t.Errorf("paced, underlay alone: %q", got)
	}
	rep.Tests = []string{"tcp4", "latency"} // tcp4 has no raw clocks in the fixture
	if got := rep.busyNote("the TCP tests", "tcp1", "tcp4"); got != nil {
		t.Errorf("without clocks: %q", got)
	}
	if got := rep.busyNote("the paced test", "cost"); got != nil {
		t.Errorf("without the paced test: %q", got)
	}
}

// A scenario's paced figures are marked when its stream fell below 90%
// of the pace or the machine was 95% busy or more, its overlay figures
// also when the underlay's are; none are when the cost test did not run.
func TestOffPace(t *testing.T) {
	rep := fixedReport()
	u, k, w := rep.Scenario("underlay"), rep.Scenario("kernel-vxlan"), rep.Scenario("vxrouter-water")
	machine, overlay := metric(t, "cost_machine_s_per_gb"), metric(t, "cost_overlay_s_per_gb")
	marks := func() string {
		var m []string
		for _, s := range []*ScenarioResult{u, k, w} {
			m = append(m, s.Name+":"+rep.cell(s, machine).mark+rep.cell(s, overlay).mark)
		}
		return strings.Join(m, " ")
	}
	note := func() string { return strings.Join(rep.offPaceNote(), " ") }
	// Short of the pace and 96% busy: short says more.
	if got, want := marks(), "underlay: kernel-vxlan: vxrouter-water:**"; got != want {
		t.Errorf("fixture marks %q, want %q", got, want)
	}
	if got := note(); !strings.HasPrefix(got, "* vxrouter-water fell short of the pace (below 90% of 1 Gbit/s). Marked") || strings.Contains(got, "busy") {
		t.Errorf("fixture note %q", got)
	}
	// At 90% of the pace it reached it, but the machine was saturated.
	w.Median["cost_gbps"] = 0.9
	if got := note(); !strings.HasPrefix(got, "* vxrouter-water reached the pace with the machine 95% or more busy. Marked") {
		t.Errorf("saturated note %q", got)
	}
	w.Median["cost_machine_busy_pct"] = 94
	if got, want := marks(), "underlay: kernel-vxlan: vxrouter-water:"; got != want || rep.offPaceNote() != nil {
		t.Errorf("at the pace below saturation: marks %q, note %q", got, note())
	}
	// A saturated underlay takes every overlay figure with it.
	u.Median["cost_machine_busy_pct"] = 97
	if got, want := marks(), "underlay:** kernel-vxlan:* vxrouter-water:*"; got != want {
		t.Errorf("saturated underlay: marks %q, want %q", got, want)
	}
	if got := note(); !strings.HasPrefix(got, "* underlay reached the pace with the machine 95% or more busy. Every overlay figure subtracts the underlay's") {
		t.Errorf("saturated underlay note %q", got)
	}
	// Short and saturated, each said once; all of them named as such.
	w.Median["cost_gbps"] = 0.5
	k.Median["cost_machine_busy_pct"] = 100
	rep.Scenarios = rep.Scenarios[:3] // without the failed offload
	if got := note(); !strings.HasPrefix(got, "* vxrouter-water fell short of the pace (below 90% of 1 Gbit/s). * underlay, kernel-vxlan reached the pace with the machine 95% or more busy. ") {
		t.Errorf("short and saturated note %q", got)
	}
	w.Median["cost_gbps"], w.Median["cost_machine_busy_pct"] = 1, 99
	if got := note(); !strings.HasPrefix(got, "* every scenario reached the pace with the machine 95% or more busy. ") {
		t.Errorf("all saturated note %q", got)
	}
	rep.Tests = []string{"tcp1"}
	if got := rep.offPaceNote(); got != nil {
		t.Errorf("without the cost test: %q", got)
	}
	var b bytes.Buffer
	if err := rep.WriteTable(&b); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(b.String(), "*") || strings.Contains(b.String(), "paced") {
		t.Errorf("tcp1-only table speaks of the pace:\n%s", b.String())
	}
}

func metric(t *testing.T, key string) Metric {
	t.Helper()
	for _, m := range Metrics {
		if m.Key == key {
			return m
		}
	}
	t.Fatalf("no metric %s", key)
	return Metric{}
}

// Without the underlay in the report there is no overlay CPU: no figure,
// no row, no bar; the machine's CPU is still there.
func TestOverlayWithoutUnderlay(t *testing.T) {
	rep := fixedRounds()
	rep.Scenarios = rep.Scenarios[1:]
	rep.summarize()
	for _, s := range rep.Scenarios {
		for k := range s.Median {
			if strings.Contains(k, "overlay") {
				t.Errorf("%s has %s without an underlay", s.Name, k)
			}
		}
	}
	var b, svg bytes.Buffer
	if err := rep.WriteTable(&b); err != nil {
		t.Fatal(err)
	}
	if out := b.String(); strings.Contains(out, "overlay CPU") || strings.Contains(out, "Overlay CPU:") || !strings.Contains(out, "TCP, 1 stream machine CPU") {
		t.Errorf("table without underlay:\n%s", out)
	}
	if err := rep.WriteSVG(&svg); err != nil {
		t.Fatal(err)
	}
	bars, _ := parseSVG(t, svg.Bytes())
	machine := 0
	for _, bar := range bars {
		if strings.Contains(bar.metric, "overlay") {
			t.Errorf("bar %v without an underlay", bar)
		}
		if bar.metric == "cost_machine_s_per_gb" {
			machine++
		}
	}
	if machine != 2 {
		t.Errorf("%d machine CPU bars, want kernel-vxlan's and water's", machine)
	}
}

// An underlay that failed a test leaves the others' overlay figure of
// that test at "-"; its own is "failed".
func TestOverlayUnderlayFailed(t *testing.T) {
	rep := fixedRounds()
	for i := range rep.Scenarios[0].Rounds {
		rd := &rep.Scenarios[0].Rounds[i]
		for _, k := range []string{"tcp1_gbps", "tcp1_machine_s_per_gb", "cost_gbps", "cost_machine_s_per_gb"} {
			delete(rd.Values, k)
		}
		rd.Errors = map[string]string{"tcp1": "tcp test: connect: refused", "cost": "tcp test: connect: refused"}
	}
	rep.summarize()
	var b, svg bytes.Buffer
	if err := rep.WriteTable(&b); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, want := range []string{
		"TCP, 1 stream overlay CPU s/GB failed - - failed",
		"TCP, 4 streams overlay CPU s/GB 0.00 0.00x 0.30 1.00x 5.10 17.00x failed",
		"Paced TCP overlay CPU s/GB failed - - failed",
	} {
		found := false
		for l := range strings.Lines(out) {
			found = found || strings.Join(strings.Fields(l), " ") == want
		}
		if !found {
			t.Errorf("table lacks row %q:\n%s", want, out)
		}
	}
	if err := rep.WriteSVG(&svg); err != nil {
		t.Fatal(err)
	}
	if _, texts := parseSVG(t, svg.Bytes()); !strings.Contains(strings.Join(texts, "\n"), "n/a: no underlay figure") {
		t.Error("SVG does not say why the overlay figure is missing")
	}
}

func TestWriteJSON(t *testing.T) {
	rep := fixedReport()
	var b bytes.Buffer
	if err := rep.WriteJSON(&b); err != nil {
		t.Fatal(err)
	}
	var back Report
	if err := json.Unmarshal(b.Bytes(), &back); err != nil {
		t.Fatalf("unmarshal: %v\n%s", err, b.String())
	}
	if back.Machine != rep.Machine || back.Rounds != 3 || len(back.Scenarios) != 4 || back.CostRate != 1e9 {
		t.Fatalf("round trip lost the header: %+v", back)
	}
	w := back.Scenario("vxrouter-water")
	if w.Median["tcp1_gbps"] != 3 || len(w.Rounds) != 3 || w.Rounds[0].Values["tcp1_gbps"] != 3.5 {
		t.Errorf("water after JSON: median %v, rounds %+v", w.Median, w.Rounds)
	}
	if math.Abs(w.Median["tcp1_overlay_s_per_gb"]-6.9) > 1e-9 || w.Median["tcp1_machine_s_per_gb"] != 8 || w.Median["tcp1_router_s_per_gb"] != 2 {
		t.Errorf("water's CPU figures after JSON: %v", w.Median)
	}
	if math.Abs(w.Median["cost_overlay_s_per_gb"]-18.4) > 1e-9 || w.Median["cost_machine_s_per_gb"] != 19.2 || w.Median["cost_router_s_per_gb"] != 6 || w.Median["cost_gbps"] != 0.8 {
		t.Errorf("water's paced figures after JSON: %v", w.Median)
	}
	// The keys a reader scripts against.
	var raw map[string]any
	json.Unmarshal(b.Bytes(), &raw)
	if raw["cost_rate_bps"] != 1e9 {
		t.Errorf("cost_rate_bps = %v, want 1e9", raw["cost_rate_bps"])
	}
	m := raw["machine"].(map[string]any)
	for _, k := range []string{"nproc", "kernel", "go_version"} {
		if _, ok := m[k]; !ok {
			t.Errorf("machine lacks %q", k)
		}
	}
	off := raw["scenarios"].([]any)[3].(map[string]any)
	if !strings.Contains(off["error"].(string), "node node1 exited") || off["log"] == "" {
		t.Errorf("offload's error or log missing from JSON: %v", off)
	}
}

// svgBar is a <rect class="bar">.
type svgBar struct {
	scenario, metric string
	width            float64
}

func parseSVG(t *testing.T, b []byte) (bars []svgBar, texts []string) {
	t.Helper()
	d := xml.NewDecoder(bytes.NewReader(b))
	d.Strict = true
	root := true
	for {
		tok, err := d.Token()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("SVG is not XML: %v\n%s", err, b)
		}
		switch e := tok.(type) {
		case xml.StartElement:
			if root {
				if e.Name.Local != "svg" || e.Name.Space != "http://www.w3.org/2000/svg" {
					t.Fatalf("root element %v, want svg in the SVG namespace", e.Name)
				}
				root = false
			}
			attr := map[string]string{}
			for _, a := range e.Attr {
				attr[a.Name.Local] = a.Value
			}
			if e.Name.Local == "rect" && attr["class"] == "bar" {
				var w float64
				if err := json.Unmarshal([]byte(attr["width"]), &w); err != nil {
					t.Fatalf("bar width %q: %v", attr["width"], err)
				}
				bars = append(bars, svgBar{attr["data-scenario"], attr["data-metric"], w})
			}
		case xml.CharData:
			if s := strings.TrimSpace(string(e)); s != "" {
				texts = append(texts, s)
			}
		}
	}
	return bars, texts
}

func TestWriteSVG(t *testing.T) {
	rep := fixedReport()
	var b bytes.Buffer
	if err := rep.WriteSVG(&b); err != nil {
		t.Fatal(err)
	}
	bars, texts := parseSVG(t, b.Bytes())
	all := strings.Join(texts, "\n")

	// One bar per scenario and charted figure that has a value, and no
	// other bars.
	want := map[[2]string]bool{}
	for _, m := range Metrics {
		if !m.Chart {
			continue
		}
		for _, s := range rep.Scenarios {
			if _, ok := s.Median[m.Key]; ok {
				want[[2]string{s.Name, m.Key}] = true
			}
		}
	}
	got := map[[2]string]int{}
	widths := map[[2]string]float64{}
	for _, bar := range bars {
		k := [2]string{bar.scenario, bar.metric}
		got[k]++
		widths[k] = bar.width
		if !want[k] {
			t.Errorf("unexpected bar %v", k)
		}
	}
	for k := range want {
		if got[k] != 1 {
			t.Errorf("bar %v appears %d times, want once", k, got[k])
		}
	}
	if len(want) != 8*3 { // 8 charted figures x 3 live scenarios
		t.Errorf("%d bars expected by the fixture, want 24", len(want))
	}
	// The paced test's CPU is charted; the TCP tests' (at saturation)
	// is not.
	for _, key := range []string{"cost_machine_s_per_gb", "cost_overlay_s_per_gb"} {
		if !want[[2]string{"vxrouter-water", key}] {
			t.Errorf("no panel for %s", key)
		}
	}
	for _, bar := range bars {
		if strings.HasPrefix(bar.metric, "tcp") && strings.HasSuffix(bar.metric, "_s_per_gb") {
			t.Errorf("bar %v: the TCP tests' CPU is not charted", bar)
		}
	}
	// Bars are to scale within a panel: water's TCP is 3/13 of underlay's.
	wu, ww := widths[[2]string{"underlay", "tcp1_gbps"}], widths[[2]string{"vxrouter-water", "tcp1_gbps"}]
	if wu != svgBarMax || math.Abs(ww-wu*3/13) > 0.1 {
		t.Errorf("tcp1 bar widths underlay %v water %v, want %v and %v", wu, ww, float64(svgBarMax), wu*3/13)
	}
	// Overlay bars to scale too: kernel-vxlan's is 0.4/18.4 of water's.
	wo, ko := widths[[2]string{"vxrouter-water", "cost_overlay_s_per_gb"}], widths[[2]string{"kernel-vxlan", "cost_overlay_s_per_gb"}]
	if wo != svgBarMax || math.Abs(ko-wo*0.4/18.4) > 0.1 {
		t.Errorf("paced overlay bar widths water %v kernel %v, want %v and %v", wo, ko, float64(svgBarMax), wo*0.4/18.4)
	}
	for _, s := range []string{"3.00 Gbit/s\n0.30x", "0.800 ms\n4.00x", "19.20 s/GB\n16.00x\n*", "18.40 s/GB\n46.00x\n*", "0.00 s/GB\n0.00x",
		"Paced TCP: one stream paced to 1 Gbit/s", "* vxrouter-water fell short of the pace (below 90% of 1 Gbit/s).\nMarked figures were taken at saturation",
		"overlay = machine less the underlay's", "failed", "no overlay <&>", "log: flag provided but not defined: -tun-backend"} {
		if !strings.Contains(all, s) {
			t.Errorf("SVG text lacks %q", s)
		}
	}
}

// Every scenario has a colour of its own in the chart.
func TestSVGColours(t *testing.T) {
	seen := map[string]string{}
	for _, s := range Scenarios() {
		c := svgColours[s.Name]
		if c == "" {
			t.Errorf("%s has no colour", s.Name)
		} else if other, ok := seen[c]; ok {
			t.Errorf("%s and %s share %s", s.Name, other, c)
		}
		seen[c] = s.Name
	}
}

// A scenario a cancelled run never reached is "not run", not "failed".
func TestWriteTableNotRun(t *testing.T) {
	rep := fixedReport()
	rep.Scenarios = append(rep.Scenarios, ScenarioResult{Name: "late", Description: "cancelled before its turn"})
	rep.Scenarios[len(rep.Scenarios)-1].summarize()
	var b, svg bytes.Buffer
	if err := rep.WriteTable(&b); err != nil {
		t.Fatal(err)
	}
	row := strings.Fields(strings.Split(b.String(), "\n")[4])
	if strings.Join(row[len(row)-3:], " ") != "failed not run" {
		t.Errorf("first row %q, want it to end in \"failed not run\"", row)
	}
	if err := rep.WriteSVG(&svg); err != nil {
		t.Fatal(err)
	}
	if _, texts := parseSVG(t, svg.Bytes()); !strings.Contains(strings.Join(texts, "\n"), "not run") {
		t.Error("SVG does not say \"not run\"")
	}
}
