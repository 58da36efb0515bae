package e2e

import (
	"context"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestCapture: a node started with --capture, and one told to capture
// through its admin endpoint, write pcaps that tshark decodes as VXLAN
// carrying the pods' pings.
func TestCapture(t *testing.T) {
	tshark, err := exec.LookPath("tshark")
	if err != nil {
		t.Skip("needs tshark to read the capture (apt-get install tshark)")
	}
	o := newOverlay(t, network16)
	h1, h2 := o.host("c1"), o.host("c2")
	file1 := filepath.Join(o.dir, "c1.pcap")
	n1, env1 := o.start(h1, "--capture", file1)
	n2, env2 := o.start(h2)
	p1, p2 := o.pod(h1, env1.Subnet.Masked()), o.pod(h2, env2.Subnet.Masked())

	file2 := filepath.Join(o.dir, "c2.pcap")
	admin := func(method, path string) string {
		t.Helper()
		c := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", n2.AdminSocket)
		}}}
		req, _ := http.NewRequest(method, "http://node"+path, nil)
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("%s %s: %s: %s", method, path, resp.Status, b)
		}
		return string(b)
	}
	admin("POST", "/capture?file="+file2)
	o.mustPing(p1, p2)
	if out := admin("DELETE", "/capture"); !strings.Contains(out, "tshark -r "+file2) {
		t.Errorf("stopping the capture does not say how to read it: %q", out)
	}
	o.stop(n1) // flushes and closes its capture

	for _, tc := range []struct{ file, src, dst string }{
		{file1, h1.Underlay.String(), h2.Underlay.String()},
		{file2, h2.Underlay.String(), h1.Underlay.String()},
	} {
		if st, err := os.Stat(tc.file); err != nil || st.Size() <= 24 {
			t.Fatalf("capture %s: %v", tc.file, err)
		}
		cmd := exec.Command(tshark, "-r", tc.file, "-n", "-d", "udp.port==8472,vxlan",
			"-T", "fields", "-E", "separator=,", "-e", "ip.src", "-e", "vxlan.vni", "-e", "icmp.type")
		cmd.Env = append(os.Environ(), "HOME="+t.TempDir())
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("tshark: %v", err)
		}
		// Each line: outer src,inner src,vni,icmp type.
		var sent, got int
		for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
			f := strings.Split(line, ",")
			if len(f) != 4 || f[2] != "1" {
				t.Fatalf("%s: line %q is not VXLAN VNI 1 with an inner IPv4 packet", tc.file, line)
			}
			switch {
			case f[0] == tc.src && f[1] == p1.Addr.String() || f[0] == tc.src && f[1] == p2.Addr.String():
				sent++
			case f[0] == tc.dst:
				got++
			}
		}
		// 1 + 3 echo requests one way, as many replies back, at least.
		if sent < 4 || got < 4 {
			t.Errorf("%s: %d datagrams sent and %d received, want >= 4 each:\n%s", tc.file, sent, got, out)
		}
	}
}
