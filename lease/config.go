package lease

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"time"
)

const (
	// DefaultPrefix is flannel's default etcd prefix.
	DefaultPrefix = "/coreos.com/network"
	// DefaultTTL is flannel's lease TTL.
	DefaultTTL = 24 * time.Hour

	// DefaultVNI and DefaultPort are what flannel's vxlan backend uses when
	// the config leaves them out (8472 is the Linux kernel's default port).
	DefaultVNI  = 1
	DefaultPort = 8472

	maxVNI = 1<<24 - 1
	// MinMTU is the smallest overlay MTU a node runs with, whether it
	// comes from Backend.MTU or from the underlay. IPv4 allows 68, but
	// every host must take 576-byte datagrams (RFC 791).
	MinMTU = 576
	// BackendMTUOverhead is what flannel takes off Backend.MTU for the
	// overlay: Backend.MTU stands in for the underlay's MTU, and VXLAN
	// over IPv4 costs 50 bytes of it.
	BackendMTUOverhead = 50
)

// Backend is the "Backend" object of flannel's config.
type Backend struct {
	Type string // "vxlan"
	VNI  int    // default 1
	Port int    // default 8472
	// MTU stands in for the underlay interface's MTU, as in flannel: the
	// overlay's MTU (the TUN device's, FLANNEL_MTU) is MTU -
	// BackendMTUOverhead. 0 = the underlay interface's.
	MTU int
	// DirectRouting routes to a peer whose public IP is on-link (the
	// kernel reaches it without a gateway) straight through the
	// underlay, without VXLAN, as flannel's vxlan backend does.
	DirectRouting bool
}

// Config is flannel's network config, stored at <prefix>/config. A
// family the config leaves off (EnableIPv4 false, EnableIPv6 not true) has
// an invalid Network or IPv6Network and zero bounds; see config6.go.
type Config struct {
	Network   netip.Prefix // IPv4; invalid with "EnableIPv4":false
	SubnetLen int          // default 24, or Network.Bits()+2 for networks smaller than /22
	SubnetMin netip.Addr   // default: second subnet
	SubnetMax netip.Addr   // default: last subnet
	IPv6Config
	Backend Backend
	// EnableNFTables makes --ip-masq write its rules with nftables
	// instead of iptables, as in flannel.
	EnableNFTables bool
}

// configJSON mirrors flannel's field names (encoding/json matches them
// without regard to case, as it does for flannel). Pointers tell "absent"
// from zero, because flannel's defaults apply only to absent fields (an
// explicit "VNI":0 is VNI 0). Fields vxrouter does not know are ignored,
// as flannel ignores the ones it does not know; backendJSON lists the
// vxlan options flannel has and vxrouter does not do, to refuse them.
type configJSON struct {
	EnableIPv4 *bool
	Network    *string
	SubnetLen  *int
	SubnetMin  *string
	SubnetMax  *string
	ipv6ConfigJSON
	Backend        *backendJSON
	EnableNFTables bool
}

type backendJSON struct {
	Type *string
	VNI  *int
	Port *int
	MTU  *int

	// Plain bools, as in flannel's VXLANConfig, so that even odd JSON
	// ("GBP":true,"GBP":null) reads as flannel reads it.
	DirectRouting bool

	// Options of flannel's vxlan backend on Linux that change what the
	// kernel's vxlan device does, which vxrouter does not do: refused
	// when turned on, so an overlay never runs half of what its config
	// says. (MacPrefix and Name are flannel's Windows-only options, which
	// flannel on Linux ignores: so does vxrouter.)
	GBP      bool
	Learning bool
}

// unsupported names the options of b that ask for what vxrouter does not
// do, each with why.
func (b *backendJSON) unsupported() []string {
	var out []string
	if b.GBP {
		out = append(out, `"GBP":true (VXLAN Group Based Policy: vxrouter sends and accepts no policy IDs)`)
	}
	if b.Learning {
		out = append(out, `"Learning":true (MAC learning on the vxlan device: vxrouter's peers come from etcd only)`)
	}
	return out
}

