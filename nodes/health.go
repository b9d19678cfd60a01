package nodes

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"go.uber.org/zap"

	"github.com/pgsplit/pgsplit/config"
	"github.com/pgsplit/pgsplit/pool"
)

// This file is the health checks: every server is asked whether it is up
// and (replicas) how far behind the primary it is: the bytes of WAL it has
// still to replay and, while it is behind, the age of the last transaction
// it replayed. A replica that fails a check leaves read rotation for the
// proxy's ReplicaRetry, as after a failed connection (a passing check does
// not cut that short, so a replica that the pools cannot reach but the
// check can does not flap). The figures feed SHOW NODES and the metrics.

// NodeStatus is what the last check of a server found.
type NodeStatus struct {
	Server     config.Server
	Role       string // as pgsplit uses it: primary or replica
	Checked    time.Time
	Healthy    bool
	Error      string
	InRecovery bool
	LSN        uint64  // primary: current WAL position; replica: replayed
	LagBytes   int64   // replicas: WAL behind the primary; -1 unknown
	LagSeconds float64 // replicas: 0 when caught up; -1 unknown

	// loginRefused: the server answered but refused the check's login
	// (pg_hba, a missing database): it is not taken out of rotation for
	// that, since the check says nothing about the clients' logins.
	loginRefused bool
	// fresh: the check opened a new connection to pass (the server can
	// be connected to again after an outage).
	fresh bool
}

const replicaCheckSQL = `SELECT pg_is_in_recovery(), COALESCE(pg_last_wal_replay_lsn(), pg_current_wal_lsn())::text,
 CASE WHEN NOT pg_is_in_recovery() OR pg_last_wal_replay_lsn() >= pg_last_wal_receive_lsn() THEN 0
 ELSE COALESCE(EXTRACT(EPOCH FROM now() - pg_last_xact_replay_timestamp())::float8, -1) END`

// checkAll checks every server, decides the roles from what they said and
// tells the proxy's rotation about each replica.
func (m *Monitor) checkAll() {
	servers := m.host.Config().Servers
	nodes := make([]*NodeStatus, len(servers))
	for i, srv := range servers {
		nodes[i] = m.check(srv)
	}
	m.applyRoles(servers, nodes)
	cur := m.Primary()
	primary := &NodeStatus{}
	for i, srv := range servers {
		if srv == cur {
			primary = nodes[i]
			primary.Role, primary.LagBytes, primary.LagSeconds = "primary", 0, 0
		}
	}
	for i, r := range servers {
		if r == cur {
			continue
		}
		n := nodes[i]
		n.Role = "replica"
		switch {
		case !n.Healthy && !n.loginRefused:
			m.host.MarkDown(r)
		case n.Healthy:
			m.host.SetReplayed(r, n.LSN)
			if n.fresh {
				m.host.MarkUp(r)
			}
			if primary.Healthy {
				n.LagBytes = max(int64(primary.LSN)-int64(n.LSN), 0)
			}
			out, back := lagLimit(m.host.Config().Routing, n.LagSeconds, n.LagBytes)
			if out != "" || back {
				m.host.SetLagOut(r, out)
			}
		}
		m.store(n)
	}
	if primary.Server.Host != "" {
		m.store(primary)
	}
	m.checked()
}

// lagLimit says whether a replica this far behind leaves read rotation
// (out: the reason), over routing.max_replica_lag or
// max_replica_lag_bytes, or may come back (back): under half of each, so
// that it does not flap around the limit. Between the two, neither.
// Unknown figures (-1) neither take it out nor let it back.
func lagLimit(rc config.Routing, lagSeconds float64, lagBytes int64) (out string, back bool) {
	maxLag, maxBytes := rc.MaxReplicaLag, rc.MaxReplicaLagBytes
	lag := time.Duration(lagSeconds * float64(time.Second))
	switch {
	case maxLag > 0 && lagSeconds >= 0 && lag > maxLag:
		return fmt.Sprintf("lag %.1fs over max_replica_lag %s", lagSeconds, maxLag), false
	case maxBytes > 0 && lagBytes > maxBytes:
		return fmt.Sprintf("lag %d bytes over max_replica_lag_bytes %d", lagBytes, maxBytes), false
	}
	return "", (maxLag == 0 || (lagSeconds >= 0 && lag <= maxLag/2)) &&
		(maxBytes == 0 || (lagBytes >= 0 && lagBytes <= maxBytes/2))
}

