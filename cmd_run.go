package main

import (
	"flag"
	"fmt"
	"net"
	"net/netip"
	"os"
	"regexp"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"vxrouter/lease"
	"vxrouter/masq"
	"vxrouter/node"
	"vxrouter/tunnel"
)

func runCommand() *cli.Command {
	return &cli.Command{
		Name:  "run",
		Usage: "run this host's node: take a subnet lease, bring up the TUN device, forward",
		Description: "run takes a subnet lease from etcd (flannel's layout), creates and configures\n" +
			"the TUN device, writes subnet.env, learns every other node's lease and forwards\n" +
			"overlay traffic as VXLAN over UDP until SIGINT or SIGTERM. Needs root (or\n" +
			"CAP_NET_ADMIN). The lease stays in etcd on exit, so a restart keeps the subnet.\n" +
			"With --kube-subnet-mgr the subnet is the Node's podCIDR from the Kubernetes API,\n" +
			"the config comes from --net-config-path, and peers are the other Nodes, as with\n" +
			"flanneld --kube-subnet-mgr; the etcd flags are then unused.",
		// etcd's flags (endpoints, prefix, TLS, auth) are shared with
		// `lease`; the Kubernetes mode's are in cmd_run_kube.go.
		Flags: append([]cli.Flag{
			logLevelFlag(),
			&cli.StringSliceFlag{Name: "iface", Usage: "underlay interface, by name or address; repeat it (or separate with commas) to try each in order, the first that exists and has an address of each family the overlay carries wins (default: the default route's)", EnvVars: []string{"VXROUTER_IFACE"}},
			&repeatFlag{GenericFlag: cli.GenericFlag{Name: "iface-regex", Value: &wholeValues{}, Usage: "`REGEX` matched against each interface's addresses (of each family the overlay carries), then names, for the underlay; repeat it to try each in order, after every --iface (the variable holds one)", EnvVars: []string{"VXROUTER_IFACE_REGEX"}}},
			&cli.StringFlag{Name: "iface-can-reach", Usage: "use the interface (and its address) the kernel routes `ADDRESS` through, as ip route get ADDRESS shows it; tried after --iface and --iface-regex", EnvVars: []string{"VXROUTER_IFACE_CAN_REACH"}},
			&cli.StringFlag{Name: "public-ip", Usage: "the address peers send to (default: the underlay interface's first IPv4; without --iface*, the underlay is the interface that has this address)", EnvVars: []string{"VXROUTER_PUBLIC_IP"}},
			&cli.StringFlag{Name: "public-ipv6", Usage: "the IPv6 address peers send to, when the overlay carries IPv6 (default: the underlay interface's first global or unique-local IPv6; without --iface* nor --public-ip, the underlay is the interface that has this address)", EnvVars: []string{"VXROUTER_PUBLIC_IPV6"}},
			&cli.StringFlag{Name: "subnet-file", Value: node.DefaultSubnetFile, Usage: "where to write subnet.env", EnvVars: []string{"VXROUTER_SUBNET_FILE"}},
			&cli.StringFlag{Name: "state-dir", Value: node.DefaultStateDir, Usage: "where the node keeps its VTEP MAC", EnvVars: []string{"VXROUTER_STATE_DIR"}},
			&cli.StringFlag{Name: "tun-name", Value: node.DefaultTunName, Usage: "name of the TUN device", EnvVars: []string{"VXROUTER_TUN_NAME"}},
			&cli.StringFlag{Name: "tun-backend", Value: tunnel.BackendOffload, Usage: "TUN backend: offload (TSO/GRO super-packets, multi-queue; falls back to water where the kernel refuses) or water (one packet per syscall)", EnvVars: []string{"VXROUTER_TUN_BACKEND"}},
			&cli.IntFlag{Name: "queues", Value: runtime.NumCPU(), Usage: "TUN queues, underlay sockets and forwarding loop pairs (offload backend)", EnvVars: []string{"VXROUTER_QUEUES"}},
			&cli.IntFlag{Name: "poll-yields", Value: node.DefaultPollYields, Usage: "times a forwarding loop that finds nothing to read yields its CPU (sched_yield) and looks again before it sleeps or, on an offload TUN queue, ends its batch (0, the default: at once, lowest latency; more: a little more throughput on a machine with nothing else to run; the water backend's TUN side never yields)", EnvVars: []string{"VXROUTER_POLL_YIELDS"}},
			&cli.StringFlag{Name: "src-port-range", Value: "auto", Usage: "outer UDP source ports, picked per inner flow so ECMP and RSS spread the overlay's flows (RFC 7348): auto (the host's ip_local_port_range, as Linux's vxlan), LO-HI, or fixed (every datagram from the VXLAN port)", EnvVars: []string{"VXROUTER_SRC_PORT_RANGE"}},
			&cli.BoolFlag{Name: "anti-spoofing", Value: true, Usage: "deliver a datagram from a peer only if its inner source address is in that peer's subnet; false for a peer that routes other networks' traffic into the overlay without masquerading it (a gateway node)", EnvVars: []string{"VXROUTER_ANTI_SPOOFING"}},
			&cli.BoolFlag{Name: "partial-checksums", Value: true, Usage: "between vxrouter nodes, leave inner TCP and UDP checksums unfinished (the outer UDP checksum covers every byte) and advertise that this node takes them so (\"PartialCsum\":true in the lease; flannel ignores it and always gets complete checksums); false computes every one", EnvVars: []string{"VXROUTER_PARTIAL_CHECKSUMS"}},
			&cli.BoolFlag{Name: "ip-masq", Usage: "set up IP masquerade rules for traffic leaving the overlay network, as flanneld --ip-masq does (iptables, or nftables with \"EnableNFTables\":true in the config); subnet.env then says FLANNEL_IPMASQ=true", EnvVars: []string{"VXROUTER_IP_MASQ"}},
			&cli.BoolFlag{Name: "ip-masq-fully-random-disable", Usage: "masquerade without fully random source ports (--random-fully), as flanneld's flag of that name", EnvVars: []string{"VXROUTER_IP_MASQ_FULLY_RANDOM_DISABLE"}},
			&cli.IntFlag{Name: "iptables-resync", Value: int(masq.DefaultResync / time.Second), Usage: "seconds between checks that the --ip-masq rules are still in place (put back if another program removed them)", EnvVars: []string{"VXROUTER_IPTABLES_RESYNC"}},
			&cli.IntFlag{Name: "gomaxprocs", Usage: "CPUs the node's Go code may use at once (0: on a host with 2 CPUs or fewer, 1, and as many as there are queues carrying traffic while they do; else Go's default, all; the GOMAXPROCS environment variable wins)", EnvVars: []string{"VXROUTER_GOMAXPROCS"}},
			&cli.StringFlag{Name: "cpuprofile", Usage: "write a CPU profile of the node to this file", Hidden: true},
			&cli.StringFlag{Name: "admin-socket", Value: "/run/vxrouter/admin.sock", Usage: "unix socket of the admin endpoint (/healthz, /metrics, /counters, /peers); empty for none", EnvVars: []string{"VXROUTER_ADMIN_SOCKET"}},
			&cli.StringFlag{Name: "metrics-addr", Usage: "also serve the read-only admin endpoint (/healthz, /readyz, /metrics, /counters, /peers) on this TCP address, e.g. 127.0.0.1:9472", EnvVars: []string{"VXROUTER_METRICS_ADDR"}},
			&cli.StringFlag{Name: "healthz-ip", Value: "0.0.0.0", Usage: "flannel's flag: with --healthz-port, the address of the TCP endpoint (--metrics-addr IP:PORT)", EnvVars: []string{"VXROUTER_HEALTHZ_IP"}},
			&cli.IntFlag{Name: "healthz-port", Usage: "flannel's flag: serve the read-only admin endpoint (/healthz, /readyz, ...) on this TCP port of --healthz-ip (0: not)", EnvVars: []string{"VXROUTER_HEALTHZ_PORT"}},
			&cli.StringFlag{Name: "capture", Usage: "write what the node sends to and accepts from peers to this pcap file (tshark -r FILE -d udp.port==8472,vxlan)", EnvVars: []string{"VXROUTER_CAPTURE"}},
			&cli.Int64Flag{Name: "capture-limit", Value: node.DefaultCaptureLimit, Usage: "stop writing the capture at this many bytes", EnvVars: []string{"VXROUTER_CAPTURE_LIMIT"}},
			&cli.DurationFlag{Name: "etcd-timeout", Value: 30 * time.Second, Usage: "how long to wait for etcd at start before giving up", EnvVars: []string{"VXROUTER_ETCD_TIMEOUT"}},
			&cli.DurationFlag{Name: "lease-ttl", Value: lease.DefaultTTL, Usage: "how long a lease lives without renewal", EnvVars: []string{"VXROUTER_LEASE_TTL"}},
		}, append(etcdFlags(), kubeFlags()...)...),
		Action: func(c *cli.Context) error {
			log, err := newLogger(c)
			if err != nil {
				return err
			}
			cfg, err := nodeConfig(c)
			if err != nil {
				return err
			}
			cfg.Log = log
			procs := c.Int("gomaxprocs")
			if procs < 0 {
				return fmt.Errorf("--gomaxprocs %d: want 0 (automatic) or more", procs)
			}
			// Set only when it changes something: setting it at all stops
			// Go from following the container's CPU limit.
			_, envSet := os.LookupEnv("GOMAXPROCS")
			if want := gomaxprocs(procs, runtime.GOMAXPROCS(0), envSet); procs > 0 || want != runtime.GOMAXPROCS(0) {
				runtime.GOMAXPROCS(want)
				if procs == 0 {
					// Automatic on a small host: one P, more while
					// several queues carry traffic.
					cfg.AutoProcs = runtime.NumCPU()
				}
			}
			if path := c.String("cpuprofile"); path != "" {
				stop, err := startCPUProfile(path)
				if err != nil {
					return err
				}
				defer stop()
			}
			src, err := kubeSource(c.Context, c, &cfg, log)
			if err != nil {
				return err
			}
			if src != nil {
				defer src.Close()
			}
			n, err := node.Start(c.Context, cfg)
			if err != nil {
				return err
			}
			return n.Run(c.Context)
		},
	}
}

