package raftnode_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/capraft/capraft/schema"
)

// codeError is a request's error field as a Go error, keeping the code.
type codeError struct {
	code schema.ErrorCode
	msg  string
}

func (e *codeError) Error() string { return fmt.Sprintf("%s: %s", e.code, e.msg) }

// errCode returns the schema error code carried by err, or false when err
// is not a request error (transport failure) or nil.
func errCode(err error) (schema.ErrorCode, bool) {
	var ce *codeError
	if errors.As(err, &ce) {
		return ce.code, true
	}
	return 0, false
}

func toCodeError(r schema.Result) error {
	if r.Which() != schema.Result_Which_error {
		return nil
	}
	e, _ := r.Error()
	msg, _ := e.Message_()
	return &codeError{e.Code(), msg}
}

// putCode is put that keeps the error code (the base helper formats it).
func (k *kvClient) putCode(ctx context.Context, seq uint64, key, value string) (uint64, error) {
	f, rel := k.kv.Put(ctx, func(p schema.KV_put_Params) error {
		p.SetSession(k.session)
		p.SetSeq(seq)
		op, err := p.NewOp()
		if err != nil {
			return err
		}
		if err := op.SetKey([]byte(key)); err != nil {
			return err
		}
		return op.SetValue([]byte(value))
	})
	defer rel()
	res, err := f.Struct()
	if err != nil {
		return 0, err
	}
	r, err := res.Result()
	if err != nil {
		return 0, err
	}
	return r.Revision(), toCodeError(r)
}

// getCode is get that keeps the error code and returns the key's version.
func (k *kvClient) getCode(ctx context.Context, key string, serializable bool) (value string, version, modRev uint64, found bool, err error) {
	f, rel := k.kv.Get(ctx, func(p schema.KV_get_Params) error {
		op, err := p.NewOp()
		if err != nil {
			return err
		}
		if serializable {
			op.SetConsistency(schema.Consistency_serializable)
		}
		return op.SetKey([]byte(key))
	})
	defer rel()
	res, err := f.Struct()
	if err != nil {
		return "", 0, 0, false, err
	}
	r, err := res.Result()
	if err != nil {
		return "", 0, 0, false, err
	}
	if err := toCodeError(r); err != nil {
		return "", 0, 0, false, err
	}
	g, _ := r.Get()
	if !g.Found() {
		return "", 0, 0, false, nil
	}
	kvp, _ := g.Kv()
	v, _ := kvp.Value()
	return string(v), kvp.Version(), kvp.ModRevision(), true, nil
}

// openCode opens a session and keeps the error code.
func (k *kvClient) openCode(ctx context.Context) error {
	f, rel := k.kv.OpenSession(ctx, nil)
	defer rel()
	res, err := f.Struct()
	if err != nil {
		return err
	}
	if res.HasError() {
		e, _ := res.Error()
		msg, _ := e.Message_()
		return &codeError{e.Code(), msg}
	}
	k.session = res.Session()
	return nil
}

// openRetry opens a session, retrying while the cluster settles.
func (k *kvClient) openRetry(t *testing.T, ctx context.Context) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := k.openCode(ctx)
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("open session: %v", err)
		}
		select {
		case <-ctx.Done():
			t.Fatalf("open session: %v", ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// isCode reports whether err carries one of codes.
func isCode(err error, codes ...schema.ErrorCode) bool {
	c, ok := errCode(err)
	if !ok {
		return false
	}
	for _, want := range codes {
		if c == want {
			return true
		}
	}
	return false
}

func codeNames(codes ...schema.ErrorCode) string {
	s := make([]string, len(codes))
	for i, c := range codes {
		s[i] = c.String()
	}
	return strings.Join(s, "|")
}
