package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/capraft/capraft/internal/opshttp"
	"github.com/capraft/capraft/internal/pki"
)

// metricsTLSOf parses args and applies the metrics listener's rules.
func metricsTLSOf(t *testing.T, args ...string) (*tls.Config, error) {
	t.Helper()
	var f flags
	if err := newCommandFor(&f).ParseFlags(args); err != nil {
		t.Fatalf("%v: %v", args, err)
	}
	peers, err := f.validate()
	if err != nil {
		return nil, err
	}
	sec, err := f.security(peers, hclog.NewNullLogger())
	if err != nil {
		t.Fatalf("%v: %v", args, err)
	}
	return f.metricsTLS(sec, hclog.NewNullLogger())
}

// Metrics are plain HTTP on loopback; on an address other machines can
// reach, a node without a certificate refuses to start unless --insecure
// says so, and the refusal names the ways out.
func TestMetricsListenerOffLoopbackNeedsTLSOrInsecure(t *testing.T) {
	secret := writeSecret(t, 0o600)
	for _, tc := range []struct {
		args []string
		ok   bool
	}{
		{[]string{}, true},
		{[]string{"--metrics-listen", "127.0.0.1:9090"}, true},
		{[]string{"--metrics-listen", "localhost:9090", "--pprof"}, true},
		{[]string{"--metrics-listen", "0.0.0.0:9090"}, false},
		{[]string{"--metrics-listen", "192.0.2.1:9090", "--cluster-secret-file", secret}, false},
		{[]string{"--metrics-listen", "192.0.2.1:9090", "--cluster-secret-file", secret, "--insecure"}, true},
		{[]string{"--metrics-listen", "0.0.0.0:9090", "--insecure"}, true},
	} {
		cfg, err := metricsTLSOf(t, tc.args...)
		if tc.ok != (err == nil) {
			t.Errorf("%v: err %v, want ok=%v", tc.args, err, tc.ok)
			continue
		}
		if cfg != nil {
			t.Errorf("%v: TLS without a certificate", tc.args)
		}
		if err != nil {
			for _, want := range []string{"--tls-cert", "loopback", "--insecure"} {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("%v: %q does not name %s", tc.args, err, want)
				}
			}
		}
	}
	for _, args := range [][]string{{"--pprof"}, {"--metrics-listen", "nowhere"}} {
		if _, err := metricsTLSOf(t, args...); err == nil {
			t.Errorf("%v: accepted", args)
		}
	}
}

// With the node's certificate and the cluster CA, metrics are served over
// HTTPS to scrapers presenting a certificate from the CA, and to nobody
// else.
func TestMetricsListenerServesHTTPSWithTheNodesCertificates(t *testing.T) {
	dir := t.TempDir()
	ca, err := pki.NewCA("test CA", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	node, err := ca.Issue("peer", "node1", []string{"127.0.0.1"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	scraper, err := ca.Issue("operator", "prometheus", nil, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := metricsTLSOf(t, "--tls-cert", write("n.pem", node.CertPEM), "--tls-key", write("n-key.pem", node.KeyPEM),
		"--tls-ca", write("ca.pem", ca.CertPEM), "--cluster-secret-file", writeSecret(t, 0o600), "--metrics-listen", "0.0.0.0:9090")
	if err != nil {
		t.Fatal(err)
	}
	if cfg == nil || cfg.ClientAuth != tls.RequireAndVerifyClientCert {
		t.Fatalf("metrics TLS %+v: want HTTPS that requires a certificate from the cluster CA", cfg)
	}
	s, err := opshttp.Listen(opshttp.Config{Addr: "127.0.0.1:0", Gatherer: prometheus.NewRegistry(), TLS: cfg})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close(context.Background())
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(ca.CertPEM)
	get := func(certs []tls.Certificate) error {
		c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, Certificates: certs}}}
		defer c.CloseIdleConnections()
		resp, err := c.Get("https://" + s.Addr().String() + "/healthz")
		if err != nil {
			return err
		}
		resp.Body.Close()
		return nil
	}
	kp, err := tls.X509KeyPair(scraper.CertPEM, scraper.KeyPEM)
	if err != nil {
		t.Fatal(err)
	}
	if err := get([]tls.Certificate{kp}); err != nil {
		t.Errorf("scraper with a certificate from the CA: %v", err)
	}
	if err := get(nil); err == nil {
		t.Errorf("scraper without a certificate was served")
	}
}
