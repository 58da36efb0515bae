package node

import "testing"

// TestProcsTuner feeds the tuner the bytes each of two queues carried,
// look by look, and checks the Ps it asks for: one flow (data on one
// queue, its ACKs on the other) keeps one P; flows on both queues get two
// after two looks; a lone burst changes nothing; idle falls back to one.
func TestProcsTuner(t *testing.T) {
	const mb = 1 << 20
	type look struct {
		a, b uint64 // bytes carried since the last look, per queue
		want int
	}
	for _, c := range []struct {
		name  string
		max   int
		looks []look
	}{
		{"one flow and its ACKs", 2, []look{{200 * mb, mb, 1}, {200 * mb, mb, 1}, {200 * mb, mb, 1}}},
		{"flows on both queues", 2, []look{{100 * mb, 90 * mb, 1}, {100 * mb, 90 * mb, 2}, {100 * mb, 90 * mb, 2}}},
		{"a burst on the second queue", 2, []look{{100 * mb, 0, 1}, {100 * mb, 80 * mb, 1}, {100 * mb, 0, 1}, {100 * mb, 0, 1}}},
		{"busy, then idle", 2, []look{{50 * mb, 50 * mb, 1}, {50 * mb, 50 * mb, 2}, {0, 0, 2}, {0, 0, 1}}},
		{"small traffic on both is not busy", 2, []look{{mb, mb, 1}, {mb, mb, 1}, {mb, mb, 1}}},
		{"never above max", 1, []look{{100 * mb, 100 * mb, 1}, {100 * mb, 100 * mb, 1}}},
	} {
		t.Run(c.name, func(t *testing.T) {
			tu := &procsTuner{max: c.max, asked: 1}
			var a, b uint64
			tu.next([]uint64{a, b}, 1) // the first look only takes note
			cur := 1
			for i, l := range c.looks {
				a, b = a+l.a, b+l.b
				cur = tu.next([]uint64{a, b}, cur)
				if cur != l.want {
					t.Fatalf("look %d (%d MB, %d MB): %d Ps, want %d", i+1, l.a/mb, l.b/mb, cur, l.want)
				}
			}
		})
	}
}
