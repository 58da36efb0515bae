package tunnel

import (
	"encoding/binary"
	"math/bits"
)

// The Internet checksum (RFC 1071) is the ones' complement sum of 16-bit
// big-endian words. Ones' complement addition does not care about word
// order within a wider word (2^16 ≡ 1 modulo 2^16-1, and 2^16-1 divides
// 2^64-1), so the sum can be accumulated 8 bytes at a time with
// end-around carry, and folded to 16 bits at the end. Loading the words
// little-endian sums byte-swapped 16-bit words; csumFold swaps the result
// back. That is how the kernel's csum_partial works on x86-64, and it runs
// at close to 8 bytes a cycle: bits.Add64 with a carry in compiles to an
// ADC chain.

// csumAdd adds b to acc, a sum being accumulated by csumAdd, csumAddWord
// and csumFold. b must start at an even offset of the data being summed
// (every piece but the last must have an even length).
func csumAdd(acc uint64, b []byte) uint64 {
	var c uint64
	for len(b) >= 64 {
		acc, c = bits.Add64(acc, binary.LittleEndian.Uint64(b[0:8]), c)
		acc, c = bits.Add64(acc, binary.LittleEndian.Uint64(b[8:16]), c)
		acc, c = bits.Add64(acc, binary.LittleEndian.Uint64(b[16:24]), c)
		acc, c = bits.Add64(acc, binary.LittleEndian.Uint64(b[24:32]), c)
		acc, c = bits.Add64(acc, binary.LittleEndian.Uint64(b[32:40]), c)
		acc, c = bits.Add64(acc, binary.LittleEndian.Uint64(b[40:48]), c)
		acc, c = bits.Add64(acc, binary.LittleEndian.Uint64(b[48:56]), c)
		acc, c = bits.Add64(acc, binary.LittleEndian.Uint64(b[56:64]), c)
		b = b[64:]
	}
	if len(b) >= 32 {
		acc, c = bits.Add64(acc, binary.LittleEndian.Uint64(b[0:8]), c)
		acc, c = bits.Add64(acc, binary.LittleEndian.Uint64(b[8:16]), c)
		acc, c = bits.Add64(acc, binary.LittleEndian.Uint64(b[16:24]), c)
		acc, c = bits.Add64(acc, binary.LittleEndian.Uint64(b[24:32]), c)
		b = b[32:]
	}
	for len(b) >= 8 {
		acc, c = bits.Add64(acc, binary.LittleEndian.Uint64(b[0:8]), c)
		b = b[8:]
	}
	if len(b) >= 4 {
		acc, c = bits.Add64(acc, uint64(binary.LittleEndian.Uint32(b[0:4])), c)
		b = b[4:]
	}
	if len(b) >= 2 {
		acc, c = bits.Add64(acc, uint64(binary.LittleEndian.Uint16(b[0:2])), c)
		b = b[2:]
	}
	if len(b) == 1 {
		// The odd byte is the high byte of a big-endian word: the low
		// byte of a little-endian one.
		acc, c = bits.Add64(acc, uint64(b[0]), c)
	}
	// End-around carry. When this add carries, acc was all ones and is
	// now 0, so adding the carry back cannot carry again.
	acc, c = bits.Add64(acc, c, 0)
	return acc + c
}

// csumAddWord adds the big-endian 16-bit word w to acc (a pseudo-header's
// protocol or length).
func csumAddWord(acc uint64, w uint16) uint64 {
	acc, c := bits.Add64(acc, uint64(bits.ReverseBytes16(w)), 0)
	return acc + c
}

// csumFold folds acc to the 16-bit ones' complement sum, not inverted, in
// host order (write it with binary.BigEndian). Data whose checksum is
// right sums to 0xffff.
func csumFold(acc uint64) uint16 {
	s := acc&0xffffffff + acc>>32 // < 2^33
	s = s&0xffffffff + s>>32      // < 2^32
	s = s&0xffff + s>>16          // < 2^17
	s = s&0xffff + s>>16          // <= 0xffff
	return bits.ReverseBytes16(uint16(s))
}

