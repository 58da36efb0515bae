package node

import (
	"bytes"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"vxrouter/encap"
	"vxrouter/lease"
	"vxrouter/route"
)

// testNode is a Node with what the admin endpoint and the lifecycle
// read: a route table, a forwarder over nothing, a lease; in phase
// Starting, as Start leaves a node until it has set these.
func testNode(t *testing.T, log *slog.Logger) *Node {
	t.Helper()
	mac := net.HardwareAddr{2, 0, 0, 0, 0, 1}
	tb, err := route.NewTable(1, mac)
	if err != nil {
		t.Fatal(err)
	}
	dec, _ := encap.NewDecoder(1, mac)
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Node{
		table:  tb,
		fwd:    route.NewForwarder(nil, nil, tb, dec, nil),
		log:    log,
		lease:  &lease.Lease{Subnet: netip.MustParsePrefix("172.16.57.0/24")},
		notify: &notifier{log: log},
	}
}

func get(t *testing.T, h http.Handler, path string) (int, string) {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", path, nil))
	return rec.Code, strings.TrimSpace(rec.Body.String())
}

// TestReadyz: /healthz answers from the start; /readyz only once the
// first list of peers is applied (Start's lease, TUN device and
// subnet.env came before), and no more once the node stops; the other
// endpoints wait for Start.
func TestReadyz(t *testing.T) {
	n := testNode(t, nil)
	h := n.adminHandler(false)
	check := func(stage, path string, code int, body string) {
		t.Helper()
		gotCode, gotBody := get(t, h, path)
		if gotCode != code || !strings.Contains(gotBody, body) {
			t.Errorf("%s: GET %s = %d %q, want %d with %q", stage, path, gotCode, gotBody, code, body)
		}
	}
	check("starting", "/healthz", 200, "ok")
	check("starting", "/readyz", 503, "not ready: starting")
	check("starting", "/metrics", 503, "starting")
	check("starting", "/peers", 503, "starting")

	n.ph.Store(int32(phaseListing)) // what Start does last
	check("listing", "/readyz", 503, "not ready: listing peers")
	check("listing", "/metrics", 200, "vxrouter_peers 0")

	n.peersApplied("") // the first list, empty: there may be no peer
	check("listed", "/readyz", 200, "ready")
	check("listed", "/healthz", 200, "ok")

	n.stopping()
	check("stopping", "/readyz", 503, "not ready: stopping")
	check("stopping", "/healthz", 200, "ok")
}

func TestDescribePeers(t *testing.T) {
	tb, err := route.NewTable(1, net.HardwareAddr{2, 0, 0, 0, 0, 1})
	if err != nil {
		t.Fatal(err)
	}
	peer := func(s string) route.Change {
		return route.Change{Subnet: netip.MustParsePrefix(s), Addr: netip.MustParseAddrPort("10.0.0.9:8472"), VTEP: net.HardwareAddr{2, 0, 0, 0, 0, 9}}
	}
	gone := func(s string) route.Change { return route.Change{Subnet: netip.MustParsePrefix(s), Delete: true} }
	if err := tb.Apply([]route.Change{peer("172.16.1.0/24"), peer("172.16.2.0/24")}); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		changes []route.Change
		want    string
	}{
		{nil, ""},
		{[]route.Change{peer("172.16.3.0/24")}, "172.16.3.0/24 joined"},
		{[]route.Change{gone("172.16.1.0/24"), peer("172.16.2.0/24")}, "172.16.1.0/24 left, 172.16.2.0/24 changed"},
		{[]route.Change{gone("172.16.9.0/24")}, ""}, // never a peer (a skipped lease)
		{[]route.Change{peer("172.16.3.0/24"), peer("172.16.4.0/24"), peer("172.16.5.0/24"), gone("172.16.1.0/24")}, "3 joined, 1 left"},
	} {
		if got := describePeers(tb, c.changes); got != c.want {
			t.Errorf("describePeers(%v) = %q, want %q", c.changes, got, c.want)
		}
	}
}

// notifySocket listens on a unixgram socket, as systemd does for a
// Type=notify service, and points NOTIFY_SOCKET at it.
func notifySocket(t *testing.T, addr string) <-chan string {
	t.Helper()
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: addr, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	t.Setenv("NOTIFY_SOCKET", addr)
	got := make(chan string, 16)
	go func() {
		buf := make([]byte, 4096)
		for {
			k, err := c.Read(buf)
			if err != nil {
				close(got)
				return
			}
			got <- string(buf[:k])
		}
	}()
	return got
}

func next(t *testing.T, got <-chan string) string {
	t.Helper()
	select {
	case m := <-got:
		return m
	case <-time.After(5 * time.Second):
		t.Fatal("no notification within 5s")
		return ""
	}
}

