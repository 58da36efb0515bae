package tunnel

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// listen opens a UDP socket on addr (port 0) that the test closes.
func listen(t testing.TB, addr string) *UDP {
	t.Helper()
	u, err := ListenUDP(netip.AddrPortFrom(netip.MustParseAddr(addr), 0))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { u.Close() })
	return u
}

// datagram builds datagram i from a sender: a 4-byte sender tag, a 4-byte
// index, then bytes that depend on both; sizes vary from 8 to ~1.5 KB.
func datagram(tag uint32, i int) []byte {
	size := 8 + (i*397+int(tag)*31)%1465
	b := make([]byte, size)
	binary.BigEndian.PutUint32(b[0:4], tag)
	binary.BigEndian.PutUint32(b[4:8], uint32(i))
	for j := 8; j < size; j++ {
		b[j] = byte(int(tag) + i*7 + j)
	}
	return b
}

// received is one datagram as Read returned it.
type received struct {
	data []byte
	from netip.AddrPort
}

// readN reads from u until want datagrams came or 5 s passed, and returns
// them with the largest count one Read returned.
func readN(t *testing.T, u *UDP, want int) (got []received, maxRead int) {
	t.Helper()
	return readNFrom(t, u, want, false)
}

// readNFrom is readN through ReadViews when views is set; it then also
// checks that each view ends, capacity included, with its datagram.
func readNFrom(t *testing.T, u *UDP, want int, views bool) (got []received, maxRead int) {
	t.Helper()
	u.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	defer u.conn.SetReadDeadline(time.Time{})
	bufs := make([][]byte, MaxBatch)
	for i := range bufs {
		bufs[i] = make([]byte, 2048)
	}
	sizes := make([]int, MaxBatch)
	from := make([]netip.AddrPort, MaxBatch)
	for len(got) < want {
		var n int
		var err error
		if views {
			n, err = u.ReadViews(bufs, from)
			for i := range n {
				if cap(bufs[i]) != len(bufs[i]) {
					t.Fatalf("view of %d bytes has capacity %d: a writer could overrun the next datagram", len(bufs[i]), cap(bufs[i]))
				}
				sizes[i] = len(bufs[i])
			}
		} else {
			n, err = u.Read(bufs, sizes, from)
		}
		if err != nil {
			t.Fatalf("after %d of %d datagrams: %v", len(got), want, err)
		}
		maxRead = max(maxRead, n)
		for i := range n {
			got = append(got, received{append([]byte(nil), bufs[i][:sizes[i]]...), from[i]})
		}
	}
	return got, maxRead
}

func TestUDPExchangesBatches(t *testing.T) {
	for _, fam := range []struct{ name, addr string }{{"IPv4", "127.0.0.1"}, {"IPv6", "::1"}} {
		for _, batch := range []int{1, 32, 128} {
			t.Run(fmt.Sprintf("%s/batch=%d", fam.name, batch), func(t *testing.T) {
				rx := listen(t, fam.addr)
				// Two senders, so the source address of each datagram matters.
				senders := []*UDP{listen(t, fam.addr), listen(t, fam.addr)}
				for s, tx := range senders {
					bufs := make([][]byte, batch)
					to := make([]netip.AddrPort, batch)
					for i := range bufs {
						bufs[i] = datagram(uint32(s), i)
						to[i] = rx.LocalAddr()
					}
					if n, err := tx.Write(bufs, to); n != batch || err != nil {
						t.Fatalf("sender %d: Write = %d, %v; want %d, nil", s, n, err, batch)
					}
				}

				got, maxRead := readN(t, rx, 2*batch)
				next := make([]int, len(senders)) // loopback keeps each sender's order
				for k, r := range got {
					if len(r.data) < 8 {
						t.Fatalf("datagram %d: only %d bytes", k, len(r.data))
					}
					s, i := binary.BigEndian.Uint32(r.data[0:4]), int(binary.BigEndian.Uint32(r.data[4:8]))
					if s >= uint32(len(senders)) {
						t.Fatalf("datagram %d: unknown sender tag %d", k, s)
					}
					if i != next[s] {
						t.Fatalf("sender %d: got datagram %d, want %d", s, i, next[s])
					}
					next[s]++
					if want := datagram(s, i); !bytes.Equal(r.data, want) {
						t.Fatalf("sender %d datagram %d: %d bytes differ from the %d sent", s, i, len(r.data), len(want))
					}
					if r.from != senders[s].LocalAddr() {
						t.Fatalf("sender %d datagram %d: from %s, want %s", s, i, r.from, senders[s].LocalAddr())
					}
				}
				// 2*batch datagrams were queued before the first Read, so
				// recvmmsg must have returned several at once.
				if batch > 1 && maxRead < 2 {
					t.Errorf("largest Read returned %d datagrams; recvmmsg is not batching", maxRead)
				}
				if maxRead > MaxBatch {
					t.Errorf("a Read returned %d datagrams, more than MaxBatch", maxRead)
				}
			})
		}
	}
}

