package explain

import (
	"fmt"
	"io"
	"time"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
	"github.com/google/gopacket/pcapgo"
)

// captureStart is the fixed time of the first packet, so that the same
// options always write the same file.
var captureStart = time.Date(2024, time.January, 1, 12, 0, 0, 0, time.UTC)

// WritePcap writes the journey as a pcap file with link type Ethernet that
// Wireshark and tshark open: packet 1 is the pod's frame on its veth (step
// 1), packet 2 the frame on the underlay (step 5), 100 µs later. Decode the
// VXLAN port with `tshark -d udp.port==8472,vxlan`.
func (j *Journey) WritePcap(w io.Writer) error {
	pw := pcapgo.NewWriter(w)
	if err := pw.WriteFileHeader(65535, layers.LinkTypeEthernet); err != nil {
		return fmt.Errorf("write pcap header: %w", err)
	}
	for i, frame := range [][]byte{j.frames.Veth, j.frames.Wire} {
		ci := gopacket.CaptureInfo{
			Timestamp:     captureStart.Add(time.Duration(i) * 100 * time.Microsecond),
			CaptureLength: len(frame),
			Length:        len(frame),
		}
		if err := pw.WritePacket(ci, frame); err != nil {
			return fmt.Errorf("write pcap packet %d: %w", i+1, err)
		}
	}
	return nil
}
