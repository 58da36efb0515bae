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
// Wireshark and tshark open, a packet every 100 µs: the pod's frame on its
// veth (step 1) and the frame on the underlay (step 5); for a Service or the
// outside then the answer, see PcapSummary. Decode the VXLAN port with
// `tshark -d udp.port==8472,vxlan`.
func (j *Journey) WritePcap(w io.Writer) error {
	pw := pcapgo.NewWriter(w)
	if err := pw.WriteFileHeader(65535, layers.LinkTypeEthernet); err != nil {
		return fmt.Errorf("write pcap header: %w", err)
	}
	for i, frame := range j.pcapFrames() {
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

// pcapFrames are the frames WritePcap writes, in order.
func (j *Journey) pcapFrames() [][]byte {
	switch {
	case j.out != nil:
		return [][]byte{j.frames.Veth, j.frames.Wire, j.out.replyWire, j.frames.Reply}
	case j.svc != nil:
		return [][]byte{j.frames.Veth, j.frames.Wire, j.frames.Reply}
	}
	return [][]byte{j.frames.Veth, j.frames.Wire}
}

// PcapSummary says what WritePcap writes, packet by packet.
func (j *Journey) PcapSummary() string {
	switch {
	case j.out != nil:
		return "4 packets (1: the pod's frame on its veth, 2: the masqueraded frame on node A's eth0, 3: the answer on eth0, 4: the answer on the pod's veth)"
	case j.svc != nil:
		return "3 packets (1: the pod's frame on its veth, 2: the frame on the underlay after DNAT, 3: the answer on the pod's veth)"
	}
	return "2 packets (1: the pod's frame on its veth, 2: the frame on the underlay)"
}
