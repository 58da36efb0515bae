package explain

import (
	"encoding/xml"
	"fmt"
	"io"
	"strings"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"

	"vxrouter/encap"
)

// The picture of a journey: above, the path across the two nodes, each
// device the packet passes a box; below, the frame on the wire as nested
// layers, each header with its byte offsets and the fields that matter.
// Plain SVG 1.1, written with fmt and escaped with encoding/xml; no
// scripts, no external fonts or images, so any browser or converter draws
// it the same.

// WriteSVG draws the journey as an SVG image, with the addresses of its
// options.
func (j *Journey) WriteSVG(w io.Writer) error {
	pic, err := j.picture()
	if err != nil {
		return fmt.Errorf("explain: picture: %w", err)
	}
	var s svgDoc
	pic.draw(&s)
	if _, err := io.WriteString(w, s.String()); err != nil {
		return fmt.Errorf("write svg: %w", err)
	}
	return nil
}

// station is one box on the path: a pod, a device, a program, a rule.
type station struct {
	name, detail string
	kind         string // css class: pod, dev, vxr, nat, host
}

// column is one machine on the path, its stations top to bottom; hops[i]
// labels the arrow between stations i and i+1. up makes the arrows point
// up (the receiving side).
type column struct {
	title    string
	sub      string
	stations []station
	hops     []string
	up       bool
}

// cell is one header (or the payload) of the frame on the wire.
type cell struct {
	name       string
	start, end int // byte offsets, end exclusive
	fields     []string
	hot        []bool // fields rewritten by NAT, drawn in red
	kind       string // css class: kernel, vxr, pod
	container  string // the title of the box this header opens ("" for the payload)
}

type picture struct {
	title, subtitle    string
	left, right        column
	cross, crossDetail string // the arrow between the machines
	network            string
	frameTitle         string
	cells              []cell
	legend             [][2]string // css class, meaning
}

