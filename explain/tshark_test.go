package explain

import (
	"bytes"
	"context"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestTshark opens the capture with tshark, a decoder that shares no code
// with gopacket or encap, and checks that it sees what the text says.
func TestTshark(t *testing.T) {
	tshark, err := exec.LookPath("tshark")
	if err != nil {
		t.Skip("needs tshark (apt-get install tshark)")
	}
	for _, c := range []struct {
		name string
		opts func(*Options)
		want []string // per packet: vxlan.vni ip.src ip.dst eth.dst, tab-separated
	}{
		{"default", func(*Options) {}, []string{
			"\t172.16.99.8\t172.16.57.15\t0a:58:ac:10:63:01",
			"1\t10.0.0.1,172.16.99.8\t10.0.0.2,172.16.57.15\t02:00:0a:00:00:02,d6:51:2e:80:5c:69",
		}},
		{"ipv6 udp vni 4096 port 4789", func(o *Options) {
			*o = DefaultOptions()
			o.Src, o.Dst = netip.MustParseAddr("fd00:16:99::8"), netip.MustParseAddr("fd00:16:57::15")
			o.Proto, o.Size, o.VNI, o.Port = "udp", 100, 4096, 4789
		}, []string{
			"\t\t\t0a:58:00:00:00:01",
			"4096\t10.0.0.1\t10.0.0.2\t02:00:0a:00:00:02,d6:51:2e:80:5c:69",
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			j := walk(t, c.opts)
			dir := t.TempDir()
			path := filepath.Join(dir, "journey.pcap")
			f, err := os.Create(path)
			if err != nil {
				t.Fatal(err)
			}
			if err := j.WritePcap(f); err != nil {
				t.Fatal(err)
			}
			if err := f.Close(); err != nil {
				t.Fatal(err)
			}

			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			port := j.Options().Port
			// Preferences that a profile could change are set here, so
			// the output depends on nothing but the capture.
			prefs := []string{"-o", "nameres.mac_name:FALSE", "-o", "nameres.network_name:FALSE", "-o", "udp.try_heuristic_first:FALSE"}
			cmd := exec.CommandContext(ctx, tshark, append(append([]string{"-r", path, "-n"}, prefs...),
				"-d", "udp.port=="+strconv.Itoa(int(port))+",vxlan",
				"-T", "fields", "-e", "vxlan.vni", "-e", "ip.src", "-e", "ip.dst", "-e", "eth.dst")...)
			// tshark reads and writes its profile under HOME; give it an
			// empty one so the test neither depends on nor changes the user's.
			cmd.Env = append(os.Environ(), "HOME="+dir, "XDG_CONFIG_HOME="+dir)
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			out, err := cmd.Output()
			if err != nil {
				t.Fatalf("tshark: %v\n%s", err, stderr.String())
			}
			lines := strings.Split(strings.TrimRight(string(out), "\n"), "\n")
			if len(lines) != len(c.want) {
				t.Fatalf("tshark decoded %d packets, want %d:\n%s", len(lines), len(c.want), out)
			}
			for i, w := range c.want {
				if lines[i] != w {
					t.Errorf("packet %d: tshark says\n  %q\nwant\n  %q", i+1, lines[i], w)
				}
			}

			// And the full dissection names every layer of packet 2.
			cmd = exec.CommandContext(ctx, tshark, append(append([]string{"-r", path, "-n", "-V", "-Y", "frame.number==2"}, prefs...),
				"-d", "udp.port=="+strconv.Itoa(int(port))+",vxlan")...)
			cmd.Env = append(os.Environ(), "HOME="+dir, "XDG_CONFIG_HOME="+dir)
			out, err = cmd.Output()
			if err != nil {
				t.Fatalf("tshark -V: %v", err)
			}
			for _, w := range []string{"Virtual eXtensible Local Area Network", "VXLAN Network Identifier (VNI): " + strconv.Itoa(int(j.Options().VNI)), "User Datagram Protocol, Src Port: " + strconv.Itoa(int(j.srcPort)) + ", Dst Port: " + strconv.Itoa(int(port))} {
				if !strings.Contains(string(out), w) {
					t.Errorf("tshark -V lacks %q", w)
				}
			}
		})
	}
}

// TestTsharkNAT opens the captures of the journeys through NAT with
// tshark, which checks every checksum itself: each packet has the
// addresses and ports the text says, before and after each rewrite, and
// every IPv4, TCP, UDP and ICMP checksum is good (status 1).
func TestTsharkNAT(t *testing.T) {
	tshark, err := exec.LookPath("tshark")
	if err != nil {
		t.Skip("needs tshark (apt-get install tshark)")
	}
	for _, c := range []struct {
		name string
		want []string // per packet: ip.src ip.dst, ports or ICMP ident, ip and l4 checksum status
	}{
		{"service", []string{
			"172.16.99.8\t192.168.3.10\t40000\t80\t1\t1",
			"10.0.0.1,172.16.99.8\t10.0.0.2,172.16.57.15\t40000\t8080\t1,1\t1",
			"192.168.3.10\t172.16.99.8\t80\t40000\t1\t1",
		}},
		{"service-udp", []string{
			"172.16.99.8\t192.168.3.53\t40000\t53\t1\t1",
			"10.0.0.1,172.16.99.8\t10.0.0.2,172.16.57.15\tSRCPORT,40000\t8472,5353\t1,1\t1,1",
			"192.168.3.53\t172.16.99.8\t53\t40000\t1\t1",
		}},
		{"outside", []string{
			"172.16.99.8\t10.0.0.100\t4242\t1\t1",
			"10.0.0.1\t10.0.0.100\t47193\t1\t1",
			"10.0.0.100\t10.0.0.1\t47193\t1\t1",
			"10.0.0.100\t172.16.99.8\t4242\t1\t1",
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			j := natJourney(t, c.name)
			dir := t.TempDir()
			path := filepath.Join(dir, "nat.pcap")
			var b bytes.Buffer
			if err := j.WritePcap(&b); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(path, b.Bytes(), 0o644); err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			// DNS on 53 would swallow the example's text payload.
			args := []string{"-r", path, "-n", "-d", "udp.port==8472,vxlan", "--disable-protocol", "dns",
				"-o", "nameres.mac_name:FALSE", "-o", "nameres.network_name:FALSE", "-o", "udp.try_heuristic_first:FALSE",
				"-o", "ip.check_checksum:TRUE", "-o", "tcp.check_checksum:TRUE", "-o", "udp.check_checksum:TRUE",
				"-T", "fields", "-e", "ip.src", "-e", "ip.dst"}
			if j.Options().Proto == "icmp" {
				args = append(args, "-e", "icmp.ident", "-e", "ip.checksum.status", "-e", "icmp.checksum.status")
			} else {
				proto := j.Options().Proto
				args = append(args, "-e", proto+".srcport", "-e", proto+".dstport", "-e", "ip.checksum.status", "-e", proto+".checksum.status")
			}
			cmd := exec.CommandContext(ctx, tshark, args...)
			cmd.Env = append(os.Environ(), "HOME="+dir, "XDG_CONFIG_HOME="+dir)
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			out, err := cmd.Output()
			if err != nil {
				t.Fatalf("tshark: %v\n%s", err, stderr.String())
			}
			lines := strings.Split(strings.TrimRight(string(out), "\n"), "\n")
			if len(lines) != len(c.want) {
				t.Fatalf("tshark decoded %d packets, want %d:\n%s", len(lines), len(c.want), out)
			}
			for i, w := range c.want {
				// The outer source port is the inner flow's (flow entropy).
				w = strings.Replace(w, "SRCPORT", strconv.Itoa(int(j.srcPort)), 1)
				if lines[i] != w {
					t.Errorf("packet %d: tshark says\n  %q\nwant\n  %q", i+1, lines[i], w)
				}
			}
		})
	}
}
