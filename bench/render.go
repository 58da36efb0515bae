package bench

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
)

// format shows a stored value in the metric's unit.
func (m Metric) format(v float64) string {
	return strconv.FormatFloat(v*m.Scale, 'f', m.Digits, 64)
}

// cell is what the table and chart show for one scenario and metric: the
// value, its ratio to the baseline, or why there is none.
type cell struct {
	value, ratio string
	missing      string // "failed", "not run", "-"
	why          string // for the chart, the longer form of a "-"
	// mark flags a value that is not what its row compares: "*" for
	// the cost figures of a scenario that was not at the pace below
	// saturation (see Report.offPace).
	mark string
}

func (r *Report) cell(s *ScenarioResult, m Metric) cell {
	v, ok := s.Median[m.Key]
	if !ok {
		if len(s.Rounds) == 0 {
			return cell{missing: "not run"} // cancelled before its turn
		}
		if m.Process && !s.Failed() {
			if sc, found := LookupScenario(s.Name); found && sc.Kernel {
				return cell{missing: "-", why: "n/a: in the kernel"} // no process to charge
			}
		}
		if _, have := s.Median[m.MinusUnderlay]; m.MinusUnderlay != "" && have {
			// The scenario has its figure; the underlay does not.
			return cell{missing: "-", why: "n/a: no underlay figure"}
		}
		return cell{missing: "failed"}
	}
	c := cell{value: m.format(v)}
	if ratio, ok := r.Ratio(s.Name, m); ok {
		c.ratio = strconv.FormatFloat(ratio, 'f', 2, 64) + "x"
	}
	if m.Test == "cost" {
		short, busy := r.offPace(s)
		// An overlay figure is the underlay's less, and shares its fate.
		if u := r.Scenario(Underlay); m.MinusUnderlay != "" && u != nil {
			us, ub := r.offPace(u)
			short, busy = short || us, busy || ub
		}
		if short || busy {
			c.mark = "*"
		}
	}
	return c
}

// costHeader says, for a header line, how the cost test was paced; empty
// when it did not run.
func (r *Report) costHeader() string {
	if !r.paced() {
		return ""
	}
	by := ""
	if r.Generator != "vxrouter bench" {
		by = " by vxrouter bench" // iperf3 cannot pace a socket this way
	}
	return ", paced TCP at " + FormatRate(float64(r.CostRate)) + by
}

// offPaceNote says, a sentence a line, whose paced figures are marked
// "*" and why; none when every scenario's are at the pace below
// saturation.
func (r *Report) offPaceNote() []string {
	var short, busy []string
	for i := range r.Scenarios {
		s, b := r.offPace(&r.Scenarios[i])
		if s {
			short = append(short, r.Scenarios[i].Name)
		}
		if b {
			busy = append(busy, r.Scenarios[i].Name)
		}
	}
	names := func(ns []string) string {
		if len(ns) == len(r.Scenarios) && len(ns) > 1 {
			return "every scenario"
		}
		return strings.Join(ns, ", ")
	}
	var note []string
	if len(short) > 0 {
		note = append(note, fmt.Sprintf("* %s fell short of the pace (below %.0f%% of %s).",
			names(short), 100*costReached, FormatRate(float64(r.CostRate))))
	}
	if len(busy) > 0 {
		note = append(note, fmt.Sprintf("* %s reached the pace with the machine %.0f%% or more busy.", names(busy), 100*saturated))
	}
	if note == nil {
		return nil
	}
	if slices.Contains(short, Underlay) || slices.Contains(busy, Underlay) {
		note = append(note, "Every overlay figure subtracts the underlay's, so shares its mark.")
	}
	return append(note, "Marked figures were taken at saturation, of the data plane or of the machine, not at equal load below it.")
}

