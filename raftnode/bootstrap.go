package raftnode

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/capraft/capraft/raftnode/driver"
	"github.com/capraft/capraft/raftnode/internal/transport"
	"github.com/capraft/capraft/raftnode/raft"
)

// Bootstrapping a new cluster, safely.
//
// A node whose storage holds no configuration is one of three things: an
// initial member of a cluster being created, a member whose disk was
// wiped (or repaired down to nothing), or a new node waiting to be added.
// It cannot tell them apart on its own, and guessing wrong is what lost
// acknowledged writes (issue 12): a wiped node that bootstrapped again
// formed a second cluster of the same name. So before bootstrapping it
// asks every peer listed in --peers (Discover), telling them its storage
// incarnation:
//
//   - if any peer holds a configuration, the cluster exists: this node
//     waits for the leader to catch it up (and, if it lost its disk, to
//     restore it as a voter: the core does that by itself);
//   - if every peer answers and none holds one, all are new: each
//     bootstraps the same configuration, the members with the
//     incarnations they reported, so the bootstrap snapshots agree;
//   - otherwise it keeps asking, and says whom it waits for.
//
// A node whose peers all lost their disks therefore waits for the one
// that kept its data instead of starting over empty, and a majority that
// lost its data refuses to elect (the survivors do not count the wiped
// nodes' votes) rather than forget what it acknowledged.

// needsDiscovery reports whether this node must ask its peers before it
// may bootstrap: its storage has no configuration and --peers names
// other nodes.
func (n *Node) needsDiscovery() bool {
	if n.cfg.Join {
		return false
	}
	for id := range n.cfg.Peers {
		if id != n.cfg.ID {
			return true
		}
	}
	return false
}

// discoverPeers runs until this node has a configuration: it asks the
// peers whether a cluster exists and bootstraps one if none does (see
// above). It runs on its own goroutine, counted in n.wg.
func (n *Node) discoverPeers() {
	defer n.wg.Done()
	var peers []uint64
	for id := range n.cfg.Peers {
		if id != n.cfg.ID {
			peers = append(peers, id)
		}
	}
	slices.Sort(peers)
	inc := n.store.Incarnation()
	n.log.Info("storage holds no configuration: asking the peers whether the cluster exists before bootstrapping one",
		"peers", peers, "incarnation", fmt.Sprintf("%016x", inc))
	backoff := 50 * time.Millisecond
	var lastLog time.Time
	for {
		if n.hasConfiguration() {
			return
		}
		answers, missing := n.askPeers(peers, inc)
		for _, id := range peers {
			if a, ok := answers[id]; ok && a.Configured {
				if a.BootstrapOnly && slices.Contains(a.Voters, raft.MemberIncarnation{ID: n.cfg.ID, Incarnation: inc}) {
					// The cluster was just created with this node in
					// it: write the same bootstrap snapshot, so this
					// node follows from index 1 like the others
					// rather than wait for the leader to send it.
					n.bootstrapAs(a.Voters)
					return
				}
				n.joinExisting(id, a, inc)
				return
			}
		}
		if len(missing) == 0 {
			n.bootstrapWith(answers, inc)
			return
		}
		if time.Since(lastLog) >= 5*time.Second {
			lastLog = time.Now()
			n.log.Info("waiting for every initial member to answer before bootstrapping a new cluster "+
				"(a cluster is created only when all --peers are up and none holds data)",
				"waiting_for", fmt.Sprint(slices.Sorted(maps.Keys(missing))), "reason", firstError(missing))
		}
		select {
		case <-n.stopc:
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, time.Second)
	}
}

// firstError returns the error of the lowest id in errs, for the log.
func firstError(errs map[uint64]error) string {
	ids := slices.Sorted(maps.Keys(errs))
	if len(ids) == 0 {
		return ""
	}
	return fmt.Sprintf("node %d: %v", ids[0], errs[ids[0]])
}

// hasConfiguration reports whether the core holds a configuration (or
// the loop has stopped, which ends discovery too).
func (n *Node) hasConfiguration() bool {
	ctx, cancel := context.WithTimeout(context.Background(), n.cfg.RequestTimeout)
	defer cancel()
	has, err := n.d.Configured(ctx)
	if err != nil {
		return n.d.Stopped()
	}
	return has
}

// askPeers asks every peer at once, each for at most an election timeout.
func (n *Node) askPeers(peers []uint64, inc uint64) (map[uint64]transport.DiscoverInfo, map[uint64]error) {
	ctx, cancel := n.untilStopped(n.cfg.ElectionTimeout)
	defer cancel()
	var mu sync.Mutex
	answers := map[uint64]transport.DiscoverInfo{}
	missing := map[uint64]error{}
	var wg sync.WaitGroup
	for _, id := range peers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			info, err := n.tr.Discover(ctx, id, inc)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				missing[id] = err
			} else {
				answers[id] = info
			}
		}()
	}
	wg.Wait()
	return answers, missing
}