func TestUDPDualStack(t *testing.T) {
	dual := listen(t, "::")
	if got := dual.LocalAddr(); !got.Addr().IsUnspecified() || !got.Addr().Is6() || got.Port() == 0 {
		t.Fatalf("LocalAddr = %s, want [::]:<port>", got)
	}
	v4, v6 := listen(t, "127.0.0.1"), listen(t, "::1")
	port := dual.LocalAddr().Port()
	bufs := [][]byte{[]byte("to v4"), []byte("to v6")}
	if n, err := dual.Write(bufs, []netip.AddrPort{v4.LocalAddr(), v6.LocalAddr()}); n != 2 || err != nil {
		t.Fatalf("Write from [::] to IPv4 and IPv6 = %d, %v; want 2, nil", n, err)
	}
	for _, c := range []struct {
		rx   *UDP
		want string
		from netip.AddrPort
	}{
		{v4, "to v4", netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), port)},
		{v6, "to v6", netip.AddrPortFrom(netip.MustParseAddr("::1"), port)},
	} {
		got, _ := readN(t, c.rx, 1)
		if string(got[0].data) != c.want || got[0].from != c.from {
			t.Errorf("%s got %q from %s, want %q from %s", c.rx.LocalAddr(), got[0].data, got[0].from, c.want, c.from)
		}
	}

	// An IPv4 peer's datagram reaches the dual-stack socket with an
	// IPv4-mapped source; Read must give it back as plain IPv4.
	dst := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), port)
	if _, err := v4.Write([][]byte{[]byte("hi")}, []netip.AddrPort{dst}); err != nil {
		t.Fatal(err)
	}
	got, _ := readN(t, dual, 1)
	if got[0].from != v4.LocalAddr() || !got[0].from.Addr().Is4() {
		t.Errorf("dual-stack Read: from %s, want %s (plain IPv4)", got[0].from, v4.LocalAddr())
	}
}

func TestUDPWriteSkipsRefusedDatagrams(t *testing.T) {
	tx, rx := listen(t, "127.0.0.1"), listen(t, "127.0.0.1")
	dst := rx.LocalAddr()
	bufs := [][]byte{
		[]byte("first"),
		make([]byte, 70000), // more than UDP carries: EMSGSIZE mid-batch
		[]byte("second"),
		[]byte("to IPv6"), // wrong family for an IPv4 socket
		[]byte("nowhere"), // the zero AddrPort
		[]byte("third"),
	}
	to := []netip.AddrPort{dst, dst, dst, netip.MustParseAddrPort("[::1]:9"), {}, dst}
	n, err := tx.Write(bufs, to)
	if n != 3 {
		t.Errorf("Write sent %d, want 3", n)
	}
	if !errors.Is(err, unix.EMSGSIZE) {
		t.Errorf("Write error = %v, want the first failure, EMSGSIZE", err)
	}
	got, _ := readN(t, rx, 3)
	for i, want := range []string{"first", "second", "third"} {
		if string(got[i].data) != want {
			t.Errorf("datagram %d = %q, want %q", i, got[i].data, want)
		}
	}

	// More datagrams than MaxBatch go out in several sendmmsg calls.
	many := make([][]byte, 3*MaxBatch+5)
	manyTo := make([]netip.AddrPort, len(many))
	for i := range many {
		many[i], manyTo[i] = datagram(9, i), dst
	}
	if n, err := tx.Write(many, manyTo); n != len(many) || err != nil {
		t.Fatalf("Write of %d = %d, %v", len(many), n, err)
	}
	got, _ = readN(t, rx, len(many))
	for i, r := range got {
		if !bytes.Equal(r.data, many[i]) {
			t.Fatalf("datagram %d of %d differs", i, len(many))
		}
	}
}

func TestUDPReadTruncatesLongDatagrams(t *testing.T) {
	tx, rx := listen(t, "127.0.0.1"), listen(t, "127.0.0.1")
	if _, err := tx.Write([][]byte{[]byte("0123456789")}, []netip.AddrPort{rx.LocalAddr()}); err != nil {
		t.Fatal(err)
	}
	rx.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	bufs, sizes, from := [][]byte{make([]byte, 4)}, make([]int, 1), make([]netip.AddrPort, 1)
	n, err := rx.Read(bufs, sizes, from)
	if n != 1 || err != nil || sizes[0] != 4 || string(bufs[0]) != "0123" {
		t.Fatalf("Read = %d, %v, size %d, %q; want 1, nil, 4, \"0123\"", n, err, sizes[0], bufs[0])
	}
}

func TestUDPBadArguments(t *testing.T) {
	u := listen(t, "127.0.0.1")
	if n, err := u.Read(nil, nil, nil); n != 0 || err != nil {
		t.Errorf("Read with no buffers = %d, %v; want 0, nil", n, err)
	}
	bufs := [][]byte{make([]byte, 10), make([]byte, 10)}
	if _, err := u.Read(bufs, make([]int, 1), make([]netip.AddrPort, 2)); err == nil {
		t.Error("Read with too few sizes succeeded")
	}
	if _, err := u.Read(bufs, make([]int, 2), make([]netip.AddrPort, 1)); err == nil {
		t.Error("Read with too few addresses succeeded")
	}
	if _, err := u.Write(bufs, make([]netip.AddrPort, 1)); err == nil {
		t.Error("Write with too few addresses succeeded")
	}
	if _, err := ListenUDP(netip.AddrPort{}); err == nil {
		t.Error("ListenUDP on the zero AddrPort succeeded")
	}
}

