package lease

import (
	"errors"
	"fmt"
	"net/netip"
)

// The overlay's address families, in flannel's words: "EnableIPv4"
// (default true) carries Network, "EnableIPv6" (default false) carries
// IPv6Network; both is dual-stack, IPv6 alone is IPv6-only. A family that
// is off has an invalid Network (or IPv6Network) in Config, and its other
// fields are zero.

// IPv6Config is the IPv6 half of a Config, embedded in it.
type IPv6Config struct {
	IPv6Network   netip.Prefix // invalid unless "EnableIPv6":true
	IPv6SubnetLen int          // default 64, or IPv6Network.Bits()+2 for networks smaller than /62
	IPv6SubnetMin netip.Addr   // default: second subnet
	IPv6SubnetMax netip.Addr   // default: last subnet
}

// ipv6ConfigJSON is the IPv6 half of flannel's config, embedded in
// configJSON. Pointers tell "absent" from zero, as there.
type ipv6ConfigJSON struct {
	EnableIPv6    *bool
	IPv6Network   *string
	IPv6SubnetLen *int
	IPv6SubnetMin *string
	IPv6SubnetMax *string
}

// Bounds of an IPv6 subnet, flannel's: a /64 per node by default, and at
// least four addresses each (a /126), the network at least four subnets.
const (
	defaultIPv6SubnetLen = 64
	maxIPv6SubnetLen     = 126
)

// IPv4Enabled reports whether the overlay carries IPv4 (flannel's
// EnableIPv4): Network is set.
func (c *Config) IPv4Enabled() bool { return c.Network.IsValid() }

// IPv6Enabled reports whether the overlay carries IPv6 (flannel's
// EnableIPv6): IPv6Network is set.
func (c *Config) IPv6Enabled() bool { return c.IPv6Network.IsValid() }

// parseFamilies reads EnableIPv4 and EnableIPv6 and the networks they
// turn on. Fields of a family that is off are ignored, as flannel ignores
// them.
func (c *Config) parseFamilies(j *configJSON) error {
	v4 := j.EnableIPv4 == nil || *j.EnableIPv4
	v6 := j.EnableIPv6 != nil && *j.EnableIPv6
	switch {
	case !v4 && !v6:
		return errors.New(`config: EnableIPv4 is false and EnableIPv6 is not true: the overlay carries no address family; set "EnableIPv6":true with an "IPv6Network", or remove "EnableIPv4":false`)
	case v4 && v6 && (j.Network == nil || *j.Network == ""):
		return errors.New(`config: Network is missing: set it to the overlay's IPv4 CIDR, e.g. "Network":"172.16.0.0/16", or add "EnableIPv4":false for an IPv6-only overlay`)
	}
	if v4 {
		if err := c.parseIPv4(j); err != nil {
			return err
		}
	}
	if !v6 {
		return nil
	}
	if err := c.parseIPv6(&j.ipv6ConfigJSON); err != nil {
		return err
	}
	// Backend.MTU stands in for the underlay's MTU; VXLAN over IPv6
	// takes 70 of it, and Linux takes IPv6 off a device whose MTU is
	// below 1280.
	if be := j.Backend; be != nil && be.MTU != nil && *be.MTU != 0 && *be.MTU < MinIPv6MTU+BackendMTUOverheadIPv6 {
		return fmt.Errorf("config: Backend.MTU %d is below %d: it is the underlay's MTU, an overlay that carries IPv6 gets %d less (VXLAN over IPv6), and IPv6 needs %d at least (leave it out or 0 to use the underlay interface's)",
			*be.MTU, MinIPv6MTU+BackendMTUOverheadIPv6, BackendMTUOverheadIPv6, MinIPv6MTU)
	}
	return nil
}

