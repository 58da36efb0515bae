package explain

import (
	"bytes"
	"encoding/xml"
	"io"
	"net/netip"
	"strings"
	"testing"
)

// svgTexts parses an SVG document with encoding/xml, failing the test if
// it is not well-formed XML with an <svg> root, and returns the content of
// every <text> element.
func svgTexts(t *testing.T, doc []byte) []string {
	t.Helper()
	d := xml.NewDecoder(bytes.NewReader(doc))
	var texts []string
	var in bool
	var cur strings.Builder
	root := ""
	for {
		tok, err := d.Token()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("not well-formed XML: %v", err)
		}
		switch e := tok.(type) {
		case xml.StartElement:
			if root == "" {
				root = e.Name.Local
				if e.Name.Space != "http://www.w3.org/2000/svg" {
					t.Errorf("root element in namespace %q, want SVG's", e.Name.Space)
				}
			}
			if e.Name.Local == "text" {
				in = true
				cur.Reset()
			}
		case xml.CharData:
			if in {
				cur.Write(e)
			}
		case xml.EndElement:
			if e.Name.Local == "text" {
				in = false
				texts = append(texts, cur.String())
			}
		}
	}
	if root != "svg" {
		t.Fatalf("root element %q, want svg", root)
	}
	return texts
}

// TestSVG draws each kind of journey and checks the picture: well-formed
// SVG, the same every time, and the labels a reader needs, with this
// journey's addresses: the stations of the path, every layer of the frame
// with its byte offsets, what NAT rewrote.
func TestSVG(t *testing.T) {
	for _, c := range []struct {
		name string
		opts func(*Options)
		want []string
	}{
		{"default", func(*Options) {}, []string{
			"Pod 172.16.99.8 on node A to pod 172.16.57.15 on node B",
			"node A  10.0.0.1", "node B  10.0.0.2", "subnet 172.16.99.0/24, VTEP MAC b6:bf:4c:81:cf:3b",
			"pod 172.16.99.8", "cni0 172.16.99.1", "vxr0 (TUN) 172.16.99.0/32", "vxrouter", "eth0 10.0.0.1",
			"pod 172.16.57.15", "eth0 10.0.0.2", "lease 172.16.57.0/24 -> 10.0.0.2",
			"UDP 10.0.0.1:8472 > 10.0.0.2:8472, VXLAN VNI 1", "node network 10.0.0.0/24",
			"outer Ethernet", "bytes 0-13 (14)", "outer IPv4", "bytes 14-33 (20)", "UDP", "bytes 34-41 (8)",
			"VXLAN", "bytes 42-49 (8)", "VNI 1", "inner Ethernet", "bytes 50-63 (14)", "dst d6:51:2e:80:5c:69",
			"inner IPv4", "bytes 64-83 (20)", "src 172.16.99.8", "dst 172.16.57.15", "ICMP", "bytes 84-91 (8)",
			"payload", "bytes 92-147 (56)", "outer Ethernet frame, 0-147 (148 bytes)",
			"the pod's IPv4 packet, 64-147 (84)",
		}},
		{"service", func(o *Options) { o.Service = netip.MustParseAddrPort("192.168.3.10:80"); o.Proto = "tcp" }, []string{
			"Pod 172.16.99.8 to Service 192.168.3.10:80, backend 172.16.57.15:8080 on node B",
			"nat PREROUTING: DNAT", "192.168.3.10:80 -> 172.16.57.15:8080 (kube-proxy)",
			"dst 172.16.57.15", "(was 192.168.3.10)", "dst port 8080", "(was 80)", "SYN",
			"rewritten by DNAT on node A",
		}},
		{"outside", func(o *Options) { o.ToOutside = true; o.Dst = DefaultOutside }, []string{
			"Pod 172.16.99.8 on node A to 10.0.0.100, outside the cluster",
			"nat POSTROUTING: MASQUERADE", "host 10.0.0.100", "IP 10.0.0.1 > 10.0.0.100",
			"src 10.0.0.1", "(was 172.16.99.8)", "id 47193", "(was 4242)",
			"Ethernet", "bytes 0-13 (14)", "IPv4", "bytes 14-33 (20)", "ICMP", "bytes 34-41 (8)",
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			var a, b bytes.Buffer
			if err := walk(t, c.opts).WriteSVG(&a); err != nil {
				t.Fatal(err)
			}
			if err := walk(t, c.opts).WriteSVG(&b); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(a.Bytes(), b.Bytes()) {
				t.Error("two pictures of the same journey differ")
			}
			texts := svgTexts(t, a.Bytes())
			have := map[string]bool{}
			for _, s := range texts {
				have[s] = true
			}
			for _, w := range c.want {
				if !have[w] {
					t.Errorf("no label %q", w)
				}
			}
		})
	}
}

// TestSVGEscapes: text from the options lands in the picture escaped, so
// the document stays well-formed whatever it holds.
func TestSVGEscapes(t *testing.T) {
	if got := esc(`a<b & "c">`); got != "a&lt;b &amp; &#34;c&#34;&gt;" {
		t.Errorf("esc = %q", got)
	}
	var s svgDoc
	(&picture{title: "<&>", cells: []cell{{name: "x<y", start: 0, end: 1, container: "a&b"}}}).draw(&s)
	texts := svgTexts(t, []byte(s.String()))
	found := false
	for _, x := range texts {
		found = found || x == "x<y"
	}
	if !found {
		t.Errorf("the cell's name did not survive escaping: %q", texts)
	}
}
