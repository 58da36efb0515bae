package lab

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
)

// KernelVXLANConfig describes a kernel vxlan device set up the way
// flannel's vxlan backend sets one up.
type KernelVXLANConfig struct {
	VNI     uint32           // default 1
	Port    uint16           // default 8472, the Linux default flannel keeps
	VtepMAC net.HardwareAddr // default random, locally administered, unicast
	// Subnet is the host's lease in the device's family (required): an
	// IPv4 one, e.g. 172.16.99.0/24, makes flannel.<VNI> over the host's
	// IPv4 underlay address; an IPv6 one, e.g. fd00:16:0:63::/64,
	// makes flannel-v6.<VNI> over its IPv6 one, as flannel does for the
	// IPv6 half of a dual-stack (or an IPv6-only) overlay.
	Subnet netip.Prefix
	// MTU of the vxlan device itself. Default underlay MTU - 50; flannel
	// takes the underlay's MTU as its "MTU" and subtracts the 50 itself,
	// for flannel-v6.<VNI> too; the kernel then caps that device at the
	// underlay's MTU - 70, what VXLAN takes over IPv6.
	MTU int
}

// KernelVXLAN is a host's flannel.<VNI> or flannel-v6.<VNI> device.
type KernelVXLAN struct {
	Dev     string // flannel.<VNI> or flannel-v6.<VNI>
	VNI     uint32
	Port    uint16
	VtepMAC net.HardwareAddr
	Subnet  netip.Prefix
	MTU     int
	Host    *Host
}

// KernelVXLAN creates flannel.<VNI> in the host, as flannel's vxlan backend
// does when it starts: a vxlan device bound to eth0 and the host's
// underlay address, learning off (flannel programs every entry itself),
// IPv6 router advertisements ignored, the address <subnet>.0/32 (a /32 so
// that no connected or broadcast route appears; it is the source address
// for traffic from the host into the overlay), up. For an IPv6 Subnet it
// creates flannel-v6.<VNI> the same way, over the host's IPv6 underlay
// address (Host.Underlay6), with the address <subnet>::/128.
//
// It adds no routes: flannel routes each peer's subnet on its own (AddPeer),
// and the host's own subnet is routed by the address on cni0.
func (h *Host) KernelVXLAN(c KernelVXLANConfig) (*KernelVXLAN, error) {
	if c.VNI == 0 {
		c.VNI = 1
	}
	if c.VNI > 1<<24-1 {
		return nil, fmt.Errorf("kernel vxlan: VNI %d: want 1..16777215", c.VNI)
	}
	if c.Port == 0 {
		c.Port = 8472
	}
	if !c.Subnet.IsValid() || c.Subnet.Addr().Is4In6() {
		return nil, fmt.Errorf("kernel vxlan: subnet %s: want an IPv4 or IPv6 prefix", c.Subnet)
	}
	c.Subnet = c.Subnet.Masked()
	v6 := c.Subnet.Addr().Is6()
	name, local := "flannel.", h.Underlay
	if v6 {
		name, local = "flannel-v6.", h.Underlay6
	}
	if !local.IsValid() || local.Is6() != v6 {
		return nil, fmt.Errorf("kernel vxlan: subnet %s: host %s has no underlay address of its family", c.Subnet, h.Name)
	}
	if c.MTU == 0 {
		c.MTU = h.lab.opts.MTU - 50
	}
	if c.MTU < 68 || c.MTU > 65535 {
		return nil, fmt.Errorf("kernel vxlan: MTU %d: want 68..65535", c.MTU)
	}
	if c.VtepMAC == nil {
		mac, err := randomMAC()
		if err != nil {
			return nil, fmt.Errorf("kernel vxlan: %w", err)
		}
		c.VtepMAC = mac
	}
	if len(c.VtepMAC) != 6 || c.VtepMAC[0]&1 != 0 {
		return nil, fmt.Errorf("kernel vxlan: VTEP MAC %s: want a 6-byte unicast MAC", c.VtepMAC)
	}

	h.mu.Lock()
	defer h.mu.Unlock()
	key := vxlanKey{c.VNI, v6}
	if _, ok := h.vxlans[key]; ok {
		return nil, fmt.Errorf("kernel vxlan: %s%d exists on %s", name, c.VNI, h.Name)
	}
	k := &KernelVXLAN{
		Dev:     name + strconv.FormatUint(uint64(c.VNI), 10),
		VNI:     c.VNI,
		Port:    c.Port,
		VtepMAC: c.VtepMAC,
		Subnet:  c.Subnet,
		MTU:     c.MTU,
		Host:    h,
	}
	r := h.lab.r
	err := r.all(
		[]string{"ip", "-n", h.NS, "link", "add", k.Dev,
			"address", k.VtepMAC.String(), "mtu", strconv.Itoa(k.MTU),
			"type", "vxlan", "id", strconv.FormatUint(uint64(k.VNI), 10),
			"local", local.String(), "dev", UnderlayDev,
			"dstport", strconv.Itoa(int(k.Port)), "nolearning"},
	)
	if err != nil {
		return nil, fmt.Errorf("kernel vxlan on %s: %w", h.Name, err)
	}
	if ipv6Enabled() {
		// sysctl spells the "." in an interface name as "/". Flannel
		// ignores a failure here too.
		_ = r.all(sysctlCmd(h.NS, "net.ipv6.conf."+strings.ReplaceAll(k.Dev, ".", "/")+".accept_ra=0"))
	}
	err = r.all(
		addrAdd(h.NS, k.Subnet.Addr(), k.Subnet.Addr().BitLen(), k.Dev),
		[]string{"ip", "-n", h.NS, "link", "set", k.Dev, "up"},
	)
	if err != nil {
		_, derr := r.run(context.Background(), "ip", "-n", h.NS, "link", "del", k.Dev)
		return nil, errors.Join(fmt.Errorf("kernel vxlan on %s: %w", h.Name, err), derr)
	}
	h.vxlans[key] = k
	return k, nil
}

