package lease

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

const (
	dualConfig   = `{"Network":"10.5.0.0/16","EnableIPv6":true,"IPv6Network":"fd00:5::/48","Backend":{"Type":"vxlan"}}`
	ipv6Config   = `{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"fd00:6::/48","Backend":{"Type":"vxlan"}}`
	dualValueB   = `{"PublicIP":"10.0.0.2","PublicIPv6":"fd77::2","BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"d6:51:2e:80:5c:69"},"BackendV6Data":{"VNI":1,"VtepMAC":"d6:51:2e:80:5c:69"}}`
	ipv6OnlyValB = `{"PublicIP":"0.0.0.0","PublicIPv6":"fd77::2","BackendType":"vxlan","BackendV6Data":{"VNI":1,"VtepMAC":"d6:51:2e:80:5c:69"}}`
)

// dualAttrs are node i's attrs in a dual-stack overlay: nodeAttrs(i) and
// PublicIPv6 fd77::i, the same MAC in BackendV6Data, as a vxrouter node
// writes them.
func dualAttrs(i int) Attrs {
	a := nodeAttrs(i)
	a.PublicIPv6 = netip.AddrFrom16([16]byte{0: 0xfd, 1: 0x77, 14: byte(i >> 8), 15: byte(i)})
	a.BackendV6Data = &VXLANData{VNI: a.VNI, VtepMAC: a.VtepMAC}
	return a
}

// ipv6Attrs are node i's attrs in an IPv6-only overlay.
func ipv6Attrs(i int) Attrs {
	a := dualAttrs(i)
	a.PublicIP, a.VNI, a.VtepMAC = netip.Addr{}, 0, nil
	return a
}

// The values a dual-stack and an IPv6-only node write, byte for byte as
// flannel writes them (flannel's LeaseAttrs: BackendData and
// BackendV6Data omitted when empty, PublicIP 0.0.0.0 when IPv4 is off),
// and as flannel's vxlan backend decodes them.
func TestAttrsDualStackJSON(t *testing.T) {
	for _, tc := range []struct {
		a    Attrs
		want string
	}{
		{dualAttrs(2), strings.ReplaceAll(dualValueB, "5c:69", "00:02")},
		{ipv6Attrs(2), strings.ReplaceAll(ipv6OnlyValB, "5c:69", "00:02")},
	} {
		b, err := tc.a.MarshalJSON()
		if err != nil || string(b) != tc.want {
			t.Errorf("MarshalJSON(%+v):\n got %s %v\nwant %s", tc.a, b, err, tc.want)
			continue
		}
		got, err := ParseAttrs(b)
		if err != nil || !got.Equal(tc.a) {
			t.Errorf("ParseAttrs(%s) = %+v, %v; want %+v", b, got, err, tc.a)
		}
		// flannel: json.Unmarshal into LeaseAttrs, then BackendV6Data
		// into vxlanLeaseAttrs{VNI uint32; VtepMAC hardwareAddr}.
		var flannel struct {
			PublicIP      string
			PublicIPv6    *string
			BackendData   json.RawMessage
			BackendV6Data json.RawMessage
		}
		var v6 struct {
			VNI     uint32
			VtepMAC string
		}
		if err := json.Unmarshal(b, &flannel); err != nil || flannel.PublicIPv6 == nil || *flannel.PublicIPv6 != "fd77::2" {
			t.Fatalf("flannel's decoding of %s: %+v, %v", b, flannel, err)
		}
		if err := json.Unmarshal(flannel.BackendV6Data, &v6); err != nil || v6.VNI != 1 || v6.VtepMAC != "d6:51:2e:80:00:02" {
			t.Fatalf("flannel's decoding of BackendV6Data %s: %+v, %v", flannel.BackendV6Data, v6, err)
		}
	}

	// A flannel dual-stack node: its two devices have MACs of their own.
	a, err := ParseAttrs([]byte(`{"PublicIP":"192.168.1.10","PublicIPv6":"2001:db8::10","BackendType":"vxlan",` +
		`"BackendData":{"VNI":1,"VtepMAC":"B6:BF:4C:81:CF:3B"},"BackendV6Data":{"VNI":1,"VtepMAC":"aa:bb:cc:dd:ee:ff"}}`))
	if err != nil || a.BackendV6Data == nil || a.BackendV6Data.VtepMAC.String() != "aa:bb:cc:dd:ee:ff" || a.VtepMAC.String() != "b6:bf:4c:81:cf:3b" {
		t.Fatalf("ParseAttrs(flannel dual-stack) = %+v (v6 %+v), %v", a, a.BackendV6Data, err)
	}
	if a.Owner() != a.PublicIP {
		t.Errorf("Owner() of a dual-stack lease = %s, want its PublicIP", a.Owner())
	}
	// An IPv6-only node, as flannel's kube mode writes it.
	a, err = ParseAttrs([]byte(`{"PublicIP":"0.0.0.0","PublicIPv6":"2001:db8::11","BackendType":"vxlan","BackendV6Data":{"VNI":1,"VtepMAC":"aa:bb:cc:dd:ee:01"}}`))
	if err != nil || a.PublicIP.IsValid() || a.VtepMAC != nil || a.Owner().String() != "2001:db8::11" {
		t.Fatalf("ParseAttrs(flannel IPv6-only) = %+v, %v", a, err)
	}
	b := a
	d := *a.BackendV6Data
	d.VtepMAC = net.HardwareAddr{2, 0, 0, 0, 0, 1}
	b.BackendV6Data = &d
	if a.Equal(b) || !a.Equal(a) {
		t.Error("Equal does not compare BackendV6Data")
	}
}

