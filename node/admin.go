package node

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
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
//	GET /healthz   "ok" while the node forwards
//	GET /metrics   counters in Prometheus' text format
//	GET /counters  the same counters as a JSON object
//	GET /peers     the route table as JSON
//	POST /capture?file=F&limit=BYTES   start a pcap capture (see capture.go)
//	DELETE /capture                    stop it
//
// The capture endpoints write files as root, so they are served on the
// unix socket only (created 0600); --metrics-addr serves the read-only ones.
//
// It is off the hot path: it reads the forwarder's atomic counters and the
// table's snapshot, nothing more.

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
	mux.HandleFunc("GET /counters", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(n.Counters().Snapshot())
	})
	mux.HandleFunc("GET /peers", func(w http.ResponseWriter, r *http.Request) {
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
	})
	mux.HandleFunc("GET /metrics", n.serveMetrics)
	if !control {
		return mux
	}
	mux.HandleFunc("POST /capture", func(w http.ResponseWriter, r *http.Request) {
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
	})
	mux.HandleFunc("DELETE /capture", func(w http.ResponseWriter, r *http.Request) {
		file, err := n.StopCapture()
		switch {
		case err != nil:
			http.Error(w, err.Error(), http.StatusInternalServerError)
		case file == "":
			http.Error(w, "capture: none running", http.StatusNotFound)
		default:
			fmt.Fprintf(w, "stopped; read it with: tshark -r %s -d udp.port==%d,vxlan\n", file, n.overlay.Backend.Port)
		}
	})
	return mux
}

func (n *Node) serveMetrics(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/plain; version=0.0.4")
	writeMetrics(w, n.Counters().Snapshot(), n.table.Len())
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

// serveAdmin serves the admin endpoint on a unix socket at path (and on
// tcpAddr when set) until ctx ends.
func (n *Node) serveAdmin(ctx context.Context, path, tcpAddr string) error {
	var lns []net.Listener
	var handlers []http.Handler
	if path != "" {
		if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
			return fmt.Errorf("admin socket: %w", err)
		}
		// A socket left by a node that was killed would refuse the bind.
		if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("admin socket: %w", err)
		}
		// Born 0600 (no window with a looser umask): the socket can start
		// captures, so only its owner may connect.
		old := syscall.Umask(0o077)
		ln, err := net.Listen("unix", path)
		syscall.Umask(old)
		if err != nil {
			return fmt.Errorf("admin socket: %w", err)
		}
		lns = append(lns, ln)
		handlers = append(handlers, n.adminHandler(true))
	}
	if tcpAddr != "" {
		ln, err := net.Listen("tcp", tcpAddr)
		if err != nil {
			for _, l := range lns {
				l.Close()
			}
			return fmt.Errorf("metrics address: %w", err)
		}
		lns = append(lns, ln)
		handlers = append(handlers, n.adminHandler(false)) // read-only over TCP
	}
	if len(lns) == 0 {
		<-ctx.Done()
		return nil
	}
	errc := make(chan error, len(lns))
	var srvs []*http.Server
	for i, ln := range lns {
		srv := &http.Server{Handler: handlers[i], ReadHeaderTimeout: 5 * time.Second}
		srvs = append(srvs, srv)
		n.log.Info("admin endpoint", "listen", ln.Addr().String())
		go func() { errc <- srv.Serve(ln) }()
	}
	<-ctx.Done()
	shutdown, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	for _, srv := range srvs {
		srv.Shutdown(shutdown)
	}
	if path != "" {
		os.Remove(path)
	}
	for range lns {
		if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) {
			return err
		}
	}
	return nil
}
