package demo

import (
	"net/netip"
	"strings"
	"testing"
	"time"
)

func good() Options {
	return Options{
		Nodes: DefaultNodes, Network: DefaultNetwork, ServiceNetwork: DefaultServiceNetwork,
		Prefix: DefaultPrefix, Timeout: DefaultTimeout,
	}
}

// TestCheck: options that would fail half-way through the demo are
// refused before anything is built, with the flag named.
func TestCheck(t *testing.T) {
	if err := good().Check(); err != nil {
		t.Fatalf("the defaults: %v", err)
	}
	for _, c := range []struct {
		f    func(*Options)
		want string
	}{
		{func(o *Options) { o.Nodes = 1 }, "--nodes 1"},
		{func(o *Options) { o.Nodes = 21 }, "--nodes 21"},
		{func(o *Options) { o.Prefix = "toolongprefix" }, "--prefix"},
		{func(o *Options) { o.Network = netip.MustParsePrefix("10.0.0.0/30") }, "--network"},
		{func(o *Options) { o.Network = netip.MustParsePrefix("10.0.0.0/28"); o.Nodes = 5 }, "too few for --nodes 5"},
		{func(o *Options) { o.Network = netip.MustParsePrefix("10.213.0.0/16") }, "node network"},
		{func(o *Options) { o.ServiceNetwork = netip.MustParsePrefix("172.16.3.0/24") }, "overlaps the pod network"},
		{func(o *Options) { o.ServiceNetwork = netip.MustParsePrefix("10.213.0.0/24") }, "node network"},
		{func(o *Options) { o.ServiceNetwork = netip.MustParsePrefix("192.168.3.0/29") }, "too small"},
		{func(o *Options) { o.ServiceNetwork = netip.MustParsePrefix("fd00::/64") }, "IPv4"},
		{func(o *Options) { o.Timeout = -time.Second }, "--timeout"},
	} {
		o := good()
		c.f(&o)
		if err := o.Check(); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: %v, want an error with %q", o, err, c.want)
		}
	}
}

// TestParseCounters reads iptables -L -v -n -x output as iptables 1.8
// (nf_tables) prints it.
func TestParseCounters(t *testing.T) {
	out := `Chain KUBE-SVC-LOLE4ISW44XBNF3G (1 references)
    pkts      bytes target     prot opt in     out     source               destination
       0        0 KUBE-MARK-MASQ  6    --  *      *      !172.16.0.0/16        192.168.3.10         /* default/web cluster IP */ tcp dpt:80
      13      780 KUBE-SEP-OTBQ6NTTZOCMO6VU  0    --  *      *       0.0.0.0/0            0.0.0.0/0            /* default/web -> 172.16.66.3:8080 */ statistic mode random probability 0.50000000000
       7      420 KUBE-SEP-IZX2SMDG4Y3NGB5E  0    --  *      *       0.0.0.0/0            0.0.0.0/0            /* default/web -> 172.16.140.3:8080 */
`
	rs := parseCounters(out)
	if len(rs) != 3 {
		t.Fatalf("%d rules, want 3: %+v", len(rs), rs)
	}
	for i, w := range []ruleCount{{0, "KUBE-MARK-MASQ", ""}, {13, "KUBE-SEP-OTBQ6NTTZOCMO6VU", ""}, {7, "KUBE-SEP-IZX2SMDG4Y3NGB5E", ""}} {
		if rs[i].packets != w.packets || rs[i].target != w.target {
			t.Errorf("rule %d: %d %s, want %d %s", i, rs[i].packets, rs[i].target, w.packets, w.target)
		}
	}
	if n := masqueraded(parseCounters("       2      168 MASQUERADE  0    --  *      *       172.16.0.0/16       !224.0.0.0/4\n       1       84 MASQUERADE  0    --  *      *      !172.16.0.0/16        172.16.0.0/16\n")); n != 3 {
		t.Errorf("masqueraded = %d, want 3", n)
	}
}

func TestEchoID(t *testing.T) {
	for line, want := range map[string]string{
		"IP 172.16.46.2 > 10.213.0.4: ICMP echo request, id 16262, seq 1, length 25": "16262",
		"IP 10.213.0.1 > 10.213.0.4: ICMP echo request, id 3, seq 1, length 25":      "3",
		"IP 10.213.0.1.5 > 10.213.0.4.80: Flags [S]":                                 "",
	} {
		if got := echoID(line); got != want {
			t.Errorf("echoID(%q) = %q, want %q", line, got, want)
		}
	}
}

func TestNthAddr(t *testing.T) {
	if a, err := nthAddr(DefaultServiceNetwork, 10); err != nil || a != netip.MustParseAddr("192.168.3.10") {
		t.Errorf("nthAddr(%s, 10) = %v, %v", DefaultServiceNetwork, a, err)
	}
	if _, err := nthAddr(netip.MustParsePrefix("192.168.3.0/29"), 10); err == nil {
		t.Error("the 10th address of a /29")
	}
}