// picture builds the drawing's model from the journey.
func (j *Journey) picture() (*picture, error) {
	o := j.o
	if j.out != nil {
		return j.outsidePicture()
	}
	pic := &picture{
		title:   fmt.Sprintf("Pod %s on node A to pod %s on node B", o.Src, o.Dst),
		network: fmt.Sprintf("node network %s", nodeNetwork(o.SrcNode)),
	}
	if j.svc != nil {
		pic.title = fmt.Sprintf("Pod %s to Service %s, backend %s:%d on node B", o.Src, o.Service, o.Dst, o.TargetPort)
	}
	pic.subtitle = fmt.Sprintf("overlay %s, VXLAN VNI %d over UDP port %d, underlay MTU %d, vxr0 MTU %d", o.Network, o.VNI, o.Port, o.MTU, j.tunMTU())
	inner := fmt.Sprintf("IP %s > %s", o.Src, o.Dst)
	a := column{title: "node A  " + o.SrcNode.String(), sub: fmt.Sprintf("subnet %s, VTEP MAC %s", o.SrcSubnet, o.SrcMAC)}
	a.stations = append(a.stations,
		station{"pod " + o.Src.String(), fmt.Sprintf("eth0, default via %s", j.srcGW), "pod"},
		station{"cni0 " + j.srcGW.String(), "the pods' bridge", "dev"},
	)
	if j.svc != nil {
		a.hops = append(a.hops, fmt.Sprintf("%s > %s", o.Src, o.Service))
		a.stations = append(a.stations, station{"nat PREROUTING: DNAT", fmt.Sprintf("%s -> %s:%d (kube-proxy)", o.Service, o.Dst, o.TargetPort), "nat"})
		a.hops = append(a.hops, "", "route "+o.Network.String()+" dev vxr0")
	} else {
		a.hops = append(a.hops, inner, "route "+o.Network.String()+" dev vxr0")
	}
	a.stations = append(a.stations,
		station{fmt.Sprintf("vxr0 (TUN) %s/32", o.SrcSubnet.Addr()), fmt.Sprintf("MTU %d: read gives the bare IP packet", j.tunMTU()), "dev"},
		station{"vxrouter", fmt.Sprintf("lease %s -> %s", o.DstSubnet, o.DstNode), "vxr"},
		station{"eth0 " + o.SrcNode.String(), "the kernel adds UDP, IPv4, Ethernet", "dev"},
	)
	a.hops = append(a.hops, fmt.Sprintf("%d-byte packet", len(j.frames.TUN)), fmt.Sprintf("+ %d bytes of VXLAN headers", encap.HeaderLen))
	b := column{title: "node B  " + o.DstNode.String(), sub: fmt.Sprintf("subnet %s, VTEP MAC %s", o.DstSubnet, o.DstMAC), up: true}
	b.stations = []station{
		{"pod " + o.Dst.String(), fmt.Sprintf("eth0, default via %s", j.dstGW), "pod"},
		{"cni0 " + j.dstGW.String(), "the pods' bridge", "dev"},
		{fmt.Sprintf("vxr0 (TUN) %s/32", o.DstSubnet.Addr()), "write hands the packet to the kernel", "dev"},
		{"vxrouter", fmt.Sprintf("checks sender, VNI %d, VTEP MAC; strips %d bytes", o.VNI, encap.HeaderLen), "vxr"},
		{"eth0 " + o.DstNode.String(), fmt.Sprintf("UDP socket on port %d", o.Port), "dev"},
	}
	b.hops = []string{fmt.Sprintf("TTL %d", podTTL-2), "routed to cni0", fmt.Sprintf("%d-byte packet", len(j.frames.Delivered)), fmt.Sprintf("%d-byte UDP payload", len(j.frames.Payload))}
	pic.left, pic.right = a, b
	udpSrc := o.Port
	pic.cross = fmt.Sprintf("UDP %s:%d > %s:%d, VXLAN VNI %d", o.SrcNode, udpSrc, o.DstNode, o.Port, o.VNI)
	pic.crossDetail = fmt.Sprintf("a %d-byte frame: the pod's %d bytes and %d of headers", len(j.frames.Wire), len(j.frames.TUN), len(j.frames.Wire)-len(j.frames.TUN))
	pic.frameTitle = fmt.Sprintf("The frame on the wire, %d bytes: each header nested in the one before, byte offsets from the frame's start", len(j.frames.Wire))
	cells, err := j.wireCells()
	if err != nil {
		return nil, err
	}
	pic.cells = cells
	pic.legend = [][2]string{
		{"kernel", "added by node A's kernel (UDP socket)"},
		{"vxr", "written by vxrouter (encap)"},
		{"pod", "the pod's packet"},
	}
	if j.svc != nil {
		pic.legend = append(pic.legend, [2]string{"changed", "rewritten by DNAT on node A"})
	}
	return pic, nil
}

// wireCells cuts the frame on the underlay into its headers.
func (j *Journey) wireCells() ([]cell, error) {
	o := j.o
	wire, err := decodeFrame(j.frames.Wire)
	if err != nil {
		return nil, err
	}
	eth := wire.Layer(layers.LayerTypeEthernet).(*layers.Ethernet)
	ip, ok := wire.Layer(layers.LayerTypeIPv4).(*layers.IPv4)
	if !ok {
		return nil, fmt.Errorf("no outer IPv4")
	}
	udp, ok := wire.Layer(layers.LayerTypeUDP).(*layers.UDP)
	if !ok {
		return nil, fmt.Errorf("no UDP")
	}
	n := len(j.frames.Wire)
	at := 0
	var cs []cell
	add := func(c cell, hdr int) {
		c.start, c.end = at, at+hdr
		at += hdr
		cs = append(cs, c)
	}
	add(cell{name: "outer Ethernet", kind: "kernel",
		fields:    []string{"dst " + eth.DstMAC.String(), "src " + eth.SrcMAC.String(), "type 0x0800 IPv4"},
		container: fmt.Sprintf("outer Ethernet frame, 0-%d (%d bytes)", n-1, n)}, 14)
	add(cell{name: "outer IPv4", kind: "kernel",
		fields:    []string{"src " + ip.SrcIP.String(), "dst " + ip.DstIP.String(), fmt.Sprintf("UDP, TTL %d", ip.TTL)},
		container: fmt.Sprintf("outer IPv4 packet, %d-%d (%d): what the MTU %d counts", at, n-1, n-at, o.MTU)}, 20)
	add(cell{name: "UDP", kind: "kernel",
		fields:    []string{fmt.Sprintf("src port %d", udp.SrcPort), fmt.Sprintf("dst port %d", udp.DstPort), fmt.Sprintf("length %d", udp.Length)},
		container: fmt.Sprintf("UDP datagram, %d-%d (%d)", at, n-1, n-at)}, 8)
	add(cell{name: "VXLAN", kind: "vxr",
		fields:    []string{"flags 0x08 (I)", fmt.Sprintf("VNI %d", o.VNI)},
		container: fmt.Sprintf("UDP payload, %d-%d (%d)", at, n-1, n-at)}, encap.VXLANLen)
	add(cell{name: "inner Ethernet", kind: "vxr",
		fields:    []string{"dst " + o.DstMAC.String(), "src " + o.SrcMAC.String(), "VTEP to VTEP"},
		container: fmt.Sprintf("inner Ethernet frame, %d-%d (%d)", at, n-1, n-at)}, encap.EthernetLen)
	pod, err := decodeIP(j.frames.TUN)
	if err != nil {
		return nil, err
	}
	cs = append(cs, j.podCells(pod, at, n, j.svc != nil)...)
	return cs, nil
}

