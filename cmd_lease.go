package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v2"
	clientv3 "go.etcd.io/etcd/client/v3"

	"vxrouter/lease"
)

// etcdFlags are the flags of every command that talks to etcd: where it
// is, the overlay's prefix, and how to prove who we are. The names are
// flannel's, so its users can carry their settings over.
func etcdFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "etcd-endpoints", Value: "http://127.0.0.1:2379", Usage: "comma-separated etcd endpoints: http://, https://, unix:// or unixs://", EnvVars: []string{"VXROUTER_ETCD_ENDPOINTS"}},
		&cli.StringFlag{Name: "etcd-prefix", Value: lease.DefaultPrefix, Usage: "etcd prefix of the overlay's config and subnets", EnvVars: []string{"VXROUTER_ETCD_PREFIX"}},
		&cli.StringFlag{Name: "etcd-cafile", Usage: "PEM CA bundle that signed etcd's server certificate (default with https://: the system's)", EnvVars: []string{"VXROUTER_ETCD_CAFILE"}, TakesFile: true},
		&cli.StringFlag{Name: "etcd-certfile", Usage: "PEM client certificate, for an etcd with --client-cert-auth", EnvVars: []string{"VXROUTER_ETCD_CERTFILE"}, TakesFile: true},
		&cli.StringFlag{Name: "etcd-keyfile", Usage: "PEM key of --etcd-certfile", EnvVars: []string{"VXROUTER_ETCD_KEYFILE"}, TakesFile: true},
		&cli.StringFlag{Name: "etcd-username", Usage: "user, for an etcd with auth enabled", EnvVars: []string{"VXROUTER_ETCD_USERNAME"}},
		// Never shown: no default, and the value is left out of errors and logs.
		&cli.StringFlag{Name: "etcd-password", Usage: "password of --etcd-username (better in the environment: arguments show in ps)", EnvVars: []string{"VXROUTER_ETCD_PASSWORD"}},
	}
}

// etcdClientOptions reads etcdFlags.
func etcdClientOptions(c *cli.Context) (lease.ClientOptions, error) {
	eps, err := splitEndpoints(c.String("etcd-endpoints"))
	if err != nil {
		return lease.ClientOptions{}, err
	}
	return lease.ClientOptions{
		Endpoints: eps,
		CAFile:    c.String("etcd-cafile"),
		CertFile:  c.String("etcd-certfile"),
		KeyFile:   c.String("etcd-keyfile"),
		Username:  c.String("etcd-username"),
		Password:  c.String("etcd-password"),
	}, nil
}

// etcdClientConfig is the clientv3.Config that etcdFlags ask for.
func etcdClientConfig(c *cli.Context) (clientv3.Config, error) {
	o, err := etcdClientOptions(c)
	if err != nil {
		return clientv3.Config{}, err
	}
	return lease.ClientConfig(o)
}

// etcdPrefix reads --etcd-prefix.
func etcdPrefix(c *cli.Context) (string, error) {
	p := c.String("etcd-prefix")
	if !strings.HasPrefix(p, "/") {
		return "", fmt.Errorf("--etcd-prefix %q: must start with /", p)
	}
	return strings.TrimRight(p, "/"), nil
}

func leaseCommand() *cli.Command {
	return &cli.Command{
		Name:  "lease",
		Usage: "see and manage the overlay's subnet leases and config in etcd",
		Description: "The overlay's state is flannel's: a config at <prefix>/config and one key per\n" +
			"subnet under <prefix>/subnets/. These commands read and change it as flannel's\n" +
			"users do with etcdctl, but check what they write. Each takes the etcd flags of run.",
		Subcommands: []*cli.Command{
			leaseListCommand(),
			leaseConfigCommand(),
			leaseReserveCommand(),
			leaseReleaseCommand(),
		},
	}
}

