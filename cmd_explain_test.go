package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// runExplain runs `vxrouter explain args...` and returns what it printed.
func runExplain(t *testing.T, args ...string) (string, error) {
	t.Helper()
	for _, e := range []string{"SERVICE", "TO_OUTSIDE", "DST", "PROTO", "SIZE", "SVG", "PCAP"} {
		t.Setenv("VXROUTER_EXPLAIN_"+e, "")
		os.Unsetenv("VXROUTER_EXPLAIN_" + e)
	}
	var out bytes.Buffer
	app := newApp()
	app.Writer = &out
	err := app.Run(append([]string{"vxrouter", "explain"}, args...))
	return out.String(), err
}

// TestExplainJourneys: the flags choose the journey, with their defaults
// (a Service is TCP, the outside host is 10.0.0.100), and --svg and
// --pcap write their files.
func TestExplainJourneys(t *testing.T) {
	dir := t.TempDir()
	svg, pcap := filepath.Join(dir, "j.svg"), filepath.Join(dir, "j.pcap")
	out, err := runExplain(t, "--service", "192.168.3.10:80", "--svg", svg, "--pcap", pcap)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"The journey of a connection to a Service", "-j DNAT --to-destination 172.16.57.15:8080", "Wrote " + pcap + ": 3 packets", "Wrote " + svg} {
		if !strings.Contains(out, want) {
			t.Errorf("explain --service lacks %q", want)
		}
	}
	for _, f := range []string{svg, pcap} {
		if st, err := os.Stat(f); err != nil || st.Size() == 0 {
			t.Errorf("%s not written: %v", f, err)
		}
	}
	out, err = runExplain(t, "--to-outside")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, "sends a ping to 10.0.0.100") {
		t.Errorf("explain --to-outside does not go to 10.0.0.100:\n%s", out)
	}
	out, err = runExplain(t, "--to-outside", "--dst", "8.8.8.8", "--proto", "udp")
	if err != nil || !strings.Contains(out, "default via 10.0.0.254 dev eth0") {
		t.Errorf("explain --to-outside --dst 8.8.8.8: %v, or no route via the gateway:\n%s", err, out)
	}
}

// TestExplainBadFlags: a journey that cannot be is refused with the flag
// named, and nothing is written.
func TestExplainBadFlags(t *testing.T) {
	dir := t.TempDir()
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--service", "192.168.3.10"}, "--service"},
		{[]string{"--service", "192.168.3.10:80", "--size", "100"}, "--size with --service"},
		{[]string{"--service", "192.168.3.10:80", "--proto", "icmp"}, "--proto icmp"},
		{[]string{"--service", "172.16.3.10:80"}, "in the pod network"},
		{[]string{"--service", "10.0.0.50:80"}, "nodes' network"},
		{[]string{"--service", "192.168.3.10:80", "--target-port", "0"}, "--target-port"},
		{[]string{"--service", "192.168.3.10:80", "--service-network", "192.168.4.0/24"}, "not in --service-network"},
		{[]string{"--service", "192.168.3.10:80", "--to-outside"}, "one journey at a time"},
		{[]string{"--to-outside", "--dst", "172.16.57.15"}, "in the overlay"},
		{[]string{"--to-outside", "--dst", "224.0.0.1"}, "multicast"},
		{[]string{"--to-outside", "--dst", "10.0.0.1"}, "node A itself"},
		{[]string{"--to-outside", "--src", "fd00::8"}, "IPv6"},
	} {
		svg := filepath.Join(dir, "bad.svg")
		_, err := runExplain(t, append(c.args, "--svg", svg)...)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("explain %q: %v, want an error with %q", c.args, err, c.want)
		}
		if _, err := os.Stat(svg); err == nil {
			t.Errorf("explain %q wrote %s", c.args, svg)
		}
	}
}
