package lease

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"go.etcd.io/etcd/client/pkg/v3/transport"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// pki is a CA that etcd trusts, one it does not, and certificates from
// both, written to files as an operator would have them.
type pki struct {
	ca, otherCA                    *testCA
	serverCert, serverKey          string
	clientCert, clientKey          string
	strangerCert, strangerKey      string // client cert signed by otherCA
	expiredCert, expiredKey        string // client cert signed by ca, expired
	notYetCert, notYetKey          string // client cert signed by ca, not yet valid
	garbage, empty, missingFileDir string
}

func newPKI(t *testing.T) *pki {
	t.Helper()
	dir := t.TempDir()
	p := &pki{ca: newTestCA(t, dir, "etcd"), otherCA: newTestCA(t, dir, "other")}
	now := time.Now()
	p.serverCert, p.serverKey = p.ca.issue(t, dir, "server", true, now.Add(-time.Hour), now.Add(time.Hour))
	p.clientCert, p.clientKey = p.ca.issue(t, dir, "client", false, now.Add(-time.Hour), now.Add(time.Hour))
	p.strangerCert, p.strangerKey = p.otherCA.issue(t, dir, "stranger", false, now.Add(-time.Hour), now.Add(time.Hour))
	p.expiredCert, p.expiredKey = p.ca.issue(t, dir, "expired", false, now.Add(-2*time.Hour), now.Add(-time.Hour))
	p.notYetCert, p.notYetKey = p.ca.issue(t, dir, "notyet", false, now.Add(time.Hour), now.Add(2*time.Hour))
	p.garbage = writeTestFile(t, dir, "garbage.pem", []byte("not a certificate\n"))
	p.empty = writeTestFile(t, dir, "empty.pem", nil)
	p.missingFileDir = dir
	return p
}

func TestClientConfig(t *testing.T) {
	p := newPKI(t)
	missing := p.missingFileDir + "/missing.pem"
	https := []string{"https://127.0.0.1:2379"}
	for _, tc := range []struct {
		name string
		o    ClientOptions
		want string // error substring; "" = no error
	}{
		{"plain", ClientOptions{Endpoints: []string{"http://127.0.0.1:2379", "unix:///run/etcd.sock"}}, ""},
		{"tls", ClientOptions{Endpoints: https, CAFile: p.ca.file, CertFile: p.clientCert, KeyFile: p.clientKey}, ""},
		{"https with system roots", ClientOptions{Endpoints: https}, ""},
		{"tls over unix", ClientOptions{Endpoints: []string{"unix:///run/etcd.sock"}, CAFile: p.ca.file}, ""},
		{"no endpoint", ClientOptions{}, "no endpoints"},
		{"no scheme", ClientOptions{Endpoints: []string{"127.0.0.1:2379"}}, `etcd endpoint "127.0.0.1:2379": want http://host:port`},
		{"bad scheme", ClientOptions{Endpoints: []string{"grpc://127.0.0.1:2379"}}, `scheme "grpc" is not http, https, unix or unixs`},
		{"mixed", ClientOptions{Endpoints: []string{"https://a:2379", "http://b:2379"}}, "mix TLS (https://a:2379) and plaintext (http://b:2379)"},
		{"tls files on http", ClientOptions{Endpoints: []string{"http://127.0.0.1:2379"}, CAFile: p.ca.file}, "endpoint http://127.0.0.1:2379 is plaintext (http:// never uses TLS): write https://"},
		{"cert without key", ClientOptions{Endpoints: https, CertFile: p.clientCert}, "set without its key"},
		{"key without cert", ClientOptions{Endpoints: https, KeyFile: p.clientKey}, "set without its certificate"},
		{"user without password", ClientOptions{Endpoints: https, Username: "root"}, `etcd username "root" is set without a password`},
		{"password without user", ClientOptions{Endpoints: https, Password: "hunter2"}, "etcd password is set without a username"},
		{"missing CA", ClientOptions{Endpoints: https, CAFile: missing}, "read etcd CA file: open " + missing + ": no such file or directory"},
		{"garbage CA", ClientOptions{Endpoints: https, CAFile: p.garbage}, fmt.Sprintf("etcd CA file %q holds no PEM certificate", p.garbage)},
		{"empty CA", ClientOptions{Endpoints: https, CAFile: p.empty}, "holds no PEM certificate"},
		{"missing cert", ClientOptions{Endpoints: https, CertFile: missing, KeyFile: p.clientKey}, "read etcd client certificate: open " + missing},
		{"missing key", ClientOptions{Endpoints: https, CertFile: p.clientCert, KeyFile: missing}, "read etcd client key: open " + missing},
		{"mismatched key", ClientOptions{Endpoints: https, CertFile: p.clientCert, KeyFile: p.serverKey}, fmt.Sprintf("etcd client certificate %q and key %q: tls: private key does not match public key", p.clientCert, p.serverKey)},
		{"garbage cert", ClientOptions{Endpoints: https, CertFile: p.garbage, KeyFile: p.clientKey}, "failed to find any PEM data in certificate input"},
		{"expired", ClientOptions{Endpoints: https, CertFile: p.expiredCert, KeyFile: p.expiredKey}, fmt.Sprintf("etcd client certificate %q expired on", p.expiredCert)},
		{"not yet valid", ClientOptions{Endpoints: https, CertFile: p.notYetCert, KeyFile: p.notYetKey}, "is not valid before"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := ClientConfig(tc.o)
			if tc.want == "" {
				if err != nil {
					t.Fatalf("ClientConfig: %v", err)
				}
				if len(cfg.Endpoints) != len(tc.o.Endpoints) || cfg.DialTimeout != DefaultDialTimeout {
					t.Fatalf("config %+v", cfg)
				}
				if (cfg.TLS != nil) != (tc.o.tlsFiles() || strings.HasPrefix(tc.o.Endpoints[0], "https")) {
					t.Fatalf("TLS config %v for %v", cfg.TLS, tc.o)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("ClientConfig error = %v, want it to contain %q", err, tc.want)
			}
			if strings.Contains(err.Error(), "hunter2") {
				t.Fatalf("error shows the password: %v", err)
			}
		})
	}
}

