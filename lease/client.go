package lease

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"path"
	"strings"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	grpcbackoff "google.golang.org/grpc/backoff"
)

// DefaultDialTimeout bounds a client's first connection when
// ClientOptions.DialTimeout is zero.
const DefaultDialTimeout = 5 * time.Second

// ClientOptions says where etcd is and how to prove who we are to it: the
// settings flannel users know as --etcd-endpoints, --etcd-cafile,
// --etcd-certfile, --etcd-keyfile, --etcd-username and --etcd-password.
//
// Password is a secret: String and LogValue leave it out, and no error of
// this package contains it, so printing or logging the options is safe.
type ClientOptions struct {
	// Endpoints are "http://host:port", "https://host:port",
	// "unix:///path" or "unixs:///path". All of one kind: https and unixs
	// use TLS, http never does, unix does when TLS files are given.
	Endpoints []string
	// CAFile is a PEM bundle of the CAs that signed etcd's server
	// certificate. Empty means the system's roots (https only).
	CAFile string
	// CertFile and KeyFile are a PEM client certificate and its key, for
	// an etcd started with --client-cert-auth. Both or neither.
	CertFile string
	KeyFile  string
	// Username and Password, for an etcd with auth enabled. Both or
	// neither.
	Username string
	Password string
	// DialTimeout bounds the first connection; DefaultDialTimeout if 0.
	DialTimeout time.Duration
}

// tlsFiles reports whether any TLS file is set.
func (o ClientOptions) tlsFiles() bool { return o.CAFile != "" || o.CertFile != "" || o.KeyFile != "" }

// String describes o without its password.
func (o ClientOptions) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "etcd %s", strings.Join(o.Endpoints, ","))
	if o.CAFile != "" {
		fmt.Fprintf(&b, " ca=%s", o.CAFile)
	}
	if o.CertFile != "" {
		fmt.Fprintf(&b, " cert=%s key=%s", o.CertFile, o.KeyFile)
	}
	if o.Username != "" {
		fmt.Fprintf(&b, " user=%s", o.Username)
	}
	if o.Password != "" {
		b.WriteString(" password=<redacted>")
	}
	return b.String()
}

// LogValue is what slog logs for o: everything but the password.
func (o ClientOptions) LogValue() slog.Value {
	attrs := []slog.Attr{slog.String("endpoints", strings.Join(o.Endpoints, ","))}
	if o.CAFile != "" {
		attrs = append(attrs, slog.String("cafile", o.CAFile))
	}
	if o.CertFile != "" {
		attrs = append(attrs, slog.String("certfile", o.CertFile), slog.String("keyfile", o.KeyFile))
	}
	if o.Username != "" {
		attrs = append(attrs, slog.String("username", o.Username))
	}
	if o.Password != "" {
		attrs = append(attrs, slog.String("password", "<redacted>"))
	}
	return slog.GroupValue(attrs...)
}

// GoString keeps %#v from printing the password too.
func (o ClientOptions) GoString() string { return "lease.ClientOptions{" + o.String() + "}" }