// podCells are the pod's packet's headers and payload, starting at offset
// at of a frame of n bytes; dnat marks the destination rewritten.
func (j *Journey) podCells(pod gopacket.Packet, at, n int, dnat bool) []cell {
	var cs []cell
	l3 := pod.Layers()[0]
	hl := len(l3.LayerContents())
	ipc := cell{name: "inner " + j.ipv(), kind: "pod", start: at, end: at + hl,
		container: fmt.Sprintf("the pod's %s packet, %d-%d (%d)", j.ipv(), at, n-1, n-at)}
	switch ip := l3.(type) {
	case *layers.IPv4:
		ipc.fields = []string{"src " + ip.SrcIP.String(), "dst " + ip.DstIP.String(), fmt.Sprintf("TTL %d", ip.TTL)}
	case *layers.IPv6:
		ipc.fields = []string{"src " + ip.SrcIP.String(), "dst " + ip.DstIP.String(), fmt.Sprintf("hop limit %d", ip.HopLimit)}
	}
	if dnat {
		ipc.fields = []string{ipc.fields[0], ipc.fields[1], "(was " + j.o.Service.Addr().String() + ")", ipc.fields[2]}
		ipc.hot = []bool{false, true, true, false}
	}
	cs = append(cs, ipc)
	at += hl
	l4 := pod.Layers()[1]
	l4n := transportLen(l4)
	c := cell{name: l4Name(l4), kind: "pod", start: at, end: at + l4n,
		container: fmt.Sprintf("%s, %d-%d (%d)", l4Name(l4), at, n-1, n-at)}
	switch t := l4.(type) {
	case *layers.ICMPv4:
		c.fields = []string{icmpName(t.TypeCode.Type()), fmt.Sprintf("id %d seq %d", t.Id, t.Seq)}
	case *layers.ICMPv6:
		c.fields = []string{icmp6Name(t.TypeCode.Type())}
	case *layers.UDP:
		c.fields = []string{fmt.Sprintf("src port %d", t.SrcPort), fmt.Sprintf("dst port %d", t.DstPort)}
	case *layers.TCP:
		c.fields = []string{fmt.Sprintf("src port %d", t.SrcPort), fmt.Sprintf("dst port %d", t.DstPort), tcpFlags(t)}
	}
	if dnat && len(c.fields) > 1 {
		c.fields = append(c.fields[:2:2], append([]string{fmt.Sprintf("(was %d)", j.o.Service.Port())}, c.fields[2:]...)...)
		c.hot = []bool{false, true, true, false}
	}
	cs = append(cs, c)
	at += l4n
	if at < n {
		cs = append(cs, cell{name: "payload", kind: "pod", start: at, end: n, fields: []string{fmt.Sprintf("%d bytes", n-at)}})
	}
	return cs
}

