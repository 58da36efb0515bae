package nettest

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestMain(m *testing.M) { Main(m, "n") }

// helperEnv makes this test binary, started again by a test, the run that
// TestHelperRun plays: "crash" makes a namespace, a process in it, a
// process named after its base and a temporary directory, then waits to
// be killed; "leak" makes a namespace and ends.
const helperEnv = "NETTEST_HELPER"

func TestHelperRun(t *testing.T) {
	mode := os.Getenv(helperEnv)
	if mode == "" {
		t.Skip("run by TestSweep and TestMainFailsOnLeftovers")
	}
	ns := Name()
	ip(t, "netns", "add", ns)
	if mode == "leak" {
		return
	}
	var pids []int
	for _, argv := range [][]string{
		{"ip", "netns", "exec", ns, "sleep", "617"},
		// sh stays as the loop's parent, so its command line, which
		// holds the base, stays too.
		{"sh", "-c", "while :; do sleep 1; done", Base()},
	} {
		cmd := exec.Command(argv[0], argv[1:]...)
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		pids = append(pids, cmd.Process.Pid)
	}
	// Ready once ip has entered the namespace and become sleep: found
	// then by its namespace only.
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if cmd, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pids[0])); string(cmd) == "sleep\x00617\x00" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("ip netns exec did not become sleep within 10s")
		}
	}
	dir, err := os.MkdirTemp("", "vxrouter-test-"+Base()+"-")
	if err != nil {
		t.Fatal(err)
	}
	fmt.Printf("ready %s %s %s %d %d\n", Base(), ns, dir, pids[0], pids[1])
	time.Sleep(time.Minute) // the test kills this process long before
	t.Fatal("not killed")
}

// running says whether pid runs: a zombie, waiting for init to reap it,
// has no command line any more.
func running(pid int) bool {
	cmd, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	return len(cmd) > 0
}

func helper(t *testing.T, mode string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperRun$", "-test.count=1")
	cmd.Env = append(os.Environ(), helperEnv+"="+mode)
	return cmd
}

func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: makes network namespaces")
	}
}

func ip(t *testing.T, args ...string) {
	t.Helper()
	if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
		t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
	}
}

// TestSweep kills a run that made a namespace with a process in it, a
// process named after it and a temporary directory, and wants Sweep to
// remove all of that, and to leave alone the namespace of a run that is
// still going (this one).
func TestSweep(t *testing.T) {
	needRoot(t)
	mine := Name()
	ip(t, "netns", "add", mine)
	t.Cleanup(func() { exec.Command("ip", "netns", "del", mine).Run() })

	cmd := helper(t, "crash")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	lines := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if strings.HasPrefix(sc.Text(), "ready ") {
				lines <- sc.Text()
			}
		}
		close(lines)
	}()
	var line string
	select {
	case line = <-lines:
	case <-time.After(30 * time.Second):
	}
	if line == "" {
		cmd.Process.Kill()
		cmd.Wait()
		t.Fatal("the crashing run never got ready")
	}
	var crashed, ns, dir string
	var sleepPid, shPid int
	fmt.Sscan(strings.TrimPrefix(line, "ready "), &crashed, &ns, &dir, &sleepPid, &shPid)
	t.Cleanup(func() { remove(crashed) }) // should this test fail

	// While the run goes on, its lock keeps it from any sweep.
	if err := Sweep(); err != nil {
		t.Fatalf("Sweep while the other run goes on: %v", err)
	}
	if !fileExists(filepath.Join(netnsDir, ns)) {
		t.Fatalf("Sweep removed %s of a run still going", ns)
	}
	cmd.Process.Kill()
	cmd.Wait()
	if !running(sleepPid) || !running(shPid) || !fileExists(filepath.Join(lockDir, crashed+".lock")) {
		t.Fatalf("the killed run left sleep %v, sh %v, lock file %v; want all three", running(sleepPid), running(shPid), fileExists(filepath.Join(lockDir, crashed+".lock")))
	}

	if err := Sweep(); err != nil {
		t.Fatalf("Sweep: %v", err)
	}
	left, err := namespaces(crashed)
	if err != nil || len(left) > 0 {
		t.Errorf("namespaces of the killed run after Sweep: %v %v", left, err)
	}
	if id, ok := nsID(filepath.Join(netnsDir, ns)); ok {
		t.Errorf("%s still there (%v)", ns, id)
	}
	if running(sleepPid) || running(shPid) {
		t.Errorf("after Sweep: the sleep in the killed run's namespace runs %v, its sh %v", running(sleepPid), running(shPid))
	}
	if fileExists(dir) || fileExists(filepath.Join(lockDir, crashed+".lock")) {
		t.Errorf("after Sweep: %s there %v, lock file there %v", dir, fileExists(dir), fileExists(filepath.Join(lockDir, crashed+".lock")))
	}
	if !fileExists(filepath.Join(netnsDir, mine)) {
		t.Errorf("Sweep removed %s of this run, which is still going", mine)
	}
}

// TestMainFailsOnLeftovers: a run whose tests pass but leave a namespace
// fails, says so, and leaves nothing.
func TestMainFailsOnLeftovers(t *testing.T) {
	needRoot(t)
	cmd := helper(t, "leak")
	out, err := cmd.CombinedOutput()
	if err == nil || !regexp.MustCompile(`FAIL: the tests left namespaces \[vxtn[a-z0-9]{2}0\] behind`).Match(out) {
		t.Fatalf("run that leaks a namespace: %v\n%s", err, out)
	}
	nss, err := namespaces(Prefix + "n")
	if err != nil {
		t.Fatal(err)
	}
	if slices.ContainsFunc(nss, func(ns string) bool { return !strings.HasPrefix(ns, Base()) }) {
		t.Errorf("namespaces of the leaking run: %v", nss)
	}
}

// TestName: names are unique, valid lab prefixes and short enough for
// `vxrouter demo --prefix`.
func TestName(t *testing.T) {
	needRoot(t)
	lab := regexp.MustCompile(`^[a-z][a-z0-9]{0,11}$`)
	seen := map[string]bool{}
	for range 100 {
		n := Name()
		if !lab.MatchString(n) || len(n) > 8 || !strings.HasPrefix(n, Base()) || !strings.HasPrefix(n, Prefix+"n") || seen[n] {
			t.Fatalf("Name() = %q (base %q, seen %v)", n, Base(), seen[n])
		}
		seen[n] = true
	}
}
