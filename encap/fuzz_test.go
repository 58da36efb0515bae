package encap_test

import (
	"bytes"
	"encoding/binary"
	"net"
	"testing"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"

	"vxrouter/encap"
)

// referenceDecap is a slow second opinion on Decap, written from RFC 7348
// and the IP header formats rather than from Decap: gopacket parses the
// VXLAN and Ethernet headers, encoding/binary the IP fields.
func referenceDecap(vni uint32, local net.HardwareAddr, frame []byte) (int, encap.Reason) {
	if len(frame) < encap.HeaderLen+1 {
		return 0, encap.Short
	}
	var vx layers.VXLAN
	var eth layers.Ethernet
	if err := vx.DecodeFromBytes(frame, gopacket.NilDecodeFeedback); err != nil {
		return 0, encap.Short
	}
	if !vx.ValidIDFlag {
		return 0, encap.NoIFlag
	}
	if vx.VNI != vni {
		return 0, encap.ForeignVNI
	}
	if err := eth.DecodeFromBytes(vx.Payload, gopacket.NilDecodeFeedback); err != nil {
		return 0, encap.Short
	}
	if !bytes.Equal(eth.DstMAC, local) {
		return 0, encap.ForeignMAC
	}
	ip := eth.Payload
	switch eth.EthernetType {
	case layers.EthernetTypeIPv4:
		if len(ip) < 20 || ip[0]>>4 != 4 {
			return 0, encap.BadInner
		}
		hlen := int(ip[0]&0xf) * 4
		total := int(binary.BigEndian.Uint16(ip[2:]))
		if hlen < 20 || total < hlen || total > len(ip) {
			return 0, encap.BadInner
		}
		return total, encap.OK
	case layers.EthernetTypeIPv6:
		if len(ip) < 40 || ip[0]>>4 != 6 {
			return 0, encap.BadInner
		}
		total := 40 + int(binary.BigEndian.Uint16(ip[4:]))
		if total > len(ip) {
			return 0, encap.BadInner
		}
		return total, encap.OK
	}
	// gopacket reads type values below 0x0600 as an 802.3 length; either
	// way it is not IP.
	return 0, encap.UnknownEtherType
}

func addKernelSeeds(f *testing.F, add func(payload []byte)) {
	for _, dg := range readKernelPcap(f) {
		add(dg.payload)
	}
}

// FuzzDecap feeds Decap arbitrary datagrams. Besides never panicking, it
// must agree with referenceDecap, and whatever it accepts must be a
// subslice of the datagram that Encap, given the same VNI and MACs, turns
// back into the same bytes (up to the flag and reserved bits RFC 7348 tells
// receivers to ignore).
func FuzzDecap(f *testing.F) {
	addKernelSeeds(f, func(p []byte) { f.Add(p) })
	f.Add([]byte{})
	f.Add(make([]byte, encap.HeaderLen))

	decoders := []struct {
		mac net.HardwareAddr
		d   encap.Decoder
	}{
		{macA, mustDecoder(f, 1, macA)},
		{macB, mustDecoder(f, 1, macB)},
	}
	f.Fuzz(func(t *testing.T, frame []byte) {
		for _, dec := range decoders {
			ip, r := dec.d.Decap(frame)
			wantLen, wantR := referenceDecap(1, dec.mac, frame)
			if r != wantR {
				t.Fatalf("Decap for %s: %v, reference says %v\nframe %x", dec.mac, r, wantR, frame)
			}
			if r != encap.OK {
				if ip != nil {
					t.Fatalf("Decap dropped (%v) but returned %d bytes", r, len(ip))
				}
				continue
			}
			if len(ip) != wantLen || len(ip) == 0 || encap.HeaderLen+len(ip) > len(frame) || &ip[0] != &frame[encap.HeaderLen] {
				t.Fatalf("Decap returned %d bytes not at frame[22:22+%d] (frame %d bytes)", len(ip), wantLen, len(frame))
			}

			h := mustHeader(t, dec.d.VNI(), frame[14:20], dec.mac)
			again, r := h.Encap(withHeadroom(ip), encap.HeaderLen, len(ip))
			if r != encap.OK {
				t.Fatalf("Encap of a packet Decap accepted: %v", r)
			}
			orig := frame[:encap.HeaderLen+len(ip)]
			if again[0] != 0x08 || !bytes.Equal(again[1:4], []byte{0, 0, 0}) || again[7] != 0 {
				t.Fatalf("Encap's flags and reserved bytes %x, want 08 000000 .. 00", again[:8])
			}
			if !bytes.Equal(again[4:7], orig[4:7]) || !bytes.Equal(again[8:], orig[8:]) {
				t.Fatalf("re-encapsulated\n%x\ndiffers from\n%x", again, orig)
			}
		}
	})
}

// FuzzEncap calls Encap with arbitrary buffers, offsets and lengths. It must
// never panic, never write outside the headroom, refuse without writing
// anything, and produce frames that Decap either accepts with the same
// packet or refuses only for the IP checks Encap leaves to the receiver.
func FuzzEncap(f *testing.F) {
	addKernelSeeds(f, func(p []byte) {
		f.Add(p, encap.HeaderLen, len(p)-encap.HeaderLen)
		f.Add(p, encap.HeaderLen+1, len(p)-encap.HeaderLen-1)
	})
	f.Add([]byte{}, 0, 0)
	f.Add(make([]byte, 64), 22, 42)
	f.Add(make([]byte, 64), -1, 1<<62)

	h := mustHeader(f, 1, macA, macB)
	d := mustDecoder(f, 1, macB)
	f.Fuzz(func(t *testing.T, buf []byte, offset, n int) {
		before := bytes.Clone(buf)
		frame, r := h.Encap(buf, offset, n)
		if r != encap.OK {
			if frame != nil || !bytes.Equal(buf, before) {
				t.Fatalf("Encap refused (%v) but returned bytes or wrote into buf", r)
			}
			return
		}
		start := offset - encap.HeaderLen
		if start < 0 || n <= 0 || offset+n > len(buf) || len(frame) != encap.HeaderLen+n || &frame[0] != &buf[start] {
			t.Fatalf("Encap accepted offset %d n %d in %d bytes, returned %d bytes", offset, n, len(buf), len(frame))
		}
		if !bytes.Equal(buf[:start], before[:start]) || !bytes.Equal(buf[offset:], before[offset:]) {
			t.Fatal("Encap wrote outside the headroom")
		}
		ip, r := d.Decap(frame)
		switch r {
		case encap.OK:
			if &ip[0] != &buf[offset] || !bytes.Equal(ip, before[offset:offset+len(ip)]) {
				t.Fatal("Decap of Encap's frame returned something else than the packet")
			}
		case encap.BadInner:
			// Encap checks only the version and the fixed header size.
		default:
			t.Fatalf("Decap of Encap's frame: %v", r)
		}
	})
}