// outsidePicture is the path from the pod out of node A's eth0 to the
// outside host, and the masqueraded frame on the node network.
func (j *Journey) outsidePicture() (*picture, error) {
	o, s := j.o, j.out
	pic := &picture{
		title:    fmt.Sprintf("Pod %s on node A to %s, outside the cluster", o.Src, o.Dst),
		subtitle: fmt.Sprintf("pod network %s; node A masquerades with flannel's --ip-masq rule; no tunnel", o.Network),
		network:  fmt.Sprintf("node network %s", nodeNetwork(o.SrcNode)),
	}
	m := s.rules[s.matched]
	pic.left = column{
		title: "node A  " + o.SrcNode.String(),
		sub:   "subnet " + o.SrcSubnet.String(),
		stations: []station{
			{"pod " + o.Src.String(), fmt.Sprintf("eth0, default via %s", j.srcGW), "pod"},
			{"cni0 " + j.srcGW.String(), "the pods' bridge", "dev"},
			{"routing: " + o.Dst.String() + " via eth0", "not in " + o.Network.String() + ": not vxr0", "dev"},
			{"nat POSTROUTING: MASQUERADE", strings.TrimSuffix(m.short(), " -j MASQUERADE"), "nat"},
			{"eth0 " + o.SrcNode.String(), "out to the node network", "dev"},
		},
		hops: []string{
			fmt.Sprintf("IP %s > %s", o.Src, o.Dst),
			"", fmt.Sprintf("TTL %d", podTTL-1),
			fmt.Sprintf("src -> %s, %s -> %d", o.SrcNode, map[bool]string{true: "id", false: "port"}[o.Proto == "icmp"], natPort),
		},
	}
	pic.right = column{
		title:    "outside host " + o.Dst.String(),
		sub:      "not a node",
		stations: []station{{"host " + o.Dst.String(), "knows no route to " + o.Network.String(), "host"}},
		up:       true,
	}
	pic.cross = fmt.Sprintf("IP %s > %s", o.SrcNode, o.Dst)
	pic.crossDetail = fmt.Sprintf("the answer comes back to %s; conntrack sends it on to %s", o.SrcNode, o.Src)
	n := len(s.wire)
	pic.frameTitle = fmt.Sprintf("The frame on node A's eth0, %d bytes, after MASQUERADE: byte offsets from the frame's start", n)
	wire, err := decodeFrame(s.wire)
	if err != nil {
		return nil, err
	}
	eth := wire.Layer(layers.LayerTypeEthernet).(*layers.Ethernet)
	cs := []cell{{name: "Ethernet", kind: "kernel", start: 0, end: 14,
		fields:    []string{"dst " + eth.DstMAC.String(), "src " + eth.SrcMAC.String(), "type 0x0800 IPv4"},
		container: fmt.Sprintf("Ethernet frame, 0-%d (%d bytes)", n-1, n)}}
	pkt, err := decodeIP(s.wire[14:])
	if err != nil {
		return nil, err
	}
	pcs := j.podCells(pkt, 14, n, false)
	// What MASQUERADE changed, the old value under the new.
	was := func(c *cell, i int, old string) {
		c.fields = append(c.fields[:i+1:i+1], append([]string{"(was " + old + ")"}, c.fields[i+1:]...)...)
		c.hot = make([]bool, len(c.fields))
		c.hot[i], c.hot[i+1] = true, true
	}
	was(&pcs[0], 0, o.Src.String())
	if o.Proto == "icmp" {
		pcs[1].fields = []string{pcs[1].fields[0], fmt.Sprintf("id %d", natPort), fmt.Sprintf("seq %d", icmpSeq)}
		was(&pcs[1], 1, fmt.Sprint(icmpID))
	} else {
		was(&pcs[1], 0, fmt.Sprint(appSrcPort))
	}
	pcs[0].name, pcs[0].container = j.ipv(), fmt.Sprintf("IPv4 packet, %d-%d (%d)", 14, n-1, n-14)
	pic.cells = append(cs, pcs...)
	pic.legend = [][2]string{
		{"kernel", "added by node A's kernel"},
		{"pod", "the pod's packet"},
		{"changed", "rewritten by MASQUERADE on node A"},
	}
	return pic, nil
}

// Drawing.

const (
	svgW       = 1280
	margin     = 40
	colW       = 440
	colHead    = 52 // a machine's title lines
	stationW   = 340
	stationH   = 44
	stationGap = 26
	titleRow   = 20 // a layer's title row in the frame
	charW10    = 67 // ten times the width of a character of the 11px monospace font
)

// svgDoc collects the elements of the image.
type svgDoc struct {
	b strings.Builder
}

func (s *svgDoc) String() string { return s.b.String() }

