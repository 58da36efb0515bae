package node

import (
	"context"
	"log/slog"
	"net/netip"

	"vxrouter/encap"
	"vxrouter/lease"
	"vxrouter/route"
	"vxrouter/tunnel"
)

// What differs between IPv4, dual-stack and IPv6-only overlays: which
// public addresses the node has, how big its packets may be, how its
// socket is bound, what its lease says, and how a peer's lease becomes
// routes.
//
// vxrouter has one TUN device and one VTEP MAC for both families, where
// flannel has flannel.<VNI> and flannel-v6.<VNI>: its lease advertises the
// one MAC in both BackendData and BackendV6Data, and a flannel node
// programs its flannel-v6.<VNI> with it. Inner IPv6 packets go over the
// IPv6 underlay (to the peer's PublicIPv6, with its BackendV6Data MAC),
// inner IPv4 ones over the IPv4 underlay, as flannel's two devices send
// them.

// familiesOf says which families the overlay's config carries.
func familiesOf(c *lease.Config) families {
	return families{v4: c.IPv4Enabled(), v6: c.IPv6Enabled()}
}

// maxInner is the largest inner packet the underlay carries in one
// datagram, for the forwarder's "packet too big" answers: the overlay
// MTU, or less where Backend.MTU is more than the underlay takes.
func maxInner(c *lease.Config, u underlayLink, mtu int) int {
	overhead := encap.OverheadIPv4
	if c.IPv6Enabled() {
		overhead = encap.OverheadIPv6
	}
	return min(mtu, u.MTU-overhead)
}

// listenAddr is where the node's underlay sockets are bound, and the
// options that go with it: the public address when the overlay has one
// family, and [::] for a dual-stack one, whose sockets then send from
// each family's public address.
func listenAddr(u underlayLink, port int, o tunnel.UDPOptions) (netip.AddrPort, tunnel.UDPOptions) {
	switch {
	case !u.PublicIPv6.IsValid():
		return netip.AddrPortFrom(u.PublicIP, uint16(port)), o
	case !u.PublicIP.IsValid():
		return netip.AddrPortFrom(u.PublicIPv6, uint16(port)), o
	}
	o.Source4, o.Source6 = u.PublicIP, u.PublicIPv6
	return netip.AddrPortFrom(netip.IPv6Unspecified(), uint16(port)), o
}

// leaseAttrs is the value of the node's own lease: for each family the
// overlay carries, its public address and its VTEP, the one MAC in both.
func (n *Node) leaseAttrs() lease.Attrs {
	partial := !n.cfg.FullChecksums
	a := lease.Attrs{PublicIP: n.underlay.PublicIP, PublicIPv6: n.underlay.PublicIPv6, BackendType: "vxlan"}
	if a.PublicIP.IsValid() {
		a.VNI, a.VtepMAC, a.PartialCsum = n.overlay.Backend.VNI, n.vtep, partial
	}
	if a.PublicIPv6.IsValid() {
		a.BackendV6Data = &lease.VXLANData{VNI: n.overlay.Backend.VNI, VtepMAC: n.vtep, PartialCsum: partial}
	}
	return a
}

// subnetEnv is subnet.env for the node's lease.
func (n *Node) subnetEnv() lease.SubnetEnv {
	var env lease.SubnetEnv
	if n.lease.Subnet.IsValid() {
		env = lease.NewSubnetEnv(n.overlay.Network, n.lease.Subnet, n.mtu, false)
	}
	if n.lease.IPv6Subnet.IsValid() {
		env.SetIPv6(n.overlay.IPv6Network, n.lease.IPv6Subnet)
	}
	env.MTU = n.mtu
	env.IPMasq = n.masq != nil
	return env
}

// tunRoutes are the TUN device's addresses and routes: per family, the
// lease's subnet and the overlay's network.
func (n *Node) tunRoutes() []tunRoute {
	var rs []tunRoute
	if n.lease.Subnet.IsValid() {
		rs = append(rs, tunRoute{subnet: n.lease.Subnet, network: n.overlay.Network})
	}
	if n.lease.IPv6Subnet.IsValid() {
		rs = append(rs, tunRoute{subnet: n.lease.IPv6Subnet, network: n.overlay.IPv6Network})
	}
	return rs
}

