package rpc

import (
	"testing"
	"time"
)

// The connection closed to make room is the client silent longest, and
// only if it has been silent for EvictIdle with no call in flight; peers
// and busy clients are never picked, however long they have been quiet.
func TestEvictionPicksTheClientSilentLongestWithNoCallInFlight(t *testing.T) {
	s := NewServer(Config{MaxConns: 5, PeerConns: -1, EvictIdle: time.Second})
	add := func(role connRole, lastRead time.Duration, calls int64) *serverConn {
		sc := &serverConn{role: roleNone}
		sc.lastRead.Store(int64(lastRead))
		sc.calls.Store(calls)
		s.conns[sc] = struct{}{}
		s.setRole(sc, role)
		return sc
	}
	add(rolePeer, 1*time.Second, 0)   // silent longest, but a peer
	add(roleClient, 2*time.Second, 1) // a call in flight
	idle := add(roleClient, 50*time.Second, 0)
	recent := add(roleClient, 99500*time.Millisecond, 0) // silent for half a second at 100 s
	other := add(roleClient, 60*time.Second, 0)

	now := int64(100 * time.Second)
	role, victim := s.admit(now)
	if role != roleClient || victim != idle {
		t.Fatalf("admit at 100s: role %v, victim %p; want a client slot in place of the client idle since 50s (%p)", role, victim, idle)
	}
	if idle.role != roleNone || s.Stats().Evicted != 1 {
		t.Fatalf("the evicted connection still holds a slot (role %v), stats %+v", idle.role, s.Stats())
	}
	add(roleClient, 100*time.Second, 0) // the newcomer

	if role, victim = s.admit(now); victim != other {
		t.Fatalf("second admit: role %v, victim %p; want the client idle since 60s (%p)", role, victim, other)
	}
	add(roleClient, 100*time.Second, 0)

	// Only clients silent for less than EvictIdle are left.
	if role, victim = s.admit(now); role != roleNone || victim != nil {
		t.Fatalf("third admit: role %v, victim %p; want a refusal", role, victim)
	}
	if role, victim = s.admit(now + int64(time.Second)); victim != recent {
		t.Fatalf("admit a second later: role %v, victim %p; want the client silent since 99.5s (%p)", role, victim, recent)
	}
	if st := s.Stats(); st.Refused != 1 || st.Evicted != 3 {
		t.Fatalf("stats %+v: want 1 refused, 3 evicted", st)
	}
}

// A connection on probation in a reserved slot keeps a slot when its
// probation ends if it became a peer, or as a client if a client slot
// came free meanwhile.
func TestProbationEndsInAPeerOrClientSlotWhenOneIsFree(t *testing.T) {
	s := NewServer(Config{MaxConns: 3, PeerConns: 2})
	admitOne := func() *serverConn {
		role, victim := s.admit(0)
		if victim != nil {
			t.Fatalf("admit closed a connection to make room")
		}
		sc := &serverConn{role: roleNone}
		s.conns[sc] = struct{}{}
		s.setRole(sc, role)
		return sc
	}
	client := admitOne()
	first, second := admitOne(), admitOne()
	if client.role != roleClient || first.role != roleProbation || second.role != roleProbation {
		t.Fatalf("roles %v %v %v: want one client, then two on probation", client.role, first.role, second.role)
	}
	s.markPeer(first)
	s.setRole(client, roleNone) // the client leaves
	noLog := func(string, ...any) { t.Fatal("endProbation closed a connection that had a slot to keep") }
	s.endProbation(first, noLog)
	s.endProbation(second, noLog)
	if first.role != rolePeer || second.role != roleClient {
		t.Fatalf("after probation: roles %v and %v, want a peer and a client", first.role, second.role)
	}
	if st := s.Stats(); st.Peers != 1 || st.Clients != 1 || st.OnProbation != 0 {
		t.Fatalf("stats %+v", st)
	}
}