// nodeConfig turns run's flags into a node.Config, checking each.
func nodeConfig(c *cli.Context) (node.Config, error) {
	prefix, err := etcdPrefix(c)
	if err != nil {
		return node.Config{}, err
	}
	cfg := node.Config{
		EtcdPrefix:    prefix,
		SubnetFile:    c.String("subnet-file"),
		StateDir:      c.String("state-dir"),
		TunName:       c.String("tun-name"),
		TunBackend:    c.String("tun-backend"),
		Queues:        c.Int("queues"),
		PollYields:    c.Int("poll-yields"),
		FullChecksums: !c.Bool("partial-checksums"),
		NoSourceCheck: !c.Bool("anti-spoofing"),
		LeaseTTL:      c.Duration("lease-ttl"),

		IPMasq:                   c.Bool("ip-masq"),
		IPMasqRandomFullyDisable: c.Bool("ip-masq-fully-random-disable"),
		IPTablesResync:           time.Duration(c.Int("iptables-resync")) * time.Second,

		EtcdTimeout:  c.Duration("etcd-timeout"),
		AdminSocket:  c.String("admin-socket"),
		Capture:      c.String("capture"),
		CaptureLimit: c.Int64("capture-limit"),
	}
	if cfg.MetricsAddr, err = metricsAddr(c); err != nil {
		return cfg, err
	}
	etcd, err := etcdClientConfig(c)
	if err != nil {
		return cfg, err
	}
	cfg.Etcd = etcd
	if err := underlayFlags(c, &cfg); err != nil {
		return cfg, err
	}
	if s := c.String("public-ip"); s != "" {
		ip, err := netip.ParseAddr(s)
		if err != nil || !ip.Is4() {
			return cfg, fmt.Errorf("--public-ip %q: want an IPv4 address", s)
		}
		cfg.PublicIP = ip
	}
	if s := c.String("public-ipv6"); s != "" {
		ip, err := netip.ParseAddr(s)
		if err != nil || !ip.Is6() || ip.Is4In6() || ip.Zone() != "" || !ip.IsGlobalUnicast() || ip.IsLinkLocalUnicast() {
			return cfg, fmt.Errorf("--public-ipv6 %q: want a global or unique-local IPv6 address, like fd77::1", s)
		}
		cfg.PublicIPv6 = ip
	}
	if cfg.CaptureLimit <= 0 {
		return cfg, fmt.Errorf("--capture-limit %d: must be positive", cfg.CaptureLimit)
	}
	if cfg.EtcdTimeout <= 0 {
		return cfg, fmt.Errorf("--etcd-timeout %s: must be positive", cfg.EtcdTimeout)
	}
	if cfg.LeaseTTL < 10*time.Second {
		return cfg, fmt.Errorf("--lease-ttl %s: must be at least 10s", cfg.LeaseTTL)
	}
	if len(cfg.TunName) == 0 || len(cfg.TunName) > 15 {
		return cfg, fmt.Errorf("--tun-name %q: must be 1 to 15 characters", cfg.TunName)
	}
	if cfg.TunBackend != tunnel.BackendOffload && cfg.TunBackend != tunnel.BackendWater {
		return cfg, fmt.Errorf("--tun-backend %q: want %s or %s", cfg.TunBackend, tunnel.BackendOffload, tunnel.BackendWater)
	}
	if cfg.Queues < 1 || cfg.Queues > 64 {
		return cfg, fmt.Errorf("--queues %d: want 1 to 64", cfg.Queues)
	}
	switch r := c.String("src-port-range"); r {
	case "auto", "":
	case "fixed":
		cfg.FixedSourcePort = true
	default:
		pr, err := tunnel.ParsePortRange(r)
		if err != nil {
			return cfg, fmt.Errorf("--src-port-range: %w (or auto, or fixed)", err)
		}
		cfg.SourcePorts = pr
	}
	if r := c.Int("iptables-resync"); r < 1 || r > 3600 {
		return cfg, fmt.Errorf("--iptables-resync %d: want 1 to 3600 seconds", r)
	}
	if cfg.PollYields < 0 || cfg.PollYields > 100 {
		return cfg, fmt.Errorf("--poll-yields %d: want 0 to 100", cfg.PollYields)
	}
	return cfg, nil
}

