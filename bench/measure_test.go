package bench

import (
	"context"
	"testing"
	"time"
)

// underlay builds the underlay scenario for a test.
func underlay(t *testing.T) *Topology {
	t.Helper()
	needRoot(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	s, _ := LookupScenario("underlay")
	topo, err := s.Build(ctx, Env{Prefix: testPrefix(t), Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := topo.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
	})
	if topo.Client == nil || topo.Server == nil || len(topo.Pids) != 0 {
		t.Fatalf("underlay topology: client %v server %v pids %v", topo.Client, topo.Server, topo.Pids)
	}
	return topo
}

// TestGenerator runs the bench's own traffic generator over the bare
// underlay, pod to pod.
func TestGenerator(t *testing.T) {
	topo := underlay(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	const d = 500 * time.Millisecond

	for _, streams := range []int{1, 4} {
		r, err := MeasureTCP(ctx, topo.Client, topo.Server, streams, d)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("tcp %d streams: %d bytes in %s, %.2f Gbit/s", streams, r.Received, r.Elapsed, r.Gbps())
		if r.Sent <= 0 || r.Sent != r.Received {
			t.Errorf("tcp %d streams: sent %d, server received %d; want equal and > 0", streams, r.Sent, r.Received)
		}
		if r.Elapsed < d || r.Elapsed > d+5*time.Second || r.Gbps() <= 0 {
			t.Errorf("tcp %d streams: elapsed %s, %.3f Gbit/s", streams, r.Elapsed, r.Gbps())
		}
	}

	for _, size := range []int{64, 1400} {
		r, err := MeasureUDP(ctx, topo.Client, topo.Server, size, d)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("udp %d B: sent %d, received %d, %.0f pps, %.1f%% lost", size, r.Sent, r.Received, r.PPS(), r.LossPct())
		if r.PPS() <= 0 || r.Received > r.Sent || r.Elapsed < d {
			t.Errorf("udp %d B: %+v", size, r)
		}
	}

	r, err := MeasureLatency(ctx, topo.Client, topo.Server, 300)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("latency: %+v", r)
	if r.P50 <= 0 || r.P99 <= 0 || r.P50 > r.P99 || r.Min > r.P50 || r.P99 > r.Max || r.Count+r.Lost != 300 {
		t.Errorf("latency: %+v", r)
	}
}

// TestGeneratorCancel: a cancelled context ends a test at once.
func TestGeneratorCancel(t *testing.T) {
	topo := underlay(t)
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	t0 := time.Now()
	_, err := MeasureTCP(ctx, topo.Client, topo.Server, 2, 30*time.Second)
	if err == nil || time.Since(t0) > 5*time.Second {
		t.Errorf("tcp with a cancelled context: %v after %s", err, time.Since(t0))
	}
	t0 = time.Now()
	_, err = MeasureUDP(ctx, topo.Client, topo.Server, 64, 30*time.Second)
	if time.Since(t0) > 5*time.Second {
		t.Errorf("udp with a cancelled context ran %s (%v)", time.Since(t0), err)
	}
}

// TestIPerf3 cross-checks with iperf3 where it is installed.
func TestIPerf3(t *testing.T) {
	if !HaveIPerf3() {
		t.Skip("iperf3 is not installed")
	}
	topo := underlay(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	r, err := IPerf3TCP(ctx, topo.Client, topo.Server, 2, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("iperf3: %+v, %.2f Gbit/s", r, r.Gbps())
	if r.Received <= 0 || r.Gbps() <= 0 || r.Elapsed < 900*time.Millisecond {
		t.Errorf("iperf3: %+v", r)
	}
}

// TestPacedTCP: a stream paced to 200 Mbit/s does not go faster, over an
// underlay that carries ten times that and more flat out. Only the upper
// bound is strict: a loaded machine can make the stream slower than its
// pace, never faster. The lower bound only catches a stream that hardly
// moved at all.
func TestPacedTCP(t *testing.T) {
	topo := underlay(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	const rate = 200e6
	r, err := MeasurePacedTCP(ctx, topo.Client, topo.Server, rate, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	got := r.Gbps() * 1e9
	t.Logf("paced to %.0f Mbit/s: %d bytes in %s, %.1f Mbit/s (%.3f of the rate), kernel's cap %d bit/s",
		rate/1e6, r.Received, r.Elapsed, got/1e6, got/rate, r.MaxPacingRate)
	if r.MaxPacingRate != rate {
		t.Errorf("TCP_INFO max pacing rate %d bit/s, want %d", r.MaxPacingRate, uint64(rate))
	}
	if got > 1.2*rate {
		t.Errorf("paced to %.0f Mbit/s, moved %.1f Mbit/s: more than 20%% over", rate/1e6, got/1e6)
	}
	if got < rate/4 {
		t.Errorf("paced to %.0f Mbit/s, moved %.1f Mbit/s", rate/1e6, got/1e6)
	}
}
