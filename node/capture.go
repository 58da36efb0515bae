package node

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
	"github.com/google/gopacket/pcapgo"
)

// A capture writes what the forwarder sends to peers and accepts from them
// to a pcap file, as the frames would look on the underlay (outer
// Ethernet, IPv4 or IPv6, and UDP rebuilt around the VXLAN payload, from
// or to the node's public address of the peer's family), so Wireshark
// and tshark decode it: `tshark -r FILE -d udp.port==8472,vxlan`. The
// rebuilt headers give what the node sent the VXLAN port as its source
// port; on the wire, flow entropy sends it from its flow's port of the
// source pool (--src-port-range), which the forwarder does not report.
//
// The forwarding loops only copy each datagram into a queue; a goroutine
// of the capture builds the outer headers and writes. When the queue is
// full the datagram is not captured (and counted), so a slow disk never
// slows the data plane. The file stops growing at its size limit.
type capture struct {
	path  string
	local []netip.AddrPort // the node's public address and port, per family
	limit int64
	log   *slog.Logger

	queue   chan captured
	quit    chan struct{} // closed by stop; the queue is never closed, so a late add cannot panic
	done    chan struct{}
	missed  atomic.Uint64 // datagrams the queue had no room for
	written atomic.Int64  // bytes in the file
	full    atomic.Bool

	closing atomic.Bool // set by stop: no more adds

	// Used by the writer goroutine only.
	f    *os.File
	w    *pcapgo.Writer
	buf  gopacket.SerializeBuffer
	opts gopacket.SerializeOptions
}

type captured struct {
	at    time.Time
	sent  bool
	peer  netip.AddrPort
	frame []byte
}

// captureQueue is how many datagrams may wait for the writer.
const captureQueue = 4096

// startCapture creates path and starts writing to it.
func startCapture(path string, local []netip.AddrPort, limit int64, log *slog.Logger) (*capture, error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return nil, fmt.Errorf("capture: %w", err)
	}
	w := pcapgo.NewWriter(f)
	if err := w.WriteFileHeader(65535, layers.LinkTypeEthernet); err != nil {
		f.Close()
		return nil, fmt.Errorf("capture %s: %w", path, err)
	}
	c := &capture{
		path: path, local: local, limit: limit, log: log,
		queue: make(chan captured, captureQueue),
		quit:  make(chan struct{}),
		done:  make(chan struct{}),
		f:     f, w: w,
		buf:  gopacket.NewSerializeBuffer(),
		opts: gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true},
	}
	c.written.Store(24) // the file header
	go c.run()
	return c, nil
}

// Sent and Received implement route.Tap.
func (c *capture) Sent(frame []byte, to netip.AddrPort)       { c.add(true, frame, to) }
func (c *capture) Received(frame []byte, from netip.AddrPort) { c.add(false, frame, from) }

func (c *capture) add(sent bool, frame []byte, peer netip.AddrPort) {
	if c.closing.Load() || c.full.Load() {
		return
	}
	rec := captured{at: time.Now(), sent: sent, peer: peer, frame: append([]byte(nil), frame...)}
	select {
	case c.queue <- rec:
	default:
		c.missed.Add(1)
	}
}

// run writes queued datagrams until stop, then what is still queued.
func (c *capture) run() {
	defer close(c.done)
	for {
		select {
		case rec := <-c.queue:
			c.write(rec)
		case <-c.quit:
			for {
				select {
				case rec := <-c.queue:
					c.write(rec)
				default:
					return
				}
			}
		}
	}
}

