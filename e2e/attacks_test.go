package e2e

import (
	"context"
	"crypto/tls"
	"fmt"
	"hash/crc32"
	"math/rand"
	"testing"
	"time"

	"github.com/capraft/capraft/e2e/cluster"
	"github.com/capraft/capraft/rpc"
	"github.com/capraft/capraft/schema"
	"github.com/capraft/capraft/token"
)

// The attacks of issue 13, each of which once took a cluster over or lost
// its data, made from connections that prove nothing (or only a client's
// authority): every one must be refused for lack of authority, and leave
// the cluster as it was.

// Authorities an attack needs, as the refusal names them (the capability
// the Node would not hand out).
const (
	needsRaft  = "raft needs"
	needsAdmin = "admin needs"
	needsKV    = "kv needs"
)

// attackTarget is what an attacker knows of the cluster (all of it
// public or guessable: the cluster id is derived from its name) and the
// node attacked.
type attackTarget struct {
	clusterID uint64
	leader    uint64 // the current leader, whom forged messages impersonate
	term      uint64 // the current term
	lastIndex uint64 // the leader's last log index
	node      uint64 // the node attacked
	other     uint64 // a member other than node and, if possible, the leader
	members   []uint64
	key       string // an acknowledged write's key
	rng       *rand.Rand
}

// attackStep is one call of an attack; it returns the call's error.
type attackStep func(ctx context.Context, node schema.Node, tg attackTarget) error

// attack is a sequence of calls on one connection, each of which must be
// refused with a message saying need.
type attack struct {
	name  string
	need  string
	steps []attackStep
}

// attacks lists the attacks.
func attacks() []attack {
	return []attack{
		{"forged InstallSnapshot then TimeoutNow", needsRaft, []attackStep{forgedSnapshot(snapshotTakeover), forgedTimeoutNow(100)}},
		{"forged AppendEntries, higher term, as the leader", needsRaft, []attackStep{forgedAppend(false)}},
		{"forged AppendEntries, higher term, from a non-member", needsRaft, []attackStep{forgedAppend(true)}},
		{"forged empty snapshot", needsRaft, []attackStep{forgedSnapshot(snapshotEmpty)}},
		{"forged garbage snapshot", needsRaft, []attackStep{forgedSnapshot(snapshotGarbage)}},
		{"forged RequestVote with the transfer flag", needsRaft, []attackStep{forgedTransferVote}},
		{"forged TimeoutNow from the leader", needsRaft, []attackStep{forgedTimeoutNow(0)}},
		{"put through the Raft capability's forwarding KV", needsRaft, []attackStep{forwardedPut}},
		{"removeMember through the Raft capability's forwarding Admin", needsRaft, []attackStep{forwardedRemove}},
		{"admin removeMember", needsAdmin, []attackStep{adminRemove}},
		{"admin addMember of two unreachable voters", needsAdmin, []attackStep{adminAddUnreachable(98), adminAddUnreachable(99)}},
		{"admin transferLeadership", needsAdmin, []attackStep{adminTransfer}},
		{"admin snapshot", needsAdmin, []attackStep{adminSnapshot}},
		{"kv put over an acknowledged write", needsKV, []attackStep{kvPut}},
		{"kv delete of an acknowledged write", needsKV, []attackStep{kvDelete}},
		{"kv get of an acknowledged write", needsKV, []attackStep{kvGet}},
		{"member login with a guessed secret, then AppendEntries", "cluster secret", []attackStep{guessedMemberAppend}},
		{"login with a forged operator token, then admin removeMember", "token signature does not verify", []attackStep{forgedTokenRemove}},
	}
}

// attacker is how an attacker connects, and what it holds legitimately
// (attacks needing only that are not attacks for it).
type attacker struct {
	name  string
	tls   *tls.Config
	holds map[string]bool
}

// TestUnauthenticatedAttacksAreRefused runs every attack against every
// node of a 3-node cluster in each security mode, under a write load:
// each call is refused with permissionDenied naming the authority it
// needs, and afterwards every acknowledged write reads back intact
// (linearizably, through every node), the leader and term are those
// from before, and the configuration is unchanged.
func TestUnauthenticatedAttacksAreRefused(t *testing.T) {
	for _, mode := range []securityMode{mtlsMode, secretMode, insecureSecretMode} {
		t.Run(mode.String(), func(t *testing.T) { testAttacks(t, mode) })
	}
}