// peerChanges turns one lease event into route changes and direct
// routing changes: one per subnet of a family the overlay carries, each
// to that family's public address and VTEP. A part that is no peer
// (outside the overlay, this node's own address, another VNI, no VTEP
// for its family) is skipped with a warning, and any route it had is
// removed. level is the level of the per-peer lines.
func (n *Node) peerChanges(ev lease.Event, level slog.Level) ([]route.Change, []directChange) {
	l := ev.Lease
	var out []route.Change
	var direct []directChange
	for _, p := range []struct {
		subnet, own, network netip.Prefix
		bits                 int
		addr, ours           netip.Addr
		vtep                 *lease.VXLANData
		field                string
	}{
		{l.Subnet, n.lease.Subnet, n.overlay.Network, n.overlay.SubnetLen, l.Attrs.PublicIP, n.underlay.PublicIP, backendData(l.Attrs), "PublicIP"},
		{l.IPv6Subnet, n.lease.IPv6Subnet, n.overlay.IPv6Network, n.overlay.IPv6SubnetLen, l.Attrs.PublicIPv6, n.underlay.PublicIPv6, l.Attrs.BackendV6Data, "PublicIPv6"},
	} {
		if !p.subnet.IsValid() || p.subnet == p.own {
			continue
		}
		if !p.network.IsValid() {
			n.log.Debug("peer's subnet is of a family the overlay does not carry", "subnet", p.subnet, "key", l.KeyName())
			continue
		}
		direct = append(direct, directChange{Subnet: p.subnet}) // no peer, unless it is one below
		if ev.Type == lease.Removed {
			out = append(out, route.Change{Subnet: p.subnet, Delete: true})
			n.log.Log(context.Background(), level, "peer removed", "subnet", p.subnet)
			continue
		}
		// A key that parses can still be no peer: a subnet outside the
		// overlay (0.0.0.0/0 would swallow every route) or of another
		// length, or one that names this node's own address (a loop).
		skip := func(msg string, args ...any) {
			n.log.Warn("peer skipped: "+msg, append([]any{"subnet", p.subnet}, args...)...)
			out = append(out, route.Change{Subnet: p.subnet, Delete: true})
		}
		switch {
		case !p.network.Contains(p.subnet.Addr()) || p.subnet.Bits() != p.bits:
			skip("subnet is not one of the overlay's", "network", p.network, "subnet-len", p.bits)
		case l.Attrs.BackendType != "vxlan":
			skip("not a vxlan lease", "backend", l.Attrs.BackendType)
		case !p.addr.IsValid() || p.vtep == nil:
			skip("the lease has no "+p.field+" and VTEP for this subnet's family", "key", l.KeyName())
		case p.addr == p.ours:
			skip("it has this node's public IP", "public-ip", p.addr)
		case p.vtep.VNI != n.overlay.Backend.VNI:
			skip("other VNI", "vni", p.vtep.VNI, "ours", n.overlay.Backend.VNI)
		default:
			out = append(out, route.Change{
				Subnet:      p.subnet,
				Addr:        netip.AddrPortFrom(p.addr, uint16(n.overlay.Backend.Port)),
				VTEP:        p.vtep.VtepMAC,
				PartialCsum: p.vtep.PartialCsum && !n.cfg.FullChecksums,
			})
			direct[len(direct)-1].PublicIP = p.addr
			n.log.Log(context.Background(), level, "peer", "subnet", p.subnet, "public-ip", p.addr, "vtep-mac", p.vtep.VtepMAC.String(), "partial-checksums", p.vtep.PartialCsum)
		}
	}
	return out, direct
}

// backendData is a lease's BackendData as a VXLANData; nil when it has
// none.
func backendData(a lease.Attrs) *lease.VXLANData {
	if a.VtepMAC == nil {
		return nil
	}
	return &lease.VXLANData{VNI: a.VNI, VtepMAC: a.VtepMAC, PartialCsum: a.PartialCsum}
}