// Garbage in the IPv6 parts of a value makes it a value that does not
// parse, as garbage in the IPv4 parts does: the key is skipped.
func TestParseAttrsIPv6Errors(t *testing.T) {
	const mac = `"VtepMAC":"d6:51:2e:80:5c:69"`
	for _, tc := range []struct{ js, want string }{
		{`{"PublicIP":"0.0.0.0","BackendType":"vxlan"}`, `lease value: PublicIP 0.0.0.0 is unspecified, and there is no PublicIPv6`},
		{`{"PublicIP":"0.0.0.0","PublicIPv6":null,"BackendType":"vxlan","BackendV6Data":{"VNI":1,` + mac + `}}`, `lease value: PublicIP 0.0.0.0 is unspecified, and there is no PublicIPv6`},
		{`{"PublicIP":"0.0.0.0","PublicIPv6":"fd77::1","BackendType":"vxlan"}`, `lease value: BackendV6Data is missing for vxlan`},
		{`{"PublicIP":"0.0.0.0","PublicIPv6":"fd77::1","BackendType":"vxlan","BackendData":{"VNI":1,` + mac + `}}`, `lease value: BackendV6Data is missing for vxlan`},
		{`{"PublicIP":"0.0.0.0","PublicIPv6":"::","BackendType":"vxlan","BackendV6Data":{"VNI":1,` + mac + `}}`, `lease value: PublicIPv6 :: is unspecified`},
		{`{"PublicIP":"0.0.0.0","PublicIPv6":"fe80::1%eth0","BackendType":"vxlan","BackendV6Data":{"VNI":1,` + mac + `}}`, `lease value: PublicIPv6 "fe80::1%eth0" is not an IPv6 address`},
		{`{"PublicIP":"10.0.0.2","BackendType":"vxlan","BackendData":{"VNI":1,` + mac + `},"BackendV6Data":{"VNI":1,` + mac + `}}`, `lease value: BackendV6Data without a PublicIPv6`},
		{`{"PublicIP":"10.0.0.2","PublicIPv6":"fd77::1","BackendType":"vxlan","BackendData":{"VNI":1,` + mac + `},"BackendV6Data":[]}`, `lease value: BackendV6Data is not vxlan's {VNI, VtepMAC}`},
		{`{"PublicIP":"10.0.0.2","PublicIPv6":"fd77::1","BackendType":"vxlan","BackendData":{"VNI":1,` + mac + `},"BackendV6Data":{` + mac + `}}`, `lease value: BackendV6Data.VNI is missing`},
		{`{"PublicIP":"10.0.0.2","PublicIPv6":"fd77::1","BackendType":"vxlan","BackendData":{"VNI":1,` + mac + `},"BackendV6Data":{"VNI":-1,` + mac + `}}`, `lease value: BackendV6Data.VNI -1 is out of range`},
		{`{"PublicIP":"10.0.0.2","PublicIPv6":"fd77::1","BackendType":"vxlan","BackendData":{"VNI":1,` + mac + `},"BackendV6Data":{"VNI":1}}`, `lease value: BackendV6Data.VtepMAC is missing`},
		{`{"PublicIP":"10.0.0.2","PublicIPv6":"fd77::1","BackendType":"vxlan","BackendData":{"VNI":1,` + mac + `},"BackendV6Data":{"VNI":1,"VtepMAC":"zz"}}`, `lease value: BackendV6Data.VtepMAC "zz" is not a 6-byte MAC address`},
		{`{"PublicIP":"10.0.0.2","PublicIPv6":"fd77::1","BackendType":"vxlan","BackendData":{"VNI":1,` + mac + `},"BackendV6Data":{"VNI":1,` + mac + `,"PartialCsum":1}}`, `lease value: BackendV6Data is not vxlan's`},
	} {
		a, err := ParseAttrs([]byte(tc.js))
		if err == nil {
			t.Errorf("ParseAttrs(%s) = %+v, want error %q", tc.js, a, tc.want)
			continue
		}
		if !strings.HasPrefix(err.Error(), tc.want) {
			t.Errorf("ParseAttrs(%s) error:\n got %q\nwant %q...", tc.js, err, tc.want)
		}
	}
	for _, a := range []Attrs{
		{PublicIPv6: netip.MustParseAddr("fd77::1"), BackendType: "vxlan"}, // IPv6-only without BackendV6Data
		{PublicIP: netip.MustParseAddr("10.0.0.1"), BackendType: "vxlan", VNI: 1, VtepMAC: nodeAttrs(1).VtepMAC, BackendV6Data: &VXLANData{VNI: 1, VtepMAC: nodeAttrs(1).VtepMAC}}, // no PublicIPv6
		{PublicIPv6: netip.MustParseAddr("fd77::1"), BackendType: "vxlan", BackendV6Data: &VXLANData{VNI: 1}},                                                                      // no MAC
		{PublicIPv6: netip.MustParseAddr("::"), BackendType: "vxlan", BackendV6Data: &VXLANData{VNI: 1, VtepMAC: nodeAttrs(1).VtepMAC}},
		{BackendType: "vxlan"},
	} {
		if b, err := a.MarshalJSON(); err == nil {
			t.Errorf("MarshalJSON(%+v) = %s, want an error", a, b)
		}
	}
}

