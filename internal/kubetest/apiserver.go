// Package kubetest runs a real kube-apiserver for tests, on an etcd the
// test gives it: the Kubernetes mode's tests talk to what a cluster runs,
// never to a fake. .ci/kube-apiserver/build.sh builds the binary; tests
// find it through VXROUTER_KUBE_APISERVER (Binary).
package kubetest

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"k8s.io/client-go/rest"

	"vxrouter/internal/nettest"
	"vxrouter/lease"
)

// EnvBinary names the kube-apiserver binary for the tests.
const EnvBinary = "VXROUTER_KUBE_APISERVER"

// Binary returns the kube-apiserver to test with. Without one, the test
// skips, except in CI (CI set), where .ci/run provides it and its absence
// is a failure.
func Binary(t testing.TB) string {
	t.Helper()
	p := os.Getenv(EnvBinary)
	why := EnvBinary + " is not set"
	if p != "" {
		if _, err := os.Stat(p); err == nil {
			return p
		} else {
			why = err.Error()
		}
	}
	msg := "needs a kube-apiserver (" + why + "): build one with .ci/kube-apiserver/build.sh and set " + EnvBinary + " to the path it prints"
	if os.Getenv("CI") != "" {
		t.Fatal(msg)
	}
	t.Skip(msg)
	return ""
}

// User is one static token the API server accepts.
type User struct {
	Name, Token string
	Groups      []string
}

// Options say how to run the API server.
type Options struct {
	Binary string // kube-apiserver
	Dir    string // certificates, keys, tokens and its log
	Etcd   string // an etcd client URL it can reach: http://… or unix:///…
	// Addr and Port are where it serves (HTTPS). Default 127.0.0.1 and a
	// free port.
	Addr netip.Addr
	Port int
	// AdminToken is the admin's token (group system:masters); default a
	// random one. An API server started again with the same keeps its
	// clients.
	AdminToken string
	// Users are tokens besides the admin's.
	Users []User
	// RBAC authorizes by RBAC instead of allowing everything.
	RBAC bool
	// Command makes the command that runs it (default exec.Command);
	// e.g. one that runs it in a network namespace. Dial, if set, is how
	// the tests' clients reach it then.
	Command func(name string, args ...string) *exec.Cmd
	Dial    func(ctx context.Context, network, addr string) (net.Conn, error)
	// Timeout bounds the wait until it is ready (default 60s; it takes
	// 2.5 to 4.5 s on an idle machine of 2 CPUs).
	Timeout time.Duration
}

// APIServer is a running kube-apiserver.
type APIServer struct {
	URL        string // https://addr:port
	AdminToken string
	LogFile    string
	o          Options
	cmd        *exec.Cmd
	done       chan struct{}
	err        error
}

// Start starts the API server and waits until /readyz says it is ready.
func Start(ctx context.Context, o Options) (*APIServer, error) {
	if !o.Addr.IsValid() {
		o.Addr = netip.AddrFrom4([4]byte{127, 0, 0, 1})
	}
	if o.Command == nil {
		o.Command = exec.Command
	}
	if o.Timeout == 0 {
		o.Timeout = 60 * time.Second
	}
	if o.AdminToken == "" {
		o.AdminToken = randHex(16)
	}
	a := &APIServer{o: o, AdminToken: o.AdminToken, LogFile: filepath.Join(o.Dir, "kube-apiserver.log")}
	if err := a.prepare(); err != nil {
		return nil, err
	}
	// A free port can be taken between looking and binding: try again.
	var err error
	for range 3 {
		port := o.Port
		if port == 0 {
			if port, err = freePort(); err != nil {
				return nil, err
			}
		}
		if err = a.start(ctx, port); err == nil || o.Port != 0 || !strings.Contains(err.Error(), "address already in use") {
			break
		}
	}
	return a, err
}

// prepare writes the token file and the service-account key.
func (a *APIServer) prepare() error {
	var tokens bytes.Buffer
	users := append([]User{{Name: "admin", Token: a.AdminToken, Groups: []string{"system:masters"}}}, a.o.Users...)
	for i, u := range users {
		fmt.Fprintf(&tokens, "%s,%s,%d,%q\n", u.Token, u.Name, 1000+i, strings.Join(u.Groups, ","))
	}
	if err := os.WriteFile(filepath.Join(a.o.Dir, "tokens.csv"), tokens.Bytes(), 0o600); err != nil {
		return err
	}
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return fmt.Errorf("service account key: %w", err)
	}
	der, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err != nil {
		return fmt.Errorf("service account key: %w", err)
	}
	priv := pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)})
	pub := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
	if err := os.WriteFile(filepath.Join(a.o.Dir, "sa.key"), priv, 0o600); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(a.o.Dir, "sa.pub"), pub, 0o644)
}

