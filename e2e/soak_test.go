package e2e

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"vxrouter/lab"
	"vxrouter/lease"
)

// The soak: traffic keeps flowing between long-lived nodes while other
// nodes join, leave, restart and crash every few seconds and etcd
// restarts now and then; every node's goroutines, heap, resident memory
// and open files are sampled, and the test fails if any long-lived
// node's keep growing.
//
//	go test ./e2e -run Soak                                  # 60 s, as CI runs it
//	VXROUTER_SOAK=30m go test ./e2e -run Soak -timeout 40m -v  # the long one
//
// -v prints the figures (start, end, peak of each, per node). The one
// minute CI runs catches what grows with time (a goroutine per request, a
// file per renewal); what leaks a little per peer change or per etcd
// restart needs the long run's hundreds of them to show.

// soakPlan is how often each thing happens. The long run samples less
// often: the shape of a leak shows over minutes, not seconds.
type soakPlan struct {
	duration    time.Duration
	churnEvery  time.Duration // one churn node joins, leaves, restarts or crashes
	etcdEvery   time.Duration // etcd stops (for etcdDown) and starts again
	etcdDown    time.Duration
	sampleEvery time.Duration
	trafficGap  time.Duration // between traffic rounds: a steady trickle, not a benchmark
}

func soakPlanFor(d time.Duration) soakPlan {
	p := soakPlan{duration: d, churnEvery: 3 * time.Second, etcdEvery: 20 * time.Second, etcdDown: 3 * time.Second, sampleEvery: 2 * time.Second, trafficGap: 200 * time.Millisecond}
	if d > 5*time.Minute {
		p.etcdEvery, p.sampleEvery = time.Minute, 10*time.Second
	}
	return p
}

// soakMetrics are what is sampled: the first three the node reports on
// /metrics (the heap as allocated now, and as found live by the last
// collection, which Go runs at least every two minutes), the last two
// read from /proc/<pid> (as the kernel sees it).
var soakMetrics = []struct {
	name string
	// slack is how far the last third's lowest sample may sit above the
	// first third's highest before it counts as growing: an absolute
	// amount, or a fraction of the first third's highest, whichever is
	// more. Goroutines come and go with etcd's connections and the
	// sampler's own requests; the heap and RSS breathe with the GC.
	abs  float64
	rel  float64
	unit string
}{
	{"goroutines", 5, 0.1, ""},
	{"heap", 4 << 20, 0.25, "MiB"},
	{"heap-live", 4 << 20, 0.25, "MiB"},
	{"rss", 16 << 20, 0.25, "MiB"},
	{"fds", 4, 0.1, ""},
}

// soakSample is one node's figures at one time, in soakMetrics' order.
type soakSample [5]float64

