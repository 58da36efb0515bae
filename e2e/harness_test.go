package e2e

import (
	"context"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"vxrouter/internal/nettest"
	"vxrouter/internal/testbin"
	"vxrouter/lab"
	"vxrouter/lease"
)

// binary is the vxrouter built for these tests, or "" when not root.
var binary string

func TestMain(m *testing.M) { nettest.Main(m, "e", testbin.Build(&binary)) }

// overlay is one test's world: an embedded etcd with the overlay's config,
// and a lab to put hosts in.
type overlay struct {
	t      *testing.T
	ctx    context.Context
	dir    string
	etcd   *lease.Embedded
	cli    *clientv3.Client
	reg    *lease.Registry
	cfg    *lease.Config
	lab    *lab.Lab
	nodes  []*lab.Node
	log    *slog.Logger
	prefix string
}

func newOverlay(t *testing.T, configJSON string) *overlay {
	t.Helper()
	return newOverlayWithin(t, configJSON, 3*time.Minute)
}

// newOverlayWithin is newOverlay for a test that runs longer than three
// minutes (the soak): its context ends after d.
func newOverlayWithin(t *testing.T, configJSON string, d time.Duration) *overlay {
	t.Helper()
	if binary == "" {
		t.Skip("needs root: builds network namespaces, TUN devices and veth pairs")
	}
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	o := &overlay{t: t, ctx: ctx, dir: t.TempDir(), log: slog.New(slog.NewTextHandler(testWriter{t}, nil))}

	var err error
	if err := os.MkdirAll(filepath.Join(o.dir, "etcd"), 0o700); err != nil {
		t.Fatal(err)
	}
	if o.etcd, err = lease.StartEmbedded(filepath.Join(o.dir, "etcd")); err != nil {
		t.Fatal(err)
	}
	// Read at cleanup: stopEtcd and startEtcd replace them (nil while down).
	t.Cleanup(func() {
		if o.etcd != nil {
			o.etcd.Close()
		}
	})
	if o.cli, err = o.etcd.Client(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if o.cli != nil {
			o.cli.Close()
		}
	})
	o.reg = lease.NewRegistry(o.cli, lease.DefaultPrefix, o.log)
	if o.cfg, err = lease.ParseConfig([]byte(configJSON)); err != nil {
		t.Fatal(err)
	}
	if err := o.reg.SetConfig(ctx, o.cfg); err != nil {
		t.Fatal(err)
	}

	o.prefix = nettest.Name()
	// The hosts' underlay carries the families the overlay does.
	opts := lab.Options{Prefix: o.prefix, Log: o.log}
	switch {
	case o.cfg.IPv6Enabled() && o.cfg.IPv4Enabled():
		opts.Underlay6 = underlay6
	case o.cfg.IPv6Enabled():
		opts.Underlay = underlay6
	}
	if o.lab, err = lab.New(opts); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		// Nodes first (their logs help a failed test), then the namespaces.
		for _, n := range o.nodes {
			if err := n.Stop(10 * time.Second); err != nil {
				t.Errorf("stop %s: %v", n.Host.Name, err)
			}
			if t.Failed() {
				t.Logf("--- log of %s\n%s", n.Host.Name, n.Log())
			}
		}
		if err := o.lab.Close(); err != nil {
			t.Errorf("lab close: %v", err)
		}
		if nss, err := lab.Namespaces(o.prefix); err != nil || len(nss) > 0 {
			t.Errorf("namespaces left behind: %v %v", nss, err)
		}
	})
	return o
}

// underlay6 is the hosts' IPv6 underlay when the overlay carries IPv6.
var underlay6 = netip.MustParsePrefix("fd00:213::/64")

// host adds a host to the lab.
func (o *overlay) host(name string) *lab.Host {
	o.t.Helper()
	h, err := o.lab.AddHost(name)
	if err != nil {
		o.t.Fatal(err)
	}
	return h
}

