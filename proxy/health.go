package proxy

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"go.uber.org/zap"

	"github.com/pgsplit/pgsplit/config"
	"github.com/pgsplit/pgsplit/pool"
)

// healthMonitor asks every server, every routing.health_check_interval,
// whether it is up and (replicas) how far behind the primary it is: the
// bytes of WAL it has still to replay and, while it is behind, the age of
// the last transaction it replayed. A replica that fails a check leaves
// read rotation for ReplicaRetry, as after a failed connection (a passing
// check does not cut that short, so a replica that the pools cannot reach
// but the check can does not flap). The figures feed SHOW NODES and the
// metrics.
//
// Ownership: the Server owns it; its goroutine owns the check connections
// (one per server, opened with the first auth user to database postgres:
// the "+1" of the connection-limits formula). nodes is read by others under
// mu.
type healthMonitor struct {
	s     *Server
	conns map[endpoint]*pgconn.PgConn // monitor goroutine only

	mu    sync.Mutex
	nodes map[endpoint]*NodeStatus

	started atomic.Bool
	quit    chan struct{}
	done    chan struct{}
	probe   chan struct{} // check now (a primary connection failed)

	// Monitor goroutine only: what was logged already.
	warnedStandby map[endpoint]bool
	warnedSplit   bool
}

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

func newHealthMonitor(s *Server) *healthMonitor {
	return &healthMonitor{s: s, conns: map[endpoint]*pgconn.PgConn{}, nodes: map[endpoint]*NodeStatus{},
		quit: make(chan struct{}), done: make(chan struct{}), probe: make(chan struct{}, 1), warnedStandby: map[endpoint]bool{}}
}

func (h *healthMonitor) start() {
	h.started.Store(true)
	go h.run()
}

func (h *healthMonitor) stop() {
	if !h.started.Load() {
		return
	}
	select {
	case <-h.quit:
		return
	default:
	}
	close(h.quit)
	select {
	case <-h.done:
	case <-time.After(10 * time.Second):
	}
}

func (h *healthMonitor) run() {
	defer close(h.done)
	defer func() {
		for _, c := range h.conns {
			_ = c.Close(context.Background())
		}
	}()
	for {
		every := h.s.cfg.Load().Routing.HealthCheckInterval
		if every > 0 {
			h.checkAll()
			if h.s.currentPrimary().Host == "" {
				every = min(every, noPrimaryProbe) // follow a failover closely
			}
		} else {
			every = time.Second // checks off: look at the setting again later
		}
		select {
		case <-h.quit:
			return
		case <-h.probe:
		case <-time.After(every):
		}
	}
}

const replicaCheckSQL = `SELECT pg_is_in_recovery(), COALESCE(pg_last_wal_replay_lsn(), pg_current_wal_lsn())::text,
 CASE WHEN NOT pg_is_in_recovery() OR pg_last_wal_replay_lsn() >= pg_last_wal_receive_lsn() THEN 0
 ELSE COALESCE(EXTRACT(EPOCH FROM now() - pg_last_xact_replay_timestamp())::float8, -1) END`

func (h *healthMonitor) checkAll() {
	s := h.s
	servers := s.cfg.Load().Servers
	nodes := make([]*NodeStatus, len(servers))
	for i, srv := range servers {
		nodes[i] = h.check(srv, "", replicaCheckSQL)
	}
	h.decideRoles(servers, nodes)
	cur := s.currentPrimary()
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
			s.markDown(r)
		case n.Healthy:
			s.lsn.setReplayed(endpointOf(r), n.LSN)
			if n.fresh {
				s.markUp(r)
			}
			if primary.Healthy {
				n.LagBytes = max(int64(primary.LSN)-int64(n.LSN), 0)
			}
			h.applyLagLimits(r, n)
		}
		h.store(n)
	}
	if primary.Server.Host != "" {
		h.store(primary)
	}
	s.checked()
}

