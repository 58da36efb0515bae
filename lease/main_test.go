package lease

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// shared is one embedded etcd for the package's tests; each test works
// under its own prefix. Tests that compact the store start their own.
var shared *Embedded

func TestMain(m *testing.M) {
	os.Exit(runTests(m))
}

func runTests(m *testing.M) int {
	dir, err := os.MkdirTemp("", "lease-etcd")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	shared, err = StartEmbedded(dir)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer shared.Close()
	return m.Run()
}

// testLog writes the package's logs to the test's log.
func testLog(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type tWriter struct{ t testing.TB }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSuffix(string(p), "\n"))
	return len(p), nil
}

// testClient is a client of e closed when the test ends.
func testClient(t testing.TB, e *Embedded) *clientv3.Client {
	t.Helper()
	cli, err := e.Client()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	return cli
}

// testRegistry is a registry on the shared etcd under a prefix of the
// test's own, deleted when the test ends.
func testRegistry(t testing.TB) (*Registry, *clientv3.Client) {
	t.Helper()
	cli := testClient(t, shared)
	prefix := "/test/" + t.Name()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		cli.Delete(ctx, prefix+"/", clientv3.WithPrefix())
	})
	return NewRegistry(cli, prefix, testLog(t)), cli
}

func testCtx(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func mustConfig(t testing.TB, js string) *Config {
	t.Helper()
	c, err := ParseConfig([]byte(js))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// nodeAttrs are vxlan attrs for node i: PublicIP 10.0.0.i, a MAC ending in i.
func nodeAttrs(i int) Attrs {
	return Attrs{
		PublicIP:    netip.AddrFrom4([4]byte{10, 0, byte(i >> 8), byte(i)}),
		BackendType: "vxlan",
		VNI:         1,
		VtepMAC:     net.HardwareAddr{0xd6, 0x51, 0x2e, 0x80, byte(i >> 8), byte(i)},
	}
}

// mustAcquire acquires a lease for attrs under cfg (no previous subnet, an
// hour's TTL) or fails the test.
func mustAcquire(t testing.TB, ctx context.Context, r *Registry, cfg *Config, attrs Attrs) *Lease {
	t.Helper()
	l, err := r.Acquire(ctx, cfg, attrs, netip.Prefix{}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return l
}