// WriteTable writes the medians as a table for a terminal: a row per
// figure, a column per scenario, each value with its ratio to
// kernel-vxlan; then what each scenario is, and each failure with the
// tail of the nodes' logs.
func (r *Report) WriteTable(w io.Writer) error {
	bw := bufio.NewWriter(w)
	p := func(format string, args ...any) { fmt.Fprintf(bw, format+"\n", args...) }

	p("vxrouter bench: pod to pod, %d CPUs, %s, %s%s", r.Machine.NumCPU, r.Machine.Kernel, r.Machine.GoVersion, r.Machine.congestion())
	p("%gs per throughput test, %d round trips, median of %d round(s), TCP by %s%s; ratio = scenario / %s",
		r.DurationSec, r.RoundTrips, r.Rounds, r.Generator, r.costHeader(), r.Baseline)
	p("")

	metrics := r.shown()
	label := make([]string, len(metrics))
	nw, lw := 0, 0
	for _, m := range metrics {
		nw = max(nw, len(m.Name))
	}
	for i, m := range metrics {
		label[i] = fmt.Sprintf("%-*s  %s", nw, m.Name, m.Unit)
		lw = max(lw, len(label[i]))
	}
	// Each column: values right-aligned to the column's widest, then
	// the ratio.
	cols := make([][]string, len(r.Scenarios))
	widths := make([]int, len(r.Scenarios))
	for j := range r.Scenarios {
		s := &r.Scenarios[j]
		cells := make([]cell, len(metrics))
		vw := 0
		for i, m := range metrics {
			cells[i] = r.cell(s, m)
			vw = max(vw, len(cells[i].value))
		}
		widths[j] = len(s.Name)
		for _, c := range cells {
			t := c.missing
			if t == "" {
				t = fmt.Sprintf("%*s", vw, c.value)
				if c.ratio != "" {
					t += "  " + c.ratio
				}
				if c.mark != "" {
					t += " " + c.mark
				}
			}
			cols[j] = append(cols[j], t)
			widths[j] = max(widths[j], len(t))
		}
	}
	var hdr strings.Builder
	fmt.Fprintf(&hdr, "%-*s", lw, "")
	for j, s := range r.Scenarios {
		fmt.Fprintf(&hdr, "   %-*s", widths[j], s.Name)
	}
	p("%s", strings.TrimRight(hdr.String(), " "))
	for i := range metrics {
		var line strings.Builder
		fmt.Fprintf(&line, "%-*s", lw, label[i])
		for j := range r.Scenarios {
			fmt.Fprintf(&line, "   %-*s", widths[j], cols[j][i])
		}
		p("%s", strings.TrimRight(line.String(), " "))
	}
	p("")
	p("Higher is better for Gbit/s and kpps; lower for loss, round trips and CPU.")
	has := func(f func(Metric) bool) bool { return slices.ContainsFunc(metrics, f) }
	tcp := slices.Contains(r.Tests, "tcp1") || slices.Contains(r.Tests, "tcp4")
	if r.paced() {
		p("Paced TCP: one TCP stream paced to %s (SO_MAX_PACING_RATE) for %gs, the same load in every scenario, below saturation: compare data planes on its CPU rows.",
			FormatRate(float64(r.CostRate)), r.DurationSec)
		if n := r.offPaceNote(); n != nil {
			p("%s", strings.Join(n, " "))
		}
	}
	if tcp {
		instead := "compare data planes on the paced rows instead"
		if !r.paced() {
			instead = "the cost test compares data planes at equal load"
		}
		p("The TCP tests run flat out: on a small machine they saturate it, and their machine and overlay rows are then about NumCPU / throughput, counting whatever else ran; %s.", instead)
	}
	if has(func(m Metric) bool { return strings.HasSuffix(m.Key, "_machine_s_per_gb") }) {
		p("Machine CPU: all CPUs' busy time (/proc/stat: user+nice+system+irq+softirq) over the test per GB received: everything on the box, both traffic ends, the kernel's softirqs, the routers, and anything else that ran.")
		if b := r.busyNote("the TCP tests", "tcp1", "tcp4"); b != nil {
			p("%s", strings.Join(b, " "))
		}
	}
	if has(func(m Metric) bool { return m.MinusUnderlay != "" }) {
		p("Overlay CPU: machine CPU less the underlay's in the same test: what the overlay adds, which travels between machines where the machine was not saturated (-: the underlay has none).")
	}
	if has(func(m Metric) bool { return m.Process }) {
		p("Router CPU: the vxrouter processes' user+system time alone (two nodes; one in the mixed scenarios); the kernel's data planes have no process to charge (-).")
	}
	for _, s := range r.Scenarios {
		p("%-*s %s", lw, s.Name+":", s.Description)
		if len(s.RunArgs) > 0 {
			p("%-*s vxrouter run %s", lw, "", strings.Join(s.RunArgs, " "))
		}
		for _, n := range s.Notes {
			p("%-*s note: %s", lw, "", n)
		}
	}
	for _, s := range r.Scenarios {
		if s.Error == "" {
			continue
		}
		p("")
		what := "had an error"
		if s.Failed() {
			what = "FAILED"
		}
		p("%s %s: %s", s.Name, what, firstLine(s.Error))
		if s.Log != "" {
			for l := range strings.Lines(s.Log) {
				p("    %s", strings.TrimRight(l, "\n"))
			}
		}
	}
	return bw.Flush()
}

