package tunnel

import (
	"bytes"
	"encoding/binary"
	"testing"
)

// TestVnetHdr checks the one place the virtio-net header's layout is
// written down: the exact bytes of one header, and that decode gives back
// what encode wrote, leaving the bytes around it alone.
func TestVnetHdr(t *testing.T) {
	// The expectation is little-endian: the header is in host order, and
	// the machines this runs on (amd64, arm64) are little-endian.
	var probe [2]byte
	binary.NativeEndian.PutUint16(probe[:], 1)
	if probe[0] != 1 {
		t.Skip("expected bytes are written for a little-endian host")
	}
	h := vnetHdr{
		flags:      virtioNeedsCsum,
		gsoType:    virtioGSOTCPv6 | virtioGSOECN,
		hdrLen:     0x0102,
		gsoSize:    1448, // 0x05a8
		csumStart:  40,
		csumOffset: 16,
	}
	want := []byte{
		0x01,       // flags: NEEDS_CSUM
		0x84,       // gso_type: TCPV6 | ECN
		0x02, 0x01, // hdr_len
		0xa8, 0x05, // gso_size
		0x28, 0x00, // csum_start
		0x10, 0x00, // csum_offset
	}
	if len(want) != VirtioNetHdrLen {
		t.Fatalf("expectation has %d bytes, VirtioNetHdrLen is %d", len(want), VirtioNetHdrLen)
	}
	buf := bytes.Repeat([]byte{0xee}, VirtioNetHdrLen+2)
	h.encode(buf[1:])
	if got := buf[1 : 1+VirtioNetHdrLen]; !bytes.Equal(got, want) {
		t.Fatalf("encode: % x, want % x", got, want)
	}
	if buf[0] != 0xee || buf[VirtioNetHdrLen+1] != 0xee {
		t.Fatalf("encode wrote outside its 10 bytes: % x", buf)
	}
	if got := decodeVnetHdr(buf[1:]); got != h {
		t.Fatalf("decode(encode(%+v)) = %+v", h, got)
	}

	// Round trips with every field at its extremes, so that a field
	// written to or read from the wrong offset shows.
	for _, h := range []vnetHdr{
		{},
		{flags: 0xff, gsoType: 0xff, hdrLen: 0xffff, gsoSize: 0xffff, csumStart: 0xffff, csumOffset: 0xffff},
		{flags: 1, gsoType: 2, hdrLen: 0x0304, gsoSize: 0x0506, csumStart: 0x0708, csumOffset: 0x090a},
		{gsoType: virtioGSOUDPL4, hdrLen: 28, gsoSize: 1472, csumStart: 20, csumOffset: 6},
	} {
		var b [VirtioNetHdrLen]byte
		h.encode(b[:])
		if got := decodeVnetHdr(b[:]); got != h {
			t.Errorf("decode(encode(%+v)) = %+v (bytes % x)", h, got, b)
		}
	}
}
