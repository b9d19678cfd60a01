package nodes

import (
	"context"
	"errors"
	"fmt"
	"time"

	"go.uber.org/zap"

	"github.com/pgsplit/pgsplit/config"
	"github.com/pgsplit/pgsplit/internal/pgmsg"
)

// This file is failover: which server takes writes is decided from what the
// servers report, all the time. The health checks ask every server
// pg_is_in_recovery(); the one server that is not in recovery and is not
// configured `role: replica` is the primary. None (the primary went away,
// or a server configured primary reports recovery) or two (split brain)
// means no primary: writes wait up to pool_timeout for one, then fail with
// 57P03, while reads go on on the replicas. A failed primary connection
// makes the monitor check every server at once (ProbeNow), and while no
// primary is known it checks every noPrimaryProbe, so a promoted replica
// takes writes well within a second.

// noPrimaryProbe is how often the monitor checks the servers while no
// primary is known.
const noPrimaryProbe = 200 * time.Millisecond

// FindPrimary sets the first primary, before any check: the server
// configured role primary, else the first server of role auto that answers
// pg_is_in_recovery() = false. Every other server is a replica.
func (m *Monitor) FindPrimary(ctx context.Context) (config.Server, error) {
	cfg := m.host.Config()
	p, err := findPrimary(ctx, cfg)
	if err != nil {
		return config.Server{}, err
	}
	m.mu.Lock()
	m.setRolesLocked(p, cfg.Servers)
	m.mu.Unlock()
	return p, nil
}

// Primary is the server writes go to now; its Host is empty while no
// primary is known (failover).
func (m *Monitor) Primary() config.Server {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.primary
}

// Roles is the primary (Host empty: none known) and every other configured
// server, as one consistent pair. The slice is shared: read it, never
// change it (a change of primary makes a new one).
func (m *Monitor) Roles() (primary config.Server, replicas []config.Server) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.primary, m.replicas
}

// Changes counts the changes of primary since New.
func (m *Monitor) Changes() int64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.changes
}

