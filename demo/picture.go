package demo

import (
	"fmt"
	"net"
	"os"

	"vxrouter/explain"
)

// picture draws the first pod-to-pod journey of the lab, node1's pod to
// node2's, as `vxrouter explain --svg` draws it, with the lab's addresses,
// subnets and VTEP MACs.
func (r *run) picture(path string) error {
	a, b := r.nodes[0], r.nodes[1]
	macA, err := r.vtepMAC(b, a)
	if err != nil {
		return err
	}
	macB, err := r.vtepMAC(a, b)
	if err != nil {
		return err
	}
	o := explain.DefaultOptions()
	o.Src, o.Dst = a.pod.Addr, b.pod.Addr
	o.SrcSubnet, o.DstSubnet = a.env.Subnet.Masked(), b.env.Subnet.Masked()
	o.Network = r.o.Network
	o.SrcNode, o.DstNode = a.Host.Underlay, b.Host.Underlay
	o.SrcMAC, o.DstMAC = macA, macB
	o.MTU = r.lab.MTU()
	j, err := explain.Walk(o)
	if err != nil {
		return err
	}
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("create %s: %w", path, err)
	}
	if err := j.WriteSVG(f); err != nil {
		f.Close()
		os.Remove(path)
		return err
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	r.p("Wrote %s: the path of a ping from %s to %s and its frame on the wire,", path, o.Src, o.Dst)
	r.p("with this lab's addresses (as `vxrouter explain --svg` draws it).")
	return nil
}

// vtepMAC is the VTEP MAC of node of, as node from learned it from its
// lease.
func (r *run) vtepMAC(from, of *node) (net.HardwareAddr, error) {
	peers, err := from.Peers(r.ctx)
	if err != nil {
		return nil, err
	}
	for _, p := range peers {
		if p.Subnet == of.env.Subnet.Masked().String() {
			return net.ParseMAC(p.VtepMAC)
		}
	}
	return nil, fmt.Errorf("%s has no peer for %s's subnet %s", from.name(), of.name(), of.env.Subnet.Masked())
}
