package rpc_test

import (
	"context"
	"crypto/tls"
	"testing"

	"github.com/capraft/capraft/rpc"
	"github.com/capraft/capraft/rpc/rpctest"
)

func TestTLS(t *testing.T) {
	serverTLS, clientTLS := rpctest.SelfSignedTLS(t)
	_, _, addr := serve(t, rpc.Config{TLSConfig: serverTLS})

	t.Run("TLS client is served", func(t *testing.T) {
		cc := rpctest.Dial(t, addr, rpc.DialConfig{TLSConfig: clientTLS})
		mustPing(t, echoOf(t, cc), "over-tls")
	})
	t.Run("plain client is refused", func(t *testing.T) {
		cc := rpctest.Dial(t, addr, rpc.DialConfig{})
		if _, err := ping(echoOf(t, cc), "plain"); err == nil {
			t.Fatal("plain-text call to a TLS server succeeded")
		}
	})
	t.Run("client that does not trust the server fails to dial", func(t *testing.T) {
		_, err := rpc.Dial(context.Background(), addr, rpc.DialConfig{TLSConfig: &tls.Config{MinVersion: tls.VersionTLS12}})
		if err == nil {
			t.Fatal("dial with an untrusted certificate succeeded")
		}
	})
}