func TestAcquireDualStack(t *testing.T) {
	r, cli := testRegistry(t)
	ctx := testCtx(t, 20*time.Second)
	cfg := mustConfig(t, dualConfig)

	seen4, seen6 := map[netip.Prefix]bool{}, map[netip.Prefix]bool{}
	var l1 *Lease
	for i := 1; i <= 5; i++ {
		l := mustAcquire(t, ctx, r, cfg, dualAttrs(i))
		if !cfg.Fits(l.Subnet, l.IPv6Subnet) || seen4[l.Subnet] || seen6[l.IPv6Subnet] {
			t.Fatalf("node %d got %s & %s: not the config's, or taken twice", i, l.Subnet, l.IPv6Subnet)
		}
		seen4[l.Subnet], seen6[l.IPv6Subnet] = true, true
		key := r.prefix + "/subnets/" + SubnetKey(l.Subnet) + "&" + SubnetKey(l.IPv6Subnet)
		resp, err := cli.Get(ctx, key)
		if err != nil || len(resp.Kvs) != 1 {
			t.Fatalf("no key %s: %v", key, err)
		}
		if want, _ := dualAttrs(i).MarshalJSON(); string(resp.Kvs[0].Value) != string(want) {
			t.Fatalf("value %s, want %s", resp.Kvs[0].Value, want)
		}
		if i == 1 {
			l1 = l
		}
	}
	// A restart finds its lease by PublicIP and keeps both subnets.
	again := mustAcquire(t, ctx, r, cfg, dualAttrs(1))
	if again.Subnet != l1.Subnet || again.IPv6Subnet != l1.IPv6Subnet {
		t.Fatalf("reacquire = %s & %s, want %s & %s", again.Subnet, again.IPv6Subnet, l1.Subnet, l1.IPv6Subnet)
	}

	// Previous subnets, each family on its own: a free IPv4 one is kept
	// even when the IPv6 one is taken.
	prev4, prev6 := netip.MustParsePrefix("10.5.77.0/24"), l1.IPv6Subnet
	l, err := r.AcquireSubnets(ctx, cfg, dualAttrs(9), []netip.Prefix{prev4, prev6}, time.Hour)
	if err != nil || l.Subnet != prev4 || l.IPv6Subnet == prev6 || !cfg.Contains(l.IPv6Subnet) {
		t.Fatalf("AcquireSubnets(previous %s, taken %s) = %v, %v", prev4, prev6, l, err)
	}
	prev6 = netip.MustParsePrefix("fd00:5:0:99::/64")
	l, err = r.AcquireSubnets(ctx, cfg, dualAttrs(10), []netip.Prefix{prev6, netip.MustParsePrefix("10.6.0.0/24")}, time.Hour)
	if err != nil || l.IPv6Subnet != prev6 || !cfg.Contains(l.Subnet) {
		t.Fatalf("AcquireSubnets(previous %s) = %v, %v", prev6, l, err)
	}

	// A node without what IPv6 needs is refused, and nothing is written.
	before, _ := cli.Get(ctx, r.subnetsDir(), clientv3.WithPrefix(), clientv3.WithCountOnly())
	for _, a := range []Attrs{nodeAttrs(20), func() Attrs { a := dualAttrs(21); a.BackendV6Data = nil; return a }()} {
		if l, err := r.Acquire(ctx, cfg, a, netip.Prefix{}, time.Hour); err == nil || !strings.Contains(err.Error(), "the overlay carries IPv6") {
			t.Fatalf("Acquire(%+v) = %v, %v; want a refusal", a, l, err)
		}
	}
	after, _ := cli.Get(ctx, r.subnetsDir(), clientv3.WithPrefix(), clientv3.WithCountOnly())
	if before.Count != after.Count {
		t.Fatalf("a refused Acquire wrote keys: %d before, %d after", before.Count, after.Count)
	}
}

