package tunnel

import (
	"errors"
	"fmt"
	"os"
	"sync"

	"github.com/songgao/water"
	"golang.org/x/sys/unix"
)

// waterDevice is a TUN device opened through github.com/songgao/water:
// IFF_TUN|IFF_NO_PI, one packet per read(2) and per write(2).
type waterDevice struct {
	ifce *water.Interface
	name string
	mtu  *mtuQuery

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
	return &waterDevice{ifce: ifce, name: ifce.Name(), mtu: mtu}, nil
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
func (d *waterDevice) Write(bufs [][]byte, offset int) (int, error) {
	written := 0
	var first error
	for i, b := range bufs {
		if offset < 0 || offset >= len(b) {
			if first == nil {
				first = fmt.Errorf("write tun %q: packet %d: offset %d leaves nothing of %d bytes", d.name, i, offset, len(b))
			}
			continue
		}
		if _, err := d.ifce.Write(b[offset:]); err != nil {
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
