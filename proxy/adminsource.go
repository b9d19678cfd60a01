package proxy

import (
	"sort"
	"time"

	"github.com/pgsplit/pgsplit/admin"
	"github.com/pgsplit/pgsplit/config"
	"github.com/pgsplit/pgsplit/nodes"
	"github.com/pgsplit/pgsplit/pool"
	"github.com/pgsplit/pgsplit/router"
)

// The Server as the admin console reads and runs it (admin.Source): each
// listing takes the locks it needs, copies, and returns values the console
// owns; nothing of a session or a pool leaves this file.

var _ admin.Source = (*Server)(nil)

// Config is the running configuration; callers must not change it.
func (srv *Server) Config() *config.Config { return srv.cfg.Load() }

// sessionView is what the console reads of a session from its goroutine.
type sessionView struct {
	s       *session
	ups     []upView
	waiting time.Time
}

type upView struct {
	pool   *pool.Pool
	conn   *pool.Conn
	target router.Target
}

// views reads every logged-in session, oldest first.
func (srv *Server) views() []sessionView {
	var out []sessionView
	for _, s := range srv.snapshot() {
		if !s.ready.Load() {
			continue
		}
		v := sessionView{s: s}
		if w := s.waitingFrom.Load(); w != 0 {
			v.waiting = time.Unix(0, w)
		}
		s.upMu.Lock()
		for _, u := range s.ups {
			// A connection the pump gave back stays in ups until the
			// session's next message; it is not the session's any more.
			if u != nil && u.hold.Load() != holdReleased {
				v.ups = append(v.ups, upView{u.pool, u.conn, u.target})
			}
		}
		s.upMu.Unlock()
		out = append(out, v)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].s.connectedAt.Before(out[j].s.connectedAt) })
	return out
}

// poolEntry is a pool with its key, sorted for display.
type poolEntry struct {
	key  poolKey
	pool *pool.Pool
}

// poolList returns the pools sorted by database, user and server, copied
// under the server's lock (taken by every checkout) to be read without it.
func (srv *Server) poolList() []poolEntry {
	srv.mu.Lock()
	out := make([]poolEntry, 0, len(srv.pools))
	for k, p := range srv.pools {
		out = append(out, poolEntry{k, p})
	}
	srv.mu.Unlock()
	sort.Slice(out, func(i, j int) bool {
		a, b := out[i].key, out[j].key
		if a.database != b.database {
			return a.database < b.database
		}
		if a.user != b.user {
			return a.user < b.user
		}
		return a.server.String() < b.server.String()
	})
	return out
}

// roleOf is the role pgsplit gives a server.
func (srv *Server) roleOf(e endpoint) string {
	if e == endpointOf(srv.currentPrimary()) {
		return "primary"
	}
	return "replica"
}

// Clients lists the logged-in client sessions, oldest first (SHOW CLIENTS).
func (srv *Server) Clients() []admin.ClientInfo {
	var out []admin.ClientInfo
	for _, v := range srv.views() {
		c := v.s
		info := admin.ClientInfo{User: c.user.Name, Database: c.database, PID: c.pid, AppName: c.appName, TLS: c.tlsInfo,
			RemoteAddr: c.conn.RemoteAddr().String(), LocalAddr: c.conn.LocalAddr().String(), ConnectedAt: c.connectedAt,
			WaitingSince: v.waiting, Admin: c.admin != nil, Busy: len(v.ups) > 0 && !c.idle(), TxStatus: byte(c.txStatus.Load())}
		if t := c.lastRequest.Load(); t != 0 {
			info.LastRequest = time.Unix(0, t)
		}
		if p := c.pinnedBy.Load(); p != nil {
			info.PinnedBy = *p
		}
		for _, u := range v.ups {
			info.Links = append(info.Links, admin.ServerLink{Target: u.target.String(), PID: u.conn.PID})
		}
		out = append(out, info)
	}
	return out
}