// Each family runs out on its own: a dual-stack overlay with room for
// many IPv4 subnets and few IPv6 ones is full when the IPv6 ones are.
func TestAcquireDualStackExhausted(t *testing.T) {
	r, _ := testRegistry(t)
	ctx := testCtx(t, 20*time.Second)
	cfg := mustConfig(t, `{"Network":"10.5.0.0/16","EnableIPv6":true,"IPv6Network":"fd00:5::/62","Backend":{"Type":"vxlan"}}`)
	for i := 1; i <= 3; i++ {
		mustAcquire(t, ctx, r, cfg, dualAttrs(i))
	}
	_, err := r.Acquire(ctx, cfg, dualAttrs(4), netip.Prefix{}, time.Hour)
	if !errors.Is(err, ErrNoFreeSubnet) || !strings.Contains(err.Error(), "fd00:5::/62") {
		t.Fatalf("Acquire with the IPv6 subnets gone = %v, want ErrNoFreeSubnet naming fd00:5::/62", err)
	}
}

func TestAcquireIPv6Only(t *testing.T) {
	r, cli := testRegistry(t)
	ctx := testCtx(t, 20*time.Second)
	cfg := mustConfig(t, `{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"fd00:6::/62","Backend":{"Type":"vxlan"}}`)
	var got []netip.Prefix
	for i := 1; i <= 3; i++ {
		l := mustAcquire(t, ctx, r, cfg, ipv6Attrs(i))
		if l.Subnet.IsValid() || !cfg.Contains(l.IPv6Subnet) {
			t.Fatalf("node %d got %v & %v", i, l.Subnet, l.IPv6Subnet)
		}
		key := r.prefix + "/subnets/" + SubnetKey(l.IPv6Subnet)
		resp, err := cli.Get(ctx, key)
		want, _ := ipv6Attrs(i).MarshalJSON()
		if err != nil || len(resp.Kvs) != 1 || string(resp.Kvs[0].Value) != string(want) {
			t.Fatalf("key %s: %v %v; want %s", key, resp, err, want)
		}
		got = append(got, l.IPv6Subnet)
	}
	// The same node again, found by its PublicIPv6: all its nodes' PublicIP
	// is 0.0.0.0, which must not make them one.
	if l := mustAcquire(t, ctx, r, cfg, ipv6Attrs(2)); l.IPv6Subnet != got[1] {
		t.Fatalf("node 2 again got %s, want %s", l.IPv6Subnet, got[1])
	}
	if _, err := r.Acquire(ctx, cfg, ipv6Attrs(4), netip.Prefix{}, time.Hour); !errors.Is(err, ErrNoFreeSubnet) {
		t.Fatalf("a fourth node in /62 of /64s: %v, want ErrNoFreeSubnet", err)
	}
	if _, err := r.Acquire(ctx, cfg, dualAttrs(5), netip.Prefix{}, time.Hour); err == nil || !strings.Contains(err.Error(), "IPv6-only") {
		t.Fatalf("a node with a PublicIP in an IPv6-only overlay: %v, want a refusal", err)
	}
}