// AddPeer programs a peer's lease the way flannel does when the lease
// appears, in flannel's order:
//
//	ip neigh replace <subnet>.0 lladdr <vtepMAC> dev flannel.1 nud permanent
//	bridge fdb replace <vtepMAC> dev flannel.1 dst <publicIP> self permanent
//	ip route replace <subnet> via <subnet>.0 dev flannel.1 onlink
//
// On flannel-v6.<VNI> the subnet is the lease's IPv6 one, the MAC its
// BackendV6Data's and publicIP its PublicIPv6: the same three entries.
//
// The route comes last: with it in place but no neighbour entry yet, the
// kernel would ARP for <subnet>.0 on a device nobody answers on. Calling
// it again for the same peer changes nothing.
func (k *KernelVXLAN) AddPeer(subnet netip.Prefix, publicIP netip.Addr, vtepMAC net.HardwareAddr) error {
	cmds, err := k.peerCmds("replace", subnet, publicIP, vtepMAC)
	if err != nil {
		return err
	}
	if err := k.Host.lab.r.all(cmds...); err != nil {
		return fmt.Errorf("add peer %s on %s: %w", subnet, k.Host.Name, err)
	}
	return nil
}

// RemovePeer undoes AddPeer, as flannel does when a lease goes: it tries
// all three deletions and reports every one that failed.
func (k *KernelVXLAN) RemovePeer(subnet netip.Prefix, publicIP netip.Addr, vtepMAC net.HardwareAddr) error {
	cmds, err := k.peerCmds("del", subnet, publicIP, vtepMAC)
	if err != nil {
		return err
	}
	var errs []error
	for _, c := range cmds {
		if _, err := k.Host.lab.r.run(context.Background(), c[0], c[1:]...); err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("remove peer %s on %s: %w", subnet, k.Host.Name, err)
	}
	return nil
}

