package encap_test

import (
	"bytes"
	"net"
	"testing"

	"vxrouter/encap"
)

// TestKernelCapture checks Encap and Decap byte for byte against datagrams
// the Linux kernel's vxlan driver sent in a flannel-like setup
// (testdata/README.md): an IPv4 and an IPv6 echo request from A to B and
// B's replies.
func TestKernelCapture(t *testing.T) {
	dgrams := readKernelPcap(t)
	if len(dgrams) != 4 {
		t.Fatalf("capture holds %d datagrams, want 4 (v4 request, v4 reply, v6 request, v6 reply)", len(dgrams))
	}
	macOf := map[string]net.HardwareAddr{underlayA.String(): macA, underlayB.String(): macB}
	names := []string{"ipv4-request-A-to-B", "ipv4-reply-B-to-A", "ipv6-request-A-to-B", "ipv6-reply-B-to-A"}
	wantVersion := []byte{4, 4, 6, 6}
	for i, dg := range dgrams {
		t.Run(names[i], func(t *testing.T) {
			src, dst := macOf[dg.src.String()], macOf[dg.dst.String()]
			if src == nil || dst == nil {
				t.Fatalf("datagram %s -> %s is not between the two nodes", dg.src, dg.dst)
			}
			if len(dg.payload) <= encap.HeaderLen {
				t.Fatalf("payload is %d bytes, no room for an inner packet", len(dg.payload))
			}
			inner := dg.payload[encap.HeaderLen:]
			if v := inner[0] >> 4; v != wantVersion[i] {
				t.Fatalf("inner IP version %d, want %d (capture order changed?)", v, wantVersion[i])
			}

			h := mustHeader(t, 1, src, dst)
			buf := withHeadroom(inner)
			got, r := h.Encap(buf, encap.HeaderLen, len(inner))
			if r != encap.OK {
				t.Fatalf("Encap: %v", r)
			}
			if !bytes.Equal(got, dg.payload) {
				t.Errorf("Encap differs from the kernel:\n got %x\nwant %x", got[:encap.HeaderLen], dg.payload[:encap.HeaderLen])
			}

			d := mustDecoder(t, 1, dst)
			ip, r := d.Decap(dg.payload)
			if r != encap.OK {
				t.Fatalf("Decap of the kernel's datagram: %v", r)
			}
			if !bytes.Equal(ip, inner) {
				t.Errorf("Decap returned %d bytes, want the %d-byte inner packet", len(ip), len(inner))
			}
			if &ip[0] != &dg.payload[encap.HeaderLen] {
				t.Error("Decap copied the packet instead of returning a subslice")
			}

			// The sender's own decoder must refuse it: the MAC is the peer's.
			wrong := mustDecoder(t, 1, src)
			if _, r := wrong.Decap(dg.payload); r != encap.ForeignMAC {
				t.Errorf("Decap with the sender's MAC: %v, want %v", r, encap.ForeignMAC)
			}
		})
	}
}
