package encap

import (
	"fmt"
	"net"
	"strconv"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
)

const (
	EthernetLen = 14
	VXLANLen    = 8
	// HeaderLen is what goes in front of an inner IP packet in the UDP
	// payload: the VXLAN header and the inner Ethernet header.
	HeaderLen = VXLANLen + EthernetLen

	// OverheadIPv4 is what an IPv4 underlay adds to an inner IP packet,
	// counted against the underlay's MTU (which excludes the outer
	// Ethernet header): IPv4 20, UDP 8, VXLAN 8, inner Ethernet 14. So a
	// 1500-byte underlay leaves 1450 for the overlay, as with flannel.
	OverheadIPv4 = 20 + 8 + HeaderLen
	// OverheadIPv6 is the same on an IPv6 underlay (IPv6 header 40).
	OverheadIPv6 = 40 + 8 + HeaderLen

	// DefaultPort is the Linux kernel's (and flannel's) VXLAN port; IANA's
	// is 4789.
	DefaultPort = 8472
	// DefaultVNI is flannel's default VXLAN network identifier.
	DefaultVNI = 1
)

// maxVNI is the largest VNI the 24-bit field holds.
const maxVNI = 1<<24 - 1

// Offsets into the 22-byte header.
const (
	offFlags     = 0
	offVNI       = 4
	offDstMAC    = VXLANLen
	offEtherType = VXLANLen + 12
)

const (
	flagI = 0x08 // RFC 7348: the VNI field is valid

	ipv4HeaderLen = 20
	ipv6HeaderLen = 40
)

// Reason says why a packet was dropped. OK means not dropped. Reasons are
// small integers so that a caller can count drops in an array indexed by
// Reason, NumReasons long.
type Reason uint8

const (
	OK               Reason = iota
	Short                   // datagram shorter than the VXLAN+Ethernet header, or empty IP packet
	NoIFlag                 // VXLAN I flag (0x08) clear
	ForeignVNI              // VNI not ours
	ForeignMAC              // inner destination MAC not our VTEP MAC
	UnknownEtherType        // inner ethertype not IPv4/IPv6, or IP version nibble unknown (on encap)
	BadInner                // inner IP header broken: version/ethertype mismatch, IHL<5, total length > data, too short
	NumReasons
)

var reasonNames = [NumReasons]string{
	OK:               "ok",
	Short:            "short",
	NoIFlag:          "no-i-flag",
	ForeignVNI:       "foreign-vni",
	ForeignMAC:       "foreign-mac",
	UnknownEtherType: "unknown-ethertype",
	BadInner:         "bad-inner",
}

// String returns the reason's name as it appears in metrics labels.
func (r Reason) String() string {
	if r < NumReasons {
		return reasonNames[r]
	}
	return "reason(" + strconv.Itoa(int(r)) + ")"
}

// Header is the 22-byte template for one peer: the VXLAN header (flags 0x08,
// VNI) then the inner Ethernet header (destination = the peer's VTEP MAC,
// source = our VTEP MAC, ethertype IPv4; Encap rewrites the ethertype for
// IPv6 packets).
type Header [HeaderLen]byte

// NewHeader builds the template for packets from the VTEP with MAC src to
// the VTEP with MAC dst in network vni. It runs once per peer, so it uses
// gopacket's serializers rather than hand-written byte offsets: the layout
// then comes from a second, independent implementation of the format.
func NewHeader(vni uint32, src, dst net.HardwareAddr) (Header, error) {
	var h Header
	if vni > maxVNI {
		return h, fmt.Errorf("new vxlan header: vni %d does not fit in 24 bits", vni)
	}
	if len(src) != 6 {
		return h, fmt.Errorf("new vxlan header: source mac %q is not 6 bytes", src)
	}
	if len(dst) != 6 {
		return h, fmt.Errorf("new vxlan header: destination mac %q is not 6 bytes", dst)
	}
	buf := gopacket.NewSerializeBuffer()
	err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{},
		&layers.VXLAN{ValidIDFlag: true, VNI: vni},
		&layers.Ethernet{SrcMAC: src, DstMAC: dst, EthernetType: layers.EthernetTypeIPv4},
	)
	if err != nil {
		return h, fmt.Errorf("new vxlan header: serialize: %w", err)
	}
	// gopacket pads an Ethernet frame to the 60-byte minimum; the padding
	// is not part of the header (the inner IP packet goes there).
	b := buf.Bytes()
	if len(b) < HeaderLen {
		return h, fmt.Errorf("new vxlan header: serialized %d bytes, want at least %d", len(b), HeaderLen)
	}
	copy(h[:], b)
	return h, nil
}

