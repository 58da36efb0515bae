package demo

import (
	"bufio"
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"vxrouter/lab"
)

// captureWait bounds how long a capture waits for tcpdump to start
// listening, and then for its packets: both take milliseconds on an idle
// machine and can take seconds on a loaded one.
const captureWait = 10 * time.Second

// capture is one tcpdump on one device of a host, until it has seen its
// packets.
type capture struct {
	host   *lab.Host
	dev    string
	cancel context.CancelFunc
	done   chan struct{}

	mu    sync.Mutex
	lines []string
	err   error
}

// startCapture runs `tcpdump -c count` with filter on dev in host's
// namespace and returns once tcpdump listens, so that a packet sent after
// it returns is seen. The capture ends when it has count packets, or at
// wait, or when the demo ends (lab.Cleanup kills what is left of it).
func (r *run) startCapture(h *lab.Host, dev, filter string, count int) (*capture, error) {
	ctx, cancel := context.WithTimeout(r.ctx, 2*captureWait)
	c := &capture{host: h, dev: dev, cancel: cancel, done: make(chan struct{})}
	args := []string{"-n", "-t", "-l", "-c", strconv.Itoa(count), "-i", dev}
	args = append(args, strings.Fields(filter)...)
	cmd := h.Command(ctx, "tcpdump", args...)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		cancel()
		return nil, err
	}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		cancel()
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		cancel()
		return nil, fmt.Errorf("tcpdump on %s %s: %w", h.Name, dev, err)
	}
	r.captures = append(r.captures, c) // its goroutine below closes done
	listening := make(chan error, 1)
	stderrDone := make(chan struct{})
	go func() {
		defer close(stderrDone)
		sc := bufio.NewScanner(stderr)
		var said []string
		for sc.Scan() {
			said = append(said, sc.Text())
			if strings.Contains(sc.Text(), "listening on") {
				listening <- nil
				for sc.Scan() { // the summary at the end; not narrated
				}
				return
			}
		}
		listening <- fmt.Errorf("tcpdump on %s %s ended before it listened: %s", h.Name, dev, strings.Join(said, "; "))
	}()
	go func() {
		defer close(c.done)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			c.mu.Lock()
			c.lines = append(c.lines, sc.Text())
			c.mu.Unlock()
		}
		<-stderrDone // Wait closes the pipes: read them out first
		if err := cmd.Wait(); err != nil && ctx.Err() != nil {
			c.mu.Lock()
			c.err = fmt.Errorf("tcpdump on %s %s: no packet within %s", h.Name, dev, 2*captureWait)
			c.mu.Unlock()
		}
	}()
	select {
	case err := <-listening:
		if err != nil {
			cancel()
			<-c.done
			return nil, err
		}
	case <-time.After(captureWait):
		cancel()
		<-c.done
		return nil, fmt.Errorf("tcpdump on %s %s did not listen within %s", h.Name, dev, captureWait)
	}
	return c, nil
}

// wait waits for the capture's packets and returns what tcpdump printed
// for them.
func (c *capture) wait() ([]string, error) {
	<-c.done
	c.cancel()
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.lines, c.err
}

// stop ends the capture early, when what it waits for will not come.
func (c *capture) stop() {
	c.cancel()
	<-c.done
}

// ruleCounters reads a chain of a host's nat table with its counters
// (`iptables -t nat -L chain -v -n -x`) and returns the output and the
// packet counter of each rule, in order, with the rule's target.
func (r *run) ruleCounters(h *lab.Host, chain string) (string, []ruleCount, error) {
	out, err := h.Run(r.ctx, "iptables", "-w", "5", "-t", "nat", "-L", chain, "-v", "-n", "-x")
	if err != nil {
		return out, nil, err
	}
	return out, parseCounters(out), nil
}

// ruleCount is one rule of a listed chain: its packet counter, target and
// the rest of its line.
type ruleCount struct {
	packets uint64
	target  string
	line    string
}

// parseCounters reads the rules of `iptables -L -v -n -x` output: after the
// "Chain" line and the column heads, one rule a line starting with its
// packet and byte counters.
func parseCounters(out string) []ruleCount {
	var rs []ruleCount
	for line := range strings.Lines(out) {
		f := strings.Fields(line)
		if len(f) < 3 {
			continue
		}
		n, err := strconv.ParseUint(f[0], 10, 64)
		if err != nil {
			continue // "Chain ...", the column heads
		}
		rs = append(rs, ruleCount{packets: n, target: f[2], line: strings.TrimSpace(line)})
	}
	return rs
}

// conntrack returns the lines of a host's connection tracking table that
// contain every one of words.
func (r *run) conntrack(h *lab.Host, words ...string) []string {
	out, err := h.Run(r.ctx, "cat", "/proc/net/nf_conntrack")
	if err != nil {
		return nil
	}
	var lines []string
next:
	for line := range strings.Lines(out) {
		for _, w := range words {
			if !strings.Contains(line, w) {
				continue next
			}
		}
		lines = append(lines, strings.Join(strings.Fields(line), " "))
	}
	return lines
}