// TestSoak: see the comment above. The long-lived nodes s1..s3 carry
// TCP and UDP between their pods all along; c1..c3 cycle through
// restart, leave (stop, and the key released), crash (SIGKILL, leaving
// its admin socket behind) and join again, one every few seconds, each
// join checked by a ping from s1's pod; etcd restarts now and then.
func TestSoak(t *testing.T) {
	d := 60 * time.Second
	if s := os.Getenv("VXROUTER_SOAK"); s != "" {
		var err error
		if d, err = time.ParseDuration(s); err != nil || d < 30*time.Second {
			t.Fatalf("VXROUTER_SOAK=%q: want a duration of 30s or more, e.g. 30m", s)
		}
	}
	if testing.Short() {
		t.Skip("-short: the soak runs a minute at least")
	}
	plan := soakPlanFor(d)
	o := newOverlayWithin(t, network16, d+5*time.Minute)

	type member struct {
		name string
		host *lab.Host
		node *lab.Node
		pod  *lab.Pod
		sub  netip.Prefix
	}
	startMember := func(name string) *member {
		m := &member{name: name, host: o.host(name)}
		var env lease.SubnetEnv
		m.node, env = o.start(m.host)
		m.sub = env.Subnet.Masked()
		m.pod = o.pod(m.host, m.sub)
		return m
	}
	var stable, churn []*member
	for _, name := range []string{"s1", "s2", "s3"} {
		stable = append(stable, startMember(name))
	}
	for _, name := range []string{"c1", "c2", "c3"} {
		churn = append(churn, startMember(name))
	}
	for i, m := range stable {
		o.mustCarry(m.pod, stable[(i+1)%len(stable)].pod)
	}

	// Sampling, of every node: the stable ones are judged, the churn
	// ones (a few seconds a life) only reported.
	var mu sync.Mutex // guards churn[i].node and samples
	samples := map[string][]soakSample{}
	peaks := map[string]soakSample{}
	sample := func() {
		mu.Lock()
		nodes := map[string]*lab.Node{}
		for _, m := range append(slices.Clone(stable), churn...) {
			if m.node != nil {
				nodes[m.name] = m.node
			}
		}
		mu.Unlock()
		for name, n := range nodes {
			s, err := sampleNode(o.ctx, n)
			isStable := name[0] == 's'
			if err != nil {
				if isStable {
					t.Errorf("sample %s: %v", name, err)
				}
				continue // a churn node between lives
			}
			mu.Lock()
			if isStable {
				samples[name] = append(samples[name], s)
			}
			p := peaks[name]
			for i := range s {
				p[i] = max(p[i], s[i])
			}
			peaks[name] = p
			mu.Unlock()
		}
	}
	// The sampler and the traffic stop before the overlay goes, also
	// when the test fails half-way.
	bg, stopBG := context.WithCancel(o.ctx)
	var wg sync.WaitGroup
	t.Cleanup(func() {
		stopBG()
		wg.Wait()
	})
	sample()
	wg.Add(1)
	go func() {
		defer wg.Done()
		tick := time.NewTicker(plan.sampleEvery)
		defer tick.Stop()
		for {
			select {
			case <-bg.Done():
				return
			case <-tick.C:
				sample()
			}
		}
	}()

	// Traffic, all along: TCP around the ring of stable pods, UDP back.
	type trafficResult struct {
		rounds, tcpBytes, udpSent, udpGot int
		errs                              []string
	}
	var traffic trafficResult // the traffic goroutine's until wg.Wait
	wg.Add(1)
	go func() {
		defer wg.Done()
		r := &traffic
		const tcpSize, udpCount = 256 << 10, 64
		round := func(i int) error {
			from, to := stable[i%3].pod, stable[(i+1)%3].pod
			if _, err := from.TCPTo(bg, to, 5201, tcpSize); err != nil {
				return err
			}
			r.tcpBytes += tcpSize
			got, err := to.UDPTo(bg, from, 5202, udpCount, 1000)
			if err != nil {
				return err
			}
			r.udpSent += udpCount
			r.udpGot += got
			if got == 0 {
				return fmt.Errorf("udp %s -> %s: none of %d datagrams arrived", to.Addr, from.Addr, udpCount)
			}
			return nil
		}
		for i := 0; ; i++ {
			err := round(i)
			if bg.Err() != nil {
				return
			}
			if err != nil {
				r.errs = append(r.errs, fmt.Sprintf("%s: %v", time.Now().Format(time.TimeOnly), err))
			} else {
				r.rounds++
			}
			select {
			case <-bg.Done():
				return
			case <-time.After(plan.trafficGap):
			}
		}
	}()

	// Churn and etcd restarts, one thing at a time, until the end.
	counts := map[string]int{}
	actions := []string{"restart", "leave", "crash"}
	done := map[string]string{"restart": "restarts", "leave": "leaves", "crash": "crashes"}
	next := make([]int, len(churn)) // each churn node's next action
	start := time.Now()
	lastEtcd := start
	for tick := 0; time.Since(start) < plan.duration; tick++ {
		if time.Since(lastEtcd) >= plan.etcdEvery && time.Since(start)+plan.etcdDown < plan.duration {
			o.stopEtcd()
			time.Sleep(plan.etcdDown)
			o.startEtcd()
			lastEtcd = time.Now()
			counts["etcd restarts"]++
		}
		m := churn[tick%len(churn)]
		if m.node == nil {
			o.soakJoin(m.host, &mu, &m.node)
			if err := stable[0].pod.WaitReachable(o.ctx, m.pod.Addr, 20*time.Second); err != nil {
				t.Fatalf("after %s joined: %v", m.name, err)
			}
			counts["joins"]++
		} else {
			action := actions[next[tick%len(churn)]%len(actions)]
			next[tick%len(churn)]++
			n := m.node
			mu.Lock()
			m.node = nil
			mu.Unlock()
			switch action {
			case "restart":
				o.stop(n)
				o.soakJoin(m.host, &mu, &m.node)
				if err := stable[0].pod.WaitReachable(o.ctx, m.pod.Addr, 20*time.Second); err != nil {
					t.Fatalf("after %s restarted: %v", m.name, err)
				}
			case "leave":
				o.stop(n)
				if _, err := o.cli.Delete(o.ctx, o.reg.Key(m.sub)); err != nil {
					t.Fatal(err)
				}
				o.within(20*time.Second, "s1 drops "+m.name+"'s route", func() error {
					if ok, err := knows(o.ctx, stable[0].node, m.sub); err != nil || ok {
						return fmt.Errorf("s1 still routes %s (%v)", m.sub, err)
					}
					return nil
				})
			case "crash":
				o.kill(n)
			}
			counts[done[action]]++
		}
		for _, s := range stable {
			o.alive(s.node)
		}
		time.Sleep(plan.churnEvery)
	}
	stopBG()
	wg.Wait()
	sample()
	elapsed := time.Since(start)

	// What happened, and the figures.
	t.Logf("soak %s: %v; traffic %d rounds, %d MB of TCP, %d of %d UDP datagrams",
		elapsed.Round(time.Second), counts, traffic.rounds, traffic.tcpBytes>>20, traffic.udpGot, traffic.udpSent)
	var report strings.Builder
	// The last two columns are what is judged: the first third's
	// highest, the last third's lowest.
	fmt.Fprintf(&report, "%-5s %-10s %10s %10s %10s %12s %12s\n", "node", "metric", "start", "end", "peak", "1st 3rd max", "last 3rd min")
	mu.Lock()
	defer mu.Unlock()
	names := make([]string, 0, len(peaks))
	for name := range peaks {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		ss := samples[name]
		for i, m := range soakMetrics {
			first, last, firstMax, lastMin := "-", "-", "-", "-"
			if third := len(ss) / 3; third > 0 {
				xs := column(ss, i)
				first, last = soakFigure(xs[0], m.unit), soakFigure(xs[len(xs)-1], m.unit)
				firstMax, lastMin = soakFigure(slices.Max(xs[:third]), m.unit), soakFigure(slices.Min(xs[len(xs)-third:]), m.unit)
			}
			fmt.Fprintf(&report, "%-5s %-10s %10s %10s %10s %12s %12s\n", name, m.name, first, last, soakFigure(peaks[name][i], m.unit), firstMax, lastMin)
		}
	}
	t.Logf("samples every %s; churn nodes (c*) are only reported, each life lasting seconds:\n%s", plan.sampleEvery, report.String())
	if testing.Verbose() {
		// The path, not only its ends: each tenth of the run's highest.
		var path strings.Builder
		for _, s := range stable {
			ss := samples[s.name]
			if len(ss) < 10 {
				continue
			}
			for i, m := range soakMetrics {
				xs := column(ss, i)
				fmt.Fprintf(&path, "%-5s %-10s", s.name, m.name)
				for k := range 10 {
					fmt.Fprintf(&path, " %9s", soakFigure(slices.Max(xs[k*len(xs)/10:(k+1)*len(xs)/10]), m.unit))
				}
				path.WriteByte('\n')
			}
		}
		t.Logf("each tenth's highest:\n%s", path.String())
	}

	for _, e := range traffic.errs {
		t.Errorf("traffic: %s", e)
	}
	if traffic.rounds < 3 {
		t.Errorf("only %d traffic rounds in %s", traffic.rounds, elapsed)
	}
	for _, s := range stable {
		ss := samples[s.name]
		if len(ss) < 9 {
			t.Errorf("%s: %d samples, too few to judge", s.name, len(ss))
			continue
		}
		for i, m := range soakMetrics {
			if grows, why := soakGrowing(column(ss, i), m.abs, m.rel); grows {
				t.Errorf("%s: %s keeps growing: %s", s.name, m.name, why)
			}
		}
	}
}

