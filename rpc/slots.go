package rpc

import (
	"time"
)

// connRole is the kind of slot a served connection holds; see
// Config.PeerConns and the package documentation.
type connRole uint8

const (
	roleClient    connRole = iota // any connection, as admitted
	roleProbation                 // in a reserved slot until it becomes a peer or its handshake timeout passes
	rolePeer                      // marked by ConnInfo.MarkPeer: never closed to make room
	roleNone                      // closed to make room, or ended: holds no slot
	numRoles      = roleNone
)

// monoEpoch is the origin of the monotonic timestamps kept in atomics.
var monoEpoch = time.Now()

// monoNow returns the monotonic time since monoEpoch, in nanoseconds.
func monoNow() int64 { return int64(time.Since(monoEpoch)) }

// ConnStats counts a Server's connections by the slot they hold, and
// what happened to connections that found no free slot.
type ConnStats struct {
	// Clients, Peers and OnProbation are the connections holding a
	// slot as each (see Config.PeerConns).
	Clients, Peers, OnProbation int
	// Evicted counts client connections closed to make room for a new
	// one; Refused, new connections closed because no slot was free.
	Evicted, Refused uint64
}

// Stats returns the server's connection counts.
func (s *Server) Stats() ConnStats {
	s.mu.Lock()
	defer s.mu.Unlock()
	return ConnStats{
		Clients:     s.slots[roleClient],
		Peers:       s.slots[rolePeer],
		OnProbation: s.slots[roleProbation],
		Evicted:     s.evicted,
		Refused:     s.refused,
	}
}

// admit picks the slot a new connection takes (roleNone: none) and the
// client connection to close to make room for it, if any. Called with
// s.mu held; the victim's slot is freed at once.
func (s *Server) admit(now int64) (connRole, *serverConn) {
	held := s.slots[roleClient] + s.slots[roleProbation] + s.slots[rolePeer]
	clientSlots := s.cfg.MaxConns - s.cfg.PeerConns
	if held < s.cfg.MaxConns && s.slots[roleClient] < clientSlots {
		return roleClient, nil
	}
	if v := s.evictable(now); v != nil {
		s.setRole(v, roleNone)
		s.evicted++
		return roleClient, v
	}
	if held < s.cfg.MaxConns {
		return roleProbation, nil
	}
	s.refused++
	return roleNone, nil
}

// evictable returns the client connection silent longest, if it has
// been silent for at least EvictIdle and has no call in flight.
func (s *Server) evictable(now int64) *serverConn {
	if s.cfg.EvictIdle < 0 {
		return nil
	}
	var oldest *serverConn
	var oldestRead int64
	for sc := range s.conns {
		if sc.role != roleClient || sc.calls.Load() != 0 {
			continue
		}
		if read := sc.lastRead.Load(); oldest == nil || read < oldestRead {
			oldest, oldestRead = sc, read
		}
	}
	if oldest == nil || now-oldestRead < int64(s.cfg.EvictIdle) {
		return nil
	}
	return oldest
}

// setRole moves sc's slot to role. Called with s.mu held.
func (s *Server) setRole(sc *serverConn, role connRole) {
	if sc.role < numRoles {
		s.slots[sc.role]--
	}
	sc.role = role
	if role < numRoles {
		s.slots[role]++
	}
}

// markPeer makes sc a peer's connection, unless it already lost its slot.
func (s *Server) markPeer(sc *serverConn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if sc.role == roleClient || sc.role == roleProbation {
		s.setRole(sc, rolePeer)
	}
}

// endProbation runs a handshake timeout after sc was let into a reserved
// slot: sc keeps a slot if it has become a peer or a client slot is now
// free, and is closed otherwise.
func (s *Server) endProbation(sc *serverConn, log func(msg string, args ...any)) {
	s.mu.Lock()
	if sc.role != roleProbation {
		s.mu.Unlock()
		return
	}
	if s.slots[roleClient] < s.cfg.MaxConns-s.cfg.PeerConns {
		s.setRole(sc, roleClient)
		s.mu.Unlock()
		return
	}
	s.setRole(sc, roleNone)
	s.mu.Unlock()
	log("closing connection: it was let into a slot reserved for peers and did not become one within the handshake timeout",
		"handshake_timeout", s.cfg.HandshakeTimeout, "max_conns", s.cfg.MaxConns, "peer_conns", s.cfg.PeerConns)
	sc.close()
}
