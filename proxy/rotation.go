package proxy

import (
	"crypto/rand"
	"encoding/binary"
	"slices"
	"time"

	"go.uber.org/zap"

	"github.com/pgsplit/pgsplit/config"
)

// pickReplicaLocked chooses a replica for a new session connection: the one
// with the fewest open connections for (database, user) per unit of weight
// (least_conn), or by turns (round_robin) or at random, as configured.
func (s *Server) pickReplicaLocked(user, database string, floor uint64) config.Server {
	primary, replicas := s.nodes.Roles()
	var best config.Server
	bestScore := -1.0
	var buf [8]config.Server
	eligible := buf[:0]
	now := time.Now()
	for _, r := range replicas {
		ep := endpointOf(r)
		if r.Weight > 0 && (len(s.downUntil) == 0 || now.After(s.downUntil[ep])) && s.lagOut[ep] == "" &&
			(floor == 0 || s.lsn.replayed(ep) >= floor) {
			eligible = append(eligible, r)
		}
	}
	if s.cfg.Load().Routing.ReadFrom == config.ReadFromAny && primary.Host != "" {
		p := primary
		p.Weight = 1
		eligible = append(eligible, p)
	}
	if len(eligible) == 0 {
		return primary // none in rotation: the primary reads (Host empty: none known)
	}
	switch s.cfg.Load().Routing.LoadBalance {
	case config.BalanceRoundRobin:
		s.rr++
		return weightedPick(eligible, s.rr)
	case config.BalanceRandom:
		var b [8]byte
		_, _ = rand.Read(b[:])
		return weightedPick(eligible, binary.BigEndian.Uint64(b[:]))
	}
	for _, r := range eligible {
		open := 0
		if p, ok := s.pools[poolKey{endpointOf(r), database, user}]; ok {
			open = p.Open()
		}
		score := float64(open+1) / float64(r.Weight)
		if bestScore < 0 || score < bestScore {
			best, bestScore = r, score
		}
	}
	return best
}

// ReplicaRetry is how long a replica that could not be connected to is left
// out of rotation before pgsplit tries it again.
const ReplicaRetry = 10 * time.Second

// markDown takes a replica out of rotation for ReplicaRetry.
func (s *Server) markDown(srv config.Server) {
	if srv == s.currentPrimary() {
		return
	}
	now := time.Now()
	s.mu.Lock()
	wasUp := now.After(s.downUntil[endpointOf(srv)])
	s.downUntil[endpointOf(srv)] = now.Add(ReplicaRetry)
	s.mu.Unlock()
	if wasUp {
		s.log.Warn("replica unreachable: out of rotation", zap.String("server", srv.Addr()), zap.Duration("retry_in", ReplicaRetry))
		s.closeIdle(srv)
	}
}

// markUp puts a replica that a fresh health-check connection reached back
// into rotation at once, rather than after the rest of ReplicaRetry.
func (s *Server) markUp(srv config.Server) {
	now := time.Now()
	s.mu.Lock()
	ep := endpointOf(srv)
	wasDown := now.Before(s.downUntil[ep])
	delete(s.downUntil, ep)
	s.mu.Unlock()
	if wasDown {
		s.log.Info("replica reachable again: back in rotation", zap.String("server", srv.Addr()))
	}
}

// setLagOut takes a replica out of read rotation for lag (reason not
// empty) or puts it back (reason empty), logging the change.
func (s *Server) setLagOut(srv config.Server, reason string) {
	ep := endpointOf(srv)
	s.mu.Lock()
	old := s.lagOut[ep]
	if reason == "" {
		delete(s.lagOut, ep)
	} else {
		s.lagOut[ep] = reason
	}
	s.mu.Unlock()
	switch {
	case old == "" && reason != "":
		s.log.Warn("replica lags too far: out of read rotation", zap.String("server", srv.Addr()), zap.String("reason", reason))
	case old != "" && reason == "":
		s.log.Info("replica caught up: back in read rotation", zap.String("server", srv.Addr()))
	}
}

// rotationReason says why a replica is out of read rotation ("" when it
// is in).
func (s *Server) rotationReason(srv config.Server) string {
	ep := endpointOf(srv)
	primary := s.currentPrimary()
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case primary == srv:
		return "primary"
	case srv.Weight == 0:
		return "weight 0"
	case time.Now().Before(s.downUntil[ep]):
		return "unreachable"
	case s.lagOut[ep] != "":
		return s.lagOut[ep]
	}
	return ""
}

// inRotation reports whether reads may go to srv now.
func (s *Server) inRotation(srv config.Server) bool {
	if srv == s.currentPrimary() {
		return s.cfg.Load().Routing.ReadFrom == config.ReadFromAny || s.cfg.Load().Routing.ReadFrom == config.ReadFromPrimary || !s.hasReplicas()
	}
	if srv.Weight == 0 || !s.readsOffloaded() {
		return false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	ep := endpointOf(srv)
	return time.Now().After(s.downUntil[ep]) && s.lagOut[ep] == "" && s.isReplicaLocked(srv)
}

// inRotationEP is inRotation for a server known by its address.
func (s *Server) inRotationEP(ep endpoint) bool {
	for _, srv := range s.cfg.Load().Servers {
		if endpointOf(srv) == ep {
			return s.inRotation(srv)
		}
	}
	return false
}

// isReplicaLocked reports whether srv is one of the servers reads go to
// (not the primary); the caller holds mu.
func (s *Server) isReplicaLocked(srv config.Server) bool {
	return slices.Contains(s.replicaList(), srv)
}

// serverAt is the configured server at ep.
func (s *Server) serverAt(ep endpoint) config.Server {
	for _, srv := range s.cfg.Load().Servers {
		if endpointOf(srv) == ep {
			return srv
		}
	}
	return config.Server{Host: ep.host, Port: ep.port}
}

// weightedPick takes the n-th slot of the replicas laid out by weight.
func weightedPick(rs []config.Server, n uint64) config.Server {
	total := 0
	for _, r := range rs {
		total += r.Weight
	}
	i := int(n % uint64(total))
	for _, r := range rs {
		if i < r.Weight {
			return r
		}
		i -= r.Weight
	}
	return rs[0]
}

// readsOffloaded reports whether reads may go to replicas at all.
func (s *Server) readsOffloaded() bool {
	return s.cfg.Load().Routing.ReadFrom != config.ReadFromPrimary && s.hasReplicas()
}

// hasReplicas reports whether any replica may take reads.
func (s *Server) hasReplicas() bool {
	for _, r := range s.replicaList() {
		if r.Weight > 0 {
			return true
		}
	}
	return false
}
