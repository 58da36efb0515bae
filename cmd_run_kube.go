package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/urfave/cli/v2"
	"k8s.io/klog/v2"

	"vxrouter/kube"
	"vxrouter/node"
)

// kubeFlags are run's flags for the Kubernetes mode, flanneld's names
// and defaults.
func kubeFlags() []cli.Flag {
	return []cli.Flag{
		&cli.BoolFlag{Name: "kube-subnet-mgr", Usage: "take the subnet from this node's Node (spec.podCIDR) in the Kubernetes API and publish this node as annotations on it, instead of etcd, as flanneld --kube-subnet-mgr", EnvVars: []string{"VXROUTER_KUBE_SUBNET_MGR"}},
		&cli.StringFlag{Name: "kube-api-url", Usage: "Kubernetes API server URL (default: from --kubeconfig-file, or the pod's service account)", EnvVars: []string{"VXROUTER_KUBE_API_URL"}},
		&cli.StringFlag{Name: "kubeconfig-file", Usage: "kubeconfig with the API server and credentials (default: the pod's service account)", EnvVars: []string{"VXROUTER_KUBECONFIG_FILE"}, TakesFile: true},
		&cli.StringFlag{Name: "kube-annotation-prefix", Value: kube.DefaultAnnotationPrefix, Usage: "prefix of the Node annotations, e.g. example.com or example.com/net (at most one slash)", EnvVars: []string{"VXROUTER_KUBE_ANNOTATION_PREFIX"}},
		&cli.StringFlag{Name: "net-config-path", Value: kube.DefaultNetConfPath, Usage: "the overlay's config with --kube-subnet-mgr: the JSON of etcd's config key", EnvVars: []string{"VXROUTER_NET_CONFIG_PATH"}, TakesFile: true},
		&cli.StringFlag{Name: "node-name", Usage: "this host's Node (default: the Node of pod POD_NAMESPACE/POD_NAME)", EnvVars: []string{"VXROUTER_NODE_NAME", "NODE_NAME"}},
		&cli.BoolFlag{Name: "set-node-network-unavailable", Value: true, Usage: "set the Node's NetworkUnavailable condition to False once the node forwards", EnvVars: []string{"VXROUTER_SET_NODE_NETWORK_UNAVAILABLE"}},
		&cli.DurationFlag{Name: "kube-api-timeout", Value: 30 * time.Second, Usage: "how long to wait for the API server's answers at start (the wait for a podCIDR is not bounded)", EnvVars: []string{"VXROUTER_KUBE_API_TIMEOUT"}},
	}
}

// kubeSource opens the Kubernetes API as the node's source, if
// --kube-subnet-mgr says so, and sets cfg to use it; the caller closes
// what it returns (nil without the flag). It waits for the Node's
// podCIDR as long as ctx lasts.
func kubeSource(ctx context.Context, c *cli.Context, cfg *node.Config, log *slog.Logger) (*kube.Source, error) {
	if !c.Bool("kube-subnet-mgr") {
		return nil, nil
	}
	timeout := c.Duration("kube-api-timeout")
	if timeout <= 0 {
		return nil, fmt.Errorf("--kube-api-timeout %s: must be positive", timeout)
	}
	// client-go logs through klog (the informer's retries, for one): into
	// the node's log, not klog's own format on stderr.
	klog.SetSlogLogger(log.With("from", "client-go"))
	src, err := kube.Open(ctx, kube.Options{
		APIURL:                c.String("kube-api-url"),
		Kubeconfig:            c.String("kubeconfig-file"),
		NodeName:              c.String("node-name"),
		PodName:               os.Getenv("POD_NAME"),
		PodNamespace:          os.Getenv("POD_NAMESPACE"),
		NetConfPath:           c.String("net-config-path"),
		AnnotationPrefix:      c.String("kube-annotation-prefix"),
		SetNetworkUnavailable: c.Bool("set-node-network-unavailable"),
		Timeout:               timeout,
		Log:                   log,
	})
	if err != nil {
		return nil, err
	}
	cfg.Source = src
	cfg.EtcdTimeout = timeout
	// An operator's node-public-ip wins over --public-ip, as in flanneld,
	// and node-public-ipv6 over --public-ipv6.
	if ip := src.NodePublicIP(); ip.IsValid() {
		log.Info("public IP from the Node's annotation", "public-ip", ip)
		cfg.PublicIP = ip
	}
	if ip := src.NodePublicIPv6(); ip.IsValid() {
		log.Info("public IPv6 from the Node's annotation", "public-ipv6", ip)
		cfg.PublicIPv6 = ip
	}
	return src, nil
}
