package lease

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.etcd.io/etcd/client/pkg/v3/transport"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
)

// Test helpers for etcds the shared one cannot be: TLS-only, with auth,
// several members. Each is configured through embed directly, as an
// operator would configure etcd.

// testMember is one etcd member started by a test.
type testMember struct {
	name      string
	etcd      *embed.Etcd
	clientURL string
	level     zap.AtomicLevel
	closed    bool
}

// memberConfig is what differs between the test etcds.
type memberConfig struct {
	name       string
	dir        string
	clientURL  url.URL
	peerURL    url.URL
	cluster    string // name=peerURL,...
	token      string
	clientTLS  transport.TLSInfo // zero: plaintext
	fastLeader bool              // short election timeouts
}

func (m *testMember) stop() {
	if m.closed {
		return
	}
	m.closed = true
	// etcd logs each listener it closes as an error: noise at shutdown.
	m.level.SetLevel(zap.FatalLevel)
	m.etcd.Close()
}

// crash stops m as a crash would: raft stops at once, with no handing
// over of leadership, then its listeners close.
func (m *testMember) crash() {
	if m.closed {
		return
	}
	m.level.SetLevel(zap.FatalLevel)
	m.etcd.Server.HardStop()
	m.stop()
}

// startMemberAsync starts one member without waiting for it to be ready
// (members of a new cluster are ready only when a quorum is up).
func startMemberAsync(t *testing.T, mc memberConfig) *testMember {
	t.Helper()
	cfg := embed.NewConfig()
	cfg.Name = mc.name
	cfg.Dir = mc.dir
	cfg.ListenClientUrls = []url.URL{mc.clientURL}
	cfg.AdvertiseClientUrls = []url.URL{mc.clientURL}
	cfg.ListenPeerUrls = []url.URL{mc.peerURL}
	cfg.AdvertisePeerUrls = []url.URL{mc.peerURL}
	cfg.InitialCluster = mc.cluster
	cfg.InitialClusterToken = mc.token
	cfg.ClientTLSInfo = mc.clientTLS
	if mc.fastLeader {
		cfg.TickMs = 50
		cfg.ElectionMs = 500
	}
	level := zap.NewAtomicLevelAt(zap.ErrorLevel)
	zc := zap.NewProductionConfig()
	zc.Level = level
	zc.DisableStacktrace = true
	zc.OutputPaths = []string{"stderr"}
	lg, err := zc.Build()
	if err != nil {
		t.Fatal(err)
	}
	cfg.Logger = "zap"
	cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(lg)
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		t.Fatalf("start etcd member %s: %v", mc.name, err)
	}
	m := &testMember{name: mc.name, etcd: e, clientURL: mc.clientURL.String(), level: level}
	t.Cleanup(m.stop)
	return m
}

func (m *testMember) waitReady(t *testing.T, d time.Duration) {
	t.Helper()
	select {
	case <-m.etcd.Server.ReadyNotify():
	case err := <-m.etcd.Err():
		t.Fatalf("etcd member %s: %v", m.name, err)
	case <-time.After(d):
		t.Fatalf("etcd member %s not ready after %v", m.name, d)
	}
}

func testPort(t *testing.T) int {
	t.Helper()
	p, err := freePort()
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// startTestEtcd starts a one-member etcd whose client URL uses scheme
// ("http" or "https") with clientTLS.
func startTestEtcd(t *testing.T, scheme string, clientTLS transport.TLSInfo) *testMember {
	t.Helper()
	peer := url.URL{Scheme: "http", Host: fmt.Sprintf("127.0.0.1:%d", testPort(t))}
	mc := memberConfig{
		name:      "single",
		dir:       filepath.Join(t.TempDir(), "data"),
		clientURL: url.URL{Scheme: scheme, Host: fmt.Sprintf("127.0.0.1:%d", testPort(t))},
		peerURL:   peer,
		cluster:   "single=" + peer.String(),
		token:     "single-" + t.Name(),
		clientTLS: clientTLS,
	}
	m := startMemberAsync(t, mc)
	m.waitReady(t, 30*time.Second)
	return m
}

// startTestCluster starts an n-member etcd cluster on loopback ports and
// waits until every member serves.
func startTestCluster(t *testing.T, n int) []*testMember {
	t.Helper()
	dir := t.TempDir()
	mcs := make([]memberConfig, n)
	var cluster []string
	for i := range mcs {
		mcs[i] = memberConfig{
			name:       fmt.Sprintf("m%d", i),
			dir:        filepath.Join(dir, fmt.Sprintf("m%d", i)),
			clientURL:  url.URL{Scheme: "http", Host: fmt.Sprintf("127.0.0.1:%d", testPort(t))},
			peerURL:    url.URL{Scheme: "http", Host: fmt.Sprintf("127.0.0.1:%d", testPort(t))},
			token:      "cluster-" + t.Name(),
			fastLeader: true,
		}
		cluster = append(cluster, mcs[i].name+"="+mcs[i].peerURL.String())
	}
	ms := make([]*testMember, n)
	for i := range mcs {
		mcs[i].cluster = strings.Join(cluster, ",")
		ms[i] = startMemberAsync(t, mcs[i])
	}
	for _, m := range ms {
		m.waitReady(t, 30*time.Second)
	}
	return ms
}

// testCA is a certificate authority made for one test.
type testCA struct {
	cert    *x509.Certificate
	key     *ecdsa.PrivateKey
	certPEM []byte
	file    string // PEM of cert
}

var certSerial = big.NewInt(1)

func nextSerial() *big.Int {
	certSerial = new(big.Int).Add(certSerial, big.NewInt(1))
	return certSerial
}

func newTestCA(t *testing.T, dir, name string) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          nextSerial(),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	ca := &testCA{cert: cert, key: key, certPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
	ca.file = writeTestFile(t, dir, name+"-ca.pem", ca.certPEM)
	return ca
}

// issue makes a certificate for name signed by ca, for a server (with
// 127.0.0.1 and localhost as its names) or a client, valid from notBefore
// to notAfter, and writes it and its key as PEM files.
func (ca *testCA) issue(t *testing.T, dir, name string, server bool, notBefore, notAfter time.Time) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: nextSerial(),
		Subject:      pkix.Name{CommonName: name},
		NotBefore:    notBefore,
		NotAfter:     notAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	if server {
		tmpl.ExtKeyUsage = append(tmpl.ExtKeyUsage, x509.ExtKeyUsageServerAuth)
		tmpl.IPAddresses = []net.IP{net.IPv4(127, 0, 0, 1)}
		tmpl.DNSNames = []string{"localhost"}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile = writeTestFile(t, dir, name+".pem", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
	keyFile = writeTestFile(t, dir, name+"-key.pem", pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}))
	return certFile, keyFile
}

func writeTestFile(t *testing.T, dir, name string, b []byte) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// dialTest is Dial with a deadline, closing the client when the test ends.
func dialTest(t *testing.T, o ClientOptions) (*clientv3.Client, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	cli, err := Dial(ctx, o)
	if err == nil {
		t.Cleanup(func() { cli.Close() })
	}
	return cli, err
}
