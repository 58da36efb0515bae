package main

import (
	"strings"
	"testing"
)

func TestGOMAXPROCS(t *testing.T) {
	for _, c := range []struct {
		flag, goDefault int
		envSet          bool
		want            int
	}{
		{0, 1, false, 1},
		{0, 2, false, 1}, // a 2-core host: one P
		{0, 4, false, 4}, // cores to spare: Go's default
		{0, 2, true, 2},  // GOMAXPROCS=2 in the environment wins
		{3, 2, false, 3}, // and --gomaxprocs over everything
		{2, 8, true, 2},
	} {
		if got := gomaxprocs(c.flag, c.goDefault, c.envSet); got != c.want {
			t.Errorf("gomaxprocs(%d, %d, env %v) = %d, want %d", c.flag, c.goDefault, c.envSet, got, c.want)
		}
	}
}

// TestRunRejectsBadFlags: run refuses out-of-range numbers before it
// touches etcd or the network, naming the flag.
func TestRunRejectsBadFlags(t *testing.T) {
	for _, c := range []struct{ flag, value string }{
		{"--poll-yields", "-1"},
		{"--poll-yields", "101"},
		{"--queues", "0"},
		{"--gomaxprocs", "-2"},
	} {
		err := newApp().Run([]string{"vxrouter", "run", "--admin-socket", "", c.flag, c.value})
		if err == nil || !strings.Contains(err.Error(), c.flag+" "+c.value) {
			t.Errorf("run %s %s: %v, want an error naming the flag and value", c.flag, c.value, err)
		}
	}
}
