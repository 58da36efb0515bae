package tunneltest

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"runtime"
	"sync"
	"testing"
	"time"

	"vxrouter/tunnel"
)

// checkGoroutines fails the test if it leaves goroutines behind.
func checkGoroutines(t *testing.T) {
	before := runtime.NumGoroutine()
	t.Cleanup(func() {
		deadline := time.Now().Add(2 * time.Second)
		for runtime.NumGoroutine() > before && time.Now().Before(deadline) {
			time.Sleep(5 * time.Millisecond)
		}
		if n := runtime.NumGoroutine(); n > before {
			t.Errorf("%d goroutines leaked", n-before)
		}
	})
}

func bufs(n, size int) [][]byte {
	b := make([][]byte, n)
	for i := range b {
		b[i] = make([]byte, size)
	}
	return b
}

func TestDeviceReadBatchesAndHeadroom(t *testing.T) {
	d := NewDevice("fake0", 1400, 4)
	if d.Name() != "fake0" || d.BatchSize() != 4 {
		t.Fatalf("Name, BatchSize = %q, %d", d.Name(), d.BatchSize())
	}
	if mtu, err := d.MTU(); mtu != 1400 || err != nil {
		t.Fatalf("MTU = %d, %v", mtu, err)
	}
	pkt := []byte{0x45, 1, 2, 3}
	for i := range 6 {
		pkt[3] = byte(i)
		d.Inject(pkt) // must copy: pkt changes under it
	}
	b, sizes := bufs(8, 30), make([]int, 8)
	for i := range b[0][:10] {
		b[0][i] = 0xee
	}
	// Reads return what is ready, up to the batch of 4, never more.
	next := 0
	for _, want := range []int{4, 2} {
		n, err := d.Read(b, sizes, 10)
		if n != want || err != nil {
			t.Fatalf("Read = %d, %v; want %d", n, err, want)
		}
		for i := range n {
			if sizes[i] != 4 || int(b[i][13]) != next {
				t.Fatalf("packet %d: size %d, % x; want 4 bytes ending in %d", i, sizes[i], b[i][10:14], next)
			}
			next++
		}
	}
	if b[0][9] != 0xee {
		t.Error("Read wrote into the headroom")
	}
	// A packet longer than the buffer is truncated.
	d.Inject(make([]byte, 100))
	if n, _ := d.Read(b, sizes, 10); n != 1 || sizes[0] != 20 {
		t.Errorf("long packet: Read = %d, size %d; want 1, 20", n, sizes[0])
	}
	if n, err := d.Read(nil, nil, 0); n != 0 || err != nil {
		t.Errorf("Read with no buffers = %d, %v", n, err)
	}
	if _, err := d.Read(b, sizes[:1], 0); err == nil {
		t.Error("Read with too few sizes succeeded")
	}
}

func TestDeviceWriteCopiesAndSkipsRefused(t *testing.T) {
	d := NewDevice("fake0", 1400, 1)
	in := [][]byte{
		[]byte("hhhhIP-1"),
		[]byte("hhhh"), // nothing after the headroom: refused
		[]byte("hhhhIP-2"),
	}
	n, err := d.Write(in, 4)
	if n != 2 || err == nil {
		t.Fatalf("Write = %d, %v; want 2 and an error", n, err)
	}
	in[0][4] = 'X' // the device must have copied
	for _, want := range []string{"IP-1", "IP-2"} {
		select {
		case got := <-d.Written():
			if string(got) != want {
				t.Errorf("Written %q, want %q", got, want)
			}
		case <-time.After(time.Second):
			t.Fatalf("%s not written", want)
		}
	}
}

