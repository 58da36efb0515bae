package node

import (
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"strings"
	"sync/atomic"

	"github.com/coreos/go-systemd/v22/daemon"

	"vxrouter/route"
)

// phase is where a node is in its life, for /readyz and for the service
// manager.
type phase int32

const (
	phaseStarting phase = iota // in Start: lease, TUN device, subnet.env
	phaseListing               // Start done; the first list of peers not yet applied
	phaseReady                 // all four: lease, TUN device, subnet.env, peers
	phaseStopping              // Run is shutting down
)

func (p phase) String() string {
	switch p {
	case phaseStarting:
		return "starting (lease, TUN device, subnet.env)"
	case phaseListing:
		return "listing peers"
	case phaseReady:
		return "ready"
	case phaseStopping:
		return "stopping"
	}
	return fmt.Sprintf("phase(%d)", int32(p))
}

func (n *Node) phase() phase { return phase(n.ph.Load()) }

// notifier tells a service manager how the node is doing, in systemd's
// notify protocol (sd_notify(3)): READY=1 once the node is ready, STATUS=
// lines as peers come and go, STOPPING=1 when it shuts down. It speaks
// only when the manager asked for it by setting $NOTIFY_SOCKET (systemd
// does for Type=notify). A socket that is missing or refuses is logged
// once and never stops the node: it forwards the same whether anyone
// listens or not.
type notifier struct {
	log    *slog.Logger
	warned atomic.Bool
}

// notify sends state, one or more "KEY=value" lines.
func (s *notifier) notify(state string) {
	_, err := daemon.SdNotify(false, state)
	if err == nil {
		return
	}
	if s.warned.CompareAndSwap(false, true) {
		s.log.Warn("cannot tell the service manager how the node is doing; going on without (said once)",
			"notify-socket", os.Getenv("NOTIFY_SOCKET"), "err", err)
		return
	}
	s.log.Debug("notify socket", "state", state, "err", err)
}

// status sends a STATUS= line (what `systemctl status` shows).
func (s *notifier) status(format string, args ...any) {
	s.notify("STATUS=" + fmt.Sprintf(format, args...))
}

// peersApplied is called after each batch of peer changes reached the
// route table, with what the batch did (describePeers). The first batch,
// the whole list, makes the node ready.
func (n *Node) peersApplied(what string) {
	peers := n.table.Len()
	status := fmt.Sprintf("forwarding for %s: %d peers", n.ownSubnets(), peers)
	if peers == 1 {
		status = strings.TrimSuffix(status, "s")
	}
	if n.ph.CompareAndSwap(int32(phaseListing), int32(phaseReady)) {
		n.log.Info("ready", "subnet", n.ownSubnets(), "peers", peers)
		n.notify.notify("READY=1\nSTATUS=" + status)
		return
	}
	if what != "" {
		n.notify.status("%s (%s)", status, what)
	}
}

// ownSubnets names the node's subnets: its IPv4 one, its IPv6 one, or
// both in a dual-stack overlay.
func (n *Node) ownSubnets() string {
	var names []string
	for _, p := range n.lease.Subnets() {
		names = append(names, p.String())
	}
	return strings.Join(names, " and ")
}

// stopping marks the node as shutting down: /readyz says so and the
// service manager hears STOPPING=1.
func (n *Node) stopping() {
	n.ph.Store(int32(phaseStopping))
	n.notify.notify("STOPPING=1\nSTATUS=stopping")
}

// describePeers says in a few words what changes will do to t: which
// subnets join, leave or change, or how many when there are more than
// three. Call it before applying them.
func describePeers(t *route.Table, changes []route.Change) string {
	var joined, left, changed []netip.Prefix
	for _, c := range changes {
		p := t.Lookup(c.Subnet.Addr())
		known := p != nil && p.Subnet == c.Subnet
		switch {
		case c.Delete && known:
			left = append(left, c.Subnet)
		case c.Delete:
		case known:
			changed = append(changed, c.Subnet)
		default:
			joined = append(joined, c.Subnet)
		}
	}
	var parts []string
	add := func(verb string, ps []netip.Prefix) {
		switch {
		case len(ps) == 0:
		case len(joined)+len(left)+len(changed) > 3:
			parts = append(parts, fmt.Sprintf("%d %s", len(ps), verb))
		default:
			for _, p := range ps {
				parts = append(parts, p.String()+" "+verb)
			}
		}
	}
	add("joined", joined)
	add("left", left)
	add("changed", changed)
	return strings.Join(parts, ", ")
}
