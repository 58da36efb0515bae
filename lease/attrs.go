package lease

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// Attrs is the value of a subnet key: who owns the subnet and how to reach
// its VTEP. A dual-stack lease holds both families' parts, an IPv6-only
// one only the IPv6 part (PublicIPv6, BackendV6Data) with no PublicIP.
type Attrs struct {
	PublicIP    netip.Addr // IPv4; invalid for an IPv6-only node (JSON "0.0.0.0", as flannel writes it)
	PublicIPv6  netip.Addr // invalid -> JSON null
	BackendType string     // "vxlan"
	// VNI, VtepMAC and PartialCsum are BackendData, the IPv4 VTEP's
	// (flannel's flannel.<VNI>); absent for an IPv6-only node.
	VNI     int
	VtepMAC net.HardwareAddr
	// PartialCsum, in BackendData as "PartialCsum":true, is vxrouter's
	// own: the node takes inner TCP and UDP packets whose checksum is
	// still pending (the pseudo-header sum, as Linux leaves it for
	// offload) and hands them to its kernel as such, so a sender may skip
	// computing them; the outer UDP checksum covers every byte on the way.
	// flannel decodes BackendData into {VNI, VtepMAC} alone and ignores
	// it, and never sets it: to a flannel node, checksums go complete.
	PartialCsum bool
	// BackendV6Data is the IPv6 VTEP's (flannel's flannel-v6.<VNI>,
	// reached at PublicIPv6); nil when the lease has none. A vxrouter
	// node has one VTEP MAC and writes it in both.
	BackendV6Data *VXLANData
}

// VXLANData is a vxlan lease's BackendData or BackendV6Data:
// {"VNI":1,"VtepMAC":"d6:51:2e:80:5c:69"}, and vxrouter's own
// "PartialCsum":true (see Attrs.PartialCsum).
type VXLANData struct {
	VNI         int
	VtepMAC     net.HardwareAddr
	PartialCsum bool
}

func (d *VXLANData) equal(e *VXLANData) bool {
	if d == nil || e == nil {
		return d == e
	}
	return d.VNI == e.VNI && string(d.VtepMAC) == string(e.VtepMAC) && d.PartialCsum == e.PartialCsum
}

// Owner is the address a node finds its own leases by: PublicIP, or
// PublicIPv6 for an IPv6-only node. flannel reuses a lease by PublicIP.
func (a Attrs) Owner() netip.Addr {
	if a.PublicIP.IsValid() {
		return a.PublicIP
	}
	return a.PublicIPv6
}

// Lease is one subnet key: an IPv4 subnet, an IPv6 one, or both
// (flannel's dual-stack key 10.5.52.0-24&fd00:12:13::-64).
type Lease struct {
	Subnet     netip.Prefix // IPv4; invalid in an IPv6-only lease
	IPv6Subnet netip.Prefix // invalid unless the key has an IPv6 part
	Attrs      Attrs
	Expiration time.Time        // zero for reservation (no etcd lease)
	LeaseID    clientv3.LeaseID // 0 = reservation
}

// Subnets are the lease's subnets, IPv4 first, without the invalid ones.
func (l *Lease) Subnets() []netip.Prefix {
	var out []netip.Prefix
	for _, p := range []netip.Prefix{l.Subnet, l.IPv6Subnet} {
		if p.IsValid() {
			out = append(out, p)
		}
	}
	return out
}

// KeyName is the last element of the lease's etcd key.
func (l *Lease) KeyName() string { return KeyName(l.Subnet, l.IPv6Subnet) }

// Reservation reports whether l is a key without an etcd lease, which
// nobody but its owner (by PublicIP) takes.
func (l *Lease) Reservation() bool { return l.LeaseID == 0 }

type attrsJSON struct {
	PublicIP      *string
	PublicIPv6    *string
	BackendType   *string
	BackendData   json.RawMessage
	BackendV6Data json.RawMessage
}

type vxlanDataJSON struct {
	VNI         *int
	VtepMAC     *string
	PartialCsum *bool
}