// TestNotify: the node speaks systemd's notify protocol on a real unixgram
// socket, a path or an abstract name ("@..."): READY=1 once, with the
// first list of peers; STATUS= as peers change; STOPPING=1.
func TestNotify(t *testing.T) {
	for _, addr := range []string{
		filepath.Join(t.TempDir(), "notify.sock"),
		"@vxrouter-test-notify-" + strings.ReplaceAll(t.Name(), "/", "-") + "-" + time.Now().Format("150405.000000"),
	} {
		t.Run(strings.TrimPrefix(filepath.Base(addr), "@"), func(t *testing.T) {
			got := notifySocket(t, addr)
			n := testNode(t, nil)
			n.ph.Store(int32(phaseListing))
			peer := route.Change{Subnet: netip.MustParsePrefix("172.16.9.0/24"), Addr: netip.MustParseAddrPort("10.0.0.9:8472"), VTEP: net.HardwareAddr{2, 0, 0, 0, 0, 9}}

			n.table.Apply([]route.Change{peer})
			n.peersApplied("")
			if m := next(t, got); m != "READY=1\nSTATUS=forwarding for 172.16.57.0/24: 1 peer" {
				t.Errorf("first list: %q, want READY=1 and the status", m)
			}
			n.peersApplied("172.16.9.0/24 changed")
			if m := next(t, got); m != "STATUS=forwarding for 172.16.57.0/24: 1 peer (172.16.9.0/24 changed)" {
				t.Errorf("a change: %q, want a STATUS line without READY", m)
			}
			n.peersApplied("") // a batch that changed nothing says nothing
			n.stopping()
			if m := next(t, got); m != "STOPPING=1\nSTATUS=stopping" {
				t.Errorf("stop: %q, want STOPPING=1", m)
			}
		})
	}
}

// TestNotifySocketAbsentOrRefusing: a NOTIFY_SOCKET that names nothing,
// or a socket nobody reads, is said once in the log and changes nothing
// else; without NOTIFY_SOCKET the node says nothing at all.
func TestNotifySocketAbsentOrRefusing(t *testing.T) {
	dir := t.TempDir()
	// A socket whose reader has gone (systemd restarted, say): the file
	// stays, a datagram to it is refused.
	refusing := filepath.Join(dir, "refusing.sock")
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: refusing, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	for _, c := range []struct {
		name, socket string
		warnings     int
	}{
		{"unset", "", 0},
		{"absent", filepath.Join(dir, "nothing-here.sock"), 1},
		{"refusing", refusing, 1},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Setenv("NOTIFY_SOCKET", c.socket)
			var buf bytes.Buffer
			n := testNode(t, slog.New(slog.NewTextHandler(&buf, nil)))
			n.ph.Store(int32(phaseListing))
			n.peersApplied("")
			n.peersApplied("172.16.9.0/24 joined")
			n.stopping()
			if got := strings.Count(buf.String(), "level=WARN"); got != c.warnings {
				t.Errorf("%d warnings, want %d:\n%s", got, c.warnings, buf.String())
			}
			if c.warnings > 0 && !strings.Contains(buf.String(), c.socket) {
				t.Errorf("the warning does not name the socket %s:\n%s", c.socket, buf.String())
			}
			if n.phase() != phaseStopping {
				t.Errorf("phase %s after stopping", n.phase())
			}
		})
	}
}

// TestProcessMetrics: /metrics carries what shows a leak, with values
// that match the process: goroutines, heap, resident memory, open files.
func TestProcessMetrics(t *testing.T) {
	n := testNode(t, nil)
	n.ph.Store(int32(phaseReady))
	// Three more open files than at the start must show.
	var fs []*os.File
	for range 3 {
		f, err := os.Open(os.DevNull)
		if err != nil {
			t.Fatal(err)
		}
		fs = append(fs, f)
	}
	defer func() {
		for _, f := range fs {
			f.Close()
		}
	}()
	_, body := get(t, n.adminHandler(false), "/metrics")
	vals := map[string]float64{}
	for _, line := range strings.Split(body, "\n") {
		var name string
		var v float64
		if _, err := fmt.Sscan(line, &name, &v); err == nil && !strings.HasPrefix(name, "#") {
			vals[name] = v
		}
	}
	for _, c := range []struct {
		name     string
		min, max float64
	}{
		{"go_goroutines", 1, 10000},
		{"go_memstats_heap_alloc_bytes", 1 << 10, 1 << 34},
		{"go_gc_heap_live_bytes", 0, 1 << 34},
		{"process_resident_memory_bytes", 1 << 20, 1 << 36},
		{"process_open_fds", 3 + 3, 1 << 20}, // stdin, stdout, stderr, ours
	} {
		v, ok := vals[c.name]
		if !ok || v < c.min || v > c.max {
			t.Errorf("%s = %v (present %v), want %v..%v\n%s", c.name, v, ok, c.min, c.max, body)
		}
	}
}