func (k *KernelVXLAN) peerCmds(op string, subnet netip.Prefix, publicIP netip.Addr, vtepMAC net.HardwareAddr) ([][]string, error) {
	v6 := k.Subnet.Addr().Is6()
	if !subnet.IsValid() || subnet.Addr().Is6() != v6 || subnet.Addr().Is4In6() {
		return nil, fmt.Errorf("peer subnet %s: want one of %s's family", subnet, k.Dev)
	}
	if !publicIP.IsValid() || publicIP.Is6() != v6 {
		return nil, fmt.Errorf("peer %s: public IP %v: want one of %s's family", subnet, publicIP, k.Dev)
	}
	if len(vtepMAC) != 6 {
		return nil, fmt.Errorf("peer %s: VTEP MAC %s: want 6 bytes", subnet, vtepMAC)
	}
	subnet = subnet.Masked()
	ns, gw, mac := k.Host.NS, subnet.Addr().String(), vtepMAC.String()
	neigh := []string{"ip", "-n", ns, "neigh", op, gw, "lladdr", mac, "dev", k.Dev, "nud", "permanent"}
	fdb := []string{"bridge", "-n", ns, "fdb", op, mac, "dev", k.Dev, "dst", publicIP.String(), "self", "permanent"}
	route := []string{"ip", "-n", ns, "route", op, subnet.String(), "via", gw, "dev", k.Dev, "onlink"}
	if op == "del" {
		neigh = []string{"ip", "-n", ns, "neigh", "del", gw, "dev", k.Dev}
		fdb = []string{"bridge", "-n", ns, "fdb", "del", mac, "dev", k.Dev, "dst", publicIP.String(), "self"}
	}
	return [][]string{neigh, fdb, route}, nil
}

// randomMAC returns a locally administered unicast MAC, the kind flannel
// makes for a VTEP.
func randomMAC() (net.HardwareAddr, error) {
	mac := make(net.HardwareAddr, 6)
	if _, err := rand.Read(mac); err != nil {
		return nil, fmt.Errorf("random MAC: %w", err)
	}
	mac[0] = mac[0]&^1 | 2
	return mac, nil
}

// OnLink answers, for the host, what flannel's DirectRouting asks of a
// peer's public IP (its ip.DirectRouting): does `ip route get ip` give
// exactly one route, without a gateway?
func (h *Host) OnLink(ctx context.Context, ip netip.Addr) (bool, error) {
	out, err := h.lab.r.run(ctx, "ip", "-n", h.NS, "-j", "route", "get", ip.String())
	if err != nil {
		return false, fmt.Errorf("on-link %s from %s: %w", ip, h.Name, err)
	}
	var routes []struct {
		Gateway string `json:"gateway"`
	}
	if err := json.Unmarshal([]byte(out), &routes); err != nil {
		return false, fmt.Errorf("on-link %s from %s: ip route get: %w: %s", ip, h.Name, err, out)
	}
	return len(routes) == 1 && routes[0].Gateway == "", nil
}

// AddDirectPeer programs a peer's lease as flannel's vxlan backend does
// with DirectRouting when the peer is on-link (OnLink): one route, no
// neighbour or FDB entry, and no vxlan device in the way,
//
//	ip route replace <subnet> via <publicIP>
//
// Replacing a route that AddPeer made turns the peer direct, as in
// flannel (whose stale neighbour and FDB entries stay, unused).
func (k *KernelVXLAN) AddDirectPeer(subnet netip.Prefix, publicIP netip.Addr) error {
	if !subnet.IsValid() || !publicIP.IsValid() {
		return fmt.Errorf("direct peer %s via %s: want a subnet and a public IP", subnet, publicIP)
	}
	_, err := k.Host.lab.r.run(context.Background(), "ip", "-n", k.Host.NS, "route", "replace", subnet.Masked().String(), "via", publicIP.String())
	if err != nil {
		return fmt.Errorf("add direct peer %s on %s: %w", subnet, k.Host.Name, err)
	}
	return nil
}

// RemoveDirectPeer undoes AddDirectPeer, as flannel does when the lease
// goes.
func (k *KernelVXLAN) RemoveDirectPeer(subnet netip.Prefix, publicIP netip.Addr) error {
	_, err := k.Host.lab.r.run(context.Background(), "ip", "-n", k.Host.NS, "route", "del", subnet.Masked().String(), "via", publicIP.String())
	if err != nil {
		return fmt.Errorf("remove direct peer %s on %s: %w", subnet, k.Host.Name, err)
	}
	return nil
}
