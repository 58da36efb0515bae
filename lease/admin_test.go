package lease

import (
	"errors"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
)

func TestPutConfigJSON(t *testing.T) {
	r, cli := testRegistry(t)
	ctx := testCtx(t, 10*time.Second)

	for _, bad := range []string{`{"Network":`, `{"Network":"10.0.0.0/16","Backend":{"Type":"udp"}}`, `{"Backend":{"Type":"vxlan"}}`} {
		if _, err := r.PutConfigJSON(ctx, []byte(bad)); err == nil || !strings.HasPrefix(err.Error(), "config: ") {
			t.Fatalf("PutConfigJSON(%s) = %v, want a config: error", bad, err)
		}
	}
	if _, err := r.ConfigJSON(ctx); !errors.Is(err, ErrNotFound) {
		t.Fatalf("after refused configs, ConfigJSON = %v, want ErrNotFound (nothing written)", err)
	}

	// flannel's fields that vxrouter ignores stay for flannel nodes.
	in := "{\n  \"Network\": \"10.4.0.0/16\",\n  \"EnableIPv6\": true,\n  \"IPv6Network\": \"fc00::/48\",\n  \"Backend\": {\"Type\": \"vxlan\", \"GBP\": false}\n}\n"
	c, err := r.PutConfigJSON(ctx, []byte(in))
	if err != nil {
		t.Fatal(err)
	}
	if c.Network != netip.MustParsePrefix("10.4.0.0/16") || c.SubnetLen != 24 {
		t.Fatalf("PutConfigJSON returned %+v", c)
	}
	got, err := r.ConfigJSON(ctx)
	want := `{"Network":"10.4.0.0/16","EnableIPv6":true,"IPv6Network":"fc00::/48","Backend":{"Type":"vxlan","GBP":false}}`
	if err != nil || string(got) != want {
		t.Fatalf("stored %s, %v; want %s", got, err, want)
	}
	resp, _ := cli.Get(ctx, r.ConfigKey())
	if string(resp.Kvs[0].Value) != want {
		t.Fatalf("etcd holds %s", resp.Kvs[0].Value)
	}
}