// underlayFlags reads --iface, --iface-regex and --iface-can-reach. A
// regex that does not compile is an error here, where flanneld would log
// it and try the next: a typo in a flag should stop the node, not pick
// another interface.
func underlayFlags(c *cli.Context, cfg *node.Config) error {
	for _, s := range c.StringSlice("iface") {
		if s != "" {
			cfg.Iface = append(cfg.Iface, s)
		}
	}
	for _, s := range c.Generic("iface-regex").(*wholeValues).vals {
		re, err := regexp.Compile(s)
		if err != nil {
			return fmt.Errorf("--iface-regex %q: %w", s, err)
		}
		cfg.IfaceRegex = append(cfg.IfaceRegex, re)
	}
	if s := c.String("iface-can-reach"); s != "" {
		ip, err := netip.ParseAddr(s)
		if err != nil {
			return fmt.Errorf("--iface-can-reach %q: want an IP address", s)
		}
		cfg.IfaceCanReach = ip.Unmap()
	}
	return nil
}

// wholeValues is the value of a repeatable flag whose every occurrence is
// taken whole: urfave/cli's StringSliceFlag cuts values at commas, and a
// regex such as 10\.0\.[0-9]{1,3}\. has one. Its environment variable
// holds one value, which values on the command line replace.
type wholeValues struct {
	vals    []string
	fromEnv bool
}

