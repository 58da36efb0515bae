package e2e

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"vxrouter/lab"
	"vxrouter/lease"
)

// What a supervisor sees of a node: systemd's notify protocol, the
// health and readiness endpoints, and one node per admin socket.

// notifySocket is what systemd listens on for a Type=notify service: a
// unixgram socket (in the test's directory: the filesystem is shared by
// every network namespace, abstract socket names are not).
type notifySocket struct {
	path string
	msgs chan string
}

func newNotifySocket(t *testing.T, path string) *notifySocket {
	t.Helper()
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		c.Close()
		os.Remove(path)
	})
	s := &notifySocket{path: path, msgs: make(chan string, 256)}
	go func() {
		buf := make([]byte, 4096)
		for {
			k, err := c.Read(buf)
			if err != nil {
				close(s.msgs)
				return
			}
			s.msgs <- string(buf[:k])
		}
	}()
	return s
}

func (s *notifySocket) env() string { return "NOTIFY_SOCKET=" + s.path }

// await returns the messages up to and including the first that holds
// want; it fails the test after d.
func (s *notifySocket) await(t *testing.T, d time.Duration, want string) []string {
	t.Helper()
	var got []string
	deadline := time.After(d)
	for {
		select {
		case m := <-s.msgs:
			got = append(got, m)
			if strings.Contains(m, want) {
				return got
			}
		case <-deadline:
			t.Fatalf("no notification with %q within %s; got %q", want, d, got)
		}
	}
}

// drain returns what arrived so far.
func (s *notifySocket) drain() []string {
	var got []string
	for {
		select {
		case m := <-s.msgs:
			got = append(got, m)
		default:
			return got
		}
	}
}

// startWith starts a node on h with more environment, and waits for its
// subnet.env.
func (o *overlay) startWith(h *lab.Host, env []string, args ...string) *lab.Node {
	o.t.Helper()
	n, err := h.StartVXRouter(lab.NodeOptions{
		Binary: binary,
		Etcd:   o.etcd.UnixEndpoint(),
		Dir:    filepath.Join(o.dir, h.Name),
		Args:   append([]string{"--log-level", "debug"}, args...),
		Env:    env,
	})
	if err != nil {
		o.t.Fatal(err)
	}
	o.nodes = append(o.nodes, n)
	return n
}

// kill kills n as a crash would (SIGKILL: no cleanup) and forgets it.
func (o *overlay) kill(n *lab.Node) {
	o.t.Helper()
	syscall.Kill(n.Pid(), syscall.SIGKILL)
	<-n.Done()
	o.forget(n)
}

// forget drops n, which has exited, from the nodes the test stops.
func (o *overlay) forget(n *lab.Node) {
	for i, m := range o.nodes {
		if m == n {
			o.nodes = append(o.nodes[:i], o.nodes[i+1:]...)
			break
		}
	}
}

