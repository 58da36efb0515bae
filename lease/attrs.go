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
// its VTEP.
type Attrs struct {
	PublicIP    netip.Addr
	PublicIPv6  netip.Addr // invalid -> JSON null
	BackendType string     // "vxlan"
	VNI         int
	VtepMAC     net.HardwareAddr
	// PartialCsum, in BackendData as "PartialCsum":true, is vxrouter's
	// own: the node takes inner TCP and UDP packets whose checksum is
	// still pending (the pseudo-header sum, as Linux leaves it for
	// offload) and hands them to its kernel as such, so a sender may skip
	// computing them; the outer UDP checksum covers every byte on the way.
	// flannel decodes BackendData into {VNI, VtepMAC} alone and ignores
	// it, and never sets it: to a flannel node, checksums go complete.
	PartialCsum bool
}

// Lease is one subnet key.
type Lease struct {
	Subnet     netip.Prefix
	Attrs      Attrs
	Expiration time.Time        // zero for reservation (no etcd lease)
	LeaseID    clientv3.LeaseID // 0 = reservation
}

// Reservation reports whether l is a key without an etcd lease, which
// nobody but its owner (by PublicIP) takes.
func (l *Lease) Reservation() bool { return l.LeaseID == 0 }

type attrsJSON struct {
	PublicIP    *string
	PublicIPv6  *string
	BackendType *string
	BackendData json.RawMessage
}

type vxlanDataJSON struct {
	VNI         *int
	VtepMAC     *string
	PartialCsum *bool
}

// ParseAttrs parses a subnet key's value, flannel's LeaseAttrs JSON. It is
// strict, because the data path trusts what it returns: PublicIP must be a
// unicast-usable IPv4 address and, for the vxlan backend, BackendData must
// hold a VNI and a 6-byte VtepMAC. BackendData of other backends is not
// interpreted. Unknown fields (flannel's BackendV6Data, ...) are ignored.
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
	if ip.IsUnspecified() {
		return Attrs{}, fmt.Errorf("lease value: PublicIP %s is unspecified (an IPv6-only node?)", ip)
	}
	a.PublicIP = ip
	if j.PublicIPv6 != nil {
		ip6, err := netip.ParseAddr(*j.PublicIPv6)
		if err != nil || !ip6.Is6() || ip6.Is4In6() || ip6.Zone() != "" {
			return Attrs{}, fmt.Errorf("lease value: PublicIPv6 %q is not an IPv6 address", *j.PublicIPv6)
		}
		a.PublicIPv6 = ip6
	}
	if j.BackendType == nil || *j.BackendType == "" {
		return Attrs{}, errors.New("lease value: BackendType is missing")
	}
	a.BackendType = *j.BackendType
	if a.BackendType != "vxlan" {
		return a, nil
	}
	if len(j.BackendData) == 0 || string(j.BackendData) == "null" {
		return Attrs{}, errors.New("lease value: BackendData is missing for vxlan")
	}
	var d vxlanDataJSON
	if err := json.Unmarshal(j.BackendData, &d); err != nil {
		return Attrs{}, fmt.Errorf("lease value: BackendData is not vxlan's {VNI, VtepMAC}: %w", err)
	}
	if d.VNI == nil {
		return Attrs{}, errors.New("lease value: BackendData.VNI is missing")
	}
	if *d.VNI < 0 || *d.VNI > maxVNI {
		return Attrs{}, fmt.Errorf("lease value: BackendData.VNI %d is out of range 0..%d", *d.VNI, maxVNI)
	}
	a.VNI = *d.VNI
	if d.VtepMAC == nil {
		return Attrs{}, errors.New("lease value: BackendData.VtepMAC is missing")
	}
	mac, err := net.ParseMAC(*d.VtepMAC)
	if err != nil || len(mac) != 6 {
		return Attrs{}, fmt.Errorf("lease value: BackendData.VtepMAC %q is not a 6-byte MAC address", *d.VtepMAC)
	}
	a.VtepMAC = mac
	if d.PartialCsum != nil {
		a.PartialCsum = *d.PartialCsum
	}
	return a, nil
}

