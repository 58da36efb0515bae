package explain

import (
	"bytes"
	"net/netip"
	"testing"
	"time"

	"github.com/google/gopacket/layers"
	"github.com/google/gopacket/pcapgo"
)

// TestPcap reads the capture back: Ethernet link type, the two frames of
// Frames in order with fixed timestamps, and the same file every time.
func TestPcap(t *testing.T) {
	j := walk(t, func(*Options) {})
	var a, b bytes.Buffer
	if err := j.WritePcap(&a); err != nil {
		t.Fatal(err)
	}
	if err := walk(t, func(*Options) {}).WritePcap(&b); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(a.Bytes(), b.Bytes()) {
		t.Error("two captures of the same journey differ")
	}
	r, err := pcapgo.NewReader(&a)
	if err != nil {
		t.Fatal(err)
	}
	if r.LinkType() != layers.LinkTypeEthernet {
		t.Errorf("link type %v, want Ethernet", r.LinkType())
	}
	f := j.Frames()
	for i, want := range [][]byte{f.Veth, f.Wire} {
		data, ci, err := r.ReadPacketData()
		if err != nil {
			t.Fatalf("packet %d: %v", i+1, err)
		}
		if !bytes.Equal(data, want) || ci.Length != len(want) {
			t.Errorf("packet %d is not the frame of step %d", i+1, []int{1, 5}[i])
		}
		if got := ci.Timestamp.Sub(captureStart); got != time.Duration(i)*100*time.Microsecond {
			t.Errorf("packet %d at %v after the start", i+1, got)
		}
	}
	if _, _, err := r.ReadPacketData(); err == nil {
		t.Error("more than two packets")
	}
}

// FuzzWalk feeds Walk arbitrary options: it must return a journey or an
// error, never panic, and every journey it returns must print.
func FuzzWalk(f *testing.F) {
	d := DefaultOptions()
	f.Add(d.Src.AsSlice(), d.Dst.AsSlice(), uint8(0), 56, uint32(1), uint16(8472), 1500, uint8(24), uint8(24))
	f.Add([]byte{0xfd, 0, 0, 0x16, 0, 0x99, 0, 0, 0, 0, 0, 0, 0, 0, 0, 8}, []byte{0xfd, 0, 0, 0x16, 0, 0x57, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x15}, uint8(1), 0, uint32(1<<24-1), uint16(4789), 9000, uint8(64), uint8(0))
	f.Add([]byte{10, 1, 2, 3}, []byte{10, 1, 2, 4}, uint8(2), 1410, uint32(0), uint16(1), 68, uint8(31), uint8(30))
	f.Fuzz(func(t *testing.T, src, dst []byte, proto uint8, size int, vni uint32, port uint16, mtu int, srcBits, dstBits uint8) {
		o := DefaultOptions()
		o.Src, _ = netip.AddrFromSlice(src)
		o.Dst, _ = netip.AddrFromSlice(dst)
		if srcBits != 0 {
			o.SrcSubnet = netip.PrefixFrom(o.Src, int(srcBits)).Masked()
		}
		if dstBits != 0 {
			o.DstSubnet = netip.PrefixFrom(o.Dst, int(dstBits)).Masked()
		}
		o.Proto = []string{"icmp", "udp", "tcp", "x"}[proto%4]
		o.Size, o.VNI, o.Port, o.MTU = size, vni, port, mtu
		j, err := Walk(o)
		if err != nil {
			return
		}
		var b bytes.Buffer
		if err := j.WriteText(&b); err != nil {
			t.Fatalf("Walk accepted %+v but WriteText failed: %v", o, err)
		}
		if err := j.WritePcap(&b); err != nil {
			t.Fatal(err)
		}
	})
}