// ParseAttrs parses a subnet key's value, flannel's LeaseAttrs JSON. It is
// strict, because the data path trusts what it returns: PublicIP must be a
// unicast-usable IPv4 address, or "0.0.0.0" for an IPv6-only node with a
// PublicIPv6; for the vxlan backend, BackendData (when there is a
// PublicIP) and BackendV6Data (when present; an IPv6-only node must have
// it) must each hold a VNI and a 6-byte VtepMAC. BackendData of other
// backends is not interpreted. Unknown fields are ignored.
func ParseAttrs(b []byte) (Attrs, error) {
	var j attrsJSON
	if err := json.Unmarshal(b, &j); err != nil {
		return Attrs{}, fmt.Errorf("lease value: not valid JSON: %w", err)
	}
	var a Attrs
	if j.PublicIP == nil {
		return Attrs{}, errors.New("lease value: PublicIP is missing")
	}
	ip, err := netip.ParseAddr(*j.PublicIP)
	if err != nil || !ip.Is4() {
		return Attrs{}, fmt.Errorf("lease value: PublicIP %q is not an IPv4 address", *j.PublicIP)
	}
	if j.PublicIPv6 != nil {
		ip6, err := netip.ParseAddr(*j.PublicIPv6)
		if err != nil || !ip6.Is6() || ip6.Is4In6() || ip6.Zone() != "" {
			return Attrs{}, fmt.Errorf("lease value: PublicIPv6 %q is not an IPv6 address", *j.PublicIPv6)
		}
		if ip6.IsUnspecified() {
			return Attrs{}, fmt.Errorf("lease value: PublicIPv6 %s is unspecified", ip6)
		}
		a.PublicIPv6 = ip6
	}
	// flannel writes an IPv6-only node's PublicIP as 0.0.0.0.
	v6only := ip.IsUnspecified()
	if v6only && !a.PublicIPv6.IsValid() {
		return Attrs{}, fmt.Errorf("lease value: PublicIP %s is unspecified, and there is no PublicIPv6 (an IPv6-only node has one)", ip)
	}
	if !v6only {
		a.PublicIP = ip
	}
	if j.BackendType == nil || *j.BackendType == "" {
		return Attrs{}, errors.New("lease value: BackendType is missing")
	}
	a.BackendType = *j.BackendType
	if a.BackendType != "vxlan" {
		return a, nil
	}
	if !v6only {
		d, err := parseVXLANData("BackendData", j.BackendData)
		if err != nil {
			return Attrs{}, err
		}
		a.VNI, a.VtepMAC, a.PartialCsum = d.VNI, d.VtepMAC, d.PartialCsum
	}
	if len(j.BackendV6Data) > 0 && string(j.BackendV6Data) != "null" {
		if !a.PublicIPv6.IsValid() {
			return Attrs{}, errors.New("lease value: BackendV6Data without a PublicIPv6 to reach it at")
		}
		d, err := parseVXLANData("BackendV6Data", j.BackendV6Data)
		if err != nil {
			return Attrs{}, err
		}
		a.BackendV6Data = &d
	}
	if v6only && a.BackendV6Data == nil {
		return Attrs{}, errors.New("lease value: BackendV6Data is missing for vxlan (an IPv6-only node, PublicIP 0.0.0.0, has only that)")
	}
	return a, nil
}

// parseVXLANData parses BackendData or BackendV6Data (name) of a vxlan
// lease.
func parseVXLANData(name string, raw json.RawMessage) (VXLANData, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return VXLANData{}, fmt.Errorf("lease value: %s is missing for vxlan", name)
	}
	var d vxlanDataJSON
	if err := json.Unmarshal(raw, &d); err != nil {
		return VXLANData{}, fmt.Errorf("lease value: %s is not vxlan's {VNI, VtepMAC}: %w", name, err)
	}
	if d.VNI == nil {
		return VXLANData{}, fmt.Errorf("lease value: %s.VNI is missing", name)
	}
	if *d.VNI < 0 || *d.VNI > maxVNI {
		return VXLANData{}, fmt.Errorf("lease value: %s.VNI %d is out of range 0..%d", name, *d.VNI, maxVNI)
	}
	if d.VtepMAC == nil {
		return VXLANData{}, fmt.Errorf("lease value: %s.VtepMAC is missing", name)
	}
	mac, err := net.ParseMAC(*d.VtepMAC)
	if err != nil || len(mac) != 6 {
		return VXLANData{}, fmt.Errorf("lease value: %s.VtepMAC %q is not a 6-byte MAC address", name, *d.VtepMAC)
	}
	out := VXLANData{VNI: *d.VNI, VtepMAC: mac}
	if d.PartialCsum != nil {
		out.PartialCsum = *d.PartialCsum
	}
	return out, nil
}

