package node

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"regexp"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vishvananda/netlink"
	clientv3 "go.etcd.io/etcd/client/v3"

	"vxrouter/encap"
	"vxrouter/lease"
	"vxrouter/masq"
	"vxrouter/route"
	"vxrouter/tunnel"
)

// Config is everything a node needs to run. The zero value of each
// optional field means its default.
type Config struct {
	Etcd       clientv3.Config // Endpoints at least; TLS and auth when set
	EtcdPrefix string          // default lease.DefaultPrefix
	Iface      []string        // underlay interfaces by name or address, the first usable wins; see below
	PublicIP   netip.Addr      // overrides the interface's first IPv4
	PublicIPv6 netip.Addr      // overrides the interface's first IPv6, in an overlay that carries IPv6
	SubnetFile string          // where subnet.env goes
	StateDir   string          // keeps the VTEP MAC across restarts
	TunName    string          // default "vxr0"
	LeaseTTL   time.Duration   // default lease.DefaultTTL

	// Iface, IfaceRegex and IfaceCanReach choose the underlay interface
	// as flanneld's flags of those names do (see underlayChoice); with
	// none of them, it is the interface holding PublicIP, else the
	// default route's.
	IfaceRegex    []*regexp.Regexp
	IfaceCanReach netip.Addr

	// EtcdTimeout bounds the first contact with etcd (config and lease),
	// or with Source; default 30s. Later outages are ridden out, not
	// fatal.
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
	// SourcePorts is the range the outer UDP source port is picked from,
	// per inner flow (flow entropy); the zero value is the host's
	// ephemeral range, as Linux's vxlan does. FixedSourcePort sends every
	// datagram from the VXLAN port instead.
	SourcePorts     tunnel.PortRange
	FixedSourcePort bool
	// NoSourceCheck delivers datagrams from a peer whatever their inner
	// source address; by default one whose source is not in the peer's
	// subnet is dropped (route.Forwarder.CheckSources).
	NoSourceCheck bool
	// AutoProcs, when more than 1, has the node follow the load with
	// GOMAXPROCS, from 1 up to AutoProcs: as many Ps as queues that carry
	// traffic (see procs.go). 0 leaves GOMAXPROCS as it is.
	AutoProcs int
	// FullChecksums computes every inner TCP and UDP checksum, even for
	// peers that take them pending, and does not say in the lease that
	// this node takes them pending (lease.Attrs.PartialCsum).
	FullChecksums bool
	// IPMasq writes flannel's masquerading rules (package masq) for
	// traffic leaving the overlay, and says so in subnet.env.
	// IPMasqRandomFullyDisable never asks for fully random ports;
	// IPTablesResync is how often the rules are checked (default
	// masq.DefaultResync).
	IPMasq                   bool
	IPMasqRandomFullyDisable bool
	IPTablesResync           time.Duration
	Log                      *slog.Logger

	// Source, when set, gives the config, the lease and the peers
	// instead of etcd (Etcd and EtcdPrefix are then unused), e.g. the
	// Kubernetes API (package kube). Its giver closes it.
	Source Source
}

