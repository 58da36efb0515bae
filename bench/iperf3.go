package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os/exec"
	"strconv"
	"strings"
	"time"

	"vxrouter/lab"
)

// iperf3Port is where the iperf3 server listens; the pod's namespace is
// fresh, so its default port is free.
const iperf3Port = "5201"

// HaveIPerf3 reports whether iperf3 is installed.
func HaveIPerf3() bool {
	_, err := exec.LookPath("iperf3")
	return err == nil
}

// IPerf3TCP runs `iperf3 -s` in server and `iperf3 -c -J -P streams` in
// client for d (whole seconds, at least one: iperf3 takes no fractions),
// as a cross-check of MeasureTCP. Received and Elapsed come from iperf3's
// receiver summary.
func IPerf3TCP(ctx context.Context, client, server *lab.Pod, streams int, d time.Duration) (TCPResult, error) {
	res := TCPResult{Streams: streams}
	secs := max(1, int(math.Ceil(d.Seconds())))
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	srv := server.Command(sctx, "iperf3", "-s", "-p", iperf3Port, "-B", server.Addr.String())
	var serr strings.Builder
	srv.Stderr = &serr
	if err := srv.Start(); err != nil {
		return res, fmt.Errorf("iperf3 server in %s: %w", server.NS, err)
	}
	defer func() { cancel(); srv.Wait() }()

	args := []string{"-c", server.Addr.String(), "-p", iperf3Port, "-t", strconv.Itoa(secs),
		"-P", strconv.Itoa(streams), "-J"}
	deadline := time.Now().Add(setupTimeout)
	for {
		out, err := client.Command(ctx, "iperf3", args...).Output()
		r, perr := parseIPerf3(out)
		if err == nil && perr == nil {
			res.Sent, res.Received, res.Elapsed, res.Retransmits = r.sent, r.received, r.elapsed, r.retransmits
			return res, nil
		}
		if ctx.Err() != nil {
			return res, ctx.Err()
		}
		// The server may not listen yet: iperf3 -s takes a moment.
		if strings.Contains(r.errMsg, "connect") && time.Now().Before(deadline) {
			time.Sleep(100 * time.Millisecond)
			continue
		}
		return res, fmt.Errorf("iperf3 -c %s: %w", server.Addr, errors.Join(err, perr, errors.New(strings.TrimSpace(serr.String()))))
	}
}

type iperf3Sum struct {
	sent, received, retransmits int64
	elapsed                     time.Duration
	errMsg                      string
}

// parseIPerf3 reads the totals from iperf3's -J output.
func parseIPerf3(out []byte) (iperf3Sum, error) {
	var j struct {
		Error string `json:"error"`
		End   struct {
			SumSent struct {
				Bytes       int64 `json:"bytes"`
				Retransmits int64 `json:"retransmits"`
			} `json:"sum_sent"`
			SumReceived struct {
				Seconds float64 `json:"seconds"`
				Bytes   int64   `json:"bytes"`
			} `json:"sum_received"`
		} `json:"end"`
	}
	if err := json.Unmarshal(out, &j); err != nil {
		return iperf3Sum{}, fmt.Errorf("iperf3 output: %w", err)
	}
	s := iperf3Sum{
		sent:        j.End.SumSent.Bytes,
		received:    j.End.SumReceived.Bytes,
		retransmits: j.End.SumSent.Retransmits,
		elapsed:     time.Duration(j.End.SumReceived.Seconds * float64(time.Second)),
		errMsg:      j.Error,
	}
	if j.Error != "" {
		return s, fmt.Errorf("iperf3: %s", j.Error)
	}
	if s.elapsed <= 0 {
		return s, errors.New("iperf3 output: no receiver summary")
	}
	return s, nil
}