// leaseFlags are every lease subcommand's flags: etcd's, the log level,
// how long to wait, and extra.
func leaseFlags(extra ...cli.Flag) []cli.Flag {
	return slices.Concat(etcdFlags(), []cli.Flag{
		// run's, but quieter by default: at info the registry would narrate
		// what the command prints anyway.
		&cli.StringFlag{Name: "log-level", Value: "warn", Usage: "debug, info, warn or error", EnvVars: []string{"VXROUTER_LOG_LEVEL"}},
		&cli.DurationFlag{Name: "etcd-timeout", Value: 10 * time.Second, Usage: "how long to wait for etcd", EnvVars: []string{"VXROUTER_ETCD_TIMEOUT"}},
	}, extra)
}

func leaseListCommand() *cli.Command {
	return &cli.Command{
		Name:      "list",
		Usage:     "show every subnet key: subnet, public IP, VTEP MAC, backend, expiry",
		ArgsUsage: " ",
		Description: "Reservations (keys without an etcd lease) show \"reserved\" as their expiry.\n" +
			"Keys whose name or value does not parse are left out, with a warning. When a\n" +
			"lease has an IPv6 part (a dual-stack or IPv6-only overlay), the IPv6 subnet and\n" +
			"public IPv6 get columns of their own; two VTEP MACs (a flannel node's flannel.1\n" +
			"and flannel-v6.1) show as IPv4's/IPv6's.",
		Flags: leaseFlags(&cli.BoolFlag{Name: "json", Usage: "print a JSON array instead of a table"}),
		Action: func(c *cli.Context) error {
			if c.NArg() > 0 {
				return fmt.Errorf("lease list takes no arguments, got %q", c.Args().Slice())
			}
			return withRegistry(c, func(ctx context.Context, r *lease.Registry) error {
				leases, _, err := r.Leases(ctx)
				if err != nil {
					return err
				}
				slices.SortFunc(leases, func(a, b lease.Lease) int {
					if c := a.Subnet.Addr().Compare(b.Subnet.Addr()); c != 0 {
						return c
					}
					return a.IPv6Subnet.Addr().Compare(b.IPv6Subnet.Addr())
				})
				if c.Bool("json") {
					return printLeasesJSON(c.App.Writer, leases, time.Now())
				}
				return printLeases(c.App.Writer, leases, time.Now())
			})
		},
	}
}

// printLeases writes the table `lease list` shows. The IPv6 columns are
// there only when some lease has an IPv6 part, so an IPv4 overlay's table
// is as it always was.
func printLeases(w io.Writer, leases []lease.Lease, now time.Time) error {
	v6 := slices.ContainsFunc(leases, func(l lease.Lease) bool { return l.IPv6Subnet.IsValid() })
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	if v6 {
		fmt.Fprintln(tw, "SUBNET\tIPV6 SUBNET\tPUBLIC IP\tPUBLIC IPV6\tVTEP MAC\tBACKEND\tLEASE\tEXPIRES")
	} else {
		fmt.Fprintln(tw, "SUBNET\tPUBLIC IP\tVTEP MAC\tBACKEND\tLEASE\tEXPIRES")
	}
	for _, l := range leases {
		id, exp := "-", "reserved"
		if !l.Reservation() {
			// Hex, as etcdctl shows and takes lease IDs.
			id = fmt.Sprintf("%x", int64(l.LeaseID))
			exp = "expired"
			if left := l.Expiration.Sub(now); left > 0 {
				exp = fmt.Sprintf("%s (in %s)", l.Expiration.UTC().Format(time.RFC3339), left.Round(time.Second))
			}
		}
		if v6 {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", orDash(l.Subnet), orDash(l.IPv6Subnet), orDash(l.Attrs.PublicIP), orDash(l.Attrs.PublicIPv6),
				vtepMACs(l.Attrs), l.Attrs.BackendType, id, exp)
			continue
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", l.Subnet, l.Attrs.PublicIP, vtepMACs(l.Attrs), l.Attrs.BackendType, id, exp)
	}
	return tw.Flush()
}

