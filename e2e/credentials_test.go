package e2e

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"capnproto.org/go/capnp/v3"

	"github.com/capraft/capraft/internal/pki"
	"github.com/capraft/capraft/rpc"
	"github.com/capraft/capraft/schema"
)

// TestCertificatesAreVerifiedAndRolesKeptApart runs a mutual-TLS cluster
// and presents it the wrong certificates: one from another CA and an
// expired one are refused during the TLS handshake (the connection's
// first call fails and the node logs why); a peer certificate does not
// make a client, nor a client certificate a peer.
func TestCertificatesAreVerifiedAndRolesKeptApart(t *testing.T) {
	e := newEnv(t, envConfig{security: mtlsMode})
	e.waitLeader(e.c.IDs(), 20*time.Second)

	t.Run("the cluster's own operator certificate is accepted", func(t *testing.T) {
		// The control: the dial and the call below work with a
		// certificate the cluster trusts.
		_, err := infoWith(e.c.Addr(1), e.pki.clientTLS(t, e.pki.operator))
		if err != nil {
			t.Fatalf("info with the operator certificate: %v", err)
		}
	})

	otherCA, err := pki.NewCA("another CA", certValidity)
	if err != nil {
		t.Fatal(err)
	}
	foreign, err := otherCA.Issue("operator", "operator of another CA", nil, certValidity)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	expired, err := e.pki.ca.IssueSpec(pki.Spec{
		CommonName: "expired operator", Roles: []string{"operator"},
		NotBefore: now.Add(-2 * time.Hour), NotAfter: now.Add(-time.Hour),
	})
	if err != nil {
		t.Fatal(err)
	}
	for i, tc := range []struct {
		name   string
		cert   *pki.KeyPair
		reason string // in the node's log of the failed handshake
	}{
		{"a certificate from another CA is refused at the handshake", foreign, "certificate signed by unknown authority"},
		{"an expired certificate is refused at the handshake", expired, "certificate has expired"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			id := e.c.IDs()[i%len(e.c.IDs())]
			local, err := infoWith(e.c.Addr(id), e.pki.clientTLS(t, tc.cert))
			if err == nil {
				t.Fatalf("node %d served a connection presenting %q", id, tc.cert.Cert.Subject)
			}
			t.Logf("refused: %v", err)
			remote := "" // the dial failed: any connection's failure
			if local != "" {
				remote = fmt.Sprintf(`"remote":%q`, local)
			}
			t.Logf("node %d: %s", id, e.waitLog(id, 10*time.Second, "TLS handshake failed", tc.reason, remote))
		})
	}

	t.Run("a peer certificate does not make a client or an operator", func(t *testing.T) {
		peer, err := e.pki.ca.Issue("peer", "a member's certificate", nil, certValidity)
		if err != nil {
			t.Fatal(err)
		}
		node := dialNode(t, e.c.Addr(1), e.pki.clientTLS(t, peer)).Node()
		ctx, cancel := opCtx()
		defer cancel()
		if err := resolveRaft(ctx, node); err != nil {
			t.Fatalf("raft with a peer certificate: %v", err)
		}
		id := identityOf(t, ctx, node)
		if !id.Peer() || id.Client() || id.Operator() {
			t.Errorf("identity with a peer certificate: peer %v, client %v, operator %v; want a peer only", id.Peer(), id.Client(), id.Operator())
		}
		if p := checkDenied(kvGet(ctx, node, attackTarget{key: "x"}), needsKV); p != "" {
			t.Errorf("kv get with a peer certificate: %s", p)
		}
		if p := checkDenied(kvPut(ctx, node, attackTarget{key: "x"}), needsKV); p != "" {
			t.Errorf("kv put with a peer certificate: %s", p)
		}
		if p := checkDenied(adminSnapshot(ctx, node, attackTarget{}), needsAdmin); p != "" {
			t.Errorf("admin snapshot with a peer certificate: %s", p)
		}
	})

	t.Run("a client certificate does not make a peer", func(t *testing.T) {
		node := dialNode(t, e.c.Addr(2), e.pki.clientTLS(t, e.pki.client)).Node()
		ctx, cancel := opCtx()
		defer cancel()
		if _, _, err := rawGet(ctx, kvCap(t, ctx, node), "x"); err != nil {
			t.Fatalf("kv get with a client certificate: %v", err)
		}
		if p := checkDenied(resolveRaft(ctx, node), needsRaft); p != "" {
			t.Errorf("raft with a client certificate: %s", p)
		}
		st := e.statuses([]uint64{2})[2]
		tg := attackTarget{clusterID: st.ClusterID, leader: st.Leader, term: st.Term, lastIndex: st.LastIndex, node: 2}
		if p := checkDenied(forgedAppend(false)(ctx, node, tg), needsRaft); p != "" {
			t.Errorf("AppendEntries with a client certificate: %s", p)
		}
	})
}

