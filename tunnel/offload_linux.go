package tunnel

import (
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"

	"golang.org/x/sys/unix"
)

// Names of the TUN backends, as --tun-backend takes them.
const (
	// BackendOffload is a TUN device with IFF_VNET_HDR and TUNSETOFFLOAD:
	// the kernel hands over 64 KB TCP (and, from Linux 6.2, UDP)
	// super-packets, which Read splits into MTU-size segments with
	// correct checksums (split_linux.go), and takes coalesced ones back
	// from Write (gro_linux.go). It can have several queues.
	BackendOffload = "offload"
	// BackendWater is a plain TUN device: one packet per read(2) and
	// write(2), one queue. The baseline, and the fallback where the kernel
	// refuses offloads.
	BackendWater = "water"
)

// VirtioNetHdrLen is the length of the virtio-net header (struct
// virtio_net_hdr) in front of every packet an offload device reads or
// writes. The device keeps it to itself: Read strips it, and Write
// gathers it from its own scratch, so callers need leave no room for it.
const VirtioNetHdrLen = 10

// tunTCPOffloads are what an offload device asks TUNSETOFFLOAD for, and
// what the probe checks: checksum offload and TSO for IPv4 and IPv6. (UDP
// segmentation, USO, is asked for on top where the kernel has it; a kernel
// without it still works.)
const tunTCPOffloads = unix.TUN_F_CSUM | unix.TUN_F_TSO4 | unix.TUN_F_TSO6

// TUNOptions say how OpenTUN opens a device.
type TUNOptions struct {
	// Backend is BackendOffload (also what "" means) or BackendWater.
	// Offload falls back to water, with a warning in Log, when the kernel
	// refuses IFF_VNET_HDR or TUNSETOFFLOAD.
	Backend string
	// Queues is how many queues (file descriptors, IFF_MULTI_QUEUE) the
	// offload backend opens; the kernel spreads flows over them, each flow
	// on one queue. 0 means 1. The water backend always has one.
	Queues int
	// Log gets the fallback warning. nil discards it.
	Log *slog.Logger
	// Yields is how many times an offload Read that finds the device
	// empty gives its CPU to another runnable thread (sched_yield) and
	// looks again before it parks, or ends its batch: more throughput
	// under load, at some latency; 0 parks at once. See waitRead.
	Yields int

	// probe stands in for the TUNSETOFFLOAD probe in tests, to exercise
	// the fallback on a kernel that has offloads.
	probe func(fd int) error
}

// OpenTUN opens the TUN device name (created if it does not exist, chosen
// by the kernel if "") with the backend o asks for, and returns one Device
// per queue and the backend it used. All queues are the same kernel
// device: Name is the same on each, and closing the last one removes it.
func OpenTUN(name string, o TUNOptions) ([]Device, string, error) {
	switch o.Backend {
	case BackendWater:
		d, err := OpenWater(name)
		if err != nil {
			return nil, "", err
		}
		return []Device{d}, BackendWater, nil
	case BackendOffload, "":
	default:
		return nil, "", fmt.Errorf("open tun %q: unknown backend %q (want %s or %s)", name, o.Backend, BackendOffload, BackendWater)
	}
	devs, err := openOffload(name, max(o.Queues, 1), o.probe)
	if err == nil {
		for _, d := range devs {
			d.(*offloadDevice).rd.yields = max(o.Yields, 0)
		}
		return devs, BackendOffload, nil
	}
	if !errors.Is(err, errOffloadRefused) {
		return nil, "", err
	}
	if o.Log != nil {
		o.Log.Warn("tun offloads refused by the kernel; using the water backend (one packet per syscall, one queue)", "dev", name, "err", err)
	}
	d, werr := OpenWater(name)
	if werr != nil {
		return nil, "", werr
	}
	return []Device{d}, BackendWater, nil
}

// OpenOffload opens the TUN device name with IFF_VNET_HDR and offloads, with
// queues queues (IFF_MULTI_QUEUE when more than one). It fails, with an
// error that names the kernel's refusal, where the kernel lacks them;
// OpenTUN falls back to water then.
func OpenOffload(name string, queues int) ([]Device, error) {
	return openOffload(name, max(queues, 1), nil)
}

// errOffloadRefused marks errors that mean "this kernel (or sandbox) will
// not do TUN offloads", as opposed to "this device cannot be opened".
var errOffloadRefused = errors.New("tun offloads refused")

func openOffload(name string, queues int, probe func(int) error) (devs []Device, err error) {
	if len(name) >= unix.IFNAMSIZ {
		return nil, fmt.Errorf("open tun %q: name longer than %d bytes", name, unix.IFNAMSIZ-1)
	}
	if probe == nil {
		probe = func(fd int) error { return unix.IoctlSetInt(fd, unix.TUNSETOFFLOAD, tunTCPOffloads) }
	}
	defer func() {
		if err != nil {
			for _, d := range devs {
				d.Close()
			}
			devs = nil
		}
	}()
	flags := uint16(unix.IFF_TUN | unix.IFF_NO_PI | unix.IFF_VNET_HDR)
	if queues > 1 {
		flags |= unix.IFF_MULTI_QUEUE
	}
	for q := range queues {
		d, err := openOffloadQueue(name, q, flags, probe)
		if err != nil {
			return devs, err
		}
		name = d.name // the kernel's choice, for "", and for the other queues
		devs = append(devs, d)
	}
	return devs, nil
}

