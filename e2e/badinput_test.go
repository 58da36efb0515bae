package e2e

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"vxrouter/lab"
)

// startFailing starts a node that must refuse to run: it has to exit
// non-zero, say why, and leave nothing behind (no subnet.env, no TUN
// device, no lease in etcd, no route). It returns the node's log.
func (o *overlay) startFailing(t *testing.T, h *lab.Host, args ...string) string {
	t.Helper()
	return o.startFailingWith(t, h, lab.NodeOptions{Args: args})
}

// startFailingEnv is startFailing with env added to the node's
// environment.
func (o *overlay) startFailingEnv(t *testing.T, h *lab.Host, env []string, args ...string) string {
	t.Helper()
	return o.startFailingWith(t, h, lab.NodeOptions{Args: args, Env: env})
}

// startFailingWith is startFailing with more of the node's options.
func (o *overlay) startFailingWith(t *testing.T, h *lab.Host, opts lab.NodeOptions) string {
	t.Helper()
	before, _, err := o.reg.Leases(o.ctx)
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(o.dir, h.Name)
	os.RemoveAll(dir)
	routes, err := h.Run(o.ctx, "ip", "route", "show")
	if err != nil {
		t.Fatal(err)
	}
	opts.Binary, opts.Etcd, opts.Dir = binary, o.etcd.UnixEndpoint(), dir
	n, err := h.StartVXRouter(opts)
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-n.Done():
	case <-time.After(30 * time.Second):
		n.Stop(time.Second)
		t.Fatalf("node did not give up:\n%s", n.Log())
	}
	if err := n.Stop(time.Second); err == nil {
		t.Fatalf("node exited 0:\n%s", n.Log())
	}
	if _, err := os.Stat(n.SubnetFile); err == nil {
		t.Errorf("a failed node wrote %s", n.SubnetFile)
	}
	if out, _ := h.Run(o.ctx, "ip", "link", "show"); strings.Contains(out, "vxr0") {
		t.Errorf("a failed node left its TUN device:\n%s", out)
	}
	if out, _ := h.Run(o.ctx, "ip", "route", "show"); out != routes {
		t.Errorf("a failed node changed the routes:\n%s\nwere:\n%s", out, routes)
	}
	after, _, err := o.reg.Leases(o.ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(after) != len(before) {
		t.Errorf("a failed node changed the leases: %d before, %d after", len(before), len(after))
	}
	return n.Log()
}