// soakJoin starts a node on h again (its subnet.env is there, so start
// returns at once) and waits for it to answer on its admin socket.
func (o *overlay) soakJoin(h *lab.Host, mu *sync.Mutex, slot **lab.Node) {
	o.t.Helper()
	n, _ := o.start(h)
	o.within(20*time.Second, h.Name+" answers on its admin socket", func() error {
		_, err := n.Peers(o.ctx)
		return err
	})
	mu.Lock()
	*slot = n
	mu.Unlock()
}

// soakGrowing reports whether a series keeps growing: the lowest sample
// of its last third sits above the highest of its first third by more
// than the slack (abs, or rel of that highest, whichever is more). A
// single spike does not count, nor does a series that rises and settles
// within the first third (warming up); one that climbs all along does.
func soakGrowing(xs []float64, abs, rel float64) (bool, string) {
	third := len(xs) / 3
	firstMax := slices.Max(xs[:third])
	lastMin := slices.Min(xs[len(xs)-third:])
	slack := max(abs, rel*firstMax)
	why := fmt.Sprintf("lowest of the last third %.0f, highest of the first third %.0f, slack %.0f", lastMin, firstMax, slack)
	return lastMin > firstMax+slack, why
}

func column(ss []soakSample, i int) []float64 {
	out := make([]float64, len(ss))
	for j, s := range ss {
		out[j] = s[i]
	}
	return out
}

