package lease

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestEmbeddedUnixSocket(t *testing.T) {
	dir := t.TempDir()
	e, err := StartEmbedded(dir)
	if err != nil {
		t.Fatal(err)
	}
	closed := false
	t.Cleanup(func() {
		if !closed {
			e.Close()
		}
	})

	sock := filepath.Join(dir, "etcd.sock")
	if got, want := e.UnixEndpoint(), "unix://"+sock; got != want {
		t.Fatalf("UnixEndpoint() = %q, want %q", got, want)
	}
	if eps := e.Endpoints(); len(eps) != 2 || !strings.HasPrefix(eps[0], "http://127.0.0.1:") || eps[1] != e.UnixEndpoint() {
		t.Fatalf("Endpoints() = %q, want the http://127.0.0.1 one first, then the unix one", eps)
	}
	fi, err := os.Stat(sock)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode()&os.ModeSocket == 0 {
		t.Fatalf("%s is %v, not a socket", sock, fi.Mode())
	}

	// Write over TCP, read over the unix socket only: the socket is a real,
	// separate path to the same store.
	ctx := testCtx(t, 10*time.Second)
	tcp := testClient(t, e)
	if _, err := tcp.Put(ctx, "/k", "over tcp"); err != nil {
		t.Fatal(err)
	}
	unix, err := NewClient([]string{e.UnixEndpoint()})
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close()
	resp, err := unix.Get(ctx, "/k")
	if err != nil {
		t.Fatalf("get over %s: %v", e.UnixEndpoint(), err)
	}
	if len(resp.Kvs) != 1 || string(resp.Kvs[0].Value) != "over tcp" {
		t.Fatalf("get over unix socket = %v, want the value put over tcp", resp.Kvs)
	}
	if _, err := unix.Put(ctx, "/k2", "over unix"); err != nil {
		t.Fatalf("put over unix socket: %v", err)
	}

	// The registry works over the socket too.
	r := NewRegistry(unix, "", testLog(t))
	cfg := mustConfig(t, `{"Network":"10.9.0.0/16","Backend":{"Type":"vxlan"}}`)
	if err := r.SetConfig(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Config(ctx); err != nil {
		t.Fatal(err)
	}

	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	closed = true
	if _, err := os.Stat(sock); !os.IsNotExist(err) {
		t.Errorf("socket still there after Close: %v", err)
	}
}

func TestEmbeddedSocketPathTooLong(t *testing.T) {
	dir := filepath.Join(t.TempDir(), strings.Repeat("d", 110))
	_, err := StartEmbedded(dir)
	if err == nil || !strings.Contains(err.Error(), "longer than the kernel's") {
		t.Fatalf("StartEmbedded(long dir) error = %v, want one about the socket path length", err)
	}
}
