package main

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"strings"

	"github.com/urfave/cli/v2"

	"vxrouter/explain"
)

func explainCommand() *cli.Command {
	d := explain.DefaultOptions()
	env := func(name string) []string { return []string{"VXROUTER_EXPLAIN_" + name} }
	return &cli.Command{
		Name:  "explain",
		Usage: "follow one packet from pod to pod through the overlay, byte by byte",
		Description: "explain builds one packet (by default a ping from pod 172.16.99.8 on node A\n" +
			"to pod 172.16.57.15 on node B) and shows every step of its way: the pod's\n" +
			"route, the TUN device, the lease lookup, the VXLAN header vxrouter writes,\n" +
			"the headers the kernel adds, the MTU arithmetic, and the checks on the\n" +
			"receiving node, with every header field and a hex dump. The bytes come\n" +
			"from vxrouter's own encapsulation code. It needs no root and no network;\n" +
			"--pcap also writes the packet before and after encapsulation for Wireshark,\n" +
			"--svg draws the path and the frame's layers.\n\n" +
			"--service 192.168.3.10:80 follows a connection to a Service instead: the\n" +
			"nat rules kube-proxy writes, the DNAT to the backend pod --dst with the\n" +
			"checksums it updates, the overlay, and conntrack's rewrite of the answer.\n" +
			"--to-outside follows a packet to a host outside the cluster through\n" +
			"flannel's --ip-masq rule (MASQUERADE) and back.",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "src", Value: d.Src.String(), Usage: "source pod address (IPv4 or IPv6)", EnvVars: env("SRC")},
			&cli.StringFlag{Name: "dst", Value: d.Dst.String(), Usage: "destination pod address, on the other node", EnvVars: env("DST")},
			&cli.StringFlag{Name: "src-subnet", Usage: "source node's subnet (default: the /24 or /64 around --src)", EnvVars: env("SRC_SUBNET")},
			&cli.StringFlag{Name: "dst-subnet", Usage: "destination node's subnet (default: the /24 or /64 around --dst)", EnvVars: env("DST_SUBNET")},
			&cli.StringFlag{Name: "network", Usage: "the overlay network (default: the prefix both subnets share, rounded down to whole octets, or 16-bit groups for IPv6)", EnvVars: env("NETWORK")},
			&cli.StringFlag{Name: "src-node-ip", Value: d.SrcNode.String(), Usage: "source node's public (underlay) IPv4 address", EnvVars: env("SRC_NODE_IP")},
			&cli.StringFlag{Name: "dst-node-ip", Value: d.DstNode.String(), Usage: "destination node's public (underlay) IPv4 address", EnvVars: env("DST_NODE_IP")},
			&cli.StringFlag{Name: "src-mac", Value: d.SrcMAC.String(), Usage: "source node's VTEP MAC", EnvVars: env("SRC_MAC")},
			&cli.StringFlag{Name: "dst-mac", Value: d.DstMAC.String(), Usage: "destination node's VTEP MAC", EnvVars: env("DST_MAC")},
			&cli.StringFlag{Name: "proto", Value: d.Proto, Usage: "the packet: " + strings.Join(explain.Protos, ", ") + " (icmp is an echo request)", EnvVars: env("PROTO")},
			&cli.IntFlag{Name: "size", Value: d.Size, Usage: "payload bytes after the ICMP, UDP or TCP header", EnvVars: env("SIZE")},
			&cli.Int64Flag{Name: "vni", Value: int64(d.VNI), Usage: "VXLAN network identifier, 0 to 16777215", EnvVars: env("VNI")},
			&cli.IntFlag{Name: "port", Value: int(d.Port), Usage: "VXLAN UDP port (8472 is Linux's and flannel's, 4789 IANA's)", EnvVars: env("PORT")},
			&cli.IntFlag{Name: "mtu", Value: d.MTU, Usage: "the underlay's MTU", EnvVars: env("MTU")},
			&cli.StringFlag{Name: "pcap", Usage: "also write the packet on the pod's veth and on the underlay to this pcap `FILE`", EnvVars: env("PCAP")},
			&cli.StringFlag{Name: "svg", Usage: "also draw the journey, the path across the nodes and the packet's layers with their byte offsets, to this SVG `FILE`", EnvVars: env("SVG")},
			&cli.StringFlag{Name: "service", Usage: "follow a connection from --src to this Service `IP:PORT` (ClusterIP), DNATed by kube-proxy's rules on node A to the backend pod --dst", EnvVars: env("SERVICE")},
			&cli.IntFlag{Name: "target-port", Value: explain.DefaultTargetPort, Usage: "with --service: the backend pods' port", EnvVars: env("TARGET_PORT")},
			&cli.StringFlag{Name: "service-network", Usage: "with --service: the range of ClusterIPs (default: the /24 around it)", EnvVars: env("SERVICE_NETWORK")},
			&cli.BoolFlag{Name: "to-outside", Usage: "follow a packet from --src to a host outside the overlay (--dst, default " + explain.DefaultOutside.String() + "), masqueraded by flannel's --ip-masq rule on node A", EnvVars: env("TO_OUTSIDE")},
		},
		Action: func(c *cli.Context) error {
			if c.NArg() > 0 {
				return fmt.Errorf("explain takes no arguments, only flags (got %q)", c.Args().First())
			}
			o, err := explainOptions(c)
			if err != nil {
				return err
			}
			j, err := explain.Walk(o)
			if err != nil {
				return err
			}
			// The capture first, so that a path that cannot be written
			// fails before the text scrolls by.
			path := c.String("pcap")
			if path != "" {
				if err := writeFile(path, "pcap", j.WritePcap); err != nil {
					return err
				}
			}
			svg := c.String("svg")
			if svg != "" {
				if err := writeFile(svg, "svg", j.WriteSVG); err != nil {
					return err
				}
			}
			if err := j.WriteText(c.App.Writer); err != nil {
				return err
			}
			if path != "" {
				fmt.Fprintf(c.App.Writer, "\nWrote %s: %s.\n", path, j.PcapSummary())
			}
			if svg != "" {
				fmt.Fprintf(c.App.Writer, "Wrote %s: the path across the nodes and the packet's layers.\n", svg)
			}
			return nil
		},
	}
}

