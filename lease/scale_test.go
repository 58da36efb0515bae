package lease

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"runtime"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"

	"vxrouter/route"
)

// The scale benchmarks are not run by `go test` without -bench; run them
// one iteration at a time, they take a while:
//
//	go test ./lease -run '^$' -bench Join -benchtime 1x
//	go test ./lease -run '^$' -bench PeerTable -benchtime 1x
//
// VXR_SCALE_NODES and VXR_SCALE_CLIENTS change BenchmarkJoin1000's number
// of simulated nodes (1000) and of etcd clients they share (20).

// BenchmarkJoin1000 starts 1000 simulated nodes at once against one fresh
// embedded etcd: each acquires a subnet of 10.0.0.0/8 and watches the
// leases, as a vxrouter node does (no TUN, no KeepAlive: a 1h lease does
// not need renewing within the run). The nodes share a few etcd clients
// (node i uses client i mod C), as many gRPC connections as a real overlay
// would open are not what is measured here; each node still has its own
// Watch, so etcd keeps one watcher per node and sends every event to each.
//
// It reports the time until every node has seen every other one (its
// Added events for the other N-1 subnets), the etcd requests per node by
// kind (counted by a gRPC interceptor on the clients: unary calls and
// messages sent on streams, so every watch created counts once), and the
// watch events each node received.
func BenchmarkJoin1000(b *testing.B) {
	nodes := envInt(b, "VXR_SCALE_NODES", 1000)
	clients := envInt(b, "VXR_SCALE_CLIENTS", 20)
	for range b.N {
		runJoin(b, nodes, clients)
	}
}

func runJoin(b *testing.B, nodes, clients int) {
	e, err := StartEmbedded(b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	defer e.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()

	var rpcs rpcCounter
	regs := make([]*Registry, clients)
	for i := range regs {
		cli, err := clientv3.New(clientv3.Config{
			Endpoints:   []string{e.clientURL},
			DialTimeout: 5 * time.Second,
			Logger:      zap.NewNop(),
			DialOptions: []grpc.DialOption{
				grpc.WithChainUnaryInterceptor(rpcs.unary),
				grpc.WithChainStreamInterceptor(rpcs.stream),
			},
		})
		if err != nil {
			b.Fatal(err)
		}
		defer cli.Close()
		regs[i] = NewRegistry(cli, "/scale", nil)
	}
	cfg, err := ParseConfig([]byte(`{"Network":"10.0.0.0/8","SubnetLen":24,"Backend":{"Type":"vxlan"}}`))
	if err != nil {
		b.Fatal(err)
	}
	if err := regs[0].SetConfig(ctx, cfg); err != nil {
		b.Fatal(err)
	}
	rpcs.reset()
	runtime.GC()
	var ms0 runtime.MemStats
	runtime.ReadMemStats(&ms0)

	b.ResetTimer()
	start := time.Now()
	var (
		acquired, converged sync.WaitGroup
		lastAcquire         atomic.Int64 // ns since start
		events              atomic.Int64
		failed              = make(chan error, nodes)
	)
	wctx, stopWatches := context.WithCancel(ctx)
	var watchers sync.WaitGroup
	acquired.Add(nodes)
	converged.Add(nodes)
	for i := range nodes {
		reg := regs[i%clients]
		watchers.Go(func() {
			l, err := reg.Acquire(ctx, cfg, scaleAttrs(i), netip.Prefix{}, time.Hour)
			acquired.Done()
			if err != nil {
				failed <- fmt.Errorf("node %d: acquire: %w", i, err)
				converged.Done()
				return
			}
			d := int64(time.Since(start))
			for {
				old := lastAcquire.Load()
				if d <= old || lastAcquire.CompareAndSwap(old, d) {
					break
				}
			}
			seen := make(map[netip.Prefix]bool, nodes)
			done := false
			reg.Watch(wctx, func(ev Event) {
				events.Add(1)
				if ev.Type != Added || ev.Lease.Subnet == l.Subnet || done {
					return
				}
				seen[ev.Lease.Subnet] = true
				if len(seen) == nodes-1 {
					done = true
					converged.Done()
				}
			})
		})
	}
	wait := make(chan struct{})
	go func() { converged.Wait(); close(wait) }()
	select {
	case <-wait:
	case err := <-failed:
		b.Fatal(err)
	case <-ctx.Done():
		b.Fatalf("not converged: %d events so far", events.Load())
	}
	elapsed := time.Since(start)
	b.StopTimer()
	var ms1 runtime.MemStats
	runtime.ReadMemStats(&ms1)
	counts := rpcs.snapshot()
	evs := events.Load()
	stopWatches()
	watchers.Wait()

	var total int64
	for _, n := range counts {
		total += n
	}
	b.ReportMetric(elapsed.Seconds(), "s-to-converge")
	b.ReportMetric(time.Duration(lastAcquire.Load()).Seconds(), "s-all-acquired")
	b.ReportMetric(float64(total)/float64(nodes), "etcd-req/node")
	b.ReportMetric(float64(evs)/float64(nodes), "events/node")
	b.Logf("%d nodes on %d clients: all acquired after %s, all saw all after %s; %d etcd requests (%.1f per node), %d watch events (%.1f per node); client-side allocation %.1f MB",
		nodes, clients, time.Duration(lastAcquire.Load()).Round(time.Millisecond), elapsed.Round(time.Millisecond),
		total, float64(total)/float64(nodes), evs, float64(evs)/float64(nodes), float64(ms1.TotalAlloc-ms0.TotalAlloc)/1e6)
	methods := make([]string, 0, len(counts))
	for m := range counts {
		methods = append(methods, m)
	}
	slices.Sort(methods)
	for _, m := range methods {
		b.Logf("  %-45s %8d  %8.2f per node", m, counts[m], float64(counts[m])/float64(nodes))
	}
}

// scaleAttrs are node i's attrs: PublicIP 100.64.x.y, a MAC from i.
func scaleAttrs(i int) Attrs {
	return Attrs{
		PublicIP:    netip.AddrFrom4([4]byte{100, 64, byte(i >> 8), byte(i)}),
		BackendType: "vxlan",
		VNI:         1,
		VtepMAC:     net.HardwareAddr{0x02, 0x5c, 0, 0, byte(i >> 8), byte(i)},
	}
}

// rpcCounter counts etcd requests by gRPC method: unary calls, and each
// message a client sends on a stream (a watch create, a keepalive).
type rpcCounter struct {
	mu sync.Mutex
	n  map[string]int64
}

func (c *rpcCounter) add(method string) {
	c.mu.Lock()
	if c.n == nil {
		c.n = make(map[string]int64)
	}
	c.n[method]++
	c.mu.Unlock()
}

func (c *rpcCounter) reset() {
	c.mu.Lock()
	clear(c.n)
	c.mu.Unlock()
}

func (c *rpcCounter) snapshot() map[string]int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make(map[string]int64, len(c.n))
	for k, v := range c.n {
		out[k] = v
	}
	return out
}

