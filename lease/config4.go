package lease

import (
	"errors"
	"fmt"
	"net/netip"
)

// parseIPv4 fills Network, SubnetLen, SubnetMin and SubnetMax, for a
// config with IPv4 on.
func (c *Config) parseIPv4(j *configJSON) error {
	if j.Network == nil || *j.Network == "" {
		return errors.New(`config: Network is missing: set it to the overlay's IPv4 CIDR, e.g. "Network":"172.16.0.0/16"`)
	}
	network, err := netip.ParsePrefix(*j.Network)
	if err != nil {
		return fmt.Errorf(`config: Network %q is not a CIDR (want e.g. "172.16.0.0/16")`, *j.Network)
	}
	if !network.Addr().Is4() {
		return fmt.Errorf(`config: Network %q is not IPv4 (an IPv6 network goes in "IPv6Network", with "EnableIPv6":true)`, *j.Network)
	}
	// flannel parses Network with net.ParseCIDR, which drops host bits; do
	// the same so a config flannel accepts is accepted here.
	c.Network = network.Masked()
	bits := c.Network.Bits()

	switch {
	case j.SubnetLen == nil || *j.SubnetLen == 0:
		// flannel's rule: a /24 per node when the network holds at least
		// four of them, otherwise a quarter of the network.
		switch {
		case bits > 28:
			return fmt.Errorf("config: Network %s is too small: it must be /28 or larger to hold four subnets", c.Network)
		case bits <= 22:
			c.SubnetLen = 24
		default:
			c.SubnetLen = bits + 2
		}
	case *j.SubnetLen < 0:
		return fmt.Errorf("config: SubnetLen %d is negative (leave it out for the default)", *j.SubnetLen)
	case *j.SubnetLen > 30:
		return fmt.Errorf("config: SubnetLen %d is longer than 30: each subnet needs room for a bridge and hosts", *j.SubnetLen)
	case *j.SubnetLen < bits+2:
		return fmt.Errorf("config: SubnetLen %d is too short for Network %s: it must be at least %d so the network holds four subnets", *j.SubnetLen, c.Network, bits+2)
	default:
		c.SubnetLen = *j.SubnetLen
	}

	size := subnetSize(c.SubnetLen)
	first := u32(c.Network.Addr())
	last := first + uint32(uint64(1)<<(32-bits)-1)
	c.SubnetMin = addr4(first + size)
	c.SubnetMax = addr4(last - size + 1)
	if c.SubnetMin, err = c.bound("SubnetMin", j.SubnetMin, c.SubnetMin); err != nil {
		return err
	}
	if c.SubnetMax, err = c.bound("SubnetMax", j.SubnetMax, c.SubnetMax); err != nil {
		return err
	}
	if c.SubnetMin.Compare(c.SubnetMax) > 0 {
		return fmt.Errorf("config: SubnetMin %s is above SubnetMax %s", c.SubnetMin, c.SubnetMax)
	}
	return nil
}