func (a *APIServer) start(ctx context.Context, port int) error {
	d := a.o.Dir
	authz := "AlwaysAllow"
	if a.o.RBAC {
		authz = "RBAC"
	}
	args := []string{
		"--etcd-servers=" + a.o.Etcd,
		"--bind-address=" + a.o.Addr.String(),
		"--advertise-address=" + a.o.Addr.String(),
		"--secure-port=" + strconv.Itoa(port),
		"--cert-dir=" + filepath.Join(d, "certs"),
		"--token-auth-file=" + filepath.Join(d, "tokens.csv"),
		"--authorization-mode=" + authz,
		"--service-account-issuer=https://kubernetes.default.svc",
		"--service-account-key-file=" + filepath.Join(d, "sa.pub"),
		"--service-account-signing-key-file=" + filepath.Join(d, "sa.key"),
		// Configuration only: nothing is ever sent to these addresses.
		"--service-cluster-ip-range=10.96.0.0/16",
		// No Endpoints object for "kubernetes" to keep up: there is no
		// cluster around it.
		"--endpoint-reconciler-type=none",
		"--allow-privileged=true",
		"--enable-priority-and-fairness=false",
		// Open watches (a node's informer) end within a second of
		// SIGTERM, as clients reconnect; without it the server waits
		// for them up to its request timeout, a minute.
		"--shutdown-watch-termination-grace-period=1s",
	}
	logf, err := os.OpenFile(a.LogFile, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	a.cmd = a.o.Command(a.o.Binary, args...)
	a.cmd.Stdout, a.cmd.Stderr = logf, logf
	a.done = make(chan struct{})
	a.URL = "https://" + netip.AddrPortFrom(a.o.Addr, uint16(port)).String()
	if err := a.cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("start kube-apiserver: %w", err)
	}
	go func() {
		a.err = a.cmd.Wait()
		logf.Close()
		close(a.done)
	}()
	if err := a.waitReady(ctx); err != nil {
		a.Close()
		return err
	}
	return nil
}

// waitReady polls /readyz until it answers 200.
func (a *APIServer) waitReady(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, a.o.Timeout)
	defer cancel()
	c := &http.Client{Transport: a.transport(), Timeout: 2 * time.Second}
	defer c.CloseIdleConnections()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	var last string
	for {
		req, _ := http.NewRequestWithContext(ctx, "GET", a.URL+"/readyz", nil)
		req.Header.Set("Authorization", "Bearer "+a.AdminToken)
		resp, err := c.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			last = resp.Status
		} else {
			last = err.Error()
		}
		select {
		case <-a.done:
			return fmt.Errorf("kube-apiserver exited (%v) before it was ready:\n%s", a.err, a.LogTail(40))
		case <-ctx.Done():
			return fmt.Errorf("kube-apiserver not ready within %s (last: %s):\n%s", a.o.Timeout, last, a.LogTail(40))
		case <-tick.C:
		}
	}
}

func (a *APIServer) transport() *http.Transport {
	t := &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}
	if a.o.Dial != nil {
		t.DialContext = a.o.Dial
	}
	return t
}

// REST is a client config for user (the admin's with ""), over Dial if
// the options have one. The server's certificate is its own self-signed
// one: not checked.
func (a *APIServer) REST(token string) *rest.Config {
	if token == "" {
		token = a.AdminToken
	}
	rc := &rest.Config{
		Host:            a.URL,
		BearerToken:     token,
		TLSClientConfig: rest.TLSClientConfig{Insecure: true},
		Timeout:         30 * time.Second,
	}
	if a.o.Dial != nil {
		rc.Dial = a.o.Dial
	}
	return rc
}

// WriteKubeconfig writes a kubeconfig for token (the admin's with "") to
// path, as a node would be given one.
func (a *APIServer) WriteKubeconfig(path, token string) error {
	if token == "" {
		token = a.AdminToken
	}
	kc := fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: test
  cluster:
    server: %s
    insecure-skip-tls-verify: true
users:
- name: node
  user:
    token: %s
contexts:
- name: test
  context:
    cluster: test
    user: node
current-context: test
`, a.URL, token)
	return os.WriteFile(path, []byte(kc), 0o600)
}

// LogTail is the last n lines of the API server's log.
func (a *APIServer) LogTail(n int) string {
	b, _ := os.ReadFile(a.LogFile)
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// Options are the options it runs with (AdminToken filled in): Start them
// again to restart it as it was.
func (a *APIServer) Options() Options { return a.o }

// Close stops the API server: SIGTERM, then SIGKILL after 15 s.
func (a *APIServer) Close() error {
	if a.cmd == nil || a.cmd.Process == nil {
		return nil
	}
	a.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-a.done:
	case <-time.After(15 * time.Second):
		a.cmd.Process.Kill()
		<-a.done
		return errors.New("kube-apiserver did not stop within 15s of SIGTERM; killed")
	}
	return nil
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func randHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// New starts an API server for t, on an embedded etcd of its own unless
// o.Etcd names one, and stops both when t ends. o.Binary defaults to
// Binary(t), o.Dir to a new temporary directory.
func New(t testing.TB, o Options) *APIServer {
	t.Helper()
	if o.Binary == "" {
		o.Binary = Binary(t)
	}
	if o.Dir == "" {
		// Short: the etcd socket's path must fit in 107 bytes.
		// Named with the test run's base, so that a sweep after a killed
		// run removes it and kills the API server whose flags name it.
		d, err := os.MkdirTemp("", "vxrouter-kubetest-"+nettest.Base())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.RemoveAll(d) })
		o.Dir = d
	}
	if o.Etcd == "" {
		dir := filepath.Join(o.Dir, "etcd")
		if err := os.MkdirAll(dir, 0o700); err != nil {
			t.Fatal(err)
		}
		e, err := lease.StartEmbedded(dir)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { e.Close() })
		o.Etcd = e.UnixEndpoint()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	start := time.Now()
	a, err := Start(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("kube-apiserver %s ready in %s", a.URL, time.Since(start).Round(10*time.Millisecond))
	t.Cleanup(func() {
		if err := a.Close(); err != nil {
			t.Error(err)
		}
		if t.Failed() {
			t.Logf("--- kube-apiserver log (last 60 lines)\n%s", a.LogTail(60))
		}
	})
	return a
}