func (c *rpcCounter) unary(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
	c.add(method)
	return invoker(ctx, method, req, reply, cc, opts...)
}

func (c *rpcCounter) stream(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
	s, err := streamer(ctx, desc, cc, method, opts...)
	if err != nil {
		return nil, err
	}
	return &countedStream{ClientStream: s, c: c, method: method}, nil
}

type countedStream struct {
	grpc.ClientStream
	c      *rpcCounter
	method string
}

func (s *countedStream) SendMsg(m any) error {
	s.c.add(s.method)
	return s.ClientStream.SendMsg(m)
}

// BenchmarkPeerTable measures what the route table costs per peer: the
// heap it holds once built (HeapAlloc after GC, divided by peers), and
// the time and garbage to learn the peers: in one batch, as a node does
// when it starts in a big overlay (the list), or one lease event at a
// time, as it does while the others join one by one.
func BenchmarkPeerTable(b *testing.B) {
	local := net.HardwareAddr{0x02, 0, 0, 0, 0, 1}
	for _, peers := range []int{1000, 10000} {
		for _, batch := range []bool{true, false} {
			name := fmt.Sprintf("peers=%d/one-at-a-time", peers)
			if batch {
				name = fmt.Sprintf("peers=%d/one-batch", peers)
			}
			b.Run(name, func(b *testing.B) {
				for range b.N {
					runtime.GC()
					var m0, m1 runtime.MemStats
					runtime.ReadMemStats(&m0)
					t, err := route.NewTable(1, local)
					if err != nil {
						b.Fatal(err)
					}
					changes := make([]route.Change, peers)
					for i := range changes {
						a := scaleAttrs(i)
						changes[i] = route.Change{
							Subnet: netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(i >> 8), byte(i), 0}), 24),
							Addr:   netip.AddrPortFrom(a.PublicIP, 8472),
							VTEP:   a.VtepMAC,
						}
					}
					start := time.Now()
					if batch {
						if err := t.Apply(changes); err != nil {
							b.Fatal(err)
						}
					} else {
						for _, c := range changes {
							if err := t.Set(c.Subnet, c.Addr, c.VTEP); err != nil {
								b.Fatal(err)
							}
						}
					}
					build := time.Since(start)
					runtime.GC()
					runtime.ReadMemStats(&m1)
					if t.Len() != peers {
						b.Fatalf("table has %d peers, want %d", t.Len(), peers)
					}
					runtime.KeepAlive(t)
					b.ReportMetric(float64(m1.HeapAlloc-m0.HeapAlloc)/float64(peers), "heap-B/peer")
					b.ReportMetric(float64(m1.TotalAlloc-m0.TotalAlloc)/float64(peers), "alloc-B/peer")
					b.ReportMetric(float64(build.Microseconds())/float64(peers), "µs/peer")
					b.ReportMetric(build.Seconds(), "s-to-learn-all")
				}
			})
		}
	}
}

func envInt(b *testing.B, name string, def int) int {
	s := os.Getenv(name)
	if s == "" {
		return def
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 2 {
		b.Fatalf("%s=%q: want a number >= 2", name, s)
	}
	return n
}
