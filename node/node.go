package node

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"vxrouter/encap"
	"vxrouter/lease"
	"vxrouter/route"
	"vxrouter/tunnel"
)

// Config is everything a node needs to run. The zero value of each
// optional field means its default.
type Config struct {
	Etcd       clientv3.Config // Endpoints at least; TLS and auth when set
	EtcdPrefix string          // default lease.DefaultPrefix
	Iface      string          // underlay interface name or address; "" = default route's
	PublicIP   netip.Addr      // overrides the interface's first IPv4
	SubnetFile string          // where subnet.env goes
	StateDir   string          // keeps the VTEP MAC across restarts
	TunName    string          // default "vxr0"
	LeaseTTL   time.Duration   // default lease.DefaultTTL
	// EtcdTimeout bounds the first contact with etcd (config and lease);
	// default 30s. Later outages are ridden out, not fatal.
	EtcdTimeout time.Duration
	// AdminSocket is the unix socket of the admin endpoint (/healthz,
	// /metrics, /counters, /peers); "" for none. MetricsAddr also serves
	// it on TCP.
	AdminSocket string
	MetricsAddr string
	// Capture, when set, captures from the start into this pcap file, up
	// to CaptureLimit bytes (default 64 MiB).
	Capture      string
	CaptureLimit int64
	// TunBackend is tunnel.BackendOffload (default; water where the
	// kernel refuses offloads) or tunnel.BackendWater.
	TunBackend string
	// Queues is how many TUN queues, underlay sockets and pairs of
	// forwarding loops; default the number of CPUs. Water has one.
	Queues int
	// PollYields is how many times a forwarding loop that finds its TUN
	// queue or socket empty yields its CPU (sched_yield) and looks again
	// before it sleeps (or, on an offload TUN queue, ends its batch, the
	// packets read so far waiting): throughput under load for some
	// latency; 0 sleeps at once. The water backend's TUN side ignores
	// it. `vxrouter run` defaults to DefaultPollYields.
	PollYields int
	// FullChecksums computes every inner TCP and UDP checksum, even for
	// peers that take them pending, and does not say in the lease that
	// this node takes them pending (lease.Attrs.PartialCsum).
	FullChecksums bool
	Log           *slog.Logger
}

// Node is a running node. Its fields are fixed once Start returns.
type Node struct {
	cfg      Config
	log      *slog.Logger
	cli      *clientv3.Client
	reg      *lease.Registry
	overlay  *lease.Config
	lease    *lease.Lease
	underlay underlayLink
	vtep     net.HardwareAddr
	mtu      int

	table *route.Table
	fwd   *route.Forwarder
	capt  captures

	admin  *adminServer
	notify *notifier
	ph     atomic.Int32 // a phase
}