func esc(t string) string {
	var b strings.Builder
	xml.EscapeText(&b, []byte(t))
	return b.String()
}

func (s *svgDoc) rect(x, y, w, h int, class string) {
	fmt.Fprintf(&s.b, `<rect x="%d" y="%d" width="%d" height="%d" rx="6" class="%s"/>`+"\n", x, y, w, h, class)
}

func (s *svgDoc) text(x, y int, class, anchor, t string) {
	fmt.Fprintf(&s.b, `<text x="%d" y="%d" class="%s" text-anchor="%s">%s</text>`+"\n", x, y, class, anchor, esc(t))
}

func (s *svgDoc) arrow(x1, y1, x2, y2 int) {
	fmt.Fprintf(&s.b, `<line x1="%d" y1="%d" x2="%d" y2="%d" class="arrow" marker-end="url(#head)"/>`+"\n", x1, y1, x2, y2)
}

const svgStyle = `<style>
text { font-family: "DejaVu Sans", Verdana, sans-serif; font-size: 12px; fill: #222; }
.title { font-size: 20px; font-weight: bold; }
.sub { font-size: 13px; fill: #555; }
.col { font-size: 13px; font-weight: bold; }
.name { font-size: 13px; font-weight: bold; }
.detail, .hop, .field { font-family: "DejaVu Sans Mono", Menlo, monospace; font-size: 11px; }
.hop { fill: #444; }
.field.hot { fill: #c0392b; font-weight: bold; }
.cname { font-size: 12px; font-weight: bold; }
.ctitle { font-size: 11px; fill: #333; }
.machine { fill: #f7f7f7; stroke: #999; stroke-width: 1.2; }
.pod { fill: #dff0d8; stroke: #5a9a4a; }
.dev { fill: #ffffff; stroke: #777; }
.vxr { fill: #fde3c8; stroke: #d9822b; }
.nat { fill: #f9d6d5; stroke: #c0392b; }
.host { fill: #e8e3f3; stroke: #7a62a8; }
.kernel { fill: #dbe9f6; stroke: #4a7ab0; }
.box-kernel { fill: #eef4fb; stroke: #4a7ab0; }
.box-vxr { fill: #fef3e7; stroke: #d9822b; }
.box-pod { fill: #f0f8ed; stroke: #5a9a4a; }
.changed { fill: #f9d6d5; stroke: #c0392b; }
.arrow { stroke: #333; stroke-width: 1.6; }
.wire { stroke: #4a7ab0; stroke-width: 3; }
</style>`

// columnX is the left edge of the left or right machine.
func columnX(right bool) int {
	if right {
		return svgW - margin - colW
	}
	return margin
}

// cellLines is how many text lines the tallest header cell has.
func (pic *picture) cellLines() int {
	n := 0
	for _, c := range pic.cells {
		n = max(n, len(c.fields))
	}
	return n
}