// ParseConfig parses flannel's <prefix>/config JSON, fills flannel's
// defaults and validates the result. Errors start with "config:" and say
// what to change.
func ParseConfig(b []byte) (*Config, error) {
	var j configJSON
	if err := json.Unmarshal(b, &j); err != nil {
		return nil, fmt.Errorf("config: not valid flannel config JSON: %w", err)
	}
	c := &Config{EnableNFTables: j.EnableNFTables}
	if err := c.parseFamilies(&j); err != nil {
		return nil, err
	}

	if j.Backend == nil {
		return nil, errors.New(`config: Backend is missing: flannel would default to "udp", which vxrouter does not support; add "Backend":{"Type":"vxlan"}`)
	}
	be := j.Backend
	switch {
	case be.Type == nil || *be.Type == "":
		return nil, errors.New(`config: Backend.Type is missing (want "vxlan")`)
	case !strings.EqualFold(*be.Type, "vxlan"):
		return nil, fmt.Errorf(`config: Backend.Type %q is not supported by vxrouter (want "vxlan")`, *be.Type)
	}
	c.Backend.Type = "vxlan"
	c.Backend.VNI = DefaultVNI
	if be.VNI != nil {
		if *be.VNI < 0 || *be.VNI > maxVNI {
			return nil, fmt.Errorf("config: Backend.VNI %d is out of range 0..%d", *be.VNI, maxVNI)
		}
		c.Backend.VNI = *be.VNI
	}
	// flannel passes Port 0 to the kernel, which then uses 8472.
	c.Backend.Port = DefaultPort
	if be.Port != nil && *be.Port != 0 {
		if *be.Port < 1 || *be.Port > 65535 {
			return nil, fmt.Errorf("config: Backend.Port %d is out of range 1..65535", *be.Port)
		}
		c.Backend.Port = *be.Port
	}
	if be.MTU != nil && *be.MTU != 0 {
		if *be.MTU < MinMTU+BackendMTUOverhead || *be.MTU > 65535 {
			return nil, fmt.Errorf("config: Backend.MTU %d is out of range %d..65535: it is the underlay's MTU, the overlay gets %d less (leave it out or 0 to use the underlay interface's)",
				*be.MTU, MinMTU+BackendMTUOverhead, BackendMTUOverhead)
		}
		c.Backend.MTU = *be.MTU
	}
	c.Backend.DirectRouting = be.DirectRouting
	if u := be.unsupported(); len(u) > 0 {
		return nil, fmt.Errorf("config: Backend asks for what vxrouter does not do: %s; remove it or set it false", strings.Join(u, ", "))
	}
	return c, nil
}

// bound parses SubnetMin or SubnetMax. Absent, empty and "0.0.0.0" mean
// the default, as in flannel (whose zero IP means unset).
func (c *Config) bound(name string, s *string, def netip.Addr) (netip.Addr, error) {
	if s == nil || *s == "" {
		return def, nil
	}
	a, err := netip.ParseAddr(*s)
	if err != nil || !a.Is4() {
		return netip.Addr{}, fmt.Errorf("config: %s %q is not an IPv4 address", name, *s)
	}
	if a.IsUnspecified() {
		return def, nil
	}
	if !c.Network.Contains(a) {
		return netip.Addr{}, fmt.Errorf("config: %s %s is outside Network %s", name, a, c.Network)
	}
	if m := netip.PrefixFrom(a, c.SubnetLen).Masked().Addr(); m != a {
		return netip.Addr{}, fmt.Errorf("config: %s %s is not on a /%d boundary (did you mean %s?)", name, a, c.SubnetLen, m)
	}
	return a, nil
}

// DefaultConfig returns the config flannel would derive from just a
// Network and the vxlan backend.
func DefaultConfig(network netip.Prefix) (*Config, error) {
	if !network.IsValid() {
		return nil, errors.New(`config: Network is missing: set it to the overlay's IPv4 CIDR, e.g. "Network":"172.16.0.0/16"`)
	}
	b, err := json.Marshal(map[string]any{"Network": network.String(), "Backend": map[string]string{"Type": "vxlan"}})
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	return ParseConfig(b)
}

