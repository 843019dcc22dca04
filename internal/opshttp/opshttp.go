// Package opshttp serves a node's operations endpoints over HTTP: the
// Prometheus metrics (/metrics), liveness (/healthz), readiness (/readyz)
// and, when enabled, the Go profiler (/debug/pprof/). It knows nothing of
// Raft: the node hands it a gatherer and a readiness check.
package opshttp

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Config configures a Server.
type Config struct {
	// Addr is the address to listen on (host:port).
	Addr string
	// Gatherer is what /metrics serves (required).
	Gatherer prometheus.Gatherer
	// Ready says whether the node should receive traffic: nil if so, or
	// why not (served as the body of a 503). nil means always ready.
	Ready func(ctx context.Context) error
	// TLS, if set, serves HTTPS with it.
	TLS *tls.Config
	// Pprof serves the Go profiler under /debug/pprof/.
	Pprof bool
	// Logger receives errors serving metrics (nil discards them).
	Logger hclog.Logger
}

// readyTimeout bounds one readiness check: an orchestrator probing a
// node that cannot answer learns it is not ready, rather than waiting.
const readyTimeout = 2 * time.Second

// Server is a running operations endpoint.
type Server struct {
	ln  net.Listener
	srv *http.Server
	err chan error
}

// Listen binds cfg.Addr and starts serving.
func Listen(cfg Config) (*Server, error) {
	if cfg.Gatherer == nil {
		return nil, errors.New("opshttp: no Gatherer")
	}
	log := cfg.Logger
	if log == nil {
		log = hclog.NewNullLogger()
	}
	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		return nil, fmt.Errorf("metrics listener: %w", err)
	}
	if cfg.TLS != nil {
		ln = tls.NewListener(ln, cfg.TLS)
	}
	s := &Server{
		ln: ln,
		srv: &http.Server{
			Handler:           Handler(cfg, log),
			ReadHeaderTimeout: 10 * time.Second,
			IdleTimeout:       2 * time.Minute,
			ErrorLog:          log.StandardLogger(&hclog.StandardLoggerOptions{InferLevels: true}),
		},
		err: make(chan error, 1),
	}
	go func() { s.err <- s.srv.Serve(ln) }()
	return s, nil
}

// Addr is the address the server listens on.
func (s *Server) Addr() net.Addr { return s.ln.Addr() }

// Close stops the server, waiting up to ctx for requests under way.
func (s *Server) Close(ctx context.Context) error {
	err := s.srv.Shutdown(ctx)
	if err != nil {
		_ = s.srv.Close()
	}
	if serr := <-s.err; !errors.Is(serr, http.ErrServerClosed) && err == nil {
		err = serr
	}
	return err
}

// Handler returns the endpoints' handler (what Listen serves).
func Handler(cfg Config, log hclog.Logger) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(cfg.Gatherer, promhttp.HandlerOpts{
		ErrorLog:      promLogger{log},
		ErrorHandling: promhttp.ContinueOnError,
	}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		// The process runs and serves HTTP: that is all liveness means.
		// A node without a leader is alive; restarting it would not help.
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		if cfg.Ready != nil {
			ctx, cancel := context.WithTimeout(r.Context(), readyTimeout)
			err := cfg.Ready(ctx)
			cancel()
			if err != nil {
				w.WriteHeader(http.StatusServiceUnavailable)
				_, _ = fmt.Fprintf(w, "not ready: %v\n", err)
				return
			}
		}
		_, _ = fmt.Fprintln(w, "ok")
	})
	if cfg.Pprof {
		mux.HandleFunc("GET /debug/pprof/", pprof.Index)
		mux.HandleFunc("GET /debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("GET /debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
	}
	return mux
}

// promLogger adapts hclog to promhttp's logger.
type promLogger struct{ log hclog.Logger }

func (l promLogger) Println(v ...any) { l.log.Warn("serving metrics", "error", fmt.Sprint(v...)) }