// Pools lists the pools by database, user and server, with how many
// clients hold one of their connections (SHOW POOLS).
func (srv *Server) Pools() []admin.PoolInfo {
	holders := map[*pool.Pool]int64{}
	for _, v := range srv.views() {
		for _, u := range v.ups {
			holders[u.pool]++
		}
	}
	var out []admin.PoolInfo
	for _, e := range srv.poolList() {
		st := e.pool.Stats()
		out = append(out, admin.PoolInfo{Database: e.key.database, User: e.key.user, Server: e.key.server.String(),
			Role: srv.roleOf(e.key.server), Clients: holders[e.pool],
			Open: int64(st.Open), Idle: int64(st.Idle), Dialing: int64(st.Dialing), Waiting: int64(st.Waiting), MaxWait: st.MaxWait,
			Size: int64(st.Size), MaxOverflow: int64(st.MaxOverflow)})
	}
	return out
}

// ServerConns lists the open server connections pool by pool, oldest
// first within one, with the client holding each (SHOW SERVERS).
func (srv *Server) ServerConns() []admin.ServerConnInfo {
	linked := map[*pool.Conn]*session{}
	for _, v := range srv.views() {
		for _, u := range v.ups {
			linked[u.conn] = v.s
		}
	}
	var out []admin.ServerConnInfo
	for _, e := range srv.poolList() {
		conns := e.pool.Conns()
		sort.Slice(conns, func(i, j int) bool { return conns[i].Created.Before(conns[j].Created) })
		role := srv.roleOf(e.key.server)
		for _, c := range conns {
			info := admin.ServerConnInfo{User: e.key.user, Database: e.key.database, Role: role, Addr: c.Addr, LocalAddr: c.LocalAddr,
				PID: int64(c.PID), TLS: c.Conn.TLS, Idle: c.Idle, Created: c.Created, HandedOut: c.HandedOut, LastUsed: c.LastUsed,
				Prepared: int64(c.Prepared)}
			if cl := linked[c.Conn]; cl != nil {
				info.ClientPID, info.ClientApp = cl.pid, cl.appName
			}
			out = append(out, info)
		}
	}
	return out
}

// Databases lists each database on each configured server: those the
// configuration lists or, when it lists none, those with statistics or
// pools (SHOW DATABASES).
func (srv *Server) Databases() []admin.DatabaseInfo {
	cfg := srv.cfg.Load()
	dbs := append([]string(nil), cfg.Databases...)
	open := map[string]map[endpoint]int64{}
	for _, e := range srv.poolList() {
		if open[e.key.database] == nil {
			open[e.key.database] = map[endpoint]int64{}
		}
		open[e.key.database][e.key.server] += int64(e.pool.Open())
	}
	if len(dbs) == 0 {
		seen, _ := srv.stats.snapshot()
		for n := range seen {
			dbs = append(dbs, n)
		}
		for n := range open {
			if _, ok := seen[n]; !ok {
				dbs = append(dbs, n)
			}
		}
		sort.Strings(dbs)
	}
	var out []admin.DatabaseInfo
	for _, db := range dbs {
		cur := srv.currentPrimary()
		for _, sv := range cfg.Servers {
			ep := endpointOf(sv)
			out = append(out, admin.DatabaseInfo{Name: db, Host: sv.Host, Port: int64(sv.Port), Role: srv.roleOf(ep),
				Open: open[db][ep], Disabled: !srv.inRotation(sv) && sv != cur})
		}
	}
	return out
}

// NodeHealth lists each server, primary first, as the health checks last
// saw it, with its place in read rotation and its connections (SHOW NODES).
func (srv *Server) NodeHealth() []admin.NodeInfo {
	active, idle := map[endpoint]int64{}, map[endpoint]int64{}
	for _, e := range srv.poolList() {
		st := e.pool.Stats()
		active[e.key.server] += int64(st.Open - st.Idle)
		idle[e.key.server] += int64(st.Idle)
	}
	var out []admin.NodeInfo
	for _, n := range srv.nodes.Status() {
		ep := endpointOf(n.Server)
		weight := int64(n.Server.Weight)
		if n.Role == "primary" {
			weight = 0
			if srv.cfg.Load().Routing.ReadFrom == config.ReadFromAny {
				weight = 1
			}
		}
		info := admin.NodeInfo{Host: n.Server.Host, Port: int64(n.Server.Port), Role: n.Role,
			Checked: n.Checked, Healthy: n.Healthy, InRecovery: n.InRecovery, Error: n.Error,
			LagBytes: n.LagBytes, LagSeconds: n.LagSeconds, Weight: weight,
			Rotation: srv.rotationReason(n.Server), SvActive: active[ep], SvIdle: idle[ep]}
		if n.Role == "replica" {
			if l := srv.lsn.replayed(ep); l > 0 {
				info.ReplayLSN = nodes.FormatLSN(l)
			}
		}
		info.InRotation = srv.inRotation(n.Server)
		out = append(out, info)
	}
	return out
}