func (a Attrs) validate() error {
	switch {
	case a.PublicIP.IsValid() && (!a.PublicIP.Is4() || a.PublicIP.IsUnspecified()):
		return fmt.Errorf("lease value: PublicIP %v is not a usable IPv4 address", a.PublicIP)
	case !a.PublicIP.IsValid() && !a.PublicIPv6.IsValid():
		return errors.New("lease value: neither PublicIP nor PublicIPv6 is set")
	}
	if a.PublicIPv6.IsValid() && (!a.PublicIPv6.Is6() || a.PublicIPv6.Is4In6() || a.PublicIPv6.Zone() != "" || a.PublicIPv6.IsUnspecified()) {
		return fmt.Errorf("lease value: PublicIPv6 %v is not a usable IPv6 address", a.PublicIPv6)
	}
	if a.BackendType == "" {
		return errors.New("lease value: BackendType is empty")
	}
	if a.BackendType != "vxlan" {
		return nil
	}
	if a.PublicIP.IsValid() {
		if err := (&VXLANData{VNI: a.VNI, VtepMAC: a.VtepMAC}).validate("BackendData"); err != nil {
			return err
		}
	}
	switch {
	case a.BackendV6Data != nil && !a.PublicIPv6.IsValid():
		return errors.New("lease value: BackendV6Data without a PublicIPv6")
	case a.BackendV6Data == nil && !a.PublicIP.IsValid():
		return errors.New("lease value: an IPv6-only vxlan lease needs BackendV6Data")
	case a.BackendV6Data != nil:
		return a.BackendV6Data.validate("BackendV6Data")
	}
	return nil
}

func (d *VXLANData) validate(name string) error {
	if d.VNI < 0 || d.VNI > maxVNI {
		return fmt.Errorf("lease value: %s.VNI %d is out of range 0..%d", name, d.VNI, maxVNI)
	}
	if len(d.VtepMAC) != 6 {
		return fmt.Errorf("lease value: %s.VtepMAC %q is not a 6-byte MAC address", name, d.VtepMAC.String())
	}
	return nil
}

// vxlanOut is BackendData or BackendV6Data as written.
type vxlanOut struct {
	VNI         int
	VtepMAC     string
	PartialCsum bool `json:",omitempty"` // absent, as flannel writes it, unless set
}

// MarshalJSON writes flannel's LeaseAttrs, byte for byte as flannel does:
// {"PublicIP":"10.0.0.2","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"d6:51:2e:80:5c:69"}},
// with "BackendV6Data":{...} after BackendData when there is one, and,
// for an IPv6-only node, "PublicIP":"0.0.0.0" and no BackendData. For
// backends other than vxlan BackendData is null. It refuses attrs that
// ParseAttrs would refuse, so nothing unreadable is written to etcd.
func (a Attrs) MarshalJSON() ([]byte, error) {
	if err := a.validate(); err != nil {
		return nil, err
	}
	out := struct {
		PublicIP      string
		PublicIPv6    *string
		BackendType   string
		BackendData   json.RawMessage `json:",omitempty"`
		BackendV6Data *vxlanOut       `json:",omitempty"`
	}{PublicIP: "0.0.0.0", BackendType: a.BackendType, BackendData: json.RawMessage("null")}
	if a.PublicIP.IsValid() {
		out.PublicIP = a.PublicIP.String()
	}
	if a.PublicIPv6.IsValid() {
		s := a.PublicIPv6.String()
		out.PublicIPv6 = &s
	}
	if a.BackendType == "vxlan" {
		out.BackendData = nil
		if a.PublicIP.IsValid() {
			b, err := json.Marshal(vxlanOut{VNI: a.VNI, VtepMAC: a.VtepMAC.String(), PartialCsum: a.PartialCsum})
			if err != nil {
				return nil, err
			}
			out.BackendData = b
		}
		if d := a.BackendV6Data; d != nil {
			out.BackendV6Data = &vxlanOut{VNI: d.VNI, VtepMAC: d.VtepMAC.String(), PartialCsum: d.PartialCsum}
		}
	}
	return json.Marshal(out)
}

// UnmarshalJSON is ParseAttrs.
func (a *Attrs) UnmarshalJSON(b []byte) error {
	p, err := ParseAttrs(b)
	if err != nil {
		return err
	}
	*a = p
	return nil
}

// Equal reports whether a and b hold the same attributes.
func (a Attrs) Equal(b Attrs) bool {
	return a.PublicIP == b.PublicIP && a.PublicIPv6 == b.PublicIPv6 &&
		a.BackendType == b.BackendType && a.VNI == b.VNI &&
		string(a.VtepMAC) == string(b.VtepMAC) && a.PartialCsum == b.PartialCsum &&
		a.BackendV6Data.equal(b.BackendV6Data)
}

// SubnetKey is one subnet's part of an etcd key: "172.16.57.0-24", or
// "fd00:12:13::-64".
func SubnetKey(p netip.Prefix) string {
	p = p.Masked()
	return p.Addr().String() + "-" + strconv.Itoa(p.Bits())
}

// KeyName is the last element of a lease's etcd key: the IPv4 subnet's
// part, flannel's "172.16.57.0-24"; in a dual-stack lease that and the
// IPv6 subnet's, flannel's "172.16.57.0-24&fd00:12:13::-64"; in an
// IPv6-only lease the IPv6 part alone, "fd00:12:13::-64", vxrouter's own
// shape (flannel's etcd mode always writes an IPv4 part, and its key
// parser passes over a key without one).
func KeyName(subnet, ipv6Subnet netip.Prefix) string {
	switch {
	case !ipv6Subnet.IsValid():
		return SubnetKey(subnet)
	case !subnet.IsValid():
		return SubnetKey(ipv6Subnet)
	}
	return SubnetKey(subnet) + "&" + SubnetKey(ipv6Subnet)
}