func testAttacks(t *testing.T, mode securityMode) {
	// A longer election timeout makes a spurious election (which would
	// change the leader without any attack) unlikely on a busy machine.
	e := newEnv(t, envConfig{security: mode, electionTimeout: time.Second})
	ids := e.c.IDs()
	e.waitLeader(ids, 20*time.Second)
	// The load runs until stopped after the attacks (the bound is far
	// above what it reaches).
	w := e.startWrites([]kvClient{e.client(e.c.Addrs()...)}, "attacked", 2, 5000)
	e.waitAcked(w, 20, 20*time.Second, "writes before the attacks")
	e.waitConverged(ids, 15*time.Second)
	before := e.statuses(ids)
	leader, term := before[ids[0]].Leader, before[ids[0]].Term
	t.Logf("before the attacks: %s", describe(before))

	var attackers []attacker
	if mode == mtlsMode {
		attackers = []attacker{
			{"TLS without a certificate", e.pki.clientTLS(t, nil), nil},
			{"TLS with a client certificate", e.pki.clientTLS(t, e.pki.client), map[string]bool{needsKV: true}},
		}
	} else {
		attackers = []attacker{{"plain TCP, no credential", nil, nil}}
	}
	key := w.ackedKey()
	for _, a := range attackers {
		for _, at := range attacks() {
			if a.holds[at.need] {
				continue
			}
			for _, id := range ids {
				tg := attackTarget{
					clusterID: before[id].ClusterID, leader: leader, term: term,
					lastIndex: before[leader].LastIndex, node: id, members: ids, key: key,
					rng: e.rng,
				}
				for _, o := range ids {
					if o != id && (tg.other == 0 || tg.other == leader) {
						tg.other = o
					}
				}
				e.runAttack(a, at, tg)
			}
		}
	}
	e.waitAcked(w, 10, 20*time.Second, "writes after the attacks")
	w.stop()

	var after map[uint64]nodeStatus
	e.waitFor(10*time.Second, "every node answers status", func() (bool, string) {
		after = e.statuses(ids)
		return len(after) == len(ids), describe(after)
	})
	for _, id := range ids {
		if s := after[id]; s.Leader != leader || s.Term != term {
			t.Errorf("node %d: leader %d in term %d after the attacks, want leader %d in term %d (before: %s; after: %s)",
				id, s.Leader, s.Term, leader, term, describe(before), describe(after))
		}
	}
	ctx, cancel := opCtx()
	defer cancel()
	_, members, err := e.admin.Members(ctx)
	if err != nil {
		t.Fatalf("members: %v", err)
	}
	same := len(members) == len(ids)
	for _, id := range ids {
		learner, ok := members[id]
		same = same && ok && !learner
	}
	if !same {
		t.Errorf("members after the attacks (id: learner): %v, want the voters %v alone", members, ids)
	}
	// Linearizable reads through each node: a replica the attacks made
	// diverge would serve other values (or none).
	for _, id := range ids {
		t.Logf("reading every write back through node %d", id)
		e.verifyWrites(e.clientFor(id), w, 20*time.Second)
	}
}

// runAttack makes attack at against node tg.node on a fresh connection of
// attacker a; each step must be refused with permissionDenied naming
// what it needs.
func (e *env) runAttack(a attacker, at attack, tg attackTarget) {
	e.t.Helper()
	cc := dialNode(e.t, e.c.Addr(tg.node), a.tls)
	defer cc.Close()
	ctx, cancel := opCtx()
	defer cancel()
	// The connection works: what it is refused is refused for lack of
	// authority, not because it is broken.
	if id, err := nodeInfo(ctx, cc.Node()); err != nil || id != tg.node {
		e.t.Fatalf("%s: info on node %d: id %d, %v", a.name, tg.node, id, err)
	}
	for i, step := range at.steps {
		err := step(ctx, cc.Node(), tg)
		if problem := checkDenied(err, at.need); problem != "" {
			e.t.Errorf("%s, %s (step %d of %d) against node %d: %s", a.name, at.name, i+1, len(at.steps), tg.node, problem)
		}
	}
}

// ackedKey returns the key of an acknowledged write.
func (w *writeLoad) ackedKey() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	for k := range w.acked {
		return k
	}
	return ""
}

// withRaft calls call on node's Raft capability, pipelined: a refused
// raft() fails the call.
func withRaft(ctx context.Context, node schema.Node, call func(schema.Raft) error) error {
	f, rel := node.Raft(ctx, nil)
	defer rel()
	return call(f.Raft())
}