func soakFigure(v float64, unit string) string {
	if unit == "MiB" {
		return strconv.FormatFloat(v/(1<<20), 'f', 1, 64) + " MiB"
	}
	return strconv.FormatFloat(v, 'f', 0, 64)
}

// sampleNode reads a node's goroutines and live heap from its /metrics,
// and its resident memory and open files from /proc.
func sampleNode(ctx context.Context, n *lab.Node) (soakSample, error) {
	var s soakSample
	m, err := adminMetrics(ctx, n.AdminSocket)
	if err != nil {
		return s, err
	}
	for i, name := range []string{"go_goroutines", "go_memstats_heap_alloc_bytes", "go_gc_heap_live_bytes"} {
		var ok bool
		if s[i], ok = m[name]; !ok {
			return s, fmt.Errorf("no %s in /metrics", name)
		}
	}
	pid := n.Pid()
	// The process is vxrouter itself (`ip netns exec` execs it).
	if comm, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid)); err != nil || strings.TrimSpace(string(comm)) != "vxrouter" {
		return s, fmt.Errorf("/proc/%d is %q, not vxrouter (%v)", pid, comm, err)
	}
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return s, err
	}
	for _, line := range strings.Split(string(status), "\n") {
		if v, found := strings.CutPrefix(line, "VmRSS:"); found {
			kb, err := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 64)
			if err != nil {
				return s, fmt.Errorf("/proc/%d/status: %q", pid, line)
			}
			s[3] = kb * 1024
		}
	}
	fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		return s, err
	}
	s[4] = float64(len(fds))
	return s, nil
}

// adminMetrics GETs /metrics from the admin socket and returns its
// unlabelled samples.
func adminMetrics(ctx context.Context, sock string) (map[string]float64, error) {
	tr := &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", sock)
	}}
	defer tr.CloseIdleConnections()
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, "GET", "http://node/metrics", nil)
	if err != nil {
		return nil, err
	}
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("/metrics: %s", resp.Status)
	}
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		name, val, ok := strings.Cut(sc.Text(), " ")
		if !ok || strings.HasPrefix(name, "#") || strings.Contains(name, "{") {
			continue
		}
		if v, err := strconv.ParseFloat(val, 64); err == nil {
			out[name] = v
		}
	}
	return out, sc.Err()
}

// TestSoakGrowing: what the soak calls growing.
func TestSoakGrowing(t *testing.T) {
	flat := []float64{30, 31, 30, 29, 30, 31, 30, 30, 31}
	warmUp := []float64{10, 20, 30, 30, 29, 31, 30, 30, 30}
	spike := []float64{30, 30, 30, 30, 30, 30, 30, 90, 30}
	climb := []float64{30, 32, 34, 36, 38, 40, 42, 44, 46}
	slowLeak := make([]float64, 90) // one goroutine a sample: 30 -> 119
	for i := range slowLeak {
		slowLeak[i] = 30 + float64(i)
	}
	for _, c := range []struct {
		name string
		xs   []float64
		want bool
	}{
		{"flat", flat, false},
		{"warm-up in the first third", warmUp, false},
		{"one spike", spike, false},
		{"a climb within the slack", climb, false},
		{"a climb past it", slowLeak, true},
	} {
		if got, why := soakGrowing(c.xs, 10, 0.2); got != c.want {
			t.Errorf("%s: growing %v (%s), want %v", c.name, got, why, c.want)
		}
	}
}