// explainOptions turns the flags into explain.Options; the values that
// parse are checked by explain.Walk.
func explainOptions(c *cli.Context) (explain.Options, error) {
	var o explain.Options
	var err error
	addr := func(flag string, dst *netip.Addr) {
		if err != nil {
			return
		}
		if *dst, err = netip.ParseAddr(c.String(flag)); err != nil {
			err = fmt.Errorf("--%s %q: not an IP address", flag, c.String(flag))
		}
	}
	prefix := func(flag string, dst *netip.Prefix) {
		if err != nil || c.String(flag) == "" {
			return
		}
		if *dst, err = netip.ParsePrefix(c.String(flag)); err != nil {
			err = fmt.Errorf("--%s %q: not a prefix like 172.16.57.0/24", flag, c.String(flag))
		}
	}
	mac := func(flag string, dst *net.HardwareAddr) {
		if err != nil {
			return
		}
		if *dst, err = net.ParseMAC(c.String(flag)); err != nil {
			err = fmt.Errorf("--%s %q: not a MAC address like d6:51:2e:80:5c:69", flag, c.String(flag))
		}
	}
	addr("src", &o.Src)
	addr("dst", &o.Dst)
	prefix("src-subnet", &o.SrcSubnet)
	prefix("dst-subnet", &o.DstSubnet)
	prefix("network", &o.Network)
	addr("src-node-ip", &o.SrcNode)
	addr("dst-node-ip", &o.DstNode)
	mac("src-mac", &o.SrcMAC)
	mac("dst-mac", &o.DstMAC)
	if err != nil {
		return o, err
	}
	if c.Bool("to-outside") && !c.IsSet("dst") {
		o.Dst = explain.DefaultOutside
	}
	o.ToOutside = c.Bool("to-outside")
	if v := c.String("service"); v != "" {
		if o.Service, err = netip.ParseAddrPort(v); err != nil {
			return o, fmt.Errorf("--service %q: not a ClusterIP:port like 192.168.3.10:80", v)
		}
		if c.IsSet("size") && (!c.IsSet("proto") || strings.EqualFold(c.String("proto"), "tcp")) {
			return o, errors.New("--size with --service: the TCP SYN that opens the connection carries no data (--size is for --proto udp)")
		}
	}
	prefix("service-network", &o.ServiceNetwork)
	if err != nil {
		return o, err
	}
	tp := c.Int("target-port")
	if tp < 1 || tp > 65535 {
		return o, fmt.Errorf("--target-port %d: want a port, 1 to 65535", tp)
	}
	o.TargetPort = uint16(tp)
	o.Proto = c.String("proto")
	if o.Service.IsValid() && !c.IsSet("proto") {
		o.Proto = "tcp" // a Service's port; a ping gets no answer
	}
	o.Size = c.Int("size")
	o.MTU = c.Int("mtu")
	vni := c.Int64("vni")
	if vni < 0 || vni > 1<<24-1 {
		return o, fmt.Errorf("--vni %d: a VNI has 24 bits, 0 to %d", vni, 1<<24-1)
	}
	o.VNI = uint32(vni)
	port := c.Int("port")
	if port < 1 || port > 65535 {
		return o, fmt.Errorf("--port %d: want a UDP port, 1 to 65535", port)
	}
	o.Port = uint16(port)
	return o, nil
}

// writeFile writes a file with write, replacing it; a file that could not
// be written whole is removed.
func writeFile(path, what string, write func(io.Writer) error) (err error) {
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("create %s file: %w", what, err)
	}
	defer func() {
		if cerr := f.Close(); cerr != nil && err == nil {
			err = fmt.Errorf("close %s file %q: %w", what, path, cerr)
		}
		if err != nil {
			err = errors.Join(err, os.Remove(path))
		}
	}()
	return write(f)
}