func (pic *picture) draw(s *svgDoc) {
	nmax := max(len(pic.left.stations), len(pic.right.stations))
	pathTop := 84
	colH := colHead + nmax*(stationH+stationGap)
	bottom := pathTop + colH // both machines end here, so both eth0 are level
	wireY := bottom + 26
	frameTop := wireY + 76
	boxes := 0
	for _, c := range pic.cells {
		if c.container != "" {
			boxes++
		}
	}
	cellH := 40 + pic.cellLines()*14
	nc := len(pic.cells)
	cellsY := frameTop + 14 + boxes*titleRow + 6
	frameBottom := cellsY + cellH + 6*boxes + 4
	legendY := frameBottom + 34
	height := legendY + 24

	fmt.Fprintf(&s.b, `<?xml version="1.0" encoding="UTF-8"?>`+"\n")
	fmt.Fprintf(&s.b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d">`+"\n", svgW, height, svgW, height)
	fmt.Fprintf(&s.b, "<title>%s</title>\n", esc(pic.title))
	s.b.WriteString(`<defs><marker id="head" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="#333"/></marker></defs>` + "\n")
	s.b.WriteString(svgStyle + "\n")
	fmt.Fprintf(&s.b, `<rect x="0" y="0" width="%d" height="%d" fill="#ffffff"/>`+"\n", svgW, height)
	s.text(margin, 36, "title", "start", pic.title)
	s.text(margin, 58, "sub", "start", pic.subtitle)

	var ethX [2]int // the centre of each side's last station
	lastBottom := 0
	for i, c := range []column{pic.left, pic.right} {
		x := columnX(i == 1)
		h := colHead + len(c.stations)*(stationH+stationGap)
		top := bottom - h
		s.rect(x, top, colW, h, "machine")
		s.text(x+12, top+20, "col", "start", c.title)
		s.text(x+12, top+36, "detail", "start", c.sub)
		sx := x + (colW-stationW)/2
		for k, st := range c.stations {
			y := top + colHead + k*(stationH+stationGap)
			s.rect(sx, y, stationW, stationH, st.kind)
			s.text(sx+10, y+18, "name", "start", st.name)
			s.text(sx+10, y+35, "detail", "start", st.detail)
			if k+1 < len(c.stations) {
				cx := sx + stationW/2
				y1, y2 := y+stationH, y+stationH+stationGap
				if c.up {
					s.arrow(cx, y2, cx, y1)
				} else {
					s.arrow(cx, y1, cx, y2)
				}
				if k < len(c.hops) && c.hops[k] != "" {
					s.text(cx+8, y1+stationGap/2+4, "hop", "start", c.hops[k])
				}
			}
			lastBottom = y + stationH
		}
		ethX[i] = sx + stationW/2
	}
	// The node network, and the packet's way over it: down from node A's
	// eth0, along the wire, up into the other side's.
	fmt.Fprintf(&s.b, `<line x1="%d" y1="%d" x2="%d" y2="%d" class="wire"/>`+"\n", margin, wireY+8, svgW-margin, wireY+8)
	fmt.Fprintf(&s.b, `<polyline points="%d,%d %d,%d %d,%d %d,%d" class="arrow" fill="none" marker-end="url(#head)"/>`+"\n",
		ethX[0], lastBottom, ethX[0], wireY, ethX[1], wireY, ethX[1], lastBottom+2)
	s.text(margin, wireY+26, "sub", "start", pic.network)
	s.text(svgW/2, wireY+26, "hop", "middle", pic.cross)
	s.text(svgW/2, wireY+40, "hop", "middle", pic.crossDetail)

	// The frame: a box per layer, each inside the one before; the headers
	// side by side along the bottom.
	s.text(margin, frameTop, "col", "start", pic.frameTitle)
	top := frameTop + 14
	widths := make([]int, nc)
	total := 0
	for i, c := range pic.cells {
		w := 90
		for _, f := range append([]string{c.name, c.byteRange()}, c.fields...) {
			w = max(w, charW10*len(f)/10+18)
		}
		widths[i] = w
		total += w + 6
	}
	// Squeeze the cells if they are wider than the page.
	if avail := svgW - 2*margin - 6*boxes; total > avail {
		for i := range widths {
			widths[i] = widths[i] * avail / total
		}
	}
	x := margin
	right := svgW - margin
	k := 0 // boxes drawn
	for i, c := range pic.cells {
		if c.container != "" {
			y := top + k*titleRow
			s.rect(x, y, right-x-6*k, frameBottom-y-6*k, "box-"+c.kind)
			s.text(x+8, y+14, "ctitle", "start", c.container)
			k++
		}
		cx := x + 6
		s.rect(cx, cellsY, widths[i]-4, cellH, c.kind)
		s.text(cx+8, cellsY+17, "cname", "start", c.name)
		s.text(cx+8, cellsY+32, "field", "start", c.byteRange())
		for n, f := range c.fields {
			fc := "field"
			if n < len(c.hot) && c.hot[n] {
				fc = "field hot"
			}
			s.text(cx+8, cellsY+48+n*14, fc, "start", f)
		}
		x = cx + widths[i]
	}

	// The legend.
	lx := margin
	for _, l := range pic.legend {
		s.rect(lx, legendY-12, 16, 16, l[0])
		s.text(lx+22, legendY+1, "sub", "start", l[1])
		lx += 40 + 7*len(l[1])
	}
	s.b.WriteString("</svg>\n")
}

// byteRange is the cell's offsets, as the text shows them.
func (c cell) byteRange() string {
	return fmt.Sprintf("bytes %d-%d (%d)", c.start, c.end-1, c.end-c.start)
}
