package nettest

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Prefix starts the name of every network namespace (and lab prefix) a
// test makes. It is the tests' own: a sweep removes any namespace named
// with it whose run is over, so nothing else may use it.
const Prefix = "vxt"

// A name is Prefix, the package's tag letter, this run's two-character
// token, then a count in base 36: "vxte4k0", "vxte4k1", … Lowercase
// letters and digits only, so it is also a valid lab prefix, and at most
// 8 characters for the first 1,296 names, short enough for `vxrouter demo
// --prefix`. The tags: b bench, c encap, d deploy, e e2e, k kube, l lab,
// m masq, n nettest, p kubeproxy, q kubetest, r route, t tunnel, x explain.
const (
	tokenLen = 2
	baseLen  = len(Prefix) + 1 + tokenLen
	// tokenChars are the characters of a token.
	tokenChars = "abcdefghijklmnopqrstuvwxyz0123456789"
)

// lockDir holds one lock file per running test binary, <base>.lock. It is
// on tmpfs, like the namespaces' own /run/netns: both go at a reboot.
const lockDir = "/run/vxrouter-test"

// netnsDir is where `ip netns add` keeps its namespace handles.
const netnsDir = "/var/run/netns"

// killTimeout bounds how long a sweep waits for killed processes to go.
const killTimeout = 5 * time.Second

var (
	base  string // this run's Prefix+tag+token; set by Main
	count atomic.Uint64
)

// Name returns a name of this test binary's own for a network namespace
// or a lab prefix: unique in this run, and never another run's. Only for
// tests that run as root in a package whose TestMain calls Main.
func Name() string {
	if base == "" {
		panic("nettest.Name: nettest.Main has not set up this test binary (it does only as root)")
	}
	return base + strconv.FormatUint(count.Add(1)-1, 36)
}

// Base is the start of every Name of this run ("" before Main): a
// temporary directory named with it is removed by a sweep after the run,
// and a process whose command line holds it is killed.
func Base() string { return base }

// Setup prepares something for a package's tests after Main has swept and
// named the run (testbin.Build is one); teardown undoes it afterwards.
type Setup func() (teardown func(), err error)

// Main is TestMain for a package whose tests make network namespaces or
// start processes, tag its letter. As root, it first sweeps what any
// earlier run of any package's tests left behind, when that run was
// killed before its cleanups ran: a crashed run never poisons the next.
// It then holds this run's lock while the setups and the tests run, and
// at the end fails the run if the tests left a namespace or process of
// theirs, which it removes. Without root it only runs the tests (those
// that need root skip).
func Main(m *testing.M, tag string, setups ...Setup) {
	if os.Geteuid() != 0 {
		os.Exit(m.Run())
	}
	os.Exit(run(m, tag, setups))
}

func run(m *testing.M, tag string, setups []Setup) int {
	if len(tag) != 1 || tag[0] < 'a' || tag[0] > 'z' {
		fmt.Fprintf(os.Stderr, "nettest.Main: tag %q: want one lowercase letter\n", tag)
		return 2
	}
	if err := Sweep(); err != nil {
		fmt.Fprintf(os.Stderr, "nettest: leftovers of an earlier test run: %v\n", err)
		return 1
	}
	lock, err := claim(tag)
	if err != nil {
		fmt.Fprintf(os.Stderr, "nettest: %v\n", err)
		return 1
	}
	defer func() {
		os.Remove(lock.Name())
		lock.Close()
	}()
	var teardowns []func()
	defer func() {
		for _, td := range slices.Backward(teardowns) {
			td()
		}
	}()
	for _, s := range setups {
		td, err := s()
		if err != nil {
			fmt.Fprintf(os.Stderr, "nettest: setup: %v\n", err)
			return 1
		}
		teardowns = append(teardowns, td)
	}
	code := m.Run()
	left, err := remove(base)
	if left != "" {
		fmt.Fprintf(os.Stderr, "FAIL: the tests left %s behind (removed now)\n", left)
		code = 1
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "FAIL: removing what the tests left: %v\n", err)
		code = 1
	}
	return code
}

// claim takes a token for this run: a lock file of its own, held until
// the process ends, however it ends.
func claim(tag string) (*os.File, error) {
	if err := os.MkdirAll(lockDir, 0o755); err != nil {
		return nil, fmt.Errorf("lock directory: %w", err)
	}
	for range 100 {
		tok := make([]byte, tokenLen)
		for i := range tok {
			tok[i] = tokenChars[rand.IntN(len(tokenChars))]
		}
		name := Prefix + tag + string(tok)
		f, err := lockBase(name, true)
		if errors.Is(err, os.ErrExist) || errors.Is(err, errBusy) {
			continue // another run's, or being swept
		}
		if err != nil {
			return nil, err
		}
		base = name
		return f, nil
	}
	return nil, fmt.Errorf("no free token in %s after 100 tries", lockDir)
}

// errBusy says another process holds a base's lock: a run that is not
// over, or another sweep.
var errBusy = errors.New("lock held")