// ParseSubnetKey is the inverse of SubnetKey. It accepts only the canonical
// form (no host bits, no leading zeros, IPv6 as RFC 5952 writes it), so one
// subnet has one key.
func ParseSubnetKey(s string) (netip.Prefix, error) {
	p, canonical, err := parseSubnetPart(s)
	if err == nil && !canonical {
		err = fmt.Errorf("subnet key %q: not canonical (want %q)", s, SubnetKey(p))
	}
	if err != nil {
		return netip.Prefix{}, err
	}
	return p, nil
}

// parseSubnetPart parses one part of a key name, of either family, and
// says whether it is written as SubnetKey writes it.
func parseSubnetPart(s string) (p netip.Prefix, canonical bool, err error) {
	i := strings.LastIndexByte(s, '-')
	if i < 0 {
		return netip.Prefix{}, false, fmt.Errorf("subnet key %q: want <address>-<prefix length>, e.g. 172.16.57.0-24 or fd00:12:13::-64", s)
	}
	a, err := netip.ParseAddr(s[:i])
	if err != nil || a.Is4In6() || a.Zone() != "" {
		return netip.Prefix{}, false, fmt.Errorf("subnet key %q: %q is not an IPv4 or IPv6 address", s, s[:i])
	}
	bits, err := strconv.Atoi(s[i+1:])
	if err != nil || bits < 0 || bits > a.BitLen() || s[i+1] == '+' {
		return netip.Prefix{}, false, fmt.Errorf("subnet key %q: %q is not a prefix length 0..%d", s, s[i+1:], a.BitLen())
	}
	p = netip.PrefixFrom(a, bits)
	if p.Masked() != p {
		return netip.Prefix{}, false, fmt.Errorf("subnet key %q: host bits set (the subnet is %s)", s, SubnetKey(p))
	}
	return p, SubnetKey(p) == s, nil
}

// ParseKeyName is the inverse of KeyName, canonical forms only.
func ParseKeyName(s string) (subnet, ipv6Subnet netip.Prefix, err error) {
	subnet, ipv6Subnet, canonical, err := parseKeyName(s)
	if err == nil && !canonical {
		err = fmt.Errorf("subnet key %q: not canonical (want %q)", s, KeyName(subnet, ipv6Subnet))
	}
	if err != nil {
		return netip.Prefix{}, netip.Prefix{}, err
	}
	return subnet, ipv6Subnet, nil
}

// parseKeyName parses a key name under <prefix>/subnets/: an IPv4 part,
// an IPv4 and an IPv6 part joined by "&" (flannel's dual-stack key), or
// an IPv6 part alone (vxrouter's IPv6-only key). The IPv4 part must be
// canonical; an IPv6 part written otherwise ("fc00:0:0:1::", which
// flannel's parser takes too) is read, and canonical is false: vxrouter
// writes only to keys it would name so itself.
func parseKeyName(s string) (subnet, ipv6Subnet netip.Prefix, canonical bool, err error) {
	v4, v6, dual := strings.Cut(s, "&")
	if !dual {
		p, canonical, err := parseSubnetPart(s)
		switch {
		case err != nil:
			return netip.Prefix{}, netip.Prefix{}, false, err
		case p.Addr().Is4() && !canonical:
			return netip.Prefix{}, netip.Prefix{}, false, fmt.Errorf("subnet key %q: not canonical (want %q)", s, SubnetKey(p))
		case p.Addr().Is4():
			return p, netip.Prefix{}, true, nil
		}
		return netip.Prefix{}, p, canonical, nil
	}
	subnet, err = ParseSubnetKey(v4)
	if err == nil && !subnet.Addr().Is4() {
		err = fmt.Errorf("subnet key %q: %q is not an IPv4 subnet (a dual-stack key is <ipv4>-<len>&<ipv6>-<len>)", s, v4)
	}
	if err != nil {
		return netip.Prefix{}, netip.Prefix{}, false, err
	}
	ipv6Subnet, canonical, err = parseSubnetPart(v6)
	if err == nil && !ipv6Subnet.Addr().Is6() {
		err = fmt.Errorf("%q is not an IPv6 subnet", v6)
	}
	if err != nil {
		return netip.Prefix{}, netip.Prefix{}, false, fmt.Errorf("subnet key %q: IPv6 part: %w", s, err)
	}
	return subnet, ipv6Subnet, canonical, nil
}
