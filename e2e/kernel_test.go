package e2e

import (
	"context"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"vxrouter/lab"
	"vxrouter/lease"
)

// flannelNode runs a node the way flannel's vxlan backend does: the
// kernel's vxlan device (its MTU the underlay's, or Backend.MTU, less
// 50), programmed per peer lease with a route, a permanent neighbour
// entry and an FDB entry; with Backend.DirectRouting, a peer whose public
// IP is on-link gets only a route via that IP. It returns the node's
// lease.
func (o *overlay) flannelNode(h *lab.Host, vtep string) lease.Lease {
	o.t.Helper()
	attrs := lease.Attrs{PublicIP: h.Underlay, BackendType: "vxlan", VNI: o.cfg.Backend.VNI, VtepMAC: mustMAC(o.t, vtep)}
	own, err := o.reg.Acquire(o.ctx, o.cfg, attrs, netip.Prefix{}, time.Hour)
	if err != nil {
		o.t.Fatal(err)
	}
	mtu := o.lab.MTU()
	if o.cfg.Backend.MTU != 0 {
		mtu = o.cfg.Backend.MTU
	}
	kv, err := h.KernelVXLAN(lab.KernelVXLANConfig{
		VNI:     uint32(o.cfg.Backend.VNI),
		Port:    uint16(o.cfg.Backend.Port),
		VtepMAC: attrs.VtepMAC,
		Subnet:  own.Subnet,
		MTU:     mtu - 50,
	})
	if err != nil {
		o.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(o.ctx)
	direct := make(map[netip.Prefix]netip.Addr) // the peers routed directly, and via what
	program := func(ev lease.Event) error {
		l := ev.Lease
		if ev.Type == lease.Removed {
			if via, ok := direct[l.Subnet]; ok {
				delete(direct, l.Subnet)
				return kv.RemoveDirectPeer(l.Subnet, via)
			}
			return kv.RemovePeer(l.Subnet, l.Attrs.PublicIP, l.Attrs.VtepMAC)
		}
		if o.cfg.Backend.DirectRouting {
			onLink, err := h.OnLink(ctx, l.Attrs.PublicIP)
			if err != nil {
				return err
			}
			if onLink {
				direct[l.Subnet] = l.Attrs.PublicIP
				return kv.AddDirectPeer(l.Subnet, l.Attrs.PublicIP)
			}
		}
		// The vxlan route replaces a direct one, as in flannel.
		delete(direct, l.Subnet)
		return kv.AddPeer(l.Subnet, l.Attrs.PublicIP, l.Attrs.VtepMAC)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		o.reg.Watch(ctx, func(ev lease.Event) {
			if ev.Lease.Subnet == own.Subnet {
				return
			}
			if err := program(ev); err != nil && ctx.Err() == nil {
				o.t.Errorf("flannel node %s: program peer %s: %v", h.Name, ev.Lease.Subnet, err)
			}
		})
	}()
	o.t.Cleanup(func() { cancel(); wg.Wait() })
	return *own
}

// TestKernelVXLANInterop: a vxrouter node and a node using the kernel's
// vxlan driver, programmed as flannel programs it, share one etcd and one
// overlay; their pods ping each other, and exchange TCP and UDP, both
// ways, every device's offloads at their defaults (so the kernel node's
// TCP and UDP checksums arrive still pending, and its TSO packets whole).
// Nothing the kernel sent is dropped as corrupt.
func TestKernelVXLANInterop(t *testing.T) {
	o := newOverlay(t, network16)
	hv, hk := o.host("vx"), o.host("kv")
	nv, envV := o.start(hv)
	kl := o.flannelNode(hk, "d6:51:2e:80:5c:69")
	if kl.Subnet == envV.Subnet.Masked() {
		t.Fatalf("both nodes hold %s", kl.Subnet)
	}
	// The vxrouter node says it takes checksums pending, in a field
	// flannel passes over; to the kernel node it must send them complete.
	resp, err := o.cli.Get(o.ctx, o.reg.Key(envV.Subnet.Masked()))
	if err != nil || len(resp.Kvs) != 1 || !strings.Contains(string(resp.Kvs[0].Value), `"PartialCsum":true`) {
		t.Fatalf("the vxrouter node's lease does not say PartialCsum: %v %v", resp, err)
	}
	pv, pk := o.pod(hv, envV.Subnet.Masked()), o.pod(hk, kl.Subnet)
	o.mustPing(pv, pk)
	o.mustPing(pk, pv)
	o.mustCarry(pv, pk)
	o.mustCarry(pk, pv)
	c, err := nv.Counters(o.ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"decap-bad-checksum", "write-errors", "unknown-sender", "decap-bad-inner"} {
		if c[k] != 0 {
			t.Errorf("the vxrouter node counted %s %d: %v", k, c[k], c)
		}
	}
}