// orDash is v as a string, or "-" when it is not set.
func orDash[T interface {
	IsValid() bool
	String() string
}](v T) string {
	if !v.IsValid() {
		return "-"
	}
	return v.String()
}

// vtepMACs is a lease's VTEP MAC, or its two joined by "/" when its
// IPv4 and IPv6 VTEPs differ (a flannel node's devices), or "-".
func vtepMACs(a lease.Attrs) string {
	var out []string
	if a.VtepMAC != nil {
		out = append(out, a.VtepMAC.String())
	}
	if d := a.BackendV6Data; d != nil && (a.VtepMAC == nil || d.VtepMAC.String() != a.VtepMAC.String()) {
		out = append(out, d.VtepMAC.String())
	}
	if len(out) == 0 {
		return "-"
	}
	return strings.Join(out, "/")
}

// leaseJSON is one lease in `lease list --json`.
type leaseJSON struct {
	Subnet      string `json:",omitempty"`
	IPv6Subnet  string `json:",omitempty"`
	PublicIP    string `json:",omitempty"`
	PublicIPv6  string `json:",omitempty"`
	BackendType string
	VNI         int
	VtepMAC     string `json:",omitempty"`
	VtepMACv6   string `json:",omitempty"` // BackendV6Data's
	Reserved    bool
	LeaseID     string     `json:",omitempty"` // hex, as etcdctl takes it
	Expiration  *time.Time `json:",omitempty"`
	TTL         int64      `json:",omitempty"` // seconds left
}