// AwaitPrimary waits until a primary is known and different from failed
// (a server whose connection just failed; zero: any), or ctx ends: then a
// 57P03 *pgmsg.Error for the client. A change of primary, or a round of
// checks since the failure, lets the same server be taken again.
func (m *Monitor) AwaitPrimary(ctx context.Context, failed config.Server) (config.Server, error) {
	for {
		m.mu.Lock()
		p, changed, checked := m.primary, m.primaryCh, m.checkedCh
		m.mu.Unlock()
		if p.Host != "" && p != failed {
			return p, nil
		}
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

// checked wakes the writes waiting for a round of health checks.
func (m *Monitor) checked() {
	m.mu.Lock()
	close(m.checkedCh)
	m.checkedCh = make(chan struct{})
	m.mu.Unlock()
}

// setRolesLocked makes srv the primary and every other server of servers
// a replica; the caller holds mu.
func (m *Monitor) setRolesLocked(srv config.Server, servers []config.Server) {
	m.primary = srv
	m.replicas = m.replicas[:0:0] // a new slice: Roles' callers may hold the old one
	for _, x := range servers {
		if x != srv {
			m.replicas = append(m.replicas, x)
		}
	}
}

// setPrimary makes srv the server writes go to (srv.Host empty: none) and
// every other configured server a replica, waking the writes waiting for a
// primary. why says what the health checks saw.
func (m *Monitor) setPrimary(srv config.Server, why string) {
	cfg := m.host.Config()
	m.mu.Lock()
	old := m.primary
	if old == srv {
		m.mu.Unlock()
		return
	}
	m.setRolesLocked(srv, cfg.Servers)
	close(m.primaryCh)
	m.primaryCh = make(chan struct{})
	m.changes++
	m.mu.Unlock()
	switch {
	case srv.Host == "":
		m.log.Error("no primary: writes wait for one (up to pool_timeout), reads go on on the replicas",
			zap.String("was", old.Addr()), zap.String("why", why))
	case old.Host == "":
		m.log.Warn("primary found: writes go to it", zap.String("primary", srv.Addr()), zap.String("why", why))
	default:
		m.log.Warn("primary changed: writes go to the new one", zap.String("primary", srv.Addr()), zap.String("was", old.Addr()), zap.String("why", why))
	}
	if old.Host != "" {
		m.host.CloseIdle(old) // pooled connections to the old primary must not carry writes
	}
	if users := cfg.Auth.Users; srv.Host != "" && old.Host != "" && len(users) > 0 && m.cats != nil {
		m.cats.Refresh(users[0]) // read on the new primary (a load may have failed meanwhile)
	}
}

// roleVerdict is what one round of checks says of who takes writes.
type roleVerdict struct {
	keep    bool          // the checks say nothing of the current primary: keep it
	primary config.Server // otherwise the primary from now on (Host empty: none)
	why     string
	claims  []string // more than one: the servers that each claim to be primary (split brain)
}

// decideRoles picks the primary from one round of checks (nodes in the
// order of the configured servers); cur is the primary now.
func decideRoles(servers []config.Server, nodes []*NodeStatus, cur config.Server) roleVerdict {
	var cands []config.Server
	curUnknown := false
	for i, n := range nodes {
		srv := servers[i]
		if srv == cur && !n.Healthy && n.loginRefused {
			curUnknown = true // the check cannot log in: it says nothing about the role
		}
		if n.Healthy && !n.InRecovery && srv.Role != config.RoleReplica {
			cands = append(cands, srv)
		}
	}
	switch {
	case len(cands) == 1:
		return roleVerdict{primary: cands[0], why: "the only server not in recovery"}
	case len(cands) > 1:
		names := make([]string, len(cands))
		for i, c := range cands {
			names[i] = c.Addr()
		}
		return roleVerdict{why: "more than one server is not in recovery", claims: names}
	case curUnknown:
		return roleVerdict{keep: true}
	}
	return roleVerdict{why: "no server configured primary or auto reports pg_is_in_recovery() = false"}
}

// applyRoles acts on decideRoles' verdict, logging what a DBA must know:
// a server configured primary that is a standby (once until it is not),
// and a split brain (once while no primary is known).
func (m *Monitor) applyRoles(servers []config.Server, nodes []*NodeStatus) {
	for i, n := range nodes {
		srv := servers[i]
		switch {
		case !n.Healthy:
		case !n.InRecovery:
			delete(m.warnedStandby, srv.Addr())
		case srv.Role == config.RolePrimary && !m.warnedStandby[srv.Addr()]:
			m.warnedStandby[srv.Addr()] = true
			m.log.Error("a server configured role: primary is in recovery (a standby): it gets no writes",
				zap.String("server", srv.Addr()))
		}
	}
	cur := m.Primary()
	v := decideRoles(servers, nodes, cur)
	if len(v.claims) > 1 {
		if cur.Host != "" || !m.warnedSplit {
			m.log.Error("two servers claim to be primary (not in recovery): writes refused until one steps down",
				zap.Strings("servers", v.claims))
		}
	}
	m.warnedSplit = len(v.claims) > 1
	if !v.keep {
		m.setPrimary(v.primary, v.why)
	}
}

// findPrimary returns the server with role primary, or asks the servers with
// role auto which one is not in recovery.
func findPrimary(ctx context.Context, cfg *config.Config) (config.Server, error) {
	if p, ok := cfg.Primary(); ok {
		return p, nil
	}
	var errs []error
	for _, srv := range cfg.Servers {
		if srv.Role != config.RoleAuto {
			continue
		}
		inRecovery, err := probeRecovery(ctx, srv, cfg.Auth.ServiceUser(), cfg.Pool.ConnectTimeout, cfg.ServerTLS)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", srv.Addr(), err))
			continue
		}
		if !inRecovery {
			return srv, nil
		}
	}
	return config.Server{}, fmt.Errorf("no primary: no server has role primary and no server with role auto answered pg_is_in_recovery() = false: %w", errors.Join(errs...))
}

func probeRecovery(ctx context.Context, srv config.Server, u config.User, timeout time.Duration, st config.ServerTLS) (bool, error) {
	rows, err := queryOnce(ctx, srv, u, nil, "postgres", timeout, st, "pgsplit role probe", "SELECT pg_is_in_recovery()")
	if err != nil {
		return false, err
	}
	if len(rows) != 1 || len(rows[0]) != 1 {
		return false, errors.New("unexpected answer to pg_is_in_recovery()")
	}
	return string(rows[0][0]) == "t", nil
}