// infoWith dials addr with cfg and calls info, which any connection that
// passed the handshake holds. It returns the error of the dial or the
// call, and the connection's local address if the dial got that far.
// (With TLS 1.3 the client's side of the handshake completes before the
// node has checked the client's certificate, so a refusal shows in the
// first call.)
func infoWith(addr string, cfg *tls.Config) (local string, err error) {
	ctx, cancel := opCtx()
	defer cancel()
	cc, err := rpc.Dial(ctx, addr, rpc.DialConfig{TLSConfig: cfg, Timeout: time.Second, KeepAlive: -1})
	if err != nil {
		return "", err
	}
	defer cc.Close()
	_, err = nodeInfo(ctx, cc.Node())
	return cc.LocalAddr().String(), err
}

// waitLog waits until node id's log has a line containing each of what
// (empty strings are skipped).
func (e *env) waitLog(id uint64, timeout time.Duration, what ...string) string {
	e.t.Helper()
	var found string
	e.waitFor(timeout, fmt.Sprintf("node %d logs %q", id, what), func() (bool, string) {
		for _, line := range strings.Split(e.c.Log(id), "\n") {
			ok := true
			for _, w := range what {
				ok = ok && strings.Contains(line, w)
			}
			if ok {
				found = line
				return true, ""
			}
		}
		return false, "last lines:\n" + strings.Join(e.c.Tail(id, 5), "\n")
	})
	return found
}

// resolveRaft asks node for the Raft capability and waits for the answer.
func resolveRaft(ctx context.Context, node schema.Node) error {
	f, rel := node.Raft(ctx, nil)
	defer rel()
	_, err := f.Struct()
	return err
}

// identityOf returns what node holds, as it says.
func identityOf(t *testing.T, ctx context.Context, node schema.Node) schema.Identity {
	t.Helper()
	f, rel := node.Identity(ctx, nil)
	t.Cleanup(rel)
	res, err := f.Struct()
	if err != nil {
		t.Fatalf("identity: %v", err)
	}
	id, err := res.Identity()
	if err != nil {
		t.Fatalf("identity: %v", err)
	}
	return id
}

// kvCap returns node's KV capability, released when the test ends.
func kvCap(t *testing.T, ctx context.Context, node schema.Node) schema.KV {
	kv, rel := kvOf(ctx, node)
	t.Cleanup(func() { kv.Release(); rel() })
	return kv
}

