package bench

import (
	"math"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"
)

func TestParseStatCPU(t *testing.T) {
	// A command name with a space and a ")" in it; utime 250, stime 50.
	stat := "1234 (vx router) x) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 8 0 100 0 0"
	got, err := parseStatCPU(stat)
	if err != nil || got != 3.0 {
		t.Errorf("parseStatCPU = %v, %v; want 3.0 s", got, err)
	}
	for _, bad := range []string{"", "1234 (x) S 1 2", "1 (x) S 1 1 1 0 -1 0 0 0 0 0 abc 5 0"} {
		if _, err := parseStatCPU(bad); err == nil {
			t.Errorf("parseStatCPU(%q): no error", bad)
		}
	}
}

func TestCPUSecondsSelf(t *testing.T) {
	// Burn CPU until the clock in /proc/self/stat has moved 50 ms: on a
	// loaded machine that takes longer than 50 ms of wall time, never
	// less, and never more than the wall time times the CPUs.
	before, err := cpuSeconds([]int{os.Getpid()})
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	after := before
	for x := 0; after-before < 0.05; x++ {
		if time.Since(start) > 20*time.Second {
			t.Fatalf("20 s of spinning read as %.2f s of CPU (%d loops)", after-before, x)
		}
		if x%100000 == 0 {
			if after, err = cpuSeconds([]int{os.Getpid()}); err != nil {
				t.Fatal(err)
			}
		}
	}
	// Ticks of 10 ms on both readings.
	if wall := time.Since(start).Seconds(); after-before > wall*float64(runtime.NumCPU())+0.02 {
		t.Errorf("%.3f s of wall time read as %.2f s of CPU", wall, after-before)
	}
	if _, err := cpuSeconds([]int{1 << 30}); err == nil {
		t.Error("no error for a pid that does not exist")
	}
}

func TestPercentile(t *testing.T) {
	ds := make([]time.Duration, 100)
	for i := range ds {
		ds[i] = time.Duration(i+1) * time.Microsecond
	}
	if p := percentile(ds, 50); p != 50*time.Microsecond {
		t.Errorf("p50 of 1..100 µs = %v", p)
	}
	if p := percentile(ds, 99); p != 99*time.Microsecond {
		t.Errorf("p99 of 1..100 µs = %v", p)
	}
	one := []time.Duration{7}
	if percentile(one, 50) != 7 || percentile(one, 99) != 7 {
		t.Error("percentiles of one value")
	}
}

func TestParseIPerf3(t *testing.T) {
	out := `{"start":{},"intervals":[],"end":{"streams":[],
	  "sum_sent":{"start":0,"end":5.0,"seconds":5.0,"bytes":6250000000,"bits_per_second":1e10,"retransmits":3,"sender":true},
	  "sum_received":{"start":0,"end":5.04,"seconds":5.0,"bytes":6249000000,"bits_per_second":9.9984e9,"sender":true}}}`
	s, err := parseIPerf3([]byte(out))
	if err != nil {
		t.Fatal(err)
	}
	r := TCPResult{Sent: s.sent, Received: s.received, Elapsed: s.elapsed}
	if r.Sent != 6250000000 || r.Received != 6249000000 || r.Elapsed != 5*time.Second {
		t.Errorf("parsed %+v", r)
	}
	if g := r.Gbps(); g < 9.99 || g > 10.0 {
		t.Errorf("Gbps = %v, want 9.998", g)
	}
	s, err = parseIPerf3([]byte(`{"start":{},"end":{},"error":"unable to connect to server: Connection refused"}`))
	if err == nil || !strings.Contains(s.errMsg, "connect") {
		t.Errorf("error output: %+v, %v", s, err)
	}
	if _, err := parseIPerf3([]byte("iperf3: error")); err == nil {
		t.Error("no error for output that is not JSON")
	}
}

func TestOptionsDefaults(t *testing.T) {
	o := Options{Quick: true, Binary: "/bin/true"}
	if err := o.setDefaults(); err != nil {
		t.Fatal(err)
	}
	if o.Duration != QuickDuration || o.RoundTrips != QuickRoundTrips || o.Rounds != 1 || len(o.Scenarios) != len(Scenarios()) || len(o.Tests) != 6 || o.CostRate != DefaultCostRate {
		t.Errorf("quick defaults: %+v", o)
	}
	o = Options{Tests: []string{"latency", "tcp1"}, Scenarios: []string{"underlay"}}
	if err := o.setDefaults(); err != nil {
		t.Fatal(err)
	}
	if strings.Join(o.Tests, ",") != "tcp1,latency" || o.Duration != DefaultDuration || o.Binary != "" {
		t.Errorf("tests %v (want canonical order), duration %s, binary %q (kernel scenarios need none)", o.Tests, o.Duration, o.Binary)
	}
	for _, bad := range []Options{
		{Scenarios: []string{"flannel-udp"}},
		{Tests: []string{"tcp2"}},
		{Duration: time.Millisecond},
		{Rounds: -1},
		{RoundTrips: 3},
		{CostRate: MinCostRate - 1},
		{CostRate: MaxCostRate + 1},
	} {
		if err := bad.setDefaults(); err == nil {
			t.Errorf("options %+v: no error", bad)
		}
	}
}

