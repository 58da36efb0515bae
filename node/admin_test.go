package node

import (
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// getUnix GETs path from the admin socket at sock.
func getUnix(t *testing.T, sock, path string) (int, string) {
	t.Helper()
	tr := &http.Transport{Dial: func(_, _ string) (net.Conn, error) { return net.Dial("unix", sock) }}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr}).Get("http://node" + path)
	if err != nil {
		t.Fatalf("GET %s on %s: %v", path, sock, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s on %s: %v", path, sock, err)
	}
	return resp.StatusCode, strings.TrimSpace(string(b))
}

// TestAdminSocketOnePerNode: a second node on a socket a live node
// answers on is refused, saying how to run two; a socket nobody answers
// on (a node was killed) is replaced; a file that is no socket is left
// alone and refused.
func TestAdminSocketOnePerNode(t *testing.T) {
	dir := t.TempDir()
	sock := filepath.Join(dir, "admin.sock")

	first := testNode(t, nil)
	a, err := first.openAdmin(sock, "")
	if err != nil {
		t.Fatal(err)
	}
	defer a.close()
	if code, body := getUnix(t, sock, "/healthz"); code != 200 || body != "ok" {
		t.Fatalf("first node's /healthz = %d %q", code, body)
	}
	if fi, err := os.Stat(sock); err != nil || fi.Mode().Perm()&0o077 != 0 {
		t.Errorf("socket %v, %v: want no access for group and others", fi.Mode(), err)
	}

	second := testNode(t, nil)
	_, err = second.openAdmin(sock, "")
	if !errors.Is(err, ErrAdminSocketInUse) || !strings.Contains(err.Error(), "another vxrouter node") ||
		!strings.Contains(err.Error(), "--admin-socket") || !strings.Contains(err.Error(), sock) {
		t.Fatalf("second node on %s: %v, want ErrAdminSocketInUse naming the socket, the node and --admin-socket", sock, err)
	}
	if code, _ := getUnix(t, sock, "/healthz"); code != 200 {
		t.Fatalf("the first node lost its socket to the refused one: /healthz %d", code)
	}

	// Something else listening there, not a node: refused too.
	other := filepath.Join(dir, "other.sock")
	ln, err := net.Listen("unix", other)
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	_, err = second.openAdmin(other, "")
	ln.Close()
	if !errors.Is(err, ErrAdminSocketInUse) || !strings.Contains(err.Error(), "a process is listening") {
		t.Errorf("a socket another process listens on: %v, want ErrAdminSocketInUse", err)
	}

	// A stale socket: its file is there, nobody listens.
	stale := filepath.Join(dir, "stale.sock")
	sl, err := net.ListenUnix("unix", &net.UnixAddr{Name: stale, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	sl.SetUnlinkOnClose(false)
	sl.Close()
	if _, err := net.Dial("unix", stale); err == nil {
		t.Fatal("the stale socket answers")
	}
	b, err := second.openAdmin(stale, "")
	if err != nil {
		t.Fatalf("a stale socket was not replaced: %v", err)
	}
	if code, body := getUnix(t, stale, "/healthz"); code != 200 || body != "ok" {
		t.Errorf("the replaced socket: /healthz %d %q", code, body)
	}
	b.close()
	if _, err := os.Lstat(stale); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("close left the socket: %v", err)
	}

	// A regular file where the socket should be: not ours to remove.
	file := filepath.Join(dir, "file.sock")
	os.WriteFile(file, []byte("keep me"), 0o600)
	if _, err := second.openAdmin(file, ""); err == nil || !strings.Contains(err.Error(), "not a socket") {
		t.Errorf("a regular file at the socket's path: %v, want an error saying it is not a socket", err)
	}
	if b, _ := os.ReadFile(file); string(b) != "keep me" {
		t.Errorf("the regular file was changed: %q", b)
	}
}

// TestAdminSocketCloseRemovesOnlyItsOwn: a node whose socket was removed
// and made again by another node leaves the other's alone when it stops.
func TestAdminSocketCloseRemovesOnlyItsOwn(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "admin.sock")
	a, err := testNode(t, nil).openAdmin(sock, "")
	if err != nil {
		t.Fatal(err)
	}
	os.Remove(sock) // an operator's mistake
	b, err := testNode(t, nil).openAdmin(sock, "")
	if err != nil {
		t.Fatal(err)
	}
	defer b.close()
	a.close()
	if code, _ := getUnix(t, sock, "/healthz"); code != 200 {
		t.Errorf("the second node's socket is gone after the first stopped")
	}
}

// TestAdminTCPTaken: a metrics address that is taken fails openAdmin with
// an error naming the flags, and the unix socket opened before it is
// removed again.
func TestAdminTCPTaken(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	sock := filepath.Join(t.TempDir(), "admin.sock")
	_, err = testNode(t, nil).openAdmin(sock, ln.Addr().String())
	if err == nil || !strings.Contains(err.Error(), "--healthz-port") || !strings.Contains(err.Error(), ln.Addr().String()) {
		t.Fatalf("a taken TCP address: %v, want an error naming it and the flags", err)
	}
	if _, err := os.Lstat(sock); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the unix socket stayed after openAdmin failed: %v", err)
	}
}
