package node

import (
	"context"
	"net/netip"

	"vxrouter/masq"
)

// prepareMasq finds out, before the node takes a lease, whether this
// host can masquerade as --ip-masq asks (the tool is there, the kernel
// takes every rule), so that a node that cannot fails with nothing done.
func (n *Node) prepareMasq() error {
	if !n.cfg.IPMasq {
		return nil
	}
	// Each family the overlay carries, as flannel masquerades each.
	var clusters []netip.Prefix
	for _, c := range []netip.Prefix{n.overlay.Network, n.overlay.IPv6Network} {
		if c.IsValid() {
			clusters = append(clusters, c)
		}
	}
	m, err := masq.New(clusters, masq.Options{
		NFTables:           n.overlay.EnableNFTables,
		RandomFullyDisable: n.cfg.IPMasqRandomFullyDisable,
		Log:                n.log,
	})
	if err != nil {
		return err
	}
	n.masq = m
	return nil
}

// writeMasq puts the rules in for the node's lease.
func (n *Node) writeMasq() error {
	if n.masq == nil {
		return nil
	}
	var nets []masq.Network
	for _, r := range n.tunRoutes() {
		nets = append(nets, masq.Network{Cluster: r.network, Pod: r.subnet})
	}
	return n.masq.Write(nets)
}

// removeMasq takes out the rules writeMasq put in, if it did: for a
// start that fails after it.
func (n *Node) removeMasq() {
	if n.masq == nil {
		return
	}
	if err := n.masq.Remove(); err != nil {
		n.log.Warn("ip masquerade: could not remove the rules", "err", err)
	}
}

// keepMasq checks the rules every --iptables-resync until ctx ends.
func (n *Node) keepMasq(ctx context.Context) error {
	n.masq.Run(ctx, n.cfg.IPTablesResync)
	return nil
}