func (w *wholeValues) Set(s string) error {
	if w.fromEnv {
		w.vals, w.fromEnv = nil, false
	}
	w.vals = append(w.vals, s)
	return nil
}

func (w *wholeValues) String() string { return strings.Join(w.vals, " ") }

// repeatFlag is a GenericFlag over wholeValues.
type repeatFlag struct{ cli.GenericFlag }

func (f *repeatFlag) Apply(set *flag.FlagSet) error {
	if err := f.GenericFlag.Apply(set); err != nil {
		return err
	}
	// Whatever is set by now came from the environment.
	w := f.Value.(*wholeValues)
	w.fromEnv = len(w.vals) > 0
	return nil
}

// IsSliceFlag and String make --help show that it repeats.
func (f *repeatFlag) IsSliceFlag() bool { return true }
func (f *repeatFlag) String() string    { return cli.FlagStringer(f) }

// splitEndpoints parses a comma-separated list of etcd endpoints.
func splitEndpoints(s string) ([]string, error) {
	var eps []string
	for _, e := range strings.Split(s, ",") {
		e = strings.TrimSpace(e)
		if e == "" {
			continue
		}
		if !strings.Contains(e, "://") {
			return nil, fmt.Errorf("--etcd-endpoints: %q needs a scheme (http://, https:// or unix://)", e)
		}
		eps = append(eps, e)
	}
	if len(eps) == 0 {
		return nil, fmt.Errorf("--etcd-endpoints: no endpoint in %q", s)
	}
	return eps, nil
}

