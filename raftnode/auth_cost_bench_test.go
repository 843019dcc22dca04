package raftnode_test

import (
	"context"
	"crypto/tls"
	"fmt"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/capraft/capraft/client"
	"github.com/capraft/capraft/raftnode"
	"github.com/capraft/capraft/raftnode/internal/storeknobs"
	"github.com/capraft/capraft/raftnode/internal/vfs"
	"github.com/capraft/capraft/rpc"
	"github.com/capraft/capraft/rpc/rpctest"
)

// BenchmarkAuthCost measures what authority costs once a connection holds
// it: sequential pings and 64 concurrent (so batched) puts through the Go
// client against a one-node cluster (fsync off) in four modes, set up once
// and measured in turn (-count repeats each sub-benchmark back to back, so
// compare modes over several -count 1 runs of the test binary instead, as
// docs/BENCHMARKS.md does; drift on a shared machine otherwise reads as
// cost):
//
//   - plain: TCP, no security (anonymous connections hold everything);
//   - token: TCP, a cluster secret, the client logged in with a client
//     token (every KV call re-checks that token is neither revoked nor
//     expired);
//   - tls: TLS, no client certificate, no security;
//   - mtls: TLS, a client certificate naming the client role, the node
//     granting certificates' roles.
//
// token/plain and mtls/tls are the cost of authority; tls/plain is the
// cost of encryption.
func BenchmarkAuthCost(b *testing.B) {
	modes := []struct {
		name string
		cl   *client.Client
	}{
		{"plain", authCostClient(b, "plain")},
		{"token", authCostClient(b, "token")},
		{"tls", authCostClient(b, "tls")},
		{"mtls", authCostClient(b, "mtls")},
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	for _, m := range modes {
		b.Run("op=ping/mode="+m.name, func(b *testing.B) {
			for b.Loop() {
				if _, err := m.cl.Ping(ctx, "0123456789abcdef"); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
	for _, m := range modes {
		b.Run("op=put64/mode="+m.name, func(b *testing.B) {
			benchConcurrentPuts(b, ctx, m.cl, 64)
		})
	}
}

// benchConcurrentPuts runs b.N puts of 256-byte values from clients
// goroutines sharing cl, and reports puts/s.
func benchConcurrentPuts(b *testing.B, ctx context.Context, cl *client.Client, clients int) {
	value := make([]byte, 256)
	var next atomic.Int64
	var wg sync.WaitGroup
	b.ResetTimer()
	start := time.Now()
	for g := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := next.Add(1); i <= int64(b.N); i = next.Add(1) {
				if _, err := cl.Put(ctx, fmt.Sprintf("k%d-%d", g, i%1000), value); err != nil {
					b.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "puts/s")
}

// authCostClient starts a one-node cluster in mode and returns a client
// of it that has written once (so login and dialing are behind it).
func authCostClient(b *testing.B, mode string) *client.Client {
	b.Helper()
	var (
		serverTLS, clientTLS *tls.Config
		security             raftnode.Security
		opts                 []client.Option
	)
	switch mode {
	case "token":
		security = raftnode.Security{ClusterSecrets: [][]byte{testSecret}}
	case "tls", "mtls":
		p := rpctest.NewPKI(b)
		serverTLS = p.ServerTLS(b)
		clientTLS = p.ClientTLS(nil)
		if mode == "mtls" {
			cert := p.Cert(b, rpc.RoleClient.String())
			clientTLS = p.ClientTLS(&cert)
			security = raftnode.Security{CertRoles: true}
		}
		opts = append(opts, client.WithTLS(clientTLS))
	}
	c := newCluster(b, 1, func(cfg *raftnode.Config) {
		cfg.HeartbeatInterval, cfg.ElectionTimeout = 100*time.Millisecond, time.Second
		cfg.StorageKnobs = &storeknobs.Knobs{FS: noSyncFS{vfs.OS}}
		cfg.Security = security
		if mode == "token" {
			cfg.Security.OperatorTokenFile = filepath.Join(cfg.DataDir, "operator.token")
		}
	}, serverTLS)
	c.leader()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if mode == "token" {
		op, err := client.New([]string{c.addrs[1]}, client.WithToken(c.operatorToken(1)))
		if err != nil {
			b.Fatal(err)
		}
		tok, _, err := op.CreateToken(ctx, client.TokenSpec{})
		op.Close()
		if err != nil {
			b.Fatalf("create a client token: %v", err)
		}
		opts = append(opts, client.WithToken(tok))
	}
	cl, err := client.New([]string{c.addrs[1]}, opts...)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { cl.Close() })
	if _, err := cl.Put(ctx, "warmup", []byte("x")); err != nil {
		b.Fatalf("%s: first put: %v", mode, err)
	}
	return cl
}
