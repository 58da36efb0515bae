package explain

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"net/netip"
	"strings"
	"text/tabwriter"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
)

// textWidth is where prose is wrapped; tables stay within 80 columns.
const textWidth = 78

// printer collects the text; WriteText writes it out in one go.
type printer struct {
	b bytes.Buffer
}

func (p *printer) line(format string, args ...any) {
	fmt.Fprintf(&p.b, format, args...)
	p.b.WriteByte('\n')
}

func (p *printer) blank() { p.b.WriteByte('\n') }

func (p *printer) heading(title string, underline byte) {
	p.line("%s", title)
	p.line("%s", strings.Repeat(string(underline), len(title)))
	p.blank()
}

// para prints one paragraph of prose, wrapped, and a blank line.
func (p *printer) para(format string, args ...any) {
	for _, l := range wrap(fmt.Sprintf(format, args...), textWidth) {
		p.line("%s", l)
	}
	p.blank()
}

// code prints lines as a block indented by four spaces, and a blank line.
func (p *printer) code(lines ...string) {
	for _, l := range lines {
		p.line("    %s", l)
	}
	p.blank()
}

// table prints rows of tab-separated cells as aligned columns, indented by
// four spaces, and a blank line.
func (p *printer) table(rows ...string) {
	tw := tabwriter.NewWriter(&p.b, 0, 0, 3, ' ', 0)
	for _, r := range rows {
		fmt.Fprintf(tw, "    %s\n", r)
	}
	tw.Flush()
	// tabwriter pads every cell but the last; trim what it leaves behind
	// on rows whose last cells are empty.
	p.b = *bytes.NewBuffer(trimLines(p.b.Bytes()))
	p.blank()
}

func trimLines(b []byte) []byte {
	lines := bytes.Split(b, []byte("\n"))
	for i, l := range lines {
		lines[i] = bytes.TrimRight(l, " ")
	}
	return bytes.Join(lines, []byte("\n"))
}

// wrap breaks s into lines of at most width characters at spaces.
func wrap(s string, width int) []string {
	var lines []string
	var cur strings.Builder
	for _, w := range strings.Fields(s) {
		if cur.Len() > 0 && cur.Len()+1+len(w) > width {
			lines = append(lines, cur.String())
			cur.Reset()
		}
		if cur.Len() > 0 {
			cur.WriteByte(' ')
		}
		cur.WriteString(w)
	}
	if cur.Len() > 0 {
		lines = append(lines, cur.String())
	}
	return lines
}

// A field is one header field: where it is, its bytes, its name and what
// its value means.
type field struct {
	off   int
	bytes []byte
	name  string
	value string
}

// A block is the fields of one header.
type block struct {
	title  string
	fields []field
}

// Columns of a field table: "  off  bytes  field  value".
const (
	bytesPerRow = 6 // a MAC address per row
	bytesCol    = bytesPerRow*3 - 1
	nameCol     = 16
	valueCol    = 80 - (2 + 4 + 2 + bytesCol + 2 + nameCol + 2)
)

// fields prints header fields as a table: offset, bytes (six to a row),
// name and value, the value wrapped in its column.
func (p *printer) fields(blocks ...block) {
	p.line("  %4s  %-*s  %-*s  %s", "off", bytesCol, "bytes", nameCol, "field", "value")
	for _, b := range blocks {
		p.line("  %s", b.title)
		for _, f := range b.fields {
			var hexRows []string
			for i := 0; i < len(f.bytes); i += bytesPerRow {
				hexRows = append(hexRows, hexBytes(f.bytes[i:min(i+bytesPerRow, len(f.bytes))]))
			}
			valRows := wrap(f.value, valueCol)
			for i := 0; i < max(len(hexRows), len(valRows), 1); i++ {
				off, name, hx, val := "", "", "", ""
				if i == 0 {
					off, name = fmt.Sprint(f.off), f.name
				}
				if i < len(hexRows) {
					hx = hexRows[i]
				}
				if i < len(valRows) {
					val = valRows[i]
				}
				p.line("%s", strings.TrimRight(fmt.Sprintf("  %4s  %-*s  %-*s  %s", off, bytesCol, hx, nameCol, name, val), " "))
			}
		}
	}
	p.blank()
}

// A span is the bytes of one layer in a buffer.
type span struct {
	name       string
	start, end int
	cut        bool // show at most dumpMax bytes
}

// dumpMax is how many bytes of a payload a hex dump shows.
const dumpMax = 32