// Start brings a node up to the point where it forwards: lease acquired,
// TUN device configured, subnet.env written, socket open. Run then keeps
// it going. On error, Start undoes what it did (but never revokes a lease
// it acquired: the subnet stays this node's for the restart).
func Start(ctx context.Context, cfg Config) (_ *Node, err error) {
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.EtcdPrefix == "" {
		cfg.EtcdPrefix = lease.DefaultPrefix
	}
	if cfg.TunName == "" {
		cfg.TunName = DefaultTunName
	}
	if cfg.EtcdTimeout == 0 {
		cfg.EtcdTimeout = 30 * time.Second
	}
	if cfg.LeaseTTL == 0 {
		cfg.LeaseTTL = lease.DefaultTTL
	}
	if cfg.StateDir == "" {
		return nil, errors.New("node: no state directory (--state-dir)")
	}
	n := &Node{cfg: cfg, log: cfg.Log, notify: &notifier{log: cfg.Log}}
	if cfg.Capture != "" {
		// Find out now, before anything is set up, that the file can be
		// written; the capture itself starts once the node forwards.
		f, err := os.OpenFile(cfg.Capture, os.O_CREATE|os.O_WRONLY, 0o600)
		if err != nil {
			return nil, fmt.Errorf("capture: %w", err)
		}
		f.Close()
	}
	// The admin endpoint first: a node that would take another's socket
	// is refused before it touches etcd.
	if n.admin, err = n.openAdmin(cfg.AdminSocket, cfg.MetricsAddr); err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			n.admin.close()
		}
	}()

	if n.underlay, err = findUnderlay(cfg.Iface, cfg.PublicIP); err != nil {
		return nil, err
	}
	if n.vtep, err = loadOrCreateVTEP(cfg.StateDir); err != nil {
		return nil, err
	}
	n.log.Info("underlay", "iface", n.underlay.Name, "public-ip", n.underlay.PublicIP, "mtu", n.underlay.MTU, "vtep-mac", n.vtep.String())

	etcdCfg := cfg.Etcd
	// With auth, clientv3.New fetches a token and waits DialTimeout for
	// it: the first contact is what --etcd-timeout bounds.
	etcdCfg.DialTimeout = cfg.EtcdTimeout
	// clientv3 would log its own retries as JSON at warn level, in the
	// middle of the node's log; the registry reports what matters (renewal
	// and watch failures, with backoff) through the node's logger.
	etcdCfg.Logger = zap.NewNop()
	if n.cli, err = clientv3.New(etcdCfg); err != nil {
		return nil, fmt.Errorf("etcd at %s: %w (check --etcd-endpoints, the TLS files and the credentials, and that etcd is running)",
			strings.Join(etcdCfg.Endpoints, ","), err)
	}
	defer func() {
		if err != nil {
			n.cli.Close()
		}
	}()
	n.reg = lease.NewRegistry(n.cli, cfg.EtcdPrefix, n.log)

	cctx, cancel := context.WithTimeout(ctx, cfg.EtcdTimeout)
	defer cancel()
	n.notify.status("reading the overlay's config from etcd at %s", strings.Join(etcdCfg.Endpoints, ","))
	if n.overlay, err = n.reg.Config(cctx); err != nil {
		if errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil {
			return nil, fmt.Errorf("etcd at %s did not answer within %s: check --etcd-endpoints and that etcd is running (%w)",
				strings.Join(etcdCfg.Endpoints, ","), cfg.EtcdTimeout, err)
		}
		return nil, fmt.Errorf("read overlay config from etcd %s: %w", strings.Join(etcdCfg.Endpoints, ","), err)
	}

	n.mtu = n.overlay.Backend.MTU
	if n.mtu == 0 {
		n.mtu = n.underlay.MTU - encap.OverheadIPv4
	}
	if n.mtu < lease.MinMTU {
		return nil, fmt.Errorf("overlay MTU %d is too small (underlay %s has MTU %d, VXLAN takes %d)", n.mtu, n.underlay.Name, n.underlay.MTU, encap.OverheadIPv4)
	}

	vni := uint32(n.overlay.Backend.VNI)
	if n.table, err = route.NewTable(vni, n.vtep); err != nil {
		return nil, err
	}
	dec, err := encap.NewDecoder(vni, n.vtep)
	if err != nil {
		return nil, err
	}

	queues := cfg.Queues
	if queues <= 0 {
		queues = runtime.NumCPU()
	}
	devs, backend, err := tunnel.OpenTUN(cfg.TunName, tunnel.TUNOptions{Backend: cfg.TunBackend, Queues: queues, Log: n.log, Yields: cfg.PollYields})
	if err != nil {
		return nil, err
	}
	closeDevs := func() {
		for _, d := range devs {
			d.Close()
		}
	}
	uls, err := tunnel.ListenUDPQueues(netip.AddrPortFrom(n.underlay.PublicIP, uint16(n.overlay.Backend.Port)), len(devs), tunnel.UDPOptions{Yields: cfg.PollYields})
	if err != nil {
		closeDevs()
		return nil, fmt.Errorf("underlay socket: %w", err)
	}
	qs := make([]route.Queue, len(devs))
	for i := range devs {
		qs[i] = route.Queue{Dev: devs[i], Underlay: uls[i]}
	}
	closeAll := func() {
		for _, q := range qs {
			q.Dev.Close()
			q.Underlay.Close()
		}
	}
	// The lease comes last of what can fail locally: a node that cannot
	// open its device or bind its port must not leave a lease behind that
	// peers would route to.
	var previous netip.Prefix
	if env, err := lease.ReadSubnetEnv(cfg.SubnetFile); err == nil {
		previous = env.Subnet.Masked()
	}
	attrs := lease.Attrs{
		PublicIP:    n.underlay.PublicIP,
		BackendType: "vxlan",
		VNI:         n.overlay.Backend.VNI,
		VtepMAC:     n.vtep,
		PartialCsum: !cfg.FullChecksums,
	}
	n.notify.status("acquiring a subnet lease")
	if n.lease, err = n.reg.Acquire(cctx, n.overlay, attrs, previous, cfg.LeaseTTL); err != nil {
		closeAll()
		return nil, fmt.Errorf("acquire a subnet lease: %w", err)
	}
	n.log.Info("lease acquired", "subnet", n.lease.Subnet, "public-ip", attrs.PublicIP, "vtep-mac", n.vtep.String(), "expires", n.lease.Expiration.Format(time.RFC3339))

	dev := devs[0]
	if err := configureTUN(dev.Name(), n.mtu, n.lease.Subnet, n.overlay.Network); err != nil {
		closeAll()
		return nil, err
	}
	gso, gro := uls[0].Offloads()
	n.log.Info("data plane", "tun-backend", backend, "queues", len(qs), "udp-gso", gso, "udp-gro", gro, "gomaxprocs", runtime.GOMAXPROCS(0), "partial-checksums", !cfg.FullChecksums)
	n.fwd = route.NewForwarderQueues(qs, n.table, dec, n.log)
	env := lease.SubnetEnv{
		Network: n.overlay.Network,
		Subnet:  netip.PrefixFrom(n.lease.Subnet.Addr().Next(), n.lease.Subnet.Bits()),
		MTU:     n.mtu,
	}
	if err := lease.WriteSubnetEnv(cfg.SubnetFile, env); err != nil {
		closeAll()
		return nil, fmt.Errorf("write %s: %w", cfg.SubnetFile, err)
	}
	if cfg.Capture != "" {
		limit := cfg.CaptureLimit
		if limit == 0 {
			limit = DefaultCaptureLimit
		}
		if err := n.StartCapture(cfg.Capture, limit); err != nil {
			closeAll()
			return nil, err
		}
	}

	n.log.Info("tun up", "dev", dev.Name(), "mtu", n.mtu, "addr", n.lease.Subnet.Addr(), "route", n.overlay.Network, "subnet-file", cfg.SubnetFile)
	n.notify.status("lease %s held, %s up; listing peers", n.lease.Subnet, dev.Name())
	n.ph.Store(int32(phaseListing)) // the fields are set: the admin endpoint may read them
	return n, nil
}

