package lease

import (
	"encoding/binary"
	"math/bits"
	"net/netip"
	"slices"
)

// A pool is one address family's subnets that a config hands out: the
// bits-long prefixes from min to max, both aligned. IPv4 and IPv6 share
// the arithmetic, done on 128-bit integers.
//
// An IPv6 pool can hold more subnets than a uint64 counts (a /48 cut into
// /124s holds 2^76). Indexes count from min and stop at maxPool: subnets
// beyond are still the config's (Contains says so, and a flannel node may
// hold one), but Acquire picks among the first maxPool only.
type pool struct {
	min, max netip.Addr
	bits     int
}

// maxPool bounds the subnets a pool indexes: far more nodes than etcd
// holds keys, and room to add a count and a size without overflow.
const maxPool = 1 << 62

// u128 is an unsigned 128-bit integer: an address as a number.
type u128 struct{ hi, lo uint64 }

func u128Of(a netip.Addr) u128 {
	if a.Is4() {
		b := a.As4()
		return u128{lo: uint64(binary.BigEndian.Uint32(b[:]))}
	}
	b := a.As16()
	return u128{hi: binary.BigEndian.Uint64(b[:8]), lo: binary.BigEndian.Uint64(b[8:])}
}

// addr turns x back into an address of like's family.
func (x u128) addr(like netip.Addr) netip.Addr {
	if like.Is4() {
		var b [4]byte
		binary.BigEndian.PutUint32(b[:], uint32(x.lo))
		return netip.AddrFrom4(b)
	}
	var b [16]byte
	binary.BigEndian.PutUint64(b[:8], x.hi)
	binary.BigEndian.PutUint64(b[8:], x.lo)
	return netip.AddrFrom16(b)
}

func (x u128) add(y u128) u128 {
	lo, c := bits.Add64(x.lo, y.lo, 0)
	return u128{x.hi + y.hi + c, lo}
}

func (x u128) sub(y u128) u128 {
	lo, b := bits.Sub64(x.lo, y.lo, 0)
	return u128{x.hi - y.hi - b, lo}
}

func (x u128) cmp(y u128) int {
	switch {
	case x.hi != y.hi:
		return cmpU64(x.hi, y.hi)
	default:
		return cmpU64(x.lo, y.lo)
	}
}

func cmpU64(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

func (x u128) shr(n uint) u128 {
	switch {
	case n >= 128:
		return u128{}
	case n >= 64:
		return u128{lo: x.hi >> (n - 64)}
	case n == 0:
		return x
	}
	return u128{x.hi >> n, x.lo>>n | x.hi<<(64-n)}
}

func (x u128) shl(n uint) u128 {
	switch {
	case n >= 128:
		return u128{}
	case n >= 64:
		return u128{hi: x.lo << (n - 64)}
	case n == 0:
		return x
	}
	return u128{x.hi<<n | x.lo>>(64-n), x.lo << n}
}

// shift is how far an index moves left to become an address offset.
func (p pool) shift() uint { return uint(p.min.BitLen() - p.bits) }

// count is how many subnets the pool indexes: min..max, at most maxPool.
func (p pool) count() uint64 {
	n := u128Of(p.max).sub(u128Of(p.min)).shr(p.shift())
	if n.hi != 0 || n.lo >= maxPool {
		return maxPool
	}
	return n.lo + 1
}

// at is the i-th subnet counting from min; i < count().
func (p pool) at(i uint64) netip.Prefix {
	a := u128Of(p.min).add(u128{lo: i}.shl(p.shift()))
	return netip.PrefixFrom(a.addr(p.min), p.bits)
}

// contains reports whether subnet is one of the pool's: same family and
// length, aligned, within min..max (indexed or not).
func (p pool) contains(subnet netip.Prefix) bool {
	if !p.min.IsValid() || !subnet.IsValid() || subnet.Addr().Is4() != p.min.Is4() || subnet.Addr().Is4In6() ||
		subnet.Bits() != p.bits || subnet.Masked() != subnet {
		return false
	}
	a := subnet.Addr()
	return p.min.Compare(a) <= 0 && a.Compare(p.max) <= 0
}

// index is subnet's position counting from min, and whether it has one
// (it is in the pool and among the first count()).
func (p pool) index(subnet netip.Prefix) (uint64, bool) {
	if !p.contains(subnet) {
		return 0, false
	}
	n := u128Of(subnet.Addr()).sub(u128Of(p.min)).shr(p.shift())
	if n.hi != 0 || n.lo >= p.count() {
		return 0, false
	}
	return n.lo, true
}

// taken returns which indexes of the pool the given prefixes overlap.
// Prefixes of the other family, and invalid ones, are ignored; one of
// another length (an older config's) blocks every subnet it overlaps.
func (p pool) taken(prefixes []netip.Prefix) indexRanges {
	if !p.min.IsValid() {
		return nil
	}
	shift := p.shift()
	lo := u128Of(p.min)
	hi := lo.add(u128{lo: p.count()}.shl(shift)).sub(u128{lo: 1}) // last address of the last indexed subnet
	var rs indexRanges
	for _, q := range prefixes {
		if !q.IsValid() || q.Addr().Is4() != p.min.Is4() {
			continue
		}
		q = q.Masked()
		a := u128Of(q.Addr())
		// For ::/0 the size wraps to 0 and b to the last address, as
		// it should.
		b := a.add(u128{lo: 1}.shl(uint(q.Addr().BitLen() - q.Bits()))).sub(u128{lo: 1})
		if b.cmp(lo) < 0 || a.cmp(hi) > 0 {
			continue
		}
		if a.cmp(lo) < 0 {
			a = lo
		}
		if b.cmp(hi) > 0 {
			b = hi
		}
		rs = append(rs, [2]uint64{a.sub(lo).shr(shift).lo, b.sub(lo).shr(shift).lo})
	}
	slices.SortFunc(rs, func(x, y [2]uint64) int { return cmpU64(x[0], y[0]) })
	merged := rs[:0]
	for _, x := range rs {
		if n := len(merged); n > 0 && x[0] <= merged[n-1][1]+1 {
			merged[n-1][1] = max(merged[n-1][1], x[1])
			continue
		}
		merged = append(merged, x)
	}
	return merged
}