func TestReserve(t *testing.T) {
	r, cli := testRegistry(t)
	ctx := testCtx(t, 20*time.Second)
	cfg := mustConfig(t, `{"Network":"10.6.0.0/16","SubnetMax":"10.6.200.0","Backend":{"Type":"vxlan","VNI":4}}`)
	ip := func(s string) netip.Addr { return netip.MustParseAddr(s) }
	pfx := func(s string) netip.Prefix { return netip.MustParsePrefix(s) }
	mac9 := net.HardwareAddr{0x02, 0, 0, 0, 0, 9}
	keyOf := func(s string) *clientv3.GetResponse {
		t.Helper()
		resp, err := cli.Get(ctx, r.Key(pfx(s)))
		if err != nil {
			t.Fatal(err)
		}
		return resp
	}

	for _, tc := range []struct{ subnet, want string }{
		{"10.7.1.0/24", "not a subnet the config hands out (/24 subnets of 10.6.0.0/16 from 10.6.1.0 to 10.6.200.0)"},
		{"10.6.0.0/24", "not a subnet the config hands out"},   // below SubnetMin
		{"10.6.201.0/24", "not a subnet the config hands out"}, // above SubnetMax
		{"10.6.1.0/25", "not a subnet the config hands out"},
	} {
		if _, err := r.Reserve(ctx, cfg, pfx(tc.subnet), ip("10.0.0.9"), mac9); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Fatalf("Reserve(%s) = %v, want %q", tc.subnet, err, tc.want)
		}
	}
	if _, err := r.Reserve(ctx, cfg, pfx("10.6.5.0/24"), ip("10.0.0.9"), nil); err == nil || !strings.Contains(err.Error(), "no VTEP MAC for 10.0.0.9") {
		t.Fatalf("Reserve without a MAC for an unknown node = %v", err)
	}
	if resp := keyOf("10.6.5.0/24"); len(resp.Kvs) != 0 {
		t.Fatal("a refused reservation was written")
	}

	// A reservation: no etcd lease, vxlan attrs with the config's VNI.
	for range 2 { // the second time changes nothing
		l, err := r.Reserve(ctx, cfg, pfx("10.6.5.0/24"), ip("10.0.0.9"), mac9)
		if err != nil {
			t.Fatal(err)
		}
		if !l.Reservation() || l.Attrs.VNI != 4 {
			t.Fatalf("Reserve = %+v", l)
		}
	}
	kv := keyOf("10.6.5.0/24").Kvs[0]
	if want := `{"PublicIP":"10.0.0.9","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":4,"VtepMAC":"02:00:00:00:00:09"}}`; kv.Lease != 0 || string(kv.Value) != want {
		t.Fatalf("reservation stored as %s on lease %x, want %s without a lease", kv.Value, kv.Lease, want)
	}
	// The node it is for takes it on Acquire, even with another previous subnet.
	a9 := Attrs{PublicIP: ip("10.0.0.9"), BackendType: "vxlan", VNI: 4, VtepMAC: mac9}
	if l, err := r.Acquire(ctx, cfg, a9, pfx("10.6.77.0/24"), time.Minute); err != nil || l.Subnet != pfx("10.6.5.0/24") || !l.Reservation() {
		t.Fatalf("Acquire by the reserved node = %+v, %v", l, err)
	}

	// A running node's lease.
	a1 := nodeAttrs(1)
	a1.VNI = 4
	l1, err := r.Acquire(ctx, cfg, a1, pfx("10.6.20.0/24"), time.Minute)
	if err != nil || l1.Subnet != pfx("10.6.20.0/24") {
		t.Fatalf("Acquire = %+v, %v", l1, err)
	}
	_, err = r.Reserve(ctx, cfg, l1.Subnet, ip("10.0.0.2"), mac9)
	if !errors.Is(err, ErrHeld) || !strings.Contains(err.Error(), "subnet is taken by PublicIP 10.0.0.1 (etcd lease") {
		t.Fatalf("Reserve of another node's subnet = %v", err)
	}
	_, err = r.Reserve(ctx, cfg, l1.Subnet, a1.PublicIP, mac9)
	if err == nil || !strings.Contains(err.Error(), "holds it with VTEP MAC d6:51:2e:80:00:01, not 02:00:00:00:00:09") {
		t.Fatalf("Reserve of a node's subnet with another MAC = %v", err)
	}
	if kv := keyOf(l1.Subnet.String()).Kvs[0]; clientv3.LeaseID(kv.Lease) != l1.LeaseID {
		t.Fatal("a refused reservation changed the key")
	}
	// Without a MAC, another subnet for node 1 takes the MAC of its lease.
	other := pfx("10.6.7.0/24")
	if l, err := r.Reserve(ctx, cfg, other, a1.PublicIP, nil); err != nil || l.Attrs.VtepMAC.String() != a1.VtepMAC.String() {
		t.Fatalf("Reserve for node 1 without MAC = %+v, %v; want MAC %s", l, err, a1.VtepMAC)
	}
	// Pinning node 1's own lease: the key stays, loses its etcd lease,
	// and the etcd lease is revoked (it holds nothing).
	if _, err := r.Reserve(ctx, cfg, l1.Subnet, a1.PublicIP, nil); err != nil {
		t.Fatal(err)
	}
	kv = keyOf(l1.Subnet.String()).Kvs[0]
	if got, _ := ParseAttrs(kv.Value); kv.Lease != 0 || !got.Equal(a1) {
		t.Fatalf("pinned key: lease %x, value %s", kv.Lease, kv.Value)
	}
	if ttl, err := cli.TimeToLive(ctx, l1.LeaseID); err == nil && ttl.TTL > 0 {
		t.Fatalf("old etcd lease still lives: %+v", ttl)
	} else if err != nil && !errors.Is(err, rpctypes.ErrLeaseNotFound) {
		t.Fatal(err)
	}

	// A key of another length (an older config) that overlaps.
	if _, err := cli.Put(ctx, r.subnetsDir()+"10.6.8.128-25", `{"PublicIP":"10.0.0.3","BackendType":"vxlan","BackendData":{"VNI":4,"VtepMAC":"02:00:00:00:00:03"}}`); err != nil {
		t.Fatal(err)
	}
	_, err = r.Reserve(ctx, cfg, pfx("10.6.8.0/24"), ip("10.0.0.9"), mac9)
	if !errors.Is(err, ErrHeld) || !strings.Contains(err.Error(), "10.6.8.128-25, of PublicIP 10.0.0.3 (a reservation), overlaps it") {
		t.Fatalf("Reserve over an overlapping key = %v", err)
	}
}

