package lab

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"vxrouter/lease"
)

// NodeOptions say how to start a vxrouter node in a host.
type NodeOptions struct {
	Binary string   // the vxrouter binary
	Etcd   string   // an etcd endpoint reachable from the host's namespace (unix:// works from any)
	Dir    string   // the node's state directory; subnet.env and the log go in it too
	Args   []string // more flags for `vxrouter run`
	Env    []string // KEY=VALUE added to the caller's environment, e.g. another PATH
	// Underlay is the flags that choose the underlay interface (--iface,
	// --iface-regex, --iface-can-reach, --public-ip); default
	// "--iface eth0".
	Underlay []string
	// Detach starts the node in a session of its own, so a terminal's
	// Ctrl-C or hangup reaches only the caller, which stops it in order,
	// and a node can outlive the caller (`vxrouter demo --keep`).
	Detach bool
}

// Node is a vxrouter process running in a host's namespace.
type Node struct {
	Host       *Host
	Dir        string
	SubnetFile string
	LogFile    string
	// AdminSocket is the node's admin endpoint (see Counters and Peers).
	AdminSocket string

	cmd     *exec.Cmd
	started time.Time // just before the process started
	done    chan struct{}
	err     error // set before done closes
	once    sync.Once
}

// StartVXRouter starts `vxrouter run` in the host's namespace, with the
// host's eth0 as underlay unless o.Underlay says otherwise, and returns
// at once; WaitSubnet tells when it is up.
func (h *Host) StartVXRouter(o NodeOptions) (*Node, error) {
	if err := os.MkdirAll(o.Dir, 0o755); err != nil {
		return nil, err
	}
	n := &Node{
		Host:        h,
		Dir:         o.Dir,
		SubnetFile:  filepath.Join(o.Dir, "subnet.env"),
		LogFile:     filepath.Join(o.Dir, "vxrouter.log"),
		AdminSocket: filepath.Join(o.Dir, "admin.sock"),
		done:        make(chan struct{}),
	}
	logf, err := os.OpenFile(n.LogFile, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	underlay := o.Underlay
	if underlay == nil {
		underlay = []string{"--iface", UnderlayDev}
	}
	args := []string{"netns", "exec", h.NS, o.Binary, "run", "--etcd-endpoints", o.Etcd}
	args = append(args, underlay...)
	args = append(args,
		"--state-dir", o.Dir,
		"--subnet-file", n.SubnetFile,
		"--admin-socket", n.AdminSocket,
	)
	args = append(args, o.Args...)
	n.cmd = exec.Command("ip", args...)
	if len(o.Env) > 0 {
		n.cmd.Env = append(os.Environ(), o.Env...)
	}
	n.cmd.Stdout, n.cmd.Stderr = logf, logf
	if o.Detach {
		n.cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	}
	n.started = time.Now()
	if err := n.cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("start vxrouter in %s: %w", h.NS, err)
	}
	go func() {
		n.err = n.cmd.Wait()
		logf.Close()
		close(n.done)
	}()
	return n, nil
}

// Pid is the node's process id.
func (n *Node) Pid() int { return n.cmd.Process.Pid }

// Done is closed when the process has exited.
func (n *Node) Done() <-chan struct{} { return n.done }

// WaitSubnet waits until the node has written its subnet.env, and returns
// it. It fails early, with the node's log, if the process exits. A file
// from before the node started (a restart in the same directory) does not
// count: the node writes its own once it is up.
func (n *Node) WaitSubnet(ctx context.Context) (lease.SubnetEnv, error) {
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		if fi, err := os.Stat(n.SubnetFile); err == nil && !fi.ModTime().Before(n.started) {
			if env, err := lease.ReadSubnetEnv(n.SubnetFile); err == nil {
				return env, nil
			}
		}
		select {
		case <-ctx.Done():
			return lease.SubnetEnv{}, fmt.Errorf("node %s wrote no subnet.env: %w\n%s", n.Host.Name, ctx.Err(), n.Log())
		case <-n.done:
			return lease.SubnetEnv{}, fmt.Errorf("node %s exited (%v):\n%s", n.Host.Name, n.err, n.Log())
		case <-tick.C:
		}
	}
}

// Stop sends SIGTERM, as Ctrl-C or a service manager would, and waits for
// the node to exit; after timeout it kills it. It returns the exit error,
// nil for a clean exit.
func (n *Node) Stop(timeout time.Duration) error {
	n.once.Do(func() {
		n.cmd.Process.Signal(syscall.SIGTERM)
	})
	select {
	case <-n.done:
	case <-time.After(timeout):
		n.cmd.Process.Kill()
		<-n.done
		return fmt.Errorf("node %s did not stop within %s after SIGTERM; killed", n.Host.Name, timeout)
	}
	var ee *exec.ExitError
	if errors.As(n.err, &ee) {
		return fmt.Errorf("node %s exited: %w\n%s", n.Host.Name, n.err, n.Log())
	}
	return n.err
}

// Log returns the node's log so far.
func (n *Node) Log() string {
	b, _ := os.ReadFile(n.LogFile)
	return string(bytes.TrimSpace(b))
}

// Counters asks the node's admin endpoint for its forwarding counters.
func (n *Node) Counters(ctx context.Context) (map[string]uint64, error) {
	var m map[string]uint64
	return m, n.admin(ctx, "/counters", &m)
}

// NodePeer is one entry of a node's route table, as its admin endpoint
// reports it.
type NodePeer struct {
	Subnet      string `json:"subnet"`
	PublicIP    string `json:"public_ip"`
	Port        uint16 `json:"port"`
	VtepMAC     string `json:"vtep_mac"`
	PartialCsum bool   `json:"partial_checksums"`
	DirectRoute string `json:"direct_route"` // the via address of its direct route, if any
}

// Peers asks the node's admin endpoint for its route table.
func (n *Node) Peers(ctx context.Context) ([]NodePeer, error) {
	var p []NodePeer
	return p, n.admin(ctx, "/peers", &p)
}

// admin GETs path from the node's admin socket and decodes the JSON.
func (n *Node) admin(ctx context.Context, path string, v any) error {
	c := &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", n.AdminSocket)
		},
	}}
	defer c.CloseIdleConnections()
	req, err := http.NewRequestWithContext(ctx, "GET", "http://node"+path, nil)
	if err != nil {
		return err
	}
	resp, err := c.Do(req)
	if err != nil {
		return fmt.Errorf("node %s admin %s: %w", n.Host.Name, path, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("node %s admin %s: %s", n.Host.Name, path, resp.Status)
	}
	return json.NewDecoder(resp.Body).Decode(v)
}