// A node that held an IPv4 lease before the overlay gained IPv6 drops
// that key (it no longer fits, as flannel decides too), keeps its IPv4
// subnet through subnet.env, and gains an IPv6 one.
func TestAcquireConfigGainsIPv6(t *testing.T) {
	r, cli := testRegistry(t)
	ctx := testCtx(t, 20*time.Second)
	old := mustAcquire(t, ctx, r, mustConfig(t, `{"Network":"10.5.0.0/16","Backend":{"Type":"vxlan"}}`), nodeAttrs(1))
	cfg := mustConfig(t, dualConfig)
	l, err := r.AcquireSubnets(ctx, cfg, dualAttrs(1), []netip.Prefix{old.Subnet}, time.Hour)
	if err != nil || l.Subnet != old.Subnet || !cfg.Contains(l.IPv6Subnet) {
		t.Fatalf("AcquireSubnets after IPv6 was added = %v, %v", l, err)
	}
	if resp, _ := cli.Get(ctx, r.Key(old.Subnet)); len(resp.Kvs) != 0 {
		t.Fatalf("the IPv4-only key %s is still there", r.Key(old.Subnet))
	}
}

// Keys of other writers block what they overlap in each family: a
// flannel node's dual-stack key in its long form, an IPv6-only key, a
// key whose value is garbage.
func TestAcquireAroundDualStackKeys(t *testing.T) {
	r, cli := testRegistry(t)
	ctx := testCtx(t, 20*time.Second)
	cfg := mustConfig(t, `{"Network":"10.5.0.0/16","SubnetMin":"10.5.1.0","SubnetMax":"10.5.4.0","EnableIPv6":true,"IPv6Network":"fd00:5::/48","IPv6SubnetMin":"fd00:5:0:1::","IPv6SubnetMax":"fd00:5:0:4::","Backend":{"Type":"vxlan"}}`)
	v, _ := dualAttrs(50).MarshalJSON()
	cli.Put(ctx, r.subnetsDir()+"10.5.1.0-24&fd00:5:0:1:0::-64", string(v))
	cli.Put(ctx, r.subnetsDir()+"fd00:5:0:2::-64", "garbage")
	cli.Put(ctx, r.subnetsDir()+"10.5.3.0-24&fd00:5:0:3::-64", "garbage")
	l := mustAcquire(t, ctx, r, cfg, dualAttrs(1))
	if l.Subnet == netip.MustParsePrefix("10.5.1.0/24") || l.Subnet == netip.MustParsePrefix("10.5.3.0/24") || l.IPv6Subnet != netip.MustParsePrefix("fd00:5:0:4::/64") {
		t.Fatalf("got %s & %s, want the one IPv6 subnet left, fd00:5:0:4::/64, and a free IPv4 one", l.Subnet, l.IPv6Subnet)
	}
	// The flannel-shaped key of node 50 is its own, but not canonical:
	// vxrouter does not write to it, and picks a key of its own shape.
	if _, err := r.Acquire(ctx, cfg, dualAttrs(50), netip.Prefix{}, time.Hour); !errors.Is(err, ErrNoFreeSubnet) {
		t.Fatalf("node 50 with its long-form key: %v, want ErrNoFreeSubnet (no IPv6 subnet is left)", err)
	}
}