func TestRelease(t *testing.T) {
	r, cli := testRegistry(t)
	ctx := testCtx(t, 20*time.Second)
	cfg := mustConfig(t, `{"Network":"10.3.0.0/16","Backend":{"Type":"vxlan"}}`)
	pfx := netip.MustParsePrefix
	gone := func(p netip.Prefix) bool {
		resp, err := cli.Get(ctx, r.Key(p))
		if err != nil {
			t.Fatal(err)
		}
		return len(resp.Kvs) == 0
	}

	if _, err := r.Release(ctx, pfx("10.3.9.0/24"), false); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Release of nothing = %v, want ErrNotFound", err)
	}

	a := nodeAttrs(5)
	if _, err := r.Reserve(ctx, cfg, pfx("10.3.9.0/24"), a.PublicIP, a.VtepMAC); err != nil {
		t.Fatal(err)
	}
	if l, err := r.Release(ctx, pfx("10.3.9.0/24"), false); err != nil || !l.Reservation() || l.Attrs.PublicIP != a.PublicIP {
		t.Fatalf("Release of a reservation = %+v, %v", l, err)
	}
	if !gone(pfx("10.3.9.0/24")) {
		t.Fatal("reservation still there")
	}

	l, err := r.Acquire(ctx, cfg, nodeAttrs(6), netip.Prefix{}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	_, err = r.Release(ctx, l.Subnet, false)
	if !errors.Is(err, ErrLeased) || !strings.Contains(err.Error(), "subnet is leased by PublicIP 10.0.0.6 (etcd lease") || !strings.Contains(err.Error(), "stop that node first") {
		t.Fatalf("Release of a live lease = %v", err)
	}
	if gone(l.Subnet) {
		t.Fatal("refused release deleted the key")
	}
	if got, err := r.Release(ctx, l.Subnet, true); err != nil || got.LeaseID != l.LeaseID {
		t.Fatalf("forced Release = %+v, %v", got, err)
	}
	if !gone(l.Subnet) {
		t.Fatal("forced release left the key")
	}
	if _, err := cli.TimeToLive(ctx, l.LeaseID); err == nil {
		if ttl, _ := cli.TimeToLive(ctx, l.LeaseID); ttl.TTL > 0 {
			t.Fatal("released key's etcd lease still lives")
		}
	}

	// Garbage goes too, and so does flannel's dual-stack key.
	if _, err := cli.Put(ctx, r.Key(pfx("10.3.4.0/24")), "garbage"); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Release(ctx, pfx("10.3.4.0/24"), false); err != nil || !gone(pfx("10.3.4.0/24")) {
		t.Fatalf("Release of garbage: %v", err)
	}
	dual := r.subnetsDir() + "10.3.5.0-24&fc00:0:0:5::-64"
	if _, err := cli.Put(ctx, dual, `{"PublicIP":"10.0.0.7","BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"02:00:00:00:00:07"}}`); err != nil {
		t.Fatal(err)
	}
	if got, err := r.Release(ctx, pfx("10.3.5.0/24"), false); err != nil || got.Attrs.PublicIP != netip.MustParseAddr("10.0.0.7") {
		t.Fatalf("Release of a dual-stack key = %+v, %v", got, err)
	}
	if resp, _ := cli.Get(ctx, dual); len(resp.Kvs) != 0 {
		t.Fatal("dual-stack key still there")
	}
}