// busyNote says how busy the machine was over tests, called what, and,
// when it was saturated, what that means for its CPU per GB; none
// without the raw clocks.
func (r *Report) busyNote(what string, tests ...string) []string {
	lo, hi, ok := r.machineBusy(tests...)
	if !ok {
		return nil
	}
	pct := func(f float64) string { return strconv.FormatFloat(100*f, 'f', 0, 64) }
	busy := pct(lo) + "-" + pct(hi)
	if pct(lo) == pct(hi) {
		busy = pct(hi)
	}
	note := []string{fmt.Sprintf("The machine was busy %s%% of its %d CPUs' time in %s.", busy, r.Machine.NumCPU, what)}
	if hi >= saturated {
		note = append(note, fmt.Sprintf("Where it was saturated (%s%% or more), machine CPU per GB is about %d CPUs / throughput and counts what else ran.",
			pct(saturated), r.Machine.NumCPU))
	}
	return note
}

// saturated is the share of the machine's CPU time above which a test
// counts as having used all of it (ticks of 10 ms leave some slack).
const saturated = 0.95

// WriteJSON writes the whole report: machine, options, every round's raw
// values and the medians.
func (r *Report) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	if err := enc.Encode(r); err != nil {
		return fmt.Errorf("write json report: %w", err)
	}
	return nil
}

// Layout of the chart, in SVG user units (pixels).
const (
	svgWidth   = 820
	svgLabelX  = 150 // right edge of the scenario names
	svgBarX    = 160 // where bars start: the zero of each panel's axis
	svgBarMax  = 420 // the longest bar in a panel
	svgRowH    = 22
	svgBarH    = 15
	svgPanelGT = 26 // panel title to first bar
	svgPanelGB = 14 // after the last bar
)

// Colours of the scenarios' bars, in the order of Scenarios(); the
// baseline's is the strongest.
var svgColours = map[string]string{
	"underlay":           "#9a9a9a",
	"kernel-vxlan":       "#3366aa",
	"vxrouter-water":     "#ee8833",
	"vxrouter-offload":   "#229966",
	"vxrouter-to-kernel": "#8855bb",
	"kernel-to-vxrouter": "#cc4477",
}