// withAdmin calls call on node's Admin capability, pipelined.
func withAdmin(ctx context.Context, node schema.Node, call func(schema.Admin) error) error {
	f, rel := node.Admin(ctx, nil)
	defer rel()
	return call(f.Admin())
}

// withKV calls call on node's KV capability, pipelined.
func withKV(ctx context.Context, node schema.Node, call func(schema.KV) error) error {
	f, rel := node.Kv(ctx, nil)
	defer rel()
	return call(f.Kv())
}

// forgedSend opens a stream on lane as sent by from to the node
// attacked and sends it one forged message, filled in by fill, all
// pipelined on node's Raft capability: a refused raft() fails the send.
func forgedSend(ctx context.Context, node schema.Node, tg attackTarget, from uint64, lane schema.Lane,
	typ schema.MessageType, fill func(schema.Message) error) error {
	return withRaft(ctx, node, func(r schema.Raft) error {
		of, orel := r.Open(ctx, func(p schema.Raft_open_Params) error {
			h, err := p.NewHeader()
			if err != nil {
				return err
			}
			h.SetClusterId(tg.clusterID)
			h.SetFrom(from)
			h.SetTo(tg.node)
			p.SetLane(lane)
			return nil
		})
		defer orel()
		sf, srel := of.Stream().Send(ctx, func(p schema.PeerStream_send_Params) error {
			msgs, err := p.NewMsgs(1)
			if err != nil {
				return err
			}
			m := msgs.At(0)
			m.SetType(typ)
			m.SetFrom(from)
			m.SetTo(tg.node)
			return fill(m)
		})
		defer srel()
		_, err := sf.Struct()
		return err
	})
}

func setVoters(cs schema.ConfState, ids []uint64) error {
	l, err := cs.NewVoters(int32(len(ids)))
	if err != nil {
		return err
	}
	for i, id := range ids {
		l.Set(i, id)
	}
	return nil
}

// forgedAppend sends AppendEntries in a much higher term, with an entry
// past the end of the log and a commit index covering it, as the leader
// or, if nonMember, as node 99.
func forgedAppend(nonMember bool) attackStep {
	return func(ctx context.Context, node schema.Node, tg attackTarget) error {
		from := tg.leader
		if nonMember {
			from = 99
		}
		return forgedSend(ctx, node, tg, from, schema.Lane_data, schema.MessageType_app, func(m schema.Message) error {
			m.SetTerm(tg.term + 100)
			m.SetIndex(tg.lastIndex)
			m.SetLogTerm(tg.term)
			m.SetCommit(tg.lastIndex + 1)
			es, err := m.NewEntries(1)
			if err != nil {
				return err
			}
			en := es.At(0)
			en.SetIndex(tg.lastIndex + 1)
			en.SetTerm(tg.term + 100)
			en.SetType(schema.EntryType_normal)
			return en.SetData([]byte("forged entry"))
		})
	}
}

// Kinds of forged snapshot.
const (
	// snapshotTakeover: far ahead of the log, making the attacked node
	// the only voter (what TimeoutNow then turns into leadership).
	snapshotTakeover = iota
	// snapshotEmpty: no data at all, as of an index ahead of the log.
	snapshotEmpty
	// snapshotGarbage: random bytes with a matching checksum.
	snapshotGarbage
)

// forgedSnapshot streams a snapshot of the given kind as the leader, in a
// higher term, the way a leader does (Raft.installSnapshot, one write,
// finish), all pipelined on node's Raft capability: a refused raft()
// fails the offer.
func forgedSnapshot(kind int) attackStep {
	return func(ctx context.Context, node schema.Node, tg attackTarget) error {
		var data []byte
		voters := tg.members
		switch kind {
		case snapshotTakeover:
			voters = []uint64{tg.node}
		case snapshotGarbage:
			data = make([]byte, 4096)
			tg.rng.Read(data)
		}
		return withRaft(ctx, node, func(r schema.Raft) error {
			of, orel := r.InstallSnapshot(ctx, func(p schema.Raft_installSnapshot_Params) error {
				h, err := p.NewHeader()
				if err != nil {
					return err
				}
				h.SetClusterId(tg.clusterID)
				h.SetFrom(tg.leader)
				h.SetTo(tg.node)
				o, err := p.NewOffer()
				if err != nil {
					return err
				}
				o.SetTerm(tg.term + 100)
				o.SetSize(uint64(len(data)))
				o.SetChecksum(crc32.Checksum(data, crc32.MakeTable(crc32.Castagnoli)))
				meta, err := o.NewMeta()
				if err != nil {
					return err
				}
				meta.SetIndex(tg.lastIndex + 1000)
				meta.SetTerm(tg.term + 100)
				cs, err := meta.NewConfState()
				if err != nil {
					return err
				}
				return setVoters(cs, voters)
			})
			defer orel()
			stream := of.Stream()
			wf, wrel := stream.Write(ctx, func(p schema.SnapshotStream_write_Params) error { return p.SetData(data) })
			defer wrel()
			ff, frel := stream.Finish(ctx, nil)
			defer frel()
			if _, err := of.Struct(); err != nil {
				return err
			}
			if _, err := wf.Struct(); err != nil {
				return err
			}
			_, err := ff.Struct()
			return err
		})
	}
}