// applyLagLimits takes a replica over routing.max_replica_lag or
// max_replica_lag_bytes out of read rotation, and puts it back once it is
// under half of each (so that it does not flap around the limit).
func (h *healthMonitor) applyLagLimits(r config.Server, n *NodeStatus) {
	rc := h.s.cfg.Load().Routing
	maxLag, maxBytes := rc.MaxReplicaLag, rc.MaxReplicaLagBytes
	lag := time.Duration(n.LagSeconds * float64(time.Second))
	var over string
	switch {
	case maxLag > 0 && n.LagSeconds >= 0 && lag > maxLag:
		over = fmt.Sprintf("lag %.1fs over max_replica_lag %s", n.LagSeconds, maxLag)
	case maxBytes > 0 && n.LagBytes > maxBytes:
		over = fmt.Sprintf("lag %d bytes over max_replica_lag_bytes %d", n.LagBytes, maxBytes)
	}
	if over != "" {
		h.s.setLagOut(r, over)
		return
	}
	under := (maxLag == 0 || (n.LagSeconds >= 0 && lag <= maxLag/2)) &&
		(maxBytes == 0 || (n.LagBytes >= 0 && n.LagBytes <= maxBytes/2))
	if under {
		h.s.setLagOut(r, "")
	}
}

// check runs one server's check query on the monitor's connection to it.
func (h *healthMonitor) check(srv config.Server, role, sql string) *NodeStatus {
	n := &NodeStatus{Server: srv, Role: role, Checked: time.Now(), LagBytes: -1, LagSeconds: -1}
	cfg := h.s.cfg.Load()
	ctx, cancel := context.WithTimeout(context.Background(), cfg.Pool.ConnectTimeout)
	defer cancel()
	ep := endpointOf(srv)
	c := h.conns[ep]
	if c == nil {
		var err error
		if c, err = h.s.monitorConn(ctx, srv, "pgsplit health check"); err != nil {
			n.Error, n.loginRefused = err.Error(), loginRefused(err)
			return n
		}
		h.conns[ep] = c
		n.fresh = true
	}
	res := c.ExecParams(ctx, sql, nil, nil, nil, nil).Read()
	if res.Err == nil && (len(res.Rows) != 1 || len(res.Rows[0]) != 3) {
		res.Err = fmt.Errorf("unexpected answer to the health check (%d rows)", len(res.Rows))
	}
	if res.Err != nil {
		_ = c.Close(context.Background())
		delete(h.conns, ep)
		n.Error = res.Err.Error()
		return n
	}
	row := res.Rows[0]
	lsn, err := parseLSN(string(row[1]))
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
func (h *healthMonitor) store(n *NodeStatus) {
	ep := endpointOf(n.Server)
	h.mu.Lock()
	old := h.nodes[ep]
	h.nodes[ep] = n
	h.mu.Unlock()
	switch {
	case old != nil && old.Healthy && !n.Healthy, old == nil && !n.Healthy:
		h.s.log.Warn("health check failed", zap.String("server", n.Server.Addr()), zap.String("role", n.Role), zap.String("error", n.Error))
	case old != nil && !old.Healthy && n.Healthy:
		h.s.log.Info("health check passes again", zap.String("server", n.Server.Addr()), zap.String("role", n.Role))
	}
	if n.Healthy && n.Role == "replica" && !n.InRecovery && (old == nil || old.InRecovery) {
		h.s.log.Warn("a server configured as replica is not in recovery (promoted?); pgsplit still sends it only reads",
			zap.String("server", n.Server.Addr()))
	}
}

// Nodes returns the latest status of every server, primary first; servers
// not checked yet have a zero Checked time.
func (s *Server) Nodes() []NodeStatus {
	h := s.health
	h.mu.Lock()
	defer h.mu.Unlock()
	cur := s.currentPrimary()
	servers := s.cfg.Load().Servers
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
		if n, ok := h.nodes[endpointOf(srv)]; ok {
			c := *n
			c.Role = "replica"
			if srv == cur {
				c.Role = "primary"
			}
			out = append(out, c)
			continue
		}
		out = append(out, NodeStatus{Server: srv, Role: s.roleOf(endpointOf(srv)), LagBytes: -1, LagSeconds: -1})
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

// parseLSN reads a WAL position written as PostgreSQL's pg_lsn ("16/B374D848").
func parseLSN(s string) (uint64, error) {
	hi, lo, ok := strings.Cut(s, "/")
	if !ok {
		return 0, fmt.Errorf("bad WAL position %q", s)
	}
	h, err1 := strconv.ParseUint(hi, 16, 32)
	l, err2 := strconv.ParseUint(lo, 16, 32)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("bad WAL position %q", s)
	}
	return h<<32 | l, nil
}

// formatLSN writes a WAL position as PostgreSQL's pg_lsn does.
func formatLSN(l uint64) string { return fmt.Sprintf("%X/%X", l>>32, uint32(l)) }
