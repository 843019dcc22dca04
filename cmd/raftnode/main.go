// Command raftnode runs a capraft node: it serves the node's Cap'n Proto
// capabilities (Echo today; the Raft peer protocol and the key-value
// service as they land) on a TCP address.
//
// With no flags it serves on 127.0.0.1:7000 as node 1:
//
//	raftnode
//	raftnode --id 2 --listen 127.0.0.1:7001 --log-level debug --log-json
//
// SIGINT or SIGTERM shuts it down gracefully: it stops accepting, lets calls
// in flight finish (up to --shutdown-timeout) and closes every connection.
// A second signal exits at once.
package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/capraft/capraft/cmd/internal/cli"
	"github.com/capraft/capraft/raftnode"
	"github.com/capraft/capraft/raftnode/echo"
	"github.com/capraft/capraft/rpc"
)

type flags struct {
	id               uint64
	listen           string
	advertise        string
	logLevel         string
	logJSON          bool
	maxConns         int
	maxMessageSize   uint64
	handshakeTimeout time.Duration
	idleTimeout      time.Duration
	shutdownTimeout  time.Duration
	echoQueue        int
	tlsCert, tlsKey  string
}

func main() {
	if err := newCommand().Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "raftnode: "+err.Error())
		os.Exit(1)
	}
}

func newCommand() *cobra.Command {
	var f flags
	cmd := &cobra.Command{
		Use:   "raftnode",
		Short: "Run a capraft consensus node",
		Long: "raftnode serves a capraft node's Cap'n Proto capabilities over TCP.\n" +
			"With no flags it serves node 1 on 127.0.0.1:7000; try `raftctl ping hello` next.",
		Args:          cobra.NoArgs,
		SilenceUsage:  true,
		SilenceErrors: true,
		Version:       cli.Version(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return run(cmd.Context(), f)
		},
	}
	d := rpc.DefaultConfig()
	fl := cmd.Flags()
	fl.Uint64Var(&f.id, "id", 1, "this node's id in its cluster (non-zero)")
	fl.StringVar(&f.listen, "listen", "127.0.0.1:7000", "TCP address to serve on (port 0 picks a free port)")
	fl.StringVar(&f.advertise, "advertise", "", "address clients and peers should use to reach this node (default: the listen address)")
	fl.StringVar(&f.logLevel, "log-level", "info", "log level: "+cli.LogLevels)
	fl.BoolVar(&f.logJSON, "log-json", false, "log JSON lines instead of text")
	fl.IntVar(&f.maxConns, "max-conns", d.MaxConns, "connections served at once; more are refused")
	fl.Uint64Var(&f.maxMessageSize, "max-message-size", d.MaxMessageSize, "largest message accepted from a peer, in bytes")
	fl.DurationVar(&f.handshakeTimeout, "handshake-timeout", d.HandshakeTimeout, "time a new connection has to send its first message")
	fl.DurationVar(&f.idleTimeout, "idle-timeout", d.IdleTimeout, "close connections silent for this long (negative: never)")
	fl.DurationVar(&f.shutdownTimeout, "shutdown-timeout", 10*time.Second, "on SIGINT/SIGTERM, how long calls in flight may take to finish")
	fl.IntVar(&f.echoQueue, "echo-queue", echo.DefaultQueueLen, "messages an echo listener may fall behind before it is dropped")
	fl.StringVar(&f.tlsCert, "tls-cert", "", "PEM certificate file; with --tls-key, serve TLS")
	fl.StringVar(&f.tlsKey, "tls-key", "", "PEM private key file for --tls-cert")
	return cmd
}

func run(ctx context.Context, f flags) error {
	log, err := cli.NewLogger("raftnode", f.logLevel, f.logJSON, os.Stderr)
	if err != nil {
		return err
	}
	if f.id == 0 {
		return errors.New("--id must be non-zero")
	}
	log = log.With("node", f.id)

	var tlsConfig *tls.Config
	if f.tlsCert != "" || f.tlsKey != "" {
		if f.tlsCert == "" || f.tlsKey == "" {
			return errors.New("--tls-cert and --tls-key go together: give both or neither")
		}
		cert, err := tls.LoadX509KeyPair(f.tlsCert, f.tlsKey)
		if err != nil {
			return fmt.Errorf("load TLS key pair: %w", err)
		}
		tlsConfig = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	}

	ln, err := net.Listen("tcp", f.listen)
	if err != nil {
		if errors.Is(err, syscall.EADDRINUSE) {
			return fmt.Errorf("listen on %s: address already in use (is another raftnode running? choose another address with --listen)", f.listen)
		}
		return fmt.Errorf("listen on %s: %w", f.listen, err)
	}
	advertise := f.advertise
	if advertise == "" {
		advertise = ln.Addr().String()
	}

	node, err := raftnode.New(raftnode.Config{
		ID:        f.id,
		Version:   cli.Version(),
		Advertise: advertise,
		Echo:      echo.HubConfig{QueueLen: f.echoQueue},
		Logger:    log,
	})
	if err != nil {
		ln.Close()
		return err
	}
	defer node.Close()

	srv := rpc.NewServer(rpc.Config{
		Bootstrap:        node.Bootstrap,
		MaxConns:         f.maxConns,
		MaxMessageSize:   f.maxMessageSize,
		HandshakeTimeout: f.handshakeTimeout,
		IdleTimeout:      f.idleTimeout,
		TLSConfig:        tlsConfig,
		Logger:           log.Named("rpc"),
	})
	log.Info("raftnode starting", "version", cli.Version(), "listen", ln.Addr().String(), "advertise", advertise)

	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(sigs)

	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()

	select {
	case err := <-served:
		return err
	case <-ctx.Done():
	case sig := <-sigs:
		log.Info("shutting down", "signal", sig.String(), "timeout", f.shutdownTimeout)
	}

	sctx, cancel := context.WithTimeout(context.Background(), f.shutdownTimeout)
	defer cancel()
	go func() {
		// A second signal means "now": stop waiting for calls in flight.
		select {
		case sig := <-sigs:
			log.Warn("second signal; closing connections now", "signal", sig.String())
			cancel()
		case <-sctx.Done():
		}
	}()
	if err := srv.Shutdown(sctx); err != nil {
		log.Warn("shutdown did not drain in time; connections were closed with calls in flight", "error", err)
	}
	<-served
	log.Info("stopped")
	return nil
}