// openOffloadQueue opens one queue (file descriptor) of the device.
func openOffloadQueue(name string, q int, flags uint16, probe func(int) error) (*offloadDevice, error) {
	fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open tun %q: %w", name, &os.PathError{Op: "open", Path: "/dev/net/tun", Err: err})
	}
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("open tun %q: %w", name, err)
	}
	ifr.SetUint16(flags)
	if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
		unix.Close(fd)
		err = os.NewSyscallError("ioctl TUNSETIFF", err)
		if errors.Is(err, unix.EINVAL) && q == 0 {
			// A kernel without IFF_VNET_HDR (or IFF_MULTI_QUEUE) says EINVAL.
			return nil, fmt.Errorf("open tun %q with flags %#x: %w: %w", name, flags, errOffloadRefused, err)
		}
		return nil, fmt.Errorf("open tun %q queue %d: %w", name, q, err)
	}
	if err := probe(fd); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("open tun %q: %w: %w", name, errOffloadRefused, os.NewSyscallError("ioctl TUNSETOFFLOAD", err))
	}
	devName := ifr.Name()
	ctl, err := newMTUQuery(devName)
	if err != nil {
		unix.Close(fd)
		return nil, err
	}
	// Non-blocking, in an *os.File: Go's poller waits when the device
	// has nothing to read or no room to write, and Close unblocks a
	// pending Read. Reads (split_linux.go) and writes (gro_linux.go) go
	// through the file's RawConn.
	if err := unix.SetNonblock(fd, true); err != nil {
		ctl.close()
		unix.Close(fd)
		return nil, fmt.Errorf("open tun %q: %w", devName, os.NewSyscallError("fcntl", err))
	}
	file := os.NewFile(uintptr(fd), "/dev/net/tun")
	raw, err := file.SyscallConn()
	if err == nil {
		var uso bool
		if uso, err = probeUSO(raw); err == nil {
			return &offloadDevice{file: file, name: devName, queue: q, mtu: ctl,
				rd: newTUNReader(devName, raw), gro: newGROWriter(devName, raw, uso, ctl)}, nil
		}
	}
	ctl.close()
	file.Close()
	return nil, fmt.Errorf("open tun %q: %w", devName, err)
}

// offloadDevice is one queue of a TUN device with offloads. Its reader
// (split_linux.go) cuts the kernel's super-packets into segments; its
// writer (gro_linux.go) merges runs of segments into super-packets for
// the kernel. Both use the file's RawConn, with scratch of their own.
type offloadDevice struct {
	file  *os.File
	rd    *tunReader
	gro   *groWriter
	name  string
	queue int
	mtu   *mtuQuery
}

// Read reads a packet or a super-packet, split into segments, one per
// buffer, waiting for one if need be, then whatever more packets the
// device holds while buffers last. Segments that find no buffer are kept,
// and returned first by the next Read.
func (d *offloadDevice) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	if len(bufs) == 0 {
		return 0, nil
	}
	if len(sizes) < len(bufs) {
		return 0, fmt.Errorf("read tun %q: %w", d.name, errArgsLen)
	}
	// A Read may fill any of its buffers now (it reads on), so each must
	// leave room past offset.
	bufs = bufs[:min(len(bufs), MaxBatch)]
	for _, b := range bufs {
		if offset < 0 || offset >= len(b) {
			return 0, fmt.Errorf("read tun %q: offset %d outside a %d-byte buffer", d.name, offset, len(b))
		}
	}
	return d.rd.read(bufs, sizes, offset)
}

// Write coalesces runs of consecutive segments of one TCP flow (and,
// where the kernel has USO, UDP flow) and writes each resulting packet
// with one writev: a virtio-net header and, for a coalesced packet, the
// merged IP and TCP or UDP header from the device's own scratch, then the
// payloads from bufs. It neither changes nor copies the caller's bytes,
// and needs no headroom: offset may be anything >= 0. It returns how
// many of bufs the kernel took. It does not allocate unless a packet
// fails.
func (d *offloadDevice) Write(bufs [][]byte, offset int) (int, error) {
	if len(bufs) == 0 {
		return 0, nil
	}
	if offset < 0 {
		return 0, fmt.Errorf("write tun %q: negative offset %d", d.name, offset)
	}
	return d.gro.write(bufs, offset)
}

// BatchSize is MaxBatch: a 64 KB super-packet cut at the usual MSS takes
// 46 buffers, at an MSS of 512 all 128 (what is left of one cut smaller
// goes with the next Read).
func (d *offloadDevice) BatchSize() int { return MaxBatch }

// MTU asks the kernel through a socket opened next to the device, so it
// works from any goroutine, whatever namespace its thread is in.
func (d *offloadDevice) MTU() (int, error) { return d.mtu.get() }

// Dropped is how many packets Read dropped: malformed ones, and segments
// too big for the caller's buffers. It implements DropCounter.
func (d *offloadDevice) Dropped() uint64 {
	return d.rd.malformed.Load() + d.rd.tooBig.Load()
}

// LeaveChecksums says which packets Read may hand over with their
// checksum pending. It implements ChecksumLeaver.
func (d *offloadDevice) LeaveChecksums(partial func(dst netip.Addr) bool) {
	if partial == nil {
		d.rd.partial.Store(nil)
		return
	}
	d.rd.partial.Store(&partialFunc{partial})
}

// BadChecksums is how many packets Write dropped for a wrong TCP or UDP
// checksum. It implements BadChecksumCounter.
func (d *offloadDevice) BadChecksums() uint64 { return d.gro.badChecksum.Load() }

// Name is the device's name in the kernel.
func (d *offloadDevice) Name() string { return d.name }

// Close closes this queue; closing the last queue removes the device.
func (d *offloadDevice) Close() error {
	d.gro.closed.Store(true)
	d.rd.closed.Store(true)
	d.mtu.close()
	if err := d.file.Close(); err != nil && !errors.Is(err, os.ErrClosed) {
		return fmt.Errorf("close tun %q queue %d: %w", d.name, d.queue, err)
	}
	return nil
}