// startCPUProfile writes a CPU profile of the node to path until stop is
// called (at exit): a hidden flag, for finding the data plane's hot spots.
// "%p" in path becomes the process id, so nodes started alike (as a bench
// does) write one file each.
func startCPUProfile(path string) (stop func(), err error) {
	path = strings.ReplaceAll(path, "%p", strconv.Itoa(os.Getpid()))
	f, err := os.Create(path)
	if err != nil {
		return nil, fmt.Errorf("--cpuprofile: %w", err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, fmt.Errorf("--cpuprofile: %w", err)
	}
	return func() {
		pprof.StopCPUProfile()
		f.Close()
	}, nil
}

// gomaxprocs is how many CPUs the node's Go code runs on: what --gomaxprocs
// says, else (0) what the GOMAXPROCS environment variable said (envSet:
// goDefault is it), else 1 where Go's default is 2 or fewer, else Go's
// default.
//
// One, on a small host: there the node shares its two cores with the
// workloads it carries and the kernel's softirqs, and one P wakes fewer
// threads per packet. vxrouter bench --run-arg=--gomaxprocs=2 against
// the default (1) on this 2-core machine, three alternated pairs: TCP 1
// stream 5.4-6.7 against 6.7-8.9 Gbit/s with one P; 4 streams 7.1-9.0
// against 5.9-7.9 (there two Ps win).
func gomaxprocs(flag, goDefault int, envSet bool) int {
	switch {
	case flag > 0:
		return flag
	case envSet || goDefault > 2:
		return goDefault
	}
	return 1
}

// metricsAddr is the TCP address of the admin endpoint: --metrics-addr,
// or flannel's --healthz-ip and --healthz-port, which say the same thing
// (flannel serves /healthz and /readyz there). Both given must agree.
func metricsAddr(c *cli.Context) (string, error) {
	addr := c.String("metrics-addr")
	if addr != "" {
		if _, _, err := net.SplitHostPort(addr); err != nil {
			return "", fmt.Errorf("--metrics-addr %q: want HOST:PORT, e.g. 127.0.0.1:9472", addr)
		}
	}
	port, ip := c.Int("healthz-port"), c.String("healthz-ip")
	if port < 0 || port > 65535 {
		return "", fmt.Errorf("--healthz-port %d: want 1 to 65535, or 0 for none", port)
	}
	if _, err := netip.ParseAddr(ip); err != nil {
		return "", fmt.Errorf("--healthz-ip %q: want an IP address, e.g. 0.0.0.0 (every address) or 127.0.0.1", ip)
	}
	if port == 0 {
		if c.IsSet("healthz-ip") {
			return "", fmt.Errorf("--healthz-ip %s does nothing without --healthz-port", ip)
		}
		return addr, nil
	}
	healthz := net.JoinHostPort(ip, strconv.Itoa(port))
	if addr != "" && !sameAddrPort(addr, healthz) {
		return "", fmt.Errorf("--metrics-addr %s and --healthz-ip/--healthz-port %s name two addresses for the one TCP endpoint: give one", addr, healthz)
	}
	return healthz, nil
}

// sameAddrPort reports whether a and b, HOST:PORT, are one address.
func sameAddrPort(a, b string) bool {
	pa, errA := netip.ParseAddrPort(a)
	pb, errB := netip.ParseAddrPort(b)
	if errA == nil && errB == nil {
		return pa == pb
	}
	return a == b
}
