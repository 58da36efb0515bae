package e2e

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"vxrouter/lab"
	"vxrouter/lease"
)

// Helpers for the tests where etcd goes away, comes back, is compacted or
// is edited by an operator while vxrouter nodes run.

// stopEtcd stops the overlay's etcd. Its data stays on disk and its unix
// socket (the nodes' endpoint) disappears until startEtcd.
func (o *overlay) stopEtcd() {
	o.t.Helper()
	o.cli.Close()
	o.cli = nil
	o.etcd.Close()
	o.etcd = nil
	if _, err := os.Stat(filepath.Join(o.dir, "etcd", "etcd.sock")); err == nil {
		o.t.Fatal("etcd's unix socket is still there after Close")
	}
}

// startEtcd starts etcd again on the same data directory. Its TCP port
// is new; its unix socket, the nodes' endpoint, is where it was.
func (o *overlay) startEtcd() {
	o.t.Helper()
	e, err := lease.StartEmbedded(filepath.Join(o.dir, "etcd"))
	if err != nil {
		o.t.Fatal(err)
	}
	o.etcd = e
	if o.cli, err = e.Client(); err != nil {
		o.t.Fatal(err)
	}
	o.reg = lease.NewRegistry(o.cli, lease.DefaultPrefix, o.log)
}

// ownKey checks that subnet's key says n owns it: n's PublicIP and VTEP
// MAC, on an etcd lease that is alive. It returns that lease and its
// remaining TTL.
func (o *overlay) ownKey(ctx context.Context, n *lab.Node, subnet netip.Prefix) (clientv3.LeaseID, int64, error) {
	mac, err := os.ReadFile(filepath.Join(n.Dir, "vtep-mac"))
	if err != nil {
		return 0, 0, err
	}
	key := o.reg.Key(subnet)
	resp, err := o.cli.Get(ctx, key)
	if err != nil {
		return 0, 0, err
	}
	if len(resp.Kvs) == 0 {
		return 0, 0, fmt.Errorf("%s: no such key", key)
	}
	kv := resp.Kvs[0]
	a, err := lease.ParseAttrs(kv.Value)
	if err != nil {
		return 0, 0, fmt.Errorf("%s: %w", key, err)
	}
	if a.PublicIP != n.Host.Underlay || a.VtepMAC.String() != strings.TrimSpace(string(mac)) {
		return 0, 0, fmt.Errorf("%s = %s, want PublicIP %s and VtepMAC %s", key, kv.Value, n.Host.Underlay, mac)
	}
	id := clientv3.LeaseID(kv.Lease)
	if id == 0 {
		return 0, 0, fmt.Errorf("%s has no etcd lease", key)
	}
	ttl, err := o.cli.TimeToLive(ctx, id)
	if err != nil {
		return 0, 0, fmt.Errorf("%s: lease %x: %w", key, int64(id), err)
	}
	if ttl.TTL <= 0 {
		return 0, 0, fmt.Errorf("%s: lease %x has TTL %d", key, int64(id), ttl.TTL)
	}
	return id, ttl.TTL, nil
}