// pseudoHeaderSum is the sum of a TCP or UDP pseudo-header (RFC 793,
// RFC 8200 8.1): addrs is the source and destination address as they
// stand in the IP header (8 or 32 bytes), proto the protocol, l4Len the
// length of the TCP or UDP header and payload.
func pseudoHeaderSum(addrs []byte, proto uint8, l4Len int) uint64 {
	acc := csumAdd(0, addrs)
	acc = csumAddWord(acc, uint16(proto))
	// IPv6 has a 32-bit length; its upper word is 0 for anything but a
	// jumbogram, and IPv4's length is 16 bits.
	acc = csumAddWord(acc, uint16(l4Len>>16))
	return csumAddWord(acc, uint16(l4Len))
}

// csumCopy copies src into dst, which must be at least as long, and
// returns acc plus the sum of src, as csumAdd(acc, src) would, in one pass
// over the bytes: splitting a super-packet, each segment's payload is
// copied out of the read buffer and summed for its checksum, and reading
// it once instead of twice is what makes the split cheap. src must start
// at an even offset of the data being summed, as with csumAdd.
func csumCopy(dst, src []byte, acc uint64) uint64 {
	n := len(src)
	dst = dst[:n]
	var c uint64
	i := 0
	// Four words loaded and stored, then added: the compiler keeps an ADC
	// chain together (the carry flag is one), and eight words at a time
	// would not fit in registers. This runs as fast as csumAdd alone, and
	// faster than copy then csumAdd once the data is out of L1.
	for ; i+64 <= n; i += 64 {
		s, d := src[i:i+64:i+64], dst[i:i+64:i+64]
		w0 := binary.LittleEndian.Uint64(s[0:8])
		binary.LittleEndian.PutUint64(d[0:8], w0)
		w1 := binary.LittleEndian.Uint64(s[8:16])
		binary.LittleEndian.PutUint64(d[8:16], w1)
		w2 := binary.LittleEndian.Uint64(s[16:24])
		binary.LittleEndian.PutUint64(d[16:24], w2)
		w3 := binary.LittleEndian.Uint64(s[24:32])
		binary.LittleEndian.PutUint64(d[24:32], w3)
		acc, c = bits.Add64(acc, w0, c)
		acc, c = bits.Add64(acc, w1, c)
		acc, c = bits.Add64(acc, w2, c)
		acc, c = bits.Add64(acc, w3, c)
		w0 = binary.LittleEndian.Uint64(s[32:40])
		binary.LittleEndian.PutUint64(d[32:40], w0)
		w1 = binary.LittleEndian.Uint64(s[40:48])
		binary.LittleEndian.PutUint64(d[40:48], w1)
		w2 = binary.LittleEndian.Uint64(s[48:56])
		binary.LittleEndian.PutUint64(d[48:56], w2)
		w3 = binary.LittleEndian.Uint64(s[56:64])
		binary.LittleEndian.PutUint64(d[56:64], w3)
		acc, c = bits.Add64(acc, w0, c)
		acc, c = bits.Add64(acc, w1, c)
		acc, c = bits.Add64(acc, w2, c)
		acc, c = bits.Add64(acc, w3, c)
	}
	// The last 0 to 63 bytes: copied, then summed as csumAdd sums them
	// (they are in L1 by now).
	acc, c = bits.Add64(acc, 0, c)
	copy(dst[i:], src[i:])
	return csumAdd(acc+c, src[i:])
}

// checksumPending says whether the TCP or UDP checksum field of l4 (the
// header and payload; the field at csumOff) holds the pseudo-header sum,
// folded, not inverted: what a sender writes when it leaves the checksum
// to a device (CHECKSUM_PARTIAL) and what the device completes by adding
// the header and payload. addrs are the source and destination address
// as in the IP header.
//
// A complete checksum c can equal that sum too, for about one packet in
// 65536. Such a packet is both: finishing it as pending adds the header
// and payload sum D to c = fold(pseudo), giving ~fold(pseudo+D), which
// is c. So whatever reads it as pending, a device finishing it or a
// kernel trusting it, gets the right result.
func checksumPending(l4, addrs []byte, proto uint8, csumOff int) bool {
	return binary.BigEndian.Uint16(l4[csumOff:]) == csumFold(pseudoHeaderSum(addrs, proto, len(l4)))
}