// Encap writes the header into buf[offset-HeaderLen:offset], in front of the
// IP packet buf[offset:offset+n], sets the inner ethertype from the IP
// version nibble (4 -> 0x0800, 6 -> 0x86DD), and returns
// buf[offset-HeaderLen:offset+n], the UDP payload to send. The packet is not
// copied and nothing is allocated.
//
// A packet that cannot be sent gets a Reason and a nil slice: Short when n is
// 0 or the arguments do not describe a packet with HeaderLen bytes of
// headroom inside buf (offset < HeaderLen, offset+n > len(buf)),
// UnknownEtherType when the version is neither 4 nor 6, BadInner when n is
// smaller than the fixed IPv4 (20) or IPv6 (40) header.
func (h *Header) Encap(buf []byte, offset, n int) ([]byte, Reason) {
	// Written so that no sum can overflow, whatever the caller passes.
	if n <= 0 || offset < HeaderLen || offset > len(buf) || n > len(buf)-offset {
		return nil, Short
	}
	var et0, et1 byte
	switch buf[offset] >> 4 {
	case 4:
		if n < ipv4HeaderLen {
			return nil, BadInner
		}
		et0, et1 = 0x08, 0x00
	case 6:
		if n < ipv6HeaderLen {
			return nil, BadInner
		}
		et0, et1 = 0x86, 0xdd
	default:
		return nil, UnknownEtherType
	}
	start := offset - HeaderLen
	// An array assignment compiles to a few wide moves; copy would be a
	// call to memmove for 22 bytes.
	*(*Header)(buf[start:offset]) = *h
	buf[offset-2] = et0
	buf[offset-1] = et1
	return buf[start : offset+n], OK
}

// Decoder validates datagrams for one local VTEP: the VNI it serves and its
// VTEP MAC.
type Decoder struct {
	vni uint32
	mac [6]byte
}

// NewDecoder returns a Decoder for the VTEP with MAC local in network vni.
func NewDecoder(vni uint32, local net.HardwareAddr) (Decoder, error) {
	if vni > maxVNI {
		return Decoder{}, fmt.Errorf("new vxlan decoder: vni %d does not fit in 24 bits", vni)
	}
	if len(local) != 6 {
		return Decoder{}, fmt.Errorf("new vxlan decoder: local mac %q is not 6 bytes", local)
	}
	return Decoder{vni: vni, mac: [6]byte(local)}, nil
}

// VNI returns the network identifier the Decoder accepts.
func (d *Decoder) VNI() uint32 { return d.vni }

// Decap checks a received UDP payload and returns the inner IP packet as the
// subslice frame[HeaderLen:HeaderLen+ipLen], where ipLen comes from the IP
// header, so Ethernet padding after the packet is trimmed. It checks, in this
// order: the length (Short), the I flag (NoIFlag), the VNI (ForeignVNI), the
// inner destination MAC against the local VTEP MAC (ForeignMAC), the
// ethertype (UnknownEtherType), and that the inner IP header is sane
// (BadInner): its version matches the ethertype, an IPv4 header has IHL >= 5
// and a total length between IHL*4 and the bytes present, an IPv6 header is
// complete and its payload length fits in the bytes present.
//
// The reserved bits of the VXLAN header and the inner source MAC are not
// checked: RFC 7348 says receivers ignore the former (Linux is stricter and
// drops them, which TestKernelLive saw), and the latter is the sender's
// business (the caller checks the sender against its peers).
//
// Decap reads bytes directly and does not allocate; it must stay cheap
// because it runs for every datagram, including hostile ones.
func (d *Decoder) Decap(frame []byte) ([]byte, Reason) {
	if len(frame) <= HeaderLen {
		return nil, Short
	}
	if frame[offFlags]&flagI == 0 {
		return nil, NoIFlag
	}
	vni := uint32(frame[offVNI])<<16 | uint32(frame[offVNI+1])<<8 | uint32(frame[offVNI+2])
	if vni != d.vni {
		return nil, ForeignVNI
	}
	if [6]byte(frame[offDstMAC:offDstMAC+6]) != d.mac {
		return nil, ForeignMAC
	}
	ip := frame[HeaderLen:]
	var ipLen int
	switch uint16(frame[offEtherType])<<8 | uint16(frame[offEtherType+1]) {
	case 0x0800:
		if len(ip) < ipv4HeaderLen || ip[0]>>4 != 4 {
			return nil, BadInner
		}
		ihl := int(ip[0]&0x0f) * 4
		ipLen = int(ip[2])<<8 | int(ip[3])
		if ihl < ipv4HeaderLen || ipLen < ihl || ipLen > len(ip) {
			return nil, BadInner
		}
	case 0x86dd:
		if len(ip) < ipv6HeaderLen || ip[0]>>4 != 6 {
			return nil, BadInner
		}
		ipLen = ipv6HeaderLen + (int(ip[4])<<8 | int(ip[5]))
		if ipLen > len(ip) {
			return nil, BadInner
		}
	default:
		return nil, UnknownEtherType
	}
	return ip[:ipLen], OK
}