func (a Attrs) validate() error {
	if !a.PublicIP.Is4() || a.PublicIP.IsUnspecified() {
		return fmt.Errorf("lease value: PublicIP %v is not a usable IPv4 address", a.PublicIP)
	}
	if a.PublicIPv6.IsValid() && (!a.PublicIPv6.Is6() || a.PublicIPv6.Is4In6() || a.PublicIPv6.Zone() != "") {
		return fmt.Errorf("lease value: PublicIPv6 %v is not an IPv6 address", a.PublicIPv6)
	}
	if a.BackendType == "" {
		return errors.New("lease value: BackendType is empty")
	}
	if a.BackendType == "vxlan" {
		if a.VNI < 0 || a.VNI > maxVNI {
			return fmt.Errorf("lease value: VNI %d is out of range 0..%d", a.VNI, maxVNI)
		}
		if len(a.VtepMAC) != 6 {
			return fmt.Errorf("lease value: VtepMAC %q is not a 6-byte MAC address", a.VtepMAC.String())
		}
	}
	return nil
}

// MarshalJSON writes flannel's LeaseAttrs, byte for byte as flannel does:
// {"PublicIP":"10.0.0.2","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"d6:51:2e:80:5c:69"}}.
// For backends other than vxlan BackendData is null. It refuses attrs that
// ParseAttrs would refuse, so nothing unreadable is written to etcd.
func (a Attrs) MarshalJSON() ([]byte, error) {
	if err := a.validate(); err != nil {
		return nil, err
	}
	type vxlanOut struct {
		VNI         int
		VtepMAC     string
		PartialCsum bool `json:",omitempty"` // absent, as flannel writes it, unless set
	}
	out := struct {
		PublicIP    string
		PublicIPv6  *string
		BackendType string
		BackendData *vxlanOut
	}{PublicIP: a.PublicIP.String(), BackendType: a.BackendType}
	if a.PublicIPv6.IsValid() {
		s := a.PublicIPv6.String()
		out.PublicIPv6 = &s
	}
	if a.BackendType == "vxlan" {
		out.BackendData = &vxlanOut{VNI: a.VNI, VtepMAC: a.VtepMAC.String(), PartialCsum: a.PartialCsum}
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
		string(a.VtepMAC) == string(b.VtepMAC) && a.PartialCsum == b.PartialCsum
}

// SubnetKey is the last element of a subnet's etcd key: "172.16.57.0-24".
func SubnetKey(p netip.Prefix) string {
	p = p.Masked()
	return p.Addr().String() + "-" + strconv.Itoa(p.Bits())
}

// ParseSubnetKey is the inverse of SubnetKey. It accepts only the canonical
// form (IPv4, no host bits, no leading zeros), so one subnet has one key.
func ParseSubnetKey(s string) (netip.Prefix, error) {
	i := strings.LastIndexByte(s, '-')
	if i < 0 {
		return netip.Prefix{}, fmt.Errorf("subnet key %q: want <ipv4>-<prefix length>, e.g. 172.16.57.0-24", s)
	}
	a, err := netip.ParseAddr(s[:i])
	if err != nil || !a.Is4() {
		return netip.Prefix{}, fmt.Errorf("subnet key %q: %q is not an IPv4 address", s, s[:i])
	}
	bits, err := strconv.Atoi(s[i+1:])
	if err != nil || bits < 0 || bits > 32 {
		return netip.Prefix{}, fmt.Errorf("subnet key %q: %q is not a prefix length 0..32", s, s[i+1:])
	}
	p := netip.PrefixFrom(a, bits)
	if p.Masked() != p {
		return netip.Prefix{}, fmt.Errorf("subnet key %q: host bits set (the subnet is %s)", s, SubnetKey(p))
	}
	if SubnetKey(p) != s {
		return netip.Prefix{}, fmt.Errorf("subnet key %q: not canonical (want %q)", s, SubnetKey(p))
	}
	return p, nil
}

// parseKeyName parses a key name under <prefix>/subnets/. Besides the
// canonical form it accepts flannel's dual-stack form
// "10.5.1.0-24&fc00:0:0:1::-64", whose IPv4 part is the subnet;
// canonical is false for those, and vxrouter never writes to them.
func parseKeyName(s string) (subnet netip.Prefix, canonical bool, err error) {
	v4, v6, dual := strings.Cut(s, "&")
	subnet, err = ParseSubnetKey(v4)
	if err != nil || !dual {
		return subnet, err == nil, err
	}
	i := strings.LastIndexByte(v6, '-')
	if i < 0 {
		return netip.Prefix{}, false, fmt.Errorf("subnet key %q: IPv6 part %q is not <ipv6>-<prefix length>", s, v6)
	}
	p6, err := netip.ParsePrefix(v6[:i] + "/" + v6[i+1:])
	if err != nil || !p6.Addr().Is6() || p6.Addr().Is4In6() {
		return netip.Prefix{}, false, fmt.Errorf("subnet key %q: IPv6 part %q is not an IPv6 subnet", s, v6)
	}
	return subnet, false, nil
}