// Node is a running node. Its fields are fixed once Start returns.
type Node struct {
	cfg      Config
	log      *slog.Logger
	reg      Source
	overlay  *lease.Config
	lease    *lease.Lease
	underlay underlayLink
	vtep     net.HardwareAddr
	mtu      int

	table  *route.Table
	fwd    *route.Forwarder
	capt   captures
	masq   *masq.Masq // nil without --ip-masq
	direct *directRoutes

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

	if err := n.checkUnderlayFlags(); err != nil {
		return nil, err
	}
	if n.vtep, err = loadOrCreateVTEP(cfg.StateDir); err != nil {
		return nil, err
	}

	if n.reg = cfg.Source; n.reg == nil {
		if n.reg, err = dialEtcd(cfg); err != nil {
			return nil, err
		}
	}
	defer func() {
		if err != nil {
			n.closeSource()
		}
	}()

	cctx, cancel := context.WithTimeout(ctx, cfg.EtcdTimeout)
	defer cancel()
	n.notify.status("reading the overlay's config from %s", describeSource(n.reg))
	if n.overlay, err = n.reg.Config(cctx); err != nil {
		return nil, err
	}

	// Which addresses the underlay needs depends on the families the
	// config carries.
	if n.underlay, err = n.findUnderlay(); err != nil {
		return nil, err
	}
	if n.mtu, err = overlayMTU(n.overlay, n.underlay, n.log); err != nil {
		return nil, err
	}
	if err := n.prepareMasq(); err != nil {
		return nil, err
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
	uo := tunnel.UDPOptions{Yields: cfg.PollYields, SourcePool: tunnel.DefaultSourcePool, SourcePorts: cfg.SourcePorts}
	if cfg.FixedSourcePort {
		uo.SourcePool = 0
	}
	laddr, uo := listenAddr(n.underlay, n.overlay.Backend.Port, uo)
	uls, err := tunnel.ListenUDPQueues(laddr, len(devs), uo)
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
		n.removeMasq()
	}
	// The lease comes last of what can fail locally: a node that cannot
	// open its device or bind its port must not leave a lease behind that
	// peers would route to.
	var previous []netip.Prefix
	if env, err := lease.ReadSubnetEnv(cfg.SubnetFile); err == nil {
		previous = []netip.Prefix{env.Lease(), env.IPv6Lease()}
	}
	attrs := n.leaseAttrs()
	n.notify.status("acquiring a subnet lease")
	if n.lease, err = n.reg.AcquireSubnets(cctx, n.overlay, attrs, previous, cfg.LeaseTTL); err != nil {
		closeAll()
		return nil, fmt.Errorf("acquire a subnet lease: %w", err)
	}
	n.log.Info("lease acquired", "key", n.reg.LeaseKey(n.lease), "vtep-mac", n.vtep.String(), "expires", expires(n.lease))

	dev := devs[0]
	if err := configureTUN(dev.Name(), n.mtu, n.tunRoutes()); err != nil {
		closeAll()
		return nil, err
	}
	// Before subnet.env: CNI reads FLANNEL_IPMASQ=true as "the node
	// masquerades", and turns its bridge's own masquerading off.
	if err := n.writeMasq(); err != nil {
		closeAll()
		return nil, err
	}
	tun, err := netlink.LinkByName(dev.Name())
	if err != nil {
		closeAll()
		return nil, fmt.Errorf("find tun %q: %w", dev.Name(), err)
	}
	n.direct = newDirectRoutes(n.overlay.Backend.DirectRouting, netlinkRoutes{}, tun.Attrs().Index, n.log)
	gso, gro := uls[0].Offloads()
	srcPorts := "fixed"
	if !cfg.FixedSourcePort {
		srcPorts = fmt.Sprintf("%d ports of %s", len(uls[0].SourcePorts()), cfg.SourcePorts)
	}
	n.log.Info("data plane", "tun-backend", backend, "queues", len(qs), "udp-gso", gso, "udp-gro", gro, "gomaxprocs", runtime.GOMAXPROCS(0), "gomaxprocs-auto-max", cfg.AutoProcs, "partial-checksums", !cfg.FullChecksums, "anti-spoofing", !cfg.NoSourceCheck, "src-ports", srcPorts, "direct-routing", n.overlay.Backend.DirectRouting)
	n.fwd = route.NewForwarderQueues(qs, n.table, dec, n.log)
	n.fwd.CheckSources(!cfg.NoSourceCheck)
	// The largest inner packet is what the underlay carries, whatever the
	// TUN MTU is.
	n.fwd.AnswerFrom(answerSource(n.overlay.Network, n.lease.Subnet), answerSource(n.overlay.IPv6Network, n.lease.IPv6Subnet), maxInner(n.overlay, n.underlay, n.mtu))
	if err := lease.WriteSubnetEnv(cfg.SubnetFile, n.subnetEnv()); err != nil {
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

	for _, r := range n.tunRoutes() {
		n.log.Info("tun up", "dev", dev.Name(), "mtu", n.mtu, "addr", r.subnet.Addr(), "route", r.network, "subnet-file", cfg.SubnetFile)
	}
	n.notify.status("lease %s held, %s up; listing peers", n.ownSubnets(), dev.Name())
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
	defer n.closeSource()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	var wg sync.WaitGroup
	// Room for an error from every goroutine below and leaseChanged, so
	// that none blocks on sending it.
	errc := make(chan error, 8)
	run := func(name string, f func(context.Context) error) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := f(ctx); err != nil && ctx.Err() == nil {
				// The first error is what Run reports; a second one,
				// racing it, must not block this goroutine forever.
				select {
				case errc <- fmt.Errorf("%s: %w", name, err):
				default:
				}
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
	if n.masq != nil {
		run("ip masquerade", n.keepMasq)
	}
	if n.cfg.AutoProcs > 1 {
		run("gomaxprocs", func(ctx context.Context) error { return n.tuneProcs(ctx, n.cfg.AutoProcs) })
	}
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
		if l.Subnet == n.lease.Subnet && l.IPv6Subnet == n.lease.IPv6Subnet {
			n.log.Warn("lease re-acquired", "key", l.KeyName())
			return
		}
		errc <- fmt.Errorf("lease lost: subnet %s now belongs to another node and this one got %s; restart to use it", n.lease.KeyName(), l.KeyName())
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
	direct := make([]directChange, 0, len(evs))
	for _, ev := range evs {
		c, d := n.peerChanges(ev, level)
		changes = append(changes, c...)
		direct = append(direct, d...)
	}
	what := describePeers(n.table, changes)
	if err := n.table.Apply(changes); err != nil {
		n.log.Warn("peers skipped", "err", err)
	}
	n.direct.Apply(direct)
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

// DefaultPollYields is `vxrouter run`'s --poll-yields. 0: a loop that
// finds nothing sleeps at once. Yielding first (3) gave one TCP stream
// 6-12% more on an idle 2-CPU VM (an earlier measurement), but each yield
// hands the CPU to whatever else runs while the loop keeps Go's only P,
// and on a machine with other work that costs more than it gains:
// `vxrouter bench --scenarios vxrouter-offload --tests tcp1,latency
// --run-arg=--poll-yields=0|3`, three alternated pairs on a loaded 2-CPU
// VM (2026-12-06): one stream 4.68/4.93/5.08 against 4.27/4.49/4.83
// Gbit/s, round trip p50 0.080-0.082 against 0.117-0.127 ms.
const DefaultPollYields = 0

// answerSource is the address the node's ICMP answers come from: the
// overlay network's first address, which flannel never hands out (the
// first subnet is skipped unless SubnetMin says otherwise), or, if this
// node's subnet holds it, the first address of the subnet after. Not the
// TUN device's own address: a packet from a local address arriving on
// the TUN device is a martian to the node's kernel, which drops it.
func answerSource(network, own netip.Prefix) netip.Addr {
	a := network.Addr()
	if !own.Contains(a) {
		return a
	}
	// own's first address plus its size: add 1 at bit (len - bits).
	b := own.Masked().Addr().As16()
	bit := 128 - (own.Addr().BitLen() - own.Bits())
	for i := (bit - 1) / 8; i >= 0; i-- {
		inc := byte(1)
		if i == (bit-1)/8 {
			inc = 1 << (7 - (bit-1)%8)
		}
		b[i] += inc
		if b[i] >= inc { // no carry
			break
		}
	}
	next := netip.AddrFrom16(b)
	if a.Is4() {
		next = next.Unmap()
	}
	if !network.Contains(next) {
		return netip.Addr{} // own is the network's last subnet and holds its first address: answer nothing
	}
	return next
}
