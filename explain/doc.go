// Package explain is the teaching command's engine: it follows one packet
// from a pod on one node to a pod on another through vxrouter's VXLAN
// overlay and tells every step with the real bytes. Two more journeys
// start the same way: a connection to a Kubernetes Service (Options.Service:
// kube-proxy's nat rules on node A, the DNAT of the first packet with its
// checksums updated as the kernel updates them, the overlay, conntrack's
// reverse rewrite of the answer), and a packet to a host outside the
// cluster (Options.ToOutside: flannel's --ip-masq rule, MASQUERADE, the
// answer's way back). WriteSVG draws any of them: the path across the
// nodes, and the frame on the wire as nested layers with byte offsets.
//
// It owns nothing of the data plane. The inner packet and the headers the
// kernel adds (outer UDP, IPv4, Ethernet) are built and decoded with
// gopacket; the 22 bytes in between are written by [encap.Header.Encap] and
// checked by [encap.Decoder.Decap], the same calls the forwarder makes, so
// what the text shows is what vxrouter puts on the wire. Nothing here
// needs root or a network: it only builds bytes.
//
// # Use
//
//	j, err := explain.Walk(explain.DefaultOptions()) // DESIGN.md's example
//	if err != nil { ... }                            // bad options: the error names the flag
//	j.WriteText(os.Stdout)                           // seven steps, 80 columns
//	j.WritePcap(f)                                   // two Ethernet packets for Wireshark
//	j.WriteSVG(f)                                    // the picture
//
// Walk checks the options and derives what is left zero (the node subnets
// around the pods, the overlay network around the subnets). Everything a
// real system picks at random (IP identification, ports, ICMP identifier,
// timestamps, the port MASQUERADE picks) is fixed, so the same options
// always give the same text, capture and picture; the golden files in
// testdata depend on it. The iptables rules are text, what kube-proxy and
// flanneld would write (package kubeproxy writes kube-proxy's); nothing is
// applied.
//
// # Concurrency
//
// A Journey is not changed after Walk returns; its methods may be called
// from several goroutines at once.
//
// # Debugging
//
// `tshark -r FILE -d udp.port==8472,vxlan -V` decodes the capture
// WritePcap writes, layer by layer; Frames gives the same bytes to tests.
// The golden texts are rewritten with `go test ./explain/ -update`; read
// the diff, it is documentation.
package explain
