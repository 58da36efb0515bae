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
// that.
func overlayMTU(backendMTU int, u underlayLink, log *slog.Logger) (int, error) {
	if backendMTU == 0 {
		mtu := u.MTU - encap.OverheadIPv4
		if mtu < lease.MinMTU {
			return 0, fmt.Errorf("overlay MTU %d is too small: underlay %s has MTU %d and VXLAN takes %d; the overlay needs at least %d",
				mtu, u.Name, u.MTU, encap.OverheadIPv4, lease.MinMTU)
		}
		return mtu, nil
	}
	mtu := backendMTU - lease.BackendMTUOverhead
	if mtu < lease.MinMTU {
		return 0, fmt.Errorf("overlay MTU %d is too small: Backend.MTU is %d and VXLAN takes %d; the overlay needs at least %d",
			mtu, backendMTU, lease.BackendMTUOverhead, lease.MinMTU)
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
