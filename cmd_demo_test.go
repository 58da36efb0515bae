package main

import (
	"strings"
	"testing"
)

// TestDemoRejectsBadNetwork: the demo refuses, before it builds anything,
// a network etcd would refuse and one with fewer subnets than nodes.
func TestDemoRejectsBadNetwork(t *testing.T) {
	t.Setenv("VXROUTER_DEMO_NETWORK", "")
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--network", "10.0.0.0/30"}, "too small"},
		{[]string{"--network", "10.0.0.0/28", "--nodes", "5"}, "3 subnets of /30: too few for --nodes 5"},
		{[]string{"--network", "10.0.0.1"}, "--network"},
	} {
		err := newApp().Run(append([]string{"vxrouter", "demo", "--prefix", "vxrdt"}, c.args...))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("demo %q: %v, want an error with %q", c.args, err, c.want)
		}
	}
}