func TestDataPlaneNotes(t *testing.T) {
	log := `time=x level=INFO msg=underlay iface=eth0
time=x level=INFO msg="data plane" tun-backend=water queues=1 udp-gso=true udp-gro=true
time=x level=INFO msg="tun up" dev=vxr0`
	got := dataPlaneNotes("node1", log, []string{"--tun-backend", "offload"})
	if len(got) != 2 || got[0] != "node1: tun-backend=water queues=1 udp-gso=true udp-gro=true" || !strings.Contains(got[1], "WARNING: asked for tun-backend=offload") {
		t.Errorf("fallen back: %q", got)
	}
	if got := dataPlaneNotes("node1", log, []string{"--tun-backend", "water"}); len(got) != 1 {
		t.Errorf("as asked: %q", got)
	}
	if got := dataPlaneNotes("node1", "no such line", nil); got != nil {
		t.Errorf("no data plane line: %q", got)
	}
}

func TestParseProcStatBusy(t *testing.T) {
	// A 2-CPU machine's /proc/stat (trimmed intr line). Aggregate: user
	// 74698, nice 5, system 48190, idle 241560 (out), iowait 886 (out),
	// irq 3, softirq 20865, steal 110 (out), guest 7 and guest_nice 1
	// (out: already inside user and nice).
	stat := `cpu  74698 5 48190 241560 886 3 20865 110 7 1
cpu0 36354 0 23737 122247 141 0 10742 54 0 0
cpu1 38344 5 24452 119312 745 3 10123 55 7 1
intr 10131734 0 0 0
ctxt 22306958
btime 1764120000
processes 41234
procs_running 3
procs_blocked 0
softirq 9812734 0 2412341 12 1823412 0 0 21 3412341 0 1234
`
	const want = (74698 + 5 + 48190 + 3 + 20865) / 100.0
	got, err := parseProcStatBusy(stat)
	if err != nil || math.Abs(got-want) > 1e-9 {
		t.Errorf("parseProcStatBusy = %v, %v; want %v s", got, err, want)
	}
	// An old kernel's line of seven fields is enough.
	if got, err := parseProcStatBusy("cpu 100 0 50 900 0 0 25\n"); err != nil || got != 1.75 {
		t.Errorf("seven fields: %v, %v; want 1.75 s", got, err)
	}
	for _, bad := range []string{
		"",
		"cpu0 36354 0 23737 122247 141 0 10742 54 0 0\n", // per-CPU lines only
		"cpu 100 0 50 900 0 0\n",                         // six fields
		"cpu 100 0 x 900 0 0 25 0 0 0\n",                 // system not a number
		"cpu 100 0 50 900 0 0 -25 0 0 0\n",               // negative softirq
		"softirq 9812734 0 2412341\n",
	} {
		if got, err := parseProcStatBusy(bad); err == nil {
			t.Errorf("parseProcStatBusy(%q) = %v, no error", bad, got)
		}
	}
}

func TestMachineBusySelf(t *testing.T) {
	// 100 ms of spinning is at least that much busy time on the machine,
	// and no window can hold more than NumCPU times its length (plus a
	// tick per CPU at each end).
	t0 := time.Now()
	before, err := machineBusySeconds()
	if err != nil {
		t.Fatal(err)
	}
	end := time.Now().Add(100 * time.Millisecond)
	x := 0
	for time.Now().Before(end) {
		x++
	}
	after, err := machineBusySeconds()
	if err != nil {
		t.Fatal(err)
	}
	window := time.Since(t0).Seconds()
	ncpu := float64(runtime.NumCPU())
	if busy := after - before; busy < 0.07 || busy > window*ncpu+2*ncpu/userHZ {
		t.Errorf("100 ms of spinning in %.3f s on %v CPUs read as %.2f s of machine busy time (%d loops)", window, ncpu, busy, x)
	}
}
