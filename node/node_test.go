package node

import (
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"vxrouter/encap"
	"vxrouter/route"
)

func TestVTEPIsKeptAcrossRestarts(t *testing.T) {
	dir := t.TempDir()
	mac, err := loadOrCreateVTEP(dir)
	if err != nil {
		t.Fatal(err)
	}
	if mac[0]&0x02 == 0 || mac[0]&0x01 != 0 {
		t.Errorf("VTEP MAC %s is not locally administered unicast", mac)
	}
	again, err := loadOrCreateVTEP(dir)
	if err != nil {
		t.Fatal(err)
	}
	if again.String() != mac.String() {
		t.Errorf("second start made %s, want the kept %s", again, mac)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Errorf("state dir holds %d files, want just %s (no temp files)", len(entries), vtepFile)
	}
}

func TestVTEPFileGarbageIsAnError(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, vtepFile), []byte("not a mac\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := loadOrCreateVTEP(dir)
	if err == nil || !strings.Contains(err.Error(), "remove the file") {
		t.Fatalf("err = %v, want one that says how to fix it", err)
	}
	// Nothing was overwritten: the operator decides.
	if b, _ := os.ReadFile(filepath.Join(dir, vtepFile)); string(b) != "not a mac\n" {
		t.Errorf("file changed to %q", b)
	}
}

func TestNewVTEPsDiffer(t *testing.T) {
	seen := map[string]bool{}
	for i := 0; i < 100; i++ {
		m, err := newVTEP()
		if err != nil {
			t.Fatal(err)
		}
		if seen[m.String()] {
			t.Fatalf("VTEP MAC %s made twice", m)
		}
		seen[m.String()] = true
	}
}

func TestWriteMetrics(t *testing.T) {
	var b strings.Builder
	writeMetrics(&b, map[string]uint64{
		"tx-packets": 7, "tx-bytes": 700, "rx-packets": 5, "rx-bytes": 500,
		"no-route": 2, "decap-foreign-vni": 1,
	}, 3)
	got := b.String()
	for _, want := range []string{
		"vxrouter_peers 3\n",
		"vxrouter_tx_packets_total 7\n",
		"vxrouter_rx_bytes_total 500\n",
		`vxrouter_drops_total{reason="decap-foreign-vni"} 1` + "\n",
		`vxrouter_drops_total{reason="no-route"} 2` + "\n",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("metrics lack %q:\n%s", want, got)
		}
	}
	if strings.Index(got, "decap-foreign-vni") > strings.Index(got, "no-route") {
		t.Error("drop reasons are not sorted")
	}
}

// TestAdminTCPIsReadOnly: the handler served on --metrics-addr has the
// read-only endpoints and not the capture ones (which write files as root).
func TestAdminTCPIsReadOnly(t *testing.T) {
	mac := net.HardwareAddr{2, 0, 0, 0, 0, 1}
	tb, err := route.NewTable(1, mac)
	if err != nil {
		t.Fatal(err)
	}
	dec, _ := encap.NewDecoder(1, mac)
	n := &Node{table: tb, fwd: route.NewForwarder(nil, nil, tb, dec, nil), log: slog.New(slog.DiscardHandler)}
	n.ph.Store(int32(phaseReady))
	file := filepath.Join(t.TempDir(), "x.pcap")
	for _, tc := range []struct {
		control      bool
		method, path string
		want         int
	}{
		{false, "GET", "/metrics", http.StatusOK},
		{false, "GET", "/peers", http.StatusOK},
		{false, "GET", "/healthz", http.StatusOK},
		{false, "GET", "/readyz", http.StatusOK},
		{false, "POST", "/capture?file=" + file, http.StatusMethodNotAllowed},
		{false, "DELETE", "/capture", http.StatusMethodNotAllowed},
		{true, "GET", "/metrics", http.StatusOK},
		{true, "DELETE", "/capture", http.StatusNotFound}, // none running
	} {
		rec := httptest.NewRecorder()
		n.adminHandler(tc.control).ServeHTTP(rec, httptest.NewRequest(tc.method, tc.path, nil))
		// A mux without the route answers 405 for a method it knows
		// elsewhere or 404; either way not 200.
		got := rec.Code
		if tc.want == http.StatusMethodNotAllowed && (got == http.StatusMethodNotAllowed || got == http.StatusNotFound) {
			continue
		}
		if got != tc.want {
			t.Errorf("control=%v %s %s: %d, want %d", tc.control, tc.method, tc.path, got, tc.want)
		}
	}
	if _, err := os.Stat(file); err == nil {
		t.Error("the read-only handler created the capture file")
	}
}