// httpGetIn GETs url from inside h's network namespace (the socket is
// made there; the request goes over it from here).
func httpGetIn(ctx context.Context, h *lab.Host, url string) (int, string, error) {
	req, err := http.NewRequestWithContext(ctx, "GET", url, nil)
	if err != nil {
		return 0, "", err
	}
	var conn net.Conn
	if err := h.Do(func() (err error) {
		conn, err = net.DialTimeout("tcp", req.URL.Host, 5*time.Second)
		return err
	}); err != nil {
		return 0, "", err
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	req.Close = true
	if err := req.Write(conn); err != nil {
		return 0, "", err
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, strings.TrimSpace(string(b)), err
}

// TestSystemdNotify: a node under a service manager that set
// NOTIFY_SOCKET (systemd's Type=notify) says READY=1 once it holds its
// lease, its TUN device is up, subnet.env is written and its peers are
// listed, and not while it cannot reach etcd; STATUS= lines as peers join
// and leave; STOPPING=1 on SIGTERM. flannel's --healthz-port serves
// /healthz and /readyz on TCP, /readyz 503 until then.
func TestSystemdNotify(t *testing.T) {
	o := newOverlay(t, network16)
	h1, h2, h3 := o.host("sd1"), o.host("sd2"), o.host("sd3")
	_, env1 := o.start(h1)
	s1 := env1.Subnet.Masked()

	// sd2 reaches etcd through a relay that is cut: it waits in Start.
	relay := o.relay("sd2-etcd")
	relay.cut()
	sock := newNotifySocket(t, filepath.Join(o.dir, "sd2-notify.sock"))
	n2 := o.startWith(h2, []string{sock.env()},
		"--etcd-endpoints", relay.endpoint(), "--etcd-timeout", "2m", "--healthz-port", "10256")
	healthz := "http://" + netip.AddrPortFrom(h2.Underlay, 10256).String()
	sock.await(t, 30*time.Second, "STATUS=reading the overlay's config from etcd")
	code, body, err := httpGetIn(o.ctx, h1, healthz+"/healthz")
	if err != nil || code != 200 || body != "ok" {
		t.Errorf("/healthz while starting: %d %q %v, want 200 ok", code, body, err)
	}
	code, body, err = httpGetIn(o.ctx, h1, healthz+"/readyz")
	if err != nil || code != 503 || !strings.Contains(body, "not ready: starting") {
		t.Errorf("/readyz while starting: %d %q %v, want 503 not ready", code, body, err)
	}
	// Long enough for a READY=1 sent too early to arrive.
	time.Sleep(time.Second)
	for _, m := range sock.drain() {
		if strings.Contains(m, "READY=1") {
			t.Fatalf("READY=1 from a node that cannot reach etcd: %q", m)
		}
	}
	if _, err := os.Stat(n2.SubnetFile); err == nil {
		t.Fatal("sd2 wrote subnet.env without etcd")
	}

	if err := relay.restore(); err != nil {
		t.Fatal(err)
	}
	msgs := sock.await(t, 60*time.Second, "READY=1")
	ready := msgs[len(msgs)-1]
	// At READY=1 the four are true: subnet.env, the lease, the TUN
	// device, the peers.
	env2, err := lease.ReadSubnetEnv(n2.SubnetFile)
	if err != nil {
		t.Fatalf("READY=1 (%q) before subnet.env: %v", ready, err)
	}
	s2 := env2.Subnet.Masked()
	if _, _, err := o.ownKey(o.ctx, n2, s2); err != nil {
		t.Errorf("READY=1 without a lease: %v", err)
	}
	if out, err := h2.Run(o.ctx, "ip", "link", "show", "vxr0"); err != nil || !strings.Contains(out, ",UP") {
		t.Errorf("READY=1 with vxr0 not up: %v\n%s", err, out)
	}
	if ok, err := knows(o.ctx, n2, s1); err != nil || !ok {
		t.Errorf("READY=1 before sd1's lease is in the route table (%v)", err)
	}
	if want := fmt.Sprintf("READY=1\nSTATUS=forwarding for %s: 1 peer", s2); ready != want {
		t.Errorf("ready message %q, want %q", ready, want)
	}
	for _, m := range msgs[:len(msgs)-1] {
		if strings.Contains(m, "READY=1") {
			t.Errorf("READY=1 twice: %q", msgs)
		}
	}
	code, body, err = httpGetIn(o.ctx, h1, healthz+"/readyz")
	if err != nil || code != 200 || body != "ready" {
		t.Errorf("/readyz once ready: %d %q %v, want 200 ready", code, body, err)
	}
	// The TCP endpoint is the read-only one.
	if code, _, err := httpGetIn(o.ctx, h1, healthz+"/metrics"); err != nil || code != 200 {
		t.Errorf("/metrics on --healthz-port: %d %v", code, err)
	}

	// A peer joins, then leaves (stopped, and its key released, as
	// `vxrouter lease release` does).
	n3, env3 := o.start(h3)
	s3 := env3.Subnet.Masked()
	sock.await(t, 30*time.Second, fmt.Sprintf("STATUS=forwarding for %s: 2 peers (%s joined)", s2, s3))
	o.stop(n3)
	if _, err := o.cli.Delete(o.ctx, o.reg.Key(s3)); err != nil {
		t.Fatal(err)
	}
	sock.await(t, 30*time.Second, fmt.Sprintf("STATUS=forwarding for %s: 1 peer (%s left)", s2, s3))

	o.stop(n2) // SIGTERM, as systemctl stop sends
	sock.await(t, 10*time.Second, "STOPPING=1")
	if _, err := os.Lstat(n2.AdminSocket); err == nil {
		t.Errorf("sd2 left its admin socket %s", n2.AdminSocket)
	}
}

// TestSystemdNotifyEtcdUnreachable: a node that never reaches etcd exits
// 1 without ever saying READY=1.
func TestSystemdNotifyEtcdUnreachable(t *testing.T) {
	o := newOverlay(t, network16)
	h := o.host("sdx")
	sock := newNotifySocket(t, filepath.Join(o.dir, "sdx-notify.sock"))
	n := o.startWith(h, []string{sock.env()}, "--etcd-endpoints", "unix:///nonexistent/etcd.sock", "--etcd-timeout", "2s")
	select {
	case <-n.Done():
	case <-time.After(60 * time.Second):
		t.Fatalf("the node did not give up:\n%s", n.Log())
	}
	o.forget(n)
	if err := n.Stop(time.Second); err == nil {
		t.Fatalf("exited 0:\n%s", n.Log())
	}
	got := sock.drain()
	for _, m := range got {
		if strings.Contains(m, "READY=1") {
			t.Errorf("READY=1 from a node that never reached etcd: %q", got)
		}
	}
	if len(got) == 0 || !strings.Contains(got[0], "STATUS=reading the overlay's config") {
		t.Errorf("notifications %q, want what it waited for", got)
	}
}

// TestOneNodePerAdminSocket: two nodes on one host (two network
// namespaces here) given the same admin socket: the second refuses to
// start, says why and how to run two, and writes nothing to etcd; the
// first keeps its socket. A socket a killed node left behind is replaced.
func TestOneNodePerAdminSocket(t *testing.T) {
	o := newOverlay(t, network16)
	h1, h2 := o.host("as1"), o.host("as2")
	shared := filepath.Join(o.dir, "run", "admin.sock")
	n1, _ := o.start(h1, "--admin-socket", shared)

	log := o.startFailing(t, h2, "--admin-socket", shared)
	for _, want := range []string{"admin socket " + shared, "another vxrouter node is running", "--admin-socket"} {
		if !strings.Contains(log, want) {
			t.Errorf("the refused node's log lacks %q:\n%s", want, log)
		}
	}
	if strings.Contains(log, "lease acquired") {
		t.Errorf("the refused node took a lease:\n%s", log)
	}
	n1.AdminSocket = shared
	if _, err := n1.Peers(o.ctx); err != nil {
		t.Errorf("the first node lost its admin socket: %v", err)
	}

	// Killed: its socket file stays, nobody answers on it.
	o.kill(n1)
	if fi, err := os.Lstat(shared); err != nil || fi.Mode().Type() != os.ModeSocket {
		t.Fatalf("a killed node's socket: %v %v, want the file left behind", fi, err)
	}
	n2, _ := o.start(h2, "--admin-socket", shared)
	n2.AdminSocket = shared
	if _, err := n2.Peers(o.ctx); err != nil {
		t.Errorf("the stale socket was not replaced: %v\n%s", err, n2.Log())
	}
	if !strings.Contains(n2.Log(), "admin endpoint") {
		t.Errorf("no admin endpoint in the log:\n%s", n2.Log())
	}
}
