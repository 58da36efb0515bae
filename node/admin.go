package node

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// The admin endpoint answers on a unix socket (reachable from any network
// namespace, guarded by file permissions) and, when asked, on TCP:
//
//	GET /healthz   "ok" while the process runs (from early in Start on)
//	GET /readyz    200 "ready" once the node holds its lease, its TUN device
//	               is up, subnet.env is written and the first list of peers
//	               is in its route table (when it tells systemd READY=1);
//	               503 and what it waits for before that and while it stops
//	GET /metrics   counters in Prometheus' text format, with the process's
//	               goroutines, heap, resident memory and open files
//	GET /counters  the same counters as a JSON object
//	GET /peers     the route table as JSON
//	POST /capture?file=F&limit=BYTES   start a pcap capture (see capture.go)
//	DELETE /capture                    stop it
//
// The capture endpoints write files as root, so they are served on the
// unix socket only (created 0600); --metrics-addr serves the read-only ones.
//
// It is off the hot path: it reads the forwarder's atomic counters and the
// table's snapshot, nothing more. Until Start has finished, every endpoint
// but /healthz and /readyz answers 503.

// adminPeer is what /peers and the demo show of a peer.
type adminPeer struct {
	Subnet   string `json:"subnet"`
	PublicIP string `json:"public_ip"`
	Port     uint16 `json:"port"`
	VtepMAC  string `json:"vtep_mac"`
	// PartialCsum: packets to it leave with their checksums pending.
	PartialCsum bool `json:"partial_checksums"`
	// DirectRoute: the peer is on-link and Backend.DirectRouting routes
	// its subnet through the underlay via this address, not the overlay.
	DirectRoute string `json:"direct_route,omitempty"`
}

// adminHandler serves the read-only endpoints, and with control the ones
// that change things (capture, which writes a file as root): those only on
// the unix socket, whose file permissions say who may.
func (n *Node) adminHandler(control bool) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		if p := n.phase(); p != phaseReady {
			http.Error(w, "not ready: "+p.String(), http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ready")
	})
	mux.HandleFunc("GET /counters", n.started(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(n.Counters().Snapshot())
	}))
	mux.HandleFunc("GET /peers", n.started(func(w http.ResponseWriter, r *http.Request) {
		var out []adminPeer
		direct := n.direct.Snapshot()
		for _, p := range n.table.Peers() {
			ap := adminPeer{Subnet: p.Subnet.String(), PublicIP: p.Addr.Addr().String(), Port: p.Addr.Port(), VtepMAC: p.VTEP.String(), PartialCsum: p.PartialCsum}
			if r, ok := direct[p.Subnet]; ok {
				ap.DirectRoute = r.Via.String()
			}
			out = append(out, ap)
		}
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(out)
	}))
	mux.HandleFunc("GET /metrics", n.started(n.serveMetrics))
	if !control {
		return mux
	}
	mux.HandleFunc("POST /capture", n.started(func(w http.ResponseWriter, r *http.Request) {
		file := r.URL.Query().Get("file")
		if file == "" {
			http.Error(w, "capture: say where, with ?file=/path/to.pcap (and &limit=BYTES)", http.StatusBadRequest)
			return
		}
		limit := int64(DefaultCaptureLimit)
		if s := r.URL.Query().Get("limit"); s != "" {
			v, err := strconv.ParseInt(s, 10, 64)
			if err != nil || v <= 0 {
				http.Error(w, "capture: limit must be a positive number of bytes", http.StatusBadRequest)
				return
			}
			limit = v
		}
		if err := n.StartCapture(file, limit); err != nil {
			http.Error(w, err.Error(), http.StatusConflict)
			return
		}
		fmt.Fprintf(w, "capturing to %s (at most %d bytes); stop with DELETE /capture\n", file, limit)
	}))
	mux.HandleFunc("DELETE /capture", n.started(func(w http.ResponseWriter, r *http.Request) {
		file, err := n.StopCapture()
		switch {
		case err != nil:
			http.Error(w, err.Error(), http.StatusInternalServerError)
		case file == "":
			http.Error(w, "capture: none running", http.StatusNotFound)
		default:
			fmt.Fprintf(w, "stopped; read it with: tshark -r %s -d udp.port==%d,vxlan\n", file, n.overlay.Backend.Port)
		}
	}))
	return mux
}