const (
	// MinIPv6MTU is the smallest overlay MTU of an overlay that carries
	// IPv6: IPv6's minimum link MTU (RFC 8200); Linux disables IPv6 on a
	// device with less.
	MinIPv6MTU = 1280
	// BackendMTUOverheadIPv6 is BackendMTUOverhead over an IPv6
	// underlay: what VXLAN costs there, and what a node that carries
	// IPv6 takes off Backend.MTU (flannel takes 50 in every family).
	BackendMTUOverheadIPv6 = 70
)

// parseIPv6 fills the IPv6 fields with flannel's rules and defaults:
// IPv6SubnetLen 64, or the network's length + 2 for networks smaller than
// /62 (a /124 at the smallest); IPv6SubnetMin the second subnet,
// IPv6SubnetMax the last.
func (c *Config) parseIPv6(j *ipv6ConfigJSON) error {
	if j.IPv6Network == nil || *j.IPv6Network == "" {
		return errors.New(`config: EnableIPv6 is true but IPv6Network is missing: set it to the overlay's IPv6 CIDR, e.g. "IPv6Network":"fd00:10:244::/48"`)
	}
	network, err := netip.ParsePrefix(*j.IPv6Network)
	if err != nil {
		return fmt.Errorf(`config: IPv6Network %q is not a CIDR (want e.g. "fd00:10:244::/48")`, *j.IPv6Network)
	}
	if !network.Addr().Is6() || network.Addr().Is4In6() {
		return fmt.Errorf(`config: IPv6Network %q is not IPv6 (want e.g. "fd00:10:244::/48"; the IPv4 network is "Network")`, *j.IPv6Network)
	}
	c.IPv6Network = network.Masked()
	bits := c.IPv6Network.Bits()

	switch {
	case j.IPv6SubnetLen == nil || *j.IPv6SubnetLen == 0:
		switch {
		case bits > 124:
			return fmt.Errorf("config: IPv6Network %s is too small: it must be /124 or larger to hold four subnets", c.IPv6Network)
		case bits <= 62:
			c.IPv6SubnetLen = defaultIPv6SubnetLen
		default:
			c.IPv6SubnetLen = bits + 2
		}
	case *j.IPv6SubnetLen < 0:
		return fmt.Errorf("config: IPv6SubnetLen %d is negative (leave it out for the default)", *j.IPv6SubnetLen)
	case *j.IPv6SubnetLen > maxIPv6SubnetLen:
		return fmt.Errorf("config: IPv6SubnetLen %d is longer than %d: each subnet needs room for a bridge and hosts", *j.IPv6SubnetLen, maxIPv6SubnetLen)
	case *j.IPv6SubnetLen < bits+2:
		return fmt.Errorf("config: IPv6SubnetLen %d is too short for IPv6Network %s: it must be at least %d so the network holds four subnets", *j.IPv6SubnetLen, c.IPv6Network, bits+2)
	default:
		c.IPv6SubnetLen = *j.IPv6SubnetLen
	}

	first := u128Of(c.IPv6Network.Addr())
	size := u128{lo: 1}.shl(uint(128 - c.IPv6SubnetLen))
	// The network's last address, then back one subnet; for ::/0 the
	// network's size wraps to 0, and the sums wrap as they should.
	last := first.add(u128{lo: 1}.shl(uint(128 - bits))).sub(u128{lo: 1})
	c.IPv6SubnetMin = first.add(size).addr(c.IPv6Network.Addr())
	c.IPv6SubnetMax = last.sub(size).add(u128{lo: 1}).addr(c.IPv6Network.Addr())
	if c.IPv6SubnetMin, err = c.bound6("IPv6SubnetMin", j.IPv6SubnetMin, c.IPv6SubnetMin); err != nil {
		return err
	}
	if c.IPv6SubnetMax, err = c.bound6("IPv6SubnetMax", j.IPv6SubnetMax, c.IPv6SubnetMax); err != nil {
		return err
	}
	if c.IPv6SubnetMin.Compare(c.IPv6SubnetMax) > 0 {
		return fmt.Errorf("config: IPv6SubnetMin %s is above IPv6SubnetMax %s", c.IPv6SubnetMin, c.IPv6SubnetMax)
	}
	return nil
}