func TestClientOptionsHidePassword(t *testing.T) {
	const secret = "hunter2-secret"
	o := ClientOptions{Endpoints: []string{"https://e:2379"}, CAFile: "/ca.pem", CertFile: "/c.pem", KeyFile: "/k.pem", Username: "root", Password: secret}
	var logged bytes.Buffer
	slog.New(slog.NewTextHandler(&logged, nil)).Info("etcd", "client", o)
	slog.New(slog.NewJSONHandler(&logged, nil)).Info("etcd", "client", o)
	for _, s := range []string{o.String(), fmt.Sprint(o), fmt.Sprintf("%v %+v %#v %s", o, o, o, o), fmt.Sprintf("%+v", &o), logged.String()} {
		if strings.Contains(s, secret) {
			t.Fatalf("password shown: %s", s)
		}
		if !strings.Contains(s, "root") || !strings.Contains(s, "redacted") {
			t.Fatalf("want user and a redacted password in %s", s)
		}
	}
}

// TestEtcdTLS runs the registry against an etcd that serves only TLS and
// requires client certificates signed by its CA.
func TestEtcdTLS(t *testing.T) {
	p := newPKI(t)
	m := startTestEtcd(t, "https", transport.TLSInfo{
		CertFile:       p.serverCert,
		KeyFile:        p.serverKey,
		TrustedCAFile:  p.ca.file,
		ClientCertAuth: true,
	})
	eps := []string{m.clientURL}
	good := ClientOptions{Endpoints: eps, CAFile: p.ca.file, CertFile: p.clientCert, KeyFile: p.clientKey, DialTimeout: 3 * time.Second}

	t.Run("right certs", func(t *testing.T) {
		cli, err := dialTest(t, good)
		if err != nil {
			t.Fatal(err)
		}
		r := NewRegistry(cli, "/tls", testLog(t))
		ctx := testCtx(t, 20*time.Second)
		cfg := mustConfig(t, `{"Network":"10.9.0.0/16","Backend":{"Type":"vxlan"}}`)
		if err := r.SetConfig(ctx, cfg); err != nil {
			t.Fatal(err)
		}
		events := runWatch(t, r)
		l, err := r.Acquire(ctx, cfg, nodeAttrs(1), netip.Prefix{}, time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		if got, want := events.next(t, 1), []string{added(l.Subnet.String(), nodeAttrs(1))}; !slices.Equal(got, want) {
			t.Fatalf("watch over TLS: %q, want %q", got, want)
		}
	})

	for _, tc := range []struct {
		name string
		o    ClientOptions
		want string
	}{
		{"no client cert", ClientOptions{Endpoints: eps, CAFile: p.ca.file}, "etcd requires a client certificate: give the certfile and keyfile"},
		{"wrong CA", ClientOptions{Endpoints: eps, CAFile: p.otherCA.file, CertFile: p.clientCert, KeyFile: p.clientKey}, "etcd's server certificate is not signed by a CA we trust: check the CA file"},
		{"system roots", ClientOptions{Endpoints: eps, CertFile: p.clientCert, KeyFile: p.clientKey}, "not signed by a CA we trust"},
		{"client cert of another CA", ClientOptions{Endpoints: eps, CAFile: p.ca.file, CertFile: p.strangerCert, KeyFile: p.strangerKey}, "etcd refused our client certificate"},
		{"plaintext to a TLS port", ClientOptions{Endpoints: []string{strings.Replace(m.clientURL, "https://", "http://", 1)}}, "if etcd serves TLS, use https://"},
		{"nobody there", ClientOptions{Endpoints: []string{fmt.Sprintf("http://127.0.0.1:%d", testPort(t))}}, "no answer in time: is etcd running and reachable there?"},
		{"TLS to a plaintext port", ClientOptions{Endpoints: []string{strings.Replace(shared.clientURL, "http://", "https://", 1)}, CAFile: p.ca.file}, "the endpoint does not speak TLS: use http://"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel() // each waits out its DialTimeout
			tc.o.DialTimeout = 2 * time.Second
			start := time.Now()
			_, err := dialTest(t, tc.o)
			if err == nil {
				t.Fatal("Dial succeeded")
			}
			t.Logf("Dial error after %v: %v", time.Since(start).Round(time.Millisecond), err)
			if !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), tc.o.Endpoints[0]) {
				t.Fatalf("Dial error = %v\nwant it to name the endpoint and contain %q", err, tc.want)
			}
		})
	}
}

