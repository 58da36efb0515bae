package lease

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// SubnetEnv is flannel's subnet.env, read by CNI's flannel plugin and by
// Docker setups:
//
//	FLANNEL_NETWORK=172.16.0.0/16
//	FLANNEL_SUBNET=172.16.57.1/24
//	FLANNEL_MTU=1450
//	FLANNEL_IPMASQ=false
//
// A dual-stack overlay adds, after FLANNEL_SUBNET, FLANNEL_IPV6_NETWORK
// and FLANNEL_IPV6_SUBNET (fd00:16::/48, fd00:16:0:39::1/64); an
// IPv6-only one has those instead of FLANNEL_NETWORK and FLANNEL_SUBNET,
// as flannel writes it.
type SubnetEnv struct {
	Network     netip.Prefix // invalid in an IPv6-only overlay
	Subnet      netip.Prefix // the subnet's first host with its length, e.g. 172.16.57.1/24
	IPv6Network netip.Prefix // invalid unless the overlay carries IPv6
	IPv6Subnet  netip.Prefix // e.g. fd00:16:0:39::1/64
	MTU         int
	IPMasq      bool
}

// NewSubnetEnv fills a SubnetEnv for a node holding subnet (e.g.
// 172.16.57.0/24): Subnet becomes its first host, 172.16.57.1/24, which
// is where the node's bridge goes.
func NewSubnetEnv(network, subnet netip.Prefix, mtu int, ipMasq bool) SubnetEnv {
	s := subnet.Masked()
	return SubnetEnv{Network: network, Subnet: netip.PrefixFrom(s.Addr().Next(), s.Bits()), MTU: mtu, IPMasq: ipMasq}
}

// Lease returns the subnet itself (Subnet without host bits), as Acquire's
// previous argument wants it.
func (e SubnetEnv) Lease() netip.Prefix { return e.Subnet.Masked() }

// IPv6Lease is Lease for IPv6Subnet.
func (e SubnetEnv) IPv6Lease() netip.Prefix { return e.IPv6Subnet.Masked() }

// SetIPv6 fills the IPv6 half for a node holding ipv6Subnet (e.g.
// fd00:16:0:39::/64): IPv6Subnet becomes its first host, fd00:16:0:39::1/64,
// where the node's bridge goes.
func (e *SubnetEnv) SetIPv6(network, ipv6Subnet netip.Prefix) {
	s := ipv6Subnet.Masked()
	e.IPv6Network, e.IPv6Subnet = network, netip.PrefixFrom(s.Addr().Next(), s.Bits())
}

// WriteSubnetEnv writes e to path in flannel's format, atomically: a
// reader sees the old file or the new one, never half of one. It creates
// path's directory if needed.
func WriteSubnetEnv(path string, e SubnetEnv) error {
	if err := e.check(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if e.MTU < 0 {
		return fmt.Errorf("write %s: MTU %d is negative", path, e.MTU)
	}
	// flannel's order: each family that is on, then MTU and IPMASQ.
	var b []byte
	if e.Network.IsValid() {
		b = fmt.Appendf(b, "FLANNEL_NETWORK=%s\nFLANNEL_SUBNET=%s\n", e.Network, e.Subnet)
	}
	if e.IPv6Network.IsValid() {
		b = fmt.Appendf(b, "FLANNEL_IPV6_NETWORK=%s\nFLANNEL_IPV6_SUBNET=%s\n", e.IPv6Network, e.IPv6Subnet)
	}
	b = fmt.Appendf(b, "FLANNEL_MTU=%d\nFLANNEL_IPMASQ=%t\n", e.MTU, e.IPMasq)

	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	// The temporary file is in the same directory so rename is atomic
	// (same filesystem).
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	tmp := f.Name()
	err = func() error {
		if _, err := f.Write(b); err != nil {
			return err
		}
		if err := f.Chmod(0o644); err != nil {
			return err
		}
		// Sync before rename: after a crash the new name must not point
		// at an empty file.
		return f.Sync()
	}()
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

// check says whether e is whole: each family's network and subnet both
// set or both unset, at least one family.
func (e SubnetEnv) check() error {
	if e.Network.IsValid() != e.Subnet.IsValid() || !e.Network.IsValid() && !e.IPv6Network.IsValid() {
		return fmt.Errorf("Network %v and Subnet %v must both be set (or, IPv6-only, neither)", e.Network, e.Subnet)
	}
	if e.IPv6Network.IsValid() != e.IPv6Subnet.IsValid() {
		return fmt.Errorf("IPv6Network %v and IPv6Subnet %v must both be set or neither", e.IPv6Network, e.IPv6Subnet)
	}
	return nil
}

// ReadSubnetEnv reads a subnet.env written by WriteSubnetEnv or by flannel.
// FLANNEL_NETWORK and FLANNEL_SUBNET, or FLANNEL_IPV6_NETWORK and
// FLANNEL_IPV6_SUBNET, or all four, are required; other keys, blank lines
// and # comments are ignored.
func ReadSubnetEnv(path string) (SubnetEnv, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return SubnetEnv{}, fmt.Errorf("read subnet env: %w", err)
	}
	var e SubnetEnv
	sc := bufio.NewScanner(bytes.NewReader(b))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			return SubnetEnv{}, fmt.Errorf("read %s: line %d: %q is not KEY=VALUE", path, n, line)
		}
		switch k {
		case "FLANNEL_NETWORK":
			e.Network, err = netip.ParsePrefix(v)
		case "FLANNEL_SUBNET":
			e.Subnet, err = netip.ParsePrefix(v)
		case "FLANNEL_IPV6_NETWORK":
			e.IPv6Network, err = netip.ParsePrefix(v)
		case "FLANNEL_IPV6_SUBNET":
			e.IPv6Subnet, err = netip.ParsePrefix(v)
		case "FLANNEL_MTU":
			e.MTU, err = strconv.Atoi(v)
			if err == nil && e.MTU < 0 {
				err = errors.New("negative")
			}
		case "FLANNEL_IPMASQ":
			e.IPMasq, err = strconv.ParseBool(v)
		}
		if err != nil {
			return SubnetEnv{}, fmt.Errorf("read %s: line %d: bad %s %q: %w", path, n, k, v, err)
		}
	}
	if err := sc.Err(); err != nil {
		return SubnetEnv{}, fmt.Errorf("read %s: %w", path, err)
	}
	if e.check() != nil {
		return SubnetEnv{}, fmt.Errorf("read %s: FLANNEL_NETWORK and FLANNEL_SUBNET, or FLANNEL_IPV6_NETWORK and FLANNEL_IPV6_SUBNET, are required, each pair whole", path)
	}
	return e, nil
}