// started serves h once Start has finished (the node's fields are set),
// and 503 before.
func (n *Node) started(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if n.phase() == phaseStarting {
			http.Error(w, "starting: "+phaseStarting.String(), http.StatusServiceUnavailable)
			return
		}
		h(w, r)
	}
}

func (n *Node) serveMetrics(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/plain; version=0.0.4")
	writeMetrics(w, n.Counters().Snapshot(), n.table.Len())
	writeProcessMetrics(w)
}

// writeMetrics writes counters in Prometheus' text format: traffic as
// vxrouter_<name>_total, every drop as vxrouter_drops_total{reason=...}.
func writeMetrics(w interface{ Write([]byte) (int, error) }, counters map[string]uint64, peers int) {
	fmt.Fprintf(w, "# HELP vxrouter_peers Peers in the route table.\n# TYPE vxrouter_peers gauge\nvxrouter_peers %d\n", peers)
	traffic := []string{"tx-packets", "tx-bytes", "rx-packets", "rx-bytes"}
	for _, name := range traffic {
		m := "vxrouter_" + strings.ReplaceAll(name, "-", "_") + "_total"
		fmt.Fprintf(w, "# TYPE %s counter\n%s %d\n", m, m, counters[name])
	}
	var reasons []string
	for name := range counters {
		if !slices.Contains(traffic, name) {
			reasons = append(reasons, name)
		}
	}
	slices.Sort(reasons)
	fmt.Fprintf(w, "# HELP vxrouter_drops_total Packets not forwarded, by reason.\n# TYPE vxrouter_drops_total counter\n")
	for _, r := range reasons {
		fmt.Fprintf(w, "vxrouter_drops_total{reason=%q} %d\n", r, counters[r])
	}
}

// adminServer is the node's admin endpoint while it is open: from early in
// Start, before the node touches etcd (so a node that would take another
// one's socket is refused having written nothing, and /healthz and
// /readyz answer while it starts), until Run returns.
type adminServer struct {
	srvs []*http.Server
	// errc gets the error of a server that stopped by itself.
	errc chan error
	// sock is the unix socket's path and what this node made there, so
	// that close removes only its own socket, never one a later node made
	// after an operator removed this one's.
	sock   string
	sockFI os.FileInfo
}

// openAdmin opens the admin endpoint on the unix socket path (none when
// "") and on the TCP address tcpAddr (none when "") and serves it.
func (n *Node) openAdmin(path, tcpAddr string) (_ *adminServer, err error) {
	a := &adminServer{}
	var lns []net.Listener
	var handlers []http.Handler
	defer func() {
		if err != nil {
			for _, ln := range lns {
				ln.Close()
			}
			a.removeSocket()
		}
	}()
	if path != "" {
		ln, fi, err := listenAdminSocket(path)
		if err != nil {
			return nil, err
		}
		a.sock, a.sockFI = path, fi
		lns = append(lns, ln)
		handlers = append(handlers, n.adminHandler(true))
	}
	if tcpAddr != "" {
		ln, err := net.Listen("tcp", tcpAddr)
		if err != nil {
			return nil, fmt.Errorf("metrics address %s (--metrics-addr, or --healthz-ip and --healthz-port): %w", tcpAddr, err)
		}
		lns = append(lns, ln)
		handlers = append(handlers, n.adminHandler(false)) // read-only over TCP
	}
	a.errc = make(chan error, len(lns))
	for i, ln := range lns {
		srv := &http.Server{Handler: handlers[i], ReadHeaderTimeout: 5 * time.Second}
		a.srvs = append(a.srvs, srv)
		n.log.Info("admin endpoint", "listen", ln.Addr().String())
		go func() {
			if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
				a.errc <- fmt.Errorf("%s: %w", ln.Addr(), err)
			}
		}()
	}
	return a, nil
}

// failed delivers the error of a server that stopped by itself.
func (a *adminServer) failed() <-chan error { return a.errc }

// close stops serving (giving requests in flight two seconds) and removes
// the socket.
func (a *adminServer) close() {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	for _, srv := range a.srvs {
		srv.Shutdown(ctx)
	}
	a.removeSocket()
}

// removeSocket removes the unix socket if it is still the one this node
// made.
func (a *adminServer) removeSocket() {
	if a.sock == "" {
		return
	}
	if fi, err := os.Lstat(a.sock); err == nil && os.SameFile(fi, a.sockFI) {
		os.Remove(a.sock)
	}
}