// dump prints buf as a hex dump with one block of lines per layer, each
// labelled with its byte range. Payloads longer than dumpMax are cut short.
func (p *printer) dump(buf []byte, spans []span) {
	for _, s := range spans {
		b := buf[s.start:s.end]
		rng := fmt.Sprintf("%d-%d", s.start, s.end-1)
		cut := 0
		if (s.cut || s.name == "payload") && len(b) > dumpMax {
			cut = len(b) - dumpMax
			b = b[:dumpMax]
		}
		for i := 0; i < len(b); i += 16 {
			row := b[i:min(i+16, len(b))]
			hx := hexBytes(row[:min(8, len(row))])
			if len(row) > 8 {
				hx += "  " + hexBytes(row[8:])
			}
			if i == 0 {
				p.line("  %9s  %-14s  %s", rng, s.name, hx)
			} else {
				p.line("  %9s  %-14s  %s", "", "", hx)
			}
		}
		if cut > 0 {
			p.line("  %9s  %-14s  ... and %d more bytes", "", "", cut)
		}
	}
	p.blank()
}

func hexBytes(b []byte) string {
	var s strings.Builder
	for i, c := range b {
		if i > 0 {
			s.WriteByte(' ')
		}
		fmt.Fprintf(&s, "%02x", c)
	}
	return s.String()
}

// Field tables of each header, read from the decoded layer; base is the
// layer's offset in the buffer the table describes.

func ethernetBlock(title string, e *layers.Ethernet, base int, dstNote, srcNote string) block {
	c := e.Contents
	return block{title, []field{
		{base, c[0:6], "destination", e.DstMAC.String() + ", " + dstNote},
		{base + 6, c[6:12], "source", e.SrcMAC.String() + ", " + srcNote},
		{base + 12, c[12:14], "EtherType", etherTypeName(e.EthernetType)},
	}}
}

func etherTypeName(t layers.EthernetType) string {
	switch t {
	case layers.EthernetTypeIPv4:
		return "0x0800, IPv4"
	case layers.EthernetTypeIPv6:
		return "0x86dd, IPv6"
	}
	return fmt.Sprintf("0x%04x", uint16(t))
}

func ipv4Block(title string, ip *layers.IPv4, base int, notes map[string]string) block {
	c := ip.Contents
	flags := "none"
	switch {
	case ip.Flags&layers.IPv4DontFragment != 0:
		flags = "DF (don't fragment)"
	case ip.Flags&layers.IPv4MoreFragments != 0:
		flags = "MF (more fragments)"
	}
	sum := "wrong"
	if checksum(c) == 0 {
		sum = "correct"
	}
	fs := []field{
		{base, c[0:1], "version, IHL", fmt.Sprintf("%d, %d x 4 = %d bytes", ip.Version, ip.IHL, int(ip.IHL)*4)},
		{base + 1, c[1:2], "DSCP, ECN", fmt.Sprintf("%d, %d", ip.TOS>>2, ip.TOS&3)},
		{base + 2, c[2:4], "total length", fmt.Sprint(ip.Length)},
		{base + 4, c[4:6], "identification", fmt.Sprintf("0x%04x", ip.Id)},
		{base + 6, c[6:8], "flags, offset", fmt.Sprintf("%s, %d", flags, ip.FragOffset)},
		{base + 8, c[8:9], "TTL", fmt.Sprint(ip.TTL)},
		{base + 9, c[9:10], "protocol", fmt.Sprintf("%d, %s", uint8(ip.Protocol), protoName(ip.Protocol))},
		{base + 10, c[10:12], "header checksum", fmt.Sprintf("0x%04x, %s", ip.Checksum, sum)},
		{base + 12, c[12:16], "source", ip.SrcIP.String()},
		{base + 16, c[16:20], "destination", ip.DstIP.String()},
	}
	return block{title, annotate(fs, notes)}
}

func ipv6Block(title string, ip *layers.IPv6, base int, notes map[string]string) block {
	c := ip.Contents
	fs := []field{
		{base, c[0:4], "version, class", fmt.Sprintf("%d, traffic class %d, flow label %d", ip.Version, ip.TrafficClass, ip.FlowLabel)},
		{base + 4, c[4:6], "payload length", fmt.Sprint(ip.Length)},
		{base + 6, c[6:7], "next header", fmt.Sprintf("%d, %s", uint8(ip.NextHeader), protoName(ip.NextHeader))},
		{base + 7, c[7:8], "hop limit", fmt.Sprint(ip.HopLimit)},
		{base + 8, c[8:24], "source", ip.SrcIP.String()},
		{base + 24, c[24:40], "destination", ip.DstIP.String()},
	}
	return block{title, annotate(fs, notes)}
}

