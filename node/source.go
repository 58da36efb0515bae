package node

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"vxrouter/lease"
)

// Source is where a node's overlay config, its own subnet and its peers
// come from. etcd in flannel's layout is the default (*lease.Registry is
// a Source as it is); the Kubernetes API, as flanneld's
// --kube-subnet-mgr uses it, is the other (package kube).
//
// The node calls Config, then AcquireSubnets, in Start; WatchBatches and
// KeepAlive run side by side in Run until its context ends.
type Source interface {
	// Config returns the overlay's config.
	Config(ctx context.Context) (*lease.Config, error)
	// AcquireSubnets takes this node's subnet of each family the config
	// carries and publishes attrs for its peers. previous are the subnets
	// of the last subnet.env, ttl the lease's life; a source that assigns
	// subnets itself may ignore both.
	AcquireSubnets(ctx context.Context, cfg *lease.Config, attrs lease.Attrs, previous []netip.Prefix, ttl time.Duration) (*lease.Lease, error)
	// LeaseKey names where l is kept, for the log.
	LeaseKey(l *lease.Lease) string
	// WatchBatches hands fn every peer's lease, first all it knows then
	// each change, until ctx ends; see lease.Registry.WatchBatches.
	WatchBatches(ctx context.Context, fn func([]lease.Event)) error
	// KeepAlive holds l until ctx ends, calling onChange if the subnet
	// had to be taken again; an error means the node cannot go on.
	KeepAlive(ctx context.Context, cfg *lease.Config, l *lease.Lease, onChange func(*lease.Lease)) error
}

// etcdSource is the default Source: the registry in etcd, with errors
// that say which etcd did not answer.
type etcdSource struct {
	*lease.Registry
	cli       *clientv3.Client
	endpoints string
	timeout   time.Duration
}

// dialEtcd connects to the etcd of cfg.Etcd. The client only dials in the
// background: the first request (Config) is the first contact.
func dialEtcd(cfg Config) (*etcdSource, error) {
	etcdCfg := cfg.Etcd
	// With auth, clientv3.New fetches a token and waits DialTimeout for
	// it: the first contact is what --etcd-timeout bounds.
	etcdCfg.DialTimeout = cfg.EtcdTimeout
	// clientv3 would log its own retries as JSON at warn level, in the
	// middle of the node's log; the registry reports what matters (renewal
	// and watch failures, with backoff) through the node's logger.
	etcdCfg.Logger = zap.NewNop()
	eps := strings.Join(etcdCfg.Endpoints, ",")
	cli, err := clientv3.New(etcdCfg)
	if err != nil {
		return nil, fmt.Errorf("etcd at %s: %w (check --etcd-endpoints, the TLS files and the credentials, and that etcd is running)", eps, err)
	}
	return &etcdSource{Registry: lease.NewRegistry(cli, cfg.EtcdPrefix, cfg.Log), cli: cli, endpoints: eps, timeout: cfg.EtcdTimeout}, nil
}

// Config reads the config from etcd, and says so when etcd is silent.
func (s *etcdSource) Config(ctx context.Context) (*lease.Config, error) {
	c, err := s.Registry.Config(ctx)
	if err == nil {
		return c, nil
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return nil, fmt.Errorf("etcd at %s did not answer within %s: check --etcd-endpoints and that etcd is running (%w)", s.endpoints, s.timeout, err)
	}
	return nil, fmt.Errorf("read overlay config from etcd %s: %w", s.endpoints, err)
}

// Close closes the etcd client.
func (s *etcdSource) Close() error { return s.cli.Close() }

// String names the source for the log and systemd's STATUS.
func (s *etcdSource) String() string { return "etcd at " + s.endpoints }

// describeSource names a source, for a person: its String if it has one.
func describeSource(s Source) string {
	if d, ok := s.(fmt.Stringer); ok {
		return d.String()
	}
	return fmt.Sprintf("%T", s)
}

// closeSource closes the source if the node opened it (etcd's client);
// a Source from Config.Source is its giver's to close.
func (n *Node) closeSource() {
	if s, ok := n.reg.(*etcdSource); ok {
		s.Close()
	}
}

// expires is when l ends, for the log: a lease the source does not time
// (a Kubernetes node's podCIDR) never does.
func expires(l *lease.Lease) string {
	if l.Expiration.IsZero() {
		return "never"
	}
	return l.Expiration.Format(time.RFC3339)
}