// WriteSVG writes a bar chart: a panel per figure, a bar per scenario,
// each labelled with its value and its ratio to kernel-vxlan, with a
// dashed line where kernel-vxlan's bar ends. Each panel has its own
// scale (from zero; the longest bar fills the width), so the bars compare
// scenarios within one figure, never figures with each other.
func (r *Report) WriteSVG(w io.Writer) error {
	var body strings.Builder
	p := func(format string, args ...any) { fmt.Fprintf(&body, format+"\n", args...) }
	y := 30
	p(`<text x="20" y="%d" font-size="17" font-weight="bold">vxrouter bench: pod to pod, %d CPUs, %s</text>`, y,
		r.Machine.NumCPU, esc(r.Machine.Kernel))
	y += 20
	p(`<text x="20" y="%d" font-size="12" fill="#444">%s</text>`, y, esc(fmt.Sprintf(
		"%s%s; %gs per throughput test, %d round trips, median of %d round(s); TCP by %s.",
		r.Machine.GoVersion, r.Machine.congestion(), r.DurationSec, r.RoundTrips, r.Rounds, r.Generator)))
	y += 16
	p(`<text x="20" y="%d" font-size="12" fill="#444">%s</text>`, y, esc(fmt.Sprintf(
		"Each bar is labelled with its value and its ratio to %s (the dashed line). Each panel has its own scale from zero.", r.Baseline)))
	// The charted CPU is the paced test's alone: the TCP tests' is at
	// saturation on a small machine, their throughput inverted.
	if slices.ContainsFunc(r.shown(), func(m Metric) bool { return m.Chart && m.Unit == "s/GB" }) {
		own := ""
		if r.Generator != "vxrouter bench" {
			own = " (the bench's own)"
		}
		lines := []string{
			fmt.Sprintf("Paced TCP%s: one stream paced to %s, the same load in every scenario: compare data planes on its CPU.", own, FormatRate(float64(r.CostRate))),
			"CPU per GB received: machine = all CPUs' busy time (/proc/stat) over the test; overlay = machine less the underlay's.",
		}
		lines = append(lines, r.busyNote("the paced test", "cost")...)
		lines = append(lines, r.offPaceNote()...)
		for _, l := range lines {
			y += 16
			p(`<text x="20" y="%d" font-size="12" fill="#444">%s</text>`, y, esc(l))
		}
	}
	y += 14

	for _, m := range r.shown() {
		if !m.Chart {
			continue
		}
		y += svgPanelGT
		better := "higher is better"
		if !m.HigherBetter {
			better = "lower is better"
		}
		p(`<text x="20" y="%d" font-size="14" font-weight="bold">%s <tspan font-weight="normal" fill="#555">%s, %s</tspan></text>`,
			y-8, esc(m.Name), esc(m.Unit), better)
		maxV := 0.0
		for _, s := range r.Scenarios {
			maxV = max(maxV, s.Median[m.Key])
		}
		top := y
		bottom := y + (len(r.Scenarios)-1)*svgRowH + svgBarH // of the last bar
		// The axis from zero, and the baseline's value as a reference,
		// drawn first so the labels' white halo keeps them readable.
		p(`<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="#333" stroke-width="1"/>`, svgBarX, top-3, svgBarX, bottom+3)
		if b := r.Scenario(r.Baseline); b != nil && maxV > 0 {
			if v, ok := b.Median[m.Key]; ok {
				x := float64(svgBarX) + max(1, v/maxV*svgBarMax)
				p(`<line x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="#3366aa" stroke-width="1" stroke-dasharray="3,3"/>`,
					x, top-3, x, bottom+3)
			}
		}
		const halo = `stroke="white" stroke-width="4" stroke-linejoin="round" paint-order="stroke"`
		for _, s := range r.Scenarios {
			c := r.cell(&s, m)
			p(`<text x="%d" y="%d" font-size="12" text-anchor="end">%s</text>`, svgLabelX, y+svgBarH-3, esc(s.Name))
			if c.missing != "" {
				why, colour := c.missing, "#b03030"
				if c.missing == "-" {
					why, colour = c.why, "#777"
				}
				p(`<text x="%d" y="%d" font-size="12" fill="%s" %s>%s</text>`, svgBarX+6, y+svgBarH-3, colour, halo, esc(why))
				y += svgRowH
				continue
			}
			v := s.Median[m.Key]
			bw := 0.0
			if maxV > 0 {
				bw = max(1, v/maxV*svgBarMax)
			}
			label := c.value + " " + m.Unit
			colour := svgColours[s.Name]
			if colour == "" {
				colour = "#777"
			}
			p(`<rect class="bar" data-scenario="%s" data-metric="%s" x="%d" y="%d" width="%.1f" height="%d" fill="%s"><title>%s, %s: %s %s</title></rect>`,
				esc(s.Name), esc(m.Key), svgBarX, y, bw, svgBarH, colour, esc(s.Name), esc(m.Name), esc(label), esc(c.ratio))
			ratio := ""
			if c.ratio != "" {
				ratio = fmt.Sprintf(`<tspan dx="10" fill="#555">%s</tspan>`, esc(c.ratio))
			}
			if c.mark != "" {
				ratio += fmt.Sprintf(`<tspan dx="6" fill="#b03030">%s</tspan>`, esc(c.mark))
			}
			p(`<text x="%.1f" y="%d" font-size="12" %s>%s%s</text>`, float64(svgBarX)+bw+6, y+svgBarH-3, halo, esc(label), ratio)
			y += svgRowH
		}
		y = bottom + svgPanelGB
	}

	y += 8
	for _, s := range r.Scenarios {
		y += 15
		p(`<text x="20" y="%d" font-size="11" fill="#444">%s: %s</text>`, y, esc(s.Name), esc(s.Description))
		if s.Error != "" {
			y += 15
			e := clip(firstLine(s.Error), 130)
			p(`<text x="40" y="%d" font-size="11" fill="#a33">%s</text>`, y, esc(e))
			if l := lastLine(s.Log); l != "" {
				y += 15
				p(`<text x="40" y="%d" font-size="11" fill="#a33">log: %s</text>`, y, esc(clip(l, 125)))
			}
		}
	}
	y += 16

	bw := bufio.NewWriter(w)
	fmt.Fprintf(bw, `<?xml version="1.0" encoding="UTF-8"?>`+"\n")
	fmt.Fprintf(bw, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="sans-serif">`+"\n",
		svgWidth, y, svgWidth, y)
	fmt.Fprintf(bw, `<rect width="100%%" height="100%%" fill="white"/>`+"\n")
	bw.WriteString(body.String())
	bw.WriteString("</svg>\n")
	return bw.Flush()
}

var xmlEscaper = strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;", `"`, "&quot;", "'", "&apos;")

func esc(s string) string { return xmlEscaper.Replace(s) }

// clip shortens s to at most n bytes, marking the cut.
func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n-3] + "..."
}

// lastLine is the last line of a log that is not a header of lab's.
func lastLine(log string) string {
	lines := strings.Split(strings.TrimSpace(log), "\n")
	for i := len(lines) - 1; i >= 0; i-- {
		if l := strings.TrimSpace(lines[i]); l != "" && !strings.HasPrefix(l, "---") {
			return l
		}
	}
	return ""
}

// congestion names the TCP congestion control for a header line, or is
// empty when it is not known.
func (m Machine) congestion() string {
	if m.TCPCongestion == "" {
		return ""
	}
	return ", TCP congestion control " + m.TCPCongestion
}
