package driver

import (
	"bytes"
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/capraft/capraft/raftnode/kv"
	"github.com/capraft/capraft/raftnode/raft"
	"github.com/capraft/capraft/raftnode/storage"
)

// fakePeers plays followers 2 and 3 of a leader under test: it grants
// votes and acknowledges every append at once, and answers heartbeats
// only while answerHeartbeats is set; otherwise it records the newest
// read round a heartbeat carried (lastSeq) and its term.
type fakePeers struct {
	d                *Driver
	incs             map[uint64]uint64
	answerHeartbeats atomic.Bool
	lastSeq, term    atomic.Uint64
	in               chan raft.Message
	stop             chan struct{}
}

// Send implements Transport: it never blocks (a full inbox drops, as a
// transport may).
func (p *fakePeers) Send(msgs []raft.Message) {
	for _, m := range msgs {
		select {
		case p.in <- m:
		default:
		}
	}
}

func (*fakePeers) SetPeer(uint64, string) {}
func (*fakePeers) RemovePeer(uint64)      {}
func (*fakePeers) CancelSnapshots()       {}

// run answers the leader until stop is closed.
func (p *fakePeers) run() {
	for {
		var m raft.Message
		select {
		case m = <-p.in:
		case <-p.stop:
			return
		}
		r := raft.Message{From: m.To, To: m.From, Term: m.Term, Incarnation: p.incs[m.To]}
		switch m.Type {
		case raft.MsgVote:
			r.Type, r.PreVote, r.Granted = raft.MsgVoteResp, m.PreVote, true
		case raft.MsgApp:
			r.Type, r.Index = raft.MsgAppResp, m.Index+uint64(len(m.Entries))
		case raft.MsgHeartbeat:
			if !p.answerHeartbeats.Load() {
				if m.Seq > p.lastSeq.Load() {
					p.term.Store(m.Term)
					p.lastSeq.Store(m.Seq)
				}
				continue
			}
			r.Type, r.Seq = raft.MsgHeartbeatResp, m.Seq
		default:
			continue
		}
		p.d.Deliver([]raft.Message{r}, func(*NotMember, error) {})
	}
}

// saveWatch is the node's storage, telling whether a read had been
// released when the entry holding data was written.
type saveWatch struct {
	*storage.Store
	data     []byte
	released *atomic.Bool
	mu       sync.Mutex
	saved    bool // the entry was written
	before   bool // the read was released before that write
}

func (s *saveWatch) Save(hs raft.HardState, ents []raft.Entry, snap *raft.Snapshot) error {
	for _, e := range ents {
		if bytes.Equal(e.Data, s.data) {
			s.mu.Lock()
			s.saved, s.before = true, s.released.Load()
			s.mu.Unlock()
		}
	}
	return s.Store.Save(hs, ents, snap)
}

// A leader whose read round is confirmed in the same turn as other
// clients' writes arrive serves the read before it writes (and fsyncs)
// those entries: the read index is its commit index, applied already,
// and depends on nothing the write makes durable. Served after the
// write, every linearizable read under a write load paid for one more
// fsync than the writes did.
func TestLeaderServesConfirmedReadBeforeWritingNewEntries(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	write := (&kv.Command{Kind: kv.CmdOpenSession, ID: 77, Time: time.Now().UnixNano()}).AppendBinary(nil)
	var released atomic.Bool
	peers := &fakePeers{incs: map[uint64]uint64{2: 22, 3: 33}, in: make(chan raft.Message, 1024), stop: make(chan struct{})}
	peers.answerHeartbeats.Store(true)
	var watch *saveWatch
	d := newTestDriver(t, func(cfg *Config) {
		store := cfg.Storage.(*storage.Store)
		boot := BootstrapSnapshot([]raft.MemberIncarnation{{ID: 1, Incarnation: store.Incarnation()}, {ID: 2, Incarnation: 22}, {ID: 3, Incarnation: 33}},
			map[uint64]string{1: "127.0.0.1:1", 2: "127.0.0.1:2", 3: "127.0.0.1:3"})
		cfg.Bootstrap = &boot
		cfg.Transport = peers
		cfg.HeartbeatInterval, cfg.ElectionTimeout = 10*time.Millisecond, 100*time.Millisecond
		watch = &saveWatch{Store: store, data: write, released: &released}
		cfg.Storage = watch
	})
	peers.d = d.Driver
	go peers.run()
	t.Cleanup(func() { close(peers.stop) })

	if lead, err := d.WaitLeader(ctx); err != nil || lead != 1 {
		t.Fatalf("leader %d, %v; want 1", lead, err)
	}
	// A write of its own term committed: reads are served from now on.
	if _, err := d.ProposeWait(ctx, openSession()); err != nil {
		t.Fatal(err)
	}
	if err := d.ReadIndex(ctx); err != nil {
		t.Fatal(err)
	}

	// The followers stop answering heartbeats; a read starts its round.
	peers.answerHeartbeats.Store(false)
	before := peers.lastSeq.Load()
	read := make(chan error, 1)
	d.ReadBarrier(func(err error) {
		released.Store(true)
		read <- err
	})
	await(ctx, t, "the read's heartbeat round", func() bool { return peers.lastSeq.Load() > before })
	seq := peers.lastSeq.Load()

	// Hold the loop, so that the write and follower 2's answer to the
	// read's round are taken in one turn.
	held, resume := make(chan struct{}), make(chan struct{})
	go func() {
		_ = runOnLoop(ctx, d.Driver, func() {
			close(held)
			<-resume
		})
	}()
	select {
	case <-held:
	case <-ctx.Done():
		t.Fatal("the loop never ran the task")
	}
	wrote := make(chan Result, 1)
	d.Propose(write, func(r Result) { wrote <- r })
	d.Deliver([]raft.Message{{Type: raft.MsgHeartbeatResp, From: 2, To: 1, Term: peers.term.Load(), Seq: seq, Incarnation: 22}},
		func(*NotMember, error) {})
	close(resume)

	for _, wait := range []func() error{
		func() error { return <-read },
		func() error { return (<-wrote).Err },
	} {
		done := make(chan error, 1)
		go func() { done <- wait() }()
		select {
		case err := <-done:
			if err != nil {
				t.Fatal(err)
			}
		case <-ctx.Done():
			t.Fatal("the read or the write was never answered")
		}
	}
	watch.mu.Lock()
	defer watch.mu.Unlock()
	if !watch.saved {
		t.Fatal("the write's entry was never saved")
	}
	if !watch.before {
		t.Fatal("the read was released only after the leader wrote the new entries taken in the same turn")
	}
}

// await polls cond until it holds or ctx ends.
func await(ctx context.Context, t *testing.T, what string, cond func() bool) {
	t.Helper()
	for !cond() {
		select {
		case <-ctx.Done():
			t.Fatalf("%s: never happened", what)
		case <-time.After(time.Millisecond):
		}
	}
}
