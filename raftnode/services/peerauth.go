package services

import (
	"context"
	"errors"
	"fmt"

	"github.com/capraft/capraft/rpc"
	"github.com/capraft/capraft/schema"
)

// PeerAuthenticator returns how node id of cluster clusterID proves
// itself a member when it dials a peer (transport.Config.Authenticate):
// by the cluster secret's challenge, or (nil) not at all beyond what the
// connection shows (mutual TLS, or no security).
func PeerAuthenticator(sec Security, clusterID, id uint64) func(context.Context, uint64, schema.Node) (schema.Node, error) {
	if sec.secret() == nil {
		return nil
	}
	return peerAuth{sec: sec, clusterID: clusterID, id: id}.authenticate
}

// peerAuth is what a node proves itself a member with.
type peerAuth struct {
	sec           Security
	clusterID, id uint64
}

// authenticate proves this node a member to peer on a new connection
// whose bootstrap Node is boot, by the cluster secret's challenge: the
// peer first proves it knows the secret (so a node never sends its log to,
// or takes acknowledgements from, an impostor), then this node does. It
// returns the Node the login granted, which the caller releases.
func (pa peerAuth) authenticate(ctx context.Context, peer uint64, boot schema.Node) (schema.Node, error) {
	sec := &pa.sec
	cn := rpc.NewNonce()
	cf, crel := boot.Challenge(ctx, func(p schema.Node_challenge_Params) error { return p.SetNonce(cn) })
	defer crel()
	res, err := cf.Struct()
	if err != nil {
		return schema.Node{}, fmt.Errorf("challenge: %w", err)
	}
	sn, err := res.Nonce()
	if err != nil {
		return schema.Node{}, fmt.Errorf("challenge: read nonce: %w", err)
	}
	proof, err := res.NodeProof()
	if err != nil {
		return schema.Node{}, fmt.Errorf("challenge: read proof: %w", err)
	}
	switch {
	case res.ClusterId() != pa.clusterID:
		return schema.Node{}, fmt.Errorf("the node there is in cluster %d, not %d (another --cluster-name?)", res.ClusterId(), pa.clusterID)
	case res.NodeId() != peer:
		return schema.Node{}, fmt.Errorf("the node there is node %d, not node %d (check --peers)", res.NodeId(), peer)
	case rpc.CheckNonce(sn) != nil:
		return schema.Node{}, fmt.Errorf("challenge: the node's nonce: %w", rpc.CheckNonce(sn))
	case !sec.proven(proof, func(secret []byte) []byte { return rpc.NodeProof(secret, pa.clusterID, peer, cn, sn) }):
		return schema.Node{}, errors.New("the node there does not know the cluster secret (a different --cluster-secret-file, or not a member): not trusting it")
	}
	mine := rpc.MemberProof(sec.secret(), pa.clusterID, pa.id, peer, cn, sn)
	lf, lrel := boot.Login(ctx, func(p schema.Node_login_Params) error {
		c, err := p.NewCredential()
		if err != nil {
			return err
		}
		m, err := c.NewMember()
		if err != nil {
			return err
		}
		m.SetId(pa.id)
		return m.SetProof(mine)
	})
	defer lrel()
	lres, err := lf.Struct()
	if err != nil {
		return schema.Node{}, fmt.Errorf("login: %w", err)
	}
	return lres.Node().AddRef(), nil
}
