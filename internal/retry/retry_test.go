package retry

import (
	"context"
	"testing"
	"time"
)

func TestBackoff(t *testing.T) {
	b := Backoff{Min: 100 * time.Millisecond, Max: 400 * time.Millisecond}
	for i, want := range []time.Duration{100, 200, 400, 400} {
		want *= time.Millisecond
		if d := b.Next(); d < want-want/5 || d > want+want/5 {
			t.Errorf("wait %d: %v, want %v ±20%%", i, d, want)
		}
	}
	b.Reset()
	if d := b.Next(); d < 80*time.Millisecond || d > 120*time.Millisecond {
		t.Errorf("after Reset: %v, want 100ms ±20%%", d)
	}
}

func TestJitterSpreads(t *testing.T) {
	seen := map[time.Duration]bool{}
	for range 100 {
		d := Jitter(time.Second)
		if d < 800*time.Millisecond || d > 1200*time.Millisecond {
			t.Fatalf("Jitter(1s) = %v, want 0.8-1.2s", d)
		}
		seen[d] = true
	}
	if len(seen) < 50 {
		t.Errorf("100 jitters of 1s gave only %d different waits", len(seen))
	}
	if Jitter(0) != 0 || Jitter(-time.Second) != 0 {
		t.Error("Jitter of a wait <= 0 is not 0")
	}
}

func TestSleep(t *testing.T) {
	if !Sleep(context.Background(), time.Millisecond) {
		t.Error("Sleep with a live context says it was cut short")
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if Sleep(ctx, time.Hour) {
		t.Error("Sleep with an ended context says the hour passed")
	}
}