// bound6 parses IPv6SubnetMin or IPv6SubnetMax. Absent, empty and "::"
// mean the default, as in flannel.
func (c *Config) bound6(name string, s *string, def netip.Addr) (netip.Addr, error) {
	if s == nil || *s == "" {
		return def, nil
	}
	a, err := netip.ParseAddr(*s)
	if err != nil || !a.Is6() || a.Is4In6() || a.Zone() != "" {
		return netip.Addr{}, fmt.Errorf("config: %s %q is not an IPv6 address", name, *s)
	}
	if a.IsUnspecified() {
		return def, nil
	}
	if !c.IPv6Network.Contains(a) {
		return netip.Addr{}, fmt.Errorf("config: %s %s is outside IPv6Network %s", name, a, c.IPv6Network)
	}
	if m := netip.PrefixFrom(a, c.IPv6SubnetLen).Masked().Addr(); m != a {
		return netip.Addr{}, fmt.Errorf("config: %s %s is not on a /%d boundary (did you mean %s?)", name, a, c.IPv6SubnetLen, m)
	}
	return a, nil
}

// ipv6ConfigOut is the IPv6 half of MarshalJSON's output, embedded in it:
// nothing for an IPv4-only config, whose JSON stays as it was, and
// "EnableIPv4":false for an IPv6-only one.
type ipv6ConfigOut struct {
	EnableIPv4    *bool  `json:",omitempty"`
	EnableIPv6    bool   `json:",omitempty"`
	IPv6Network   string `json:",omitempty"`
	IPv6SubnetLen int    `json:",omitempty"`
	IPv6SubnetMin string `json:",omitempty"`
	IPv6SubnetMax string `json:",omitempty"`
}

func (c *Config) ipv6Out() ipv6ConfigOut {
	var o ipv6ConfigOut
	if !c.IPv4Enabled() {
		o.EnableIPv4 = new(bool)
	}
	if !c.IPv6Enabled() {
		return o
	}
	o.EnableIPv6 = true
	o.IPv6Network = c.IPv6Network.String()
	o.IPv6SubnetLen = c.IPv6SubnetLen
	if c.IPv6SubnetMin.IsValid() {
		o.IPv6SubnetMin = c.IPv6SubnetMin.String()
	}
	if c.IPv6SubnetMax.IsValid() {
		o.IPv6SubnetMax = c.IPv6SubnetMax.String()
	}
	return o
}

// pool4 and pool6 are the subnets the config hands out in each family;
// an invalid pool (zero min) for a family that is off.
func (c *Config) pool4() pool {
	if !c.IPv4Enabled() {
		return pool{}
	}
	return pool{min: c.SubnetMin, max: c.SubnetMax, bits: c.SubnetLen}
}

func (c *Config) pool6() pool {
	if !c.IPv6Enabled() {
		return pool{}
	}
	return pool{min: c.IPv6SubnetMin, max: c.IPv6SubnetMax, bits: c.IPv6SubnetLen}
}

// poolOf is the pool of subnet's family.
func (c *Config) poolOf(subnet netip.Prefix) pool {
	if subnet.Addr().Is4() {
		return c.pool4()
	}
	return c.pool6()
}

// Fits reports whether a key with these subnets belongs to the config: a
// subnet of each family the config carries, none of a family it does
// not, each one the config hands out (Contains). flannel drops its own
// lease on the same test when the config changes.
func (c *Config) Fits(subnet, ipv6Subnet netip.Prefix) bool {
	if subnet.IsValid() != c.IPv4Enabled() || ipv6Subnet.IsValid() != c.IPv6Enabled() ||
		subnet.IsValid() && !subnet.Addr().Is4() || ipv6Subnet.IsValid() && !ipv6Subnet.Addr().Is6() {
		return false
	}
	return (!subnet.IsValid() || c.Contains(subnet)) && (!ipv6Subnet.IsValid() || c.Contains(ipv6Subnet))
}