// within retries f every 100 ms until it returns nil; after d the test
// fails with f's last error.
func (o *overlay) within(d time.Duration, what string, f func() error) {
	o.t.Helper()
	deadline := time.Now().Add(d)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) || o.ctx.Err() != nil {
			o.t.Fatalf("%s: not within %s: %v", what, d, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// alive fails the test if n has exited.
func (o *overlay) alive(n *lab.Node) {
	o.t.Helper()
	select {
	case <-n.Done():
		o.t.Fatalf("node %s exited:\n%s", n.Host.Name, n.Log())
	default:
	}
}

// knows reports whether n's route table has subnet.
func knows(ctx context.Context, n *lab.Node, subnet netip.Prefix) (bool, error) {
	peers, err := n.Peers(ctx)
	if err != nil {
		return false, err
	}
	for _, p := range peers {
		if p.Subnet == subnet.String() {
			return true, nil
		}
	}
	return false, nil
}

// reach is mustPing for goroutines: it waits up to 20s for a first
// answer, then wants 3 of 3.
func reach(ctx context.Context, from, to *lab.Pod) error {
	if err := from.WaitReachable(ctx, to.Addr, 20*time.Second); err != nil {
		return err
	}
	if res, err := from.Ping(ctx, to.Addr, 3); err != nil {
		return fmt.Errorf("%s -> %s: %d/3 replies: %w\n%s", from.Addr, to.Addr, res.Received, err, res.Output)
	}
	return nil
}

// pinger pings from one pod to another, 5 per second, until stopped, and
// counts. It shows that the data plane rides out what happens meanwhile.
type pinger struct {
	stop chan struct{}
	done chan struct{}

	sent, received int
	lost           []string // transcripts of rounds with losses
}

func startPinger(ctx context.Context, from, to *lab.Pod) *pinger {
	p := &pinger{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(p.done)
		for {
			select {
			case <-p.stop:
				return
			default:
			}
			res, err := from.Ping(ctx, to.Addr, 5)
			p.sent += res.Sent
			p.received += res.Received
			if err != nil {
				p.lost = append(p.lost, fmt.Sprintf("%s -> %s: %v\n%s", from.Addr, to.Addr, err, res.Output))
			}
			if ctx.Err() != nil {
				return
			}
		}
	}()
	return p
}

// finish stops the pinger after its current round and returns sent and
// received echoes and the transcripts of lossy rounds.
func (p *pinger) finish() (sent, received int, lost []string) {
	close(p.stop)
	<-p.done
	return p.sent, p.received, p.lost
}

// etcdRelay passes a unix socket through to etcd's, and can be cut and
// restored: a network partition between one node and etcd while etcd
// itself stays up for everyone else.
type etcdRelay struct {
	path, target string

	mu    sync.Mutex
	ln    net.Listener // nil while cut
	conns map[net.Conn]struct{}
	wg    sync.WaitGroup
}

// relay starts a relay to the overlay's etcd with its socket in the
// test's directory.
func (o *overlay) relay(name string) *etcdRelay {
	o.t.Helper()
	r := &etcdRelay{
		path:   filepath.Join(o.dir, name+".sock"),
		target: o.etcd.SocketPath(),
		conns:  make(map[net.Conn]struct{}),
	}
	if err := r.restore(); err != nil {
		o.t.Fatal(err)
	}
	o.t.Cleanup(func() {
		r.cut()
		r.wg.Wait()
	})
	return r
}

func (r *etcdRelay) endpoint() string { return "unix://" + r.path }

// restore listens again: the node's next connection attempt gets through.
func (r *etcdRelay) restore() error {
	ln, err := net.Listen("unix", r.path)
	if err != nil {
		return fmt.Errorf("etcd relay: %w", err)
	}
	r.mu.Lock()
	r.ln = ln
	r.mu.Unlock()
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			r.wg.Add(1)
			go func() {
				defer r.wg.Done()
				r.serve(ln, c)
			}()
		}
	}()
	return nil
}

// cut closes the socket (removing its file) and every connection through
// it: the node's etcd requests fail until restore.
func (r *etcdRelay) cut() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.ln != nil {
		r.ln.Close()
		r.ln = nil
	}
	for c := range r.conns {
		c.Close()
	}
	clear(r.conns)
}

func (r *etcdRelay) serve(ln net.Listener, c net.Conn) {
	u, err := net.Dial("unix", r.target)
	if err != nil {
		c.Close()
		return
	}
	r.mu.Lock()
	if r.ln != ln { // cut meanwhile
		r.mu.Unlock()
		c.Close()
		u.Close()
		return
	}
	r.conns[c], r.conns[u] = struct{}{}, struct{}{}
	r.mu.Unlock()

	done := make(chan struct{}, 2)
	// When either side ends, both close: that is what a partition or a
	// dead etcd looks like to the node.
	pipe := func(dst, src net.Conn) {
		io.Copy(dst, src)
		done <- struct{}{}
	}
	go pipe(u, c)
	go pipe(c, u)
	<-done
	c.Close()
	u.Close()
	<-done
	r.mu.Lock()
	delete(r.conns, c)
	delete(r.conns, u)
	r.mu.Unlock()
}

// logSince returns n's log after the first `from` bytes.
func logSince(n *lab.Node, from int) string {
	l := n.Log()
	if from > len(l) {
		return ""
	}
	return l[from:]
}
