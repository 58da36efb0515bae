package bench

import (
	"bytes"
	"context"
	"errors"
	"math"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestRunQuick is the CI smoke: every scenario (the mixed ones with a
// kernel-vxlan node too), every test, --quick. Each must be in the
// report with every figure, or with its error, never silently missing.
func TestRunQuick(t *testing.T) {
	needRoot(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	rep, err := Run(ctx, Options{
		Quick:  true,
		Binary: vxrBinary,
		Prefix: testPrefix(t),
	}, testWriter{t})
	if err != nil {
		t.Fatal(err)
	}
	var table bytes.Buffer
	if err := rep.WriteTable(&table); err != nil {
		t.Fatal(err)
	}
	t.Logf("\n%s", table.String())

	if len(rep.Scenarios) != len(Scenarios()) || rep.Machine.NumCPU < 1 || rep.Machine.Kernel == "" || rep.Rounds != 1 || rep.CostRate != DefaultCostRate {
		t.Fatalf("report header: %+v", rep)
	}
	under := rep.Scenario(Underlay)
	for _, s := range rep.Scenarios {
		if len(s.Rounds) != 1 {
			t.Errorf("%s: %d rounds, want 1", s.Name, len(s.Rounds))
		}
		if s.Error != "" {
			t.Errorf("%s: %s\n%s", s.Name, s.Error, s.Log)
		}
		sc, _ := LookupScenario(s.Name)
		for _, m := range Metrics {
			v, ok := s.Median[m.Key]
			switch {
			case m.Process && sc.Kernel:
				if ok {
					t.Errorf("%s has a router figure %s = %v", s.Name, m.Key, v)
				}
			case m.MinusUnderlay != "":
				// Noise may put a cheap overlay below zero; the figure
				// must be the difference, and the underlay's zero.
				want := s.Median[m.MinusUnderlay] - under.Median[m.MinusUnderlay]
				if !ok || v != want || s.Name == Underlay && v != 0 {
					t.Errorf("%s %s = %v (present %v), want %v", s.Name, m.Key, v, ok, want)
				}
			case m.Unit == "s/GB":
				// Moving a GB costs some CPU, on the machine and in
				// a router.
				if !ok || v <= 0 {
					t.Errorf("%s %s = %v (present %v)", s.Name, m.Key, v, ok)
				}
			default:
				if !ok || v < 0 || (m.HigherBetter && v == 0) {
					t.Errorf("%s %s = %v (present %v)", s.Name, m.Key, v, ok)
				}
			}
		}
		// The raw clocks: the machine's busy time fits in the window on
		// all CPUs, and holds the routers' (a tick per CPU of slack at
		// each end: both clocks count in USER_HZ ticks).
		slack := 2 * float64(rep.Machine.NumCPU) / userHZ
		for _, test := range []string{"tcp1", "tcp4", "cost"} {
			for _, rd := range s.Rounds {
				busy, window := rd.Values[test+"_machine_busy_s"], rd.Values[test+"_cpu_window_s"]
				router, hasRouter := rd.Values[test+"_router_cpu_s"]
				if busy <= 0 || window <= 0 || busy > window*float64(rep.Machine.NumCPU)+slack {
					t.Errorf("%s %s: machine busy %.2f s in a window of %.2f s on %d CPUs", s.Name, test, busy, window, rep.Machine.NumCPU)
				}
				if pct, want := rd.Values[test+"_machine_busy_pct"], 100*busy/(window*float64(rep.Machine.NumCPU)); math.Abs(pct-want) > 1e-9 {
					t.Errorf("%s %s: machine busy %.1f%%, want %.1f%%", s.Name, test, pct, want)
				}
				if hasRouter == sc.Kernel || hasRouter && (router <= 0 || router > busy+slack) {
					t.Errorf("%s %s: routers' CPU %.2f s (present %v), machine busy %.2f s", s.Name, test, router, hasRouter, busy)
				}
			}
		}
		// The paced stream never beats its pace by much (a loaded
		// machine may keep it below; the table then says so).
		if g := s.Median["cost_gbps"]; g*1e9 > 1.2*float64(rep.CostRate) {
			t.Errorf("%s: paced to %d bit/s, moved %.3f Gbit/s", s.Name, rep.CostRate, g)
		}
		if s.Median["rtt_p50_us"] > s.Median["rtt_p99_us"] {
			t.Errorf("%s: p50 %v > p99 %v", s.Name, s.Median["rtt_p50_us"], s.Median["rtt_p99_us"])
		}
	}
	if _, ok := rep.Ratio("vxrouter-water", Metrics[0]); !ok {
		t.Error("no ratio of water's TCP to kernel-vxlan")
	}
	var svg, js bytes.Buffer
	if err := rep.WriteSVG(&svg); err != nil {
		t.Fatal(err)
	}
	parseSVG(t, svg.Bytes())
	if err := rep.WriteJSON(&js); err != nil {
		t.Fatal(err)
	}
}

// TestRunCancel: cancelling mid-test ends Run promptly with the context's
// error and removes everything (testPrefix checks the namespaces).
func TestRunCancel(t *testing.T) {
	needRoot(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var progress syncBuffer
	done := make(chan struct{})
	var (
		rep *Report
		err error
	)
	go func() {
		defer close(done)
		rep, err = Run(ctx, Options{
			Scenarios: []string{"vxrouter-water", "underlay"},
			Tests:     []string{"tcp1"},
			Duration:  time.Minute,
			Binary:    vxrBinary,
			Prefix:    testPrefix(t),
		}, &progress)
	}()
	// Cancel once the first test is under way.
	deadline := time.Now().Add(time.Minute)
	for !strings.Contains(progress.String(), " up in ") && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	time.Sleep(500 * time.Millisecond)
	t0 := time.Now()
	cancel()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		t.Fatal("Run did not return within 20s of cancel")
	}
	t.Logf("returned %s after cancel: %v\n%s", time.Since(t0), err, progress.String())
	if !errors.Is(err, context.Canceled) || rep == nil {
		t.Errorf("Run after cancel: %v, report %v; want context.Canceled and a partial report", err, rep != nil)
	}
}

// syncBuffer is a bytes.Buffer that Run writes to while the test reads.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
