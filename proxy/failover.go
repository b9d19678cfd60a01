package proxy

import (
	"fmt"
	"time"

	"github.com/pgsplit/pgsplit/internal/pgmsg"

	"go.uber.org/zap"

	"github.com/pgsplit/pgsplit/config"
)

// This file is failover: which server takes writes is decided from what the
// servers report, all the time. The health monitor asks every server
// pg_is_in_recovery(); the one server that is not in recovery and is not
// configured `role: replica` is the primary. None (the primary went away,
// or a server configured primary reports recovery) or two (split brain)
// means no primary: writes wait up to pool_timeout for one, then fail with
// 57P03, while reads go on on the replicas. A failed primary connection
// makes the monitor check every server at once, and while no primary is
// known it checks every noPrimaryProbe, so a promoted replica takes writes
// well within a second.

// noPrimaryProbe is how often the health monitor checks the servers while
// no primary is known.
const noPrimaryProbe = 200 * time.Millisecond

// setPrimary makes srv the server writes go to (srv.Host empty: none) and
// every other configured server a replica, waking the writes waiting for a
// primary. why says what the health checks saw.
func (s *Server) setPrimary(srv config.Server, why string) {
	s.mu.Lock()
	old := s.primary
	if old == srv {
		s.mu.Unlock()
		return
	}
	s.primary = srv
	s.replicas = s.replicas[:0:0]
	for _, x := range s.cfg.Load().Servers {
		if x != srv {
			s.replicas = append(s.replicas, x)
		}
	}
	close(s.primaryCh)
	s.primaryCh = make(chan struct{})
	s.primaryChanges++
	s.mu.Unlock()
	switch {
	case srv.Host == "":
		s.log.Error("no primary: writes wait for one (up to pool_timeout), reads go on on the replicas",
			zap.String("was", old.Addr()), zap.String("why", why))
	case old.Host == "":
		s.log.Warn("primary found: writes go to it", zap.String("primary", srv.Addr()), zap.String("why", why))
	default:
		s.log.Warn("primary changed: writes go to the new one", zap.String("primary", srv.Addr()), zap.String("was", old.Addr()), zap.String("why", why))
	}
	if old.Host != "" {
		s.closeIdle(old) // pooled connections to the old primary must not carry writes
	}
	if users := s.cfg.Load().Auth.Users; srv.Host != "" && old.Host != "" && len(users) > 0 {
		s.refreshCatalogs(users[0]) // read on the new primary (a load may have failed meanwhile)
	}
}

// primaryState is the current primary (Host empty: none) and a channel
// closed when it changes.
func (s *Server) primaryState() (config.Server, <-chan struct{}, <-chan struct{}) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.primary, s.primaryCh, s.checkedCh
}

// checked wakes the writes waiting for a round of health checks.
func (s *Server) checked() {
	s.mu.Lock()
	close(s.checkedCh)
	s.checkedCh = make(chan struct{})
	s.mu.Unlock()
}

// awaitPrimary waits until a primary is known and different from failed
// (a server whose connection just failed; zero: any), or w's limit passes:
// then a 57P03 error for the client.
func (s *Server) awaitPrimary(w *waitLimit, failed config.Server) (config.Server, error) {
	for {
		p, changed, checked := s.primaryState()
		if p.Host != "" && p != failed {
			return p, nil
		}
		ctx := w.context()
		select {
		case <-changed:
			failed = config.Server{} // a new verdict: take it, even the same server
		case <-checked:
			failed = config.Server{} // checked again since the failure
		case <-ctx.Done():
			msg := "no primary available: no server reports that it accepts writes"
			if p.Host != "" {
				msg = fmt.Sprintf("no primary available: the primary %s cannot be reached", p.Addr())
			}
			return config.Server{}, pgmsg.Err(pgmsg.CodeCannotConnectNow, msg)
		}
	}
}

// decideRoles picks the primary from one round of checks (nodes in the
// order of the configured servers).
func (h *healthMonitor) decideRoles(servers []config.Server, nodes []*NodeStatus) {
	s := h.s
	cur := s.currentPrimary()
	var cands []config.Server
	curUnknown := false
	for i, n := range nodes {
		srv := servers[i]
		if srv == cur && !n.Healthy && n.loginRefused {
			curUnknown = true // the check cannot log in: it says nothing about the role
		}
		if !n.Healthy {
			continue
		}
		if !n.InRecovery && srv.Role != config.RoleReplica {
			cands = append(cands, srv)
		}
		if n.InRecovery && srv.Role == config.RolePrimary && !h.warnedStandby[endpointOf(srv)] {
			h.warnedStandby[endpointOf(srv)] = true
			s.log.Error("a server configured role: primary is in recovery (a standby): it gets no writes",
				zap.String("server", srv.Addr()))
		}
		if !n.InRecovery {
			delete(h.warnedStandby, endpointOf(srv))
		}
	}
	switch {
	case len(cands) == 1:
		s.setPrimary(cands[0], "the only server not in recovery")
	case len(cands) > 1:
		names := make([]string, len(cands))
		for i, c := range cands {
			names[i] = c.Addr()
		}
		if cur.Host != "" || !h.warnedSplit {
			s.log.Error("two servers claim to be primary (not in recovery): writes refused until one steps down",
				zap.Strings("servers", names))
		}
		h.warnedSplit = true
		s.setPrimary(config.Server{}, "more than one server is not in recovery")
		return
	case curUnknown:
		// keep the primary we have
	default:
		s.setPrimary(config.Server{}, "no server configured primary or auto reports pg_is_in_recovery() = false")
	}
	h.warnedSplit = false
}

// probeNow asks the health monitor to check every server at once (a
// primary connection failed).
func (h *healthMonitor) probeNow() {
	nudge(h.probe)
}
