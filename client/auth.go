package client

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/capraft/capraft/schema"
)

// Identity is what the client's connection holds, as the node it is
// connected to describes it (Node.identity).
type Identity struct {
	Peer     bool // holds raft
	Operator bool // holds admin
	Client   bool // holds kv, echo and status
	// Restricted confines kv to keys starting with Prefix (the empty
	// prefix: every key).
	Restricted bool
	Prefix     string
	ReadOnly   bool      // kv refuses writes
	TokenID    string    // the id of the token logged in with, if any
	Expires    time.Time // when the grant ends; zero: never
	MemberID   uint64    // a peer's node id, if its credential names one
	Subject    string    // the client certificate's subject, if one was presented
}

// Identity asks the connected node what the client's connection holds:
// its roles, its key-value restriction, and the token or certificate it
// came from.
func (c *Client) Identity(ctx context.Context) (Identity, error) {
	return connCall(c, ctx, "identity", func(cn *conn) (Identity, error) {
		f, release := cn.node.Identity(ctx, nil)
		defer release()
		res, err := f.Struct()
		if err != nil {
			return Identity{}, err
		}
		id, err := res.Identity()
		if err != nil {
			return Identity{}, err
		}
		return decodeIdentity(id), nil
	})
}

// decodeIdentity copies an Identity out of its message.
func decodeIdentity(id schema.Identity) Identity {
	prefix, _ := id.Prefix()
	tokenID, _ := id.TokenId()
	subject, _ := id.Subject()
	out := Identity{
		Peer: id.Peer(), Operator: id.Operator(), Client: id.Client(),
		Restricted: id.Restricted(), Prefix: string(prefix), ReadOnly: id.ReadOnly(),
		TokenID: tokenID, MemberID: id.MemberId(), Subject: subject,
	}
	if ms := id.Expires(); ms != 0 {
		out.Expires = time.UnixMilli(ms)
	}
	return out
}

// TokenSpec is what a token created by CreateToken grants.
type TokenSpec struct {
	// Operator mints an operator's token (admin, and everything a client
	// holds); else a client's. A prefix or read-only restriction makes
	// the token a client's whatever this says.
	Operator bool
	// RestrictPrefix confines kv to the keys starting with Prefix.
	RestrictPrefix bool
	Prefix         string
	ReadOnly       bool
	// TTL is how long the token is good for; 0: no expiry. It is counted
	// in whole milliseconds, rounded up.
	TTL time.Duration
}

// CreateToken asks the cluster to mint a token as spec says, and returns
// it and its id (which names it for RevokeToken). It needs an operator's
// credential. The token is a secret: whoever holds it holds its grant.
func (c *Client) CreateToken(ctx context.Context, spec TokenSpec) (token, id string, err error) {
	if spec.TTL < 0 {
		return "", "", fmt.Errorf("create token: negative time to live %v; use 0 for no expiry", spec.TTL)
	}
	ttl := uint64((spec.TTL + time.Millisecond - 1) / time.Millisecond)
	// A token minted for an answer that was lost grants nothing to
	// anyone (nobody saw it), so a retry is safe.
	err = c.adminCall(ctx, "create token", nil, func(ctx context.Context, adm schema.Admin) (*ServerError, error) {
		f, release := adm.CreateToken(ctx, func(p schema.Admin_createToken_Params) error {
			s, err := p.NewSpec()
			if err != nil {
				return err
			}
			s.SetOperator(spec.Operator)
			s.SetRestrictPrefix(spec.RestrictPrefix)
			s.SetReadOnly(spec.ReadOnly)
			s.SetTtlMillis(ttl)
			if spec.RestrictPrefix {
				return s.SetPrefix([]byte(spec.Prefix))
			}
			return nil
		})
		defer release()
		res, err := f.Struct()
		se, err := answer(res, err)
		if err != nil || se != nil {
			return se, err
		}
		if token, err = res.Token(); err != nil {
			return nil, err
		}
		if id, err = res.Id(); err != nil {
			return nil, err
		}
		if token == "" {
			return nil, errors.New("the node answered an empty token (a bug in the node)")
		}
		return nil, nil
	})
	if err != nil {
		return "", "", err
	}
	return token, id, nil
}

// RevokeToken revokes the token with id, and every token derived from
// it, on every node. expires is when the token expires anyway (zero:
// unknown or never), which lets nodes forget the revocation after. It
// needs an operator's credential.
func (c *Client) RevokeToken(ctx context.Context, id string, expires time.Time) error {
	if id == "" {
		return errors.New("revoke token: empty token id")
	}
	var ms int64
	if !expires.IsZero() {
		ms = expires.UnixMilli()
	}
	return c.adminCall(ctx, fmt.Sprintf("revoke token %q", id), nil, func(ctx context.Context, adm schema.Admin) (*ServerError, error) {
		f, release := adm.RevokeToken(ctx, func(p schema.Admin_revokeToken_Params) error {
			p.SetExpires(ms)
			return p.SetId(id)
		})
		defer release()
		return answer(f.Struct())
	})
}