func TestUDPCloseUnblocksRead(t *testing.T) {
	u := listen(t, "127.0.0.1")
	errc := make(chan error, 1)
	go func() {
		bufs := [][]byte{make([]byte, 100)}
		_, err := u.Read(bufs, make([]int, 1), make([]netip.AddrPort, 1))
		errc <- err
	}()
	time.Sleep(50 * time.Millisecond) // let Read block in the poller
	if err := u.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	select {
	case err := <-errc:
		if !errors.Is(err, ErrClosed) {
			t.Fatalf("pending Read returned %v, want an error matching ErrClosed", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not unblock Read")
	}
	if _, err := u.Read([][]byte{make([]byte, 10)}, make([]int, 1), make([]netip.AddrPort, 1)); !errors.Is(err, ErrClosed) {
		t.Errorf("Read after Close = %v, want ErrClosed", err)
	}
	if _, err := u.Write([][]byte{{1}}, []netip.AddrPort{netip.MustParseAddrPort("127.0.0.1:9")}); !errors.Is(err, ErrClosed) {
		t.Errorf("Write after Close = %v, want ErrClosed", err)
	}
	if err := u.Close(); err != nil {
		t.Errorf("second Close = %v, want nil", err)
	}
}

func TestUDPSocketBuffers(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: SO_RCVBUFFORCE needs CAP_NET_ADMIN")
	}
	u := listen(t, "127.0.0.1")
	raw, err := u.conn.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range []struct {
		name string
		opt  int
	}{{"SO_RCVBUF", unix.SO_RCVBUF}, {"SO_SNDBUF", unix.SO_SNDBUF}} {
		var v int
		var gerr error
		raw.Control(func(fd uintptr) { v, gerr = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, o.opt) })
		// The kernel reports double what was set (its bookkeeping share).
		if gerr != nil || v < socketBuffer {
			t.Errorf("%s = %d, %v; want >= %d", o.name, v, gerr, socketBuffer)
		}
	}
}

// exchange sends bufs from tx to rx and reads them back; the hot path of
// both directions, as the benchmark and the allocation test use it.
type exchange struct {
	tx, rx *UDP
	out    [][]byte
	to     []netip.AddrPort
	in     [][]byte
	sizes  []int
	from   []netip.AddrPort
	views  bool // read with ReadViews
}

func newExchange(t testing.TB, batch, size int) *exchange {
	e := &exchange{
		tx: listen(t, "127.0.0.1"), rx: listen(t, "127.0.0.1"),
		out: make([][]byte, batch), to: make([]netip.AddrPort, batch),
		in: make([][]byte, batch), sizes: make([]int, batch), from: make([]netip.AddrPort, batch),
	}
	for i := range batch {
		e.out[i] = bytes.Repeat([]byte{byte(i)}, size)
		e.to[i] = e.rx.LocalAddr()
		e.in[i] = make([]byte, 2048)
	}
	return e
}

func (e *exchange) run() error {
	n, err := e.tx.Write(e.out, e.to)
	if err != nil || n != len(e.out) {
		return fmt.Errorf("write = %d, %v", n, err)
	}
	// A lost datagram must fail the run, not hang it; the deadline is
	// each run's, so a long benchmark is not cut short.
	e.rx.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	for got := 0; got < n; {
		var k int
		var err error
		if e.views {
			k, err = e.rx.ReadViews(e.in, e.from)
		} else {
			k, err = e.rx.Read(e.in, e.sizes, e.from)
		}
		if err != nil {
			return fmt.Errorf("read %d of %d datagrams: %w", got, n, err)
		}
		got += k
	}
	return nil
}

func TestUDPReadWriteDoNotAllocate(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector allocates")
	}
	e := newExchange(t, 32, 1400)
	var err error
	allocs := testing.AllocsPerRun(200, func() {
		if rerr := e.run(); rerr != nil && err == nil {
			err = rerr
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	if allocs != 0 {
		t.Errorf("Write+Read of 32 datagrams: %v allocations, want 0", allocs)
	}
}

func BenchmarkUDPWriteRead(b *testing.B) {
	const size = 1400 // a VXLAN datagram carrying a ~1350-byte packet
	for _, batch := range []int{1, 32, 128} {
		b.Run(fmt.Sprintf("batch=%d", batch), func(b *testing.B) {
			e := newExchange(b, batch, size)
			b.SetBytes(int64(batch * size))
			b.ReportAllocs()
			iters := 0
			for b.Loop() {
				if err := e.run(); err != nil {
					b.Fatal(err)
				}
				iters++
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(iters*batch), "ns/datagram")
		})
	}
}