// Stats are the per-database counters since start or RESET STATS, by
// database name (SHOW STATS).
func (srv *Server) Stats() admin.Stats {
	dbs, since := srv.stats.snapshot()
	out := admin.Stats{Since: since, Databases: make([]admin.DatabaseStats, 0, len(dbs))}
	for n, d := range dbs {
		out.Databases = append(out.Databases, admin.DatabaseStats{Name: n,
			Xacts: d.xacts.Load(), Queries: d.queries.Load(),
			XactTime: d.xactTime.Load(), QueryTime: d.queryTime.Load(), Wait: d.wait.Load(),
			Received: d.received.Load(), Sent: d.sent.Load()})
	}
	sort.Slice(out.Databases, func(i, j int) bool { return out.Databases[i].Name < out.Databases[j].Name })
	return out
}

// TopQueries are the n fingerprints with the most total time since start or
// RESET STATS (SHOW QUERIES).
func (srv *Server) TopQueries(n int) []admin.QueryInfo {
	top := srv.stats.queries.Load().top(n, normalizeSQL)
	out := make([]admin.QueryInfo, len(top))
	for i, q := range top {
		out[i] = admin.QueryInfo{Fingerprint: q.Fingerprint, Query: q.Query, Calls: q.Calls, Rows: q.Rows,
			Slow: q.Slow, Errors: q.Errs, Replica: q.Replica, Total: q.Total, Wait: q.Wait, Max: q.Max, P95: q.P95}
	}
	return out
}

// ResetStats starts SHOW STATS and SHOW QUERIES from zero (RESET STATS).
func (srv *Server) ResetStats() { srv.stats.reset() }

// Paused reports whether PAUSE holds new transactions.
func (srv *Server) Paused() bool { return srv.pause.paused() }

// pauseLook is how often Pause looks at the running transactions.
const pauseLook = 5 * time.Millisecond

// Pause closes the PAUSE gate and waits until no client is inside a
// transaction or a statement; abandon (asked between looks) or a shutdown
// ends the wait and opens the gate again (see admin.Source).
func (srv *Server) Pause(abandon func() bool) error {
	if srv.draining.Load() {
		return admin.ErrShuttingDown
	}
	gen, ok := srv.pause.pause()
	if !ok {
		return admin.ErrAlreadyPaused
	}
	srv.log.Info("PAUSE: holding new transactions; waiting for running ones to finish")
	for {
		busy := 0
		for _, sess := range srv.snapshot() {
			// Clients held at the gate are idle by definition; a client
			// waiting for a pool connection inside a transaction is busy.
			if sess.ready.Load() && sess.admin == nil && !sess.heldAtGate.Load() && !sess.idle() {
				busy++
			}
		}
		if busy == 0 {
			srv.log.Info("PAUSE: no transaction running")
			return nil
		}
		if abandon() || srv.draining.Load() {
			srv.pause.open(gen)
			return &admin.PauseAbandonedError{Busy: busy}
		}
		time.Sleep(pauseLook)
	}
}

// Resume opens the PAUSE gate (RESUME).
func (srv *Server) Resume() error {
	if !srv.pause.open(0) {
		return admin.ErrNotPaused
	}
	srv.log.Info("RESUME: new transactions go on")
	return nil
}

// ReloadFile runs what SetReloader set (RELOAD).
func (srv *Server) ReloadFile() error {
	if srv.reloader == nil {
		return admin.ErrNoConfigFile
	}
	return srv.reloader()
}

// RequestShutdown closes ShutdownRequested's channel (SHUTDOWN); the
// Server's owner then calls Shutdown.
func (srv *Server) RequestShutdown() { srv.shutdownOnce.Do(func() { close(srv.shutdownReq) }) }
