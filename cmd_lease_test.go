package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/urfave/cli/v2"
	clientv3 "go.etcd.io/etcd/client/v3"

	"vxrouter/lease"
)

// leaseEtcd is an embedded etcd for one test, with a client of its own.
func leaseEtcd(t *testing.T) (*lease.Embedded, *clientv3.Client) {
	t.Helper()
	e, err := lease.StartEmbedded(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
	cli, err := e.Client()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	return e, cli
}

// vxrouter runs the CLI in-process, as main would, with args after the
// program name, and returns what it printed and its error.
func vxrouter(t *testing.T, stdin string, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	var out, errOut bytes.Buffer
	app := &cli.App{
		Name:      "vxrouter",
		Flags:     []cli.Flag{logLevelFlag()},
		Commands:  []*cli.Command{runCommand(), leaseCommand()},
		Reader:    strings.NewReader(stdin),
		Writer:    &out,
		ErrWriter: &errOut,
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err = app.RunContext(ctx, append([]string{"vxrouter"}, args...))
	t.Logf("vxrouter %s\n%s%s(err %v)", strings.Join(args, " "), out.String(), errOut.String(), err)
	return out.String(), errOut.String(), err
}

func TestLeaseCommands(t *testing.T) {
	e, cli := leaseEtcd(t)
	ep := []string{"--etcd-endpoints", e.UnixEndpoint()}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	const key = "/coreos.com/network/config"
	configStored := func() string {
		t.Helper()
		resp, err := cli.Get(ctx, key)
		if err != nil {
			t.Fatal(err)
		}
		if len(resp.Kvs) == 0 {
			return ""
		}
		return string(resp.Kvs[0].Value)
	}

	// config get with nothing there says how to write one.
	if _, _, err := vxrouter(t, "", append([]string{"lease", "config", "get"}, ep...)...); err == nil || !strings.Contains(err.Error(), "no config at "+key+": write one, e.g. vxrouter lease config set") {
		t.Fatalf("config get without a config: %v", err)
	}

	// A bad config is refused with the reason, and nothing is written.
	for _, tc := range []struct{ arg, want string }{
		{`{"Network":`, "config: not valid flannel config JSON"},
		{`{"Network":"10.0.0.0/16","Backend":{"Type":"udp"}}`, `config: Backend.Type "udp" is not supported by vxrouter`},
		{`{"Network":"10.0.0.0/16","SubnetLen":8,"Backend":{"Type":"vxlan"}}`, "config: SubnetLen 8 is too short"},
	} {
		_, _, err := vxrouter(t, "", append([]string{"lease", "config", "set"}, append(ep, tc.arg)...)...)
		if err == nil || !strings.Contains(err.Error(), "refused, nothing written to "+key) || !strings.Contains(err.Error(), tc.want) {
			t.Fatalf("config set %s: %v, want %q", tc.arg, err, tc.want)
		}
		if s := configStored(); s != "" {
			t.Fatalf("refused config set wrote %s", s)
		}
	}

	// A good one, from a file, with a typo warned about.
	file := filepath.Join(t.TempDir(), "net.json")
	if err := os.WriteFile(file, []byte(`{"Network": "172.16.0.0/16", "SubnetLne": 26, "Backend": {"Type": "vxlan"}}`+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	out, errOut, err := vxrouter(t, "", append([]string{"lease", "config", "set"}, append(ep, "@"+file)...)...)
	if err != nil {
		t.Fatal(err)
	}
	if want := "wrote " + key + ": Network 172.16.0.0/16, /24 subnets 172.16.1.0..172.16.255.0, vxlan VNI 1 port 8472\n"; out != want {
		t.Fatalf("config set printed %q, want %q", out, want)
	}
	if !strings.Contains(errOut, `warning: field "SubnetLne" is not one of flannel's config fields`) {
		t.Fatalf("no warning about the typo: %q", errOut)
	}
	if s, want := configStored(), `{"Network":"172.16.0.0/16","SubnetLne":26,"Backend":{"Type":"vxlan"}}`; s != want {
		t.Fatalf("stored %s, want %s", s, want)
	}
	// From stdin, without the typo.
	if _, _, err := vxrouter(t, `{"Network":"172.16.0.0/16","Backend":{"Type":"vxlan"}}`, append([]string{"lease", "config", "set"}, append(ep, "@-")...)...); err != nil {
		t.Fatal(err)
	}
	if out, _, err := vxrouter(t, "", append([]string{"lease", "config", "get"}, ep...)...); err != nil || out != `{"Network":"172.16.0.0/16","Backend":{"Type":"vxlan"}}`+"\n" {
		t.Fatalf("config get = %q, %v", out, err)
	}
	if out, _, err := vxrouter(t, "", append([]string{"lease", "config", "get", "--effective"}, ep...)...); err != nil ||
		out != `{"Network":"172.16.0.0/16","SubnetLen":24,"SubnetMin":"172.16.1.0","SubnetMax":"172.16.255.0","Backend":{"Type":"vxlan","VNI":1,"Port":8472}}`+"\n" {
		t.Fatalf("config get --effective = %q, %v", out, err)
	}

	// Two nodes take leases, as vxrouter run (or flannel) would.
	reg := lease.NewRegistry(cli, "", nil)
	cfg, err := reg.Config(ctx)
	if err != nil {
		t.Fatal(err)
	}
	node := func(i byte) lease.Attrs {
		return lease.Attrs{PublicIP: netip.AddrFrom4([4]byte{10, 0, 0, i}), BackendType: "vxlan", VNI: 1, VtepMAC: net.HardwareAddr{0xd6, 0x51, 0x2e, 0x80, 0x5c, i}}
	}
	l1, err := reg.Acquire(ctx, cfg, node(1), netip.MustParsePrefix("172.16.57.0/24"), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	l2, err := reg.Acquire(ctx, cfg, node(2), netip.MustParsePrefix("172.16.9.0/24"), time.Hour)
	if err != nil {
		t.Fatal(err)
	}

	list := func() string {
		t.Helper()
		out, _, err := vxrouter(t, "", append([]string{"lease", "list"}, ep...)...)
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	rows := strings.Split(strings.TrimSpace(list()), "\n")
	if len(rows) != 3 || strings.Join(strings.Fields(rows[0]), " ") != "SUBNET PUBLIC IP VTEP MAC BACKEND LEASE EXPIRES" {
		t.Fatalf("list: %q", rows)
	}
	// Sorted by address, not as etcd's keys sort ("172.16.57" < "172.16.9").
	for i, l := range []*lease.Lease{l2, l1} {
		f := strings.Fields(rows[i+1])
		// The list asks etcd for the time left, a moment after Acquire
		// worked out its expiration: seconds apart, perhaps across a
		// minute.
		var exp time.Time
		if len(f) == 8 {
			exp, _ = time.Parse(time.RFC3339, f[5])
		}
		if len(f) != 8 || f[0] != l.Subnet.String() || f[1] != l.Attrs.PublicIP.String() || f[2] != l.Attrs.VtepMAC.String() ||
			f[3] != "vxlan" || f[4] != fmt.Sprintf("%x", int64(l.LeaseID)) || exp.Sub(l.Expiration).Abs() > 30*time.Second ||
			f[6] != "(in" || !strings.HasPrefix(f[7], "59m") && !strings.HasPrefix(f[7], "1h0m") {
			t.Fatalf("list row %d: %q, want %s expiring at %s", i, rows[i+1], l.Subnet, l.Expiration.UTC().Format(time.RFC3339))
		}
	}

	// reserve: refused outside the config and on another node's subnet.
	reserve := func(args ...string) (string, error) {
		out, _, err := vxrouter(t, "", append(append([]string{"lease", "reserve"}, ep...), args...)...)
		return out, err
	}
	if _, err := reserve("--public-ip", "10.0.0.9", "--vtep-mac", "02:00:00:00:00:09", "172.17.3.0/24"); err == nil || !strings.Contains(err.Error(), "not a subnet the config hands out") {
		t.Fatalf("reserve outside the config: %v", err)
	}
	if _, err := reserve("--public-ip", "10.0.0.9", "--vtep-mac", "02:00:00:00:00:09", "172.16.57.0/24"); err == nil || !strings.Contains(err.Error(), "subnet is taken by PublicIP 10.0.0.1") {
		t.Fatalf("reserve of node 1's subnet: %v", err)
	}
	if _, err := reserve("--public-ip", "10.0.0.9", "172.16.200.0/24"); err == nil || !strings.Contains(err.Error(), "no VTEP MAC for 10.0.0.9") {
		t.Fatalf("reserve without a MAC: %v", err)
	}
	if _, err := reserve("--public-ip", "10.0.0.9", "--vtep-mac", "02:00:00:00:00:09", "172.16.200.1/24"); err == nil || !strings.Contains(err.Error(), "did you mean 172.16.200.0/24") {
		t.Fatalf("reserve with host bits: %v", err)
	}
	// (--log-level before the command counts too.)
	out, errOut, err = vxrouter(t, "", append([]string{"--log-level", "info", "lease", "reserve"}, append(ep, "--public-ip", "10.0.0.9", "--vtep-mac", "02:00:00:00:00:09", "172.16.200.0-24")...)...)
	if want := "reserved 172.16.200.0/24 for 10.0.0.9 (VTEP MAC 02:00:00:00:00:09): /coreos.com/network/subnets/172.16.200.0-24\n"; err != nil || out != want {
		t.Fatalf("reserve = %q, %v; want %q", out, err, want)
	}
	if !strings.Contains(errOut, `level=INFO msg="reserved subnet"`) {
		t.Fatalf("--log-level info before the command: stderr %q", errOut)
	}
	if row := rowOf(list(), "172.16.200.0/24"); row != "172.16.200.0/24 10.0.0.9 02:00:00:00:00:09 vxlan - reserved" {
		t.Fatalf("list shows the reservation as %q", row)
	}
	out, _, err = vxrouter(t, "", append([]string{"lease", "list", "--json"}, ep...)...)
	if err != nil {
		t.Fatal(err)
	}
	var js []map[string]any
	if err := json.Unmarshal([]byte(out), &js); err != nil || len(js) != 3 {
		t.Fatalf("list --json: %v %s", err, out)
	}
	if js[2]["Subnet"] != "172.16.200.0/24" || js[2]["Reserved"] != true || js[2]["LeaseID"] != nil || js[2]["VtepMAC"] != "02:00:00:00:00:09" {
		t.Fatalf("list --json reservation: %v", js[2])
	}
	if js[0]["Subnet"] != "172.16.9.0/24" || js[0]["Reserved"] != false || js[0]["LeaseID"] != fmt.Sprintf("%x", int64(l2.LeaseID)) ||
		js[0]["TTL"].(float64) < 3500 || js[0]["Expiration"] == nil {
		t.Fatalf("list --json lease: %v", js[0])
	}

	// release: a reservation goes; a live lease only with --yes.
	release := func(args ...string) (string, error) {
		out, _, err := vxrouter(t, "", append(append([]string{"lease", "release"}, ep...), args...)...)
		return out, err
	}
	if out, err := release("172.16.200.0/24"); err != nil || out != "released 172.16.200.0/24 (was PublicIP 10.0.0.9, reservation)\n" {
		t.Fatalf("release = %q, %v", out, err)
	}
	if strings.Contains(list(), "172.16.200.0") {
		t.Fatal("list still shows the released subnet")
	}
	if _, err := release("172.16.200.0/24"); err == nil || !strings.Contains(err.Error(), "no key for it") {
		t.Fatalf("second release: %v", err)
	}
	if _, err := release("172.16.57.0/24"); err == nil || !strings.Contains(err.Error(), "subnet is leased by PublicIP 10.0.0.1") || !strings.Contains(err.Error(), "pass --yes") {
		t.Fatalf("release of a live lease: %v", err)
	}
	if !strings.Contains(list(), "172.16.57.0/24") {
		t.Fatal("refused release removed the lease")
	}
	if out, err := release("--yes", "172.16.57.0/24"); err != nil || !strings.HasPrefix(out, "released 172.16.57.0/24 (was PublicIP 10.0.0.1, etcd lease ") {
		t.Fatalf("release --yes = %q, %v", out, err)
	}
	if strings.Contains(list(), "172.16.57.0") {
		t.Fatal("list still shows the subnet released with --yes")
	}

	// A config that leaves a lease out is written, with a warning.
	_, errOut, err = vxrouter(t, "", append([]string{"lease", "config", "set"}, append(ep, `{"Network":"172.16.0.0/16","SubnetMin":"172.16.100.0","Backend":{"Type":"vxlan"}}`)...)...)
	if err != nil || !strings.Contains(errOut, "warning: 172.16.9.0/24 (PublicIP 10.0.0.2) is outside the new config") {
		t.Fatalf("config set narrowing the range: %v, stderr %q", err, errOut)
	}
}

// rowOf returns the fields of the table row for subnet.
func rowOf(table, subnet string) string {
	for _, row := range strings.Split(table, "\n") {
		if f := strings.Fields(row); len(f) > 0 && f[0] == subnet {
			return strings.Join(f, " ")
		}
	}
	return ""
}

// TestLeaseEtcdFlags checks that run and lease read the same etcd flags,
// from the command line and from flannel-style environment variables.
func TestLeaseEtcdFlags(t *testing.T) {
	var got lease.ClientOptions
	app := &cli.App{
		Name: "t",
		Commands: []*cli.Command{{
			Name:  "x",
			Flags: etcdFlags(),
			Action: func(c *cli.Context) error {
				var err error
				got, err = etcdClientOptions(c)
				return err
			},
		}},
	}
	t.Setenv("VXROUTER_ETCD_CAFILE", "/env/ca.pem")
	t.Setenv("VXROUTER_ETCD_USERNAME", "envuser")
	t.Setenv("VXROUTER_ETCD_PASSWORD", "env-secret")
	err := app.Run([]string{"t", "x", "--etcd-endpoints", "https://a:2379, https://b:2379", "--etcd-certfile", "/c.pem", "--etcd-keyfile", "/k.pem", "--etcd-username", "flaguser"})
	if err != nil {
		t.Fatal(err)
	}
	want := lease.ClientOptions{Endpoints: []string{"https://a:2379", "https://b:2379"}, CAFile: "/env/ca.pem", CertFile: "/c.pem", KeyFile: "/k.pem", Username: "flaguser", Password: "env-secret"}
	if got.String() != want.String() || got.Password != want.Password || strings.Join(got.Endpoints, " ") != strings.Join(want.Endpoints, " ") {
		t.Fatalf("options %v, want %v", got, want)
	}

	// run checks the same flags the same way before doing anything else.
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--etcd-endpoints", "127.0.0.1:2379"}, "needs a scheme"},
		{[]string{"--etcd-endpoints", "https://127.0.0.1:2379", "--etcd-cafile", "/nonexistent/ca.pem"}, "read etcd CA file: open /nonexistent/ca.pem"},
		{[]string{"--etcd-endpoints", "http://127.0.0.1:2379", "--etcd-cafile", "/nonexistent/ca.pem"}, "is plaintext (http:// never uses TLS)"},
		{[]string{"--etcd-endpoints", "https://127.0.0.1:2379", "--etcd-certfile", "/c.pem"}, "set without its key"},
	} {
		for _, cmd := range [][]string{{"run"}, {"lease", "list"}} {
			_, _, err := vxrouter(t, "", append(cmd, tc.args...)...)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("%s %q: %v, want %q", cmd, tc.args, err, tc.want)
			}
		}
	}
}

// TestLeaseEtcdPassword checks that the password works and is never shown:
// not in --help, not in errors, not in logs.
func TestLeaseEtcdPassword(t *testing.T) {
	const secret = "Pa55-word-never-shown"
	e, cli := leaseEtcd(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := lease.NewRegistry(cli, "", nil).PutConfigJSON(ctx, []byte(`{"Network":"172.16.0.0/16","Backend":{"Type":"vxlan"}}`)); err != nil {
		t.Fatal(err)
	}
	if _, err := cli.UserAdd(ctx, "root", secret); err != nil {
		t.Fatal(err)
	}
	if _, err := cli.UserGrantRole(ctx, "root", "root"); err != nil {
		t.Fatal(err)
	}
	if _, err := cli.AuthEnable(ctx); err != nil {
		t.Fatal(err)
	}
	ep := []string{"--etcd-endpoints", e.UnixEndpoint(), "--log-level", "debug"}
	shown := func(what, s string) {
		t.Helper()
		if strings.Contains(s, secret) || strings.Contains(s, "wrong-"+secret) {
			t.Fatalf("%s shows the password:\n%s", what, s)
		}
	}

	t.Setenv("VXROUTER_ETCD_PASSWORD", secret)
	for _, args := range [][]string{{"run", "--help"}, {"lease", "list", "--help"}, {"lease", "config", "set", "--help"}} {
		out, errOut, err := vxrouter(t, "", args...)
		if err != nil || !strings.Contains(out, "--etcd-password") {
			t.Fatalf("%s: %v\n%s", args, err, out)
		}
		shown(strings.Join(args, " "), out+errOut)
	}

	// The password from the environment works.
	out, errOut, err := vxrouter(t, "", append([]string{"lease", "list", "--etcd-username", "root"}, ep...)...)
	if err != nil || !strings.HasPrefix(out, "SUBNET") {
		t.Fatalf("list with the password: %v\n%s", err, out)
	}
	shown("list's output", out+errOut)

	// A wrong one (on the command line) fails clearly, without showing it.
	_, errOut, err = vxrouter(t, "", append([]string{"lease", "list", "--etcd-username", "root", "--etcd-password", "wrong-" + secret}, ep...)...)
	if err == nil || !strings.Contains(err.Error(), `etcd rejected username "root" or its password`) {
		t.Fatalf("list with a wrong password: %v", err)
	}
	shown("the error", err.Error()+errOut)

	// Without a username, etcd says who it wants.
	t.Setenv("VXROUTER_ETCD_PASSWORD", "")
	_, _, err = vxrouter(t, "", append([]string{"lease", "list", "--etcd-timeout", "3s"}, ep...)...)
	if err == nil || !strings.Contains(err.Error(), "etcd has auth enabled: give a username and password") {
		t.Fatalf("list without credentials: %v", err)
	}
}

// TestLeaseCommandsDualStack: in a dual-stack overlay, list shows each
// lease's IPv6 subnet and public IPv6 (and a flannel node's two VTEP
// MACs), reserve takes a subnet of each family, and release takes either.
func TestLeaseCommandsDualStack(t *testing.T) {
	e, cli := leaseEtcd(t)
	ep := []string{"--etcd-endpoints", e.UnixEndpoint()}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, _, err := vxrouter(t, "", append([]string{"lease", "config", "set"}, append(ep, `{"Network":"172.16.0.0/16","EnableIPv6":true,"IPv6Network":"fd00:16::/48","Backend":{"Type":"vxlan"}}`)...)...)
	if want := "wrote /coreos.com/network/config: Network 172.16.0.0/16, /24 subnets 172.16.1.0..172.16.255.0, IPv6Network fd00:16::/48, /64 subnets fd00:16:0:1::..fd00:16:0:ffff::, vxlan VNI 1 port 8472\n"; err != nil || out != want {
		t.Fatalf("config set = %q, %v; want %q", out, err, want)
	}
	reg := lease.NewRegistry(cli, "", nil)
	cfg, err := reg.Config(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// A flannel node: flannel-v6.1 has a MAC of its own.
	a := lease.Attrs{PublicIP: netip.MustParseAddr("10.0.0.1"), PublicIPv6: netip.MustParseAddr("fd77::1"), BackendType: "vxlan", VNI: 1,
		VtepMAC: net.HardwareAddr{2, 0, 0, 0, 0, 1}, BackendV6Data: &lease.VXLANData{VNI: 1, VtepMAC: net.HardwareAddr{2, 0, 0, 0, 6, 1}}}
	l, err := reg.AcquireSubnets(ctx, cfg, a, []netip.Prefix{netip.MustParsePrefix("172.16.57.0/24"), netip.MustParsePrefix("fd00:16:0:39::/64")}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	reserve := func(args ...string) (string, error) {
		out, _, err := vxrouter(t, "", append(append([]string{"lease", "reserve"}, ep...), args...)...)
		return out, err
	}
	if _, err := reserve("--public-ip", "10.0.0.9", "--vtep-mac", "02:00:00:00:00:09", "172.16.200.0/24"); err == nil || !strings.Contains(err.Error(), "give an IPv6 subnet too") {
		t.Fatalf("reserve of an IPv4 subnet alone: %v", err)
	}
	if _, err := reserve("--public-ip", "10.0.0.9", "--vtep-mac", "02:00:00:00:00:09", "172.16.200.0/24", "fd00:16:0:c8::/64"); err == nil || !strings.Contains(err.Error(), "--public-ipv6 is required") {
		t.Fatalf("reserve without --public-ipv6: %v", err)
	}
	out, err = reserve("--public-ip", "10.0.0.9", "--public-ipv6", "fd77::9", "--vtep-mac", "02:00:00:00:00:09", "fd00:16:0:c8::/64", "172.16.200.0/24")
	if want := "reserved 172.16.200.0/24 and fd00:16:0:c8::/64 for 10.0.0.9 (VTEP MAC 02:00:00:00:00:09): /coreos.com/network/subnets/172.16.200.0-24&fd00:16:0:c8::-64\n"; err != nil || out != want {
		t.Fatalf("reserve = %q, %v; want %q", out, err, want)
	}
	out, _, err = vxrouter(t, "", append([]string{"lease", "list"}, ep...)...)
	if err != nil {
		t.Fatal(err)
	}
	rows := strings.Split(strings.TrimSpace(out), "\n")
	if len(rows) != 3 || strings.Join(strings.Fields(rows[0]), " ") != "SUBNET IPV6 SUBNET PUBLIC IP PUBLIC IPV6 VTEP MAC BACKEND LEASE EXPIRES" {
		t.Fatalf("list: %q", rows)
	}
	if row := rowOf(out, "172.16.57.0/24"); !strings.HasPrefix(row, fmt.Sprintf("172.16.57.0/24 fd00:16:0:39::/64 10.0.0.1 fd77::1 02:00:00:00:00:01/02:00:00:00:06:01 vxlan %x ", int64(l.LeaseID))) {
		t.Fatalf("list row of the flannel node: %q", row)
	}
	if row := rowOf(out, "172.16.200.0/24"); row != "172.16.200.0/24 fd00:16:0:c8::/64 10.0.0.9 fd77::9 02:00:00:00:00:09 vxlan - reserved" {
		t.Fatalf("list row of the reservation: %q", row)
	}
	out, _, err = vxrouter(t, "", append([]string{"lease", "list", "--json"}, ep...)...)
	var js []map[string]any
	if err != nil || json.Unmarshal([]byte(out), &js) != nil || len(js) != 2 || js[0]["IPv6Subnet"] != "fd00:16:0:39::/64" || js[0]["VtepMACv6"] != "02:00:00:00:06:01" || js[0]["PublicIPv6"] != "fd77::1" {
		t.Fatalf("list --json: %v %s", err, out)
	}
	out, _, err = vxrouter(t, "", append([]string{"lease", "release"}, append(ep, "fd00:16:0:c8::/64")...)...)
	if want := "released 172.16.200.0/24 and fd00:16:0:c8::/64 (was PublicIP 10.0.0.9, reservation)\n"; err != nil || out != want {
		t.Fatalf("release by the IPv6 subnet = %q, %v; want %q", out, err, want)
	}
	// An IPv6-only overlay: reserve and list without IPv4.
	if _, _, err := vxrouter(t, "", append([]string{"lease", "config", "set"}, append(ep, `{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"fd00:16::/48","Backend":{"Type":"vxlan"}}`)...)...); err != nil {
		t.Fatal(err)
	}
	out, err = reserve("--public-ipv6", "fd77::7", "--vtep-mac", "02:00:00:00:00:07", "fd00:16:0:7::-64")
	if want := "reserved fd00:16:0:7::/64 for fd77::7 (VTEP MAC 02:00:00:00:00:07): /coreos.com/network/subnets/fd00:16:0:7::-64\n"; err != nil || out != want {
		t.Fatalf("reserve (IPv6-only) = %q, %v; want %q", out, err, want)
	}
	out, _, _ = vxrouter(t, "", append([]string{"lease", "list"}, ep...)...)
	if row := rowOf(out, "-"); row != "- fd00:16:0:7::/64 - fd77::7 02:00:00:00:00:07 vxlan - reserved" {
		t.Fatalf("list row of the IPv6-only reservation: %q in\n%s", row, out)
	}
}