// forgedTimeoutNow tells the attacked node, as the leader, to campaign
// at once, in the current term plus termAhead.
func forgedTimeoutNow(termAhead uint64) attackStep {
	return func(ctx context.Context, node schema.Node, tg attackTarget) error {
		return forgedSend(ctx, node, tg, tg.leader, schema.Lane_control, schema.MessageType_timeoutNow, func(m schema.Message) error {
			m.SetTerm(tg.term + termAhead)
			return nil
		})
	}
}

// forgedTransferVote asks for a vote in a higher term with the
// leadership-transfer flag (which makes voters skip leader stickiness)
// for another member, with a log that looks far ahead.
func forgedTransferVote(ctx context.Context, node schema.Node, tg attackTarget) error {
	return forgedSend(ctx, node, tg, tg.other, schema.Lane_control, schema.MessageType_vote, func(m schema.Message) error {
		m.SetTerm(tg.term + 100)
		m.SetLastLogIndex(tg.lastIndex + 1000)
		m.SetLastLogTerm(tg.term + 100)
		m.SetTransfer(true)
		return nil
	})
}

// forwardedPut puts over an acknowledged write through the KV a member
// hands its clients' calls to.
func forwardedPut(ctx context.Context, node schema.Node, tg attackTarget) error {
	return withRaft(ctx, node, func(r schema.Raft) error {
		f, rel := r.Kv(ctx, nil)
		defer rel()
		return putKey(ctx, f.Kv(), tg.key)
	})
}

// forwardedRemove removes a member through the Admin a member hands its
// operators' calls to.
func forwardedRemove(ctx context.Context, node schema.Node, tg attackTarget) error {
	return withRaft(ctx, node, func(r schema.Raft) error {
		f, rel := r.Admin(ctx, nil)
		defer rel()
		return removeMember(ctx, f.Admin(), tg.other)
	})
}

func adminRemove(ctx context.Context, node schema.Node, tg attackTarget) error {
	return withAdmin(ctx, node, func(a schema.Admin) error { return removeMember(ctx, a, tg.other) })
}

func removeMember(ctx context.Context, a schema.Admin, id uint64) error {
	f, rel := a.RemoveMember(ctx, func(p schema.Admin_removeMember_Params) error { p.SetId(id); return nil })
	defer rel()
	res, err := f.Struct()
	return adminErr(res, err)
}

// adminAddUnreachable adds a voter at an address where nothing listens:
// two of them would leave a 3-node cluster without a quorum for good.
func adminAddUnreachable(id uint64) attackStep {
	return func(ctx context.Context, node schema.Node, tg attackTarget) error {
		addr, err := cluster.FreeAddr()
		if err != nil {
			return fmt.Errorf("test: %w", err)
		}
		return withAdmin(ctx, node, func(a schema.Admin) error {
			f, rel := a.AddMember(ctx, func(p schema.Admin_addMember_Params) error {
				p.SetId(id)
				p.SetLearner(false)
				return p.SetAddress(addr)
			})
			defer rel()
			res, err := f.Struct()
			return adminErr(res, err)
		})
	}
}

func adminTransfer(ctx context.Context, node schema.Node, tg attackTarget) error {
	return withAdmin(ctx, node, func(a schema.Admin) error {
		f, rel := a.TransferLeadership(ctx, func(p schema.Admin_transferLeadership_Params) error { p.SetTo(tg.other); return nil })
		defer rel()
		res, err := f.Struct()
		return adminErr(res, err)
	})
}

func adminSnapshot(ctx context.Context, node schema.Node, _ attackTarget) error {
	return withAdmin(ctx, node, func(a schema.Admin) error {
		f, rel := a.Snapshot(ctx, nil)
		defer rel()
		res, err := f.Struct()
		return adminErr(res, err)
	})
}