// ClientConfig checks o and turns it into a clientv3.Config: the one place
// vxrouter decides how it talks to etcd. It reads the TLS files now, so a
// missing, unreadable, expired or mismatched file is an error that names
// the file, rather than a handshake that fails later without saying why.
// The config's Logger is left nil (etcd's default: errors only, more with
// ETCD_CLIENT_DEBUG=1).
func ClientConfig(o ClientOptions) (clientv3.Config, error) {
	var cfg clientv3.Config
	if len(o.Endpoints) == 0 {
		return cfg, errors.New("etcd client: no endpoints")
	}
	var secure, plain []string // https/unixs, http
	for _, ep := range o.Endpoints {
		u, err := url.Parse(ep)
		if err != nil || !strings.Contains(ep, "://") {
			return cfg, fmt.Errorf("etcd endpoint %q: want http://host:port, https://host:port, unix:///path or unixs:///path", ep)
		}
		switch u.Scheme {
		case "https", "unixs":
			secure = append(secure, ep)
		case "http":
			plain = append(plain, ep)
		case "unix":
		default:
			return cfg, fmt.Errorf("etcd endpoint %q: scheme %q is not http, https, unix or unixs", ep, u.Scheme)
		}
	}
	// clientv3 picks TLS or not for all endpoints by the first one's
	// scheme, so a mix would silently talk plaintext to some, or fail.
	if len(secure) > 0 && len(plain) > 0 {
		return cfg, fmt.Errorf("etcd endpoints mix TLS (%s) and plaintext (%s): use one kind", secure[0], plain[0])
	}
	if o.tlsFiles() && len(plain) > 0 {
		return cfg, fmt.Errorf("etcd TLS files are set but endpoint %s is plaintext (http:// never uses TLS): write https://", plain[0])
	}
	if (o.CertFile == "") != (o.KeyFile == "") {
		if o.CertFile == "" {
			return cfg, fmt.Errorf("etcd client key %q is set without its certificate: set the certfile too", o.KeyFile)
		}
		return cfg, fmt.Errorf("etcd client certificate %q is set without its key: set the keyfile too", o.CertFile)
	}
	if (o.Username == "") != (o.Password == "") {
		// clientv3 quietly skips auth unless both are set.
		if o.Username == "" {
			return cfg, errors.New("etcd password is set without a username")
		}
		return cfg, fmt.Errorf("etcd username %q is set without a password", o.Username)
	}
	if o.tlsFiles() || len(secure) > 0 {
		tc, err := clientTLS(o)
		if err != nil {
			return cfg, err
		}
		cfg.TLS = tc
	}
	cfg.Endpoints = append([]string(nil), o.Endpoints...)
	cfg.Username = o.Username
	cfg.Password = o.Password
	cfg.DialTimeout = o.DialTimeout
	if cfg.DialTimeout <= 0 {
		cfg.DialTimeout = DefaultDialTimeout
	}
	// Without gRPC keepalives a member whose host vanishes (no RST) holds
	// our watches for as long as TCP takes to give up, many minutes; with
	// them the client moves to another member within seconds. 10s stays
	// above etcd's default --grpc-keepalive-min-time (5s).
	cfg.DialKeepAliveTime = 10 * time.Second
	cfg.DialKeepAliveTimeout = 5 * time.Second
	// gRPC's reconnect backoff grows to two minutes: after a long etcd
	// outage a node would wait that long to notice etcd is back, with its
	// lease running out. Five seconds at most between tries is cheap.
	cfg.DialOptions = append(cfg.DialOptions, grpc.WithConnectParams(grpc.ConnectParams{
		Backoff:           grpcbackoff.Config{BaseDelay: 200 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: 5 * time.Second},
		MinConnectTimeout: 5 * time.Second,
	}))
	return cfg, nil
}

