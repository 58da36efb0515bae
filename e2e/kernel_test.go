package e2e

import (
	"context"
	"net"
	"net/netip"
	"slices"
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
// IP is on-link gets only a route via that IP. In an overlay that carries
// IPv6 it has flannel-v6.<VNI> too, over the host's IPv6 underlay address,
// with a MAC of its own (vtep's last byte flipped), programmed likewise
// from each lease's IPv6 part. It returns the node's lease.
func (o *overlay) flannelNode(h *lab.Host, vtep string) lease.Lease {
	o.t.Helper()
	vni := o.cfg.Backend.VNI
	attrs := lease.Attrs{BackendType: "vxlan"}
	mac := mustMAC(o.t, vtep)
	if o.cfg.IPv4Enabled() {
		attrs.PublicIP, attrs.VNI, attrs.VtepMAC = h.Underlay, vni, mac
	}
	if o.cfg.IPv6Enabled() {
		mac6 := slices.Clone(mac)
		mac6[5] ^= 1
		attrs.PublicIPv6 = h.Underlay6
		attrs.BackendV6Data = &lease.VXLANData{VNI: vni, VtepMAC: mac6}
	}
	own, err := o.reg.Acquire(o.ctx, o.cfg, attrs, netip.Prefix{}, time.Hour)
	if err != nil {
		o.t.Fatal(err)
	}
	mtu := o.lab.MTU()
	if o.cfg.Backend.MTU != 0 {
		mtu = o.cfg.Backend.MTU
	}
	// One device per family, as flannel makes them, each programmed from
	// the part of a lease it carries.
	type part struct {
		subnet   netip.Prefix
		publicIP netip.Addr
		mac      net.HardwareAddr
	}
	type device struct {
		kv     *lab.KernelVXLAN
		part   func(l lease.Lease) part
		direct map[netip.Prefix]netip.Addr // the peers routed directly, and via what
	}
	var devs []*device
	for _, d := range []struct {
		own  part
		part func(l lease.Lease) part
	}{
		{part{own.Subnet, attrs.PublicIP, attrs.VtepMAC}, func(l lease.Lease) part { return part{l.Subnet, l.Attrs.PublicIP, l.Attrs.VtepMAC} }},
		{part{own.IPv6Subnet, attrs.PublicIPv6, v6MAC(attrs)}, func(l lease.Lease) part { return part{l.IPv6Subnet, l.Attrs.PublicIPv6, v6MAC(l.Attrs)} }},
	} {
		if !d.own.subnet.IsValid() {
			continue
		}
		kv, err := h.KernelVXLAN(lab.KernelVXLANConfig{
			VNI:     uint32(vni),
			Port:    uint16(o.cfg.Backend.Port),
			VtepMAC: d.own.mac,
			Subnet:  d.own.subnet,
			MTU:     mtu - 50,
		})
		if err != nil {
			o.t.Fatal(err)
		}
		devs = append(devs, &device{kv, d.part, make(map[netip.Prefix]netip.Addr)})
	}
	ctx, cancel := context.WithCancel(o.ctx)
	program := func(d *device, ev lease.Event, p part) error {
		if ev.Type == lease.Removed {
			if via, ok := d.direct[p.subnet]; ok {
				delete(d.direct, p.subnet)
				return d.kv.RemoveDirectPeer(p.subnet, via)
			}
			return d.kv.RemovePeer(p.subnet, p.publicIP, p.mac)
		}
		if o.cfg.Backend.DirectRouting {
			onLink, err := h.OnLink(ctx, p.publicIP)
			if err != nil {
				return err
			}
			if onLink {
				d.direct[p.subnet] = p.publicIP
				return d.kv.AddDirectPeer(p.subnet, p.publicIP)
			}
		}
		// The vxlan route replaces a direct one, as in flannel.
		delete(d.direct, p.subnet)
		return d.kv.AddPeer(p.subnet, p.publicIP, p.mac)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		o.reg.Watch(ctx, func(ev lease.Event) {
			for _, d := range devs {
				p := d.part(ev.Lease)
				if !p.subnet.IsValid() || p.subnet == d.kv.Subnet {
					continue
				}
				if err := program(d, ev, p); err != nil && ctx.Err() == nil {
					o.t.Errorf("flannel node %s: program peer %s on %s: %v", h.Name, p.subnet, d.kv.Dev, err)
				}
			}
		})
	}()
	o.t.Cleanup(func() { cancel(); wg.Wait() })
	return *own
}

// v6MAC is a lease's BackendV6Data MAC, nil if it has none.
func v6MAC(a lease.Attrs) net.HardwareAddr {
	if a.BackendV6Data == nil {
		return nil
	}
	return a.BackendV6Data.VtepMAC
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
