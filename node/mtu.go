package node

import (
	"fmt"
	"log/slog"

	"vxrouter/encap"
	"vxrouter/lease"
)

// overlayMTU is the TUN device's MTU and subnet.env's FLANNEL_MTU, worked
// out as flannel works it out: the config's Backend.MTU, when set, stands
// in for the underlay interface's MTU, and VXLAN takes its 50 bytes off
// that. An overlay that carries IPv6 sends it over the IPv6 underlay,
// where VXLAN takes 70 (flannel takes 50 there too, and the kernel caps
// its flannel-v6.<VNI> at 70 less than the underlay), and needs 1280 at
// least, IPv6's minimum: the one MTU fits both families.
func overlayMTU(c *lease.Config, u underlayLink, log *slog.Logger) (int, error) {
	overhead, least, what := encap.OverheadIPv4, lease.MinMTU, ""
	if c.IPv6Enabled() {
		overhead, least, what = encap.OverheadIPv6, lease.MinIPv6MTU, " over IPv6"
	}
	backendMTU := c.Backend.MTU
	if backendMTU == 0 {
		mtu := u.MTU - overhead
		if mtu < least {
			return 0, fmt.Errorf("overlay MTU %d is too small: underlay %s has MTU %d and VXLAN%s takes %d; the overlay needs at least %d",
				mtu, u.Name, u.MTU, what, overhead, least)
		}
		return mtu, nil
	}
	mtu := backendMTU - overhead
	if mtu < least {
		return 0, fmt.Errorf("overlay MTU %d is too small: Backend.MTU is %d and VXLAN%s takes %d; the overlay needs at least %d",
			mtu, backendMTU, what, overhead, least)
	}
	if backendMTU > u.MTU {
		// flannel takes it as it is too, and so does the kernel's vxlan;
		// the forwarder then treats a packet too big for the underlay
		// as the kernel's vxlan treats it.
		log.Warn("Backend.MTU is more than the underlay interface's: packets too big for the interface leave in IP fragments, or are answered \"fragmentation needed\" if they have DF set",
			"backend-mtu", backendMTU, "iface", u.Name, "iface-mtu", u.MTU, "overlay-mtu", mtu)
	}
	return mtu, nil
}