// Lease returns the node's own lease.
func (n *Node) Lease() lease.Lease { return *n.lease }

// VTEP returns the node's VTEP MAC.
func (n *Node) VTEP() net.HardwareAddr { return n.vtep }

// Table returns the node's route table.
func (n *Node) Table() *route.Table { return n.table }

// Counters returns the forwarder's counters.
func (n *Node) Counters() *route.Counters { return &n.fwd.Counters }

// Run forwards, learns peers and renews the lease until ctx ends, then
// shuts down cleanly and returns nil; or returns the error that stopped it.
// The node is ready (/readyz, READY=1 to systemd) once the first list of
// peers is in its route table.
func (n *Node) Run(ctx context.Context) error {
	defer n.cli.Close()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	var wg sync.WaitGroup
	errc := make(chan error, 8)
	run := func(name string, f func(context.Context) error) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := f(ctx); err != nil && ctx.Err() == nil {
				errc <- fmt.Errorf("%s: %w", name, err)
			}
			cancel()
		}()
	}
	defer n.StopCapture()
	run("forwarder", n.fwd.Run)
	defer n.admin.close()
	run("admin endpoint", func(ctx context.Context) error {
		select {
		case <-ctx.Done():
			return nil
		case err := <-n.admin.failed():
			return err
		}
	})
	run("stop", func(ctx context.Context) error {
		<-ctx.Done()
		n.stopping()
		return nil
	})
	run("watch peers", func(ctx context.Context) error { return n.reg.WatchBatches(ctx, n.peerEvents) })
	run("renew lease", func(ctx context.Context) error {
		return n.reg.KeepAlive(ctx, n.overlay, n.lease, n.leaseChanged(cancel, errc))
	})
	wg.Wait()

	n.log.Info("stopped", "counters", n.fwd.Snapshot())
	select {
	case err := <-errc:
		n.notify.status("stopped: %v", err)
		return err
	default:
		return nil
	}
}