func (c *capture) write(rec captured) {
	if c.full.Load() {
		return
	}
	var local netip.AddrPort
	for _, l := range c.local {
		if l.Addr().Is4() == rec.peer.Addr().Is4() {
			local = l
		}
	}
	src, dst := local, rec.peer
	if !rec.sent {
		src, dst = rec.peer, local
	}
	eth := &layers.Ethernet{SrcMAC: outerMAC(src.Addr()), DstMAC: outerMAC(dst.Addr()), EthernetType: layers.EthernetTypeIPv4}
	udp := &layers.UDP{SrcPort: layers.UDPPort(src.Port()), DstPort: layers.UDPPort(dst.Port())}
	var ip gopacket.SerializableLayer
	if src.Addr().Is6() {
		eth.EthernetType = layers.EthernetTypeIPv6
		ip6 := &layers.IPv6{Version: 6, HopLimit: 64, NextHeader: layers.IPProtocolUDP, SrcIP: net.IP(src.Addr().AsSlice()), DstIP: net.IP(dst.Addr().AsSlice())}
		udp.SetNetworkLayerForChecksum(ip6)
		ip = ip6
	} else {
		ip4 := &layers.IPv4{Version: 4, TTL: 64, Protocol: layers.IPProtocolUDP, SrcIP: net.IP(src.Addr().AsSlice()), DstIP: net.IP(dst.Addr().AsSlice())}
		udp.SetNetworkLayerForChecksum(ip4)
		ip = ip4
	}
	if err := gopacket.SerializeLayers(c.buf, c.opts, eth, ip, udp, gopacket.Payload(rec.frame)); err != nil {
		c.missed.Add(1)
		return
	}
	data := c.buf.Bytes()
	size := int64(16 + len(data)) // record header + frame
	if c.written.Load()+size > c.limit {
		c.full.Store(true)
		c.log.Warn("capture reached its size limit; no more packets are written", "file", c.path, "limit-bytes", c.limit)
		return
	}
	ci := gopacket.CaptureInfo{Timestamp: rec.at, CaptureLength: len(data), Length: len(data)}
	if err := c.w.WritePacket(ci, data); err != nil {
		c.full.Store(true)
		c.log.Warn("capture write failed; stopped", "file", c.path, "err", err)
		return
	}
	c.written.Add(size)
}

// outerMAC makes a MAC for an underlay address, as explain does: the
// capture does not know the real next hops, and says so by using locally
// administered addresses built from the IP (its last four bytes).
func outerMAC(a netip.Addr) net.HardwareAddr {
	b := a.Unmap().AsSlice()
	b = b[len(b)-4:]
	return net.HardwareAddr{0x02, 0x00, b[0], b[1], b[2], b[3]}
}

// stop flushes what is queued and closes the file.
func (c *capture) stop() error {
	c.closing.Store(true)
	close(c.quit)
	<-c.done
	if n := c.missed.Load(); n > 0 {
		c.log.Warn("capture missed datagrams (the writer fell behind)", "file", c.path, "missed", n)
	}
	return c.f.Close()
}

// captures is the node's one capture at a time.
type captures struct {
	mu  sync.Mutex
	cur *capture
}

// StartCapture starts capturing to path, up to limit bytes; one capture
// at a time.
func (n *Node) StartCapture(path string, limit int64) error {
	if limit <= 0 {
		return errors.New("capture: the size limit must be positive")
	}
	n.capt.mu.Lock()
	defer n.capt.mu.Unlock()
	if n.capt.cur != nil {
		return fmt.Errorf("capture: already capturing to %s", n.capt.cur.path)
	}
	c, err := startCapture(path, n.localAddrs(), limit, n.log)
	if err != nil {
		return err
	}
	n.capt.cur = c
	n.fwd.SetTap(c)
	n.log.Info("capture started", "file", path, "limit-bytes", limit)
	return nil
}

// StopCapture stops the running capture and returns its file, or "" if
// none was running.
func (n *Node) StopCapture() (string, error) {
	n.capt.mu.Lock()
	defer n.capt.mu.Unlock()
	c := n.capt.cur
	if c == nil {
		return "", nil
	}
	n.fwd.SetTap(nil)
	n.capt.cur = nil
	err := c.stop()
	n.log.Info("capture stopped", "file", c.path, "bytes", c.written.Load())
	return c.path, err
}

// localAddrs are the node's public addresses with its VXLAN port, one per
// family the overlay carries.
func (n *Node) localAddrs() []netip.AddrPort {
	var out []netip.AddrPort
	for _, a := range []netip.Addr{n.underlay.PublicIP, n.underlay.PublicIPv6} {
		if a.IsValid() {
			out = append(out, netip.AddrPortFrom(a, uint16(n.overlay.Backend.Port)))
		}
	}
	return out
}