func protoName(p layers.IPProtocol) string {
	switch p {
	case layers.IPProtocolICMPv4:
		return "ICMP"
	case layers.IPProtocolICMPv6:
		return "ICMPv6"
	case layers.IPProtocolUDP:
		return "UDP"
	case layers.IPProtocolTCP:
		return "TCP"
	}
	return p.String()
}

// transportBlock describes the layers after the IP header of a decoded
// packet; base is the offset of the first of them. src and dst are the IP
// addresses the checksums cover.
func transportBlock(pkt gopacket.Packet, base int, src, dst netip.Addr) (block, error) {
	var b block
	switch l := pkt.Layers()[1].(type) {
	case *layers.ICMPv4:
		c := l.Contents
		b = block{fmt.Sprintf("ICMP header, %d bytes", len(c)), []field{
			{base, c[0:2], "type, code", fmt.Sprintf("%d, %d: %s", l.TypeCode.Type(), l.TypeCode.Code(), icmpName(l.TypeCode.Type()))},
			{base + 2, c[2:4], "checksum", fmt.Sprintf("0x%04x, %s", l.Checksum, correct(checksum(append(append([]byte{}, c...), l.Payload...)) == 0))},
			{base + 4, c[4:6], "identifier", fmt.Sprint(l.Id)},
			{base + 6, c[6:8], "sequence", fmt.Sprint(l.Seq)},
		}}
	case *layers.ICMPv6:
		// gopacket 1.1.19's ICMPv6Echo keeps no contents or payload, so the
		// echo message is read from the ICMPv6 layer's payload here.
		c, e := l.Contents, l.Payload
		if len(e) < 4 {
			return b, fmt.Errorf("decode ICMPv6: echo message truncated")
		}
		sum := l4Checksum(src, dst, uint8(layers.IPProtocolICMPv6), append(append([]byte{}, c...), l.Payload...))
		b = block{"ICMPv6 header, 8 bytes", []field{
			{base, c[0:2], "type, code", fmt.Sprintf("%d, %d: %s", l.TypeCode.Type(), l.TypeCode.Code(), icmp6Name(l.TypeCode.Type()))},
			{base + 2, c[2:4], "checksum", fmt.Sprintf("0x%04x, %s", l.Checksum, correct(sum == 0))},
			{base + 4, e[0:2], "identifier", fmt.Sprint(binary.BigEndian.Uint16(e[0:2]))},
			{base + 6, e[2:4], "sequence", fmt.Sprint(binary.BigEndian.Uint16(e[2:4]))},
		}}
	case *layers.UDP:
		c := l.Contents
		sum := l4Checksum(src, dst, uint8(layers.IPProtocolUDP), append(append([]byte{}, c...), l.Payload...))
		b = block{fmt.Sprintf("UDP header, %d bytes", len(c)), []field{
			{base, c[0:2], "source port", fmt.Sprint(uint16(l.SrcPort))},
			{base + 2, c[2:4], "destination port", fmt.Sprint(uint16(l.DstPort))},
			{base + 4, c[4:6], "length", fmt.Sprintf("%d = %d + %d of data", l.Length, len(c), len(l.Payload))},
			{base + 6, c[6:8], "checksum", fmt.Sprintf("0x%04x, %s", l.Checksum, correct(sum == 0))},
		}}
	case *layers.TCP:
		c := l.Contents
		sum := l4Checksum(src, dst, uint8(layers.IPProtocolTCP), append(append([]byte{}, c...), l.Payload...))
		b = block{fmt.Sprintf("TCP header, %d bytes", len(c)), []field{
			{base, c[0:2], "source port", fmt.Sprint(uint16(l.SrcPort))},
			{base + 2, c[2:4], "destination port", fmt.Sprint(uint16(l.DstPort))},
			{base + 4, c[4:8], "sequence", fmt.Sprint(l.Seq)},
			{base + 8, c[8:12], "acknowledgement", fmt.Sprint(l.Ack)},
			{base + 12, c[12:14], "offset, flags", fmt.Sprintf("%d x 4 = %d bytes, %s", l.DataOffset, int(l.DataOffset)*4, tcpFlags(l))},
			{base + 14, c[14:16], "window", fmt.Sprint(l.Window)},
			{base + 16, c[16:18], "checksum", fmt.Sprintf("0x%04x, %s", l.Checksum, correct(sum == 0))},
			{base + 18, c[18:20], "urgent pointer", fmt.Sprint(l.Urgent)},
		}}
		if len(c) > 20 {
			b.fields = append(b.fields, field{base + 20, c[20:], "options", tcpOptions(l)})
		}
	default:
		return b, fmt.Errorf("decode: unexpected layer %s after IP", l.LayerType())
	}
	return b, nil
}