// ErrAdminSocketInUse is the error of a node whose admin socket is
// another live process's (errors.Is).
var ErrAdminSocketInUse = errors.New("admin socket in use")

// listenAdminSocket listens on the unix socket at path, born 0600. One
// node per socket: a socket that a live process answers on is refused
// (two nodes on one host, in two network namespaces or on two overlays,
// each need their own --admin-socket); one that nobody answers on is what
// a killed node left behind, and is replaced. The check and the bind are
// one step for every vxrouter on the host (a lock on the socket's
// directory), so two nodes starting together cannot both replace a stale
// socket.
func listenAdminSocket(path string) (_ *net.UnixListener, _ os.FileInfo, err error) {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, nil, fmt.Errorf("admin socket: %w", err)
	}
	unlock, err := lockDir(dir)
	if err != nil {
		return nil, nil, fmt.Errorf("admin socket %s: %w", path, err)
	}
	defer unlock()
	if err := claimSocket(path); err != nil {
		return nil, nil, err
	}
	// Born 0600 (no window with a looser umask): the socket can start
	// captures, so only its owner may connect.
	old := syscall.Umask(0o077)
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	syscall.Umask(old)
	if err != nil {
		return nil, nil, fmt.Errorf("admin socket %s: %w", path, err)
	}
	// close removes it, and only if it is still this node's.
	ln.SetUnlinkOnClose(false)
	fi, err := os.Lstat(path)
	if err != nil {
		ln.Close()
		return nil, nil, fmt.Errorf("admin socket %s: %w", path, err)
	}
	return ln, fi, nil
}

// claimSocket makes path free for a new socket, or says why it is not:
// nothing there is free; a socket nobody listens on (connection refused)
// is stale and removed; a socket a process answers on, or a file that is
// no socket, is refused.
func claimSocket(path string) error {
	fi, err := os.Lstat(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("admin socket: %w", err)
	}
	if fi.Mode().Type() != os.ModeSocket {
		return fmt.Errorf("admin socket %s: a %s is there, not a socket; remove it or choose another --admin-socket", path, fileKind(fi.Mode()))
	}
	c, err := net.DialTimeout("unix", path, 2*time.Second)
	switch {
	case err == nil:
		c.Close()
		who := "a process is listening there"
		if answersHealthz(path) {
			who = "another vxrouter node is running and answers there"
		}
		return fmt.Errorf("admin socket %s: %s: %w; each node on a host needs its own: stop that one, or give this one --admin-socket (VXROUTER_ADMIN_SOCKET) %s",
			path, who, ErrAdminSocketInUse, filepath.Join(filepath.Dir(path), "OTHER.sock"))
	case errors.Is(err, syscall.ECONNREFUSED):
		// Left by a node that was killed: nobody will answer on it.
		if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("admin socket %s: remove the stale socket: %w", path, err)
		}
		return nil
	default:
		return fmt.Errorf("admin socket %s: check whether a node answers there: %w", path, err)
	}
}

// answersHealthz reports whether GET /healthz on the unix socket at path
// says "ok", as a vxrouter node does.
func answersHealthz(path string) bool {
	c := &http.Client{
		Timeout: 2 * time.Second,
		Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", path)
		}},
	}
	defer c.CloseIdleConnections()
	resp, err := c.Get("http://node/healthz")
	if err != nil {
		return false
	}
	defer resp.Body.Close()
	body := make([]byte, 16)
	k, _ := io.ReadFull(resp.Body, body)
	return resp.StatusCode == http.StatusOK && strings.TrimSpace(string(body[:k])) == "ok"
}

func fileKind(m os.FileMode) string {
	switch {
	case m.IsDir():
		return "directory"
	case m.IsRegular():
		return "regular file"
	case m.Type()&os.ModeSymlink != 0:
		return "symbolic link"
	}
	return "file of mode " + m.Type().String()
}

// lockDir takes an exclusive lock (flock) on the directory dir, waiting
// for up to ten seconds, and returns the unlock.
func lockDir(dir string) (unlock func(), err error) {
	f, err := os.Open(dir)
	if err != nil {
		return nil, err
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			return func() { f.Close() }, nil // closing drops the lock
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) || time.Now().After(deadline) {
			f.Close()
			return nil, fmt.Errorf("lock %s: %w", dir, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