// errorResult is a call's results that carry an error field (Admin's,
// KV.openSession's).
type errorResult interface {
	HasError() bool
	Error() (schema.Error, error)
}

// adminErr returns a call's failure, or the error its results carry.
func adminErr[R errorResult](res R, err error) error {
	if err != nil {
		return err
	}
	if !res.HasError() {
		return nil
	}
	e, err := res.Error()
	if err != nil {
		return err
	}
	msg, _ := e.Message_()
	return fmt.Errorf("%s: %s", e.Code(), msg)
}

func kvPut(ctx context.Context, node schema.Node, tg attackTarget) error {
	return withKV(ctx, node, func(kv schema.KV) error { return putKey(ctx, kv, tg.key) })
}

// putKey overwrites key through kv, in a session of its own.
func putKey(ctx context.Context, kv schema.KV, key string) error {
	session, err := openSession(ctx, kv)
	if err != nil {
		return err
	}
	f, rel := kv.Put(ctx, func(p schema.KV_put_Params) error {
		p.SetSession(session)
		p.SetSeq(1)
		op, err := p.NewOp()
		if err != nil {
			return err
		}
		if err := op.SetKey([]byte(key)); err != nil {
			return err
		}
		return op.SetValue([]byte("forged"))
	})
	defer rel()
	return kvResultErr(f.Struct())
}

// openSession opens a client session through kv (what a write needs).
func openSession(ctx context.Context, kv schema.KV) (uint64, error) {
	f, rel := kv.OpenSession(ctx, nil)
	defer rel()
	res, err := f.Struct()
	if err := adminErr(res, err); err != nil {
		return 0, err
	}
	return res.Session(), nil
}

func kvDelete(ctx context.Context, node schema.Node, tg attackTarget) error {
	return withKV(ctx, node, func(kv schema.KV) error {
		session, err := openSession(ctx, kv)
		if err != nil {
			return err
		}
		f, rel := kv.Delete(ctx, func(p schema.KV_delete_Params) error {
			p.SetSession(session)
			p.SetSeq(1)
			op, err := p.NewOp()
			if err != nil {
				return err
			}
			return op.SetKey([]byte(tg.key))
		})
		defer rel()
		return kvResultErr(f.Struct())
	})
}

func kvGet(ctx context.Context, node schema.Node, tg attackTarget) error {
	return withKV(ctx, node, func(kv schema.KV) error {
		_, _, err := rawGet(ctx, kv, tg.key)
		return err
	})
}

// kvResult is a KV write's results.
type kvResult interface{ Result() (schema.Result, error) }

func kvResultErr[R kvResult](res R, err error) error {
	if err != nil {
		return err
	}
	r, err := res.Result()
	if err != nil {
		return err
	}
	return resultError(r)
}

// guessedMemberAppend answers the node's challenge with a proof made from
// a guessed cluster secret, claiming to be a member, and sends
// AppendEntries through what the login returned (pipelined).
func guessedMemberAppend(ctx context.Context, node schema.Node, tg attackTarget) error {
	cn := make([]byte, 32)
	tg.rng.Read(cn)
	cf, crel := node.Challenge(ctx, func(p schema.Node_challenge_Params) error { return p.SetNonce(cn) })
	defer crel()
	res, err := cf.Struct()
	if err != nil {
		return err // no cluster secret (mutual TLS): refused too
	}
	sn, err := res.Nonce()
	if err != nil {
		return fmt.Errorf("test: %w", err)
	}
	claim := tg.leader // a member's id, not the attacked node's own
	if claim == tg.node {
		claim = tg.other
	}
	guess := []byte("a guess at the cluster secret, 32+ bytes long")
	proof := rpc.MemberProof(guess, tg.clusterID, claim, tg.node, cn, sn)
	lf, lrel := memberLogin(ctx, node, claim, proof)
	defer lrel()
	return forgedAppend(false)(ctx, lf.Node(), tg)
}

// forgedTokenRemove logs in with an operator token minted with a guessed
// key under the cluster's first key id, and removes a member through
// what the login returned (pipelined).
func forgedTokenRemove(ctx context.Context, node schema.Node, tg attackTarget) error {
	key := make([]byte, 32)
	tg.rng.Read(key)
	forged, err := token.Mint(key, 1, token.NewID(), token.Operator, token.Restriction{})
	if err != nil {
		return fmt.Errorf("test: %w", err)
	}
	logged, rel := loginToken(ctx, node, forged.String())
	defer rel()
	defer logged.Release()
	return adminRemove(ctx, logged, tg)
}
