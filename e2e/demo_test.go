package e2e

import (
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
	"vxrouter/internal/nettest"
	"vxrouter/lab"
)

// TestDemo runs `vxrouter demo` as a user would: it must ping across, exit
// 0, and leave nothing behind; --keep must leave the lab up and --down
// remove it.
func TestDemo(t *testing.T) {
	if binary == "" {
		t.Skip("needs root: builds network namespaces, TUN devices and veth pairs")
	}
	prefix := nettest.Name()
	dir := filepath.Join(os.TempDir(), "vxrouter-demo-"+prefix)
	t.Cleanup(func() {
		exec.Command(binary, "demo", "--down", "--prefix", prefix).Run()
	})
	namespaces := func() string {
		ours, err := lab.Namespaces(prefix)
		if err != nil {
			t.Fatal(err)
		}
		return strings.Join(ours, " ")
	}

	out, err := exec.Command(binary, "demo", "--prefix", prefix, "--nodes", "3").CombinedOutput()
	if err != nil {
		t.Fatalf("demo: %v\n%s", err, out)
	}
	for _, want := range []string{
		"took 172.16.", "FLANNEL_MTU=1450", "dev vxr0", "3/3 replies",
		"result: every ping answered (6 pod pairs)", "dropped nothing",
	} {
		if !strings.Contains(string(out), want) {
			t.Errorf("demo output lacks %q:\n%s", want, out)
		}
	}
	if ns := namespaces(); ns != "" {
		t.Errorf("demo left namespaces: %s", ns)
	}
	if _, err := os.Stat(dir); err == nil {
		t.Errorf("demo left %s", dir)
	}

	out, err = exec.Command(binary, "demo", "--prefix", prefix, "--keep").CombinedOutput()
	if err != nil {
		t.Fatalf("demo --keep: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "vxrouter demo --down --prefix "+prefix) {
		t.Errorf("demo --keep does not say how to remove the lab:\n%s", out)
	}
	if ns := namespaces(); !strings.Contains(ns, prefix+"-node1-pod") {
		t.Fatalf("demo --keep left no lab up: %q", ns)
	}
	// etcd and both nodes outlive the demo.
	if out, _ := exec.Command("pgrep", "-f", dir).Output(); len(strings.Fields(string(out))) != 3 {
		t.Errorf("after demo --keep, processes running from %s: %q, want etcd and 2 nodes", dir, out)
	}
	out, err = exec.Command(binary, "demo", "--down", "--prefix", prefix).CombinedOutput()
	if err != nil {
		t.Fatalf("demo --down: %v\n%s", err, out)
	}
	if ns := namespaces(); ns != "" {
		t.Errorf("demo --down left namespaces: %s", ns)
	}
	if _, err := os.Stat(dir); err == nil {
		t.Errorf("demo --down left %s", dir)
	}
	if out, _ := exec.Command("pgrep", "-f", dir).Output(); len(out) > 0 {
		t.Errorf("demo --down left processes: %s", out)
	}
}

// TestDemoInterrupted: Ctrl-C in the middle of the demo stops it, says so,
// and leaves nothing behind.
func TestDemoInterrupted(t *testing.T) {
	if binary == "" {
		t.Skip("needs root: builds network namespaces, TUN devices and veth pairs")
	}
	prefix := nettest.Name()
	t.Cleanup(func() { exec.Command(binary, "demo", "--down", "--prefix", prefix).Run() })
	cmd := exec.Command(binary, "demo", "--prefix", prefix, "--nodes", "3")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// The demo gives up by itself after its --timeout; should it hang
	// anyway, end it rather than wait for it.
	hung := time.AfterFunc(3*time.Minute, func() { cmd.Process.Kill() })
	defer hung.Stop()
	// Interrupt once the nodes are starting: etcd, a lab and processes exist.
	buf := make([]byte, 4096)
	var seen strings.Builder
	for !strings.Contains(seen.String(), "took 172.16.") {
		n, err := out.Read(buf)
		if err != nil {
			t.Fatalf("demo ended before any node started: %v\n%s%s", err, seen.String(), stderr.String())
		}
		seen.Write(buf[:n])
	}
	cmd.Process.Signal(os.Interrupt)
	go io.Copy(io.Discard, out)
	if err := cmd.Wait(); err == nil {
		t.Fatal("interrupted demo exited 0")
	}
	if !strings.Contains(stderr.String(), "interrupted") {
		t.Errorf("demo does not say it was interrupted: %q", stderr.String())
	}
	if nss, err := lab.Namespaces(prefix); err != nil || len(nss) > 0 {
		t.Errorf("interrupted demo left namespaces: %v %v", nss, err)
	}
	dir := filepath.Join(os.TempDir(), "vxrouter-demo-"+prefix)
	if _, err := os.Stat(dir); err == nil {
		t.Errorf("interrupted demo left %s", dir)
	}
	if out, _ := exec.Command("pgrep", "-af", dir).Output(); len(out) > 0 {
		t.Errorf("interrupted demo left processes:\n%s", out)
	}
}
