package main

import (
	"crypto/tls"
	"fmt"

	"github.com/hashicorp/go-hclog"

	"github.com/capraft/capraft/cmd/internal/cli"
	"github.com/capraft/capraft/internal/opshttp"
	"github.com/capraft/capraft/raftnode"
)

// metricsExposed reports whether --metrics-listen is on an address other
// machines can reach.
func (f *flags) metricsExposed() bool {
	return f.metricsListen != "" && !cli.IsLoopback(f.metricsListen)
}

// metricsTLS applies the metrics listener's rules: it serves HTTPS with
// the node's certificate when the node has one (and, with --tls-ca,
// serves only clients presenting a certificate from the cluster CA, as
// metrics and profiles tell much about the node); without one it serves
// plain HTTP, on loopback, or elsewhere only with --insecure. It returns
// the TLS configuration to serve with (nil: plain HTTP).
func (f *flags) metricsTLS(sec nodeSecurity, log hclog.Logger) (*tls.Config, error) {
	if f.metricsListen == "" {
		if f.pprof {
			return nil, fmt.Errorf("--pprof serves the profiler on the metrics listener: give --metrics-listen too, e.g. --metrics-listen 127.0.0.1:9090")
		}
		return nil, nil
	}
	if sec.serverTLS != nil {
		cfg := sec.serverTLS.Clone()
		if sec.CertRoles {
			cfg.ClientAuth = tls.RequireAndVerifyClientCert
		}
		return cfg, nil
	}
	if f.metricsExposed() {
		if !f.insecure {
			return nil, fmt.Errorf("--metrics-listen %s: other machines can reach this address, and the node has no TLS certificate to serve it with: "+
				"give --tls-cert and --tls-key (HTTPS; with --tls-ca, scrapers must present a certificate from the cluster CA), "+
				"listen on loopback (e.g. --metrics-listen 127.0.0.1:9090), or pass --insecure to serve plain HTTP that anyone can read", cli.QuoteShort(f.metricsListen, 64))
		}
		log.Warn("INSECURE: serving metrics over plain HTTP on an address other machines can reach (--insecure)", "metrics_listen", f.metricsListen)
	}
	return nil, nil
}

// startMetrics serves the node's /metrics, /healthz, /readyz (and, with
// --pprof, /debug/pprof/) on --metrics-listen, if given.
func (f *flags) startMetrics(node *raftnode.Node, tlsCfg *tls.Config, log hclog.Logger) (*opshttp.Server, error) {
	if f.metricsListen == "" {
		return nil, nil
	}
	s, err := opshttp.Listen(opshttp.Config{
		Addr:     f.metricsListen,
		Gatherer: node.Metrics(),
		Ready:    node.Ready,
		TLS:      tlsCfg,
		Pprof:    f.pprof,
		Logger:   log.Named("metrics"),
	})
	if err != nil {
		return nil, fmt.Errorf("--metrics-listen %s: %w", f.metricsListen, err)
	}
	scheme := "http"
	if tlsCfg != nil {
		scheme = "https"
	}
	log.Info("serving metrics and health", "url", fmt.Sprintf("%s://%s/metrics", scheme, s.Addr()), "pprof", f.pprof)
	return s, nil
}
