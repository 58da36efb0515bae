package lease

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
)

// Embedded is a one-member etcd inside this process, for the demo, for
// one-machine overlays and for tests. Clients reach it on 127.0.0.1 and on
// a unix socket in its directory; the socket is how processes in other
// network namespaces (which have their own loopback) reach it.
type Embedded struct {
	etcd      *embed.Etcd
	clientURL string // http://127.0.0.1:port
	unixURL   string // unix:///abs/dir/etcd.sock
	// level is raised on Close: etcd logs every listener it closes as an
	// error, which is noise at shutdown.
	level zap.AtomicLevel
}

// EmbeddedOptions tune StartEmbeddedWith.
type EmbeddedOptions struct {
	// LogLevel is etcd's zap log level: "debug", "info", "warn" or
	// "error" (the default, so the demo's output stays readable).
	LogLevel string
	// Logger, if set, receives etcd's logs instead (LogLevel is ignored).
	Logger *zap.Logger
	// StartTimeout bounds the wait for etcd to become ready (default 30s).
	StartTimeout time.Duration
}

// maxUnixPath is sun_path's size on Linux minus the terminating NUL.
const maxUnixPath = 107

// StartEmbedded starts a one-member etcd with its data in dir/data and
// waits until it serves.
func StartEmbedded(dir string) (*Embedded, error) {
	return StartEmbeddedWith(dir, EmbeddedOptions{})
}

// StartEmbeddedWith is StartEmbedded with options.
func StartEmbeddedWith(dir string, o EmbeddedOptions) (*Embedded, error) {
	if o.LogLevel == "" {
		o.LogLevel = "error"
	}
	if o.StartTimeout <= 0 {
		o.StartTimeout = 30 * time.Second
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("start embedded etcd in %q: %w", dir, err)
	}
	sock := filepath.Join(abs, "etcd.sock")
	if len(sock) > maxUnixPath {
		return nil, fmt.Errorf("start embedded etcd: socket path %q is %d bytes, longer than the kernel's %d; use a shorter directory", sock, len(sock), maxUnixPath)
	}
	// Ports are picked by binding :0 and closing; another process can take
	// one in between, so a bind failure is retried with fresh ports.
	var last error
	for range 3 {
		e, err := startEmbedded(abs, sock, o)
		if err == nil {
			return e, nil
		}
		last = err
		if !errors.Is(err, syscall.EADDRINUSE) {
			break
		}
	}
	return nil, last
}

func startEmbedded(dir, sock string, o EmbeddedOptions) (*Embedded, error) {
	cport, err := freePort()
	if err != nil {
		return nil, err
	}
	pport, err := freePort()
	if err != nil {
		return nil, err
	}
	clientURL := url.URL{Scheme: "http", Host: fmt.Sprintf("127.0.0.1:%d", cport)}
	// etcd's listener takes Host+Path as the socket path, so an absolute
	// path goes in Path with an empty Host: unix:///abs/dir/etcd.sock.
	unixURL := url.URL{Scheme: "unix", Path: sock}
	peerURL := url.URL{Scheme: "http", Host: fmt.Sprintf("127.0.0.1:%d", pport)}

	cfg := embed.NewConfig()
	cfg.Name = "vxrouter"
	cfg.Dir = filepath.Join(dir, "data")
	cfg.ListenClientUrls = []url.URL{clientURL, unixURL}
	cfg.AdvertiseClientUrls = []url.URL{clientURL}
	cfg.ListenPeerUrls = []url.URL{peerURL}
	cfg.AdvertisePeerUrls = []url.URL{peerURL}
	cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
	cfg.Logger = "zap"
	cfg.LogLevel = o.LogLevel
	level, err := zap.ParseAtomicLevel(o.LogLevel)
	if err != nil {
		return nil, fmt.Errorf("start embedded etcd: log level %q: %w", o.LogLevel, err)
	}
	lg := o.Logger
	if lg == nil {
		zc := zap.NewProductionConfig()
		zc.Level = level
		zc.DisableStacktrace = true
		zc.OutputPaths = []string{"stderr"}
		if lg, err = zc.Build(); err != nil {
			return nil, fmt.Errorf("start embedded etcd: logger: %w", err)
		}
	}
	cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(lg)

	e, err := embed.StartEtcd(cfg)
	if err != nil {
		return nil, fmt.Errorf("start embedded etcd in %s: %w", dir, err)
	}
	select {
	case <-e.Server.ReadyNotify():
	case err := <-e.Err():
		e.Close()
		return nil, fmt.Errorf("start embedded etcd in %s: %w", dir, err)
	case <-time.After(o.StartTimeout):
		e.Server.Stop()
		e.Close()
		return nil, fmt.Errorf("start embedded etcd in %s: not ready after %v", dir, o.StartTimeout)
	}
	return &Embedded{etcd: e, clientURL: clientURL.String(), unixURL: unixURL.String(), level: level}, nil
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// Endpoints returns the client endpoints, the http://127.0.0.1:port one
// first.
func (e *Embedded) Endpoints() []string { return []string{e.clientURL, e.unixURL} }

// UnixEndpoint returns "unix:///<dir>/etcd.sock", which clientv3 and
// etcdctl (--endpoints) accept.
func (e *Embedded) UnixEndpoint() string { return e.unixURL }

// SocketPath returns the unix socket's file path.
func (e *Embedded) SocketPath() string { return strings.TrimPrefix(e.unixURL, "unix://") }

// Client returns a new client of e (over TCP loopback); the caller closes
// it.
func (e *Embedded) Client() (*clientv3.Client, error) {
	return NewClient([]string{e.clientURL})
}

// NewClient connects to etcd at endpoints ("http://host:port" or
// "unix:///path") with a client whose own logging is limited to errors.
func NewClient(endpoints []string) (*clientv3.Client, error) {
	zc := zap.NewProductionConfig()
	zc.Level = zap.NewAtomicLevelAt(zap.ErrorLevel)
	lg, err := zc.Build()
	if err != nil {
		return nil, fmt.Errorf("etcd client logger: %w", err)
	}
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:   endpoints,
		DialTimeout: 5 * time.Second,
		Logger:      lg,
	})
	if err != nil {
		return nil, fmt.Errorf("etcd client for %v: %w", endpoints, err)
	}
	return cli, nil
}

// Close stops etcd and removes its socket; its data stays in dir.
func (e *Embedded) Close() error {
	e.level.SetLevel(zap.FatalLevel)
	e.etcd.Close()
	return nil
}