// TestClusterSecretRefusesWrongSecretAndReplayedProof runs a cluster whose
// members prove a cluster secret: a node started with another secret and
// added to the configuration never becomes a voter nor receives any of
// the log (it and the leader each log that the other does not know the
// secret) while the cluster keeps serving; and a member's proof, good on the connection it
// answered, is refused when replayed on another after a fresh challenge.
func TestClusterSecretRefusesWrongSecretAndReplayedProof(t *testing.T) {
	e := newEnv(t, envConfig{})
	leader := e.waitLeader(e.c.IDs(), 20*time.Second)
	secret, err := rpc.LoadClusterSecret(e.secretFile)
	if err != nil {
		t.Fatal(err)
	}

	t.Run("a replayed member proof is refused", func(t *testing.T) {
		ctx, cancel := opCtx()
		defer cancel()
		target, member := e.others(leader)[0], leader
		addr := e.c.Addr(target)
		// The client nonce is the attacker's choice: the replay uses the
		// same one, so only the node's fresh nonce tells them apart.
		cn := bytes.Repeat([]byte{0x5a}, 32)

		first := dialNode(t, addr, nil).Node()
		ch := challenge(t, ctx, first, cn)
		if want := rpc.NodeProof(secret, ch.clusterID, target, cn, ch.nonce); ch.nodeID != target || !bytes.Equal(ch.nodeProof, want) {
			t.Fatalf("node %d's answer to the challenge does not prove the cluster secret (node id %d)", target, ch.nodeID)
		}
		proof := rpc.MemberProof(secret, ch.clusterID, member, target, cn, ch.nonce)
		peerNode, rel, err := loginMember(ctx, first, member, proof)
		if err != nil {
			t.Fatalf("login with the member proof on the connection it answers: %v", err)
		}
		defer rel()
		if id := identityOf(t, ctx, peerNode); !id.Peer() || id.MemberId() != member {
			t.Fatalf("the member proof granted peer %v as member %d, want a peer as member %d", id.Peer(), id.MemberId(), member)
		}

		// Captured, the proof is replayed on another connection after a
		// fresh challenge with the same client nonce...
		second := dialNode(t, addr, nil).Node()
		ch2 := challenge(t, ctx, second, cn)
		if bytes.Equal(ch2.nonce, ch.nonce) {
			t.Fatalf("node %d answered two challenges with the same nonce", target)
		}
		_, rel2, err := loginMember(ctx, second, member, proof)
		rel2()
		if p := checkDenied(err, "wrong proof"); p != "" {
			t.Errorf("the proof replayed on another connection: %s", p)
		}
		// ... and on the same connection after a fresh challenge.
		challenge(t, ctx, first, cn)
		_, rel3, err := loginMember(ctx, first, member, proof)
		rel3()
		if p := checkDenied(err, "wrong proof"); p != "" {
			t.Errorf("the proof replayed on its own connection after a fresh challenge: %s", p)
		}
		// A connection that lost its login attempt gains nothing.
		if p := checkDenied(resolveRaft(ctx, second), needsRaft); p != "" {
			t.Errorf("raft on the connection that replayed the proof: %s", p)
		}
	})

	t.Run("a node with a wrong secret cannot join", func(t *testing.T) {
		n4, err := e.c.AddNode()
		if err != nil {
			t.Fatal(err)
		}
		wrong := filepath.Join(t.TempDir(), "wrong.secret")
		if err := os.WriteFile(wrong, []byte(strings.Repeat("not the cluster's secret ", 3)), 0o600); err != nil {
			t.Fatal(err)
		}
		// The intruder grants anonymous connections a client's
		// authority, so the test can ask for its status.
		e.setNodeSecurity(n4.ID, "--cluster-secret-file", wrong, "--anonymous", "client")
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := e.c.StartNode(ctx, n4.ID); err != nil {
			t.Fatal(err)
		}
		w := e.startWrites([]kvClient{e.client(e.c.Addrs()[:3]...)}, "intruder", 2, 100)
		e.waitAcked(w, 10, 20*time.Second, "writes before the node joins")
		// Added as a voter, it first joins as a learner that the
		// leader promotes once it has caught up, which it never can.
		if err := e.admin.AddMember(ctx, n4.ID, n4.Addr, false); err != nil {
			t.Fatalf("add node %d: %v", n4.ID, err)
		}
		leader := e.waitLeader(e.others(n4.ID), 10*time.Second)
		// Each side finds the other does not prove the secret it knows.
		line := e.waitLog(leader, 15*time.Second, fmt.Sprintf(`"peer":%d`, n4.ID), "does not know the cluster secret")
		t.Logf("leader %d: %s", leader, line)
		line = e.waitLog(n4.ID, 15*time.Second, fmt.Sprintf(`"peer":%d`, leader), "does not know the cluster secret")
		t.Logf("node %d: %s", n4.ID, line)
		e.waitAcked(w, 20, 20*time.Second, "writes after the node was added")
		w.stop()

		intruder, err := newKVClient([]string{n4.Addr}, "", nil)
		if err != nil {
			t.Fatal(err)
		}
		defer intruder.Close()
		sctx, scancel := opCtx()
		defer scancel()
		st, err := intruder.Status(sctx, n4.Addr)
		if err != nil {
			t.Fatalf("status of node %d: %v", n4.ID, err)
		}
		if st.Applied != 0 || st.Leader != 0 || st.Revision != 0 {
			t.Errorf("node %d, which does not know the cluster secret, received the cluster's state: %s", n4.ID, describe(map[uint64]nodeStatus{n4.ID: st}))
		}
		_, members, err := e.admin.Members(sctx)
		if err != nil {
			t.Fatalf("members: %v", err)
		}
		if learner, ok := members[n4.ID]; !ok || !learner {
			t.Errorf("members %v: want node %d still a learner (added, never caught up)", members, n4.ID)
		}
		e.verifyWrites(e.admin, w, 20*time.Second)
	})
}

// challengeAnswer is a node's answer to Node.challenge.
type challengeAnswer struct {
	nonce, nodeProof  []byte
	nodeID, clusterID uint64
}

// challenge asks node for a challenge with client nonce cn.
func challenge(t *testing.T, ctx context.Context, node schema.Node, cn []byte) challengeAnswer {
	t.Helper()
	f, rel := node.Challenge(ctx, func(p schema.Node_challenge_Params) error { return p.SetNonce(cn) })
	defer rel()
	res, err := f.Struct()
	if err != nil {
		t.Fatalf("challenge: %v", err)
	}
	sn, err := res.Nonce()
	if err != nil {
		t.Fatalf("challenge: %v", err)
	}
	proof, err := res.NodeProof()
	if err != nil {
		t.Fatalf("challenge: %v", err)
	}
	return challengeAnswer{
		nonce: append([]byte(nil), sn...), nodeProof: append([]byte(nil), proof...),
		nodeID: res.NodeId(), clusterID: res.ClusterId(),
	}
}

// loginMember logs in on node as member id with proof and waits for the
// answer; it returns the Node granted and its release.
func loginMember(ctx context.Context, node schema.Node, id uint64, proof []byte) (schema.Node, func(), error) {
	f, rel := memberLogin(ctx, node, id, proof)
	res, err := f.Struct()
	if err != nil {
		return schema.Node{}, rel, err
	}
	return res.Node(), rel, nil
}

// memberLogin calls login on node as member id with proof.
func memberLogin(ctx context.Context, node schema.Node, id uint64, proof []byte) (schema.Node_login_Results_Future, capnp.ReleaseFunc) {
	return node.Login(ctx, func(p schema.Node_login_Params) error {
		cred, err := p.NewCredential()
		if err != nil {
			return err
		}
		m, err := cred.NewMember()
		if err != nil {
			return err
		}
		m.SetId(id)
		return m.SetProof(proof)
	})
}