// leaseChanged handles KeepAlive's report of a re-acquired lease. The same
// subnet needs nothing; a different one would need the TUN address, the
// routes and subnet.env redone under the pods' feet, so the node stops and
// says so, and its supervisor restarts it on the new subnet.
func (n *Node) leaseChanged(cancel context.CancelFunc, errc chan<- error) func(*lease.Lease) {
	return func(l *lease.Lease) {
		if l.Subnet == n.lease.Subnet {
			n.log.Warn("lease re-acquired", "subnet", l.Subnet)
			return
		}
		errc <- fmt.Errorf("lease lost: subnet %s now belongs to another node and this one got %s; restart to use it", n.lease.Subnet, l.Subnet)
		cancel()
	}
}

// peerEvents applies a batch of lease events to the route table, in one
// new snapshot of it.
func (n *Node) peerEvents(evs []lease.Event) {
	// A node joining a big overlay learns every peer at once: one line
	// per peer is for debugging then, a summary says what happened.
	level := slog.LevelInfo
	if len(evs) > 16 {
		level = slog.LevelDebug
	}
	changes := make([]route.Change, 0, len(evs))
	for _, ev := range evs {
		l := ev.Lease
		if l.Subnet == n.lease.Subnet {
			continue
		}
		if ev.Type == lease.Removed {
			changes = append(changes, route.Change{Subnet: l.Subnet, Delete: true})
			n.log.Log(context.Background(), level, "peer removed", "subnet", l.Subnet)
			continue
		}
		// A key that parses can still be no peer: a subnet outside the
		// overlay (0.0.0.0/0 would swallow every route) or of another
		// length, or one that names this node's own address (a loop).
		if !n.overlay.Network.Contains(l.Subnet.Addr()) || l.Subnet.Bits() != n.overlay.SubnetLen {
			n.log.Warn("peer skipped: subnet is not one of the overlay's", "subnet", l.Subnet, "network", n.overlay.Network, "subnet-len", n.overlay.SubnetLen)
			continue
		}
		if l.Attrs.PublicIP == n.underlay.PublicIP {
			n.log.Warn("peer skipped: it has this node's public IP", "subnet", l.Subnet, "public-ip", l.Attrs.PublicIP)
			continue
		}
		if l.Attrs.BackendType != "vxlan" {
			n.log.Warn("peer skipped: not a vxlan lease", "subnet", l.Subnet, "backend", l.Attrs.BackendType)
			continue
		}
		if l.Attrs.VNI != n.overlay.Backend.VNI {
			n.log.Warn("peer skipped: other VNI", "subnet", l.Subnet, "vni", l.Attrs.VNI, "ours", n.overlay.Backend.VNI)
			continue
		}
		changes = append(changes, route.Change{
			Subnet:      l.Subnet,
			Addr:        netip.AddrPortFrom(l.Attrs.PublicIP, uint16(n.overlay.Backend.Port)),
			VTEP:        l.Attrs.VtepMAC,
			PartialCsum: l.Attrs.PartialCsum && !n.cfg.FullChecksums,
		})
		n.log.Log(context.Background(), level, "peer", "subnet", l.Subnet, "public-ip", l.Attrs.PublicIP, "vtep-mac", l.Attrs.VtepMAC.String(), "partial-checksums", l.Attrs.PartialCsum)
	}
	what := describePeers(n.table, changes)
	if err := n.table.Apply(changes); err != nil {
		n.log.Warn("peers skipped", "err", err)
	}
	n.peersApplied(what)
	if level == slog.LevelDebug {
		n.log.Info("peers updated", "events", len(evs), "peers", n.table.Len())
	}
}

// Where a node keeps its state unless told otherwise.
const (
	DefaultStateDir   = "/var/lib/vxrouter"
	DefaultSubnetFile = "/run/flannel/subnet.env"
	DefaultTunName    = "vxr0"
)

// DefaultCaptureLimit is where a capture stops writing when nobody says
// (--capture-limit, the admin endpoint's &limit=).
const DefaultCaptureLimit = 64 << 20

// DefaultPollYields is `vxrouter run`'s --poll-yields: measured with
// `vxrouter bench --scenarios vxrouter-offload` on a 2-CPU VM, 3 gave one
// TCP stream 6-12% more and UDP floods 15-30% more than 0, for about
// 0.05-0.1 ms more round trip at the median.
const DefaultPollYields = 3