func printLeasesJSON(w io.Writer, leases []lease.Lease, now time.Time) error {
	out := make([]leaseJSON, 0, len(leases))
	for _, l := range leases {
		j := leaseJSON{
			BackendType: l.Attrs.BackendType,
			VNI:         l.Attrs.VNI,
			Reserved:    l.Reservation(),
		}
		if l.Subnet.IsValid() {
			j.Subnet, j.PublicIP = l.Subnet.String(), l.Attrs.PublicIP.String()
		}
		if l.IPv6Subnet.IsValid() {
			j.IPv6Subnet = l.IPv6Subnet.String()
		}
		if l.Attrs.PublicIPv6.IsValid() {
			j.PublicIPv6 = l.Attrs.PublicIPv6.String()
		}
		if len(l.Attrs.VtepMAC) > 0 {
			j.VtepMAC = l.Attrs.VtepMAC.String()
		}
		if d := l.Attrs.BackendV6Data; d != nil {
			j.VtepMACv6 = d.VtepMAC.String()
			if !l.Attrs.PublicIP.IsValid() {
				j.VNI = d.VNI
			}
		}
		if !l.Reservation() {
			j.LeaseID = fmt.Sprintf("%x", int64(l.LeaseID))
			exp := l.Expiration.UTC()
			j.Expiration = &exp
			j.TTL = max(int64(l.Expiration.Sub(now)/time.Second), 0)
		}
		out = append(out, j)
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(out)
}

func leaseConfigCommand() *cli.Command {
	return &cli.Command{
		Name:  "config",
		Usage: "read or write the overlay's config (<prefix>/config)",
		Subcommands: []*cli.Command{
			{
				Name:      "get",
				Usage:     "print the config as stored",
				ArgsUsage: " ",
				Description: "Prints the JSON at <prefix>/config as it is stored, and fails if it does not\n" +
					"validate. --effective prints it with flannel's defaults filled in instead.",
				Flags: leaseFlags(&cli.BoolFlag{Name: "effective", Usage: "print the config with defaults filled in (SubnetLen, SubnetMin, SubnetMax, VNI, Port)"}),
				Action: func(c *cli.Context) error {
					if c.NArg() > 0 {
						return fmt.Errorf("lease config get takes no arguments, got %q", c.Args().Slice())
					}
					return withRegistry(c, func(ctx context.Context, r *lease.Registry) error {
						return configGet(ctx, c, r)
					})
				},
			},
			{
				Name:      "set",
				Usage:     "check a config and write it",
				ArgsUsage: "JSON|@FILE|@-",
				Description: "Writes flannel's config JSON to <prefix>/config, given inline, in a file (@FILE)\n" +
					"or on stdin (@-). It is checked first, as vxrouter nodes check it; a config that\n" +
					"does not pass is refused with the reason, and nothing is written. Fields vxrouter\n" +
					"does not use (EnableNFTables, Backend options, ...) are kept for flannel nodes.\n\n" +
					"Example: vxrouter lease config set '{\"Network\":\"172.16.0.0/16\",\"Backend\":{\"Type\":\"vxlan\"}}'",
				Flags: leaseFlags(),
				Action: func(c *cli.Context) error {
					if c.NArg() != 1 {
						return errors.New(`lease config set takes one argument: the config JSON, @FILE or @- (stdin)`)
					}
					b, err := readConfigArg(c.Args().First(), c.App.Reader)
					if err != nil {
						return err
					}
					return withRegistry(c, func(ctx context.Context, r *lease.Registry) error {
						return configSet(ctx, c, r, b)
					})
				},
			},
		},
	}
}

func configGet(ctx context.Context, c *cli.Context, r *lease.Registry) error {
	b, err := r.ConfigJSON(ctx)
	if errors.Is(err, lease.ErrNotFound) {
		return fmt.Errorf(`no config at %s: write one, e.g. vxrouter lease config set '{"Network":"172.16.0.0/16","Backend":{"Type":"vxlan"}}'`, r.ConfigKey())
	}
	if err != nil {
		return err
	}
	cfg, perr := lease.ParseConfig(b)
	if c.Bool("effective") && perr == nil {
		if b, err = cfg.MarshalJSON(); err != nil {
			return err
		}
	}
	fmt.Fprintln(c.App.Writer, strings.TrimSpace(string(b)))
	if perr != nil {
		return fmt.Errorf("%s does not validate (nodes will refuse it): %w", r.ConfigKey(), perr)
	}
	return nil
}

// flannelConfigFields are the top-level fields of flannel's config; others
// are most likely typos, which encoding/json would silently ignore.
var flannelConfigFields = []string{
	"EnableIPv4", "EnableIPv6", "EnableNFTables", "Network", "IPv6Network", "Networks", "IPv6Networks",
	"SubnetLen", "SubnetMin", "SubnetMax", "IPv6SubnetLen", "IPv6SubnetMin", "IPv6SubnetMax", "Backend",
}

func configSet(ctx context.Context, c *cli.Context, r *lease.Registry, b []byte) error {
	cfg, err := lease.ParseConfig(b)
	if err != nil {
		return fmt.Errorf("refused, nothing written to %s: %w", r.ConfigKey(), err)
	}
	errw := errWriter(c)
	var fields map[string]json.RawMessage
	if json.Unmarshal(b, &fields) == nil {
		var unknown []string
		for f := range fields {
			if !slices.Contains(flannelConfigFields, f) {
				unknown = append(unknown, f)
			}
		}
		slices.Sort(unknown)
		for _, f := range unknown {
			fmt.Fprintf(errw, "warning: field %q is not one of flannel's config fields; it is ignored (a typo?)\n", f)
		}
	}
	// Nodes whose lease the new config does not contain give it up and
	// take another when they next acquire: say so before it happens.
	leases, _, err := r.Leases(ctx)
	if err != nil {
		return err
	}
	for _, l := range leases {
		if !cfg.Fits(l.Subnet, l.IPv6Subnet) {
			what := "its node will move to another subnet when it next acquires"
			if l.Reservation() {
				what = "this reservation will be ignored"
			}
			owner := "PublicIP " + l.Attrs.PublicIP.String()
			if !l.Attrs.PublicIP.IsValid() {
				owner = "PublicIPv6 " + l.Attrs.PublicIPv6.String()
			}
			fmt.Fprintf(errw, "warning: %s (%s) is outside the new config: %s\n", strings.Join(prefixStrings(l.Subnets()), " and "), owner, what)
		}
	}
	if _, err := r.PutConfigJSON(ctx, b); err != nil {
		return err
	}
	var nets []string
	if cfg.IPv4Enabled() {
		nets = append(nets, fmt.Sprintf("Network %s, /%d subnets %s..%s", cfg.Network, cfg.SubnetLen, cfg.SubnetMin, cfg.SubnetMax))
	}
	if cfg.IPv6Enabled() {
		nets = append(nets, fmt.Sprintf("IPv6Network %s, /%d subnets %s..%s", cfg.IPv6Network, cfg.IPv6SubnetLen, cfg.IPv6SubnetMin, cfg.IPv6SubnetMax))
	}
	fmt.Fprintf(c.App.Writer, "wrote %s: %s, %s VNI %d port %d\n",
		r.ConfigKey(), strings.Join(nets, ", "), cfg.Backend.Type, cfg.Backend.VNI, cfg.Backend.Port)
	return nil
}

// readConfigArg returns config set's JSON: the argument itself, a file's
// contents (@FILE) or stdin (@-).
func readConfigArg(arg string, stdin io.Reader) ([]byte, error) {
	name, ok := strings.CutPrefix(arg, "@")
	switch {
	case !ok:
		return []byte(arg), nil
	case name == "-":
		if stdin == nil {
			stdin = os.Stdin
		}
		b, err := io.ReadAll(stdin)
		if err != nil {
			return nil, fmt.Errorf("read config from stdin: %w", err)
		}
		return b, nil
	default:
		b, err := os.ReadFile(name)
		if err != nil {
			return nil, fmt.Errorf("read config: %w", err)
		}
		return b, nil
	}
}

func leaseReserveCommand() *cli.Command {
	return &cli.Command{
		Name:      "reserve",
		Usage:     "reserve a subnet for the node with a public IP",
		ArgsUsage: "SUBNET [IPV6-SUBNET]",
		Description: "Writes SUBNET's key without an etcd lease: a reservation, which never expires,\n" +
			"which nobody else takes, and which the node with --public-ip takes on its next\n" +
			"start in preference to anything else (flannel nodes too). SUBNET must be one the\n" +
			"config hands out (172.16.5.0/24, or the key form 172.16.5.0-24). If the node holds\n" +
			"the subnet now, its lease becomes the reservation in place. Another node's subnet,\n" +
			"or one overlapping another key, is refused. --vtep-mac defaults to the MAC in that\n" +
			"node's current lease.\n\n" +
			"A dual-stack overlay's reservation holds a subnet of each family and both public\n" +
			"addresses: 172.16.5.0/24 fd00:16:0:5::/64 --public-ip 10.0.0.9 --public-ipv6\n" +
			"fd77::9 (or the key form 172.16.5.0-24&fd00:16:0:5::-64); an IPv6-only one the\n" +
			"IPv6 subnet and --public-ipv6. --vtep-mac is then the MAC of both VTEPs (a\n" +
			"vxrouter node has one); left out, each is taken from the node's current lease.",
		Flags: leaseFlags(
			&cli.StringFlag{Name: "public-ip", Usage: "the node's public IP, as in its lease (required unless the overlay is IPv6-only)"},
			&cli.StringFlag{Name: "public-ipv6", Usage: "the node's public IPv6 address, as in its lease (required when the overlay carries IPv6)"},
			&cli.StringFlag{Name: "vtep-mac", Usage: "the node's VTEP MAC (default: from the node's current lease)"},
		),
		Action: func(c *cli.Context) error {
			if c.NArg() < 1 || c.NArg() > 2 {
				return errors.New("lease reserve takes the subnet, e.g. 172.16.5.0/24, and in a dual-stack overlay the IPv6 one too, e.g. 172.16.5.0/24 fd00:16:0:5::/64")
			}
			want := &lease.Lease{}
			for _, arg := range c.Args().Slice() {
				v4, v6, err := parseSubnetsArg(arg)
				if err != nil {
					return err
				}
				for _, p := range []netip.Prefix{v4, v6} {
					switch {
					case !p.IsValid():
					case p.Addr().Is4() && !want.Subnet.IsValid():
						want.Subnet = p
					case p.Addr().Is6() && !want.IPv6Subnet.IsValid():
						want.IPv6Subnet = p
					default:
						return fmt.Errorf("lease reserve: two %s subnets given; want one of each family at most", family(p))
					}
				}
			}
			if s := c.String("public-ip"); s != "" {
				ip, err := netip.ParseAddr(s)
				if err != nil || !ip.Is4() {
					return fmt.Errorf("--public-ip %q: want an IPv4 address", s)
				}
				want.Attrs.PublicIP = ip
			}
			if s := c.String("public-ipv6"); s != "" {
				ip, err := netip.ParseAddr(s)
				if err != nil || !ip.Is6() || ip.Is4In6() || ip.Zone() != "" {
					return fmt.Errorf("--public-ipv6 %q: want an IPv6 address", s)
				}
				want.Attrs.PublicIPv6 = ip
			}
			if want.Subnet.IsValid() && !want.Attrs.PublicIP.IsValid() {
				return errors.New("lease reserve: --public-ip is required with an IPv4 subnet")
			}
			if want.IPv6Subnet.IsValid() && !want.Attrs.PublicIPv6.IsValid() {
				return errors.New("lease reserve: --public-ipv6 is required with an IPv6 subnet")
			}
			if s := c.String("vtep-mac"); s != "" {
				mac, err := net.ParseMAC(s)
				if err != nil || len(mac) != 6 {
					return fmt.Errorf("--vtep-mac %q: want a MAC address like d6:51:2e:80:5c:69", s)
				}
				want.Attrs.VtepMAC = mac
			}
			return withRegistry(c, func(ctx context.Context, r *lease.Registry) error {
				cfg, err := r.Config(ctx)
				if err != nil {
					return err
				}
				l, err := r.ReserveLease(ctx, cfg, want)
				if err != nil {
					return err
				}
				fmt.Fprintf(c.App.Writer, "reserved %s for %s (VTEP MAC %s): %s\n", strings.Join(prefixStrings(l.Subnets()), " and "), l.Attrs.Owner(), vtepMACs(l.Attrs), r.LeaseKey(l))
				return nil
			})
		},
	}
}

func family(p netip.Prefix) string {
	if p.Addr().Is4() {
		return "IPv4"
	}
	return "IPv6"
}

func prefixStrings(ps []netip.Prefix) []string {
	out := make([]string, len(ps))
	for i, p := range ps {
		out[i] = p.String()
	}
	return out
}

func leaseReleaseCommand() *cli.Command {
	return &cli.Command{
		Name:      "release",
		Usage:     "delete a subnet's key, freeing the subnet",
		ArgsUsage: "SUBNET|IPV6-SUBNET",
		Description: "Deletes SUBNET's key (a dual-stack key whole, by either subnet) whatever it holds:\n" +
			"a reservation, an expired lease, a value that does not parse. A key on a live\n" +
			"etcd lease belongs to a node that runs or ran recently; release refuses it unless\n" +
			"--yes, and says whose it is. With --yes the key goes and its etcd lease is revoked,\n" +
			"but a node still running notices at once and acquires again, most likely the same\n" +
			"subnet: stop the node first to free the subnet for good.",
		Flags: leaseFlags(&cli.BoolFlag{Name: "yes", Usage: "release even a subnet on a live lease"}),
		Action: func(c *cli.Context) error {
			if c.NArg() != 1 {
				return errors.New("lease release takes one argument: the subnet, e.g. 172.16.5.0/24")
			}
			subnet, subnet6, err := parseSubnetsArg(c.Args().First())
			if err != nil {
				return err
			}
			if !subnet.IsValid() {
				subnet = subnet6
			}
			return withRegistry(c, func(ctx context.Context, r *lease.Registry) error {
				l, err := r.Release(ctx, subnet, c.Bool("yes"))
				if errors.Is(err, lease.ErrLeased) {
					return fmt.Errorf("%w (or pass --yes to delete it anyway)", err)
				}
				if err != nil {
					return err
				}
				was := "reservation"
				if !l.Reservation() {
					was = fmt.Sprintf("etcd lease %x", int64(l.LeaseID))
				}
				owner := "PublicIP " + l.Attrs.PublicIP.String()
				if !l.Attrs.PublicIP.IsValid() {
					owner = "PublicIPv6 " + l.Attrs.PublicIPv6.String()
				}
				fmt.Fprintf(c.App.Writer, "released %s (was %s, %s)\n", strings.Join(prefixStrings(l.Subnets()), " and "), owner, was)
				return nil
			})
		},
	}
}

// parseSubnetsArg takes a subnet, "172.16.5.0/24" or "fd00:16:0:5::/64",
// or a key name, "172.16.5.0-24", "172.16.5.0-24&fd00:16:0:5::-64" or
// "fd00:16:0:5::-64", and returns its IPv4 and IPv6 subnets (either may
// be unset).
func parseSubnetsArg(s string) (v4, v6 netip.Prefix, err error) {
	if !strings.Contains(s, "/") && strings.Contains(s, "-") {
		return lease.ParseKeyName(s)
	}
	p, err := netip.ParsePrefix(s)
	if err != nil || p.Addr().Is4In6() {
		return netip.Prefix{}, netip.Prefix{}, fmt.Errorf("subnet %q: want a CIDR like 172.16.5.0/24 or fd00:16:0:5::/64", s)
	}
	if p.Masked() != p {
		return netip.Prefix{}, netip.Prefix{}, fmt.Errorf("subnet %q has host bits set: did you mean %s?", s, p.Masked())
	}
	if p.Addr().Is6() {
		return netip.Prefix{}, p, nil
	}
	return p, netip.Prefix{}, nil
}

// withRegistry connects to etcd as the flags say and runs f with the
// overlay's registry, all within --etcd-timeout.
func withRegistry(c *cli.Context, f func(ctx context.Context, r *lease.Registry) error) error {
	log, err := leaseLogger(c)
	if err != nil {
		return err
	}
	o, err := etcdClientOptions(c)
	if err != nil {
		return err
	}
	prefix, err := etcdPrefix(c)
	if err != nil {
		return err
	}
	timeout := c.Duration("etcd-timeout")
	if timeout <= 0 {
		return fmt.Errorf("--etcd-timeout %s: must be positive", timeout)
	}
	ctx, cancel := context.WithTimeout(c.Context, timeout)
	defer cancel()
	o.DialTimeout = timeout
	cli, err := lease.Dial(ctx, o)
	if err != nil {
		return err
	}
	defer cli.Close()
	return f(ctx, lease.NewRegistry(cli, prefix, log))
}

// errWriter is where the app writes warnings.
func errWriter(c *cli.Context) io.Writer {
	if c.App.ErrWriter != nil {
		return c.App.ErrWriter
	}
	return os.Stderr
}

// leaseLogger is newLogger writing to the app's error writer, so what the
// registry warns about goes where the command's own warnings go. The
// level is the first --log-level set, after the command or before it, or
// warn.
func leaseLogger(c *cli.Context) (*slog.Logger, error) {
	return cmdLogger(c, errWriter(c), slog.LevelWarn)
}
