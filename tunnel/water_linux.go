package tunnel

import (
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"

	"github.com/songgao/water"
	"golang.org/x/sys/unix"
)

// waterDevice is a TUN device opened through github.com/songgao/water:
// IFF_TUN|IFF_NO_PI, one packet per read(2) and per write(2).
//
// Without a virtio-net header it cannot tell the kernel that a checksum
// is pending, nor hand it a packet to cut, so Write does both itself:
// a packet whose checksum is pending gets it finished, one bigger than
// the MTU is cut into segments (see groWriter for when they come).
type waterDevice struct {
	ifce *water.Interface
	name string
	mtu  *mtuQuery

	wmu sync.Mutex // one Write at a time: what follows is its own
	// lastMTU is the MTU as last asked; a bigger packet asks again.
	lastMTU int
	// scratch holds a packet whose checksum is finished here, or a
	// segment cut from a big one; made on first need.
	scratch     []byte
	sp          superPacket
	badChecksum atomic.Uint64

	closeOnce sync.Once
}

// OpenWater opens the TUN device name, creating it if it does not exist,
// with github.com/songgao/water (IFF_TUN, no packet information header).
// An empty name lets the kernel choose one (tun0, tun1, ...). The device is
// created down and without addresses; configuring it is the caller's job.
// It is not persistent: Close removes it from the kernel, with its
// addresses and routes. The device reads one packet per call (BatchSize 1).
func OpenWater(name string) (Device, error) {
	if len(name) >= unix.IFNAMSIZ {
		// Checked here because water leaks its file descriptor when the
		// kernel refuses the name.
		return nil, fmt.Errorf("open tun %q: name longer than %d bytes", name, unix.IFNAMSIZ-1)
	}
	ifce, err := water.New(water.Config{
		DeviceType:             water.TUN,
		PlatformSpecificParams: water.PlatformSpecificParams{Name: name},
	})
	if err != nil {
		return nil, fmt.Errorf("open tun %q: %w", name, err)
	}
	mtu, err := newMTUQuery(ifce.Name())
	if err != nil {
		ifce.Close()
		return nil, err
	}
	d := &waterDevice{ifce: ifce, name: ifce.Name(), mtu: mtu}
	d.lastMTU, _ = mtu.get()
	return d, nil
}

// Read reads one packet into bufs[0][offset:].
func (d *waterDevice) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	if len(bufs) == 0 {
		return 0, nil
	}
	if len(sizes) < 1 {
		return 0, fmt.Errorf("read tun %q: no room for sizes", d.name)
	}
	if offset < 0 || offset >= len(bufs[0]) {
		return 0, fmt.Errorf("read tun %q: offset %d outside a %d-byte buffer", d.name, offset, len(bufs[0]))
	}
	n, err := d.ifce.Read(bufs[0][offset:])
	if err != nil {
		return 0, d.fail("read", err)
	}
	sizes[0] = n
	return 1, nil
}

// Write writes the packets one write(2) each, going on past refused ones.
// A TCP or UDP packet whose checksum is wrong is dropped (counted, see
// BadChecksums) and counts as written.
func (d *waterDevice) Write(bufs [][]byte, offset int) (int, error) {
	d.wmu.Lock()
	defer d.wmu.Unlock()
	written := 0
	var first error
	asked := false // the MTU, in this Write
	for i, b := range bufs {
		if offset < 0 || offset >= len(b) {
			if first == nil {
				first = fmt.Errorf("write tun %q: packet %d: offset %d leaves nothing of %d bytes", d.name, i, offset, len(b))
			}
			continue
		}
		pkt := b[offset:]
		if !asked && len(pkt) > d.lastMTU {
			// It may be big, or the MTU raised: ask, once per Write.
			asked = true
			if mtu, err := d.mtu.get(); err == nil {
				d.lastMTU = mtu
			}
		}
		if err := d.writePacket(pkt); err != nil {
			err = d.fail("write", err)
			if errors.Is(err, ErrClosed) {
				return written, err
			}
			if first == nil {
				first = err
			}
			continue
		}
		written++
	}
	return written, first
}

// writePacket writes one packet: as it is; or, its checksum pending,
// finished in scratch; or, a TCP packet bigger than the MTU, cut into
// segments with their checksums; or, its checksum wrong, not at all.
func (d *waterDevice) writePacket(pkt []byte) error {
	s := parseSeg(pkt, false, d.lastMTU)
	switch {
	case s.proto == 0:
	case !verify(&s):
		d.badChecksum.Add(1)
		return nil
	case s.big && s.proto == unix.IPPROTO_TCP:
		return d.writeCut(&s)
	case s.csum == csumPending:
		if d.scratch == nil {
			d.scratch = make([]byte, readBufLen)
		}
		out := d.scratch[:len(pkt)]
		copy(out, pkt[:s.iphl])
		// As the offload device's read path finishes one: the field
		// holds the pseudo-header sum, which the sum from the TCP or UDP
		// header on includes.
		putCsum(out[s.iphl+int(s.csumOff):], csumCopy(out[s.iphl:], pkt[s.iphl:], 0))
		pkt = out
	}
	_, err := d.ifce.Write(pkt)
	return err
}

// writeCut cuts s, a TCP packet bigger than the MTU, into MTU-size
// segments as the kernel would (the offload device's read path does the
// cutting) and writes them one by one.
func (d *waterDevice) writeCut(s *groSeg) error {
	gso := virtioGSOTCPv4
	if s.iphl == 40 {
		gso = virtioGSOTCPv6
	}
	if !d.sp.parse(s.pkt, uint8(gso), false, s.hl, d.lastMTU-s.hl, 0, 0) {
		_, err := d.ifce.Write(s.pkt) // nothing we can cut: the kernel's to judge
		return err
	}
	if d.scratch == nil {
		d.scratch = make([]byte, readBufLen)
	}
	bufs, sizes := [][]byte{d.scratch}, []int{0}
	for d.sp.left() {
		if n, _ := d.sp.split(bufs, sizes, 0); n == 0 {
			continue // too big for scratch: cannot be, scratch holds any packet
		}
		if _, err := d.ifce.Write(d.scratch[:sizes[0]]); err != nil {
			d.sp = superPacket{}
			return err
		}
	}
	return nil
}

// BadChecksums is how many packets Write dropped for a wrong TCP or UDP
// checksum. It implements BadChecksumCounter.
func (d *waterDevice) BadChecksums() uint64 { return d.badChecksum.Load() }

// fail names the operation and the device, and makes a closed file match
// ErrClosed (net.ErrClosed) as well as os.ErrClosed, so one check in the
// caller recognises shutdown on a Device and on an Underlay alike.
func (d *waterDevice) fail(op string, err error) error {
	return tunError(op, d.name, err, errors.Is(err, os.ErrClosed))
}

// BatchSize is 1: water reads one packet per syscall.
func (d *waterDevice) BatchSize() int { return 1 }

// MTU asks the kernel through a socket opened next to the device, so it
// works from any goroutine, whatever namespace its thread is in.
func (d *waterDevice) MTU() (int, error) { return d.mtu.get() }

// Name is the name the kernel gave the device.
func (d *waterDevice) Name() string { return d.name }

// Close closes the device file, which unblocks a pending Read (the file is
// non-blocking and in Go's poller) and removes the device.
func (d *waterDevice) Close() error {
	var err error
	d.closeOnce.Do(func() {
		d.mtu.close()
		if cerr := d.ifce.Close(); cerr != nil {
			err = fmt.Errorf("close tun %q: %w", d.name, cerr)
		}
	})
	return err
}
