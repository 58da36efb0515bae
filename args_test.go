package main

import (
	"slices"
	"testing"
)

func TestFlagsFirst(t *testing.T) {
	app := newApp()
	for _, tc := range []struct{ in, want []string }{
		{
			[]string{"vxrouter", "lease", "reserve", "172.16.9.0/24", "--public-ip", "10.0.0.9", "--etcd-endpoints=unix:///x"},
			[]string{"vxrouter", "lease", "reserve", "--public-ip", "10.0.0.9", "--etcd-endpoints=unix:///x", "172.16.9.0/24"},
		},
		{
			[]string{"vxrouter", "--log-level", "debug", "lease", "release", "172.16.9.0/24", "--yes"},
			[]string{"vxrouter", "--log-level", "debug", "lease", "release", "--yes", "172.16.9.0/24"},
		},
		{
			[]string{"vxrouter", "lease", "config", "set", `{"Network":"10.0.0.0/8"}`, "--etcd-prefix", "/p"},
			[]string{"vxrouter", "lease", "config", "set", "--etcd-prefix", "/p", `{"Network":"10.0.0.0/8"}`},
		},
		{ // already in order, and "--" ends the flags
			[]string{"vxrouter", "run", "--iface", "eth0", "--", "--not-a-flag"},
			[]string{"vxrouter", "run", "--iface", "eth0", "--", "--not-a-flag"},
		},
		{
			[]string{"vxrouter", "lease", "list", "--etcd-endpoints", "unix:///x", "--json"},
			[]string{"vxrouter", "lease", "list", "--etcd-endpoints", "unix:///x", "--json"},
		},
		{ // unknown commands are left to the CLI to report
			[]string{"vxrouter", "nonsense", "x", "--y"},
			[]string{"vxrouter", "nonsense", "x", "--y"},
		},
	} {
		if got := flagsFirst(app, tc.in); !slices.Equal(got, tc.want) {
			t.Errorf("flagsFirst(%q)\n = %q\nwant %q", tc.in, got, tc.want)
		}
	}
}