// lockBase opens (excl: creates) and locks the lock file of base. A lock
// whose file was removed while this one waited is no lock at all: it
// then returns errBusy, as if someone else held it.
func lockBase(b string, excl bool) (*os.File, error) {
	flags := os.O_RDWR | os.O_CREATE
	if excl {
		flags |= os.O_EXCL
	}
	path := filepath.Join(lockDir, b+".lock")
	f, err := os.OpenFile(path, flags, 0o644)
	if err != nil {
		return nil, err
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, errBusy
		}
		return nil, fmt.Errorf("lock %s: %w", path, os.NewSyscallError("flock", err))
	}
	held, err1 := f.Stat()
	now, err2 := os.Stat(path)
	if err1 != nil || err2 != nil || !os.SameFile(held, now) {
		f.Close()
		return nil, errBusy
	}
	return f, nil
}

// Sweep removes what test runs that are over left behind: every process
// whose command line names one of their bases or that lives in one of
// their namespaces, the namespaces, and temporary files named
// vxrouter-*<base>*. Runs still going (their lock is held) are left alone,
// so packages tested side by side, or a second `go test` in another shell,
// do not disturb each other.
func Sweep() error {
	nss, err := namespaces(Prefix)
	if err != nil {
		return err
	}
	bases := map[string]bool{}
	for _, ns := range nss {
		bases[ns[:min(len(ns), baseLen)]] = true
	}
	locks, _ := filepath.Glob(filepath.Join(lockDir, Prefix+"*.lock"))
	for _, l := range locks {
		bases[strings.TrimSuffix(filepath.Base(l), ".lock")] = true
	}
	if len(bases) > 0 {
		if err := os.MkdirAll(lockDir, 0o755); err != nil {
			return fmt.Errorf("lock directory: %w", err)
		}
	}
	var errs []error
	for b := range bases {
		lock, err := lockBase(b, false)
		if errors.Is(err, errBusy) {
			continue
		}
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if _, err := remove(b); err != nil {
			errs = append(errs, err)
		}
		os.Remove(lock.Name())
		lock.Close()
	}
	return errors.Join(errs...)
}

// remove kills the processes of base b, deletes its namespaces and
// temporary files, and says what it found ("" for nothing).
func remove(b string) (found string, err error) {
	nss, err := namespaces(b)
	if err != nil {
		return "", err
	}
	pids, err := kill(b, nss)
	var errs []error
	if err != nil {
		errs = append(errs, err)
	}
	for _, ns := range nss {
		out, err := exec.Command("ip", "netns", "del", ns).CombinedOutput()
		if err != nil && fileExists(filepath.Join(netnsDir, ns)) {
			errs = append(errs, fmt.Errorf("ip netns del %s: %w: %s", ns, err, bytes.TrimSpace(out)))
		}
	}
	tmps, _ := filepath.Glob(filepath.Join(os.TempDir(), "vxrouter-*"+b+"*"))
	for _, p := range tmps {
		if err := os.RemoveAll(p); err != nil {
			errs = append(errs, err)
		}
	}
	var what []string
	if len(nss) > 0 {
		what = append(what, fmt.Sprintf("namespaces %v", nss))
	}
	if len(pids) > 0 {
		what = append(what, fmt.Sprintf("processes %v", pids))
	}
	return strings.Join(what, " and "), errors.Join(errs...)
}

// kill SIGKILLs every process whose command line holds b or that lives in
// one of nss, and waits until none is left: a process keeps its namespace
// (and its TUN devices and sockets) alive after `ip netns del`. It
// returns the processes it found at first.
func kill(b string, nss []string) ([]string, error) {
	inodes := map[[2]uint64]bool{}
	for _, ns := range nss {
		if id, ok := nsID(filepath.Join(netnsDir, ns)); ok {
			inodes[id] = true
		}
	}
	var first []string
	deadline := time.Now().Add(killTimeout)
	for {
		procs := processes(b, inodes)
		if first == nil {
			first = procs
		}
		if len(procs) == 0 {
			return first, nil
		}
		if time.Now().After(deadline) {
			return first, fmt.Errorf("processes %v of %s survive SIGKILL for %s", procs, b, killTimeout)
		}
		for _, p := range procs {
			pid, _, _ := strings.Cut(p, " ")
			n, _ := strconv.Atoi(pid)
			syscall.Kill(n, syscall.SIGKILL) // it may be gone already; the next round checks
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// processes returns "pid command" for each process, other than this one,
// whose command line holds b or whose network namespace is in inodes.
func processes(b string, inodes map[[2]uint64]bool) []string {
	ents, _ := os.ReadDir("/proc")
	var out []string
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		cmd, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		id, _ := nsID(fmt.Sprintf("/proc/%d/ns/net", pid))
		if len(cmd) > 0 && (bytes.Contains(cmd, []byte(b)) || inodes[id]) {
			args := strings.Fields(string(bytes.ReplaceAll(cmd, []byte{0}, []byte{' '})))
			out = append(out, fmt.Sprintf("%d %s", pid, strings.Join(args[:min(len(args), 3)], " ")))
		}
	}
	return out
}

// nsID identifies a network namespace by its nsfs device and inode, as
// `ip netns pids` does.
func nsID(path string) ([2]uint64, bool) {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return [2]uint64{}, false
	}
	return [2]uint64{st.Dev, st.Ino}, true
}

// namespaces returns the named network namespaces that start with p.
func namespaces(p string) ([]string, error) {
	ents, err := os.ReadDir(netnsDir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list namespaces: %w", err)
	}
	var out []string
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), p) {
			out = append(out, e.Name())
		}
	}
	return out, nil
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}