// TestBadInputFailsCleanly: bad config, no free subnet, an unreachable
// etcd and bad flags each stop the node at start with an error that names
// the problem, and nothing half-written.
func TestBadInputFailsCleanly(t *testing.T) {
	o := newOverlay(t, network16)
	h := o.host("bad")
	key := "/coreos.com/network/config"
	for _, tc := range []struct {
		name   string
		config string // written to etcd first, when set
		args   []string
		flags  []string // that choose the underlay, instead of --iface eth0
		want   string   // in the log
	}{
		{name: "broken JSON", config: `{"Network":"172.16.0.0/16",`, want: "/coreos.com/network/config"},
		{name: "not a CIDR", config: `{"Network":"172.16.0.0/33","Backend":{"Type":"vxlan"}}`, want: "Network"},
		{name: "impossible SubnetLen", config: `{"Network":"172.16.0.0/16","SubnetLen":12,"Backend":{"Type":"vxlan"}}`, want: "SubnetLen"},
		{name: "other backend", config: `{"Network":"172.16.0.0/16","Backend":{"Type":"host-gw"}}`, want: "host-gw"},
		// What vxrouter does not do is refused by name, before a lease.
		{name: "GBP", config: `{"Network":"172.16.0.0/16","Backend":{"Type":"vxlan","GBP":true,"DirectRouting":true}}`, want: `"GBP":true (VXLAN Group Based Policy`},
		{name: "Learning", config: `{"Network":"172.16.0.0/16","Backend":{"Type":"vxlan","Learning":true}}`, want: `"Learning":true (MAC learning`},
		{name: "Backend.MTU too small", config: `{"Network":"172.16.0.0/16","Backend":{"Type":"vxlan","MTU":600}}`, want: "Backend.MTU 600 is out of range 626..65535"},
		{name: "no such iface", flags: []string{"--iface", "eth7"}, want: `--iface eth7: no interface is named "eth7"`},
		{name: "bad iface regex", flags: []string{"--iface-regex", "eth[0-"}, want: "--iface-regex"},
		// A /22 of /24s has three subnets to hand out (SubnetMin is the
		// second), and reservations hold them.
		{name: "no free subnet", config: `{"Network":"10.99.0.0/22","SubnetLen":24,"Backend":{"Type":"vxlan"}}`, want: "no free subnet"},
		{name: "unreachable etcd", args: []string{"--etcd-endpoints", "unix:///nonexistent/etcd.sock", "--etcd-timeout", "2s"}, want: "did not answer"},
		{name: "bad public IP", args: []string{"--public-ip", "10.0.0.300"}, want: "--public-ip"},
		{name: "bad endpoint", args: []string{"--etcd-endpoints", "127.0.0.1:2379"}, want: "needs a scheme"},
		{name: "bad log level", args: []string{"--log-level", "loud"}, want: "--log-level"},
		{name: "negative gomaxprocs", args: []string{"--gomaxprocs", "-1"}, want: "--gomaxprocs -1"},
		{name: "healthz and metrics disagree", args: []string{"--healthz-port", "10256", "--metrics-addr", "127.0.0.1:9472"}, want: "give one"},
		{name: "bad healthz port", args: []string{"--healthz-port", "70000"}, want: "--healthz-port 70000"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.config != "" {
				if _, err := o.cli.Put(o.ctx, key, tc.config); err != nil {
					t.Fatal(err)
				}
			}
			log := o.startFailingWith(t, h, lab.NodeOptions{Args: tc.args, Underlay: tc.flags})
			if !strings.Contains(log, tc.want) {
				t.Errorf("log does not mention %q:\n%s", tc.want, log)
			}
		})
		if t.Failed() {
			return
		}
		if tc.name == "other backend" {
			// Reserve every subnet of the next case's network.
			for _, k := range []string{"10.99.1.0-24", "10.99.2.0-24", "10.99.3.0-24"} {
				if _, err := o.cli.Put(o.ctx, "/coreos.com/network/subnets/"+k,
					`{"PublicIP":"10.213.0.250","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"02:00:00:00:00:fa"}}`); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
}

// TestGarbagePeerLeases: keys and values under subnets/ that are not
// leases are skipped with a warning; the nodes keep forwarding.
func TestGarbagePeerLeases(t *testing.T) {
	o := newOverlay(t, network16)
	h1, h2 := o.host("g1"), o.host("g2")
	n1, env1 := o.start(h1)
	_, env2 := o.start(h2)
	p1, p2 := o.pod(h1, env1.Subnet.Masked()), o.pod(h2, env2.Subnet.Masked())
	o.mustPing(p1, p2)

	// The garbage goes under /24s the nodes did not get: they pick theirs
	// at random, and a well-formed value on a node's own key would be an
	// operator overwriting its lease, another test's business.
	free := make([]string, 0, 5)
	for x := 77; len(free) < cap(free); x++ {
		s := fmt.Sprintf("172.16.%d.0", x)
		if s != env1.Subnet.Masked().Addr().String() && s != env2.Subnet.Masked().Addr().String() {
			free = append(free, s)
		}
	}
	garbage := map[string]string{
		"/coreos.com/network/subnets/garbage":            "x",
		"/coreos.com/network/subnets/" + free[0] + "-24": `{"PublicIP":`,
		"/coreos.com/network/subnets/" + free[1] + "-24": `{"PublicIP":"10.213.0.9","BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"zz"}}`,
		"/coreos.com/network/subnets/" + free[2] + "-33": `{}`,
		// Well-formed, but no peer: a catch-all route, a subnet of
		// another length, and one claiming node 1's own address.
		"/coreos.com/network/subnets/0.0.0.0-0":          `{"PublicIP":"10.213.0.9","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"02:00:00:00:00:09"}}`,
		"/coreos.com/network/subnets/" + free[3] + "-25": `{"PublicIP":"10.213.0.9","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"02:00:00:00:00:09"}}`,
		"/coreos.com/network/subnets/" + free[4] + "-24": `{"PublicIP":"` + h1.Underlay.String() + `","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"02:00:00:00:00:09"}}`,
	}
	for k, v := range garbage {
		if _, err := o.cli.Put(o.ctx, k, v); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(o.ctx, 10*time.Second)
	defer cancel()
	for !strings.Contains(n1.Log(), free[1]+"-24") {
		if ctx.Err() != nil {
			t.Fatalf("node 1 never warned about the bad lease:\n%s", n1.Log())
		}
		time.Sleep(100 * time.Millisecond)
	}
	select {
	case <-n1.Done():
		t.Fatalf("node 1 exited on garbage:\n%s", n1.Log())
	default:
	}
	o.mustPing(p1, p2)
	o.mustPing(p2, p1)
	peers, err := n1.Peers(o.ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(peers) != 1 || peers[0].Subnet != env2.Subnet.Masked().String() {
		t.Errorf("node 1's peers = %+v, want only node 2's %s", peers, env2.Subnet.Masked())
	}
}

// TestPortTakenLeavesNoLease: a node that cannot bind its VXLAN port fails
// before it takes a lease, so no peer routes to a node that is not there.
func TestPortTakenLeavesNoLease(t *testing.T) {
	o := newOverlay(t, network16)
	h := o.host("pt")
	var conn *net.UDPConn
	if err := h.Do(func() (err error) {
		conn, err = net.ListenUDP("udp4", &net.UDPAddr{IP: net.IP(h.Underlay.AsSlice()), Port: 8472})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	log := o.startFailing(t, h)
	if !strings.Contains(log, "address already in use") {
		t.Errorf("log does not say the port is taken:\n%s", log)
	}
}