// TestHintPlaintextToTLSPort: a TLS port closes a plaintext connection at
// once. The client reads EOF, or, when the server closed with the
// client's first frames still unread, a reset: which one depends on
// timing, and under load the reset is what TestEtcdTLS met. Both get the
// hint.
func TestHintPlaintextToTLSPort(t *testing.T) {
	o := ClientOptions{Endpoints: []string{"http://127.0.0.1:2379"}}
	for _, msg := range []string{
		`connection error: desc = "error reading server preface: EOF"`,
		`connection error: desc = "error reading server preface: connection reset by peer"`,
		`connection error: desc = "error reading server preface: read tcp 127.0.0.1:40100->127.0.0.1:2379: read: connection reset by peer"`,
	} {
		if h := hint(errors.New(msg), o); !strings.Contains(h, "if etcd serves TLS, use https://") {
			t.Errorf("hint for %s: %q, want the one about https://", msg, h)
		}
	}
	// A reset later on is something else.
	if h := hint(errors.New("read: connection reset by peer"), o); h != "" {
		t.Errorf("hint for a reset after the preface: %q, want none", h)
	}
}

// TestEtcdAuth runs the registry against an etcd with auth enabled: root,
// and a user whose role may only touch the overlay's prefix.
func TestEtcdAuth(t *testing.T) {
	const rootPW = "r00t-Secret-Password"
	const userPW = "overlay-Secret-Password"
	const prefix = "/coreos.com/network"
	m := startTestEtcd(t, "http", transport.TLSInfo{})
	eps := []string{m.clientURL}
	ctx := testCtx(t, 30*time.Second)

	admin, err := dialTest(t, ClientOptions{Endpoints: eps})
	if err != nil {
		t.Fatal(err)
	}
	steps := []func() error{
		func() error { _, err := admin.UserAdd(ctx, "root", rootPW); return err },
		func() error { _, err := admin.UserGrantRole(ctx, "root", "root"); return err },
		func() error { _, err := admin.RoleAdd(ctx, "overlay"); return err },
		func() error {
			_, err := admin.RoleGrantPermission(ctx, "overlay", prefix+"/", clientv3.GetPrefixRangeEnd(prefix+"/"), clientv3.PermissionType(clientv3.PermReadWrite))
			return err
		},
		func() error { _, err := admin.UserAdd(ctx, "vxrouter", userPW); return err },
		func() error { _, err := admin.UserGrantRole(ctx, "vxrouter", "overlay"); return err },
		func() error { _, err := admin.UserAdd(ctx, "nobody", userPW); return err },
		func() error { _, err := admin.AuthEnable(ctx); return err },
	}
	for i, f := range steps {
		if err := f(); err != nil {
			t.Fatalf("auth setup step %d: %v", i, err)
		}
	}

	var logs bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	cfg := mustConfig(t, `{"Network":"10.8.0.0/16","Backend":{"Type":"vxlan"}}`)

	t.Run("root", func(t *testing.T) {
		cli, err := dialTest(t, ClientOptions{Endpoints: eps, Username: "root", Password: rootPW})
		if err != nil {
			t.Fatal(err)
		}
		if err := NewRegistry(cli, prefix, log).SetConfig(ctx, cfg); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("user with a role on the prefix", func(t *testing.T) {
		cli, err := dialTest(t, ClientOptions{Endpoints: eps, Username: "vxrouter", Password: userPW})
		if err != nil {
			t.Fatal(err)
		}
		r := NewRegistry(cli, prefix, log)
		events := runWatch(t, r)
		got, err := r.Config(ctx)
		if err != nil {
			t.Fatal(err)
		}
		l, err := r.Acquire(ctx, got, nodeAttrs(2), netip.Prefix{}, time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		if got, want := events.next(t, 1), []string{added(l.Subnet.String(), nodeAttrs(2))}; !slices.Equal(got, want) {
			t.Fatalf("watch with auth: %q, want %q", got, want)
		}
		// The role stops at the prefix.
		if _, err := cli.Put(ctx, "/elsewhere", "x"); !errors.Is(err, rpctypes.ErrPermissionDenied) {
			t.Fatalf("put outside the prefix: %v, want permission denied", err)
		}
	})
	t.Run("user without a role", func(t *testing.T) {
		cli, err := dialTest(t, ClientOptions{Endpoints: eps, Username: "nobody", Password: userPW})
		if err != nil {
			t.Fatal(err) // connecting needs no permission
		}
		_, err = NewRegistry(cli, prefix, log).Config(ctx)
		if !errors.Is(err, rpctypes.ErrPermissionDenied) {
			t.Fatalf("Config as nobody: %v, want permission denied", err)
		}
	})
	t.Run("wrong password", func(t *testing.T) {
		const wrong = "Wr0ng-Secret-Password"
		_, err := dialTest(t, ClientOptions{Endpoints: eps, Username: "root", Password: wrong})
		if !errors.Is(err, rpctypes.ErrAuthFailed) || !strings.Contains(err.Error(), `etcd rejected username "root" or its password`) {
			t.Fatalf("Dial with a wrong password: %v", err)
		}
		t.Logf("Dial error: %v", err)
		for _, s := range []string{rootPW, userPW, wrong} {
			if strings.Contains(err.Error(), s) {
				t.Fatalf("error shows a password: %v", err)
			}
		}
	})
	t.Run("no credentials", func(t *testing.T) {
		_, err := dialTest(t, ClientOptions{Endpoints: eps})
		if err == nil || !strings.Contains(err.Error(), "etcd has auth enabled: give a username and password") {
			t.Fatalf("Dial without credentials: %v", err)
		}
	})
	for _, s := range []string{rootPW, userPW} {
		if strings.Contains(logs.String(), s) {
			t.Fatalf("logs show a password:\n%s", logs.String())
		}
	}
	_ = context.Background
}
