package tunneltest

import (
	"fmt"
	"sync"

	"vxrouter/tunnel"
)

// QueueLen is how many packets or datagrams a fake holds unread: packets
// Injected but not yet Read, packets Written but not yet taken from
// Written, datagrams delivered to an Underlay but not yet Read.
const QueueLen = 4096

// Device is a fake TUN device. It implements tunnel.Device.
type Device struct {
	name  string
	mtu   int
	batch int

	in   chan []byte // Inject -> Read
	out  chan []byte // Write -> Written
	free freeList    // buffers back from Read and Release

	wmu       sync.Mutex // one Write at a time keeps a batch in order
	closed    chan struct{}
	closeOnce sync.Once
}

var _ tunnel.Device = (*Device)(nil)

// NewDevice returns a fake TUN device called name whose MTU reports mtu
// and whose Reads return up to batch packets (at least 1).
func NewDevice(name string, mtu, batch int) *Device {
	return &Device{
		name:   name,
		mtu:    mtu,
		batch:  max(batch, 1),
		in:     make(chan []byte, QueueLen),
		out:    make(chan []byte, QueueLen),
		free:   newFreeList(),
		closed: make(chan struct{}),
	}
}

// Release hands back a packet taken from Written, for reuse by a later
// Write: a benchmark that releases what it reads makes the fake
// allocation-free, so what it measures is the code under test.
func (d *Device) Release(pkt []byte) { d.free.put(pkt) }

// Inject queues a copy of pkt as if the kernel had routed it into the
// device; Read returns it. Inject blocks while QueueLen packets wait to be
// read, and drops pkt once the device is closed.
func (d *Device) Inject(pkt []byte) {
	p := append(d.free.get(), pkt...)
	select {
	case <-d.closed:
		return
	default:
	}
	select {
	case d.in <- p:
	case <-d.closed:
	}
}

// Written delivers a copy of each packet written to the device, in order.
// It is never closed (a test that selects on it with a timeout must not
// mistake shutdown for a packet); packets written before Close stay in it.
func (d *Device) Written() <-chan []byte { return d.out }

// Read returns the injected packets that are ready, at least one, up to
// min(len(bufs), batch), each copied to bufs[i][offset:] (truncated to the
// buffer if longer).
func (d *Device) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	n := min(len(bufs), d.batch)
	if n == 0 {
		return 0, nil
	}
	if len(sizes) < n {
		return 0, fmt.Errorf("read tun %q: %d sizes for %d buffers", d.name, len(sizes), n)
	}
	for i := range bufs[:n] {
		if offset < 0 || offset >= len(bufs[i]) {
			return 0, fmt.Errorf("read tun %q: offset %d outside a %d-byte buffer", d.name, offset, len(bufs[i]))
		}
	}
	// Closed wins over queued packets, as on a real device.
	select {
	case <-d.closed:
		return 0, d.closedErr("read")
	default:
	}
	var p []byte
	select {
	case p = <-d.in:
	case <-d.closed:
		return 0, d.closedErr("read")
	}
	sizes[0] = copy(bufs[0][offset:], p)
	d.free.put(p)
	got := 1
	for got < n {
		select {
		case p = <-d.in:
			sizes[got] = copy(bufs[got][offset:], p)
			d.free.put(p)
			got++
		default:
			return got, nil
		}
	}
	return got, nil
}

// Write copies each bufs[i][offset:] to Written. An empty packet is
// refused, as the kernel refuses it, and the rest still go. Write blocks
// while QueueLen packets wait in Written; Close unblocks it.
func (d *Device) Write(bufs [][]byte, offset int) (int, error) {
	d.wmu.Lock()
	defer d.wmu.Unlock()
	written := 0
	var first error
	for i, b := range bufs {
		select {
		case <-d.closed:
			return written, d.closedErr("write")
		default:
		}
		if offset < 0 || offset >= len(b) {
			if first == nil {
				first = fmt.Errorf("write tun %q: packet %d: offset %d leaves nothing of %d bytes", d.name, i, offset, len(b))
			}
			continue
		}
		select {
		case d.out <- append(d.free.get(), b[offset:]...):
			written++
		case <-d.closed:
			return written, d.closedErr("write")
		}
	}
	return written, first
}

func (d *Device) closedErr(op string) error {
	return fmt.Errorf("%s tun %q: %w", op, d.name, tunnel.ErrClosed)
}

// BatchSize is the batch given to NewDevice.
func (d *Device) BatchSize() int { return d.batch }

// MTU is the mtu given to NewDevice.
func (d *Device) MTU() (int, error) { return d.mtu, nil }

// Name is the name given to NewDevice.
func (d *Device) Name() string { return d.name }

// Close unblocks pending Reads, Writes and Injects; from then on Read and
// Write return an error matching tunnel.ErrClosed. Later calls do nothing.
func (d *Device) Close() error {
	d.closeOnce.Do(func() { close(d.closed) })
	return nil
}

// freeList recycles packet buffers without allocating (a sync.Pool of
// slices would box each slice header it holds).
type freeList chan []byte

func newFreeList() freeList { return make(freeList, 2*QueueLen) }

// get returns an empty buffer with room for any packet.
func (f freeList) get() []byte {
	select {
	case b := <-f:
		return b[:0]
	default:
		return make([]byte, 0, 65536)
	}
}

// put keeps b for reuse if there is room; buffers the fake did not make
// are welcome too.
func (f freeList) put(b []byte) {
	if cap(b) < 65536 {
		return
	}
	select {
	case f <- b:
	default:
	}
}