// payloadField describes the application's bytes, if any.
func payloadField(d []byte, off int) []field {
	if len(d) == 0 {
		return nil
	}
	text := string(d[:min(len(d), 16)])
	if len(d) > 16 {
		text += "..."
	}
	return []field{{off, d[:min(len(d), bytesPerRow)], "payload", fmt.Sprintf("%d bytes: %q", len(d), text)}}
}

func icmpName(t uint8) string {
	if t == layers.ICMPv4TypeEchoRequest {
		return "echo request"
	}
	return "type " + fmt.Sprint(t)
}

func icmp6Name(t uint8) string {
	if t == layers.ICMPv6TypeEchoRequest {
		return "echo request"
	}
	return "type " + fmt.Sprint(t)
}

func tcpFlags(t *layers.TCP) string {
	var f []string
	for _, x := range []struct {
		on   bool
		name string
	}{{t.SYN, "SYN"}, {t.FIN, "FIN"}, {t.RST, "RST"}, {t.PSH, "PSH"}, {t.ACK, "ACK"}, {t.URG, "URG"}} {
		if x.on {
			f = append(f, x.name)
		}
	}
	return strings.Join(f, " ")
}

// tcpOptions names a segment's options; a SYN's MSS is the one that
// matters here.
func tcpOptions(t *layers.TCP) string {
	var f []string
	for _, o := range t.Options {
		switch {
		case o.OptionType == layers.TCPOptionKindMSS && len(o.OptionData) == 2:
			f = append(f, fmt.Sprintf("MSS %d", binary.BigEndian.Uint16(o.OptionData)))
		default:
			f = append(f, o.OptionType.String())
		}
	}
	return strings.Join(f, ", ")
}

func correct(ok bool) string {
	if ok {
		return "correct"
	}
	return "WRONG"
}

// annotate appends notes to the values of the fields they name.
func annotate(fs []field, notes map[string]string) []field {
	for i := range fs {
		n, ok := notes[fs[i].name]
		switch {
		case !ok:
		case strings.HasPrefix(n, "("):
			fs[i].value += " " + n
		default:
			fs[i].value += ", " + n
		}
	}
	return fs
}

// checksum is the Internet checksum (RFC 1071) of b: 0 when b holds its
// own correct checksum.
func checksum(b []byte) uint16 {
	var sum uint32
	for i := 0; i+1 < len(b); i += 2 {
		sum += uint32(binary.BigEndian.Uint16(b[i:]))
	}
	if len(b)%2 == 1 {
		sum += uint32(b[len(b)-1]) << 8
	}
	for sum > 0xffff {
		sum = sum>>16 + sum&0xffff
	}
	return ^uint16(sum)
}

// l4Checksum is the checksum of an ICMPv6, UDP or TCP segment with the
// pseudo-header of its IP addresses; 0 when the segment's is correct.
func l4Checksum(src, dst netip.Addr, proto uint8, seg []byte) uint16 {
	var pseudo []byte
	pseudo = append(pseudo, src.AsSlice()...)
	pseudo = append(pseudo, dst.AsSlice()...)
	if src.Is4() {
		pseudo = append(pseudo, 0, proto, byte(len(seg)>>8), byte(len(seg)))
	} else {
		pseudo = binary.BigEndian.AppendUint32(pseudo, uint32(len(seg)))
		pseudo = append(pseudo, 0, 0, 0, proto)
	}
	return checksum(append(pseudo, seg...))
}

// decodeError is the error of a decoded packet, if any, but for one in
// what follows a transport header: gopacket guesses an application's
// protocol from the port (DNS on 53), and the journey's payload is text,
// not that.
func decodeError(pkt gopacket.Packet) error {
	e := pkt.ErrorLayer()
	if e == nil || pkt.TransportLayer() != nil {
		return nil
	}
	return e.Error()
}
