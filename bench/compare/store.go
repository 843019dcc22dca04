package main

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"
	"unsafe"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/capraft/capraft/client"
)

// dialStores opens n independent connections to system's cluster at
// endpoints (host:port). Each is what an application gets from the
// system's client library with its defaults: for capraft one client.New
// (which moves itself to the leader and coalesces its goroutines'
// operations into batch calls), for etcd one clientv3.New (one gRPC
// connection balancing its calls over every endpoint).
//
// spread, for capraft, sets the client's read spreading
// (client.WithReadSpreading): "on", "off", or "" for the default.
func dialStores(system string, endpoints []string, n int, token, spread string) ([]Store, error) {
	stores := make([]Store, 0, n)
	closeAll := func() {
		for _, s := range stores {
			s.Close()
		}
	}
	for range n {
		var s Store
		var err error
		switch system {
		case "capraft":
			s, err = dialCapraft(endpoints, token, spread)
		case "etcd":
			s, err = dialEtcd(endpoints)
		default:
			err = fmt.Errorf("system %q: want capraft or etcd", system)
		}
		if err != nil {
			closeAll()
			return nil, err
		}
		stores = append(stores, s)
	}
	return stores, nil
}

// capraftStore drives capraft through its Go client.
type capraftStore struct{ c *client.Client }

func dialCapraft(endpoints []string, token, spread string) (Store, error) {
	var opts []client.Option
	if token != "" {
		opts = append(opts, client.WithToken(token))
	}
	switch spread {
	case "on", "off":
		opts = append(opts, client.WithReadSpreading(spread == "on"))
	case "":
	default:
		return nil, fmt.Errorf("--read-spreading %q: want on, off or nothing (the client's default)", spread)
	}
	c, err := client.New(endpoints, opts...)
	if err != nil {
		return nil, fmt.Errorf("capraft client: %w", err)
	}
	return capraftStore{c}, nil
}

func (s capraftStore) Put(ctx context.Context, key string, value []byte) error {
	_, err := s.c.Put(ctx, key, value)
	return err
}

func (s capraftStore) Get(ctx context.Context, key string, serializable bool) error {
	var err error
	if serializable {
		_, err = s.c.Get(ctx, key, client.Serializable())
	} else {
		_, err = s.c.Get(ctx, key)
	}
	if errors.Is(err, client.ErrNotFound) {
		return nil // etcd answers a missing key with an empty range, not an error
	}
	return err
}

func (s capraftStore) Close() error { return s.c.Close() }

// etcdStore drives etcd through its Go client (go.etcd.io/etcd/client/v3).
type etcdStore struct {
	c *clientv3.Client
}

func dialEtcd(endpoints []string) (Store, error) {
	urls := make([]string, len(endpoints))
	for i, e := range endpoints {
		if !strings.Contains(e, "://") {
			e = "http://" + e
		}
		urls[i] = e
	}
	c, err := clientv3.New(clientv3.Config{
		Endpoints:   urls,
		DialTimeout: 5 * time.Second,
		Logger:      zap.NewNop(),
	})
	if err != nil {
		return nil, fmt.Errorf("etcd client: %w", err)
	}
	return etcdStore{c: c}, nil
}

func (s etcdStore) Put(ctx context.Context, key string, value []byte) error {
	// The client takes the value as a string. Run never changes a value
	// it handed out, so the bytes are shared rather than copied per put
	// (capraft's client gets the same bytes without a copy).
	_, err := s.c.Put(ctx, key, unsafe.String(unsafe.SliceData(value), len(value)))
	return err
}

func (s etcdStore) Get(ctx context.Context, key string, serializable bool) error {
	var err error
	if serializable {
		_, err = s.c.Get(ctx, key, clientv3.WithSerializable())
	} else {
		_, err = s.c.Get(ctx, key)
	}
	return err
}

func (s etcdStore) Close() error { return s.c.Close() }
