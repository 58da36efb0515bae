// Package nettest has the network-namespace helpers that tests of more
// than one package need: make a named namespace that goes when the test
// ends, and run code on a thread inside it.
package nettest

import (
	"os/exec"
	"runtime"
	"testing"

	"github.com/vishvananda/netns"
)

// AddNetns creates a network namespace with ip(8), so it is named and
// visible to `ip netns` while the test runs, and deletes it when the test
// ends, failed or not. It returns a handle for netns.Set and netlink.
func AddNetns(t testing.TB, name string) netns.NsHandle {
	t.Helper()
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add %s: %v: %s", name, err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "del", name).CombinedOutput(); err != nil {
			t.Errorf("ip netns del %s: %v: %s", name, err, out)
		}
	})
	ns, err := netns.GetFromName(name)
	if err != nil {
		t.Fatalf("open netns %s: %v", name, err)
	}
	t.Cleanup(func() { ns.Close() })
	return ns
}

// InNetns runs fn on this goroutine's OS thread switched into ns, and
// switches it back. Whatever fn creates (TUN devices, sockets) stays in ns
// for good and may then be used from any goroutine; goroutines fn starts
// do not run in ns. If the thread cannot be switched back it stays locked,
// so Go ends it with the goroutine instead of reusing a thread in ns.
func InNetns(t testing.TB, ns netns.NsHandle, fn func()) {
	t.Helper()
	runtime.LockOSThread()
	orig, err := netns.Get()
	if err != nil {
		runtime.UnlockOSThread()
		t.Fatalf("current netns: %v", err)
	}
	defer orig.Close()
	if err := netns.Set(ns); err != nil {
		runtime.UnlockOSThread()
		t.Fatalf("enter netns: %v", err)
	}
	defer func() {
		if err := netns.Set(orig); err != nil {
			t.Errorf("leave netns: %v (thread stays locked and dies with the goroutine)", err)
			return
		}
		runtime.UnlockOSThread()
	}()
	fn()
}