// clientTLS builds the TLS config from o's files.
func clientTLS(o ClientOptions) (*tls.Config, error) {
	tc := &tls.Config{MinVersion: tls.VersionTLS12}
	if o.CAFile != "" {
		b, err := os.ReadFile(o.CAFile)
		if err != nil {
			return nil, fmt.Errorf("read etcd CA file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(b) {
			return nil, fmt.Errorf("etcd CA file %q holds no PEM certificate", o.CAFile)
		}
		tc.RootCAs = pool
	}
	if o.CertFile != "" {
		certPEM, err := os.ReadFile(o.CertFile)
		if err != nil {
			return nil, fmt.Errorf("read etcd client certificate: %w", err)
		}
		keyPEM, err := os.ReadFile(o.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("read etcd client key: %w", err)
		}
		pair, err := tls.X509KeyPair(certPEM, keyPEM)
		if err != nil {
			return nil, fmt.Errorf("etcd client certificate %q and key %q: %w", o.CertFile, o.KeyFile, err)
		}
		leaf, err := x509.ParseCertificate(pair.Certificate[0])
		if err != nil {
			return nil, fmt.Errorf("etcd client certificate %q: %w", o.CertFile, err)
		}
		now := time.Now()
		switch {
		case now.After(leaf.NotAfter):
			return nil, fmt.Errorf("etcd client certificate %q expired on %s", o.CertFile, leaf.NotAfter.UTC().Format(time.RFC3339))
		case now.Before(leaf.NotBefore):
			return nil, fmt.Errorf("etcd client certificate %q is not valid before %s (is the clock right?)", o.CertFile, leaf.NotBefore.UTC().Format(time.RFC3339))
		}
		tc.Certificates = []tls.Certificate{pair}
	}
	return tc, nil
}

// Dial connects to etcd as o says and checks that it answers, so a
// refused certificate, an untrusted server or bad credentials come back
// now, as an error that says which and what to check, instead of as a
// timeout on the first request. It waits at most o.DialTimeout (and not
// past ctx's deadline) for a connection. The caller closes the client.
func Dial(ctx context.Context, o ClientOptions) (*clientv3.Client, error) {
	cfg, err := ClientConfig(o)
	if err != nil {
		return nil, err
	}
	if d, ok := ctx.Deadline(); ok {
		cfg.DialTimeout = max(min(cfg.DialTimeout, time.Until(d)), time.Millisecond)
	}
	// The client outlives Dial's ctx; its own calls take their contexts.
	cfg.Context = context.WithoutCancel(ctx)
	// Block until a connection is up and keep the reason it failed: by
	// default the first request just times out and the TLS or network
	// error behind it is lost. gRPC discourages blocking dials in
	// general; checking a configuration at startup is the case it fits.
	//lint:ignore SA1019 a blocking dial that keeps its error is what a startup check needs (see above)
	cfg.DialOptions = append(cfg.DialOptions, grpc.WithBlock(), grpc.WithReturnConnectionError())
	if cfg.Logger, err = quietLogger(); err != nil {
		return nil, err
	}
	eps := strings.Join(o.Endpoints, ",")
	cli, err := clientv3.New(cfg)
	if err != nil {
		// gRPC keeps only its last connection error, which for a refused
		// client certificate is as often "broken pipe" (the server hung
		// up while we wrote) as the TLS alert. A handshake of our own
		// finds the alert.
		if hint(err, o) == "" && cfg.TLS != nil {
			if perr := probeTLS(ctx, cfg.TLS, o.Endpoints[0]); perr != nil {
				err = fmt.Errorf("%w; a TLS handshake of our own with %s: %w", err, o.Endpoints[0], perr)
			}
		}
		// With auth, New has already asked for a token.
		return nil, fmt.Errorf("connect to etcd %s: %w", eps, explain(err, o))
	}
	// A connection proves TLS; a Status call proves we may talk (with auth
	// enabled it needs a valid user, though no permission). Any endpoint
	// that answers will do.
	sctx, cancel := context.WithTimeout(ctx, cfg.DialTimeout)
	defer cancel()
	errc := make(chan error, len(o.Endpoints))
	for _, ep := range o.Endpoints {
		go func() {
			_, err := cli.Status(sctx, ep)
			if err != nil {
				err = fmt.Errorf("%s: %w", ep, explain(err, o))
			}
			errc <- err
		}()
	}
	var errs []error
	for range o.Endpoints {
		err := <-errc
		if err == nil {
			return cli, nil
		}
		errs = append(errs, err)
	}
	cli.Close()
	return nil, fmt.Errorf("connect to etcd %s: %w", eps, errors.Join(errs...))
}

// quietLogger is a zap logger for clientv3 that shows only errors: its
// warnings repeat, once per retry, what Dial's error already says.
func quietLogger() (*zap.Logger, error) {
	zc := zap.NewProductionConfig()
	zc.Level = zap.NewAtomicLevelAt(zap.ErrorLevel)
	zc.DisableStacktrace = true
	lg, err := zc.Build()
	if err != nil {
		return nil, fmt.Errorf("etcd client logger: %w", err)
	}
	return lg, nil
}

// tlsEndpoints reports whether o's client talks TLS: clientv3 decides by
// the first endpoint.
func tlsEndpoints(o ClientOptions) bool {
	if len(o.Endpoints) == 0 {
		return false
	}
	ep := o.Endpoints[0]
	return strings.HasPrefix(ep, "https://") || strings.HasPrefix(ep, "unixs://") ||
		strings.HasPrefix(ep, "unix://") && o.tlsFiles()
}

// explain wraps err, as clientv3 and gRPC report it, with what it most
// likely means for the operator. The cause stays in the chain.
func explain(err error, o ClientOptions) error {
	if h := hint(err, o); h != "" {
		return fmt.Errorf("%s: %w", h, err)
	}
	if errors.Is(err, context.DeadlineExceeded) || strings.Contains(err.Error(), "deadline exceeded") {
		return fmt.Errorf("no answer in time: is etcd running and reachable there?: %w", err)
	}
	return err
}

// hint says what err most likely means, or "" when it does not know.
func hint(err error, o ClientOptions) string {
	msg := err.Error()
	switch {
	case errors.Is(err, rpctypes.ErrAuthFailed):
		return fmt.Sprintf("etcd rejected username %q or its password", o.Username)
	case errors.Is(err, rpctypes.ErrUserEmpty):
		return "etcd has auth enabled: give a username and password"
	case errors.Is(err, rpctypes.ErrPermissionDenied):
		return fmt.Sprintf("etcd user %q lacks permission; grant its role readwrite on the prefix", o.Username)
	case strings.Contains(msg, "certificate required") && o.CertFile == "":
		return "etcd requires a client certificate: give the certfile and keyfile"
	case strings.Contains(msg, "certificate required") || strings.Contains(msg, "bad certificate") ||
		strings.Contains(msg, "unknown certificate authority"):
		// Go's TLS client sends no certificate at all when ours is not
		// from a CA the server lists, so "required" can mean "refused".
		return fmt.Sprintf("etcd refused our client certificate %q: it must be signed by a CA etcd trusts (its --trusted-ca-file)", o.CertFile)
	case strings.Contains(msg, "certificate signed by unknown authority"):
		return "etcd's server certificate is not signed by a CA we trust: check the CA file"
	case strings.Contains(msg, "certificate is valid for") || strings.Contains(msg, "doesn't contain any IP SANs"):
		return "etcd's server certificate does not name the endpoint's host: use a host it names, or reissue it"
	case strings.Contains(msg, "certificate has expired or is not yet valid"):
		return "etcd's server certificate has expired (or the clock is wrong)"
	case tlsEndpoints(o) && (strings.Contains(msg, "first record does not look like a TLS handshake") ||
		strings.Contains(msg, "handshake failed: EOF")):
		return "the endpoint does not speak TLS: use http://, or enable TLS on etcd"
	case !tlsEndpoints(o) && strings.Contains(msg, "server preface") &&
		(strings.Contains(msg, "server preface: EOF") || strings.Contains(msg, "connection reset by peer")):
		// A TLS port closes a plaintext connection at once: EOF, or a
		// reset when our first frames were still unread, which timing
		// decides (on a busy machine, often the reset).
		return "the connection closed at once: if etcd serves TLS, use https:// and the TLS files"
	}
	return ""
}

// probeTLS does a TLS handshake with endpoint ep as clientv3 would, and
// waits briefly for what the server says next: with TLS 1.3 a server
// refuses a client certificate only after the handshake, with an alert.
// It returns nil if the server accepted us.
func probeTLS(ctx context.Context, tc *tls.Config, ep string) error {
	u, err := url.Parse(ep)
	if err != nil {
		return err
	}
	network, addr, serverName := "tcp", u.Host, u.Hostname()
	if u.Scheme == "unix" || u.Scheme == "unixs" {
		// As clientv3 does: the socket's file name is the server name.
		network, addr, serverName = "unix", u.Host+u.Path, path.Base(u.Host+u.Path)
	}
	tc = tc.Clone()
	if tc.ServerName == "" {
		tc.ServerName = serverName
	}
	tc.NextProtos = []string{"h2"}
	// Dial's own wait may have used up ctx; this is quick and bounded.
	pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
	defer cancel()
	d := tls.Dialer{Config: tc}
	conn, err := d.DialContext(pctx, network, addr)
	if err != nil {
		return err
	}
	defer conn.Close()
	conn.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
	var b [1]byte
	if _, err := conn.Read(b[:]); err != nil {
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			return nil // the server waits for us to speak: it accepted us
		}
		return err
	}
	return nil
}
