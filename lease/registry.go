package lease

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"strings"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// Registry reads and writes one overlay's keys under a prefix. It is safe
// for concurrent use; it holds no state besides the client.
type Registry struct {
	cli    *clientv3.Client
	prefix string // no trailing slash
	log    *slog.Logger
}

// NewRegistry returns a registry for the keys under prefix (DefaultPrefix
// if empty). A nil log discards.
func NewRegistry(cli *clientv3.Client, prefix string, log *slog.Logger) *Registry {
	prefix = strings.TrimRight(prefix, "/")
	if prefix == "" {
		prefix = DefaultPrefix
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Registry{cli: cli, prefix: prefix, log: log}
}

// Prefix returns the registry's etcd prefix, e.g. "/coreos.com/network".
func (r *Registry) Prefix() string { return r.prefix }

// ConfigKey is "<prefix>/config".
func (r *Registry) ConfigKey() string { return r.prefix + "/config" }

// subnetsDir ends in a slash so a prefix watch does not also match
// "<prefix>/subnetsX".
func (r *Registry) subnetsDir() string { return r.prefix + "/subnets/" }

// Key is the etcd key of a single-family lease of subnet:
// "<prefix>/subnets/172.16.57.0-24" (or, IPv6-only, ".../fd00:12:13::-64").
func (r *Registry) Key(subnet netip.Prefix) string { return r.subnetsDir() + SubnetKey(subnet) }

// LeaseKey is the etcd key of l: "<prefix>/subnets/" and l.KeyName().
func (r *Registry) LeaseKey(l *Lease) string { return r.subnetsDir() + l.KeyName() }

// Config reads and validates <prefix>/config.
func (r *Registry) Config(ctx context.Context) (*Config, error) {
	b, err := r.ConfigJSON(ctx)
	if errors.Is(err, ErrNotFound) {
		key := r.ConfigKey()
		return nil, fmt.Errorf(`no config at %s: write one, e.g. ETCDCTL_API=3 etcdctl put %s '{"Network":"172.16.0.0/16","Backend":{"Type":"vxlan"}}'`, key, key)
	}
	if err != nil {
		return nil, err
	}
	c, err := ParseConfig(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", r.ConfigKey(), err)
	}
	return c, nil
}

// SetConfig validates c and writes it to <prefix>/config.
func (r *Registry) SetConfig(ctx context.Context, c *Config) error {
	b, err := c.MarshalJSON()
	if err != nil {
		return fmt.Errorf("set %s: %w", r.ConfigKey(), err)
	}
	// PutConfigJSON's errors name the key already.
	_, err = r.PutConfigJSON(ctx, b)
	return err
}

// entry is one key under <prefix>/subnets/ as stored, including keys
// whose value does not parse: those still occupy their subnet.
type entry struct {
	key       string
	subnet    netip.Prefix // IPv4; invalid in an IPv6-only key
	subnet6   netip.Prefix // invalid unless the key has an IPv6 part
	canonical bool         // the key is named as KeyName names it
	attrs     Attrs
	attrsErr  error
	leaseID   clientv3.LeaseID
	modRev    int64
}

func (e *entry) lease() Lease {
	return Lease{Subnet: e.subnet, IPv6Subnet: e.subnet6, Attrs: e.attrs, LeaseID: e.leaseID}
}

// list reads every subnet key at one revision. Keys whose name does not
// parse are reported through bad and left out.
func (r *Registry) list(ctx context.Context, bad func(key string, err error)) ([]entry, int64, error) {
	dir := r.subnetsDir()
	resp, err := r.cli.Get(ctx, dir, clientv3.WithPrefix())
	if err != nil {
		return nil, 0, fmt.Errorf("list %s: %w", dir, err)
	}
	out := make([]entry, 0, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		e, err := r.parseKV(string(kv.Key), kv.Value, kv.Lease, kv.ModRevision)
		if err != nil {
			bad(string(kv.Key), err)
			continue
		}
		out = append(out, e)
	}
	return out, resp.Header.Revision, nil
}

func (r *Registry) parseKV(key string, value []byte, leaseID int64, modRev int64) (entry, error) {
	name, ok := strings.CutPrefix(key, r.subnetsDir())
	if !ok {
		return entry{}, fmt.Errorf("key %q is not under %s", key, r.subnetsDir())
	}
	subnet, subnet6, canonical, err := parseKeyName(name)
	if err != nil {
		return entry{}, err
	}
	e := entry{key: key, subnet: subnet, subnet6: subnet6, canonical: canonical, leaseID: clientv3.LeaseID(leaseID), modRev: modRev}
	e.attrs, e.attrsErr = ParseAttrs(value)
	return e, nil
}

// Leases lists every subnet key, with expirations, and the revision they
// were read at (watch from revision+1 to miss nothing). Keys or values that
// do not parse are skipped with a warning.
func (r *Registry) Leases(ctx context.Context) ([]Lease, int64, error) {
	_, leases, rev, err := r.listLeases(ctx, true)
	return leases, rev, err
}

// expiration asks etcd when lease id ends. A lease that is already gone
// ends now: its keys are being deleted and a Removed event follows.
func (r *Registry) expiration(ctx context.Context, id clientv3.LeaseID) (time.Time, error) {
	resp, err := r.cli.TimeToLive(ctx, id)
	if errors.Is(err, rpctypes.ErrLeaseNotFound) {
		return time.Now(), nil
	}
	if err != nil {
		return time.Time{}, fmt.Errorf("lease %x time to live: %w", int64(id), err)
	}
	if resp.TTL <= 0 {
		return time.Now(), nil
	}
	return time.Now().Add(time.Duration(resp.TTL) * time.Second), nil
}