// start starts a vxrouter node on h with its state in the test's
// directory under the host's name, and waits for its subnet.
func (o *overlay) start(h *lab.Host, args ...string) (*lab.Node, lease.SubnetEnv) {
	o.t.Helper()
	n, err := h.StartVXRouter(lab.NodeOptions{
		Binary: binary,
		Etcd:   o.etcd.UnixEndpoint(),
		Dir:    filepath.Join(o.dir, h.Name),
		Args:   append([]string{"--log-level", "debug"}, args...),
	})
	if err != nil {
		o.t.Fatal(err)
	}
	o.nodes = append(o.nodes, n)
	ctx, cancel := context.WithTimeout(o.ctx, 30*time.Second)
	defer cancel()
	env, err := n.WaitSubnet(ctx)
	if err != nil {
		o.t.Fatal(err)
	}
	return n, env
}

// stop stops n and forgets it.
func (o *overlay) stop(n *lab.Node) {
	o.t.Helper()
	if err := n.Stop(10 * time.Second); err != nil {
		o.t.Fatalf("stop %s: %v", n.Host.Name, err)
	}
	for i, m := range o.nodes {
		if m == n {
			o.nodes = append(o.nodes[:i], o.nodes[i+1:]...)
			break
		}
	}
}

// pod adds a pod to h in subnet.
func (o *overlay) pod(h *lab.Host, subnet netip.Prefix) *lab.Pod {
	o.t.Helper()
	p, err := h.AddPod("pod", subnet)
	if err != nil {
		o.t.Fatal(err)
	}
	return p
}

// mustPing checks that from reaches to: it waits for the first answer
// (a node learns a new peer within moments), then wants 3 of 3.
func (o *overlay) mustPing(from, to *lab.Pod) { o.t.Helper(); o.mustPingAddr(from, to.Addr) }

// mustPingAddr is mustPing to one of a pod's addresses (a dual-stack
// pod's Addr6).
func (o *overlay) mustPingAddr(from *lab.Pod, to netip.Addr) {
	o.t.Helper()
	if err := from.WaitReachable(o.ctx, to, 20*time.Second); err != nil {
		o.t.Fatal(err)
	}
	res, err := from.Ping(o.ctx, to, 3)
	if err != nil || res.Received != 3 {
		o.t.Fatalf("%s -> %s: %d/3 replies: %v\n%s", source(from, to), to, res.Received, err, res.Output)
	}
	o.t.Logf("%s -> %s: 3/3 replies, avg %s", source(from, to), to, res.RTTAvg)
}

// source is from's address of to's family.
func source(from *lab.Pod, to netip.Addr) netip.Addr {
	if to.Is6() && from.Addr6.IsValid() {
		return from.Addr6
	}
	return from.Addr
}

// mustCarry checks that the traffic users send crosses from one pod to
// the other, not only ping: 8 MB over TCP, byte for byte, and 200 UDP
// datagrams of 1200 bytes, every one. (ICMP checksums are never left to
// offload; TCP and UDP ones are, so a path can answer every ping and
// drop every TCP segment.)
func (o *overlay) mustCarry(from, to *lab.Pod) { o.t.Helper(); o.mustCarryTo(from, to, to.Addr) }

// mustCarryTo is mustCarry to one of to's addresses, addr.
func (o *overlay) mustCarryTo(from, to *lab.Pod, addr netip.Addr) {
	o.t.Helper()
	d, err := from.TCPToAddr(o.ctx, to, addr, 5201, 8<<20)
	if err != nil {
		o.t.Fatal(err)
	}
	n, err := from.UDPToAddr(o.ctx, to, addr, 5202, 200, 1200)
	if err != nil {
		o.t.Fatal(err)
	}
	if n != 200 {
		o.t.Fatalf("udp %s -> %s: %d of 200 datagrams arrived", source(from, addr), addr, n)
	}
	o.t.Logf("%s -> %s: 8 MB of TCP in %s, 200 of 200 UDP datagrams", source(from, addr), addr, d.Round(time.Millisecond))
}

// testWriter sends log lines to t.Log.
type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(string(p))
	return len(p), nil
}

func mustMAC(t *testing.T, s string) net.HardwareAddr {
	t.Helper()
	m, err := net.ParseMAC(s)
	if err != nil {
		t.Fatal(err)
	}
	return m
}
