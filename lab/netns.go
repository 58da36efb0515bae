package lab

import (
	"errors"
	"fmt"
	"os"
	"runtime"

	"golang.org/x/sys/unix"
)

// doInNamespace runs fn on a fresh OS thread moved into network namespace
// ns, then moves the thread back. fn runs on its own goroutine so that a
// thread that cannot be moved back is never reused: a goroutine that
// ends while locked to its thread takes the thread with it.
func doInNamespace(ns string, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		err, restored := doLocked(ns, fn)
		if restored {
			runtime.UnlockOSThread()
		}
		errc <- err
	}()
	return <-errc
}

// doLocked must run locked to its thread. restored reports whether the
// thread is back in the namespace it started in.
func doLocked(ns string, fn func() error) (err error, restored bool) {
	self, err := os.Open(fmt.Sprintf("/proc/self/task/%d/ns/net", unix.Gettid()))
	if err != nil {
		return fmt.Errorf("enter namespace %s: %w", ns, err), true
	}
	defer self.Close()
	target, err := os.Open(netnsDir + "/" + ns)
	if err != nil {
		return fmt.Errorf("enter namespace %s: %w", ns, err), true
	}
	err = unix.Setns(int(target.Fd()), unix.CLONE_NEWNET)
	target.Close()
	if err != nil {
		return fmt.Errorf("enter namespace %s: %w", ns, os.NewSyscallError("setns", err)), true
	}
	ferr := fn()
	if err := unix.Setns(int(self.Fd()), unix.CLONE_NEWNET); err != nil {
		return errors.Join(ferr, fmt.Errorf("leave namespace %s: %w", ns, os.NewSyscallError("setns", err))), false
	}
	return ferr, true
}
