package node

import (
	"context"
	"runtime"
	"time"
)

// On a small host one P (GOMAXPROCS=1) serves one flow best: the two
// routers, the traffic's two ends and the kernel's softirqs already fill
// two CPUs, and a second P only adds thread switches. Several flows spread
// over the queues are another matter: each queue's loops can use a CPU
// of their own. So with --gomaxprocs 0 on such a host the node starts
// with one P and runs with as many as there are busy queues, up to the
// number of CPUs, looking every procsInterval.
const (
	procsInterval = 250 * time.Millisecond
	// A queue is busy when it carried at least busyBytes in an interval
	// (10 MB/s), and at least 1/busyShare of what the busiest one did: a
	// flow's ACKs, on another queue than its data, are neither.
	busyBytes = 10 << 20 * uint64(procsInterval) / uint64(time.Second)
	busyShare = 8
)

// procsTuner decides, from how many bytes each queue carried, how many Ps
// the node should run with.
type procsTuner struct {
	max    int      // most Ps to ask for; at least 1
	last   []uint64 // each queue's bytes at the previous look
	asked  int      // what the previous look would have asked
	streak int      // how many looks in a row asked it
}

// next takes each queue's bytes so far and the Ps in use, and returns the
// Ps to use from now on: the busy queues, between 1 and max. A change is
// made only when two looks in a row ask for it, so a lone burst does not
// flip it back and forth.
func (t *procsTuner) next(bytes []uint64, cur int) int {
	var most uint64
	delta := make([]uint64, len(bytes))
	for i, b := range bytes {
		if i < len(t.last) && b >= t.last[i] {
			delta[i] = b - t.last[i]
		}
		most = max(most, delta[i])
	}
	t.last = append(t.last[:0], bytes...)
	busy := 0
	for _, d := range delta {
		if d >= busyBytes && d*busyShare >= most {
			busy++
		}
	}
	want := min(max(busy, 1), t.max)
	if want == t.asked {
		t.streak++
	} else {
		t.asked, t.streak = want, 1
	}
	if want != cur && t.streak >= 2 {
		return want
	}
	return cur
}

// tuneProcs follows the load with GOMAXPROCS until ctx ends, never above
// max Ps.
func (n *Node) tuneProcs(ctx context.Context, max int) error {
	t := &procsTuner{max: max, asked: runtime.GOMAXPROCS(0)}
	tick := time.NewTicker(procsInterval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
		cur := runtime.GOMAXPROCS(0)
		if want := t.next(n.fwd.QueueBytes(), cur); want != cur {
			runtime.GOMAXPROCS(want)
			n.log.Debug("gomaxprocs follows the load", "from", cur, "to", want)
		}
	}
}