// Validate checks c as ParseConfig would check its JSON form.
func (c *Config) Validate() error {
	b, err := c.MarshalJSON()
	if err != nil {
		return err
	}
	_, err = ParseConfig(b)
	return err
}

// MarshalJSON writes flannel's shape:
// {"Network":"172.16.0.0/16","SubnetLen":24,"SubnetMin":"172.16.1.0","SubnetMax":"172.16.255.0","Backend":{"Type":"vxlan","VNI":1,"Port":8472}}.
// Zero SubnetLen, Port and MTU, a false DirectRouting and invalid
// SubnetMin/SubnetMax are left out, so readers apply their defaults; VNI
// is always written because 0 is a valid VNI.
func (c *Config) MarshalJSON() ([]byte, error) {
	if !c.IPv4Enabled() && !c.IPv6Enabled() {
		return nil, errors.New("config: neither Network nor IPv6Network is set")
	}
	type backendOut struct {
		Type string
		VNI  int
		Port int `json:",omitempty"`
		MTU  int `json:",omitempty"`
		// flannel's own spelling is "DirectRouting" in its documentation
		// and "directRouting" in its struct tag; JSON matches either.
		DirectRouting bool `json:",omitempty"`
	}
	out := struct {
		Network   string `json:",omitempty"`
		SubnetLen int    `json:",omitempty"`
		SubnetMin string `json:",omitempty"`
		SubnetMax string `json:",omitempty"`
		ipv6ConfigOut
		Backend backendOut
		// Left out when false, as flannel's configs usually have it.
		EnableNFTables bool `json:",omitempty"`
	}{
		SubnetLen:      c.SubnetLen,
		ipv6ConfigOut:  c.ipv6Out(),
		Backend:        backendOut{Type: c.Backend.Type, VNI: c.Backend.VNI, Port: c.Backend.Port, MTU: c.Backend.MTU, DirectRouting: c.Backend.DirectRouting},
		EnableNFTables: c.EnableNFTables,
	}
	if c.Network.IsValid() {
		out.Network = c.Network.String()
	}
	if c.SubnetMin.IsValid() {
		out.SubnetMin = c.SubnetMin.String()
	}
	if c.SubnetMax.IsValid() {
		out.SubnetMax = c.SubnetMax.String()
	}
	return json.Marshal(out)
}

// UnmarshalJSON is ParseConfig.
func (c *Config) UnmarshalJSON(b []byte) error {
	p, err := ParseConfig(b)
	if err != nil {
		return err
	}
	*c = *p
	return nil
}

// Contains reports whether subnet is one c hands out: of a family c
// carries, SubnetLen (or IPv6SubnetLen) long, aligned, and within
// SubnetMin..SubnetMax (or IPv6SubnetMin..IPv6SubnetMax).
func (c *Config) Contains(subnet netip.Prefix) bool {
	return c.poolOf(subnet).contains(subnet)
}

// SubnetCount is how many subnets the config hands out: one per node at
// most (in a dual-stack overlay, the smaller family's count; an IPv6
// pool counts to 2^62 at most).
func (c *Config) SubnetCount() uint64 {
	n := uint64(maxPool)
	for _, p := range []pool{c.pool4(), c.pool6()} {
		if p.min.IsValid() {
			n = min(n, p.count())
		}
	}
	return n
}

// count is the number of IPv4 subnets in SubnetMin..SubnetMax.
func (c *Config) count() uint64 { return c.pool4().count() }

// subnetAt is the i-th IPv4 subnet counting from SubnetMin.
func (c *Config) subnetAt(i uint64) netip.Prefix { return c.pool4().at(i) }

func subnetSize(bits int) uint32 { return uint32(uint64(1) << (32 - bits)) }

func u32(a netip.Addr) uint32 {
	b := a.As4()
	return binary.BigEndian.Uint32(b[:])
}

func addr4(v uint32) netip.Addr {
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], v)
	return netip.AddrFrom4(b)
}