func TestKeepAliveIPv6Only(t *testing.T) {
	r, cli := testRegistry(t)
	ctx := testCtx(t, 30*time.Second)
	cfg := mustConfig(t, ipv6Config)
	l := mustAcquire(t, ctx, r, cfg, ipv6Attrs(1))
	changes := make(chan *Lease, 4)
	go r.KeepAlive(ctx, cfg, l, func(nl *Lease) { changes <- nl })
	key := r.LeaseKey(l)
	if key != r.prefix+"/subnets/"+SubnetKey(l.IPv6Subnet) {
		t.Fatalf("LeaseKey = %s", key)
	}
	// Whether KeepAlive sees the delete as an event or finds the key gone
	// when it first reads it, it takes the same subnet back.
	cli.Delete(ctx, key)
	select {
	case nl := <-changes:
		if nl.IPv6Subnet != l.IPv6Subnet || nl.Subnet.IsValid() {
			t.Fatalf("after delete KeepAlive took %v & %v, want %v back", nl.Subnet, nl.IPv6Subnet, l.IPv6Subnet)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("KeepAlive did not take the key back within 10s")
	}
	// Another IPv6-only node (PublicIP 0.0.0.0 too) writing the key takes it.
	v, _ := ipv6Attrs(2).MarshalJSON()
	cli.Put(ctx, key, string(v))
	select {
	case nl := <-changes:
		if nl.IPv6Subnet == l.IPv6Subnet {
			t.Fatalf("KeepAlive kept %s, which node 2 took", nl.IPv6Subnet)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("KeepAlive did not notice another IPv6-only node taking its key")
	}
}

// logBuffer is a logger whose output a test can read.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// Watch reports both subnets of a dual-stack key and the one of an
// IPv6-only key; keys and values with garbage in their IPv6 parts are
// skipped with a warning, as those with garbage in the IPv4 ones.
func TestWatchDualStack(t *testing.T) {
	r, cli := testRegistry(t)
	var logs logBuffer
	r.log = slog.New(slog.NewTextHandler(&logs, nil))
	ctx := testCtx(t, 30*time.Second)
	cfg := mustConfig(t, dualConfig)
	l1 := mustAcquire(t, ctx, r, cfg, dualAttrs(1))
	v6only, _ := ipv6Attrs(2).MarshalJSON()
	cli.Put(ctx, r.subnetsDir()+"fd00:5:0:2::-64", string(v6only))
	good, _ := dualAttrs(3).MarshalJSON()
	garbage := map[string]string{
		"10.5.3.0-24&fd00:5:0:3::1-64": string(good), // host bits in the IPv6 part
		"10.5.4.0-24&fd00:5:0:4::-129": string(good),
		"10.5.5.0-24&zz-64":            string(good),
		"10.5.6.0-24&fd00:5:0:6::-64":  strings.Replace(string(good), `"BackendV6Data":{"VNI":1,"VtepMAC":"d6:51:2e:80:00:03"}`, `"BackendV6Data":{"VNI":1}`, 1),
		"10.5.7.0-24&fd00:5:0:7::-64":  strings.Replace(string(good), `"PublicIPv6":"fd77::3"`, `"PublicIPv6":"fd77::3::"`, 1),
	}
	for k, v := range garbage {
		cli.Put(ctx, r.subnetsDir()+k, v)
	}

	var mu sync.Mutex
	var got []Lease
	wctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		r.Watch(wctx, func(ev Event) {
			mu.Lock()
			got = append(got, ev.Lease)
			mu.Unlock()
		})
	}()
	deadline := time.Now().Add(10 * time.Second)
	for {
		mu.Lock()
		n := len(got)
		mu.Unlock()
		if n >= 2 || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	// Garbage put after the list arrives through the watch.
	cli.Put(ctx, r.subnetsDir()+"10.5.8.0-24&fd00:5:0:8::-64", strings.Replace(string(good), `"VNI":1,"VtepMAC":"d6:51:2e:80:00:03"}}`, `"VNI":"one","VtepMAC":"d6:51:2e:80:00:03"}}`, 1))
	for time.Now().Before(deadline) && !strings.Contains(logs.String(), "10.5.8.0-24") {
		time.Sleep(20 * time.Millisecond)
	}
	cancel()
	<-done

	mu.Lock()
	defer mu.Unlock()
	if len(got) != 2 {
		t.Fatalf("watch reported %d leases, want 2 (garbage skipped): %+v", len(got), got)
	}
	byKey := map[string]Lease{}
	for _, l := range got {
		byKey[l.KeyName()] = l
	}
	if l, ok := byKey[l1.KeyName()]; !ok || l.Subnet != l1.Subnet || l.IPv6Subnet != l1.IPv6Subnet || l.Attrs.BackendV6Data == nil {
		t.Fatalf("dual-stack lease reported as %+v", l)
	}
	if l, ok := byKey["fd00:5:0:2::-64"]; !ok || l.Subnet.IsValid() || l.Attrs.Owner().String() != "fd77::2" {
		t.Fatalf("IPv6-only lease reported as %+v", l)
	}
	out := logs.String()
	for k := range garbage {
		if !strings.Contains(out, k) {
			t.Errorf("no warning names %s:\n%s", k, out)
		}
	}
	if !strings.Contains(out, "10.5.8.0-24&fd00:5:0:8::-64") || !strings.Contains(out, "level=WARN") {
		t.Errorf("garbage through the watch was not warned about:\n%s", out)
	}
}

func TestReserveAndReleaseDualStack(t *testing.T) {
	r, cli := testRegistry(t)
	ctx := testCtx(t, 20*time.Second)
	cfg := mustConfig(t, dualConfig)
	p := netip.MustParsePrefix
	mac := net.HardwareAddr{2, 0, 0, 0, 0, 9}
	want := &Lease{Subnet: p("10.5.9.0/24"), IPv6Subnet: p("fd00:5:0:9::/64"), Attrs: Attrs{PublicIP: netip.MustParseAddr("10.0.0.9"), PublicIPv6: netip.MustParseAddr("fd77::9"), VtepMAC: mac}}
	for _, tc := range []struct {
		l    Lease
		want string
	}{
		{Lease{Subnet: want.Subnet, Attrs: want.Attrs}, "the config carries IPv6 (IPv6Network fd00:5::/48): give an IPv6 subnet too"},
		{Lease{Subnet: want.Subnet, IPv6Subnet: p("fd00:6::/64"), Attrs: want.Attrs}, "fd00:6::/64 is not a subnet the config hands out"},
		{Lease{Subnet: want.Subnet, IPv6Subnet: want.IPv6Subnet, Attrs: Attrs{PublicIP: want.Attrs.PublicIP, VtepMAC: mac}}, "PublicIPv6 invalid IP is not a usable IPv6 address"},
	} {
		if _, err := r.ReserveLease(ctx, cfg, &tc.l); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("ReserveLease(%s) = %v, want %q", tc.l.KeyName(), err, tc.want)
		}
	}
	l, err := r.ReserveLease(ctx, cfg, want)
	if err != nil {
		t.Fatal(err)
	}
	resp, _ := cli.Get(ctx, r.subnetsDir()+"10.5.9.0-24&fd00:5:0:9::-64")
	if len(resp.Kvs) != 1 || resp.Kvs[0].Lease != 0 || !strings.Contains(string(resp.Kvs[0].Value), `"BackendV6Data":{"VNI":1,"VtepMAC":"02:00:00:00:00:09"}`) {
		t.Fatalf("reservation key: %v", resp.Kvs)
	}
	// The node takes its reservation, both subnets.
	a := dualAttrs(9)
	a.PublicIP, a.PublicIPv6 = want.Attrs.PublicIP, want.Attrs.PublicIPv6
	got := mustAcquire(t, ctx, r, cfg, a)
	if got.Subnet != l.Subnet || got.IPv6Subnet != l.IPv6Subnet || !got.Reservation() {
		t.Fatalf("Acquire of the reserved node = %+v", got)
	}
	// Another node's key overlapping either part is refused.
	other := mustAcquire(t, ctx, r, cfg, dualAttrs(2))
	if _, err := r.ReserveLease(ctx, cfg, &Lease{Subnet: p("10.5.99.0/24"), IPv6Subnet: other.IPv6Subnet, Attrs: want.Attrs}); !errors.Is(err, ErrHeld) {
		t.Fatalf("reserving another node's IPv6 subnet: %v, want ErrHeld", err)
	}
	// Released by either subnet, whole.
	if rel, err := r.Release(ctx, want.IPv6Subnet, false); err != nil || rel.Subnet != want.Subnet {
		t.Fatalf("Release(%s) = %+v, %v", want.IPv6Subnet, rel, err)
	}
	if resp, _ := cli.Get(ctx, r.subnetsDir()+"10.5.9.0-24&fd00:5:0:9::-64"); len(resp.Kvs) != 0 {
		t.Fatal("the released key is still there")
	}
	// A reservation in an IPv6-only overlay, MAC from the node's lease.
	r6, _ := testRegistry(t)
	cfg6 := mustConfig(t, ipv6Config)
	l6 := mustAcquire(t, ctx, r6, cfg6, ipv6Attrs(3))
	res, err := r6.Reserve(ctx, cfg6, l6.IPv6Subnet, ipv6Attrs(3).PublicIPv6, nil)
	if err != nil || !res.Reservation() || res.Subnet.IsValid() || res.Attrs.PublicIP.IsValid() ||
		res.Attrs.BackendV6Data == nil || res.Attrs.BackendV6Data.VtepMAC.String() != ipv6Attrs(3).BackendV6Data.VtepMAC.String() {
		t.Fatalf("Reserve of the node's own IPv6 subnet = %+v, %v", res, err)
	}
	if _, err := r6.Reserve(ctx, cfg6, p("10.6.0.0/24"), netip.MustParseAddr("10.0.0.3"), mac); err == nil || !strings.Contains(err.Error(), "the config carries no IPv4") {
		t.Fatalf("an IPv4 reservation in an IPv6-only overlay: %v", err)
	}
}

func TestSubnetEnvDualStack(t *testing.T) {
	dir := t.TempDir()
	p := netip.MustParsePrefix
	for _, tc := range []struct {
		e    SubnetEnv
		want string
	}{
		{
			func() SubnetEnv {
				e := NewSubnetEnv(p("10.42.0.0/16"), p("10.42.3.0/24"), 1430, true)
				e.SetIPv6(p("2001:cafe:42::/56"), p("2001:cafe:42:3::/64"))
				return e
			}(),
			"FLANNEL_NETWORK=10.42.0.0/16\nFLANNEL_SUBNET=10.42.3.1/24\nFLANNEL_IPV6_NETWORK=2001:cafe:42::/56\nFLANNEL_IPV6_SUBNET=2001:cafe:42:3::1/64\nFLANNEL_MTU=1430\nFLANNEL_IPMASQ=true\n",
		},
		{
			func() SubnetEnv {
				e := SubnetEnv{MTU: 1430}
				e.SetIPv6(p("fd00:6::/48"), p("fd00:6:0:5::/64"))
				return e
			}(),
			"FLANNEL_IPV6_NETWORK=fd00:6::/48\nFLANNEL_IPV6_SUBNET=fd00:6:0:5::1/64\nFLANNEL_MTU=1430\nFLANNEL_IPMASQ=false\n",
		},
	} {
		path := filepath.Join(dir, "subnet.env")
		if err := WriteSubnetEnv(path, tc.e); err != nil {
			t.Fatal(err)
		}
		b, _ := os.ReadFile(path)
		if string(b) != tc.want {
			t.Fatalf("file:\n%s\nwant\n%s", b, tc.want)
		}
		got, err := ReadSubnetEnv(path)
		if err != nil || got != tc.e {
			t.Fatalf("ReadSubnetEnv = %+v, %v; want %+v", got, err, tc.e)
		}
		if got.IPv6Lease() != tc.e.IPv6Subnet.Masked() {
			t.Fatalf("IPv6Lease() = %s", got.IPv6Lease())
		}
	}
	for _, e := range []SubnetEnv{
		{Network: p("10.42.0.0/16"), IPv6Network: p("fd00::/48"), IPv6Subnet: p("fd00:0:0:1::1/64")}, // Subnet missing
		{IPv6Network: p("fd00::/48")},
	} {
		if err := WriteSubnetEnv(filepath.Join(dir, "bad"), e); err == nil {
			t.Errorf("WriteSubnetEnv(%+v) succeeded", e)
		}
	}
	os.WriteFile(filepath.Join(dir, "half"), []byte("FLANNEL_IPV6_NETWORK=fd00::/48\nFLANNEL_MTU=1430\n"), 0o644)
	if e, err := ReadSubnetEnv(filepath.Join(dir, "half")); err == nil {
		t.Errorf("ReadSubnetEnv(half an IPv6 family) = %+v", e)
	}
}