// check runs one server's check query on the monitor's connection to it.
func (m *Monitor) check(srv config.Server) *NodeStatus {
	n := &NodeStatus{Server: srv, Checked: time.Now(), LagBytes: -1, LagSeconds: -1}
	cfg := m.host.Config()
	ctx, cancel := context.WithTimeout(context.Background(), cfg.Pool.ConnectTimeout)
	defer cancel()
	addr := srv.Addr()
	c := m.conns[addr]
	if c == nil {
		var err error
		if c, err = Dial(ctx, cfg, m.keys, srv, "pgsplit health check"); err != nil {
			n.Error, n.loginRefused = err.Error(), loginRefused(err)
			return n
		}
		m.conns[addr] = c
		n.fresh = true
	}
	res := c.ExecParams(ctx, replicaCheckSQL, nil, nil, nil, nil).Read()
	if res.Err == nil && (len(res.Rows) != 1 || len(res.Rows[0]) != 3) {
		res.Err = fmt.Errorf("unexpected answer to the health check (%d rows)", len(res.Rows))
	}
	if res.Err != nil {
		_ = c.Close(context.Background())
		delete(m.conns, addr)
		n.Error = res.Err.Error()
		return n
	}
	row := res.Rows[0]
	lsn, err := ParseLSN(string(row[1]))
	if err != nil {
		n.Error = err.Error()
		return n
	}
	n.Healthy, n.InRecovery, n.LSN = true, string(row[0]) == "t", lsn
	if secs, err := strconv.ParseFloat(string(row[2]), 64); err == nil {
		n.LagSeconds = secs
	}
	return n
}

// store keeps n as its server's latest status and logs changes of health.
func (m *Monitor) store(n *NodeStatus) {
	addr := n.Server.Addr()
	m.statusMu.Lock()
	old := m.status[addr]
	m.status[addr] = n
	m.statusMu.Unlock()
	switch {
	case old != nil && old.Healthy && !n.Healthy, old == nil && !n.Healthy:
		m.log.Warn("health check failed", zap.String("server", n.Server.Addr()), zap.String("role", n.Role), zap.String("error", n.Error))
	case old != nil && !old.Healthy && n.Healthy:
		m.log.Info("health check passes again", zap.String("server", n.Server.Addr()), zap.String("role", n.Role))
	}
	if n.Healthy && n.Role == "replica" && !n.InRecovery && (old == nil || old.InRecovery) {
		m.log.Warn("a server configured as replica is not in recovery (promoted?); pgsplit still sends it only reads",
			zap.String("server", n.Server.Addr()))
	}
}

// Status returns the latest status of every server, primary first, each
// with the role it has now; servers not checked yet have a zero Checked
// time and unknown lag (-1).
func (m *Monitor) Status() []NodeStatus {
	servers := m.host.Config().Servers // not under statusMu: see the package comment
	m.statusMu.Lock()
	defer m.statusMu.Unlock()
	cur := m.Primary()
	order := make([]config.Server, 0, len(servers))
	for _, srv := range servers {
		if srv == cur {
			order = append([]config.Server{srv}, order...)
		} else {
			order = append(order, srv)
		}
	}
	out := make([]NodeStatus, 0, len(order))
	for _, srv := range order {
		if n, ok := m.status[srv.Addr()]; ok {
			c := *n
			c.Role = "replica"
			if srv == cur {
				c.Role = "primary"
			}
			out = append(out, c)
			continue
		}
		role := "replica"
		if srv.Host == cur.Host && srv.Port == cur.Port {
			role = "primary"
		}
		out = append(out, NodeStatus{Server: srv, Role: role, LagBytes: -1, LagSeconds: -1})
	}
	return out
}

// loginRefused reports a server's refusal of a login (authentication,
// pg_hba, no such database, no CONNECT privilege) as opposed to a server
// that is down or not accepting connections.
func loginRefused(err error) bool {
	if pool.IsLoginRefusal(err) {
		return true // the user's secret cannot log in (yet): says nothing of the server
	}
	var pe *pgconn.PgError
	if !errors.As(err, &pe) {
		return false
	}
	return strings.HasPrefix(pe.Code, "28") || pe.Code == "3D000" || pe.Code == "42501"
}