func TestDeviceClose(t *testing.T) {
	checkGoroutines(t)
	d := NewDevice("fake0", 1400, 8)
	d.Inject([]byte{0x45})
	errc := make(chan error, 1)
	b, sizes := bufs(8, 64), make([]int, 8)
	if n, err := d.Read(b, sizes, 0); n != 1 || err != nil {
		t.Fatalf("Read = %d, %v", n, err)
	}
	go func() {
		_, err := d.Read(b, sizes, 0)
		errc <- err
	}()
	time.Sleep(20 * time.Millisecond)
	d.Close()
	select {
	case err := <-errc:
		if !errors.Is(err, net.ErrClosed) || !errors.Is(err, tunnel.ErrClosed) {
			t.Fatalf("pending Read returned %v, want net.ErrClosed", err)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("Close did not unblock Read")
	}
	d.Inject([]byte{0x45}) // dropped, must not block
	if _, err := d.Read(b, sizes, 0); !errors.Is(err, net.ErrClosed) {
		t.Errorf("Read after Close = %v", err)
	}
	if _, err := d.Write([][]byte{{0x45}}, 0); !errors.Is(err, net.ErrClosed) {
		t.Errorf("Write after Close = %v", err)
	}
	if err := d.Close(); err != nil {
		t.Errorf("second Close = %v", err)
	}
}

func TestDeviceCloseUnblocksFullWrite(t *testing.T) {
	checkGoroutines(t)
	d := NewDevice("fake0", 1400, 1)
	pkts := make([][]byte, QueueLen+1) // one more than Written holds
	for i := range pkts {
		pkts[i] = []byte{0x45}
	}
	done := make(chan error, 1)
	go func() {
		_, err := d.Write(pkts, 0)
		done <- err
	}()
	select {
	case err := <-done:
		t.Fatalf("Write of more than QueueLen unread packets returned early: %v", err)
	case <-time.After(50 * time.Millisecond):
	}
	d.Close()
	select {
	case err := <-done:
		if !errors.Is(err, net.ErrClosed) {
			t.Errorf("blocked Write returned %v, want net.ErrClosed", err)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("Close did not unblock Write")
	}
}

func TestDeviceOneReaderOneWriter(t *testing.T) {
	checkGoroutines(t)
	d := NewDevice("fake0", 1400, 16)
	const total = 10000
	var wg sync.WaitGroup
	wg.Add(3)
	go func() { // the kernel side, injecting
		defer wg.Done()
		for i := range total {
			d.Inject([]byte{byte(i), byte(i >> 8)})
		}
	}()
	go func() { // the reader
		defer wg.Done()
		b, sizes := bufs(16, 64), make([]int, 16)
		for next := 0; next < total; {
			n, err := d.Read(b, sizes, 0)
			if err != nil {
				t.Error(err)
				return
			}
			for i := range n {
				if got := int(b[i][0]) | int(b[i][1])<<8; got != next {
					t.Errorf("read packet %d, want %d", got, next)
					return
				}
				next++
			}
		}
	}()
	go func() { // the writer, with a consumer of Written
		defer wg.Done()
		go func() {
			for i := range total {
				p := []byte{byte(i), byte(i >> 8)}
				if _, err := d.Write([][]byte{p}, 0); err != nil {
					t.Error(err)
					return
				}
			}
		}()
		for i := range total {
			got := <-d.Written()
			if v := int(got[0]) | int(got[1])<<8; v != i {
				t.Errorf("written packet %d, want %d", v, i)
				return
			}
		}
	}()
	wg.Wait()
	d.Close()
}

func TestNetworkDelivers(t *testing.T) {
	n := NewNetwork()
	a := n.Listen(netip.MustParseAddrPort("10.0.0.1:8472"), 32)
	b := n.Listen(netip.MustParseAddrPort("10.0.0.2:8472"), 4)
	c := n.Listen(netip.MustParseAddrPort("10.0.0.3:0"), 1)
	if c.LocalAddr().Port() == 0 || c.LocalAddr().Addr() != netip.MustParseAddr("10.0.0.3") {
		t.Fatalf("port 0 gave LocalAddr %s", c.LocalAddr())
	}
	if a.BatchSize() != 32 || b.BatchSize() != 4 {
		t.Fatalf("BatchSize = %d, %d", a.BatchSize(), b.BatchSize())
	}
	nowhere := netip.MustParseAddrPort("10.0.0.9:8472")
	out := [][]byte{[]byte("a0"), []byte("lost"), []byte("a1"), []byte("bad"), []byte("a2"), []byte("a3"), []byte("a4")}
	to := []netip.AddrPort{b.LocalAddr(), nowhere, b.LocalAddr(), {}, b.LocalAddr(), b.LocalAddr(), b.LocalAddr()}
	sent, err := a.Write(out, to)
	if sent != 6 || err == nil {
		t.Fatalf("Write = %d, %v; want 6 (the lost one counts as sent) and an error for the zero address", sent, err)
	}
	out[0][0] = 'X' // the network must have copied
	if n.Unrouted() != 1 {
		t.Errorf("Unrouted = %d, want 1", n.Unrouted())
	}
	if _, err := c.Write([][]byte{[]byte("c0")}, []netip.AddrPort{netip.MustParseAddrPort("[::ffff:10.0.0.2]:8472")}); err != nil {
		t.Fatal(err)
	}

	got, sizes, from := bufs(8, 64), make([]int, 8), make([]netip.AddrPort, 8)
	var all []string
	for _, want := range []int{4, 2} { // b's batch is 4
		k, err := b.Read(got, sizes, from)
		if k != want || err != nil {
			t.Fatalf("Read = %d, %v; want %d", k, err, want)
		}
		for i := range k {
			all = append(all, fmt.Sprintf("%s<%s", got[i][:sizes[i]], from[i]))
		}
	}
	wantAll := []string{"a0<10.0.0.1:8472", "a1<10.0.0.1:8472", "a2<10.0.0.1:8472", "a3<10.0.0.1:8472", "a4<10.0.0.1:8472", "c0<" + c.LocalAddr().String()}
	if fmt.Sprint(all) != fmt.Sprint(wantAll) {
		t.Errorf("b read %v\nwant %v", all, wantAll)
	}
}

func TestNetworkWildcardAndReuse(t *testing.T) {
	n := NewNetwork()
	wild := n.Listen(netip.MustParseAddrPort("0.0.0.0:8472"), 8)
	exact := n.Listen(netip.MustParseAddrPort("10.0.0.2:8472"), 8)
	tx := n.Listen(netip.MustParseAddrPort("10.0.0.1:8472"), 8)
	tx.Write([][]byte{[]byte("exact"), []byte("wild")}, []netip.AddrPort{
		netip.MustParseAddrPort("10.0.0.2:8472"), netip.MustParseAddrPort("10.0.0.5:8472")})
	got, sizes, from := bufs(8, 64), make([]int, 8), make([]netip.AddrPort, 8)
	if k, _ := exact.Read(got, sizes, from); k != 1 || string(got[0][:sizes[0]]) != "exact" {
		t.Errorf("exact listener read %d: %q", k, got[0][:sizes[0]])
	}
	if k, _ := wild.Read(got, sizes, from); k != 1 || string(got[0][:sizes[0]]) != "wild" {
		t.Errorf("wildcard listener read %d: %q", k, got[0][:sizes[0]])
	}

	func() {
		defer func() {
			if recover() == nil {
				t.Error("Listen on an address in use did not panic")
			}
		}()
		n.Listen(exact.LocalAddr(), 1)
	}()
	exact.Close()
	again := n.Listen(exact.LocalAddr(), 1) // Close freed the address
	again.Close()
	wild.Close()
	tx.Close()
}

func TestUnderlayClose(t *testing.T) {
	checkGoroutines(t)
	n := NewNetwork()
	u := n.Listen(netip.MustParseAddrPort("10.0.0.1:8472"), 8)
	errc := make(chan error, 1)
	go func() {
		_, err := u.Read(bufs(8, 64), make([]int, 8), make([]netip.AddrPort, 8))
		errc <- err
	}()
	time.Sleep(20 * time.Millisecond)
	u.Close()
	select {
	case err := <-errc:
		if !errors.Is(err, net.ErrClosed) {
			t.Fatalf("pending Read returned %v, want net.ErrClosed", err)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("Close did not unblock Read")
	}
	if _, err := u.Write([][]byte{{1}}, []netip.AddrPort{u.LocalAddr()}); !errors.Is(err, net.ErrClosed) {
		t.Errorf("Write after Close = %v", err)
	}
	// A closed socket's address receives nothing: datagrams to it are unrouted.
	v := n.Listen(netip.MustParseAddrPort("10.0.0.2:8472"), 1)
	defer v.Close()
	if sent, err := v.Write([][]byte{{1}}, []netip.AddrPort{u.LocalAddr()}); sent != 1 || err != nil || n.Unrouted() != 1 {
		t.Errorf("Write to a closed socket = %d, %v, unrouted %d; want 1, nil, 1", sent, err, n.Unrouted())
	}
}

func TestUnderlayDropsWhenFull(t *testing.T) {
	n := NewNetwork()
	rx := n.Listen(netip.MustParseAddrPort("10.0.0.2:8472"), 1)
	tx := n.Listen(netip.MustParseAddrPort("10.0.0.1:8472"), 1)
	out := make([][]byte, QueueLen+3)
	to := make([]netip.AddrPort, len(out))
	for i := range out {
		out[i], to[i] = []byte{1}, rx.LocalAddr()
	}
	if sent, err := tx.Write(out, to); sent != len(out) || err != nil {
		t.Fatalf("Write = %d, %v", sent, err)
	}
	if rx.Dropped() != 3 {
		t.Errorf("Dropped = %d, want 3", rx.Dropped())
	}
}