// joinExisting logs what this node is, now that peer from says the
// cluster exists, and leaves the rest to the leader.
func (n *Node) joinExisting(from uint64, a transport.DiscoverInfo, inc uint64) {
	var recorded uint64
	voter := false
	for _, v := range a.Voters {
		if v.ID == n.cfg.ID {
			voter, recorded = true, v.Incarnation
		}
	}
	switch {
	case voter && (recorded == inc || recorded == 0):
		n.log.Info("the cluster exists and counts this node: waiting for its leader to send the log",
			"answered_by", from, "term", a.Term, "commit", a.Commit)
	case voter:
		n.d.WarnLostData(recorded, "answered_by", from, "term", a.Term, "commit", a.Commit)
	default:
		n.log.Info("the cluster exists and this node is not one of its voters: waiting for its leader "+
			"(add a new node with `raftctl member add`)", "answered_by", from)
	}
}

// bootstrapWith bootstraps a new cluster of every --peers member with the
// incarnations they reported: every initial member computes the same
// configuration, so their bootstrap snapshots agree.
func (n *Node) bootstrapWith(answers map[uint64]transport.DiscoverInfo, inc uint64) {
	incs := []raft.MemberIncarnation{{ID: n.cfg.ID, Incarnation: inc}}
	for id, a := range answers {
		incs = append(incs, raft.MemberIncarnation{ID: id, Incarnation: a.Incarnation})
	}
	n.bootstrapAs(incs)
}

// bootstrapAs hands the core the bootstrap snapshot of a new cluster
// whose voters are incs, with their incarnations.
func (n *Node) bootstrapAs(incs []raft.MemberIncarnation) {
	switch err := n.d.Bootstrap(context.Background(), n.bootstrapSnapshot(incs)); {
	case errors.Is(err, driver.ErrStopped):
	case err == raft.ErrBootstrapped:
		// A leader's snapshot or entries arrived meanwhile: they win.
	case err != nil:
		n.log.Error("could not bootstrap the cluster", "error", err)
	}
}

// bootstrapSnapshot is the first snapshot of a new cluster whose voters
// are incs, recording their incarnations; its address book is --peers
// (this node alone without).
func (n *Node) bootstrapSnapshot(incs []raft.MemberIncarnation) raft.Snapshot {
	peers := n.cfg.Peers
	if len(peers) == 0 {
		peers = map[uint64]string{n.cfg.ID: n.cfg.Advertise}
	}
	return driver.BootstrapSnapshot(incs, peers)
}

// Discover answers a peer that asks, before bootstrapping, whether this
// node holds a configuration (transport.Discoverer).
func (h peerHandler) Discover(ctx context.Context, from, inc uint64) (transport.DiscoverInfo, error) {
	n := h.n
	info := transport.DiscoverInfo{Incarnation: n.store.Incarnation()}
	st, err := n.d.Status(ctx)
	if err != nil {
		return info, err
	}
	cs := st.Config
	info.Term, info.Commit = st.Term, st.Commit
	// Configurations take effect when applied: nothing applied after
	// index 1 means the bootstrap configuration.
	info.BootstrapOnly = st.Applied <= raft.BootstrapSnapshot(raft.ConfState{}).Meta.Index
	info.Configured = len(cs.Voters) > 0 || len(cs.Learners) > 0
	info.BootstrapOnly = info.Configured && info.BootstrapOnly && len(cs.Learners) == 0
	for _, id := range cs.Voters {
		rec, _ := cs.IncarnationOf(id)
		info.Voters = append(info.Voters, raft.MemberIncarnation{ID: id, Incarnation: rec})
	}
	if rec, ok := cs.IncarnationOf(from); ok && rec != inc && info.Configured {
		n.log.Warn("a peer asks with storage other than the one the configuration counts: it lost its data; "+
			"the leader restores it once it has caught up",
			"peer", from, "incarnation", fmt.Sprintf("%016x", inc), "counted_incarnation", fmt.Sprintf("%016x", rec))
	}
	return info, nil
}

// hasPeers reports whether other nodes could restore this node's data:
// --peers names others, or it joins a cluster.
func (n *Node) hasPeers() bool {
	return n.cfg.Join || n.needsDiscovery()
}

// logRecovery tells the operator what the store found damaged and
// repaired when it opened, and what happens next. It reports whether it
// said so (the driver need not say it again: Config.LostDataReported).
func (n *Node) logRecovery() bool {
	rec := n.store.Recovery()
	if !rec.Repaired {
		return false
	}
	kv := []any{"damage", rec.Reason, "file", rec.File, "offset", rec.Offset, "stopped_cleanly", rec.CleanStop,
		"last_index", rec.LastIndex, "old_incarnation", fmt.Sprintf("%016x", rec.OldIncarnation),
		"incarnation", fmt.Sprintf("%016x", rec.NewIncarnation)}
	if rec.KnownLast > 0 {
		kv = append(kv, "last_index_before", rec.KnownLast)
	}
	if len(rec.Discarded) > 0 {
		kv = append(kv, "discarded", fmt.Sprint(rec.Discarded))
	}
	if rec.Quarantine != "" {
		kv = append(kv, "moved_aside_to", rec.Quarantine)
	}
	n.log.Error("the data directory was damaged and has been repaired: what was damaged is discarded and this node "+
		"has a new storage incarnation, so it no longer counts as the voter that acknowledged what it lost; the leader "+
		"sends it what it lacks and makes it a voter again by itself", kv...)
	return true // said, with more detail than the driver's WarnLostData
}
