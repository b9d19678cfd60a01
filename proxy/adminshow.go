package proxy

import (
	"errors"
	"fmt"
	"math"
	"net"
	"runtime/debug"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/pgsplit/pgsplit/internal/pgmsg"

	"github.com/pgsplit/pgsplit/config"
	"github.com/pgsplit/pgsplit/nodes"
	"github.com/pgsplit/pgsplit/pool"
	"github.com/pgsplit/pgsplit/router"
)

// The admin console's commands. Column names follow PgBouncer's where the
// concept is the same, so scripts written for its console carry over;
// pgsplit's own columns (role, server, lag…) are added after them.

// showQueriesLimit is how many fingerprints SHOW QUERIES lists.
const showQueriesLimit = 100

// adminCommandByName returns the command named key (upper case).
func adminCommandByName(key string) (adminCmd, bool) {
	switch key {
	case "SHOW HELP":
		return adminCmd{show: showHelp}, true
	case "SHOW POOLS":
		return adminCmd{show: showPools}, true
	case "SHOW STATS":
		return adminCmd{show: showStats}, true
	case "SHOW SERVERS":
		return adminCmd{show: showServers}, true
	case "SHOW CLIENTS":
		return adminCmd{show: showClients}, true
	case "SHOW DATABASES":
		return adminCmd{show: showDatabases}, true
	case "SHOW CONFIG":
		return adminCmd{show: showConfig}, true
	case "SHOW NODES":
		return adminCmd{show: showNodes}, true
	case "SHOW QUERIES":
		return adminCmd{show: showQueries}, true
	case "SHOW VERSION":
		return adminCmd{show: showVersion}, true
	case "RELOAD":
		return adminCmd{run: runReload}, true
	case "PAUSE":
		return adminCmd{run: runPause}, true
	case "RESUME":
		return adminCmd{run: runResume}, true
	case "SHUTDOWN":
		return adminCmd{run: runShutdown}, true
	case "RESET STATS":
		return adminCmd{run: runResetStats}, true
	}
	return adminCmd{}, false
}

func showHelp(*session) *resultSet {
	r := &resultSet{cols: []column{textCol("command"), textCol("description")}}
	for _, c := range [][2]string{
		{"SHOW POOLS", "each pool (database, user, server): clients and server connections"},
		{"SHOW STATS", "per database: transactions, statements, bytes and times since start or RESET STATS"},
		{"SHOW SERVERS", "each server connection pgsplit holds"},
		{"SHOW CLIENTS", "each client connection"},
		{"SHOW DATABASES", "each database on each server, with its pool settings"},
		{"SHOW CONFIG", "the running configuration (passwords masked)"},
		{"SHOW NODES", "each server: role, health, replica lag, in read rotation or not"},
		{"SHOW QUERIES", "top statements by total time (by fingerprint) since start or RESET STATS"},
		{"SHOW VERSION", "pgsplit's version"},
		{"RELOAD", "re-read the configuration file (as SIGHUP)"},
		{"PAUSE", "hold new transactions; returns once running ones have finished"},
		{"RESUME", "let held transactions go on"},
		{"SHUTDOWN", "shut pgsplit down gracefully (as SIGTERM)"},
		{"RESET STATS", "start SHOW STATS and SHOW QUERIES from zero"},
	} {
		r.rows = append(r.rows, []any{c[0], c[1]})
	}
	return r
}

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

// views reads every logged-in session.
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

func showPools(s *session) *resultSet {
	srv := s.srv
	cfg := srv.cfg.Load()
	r := &resultSet{cols: []column{textCol("database"), textCol("user"), intCol("cl_active"), intCol("cl_waiting"),
		intCol("sv_active"), intCol("sv_idle"), intCol("sv_used"), intCol("sv_tested"), intCol("sv_login"),
		intCol("maxwait"), intCol("maxwait_us"), textCol("pool_mode"),
		textCol("server"), textCol("role"), intCol("pool_size"), intCol("max_overflow")}}
	holders := map[*pool.Pool]int64{}
	for _, v := range srv.views() {
		for _, u := range v.ups {
			holders[u.pool]++
		}
	}
	for _, e := range srv.poolList() {
		st := e.pool.Stats()
		r.rows = append(r.rows, []any{e.key.database, e.key.user, holders[e.pool], int64(st.Waiting),
			int64(st.Open - st.Idle - st.Dialing), int64(st.Idle), int64(0), int64(0), int64(st.Dialing),
			int64(st.MaxWait / time.Second), int64((st.MaxWait % time.Second) / time.Microsecond), cfg.Pool.Mode,
			e.key.server.String(), srv.roleOf(e.key.server), int64(st.Size), int64(st.MaxOverflow)})
	}
	return r
}

func showStats(s *session) *resultSet {
	r := &resultSet{cols: []column{textCol("database"), intCol("total_xact_count"), intCol("total_query_count"),
		intCol("total_received"), intCol("total_sent"), intCol("total_xact_time"), intCol("total_query_time"), intCol("total_wait_time"),
		intCol("avg_xact_count"), intCol("avg_query_count"), intCol("avg_recv"), intCol("avg_sent"),
		intCol("avg_xact_time"), intCol("avg_query_time"), intCol("avg_wait_time")}}
	dbs, since := s.srv.stats.snapshot()
	secs := max(time.Since(since).Seconds(), 1)
	names := make([]string, 0, len(dbs))
	for n := range dbs {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		d := dbs[n]
		xacts, queries := d.xacts.Load(), d.queries.Load()
		xt, qt, wt := d.xactTime.Load(), d.queryTime.Load(), d.wait.Load()
		recv, sent := d.received.Load(), d.sent.Load()
		per := func(v int64) int64 { return int64(float64(v) / secs) }
		avg := func(total, n int64) int64 {
			if n == 0 {
				return 0
			}
			return total / n
		}
		r.rows = append(r.rows, []any{n, xacts, queries, recv, sent, xt, qt, wt,
			per(xacts), per(queries), per(recv), per(sent), avg(xt, xacts), avg(qt, queries), avg(wt, queries)})
	}
	return r
}

func splitHostPort(addr string) (string, int64) {
	h, p, err := net.SplitHostPort(addr)
	if err != nil {
		return addr, 0
	}
	n, _ := strconv.ParseInt(p, 10, 64)
	return h, n
}

func showServers(s *session) *resultSet {
	srv := s.srv
	cfg := srv.cfg.Load()
	r := &resultSet{cols: []column{textCol("type"), textCol("user"), textCol("database"), textCol("state"),
		textCol("addr"), intCol("port"), textCol("local_addr"), intCol("local_port"), timeCol("connect_time"), timeCol("request_time"),
		intCol("close_needed"), textCol("link"), intCol("remote_pid"), textCol("tls"), textCol("application_name"),
		intCol("prepared_statements"), textCol("role")}}
	linked := map[*pool.Conn]*session{}
	for _, v := range srv.views() {
		for _, u := range v.ups {
			linked[u.conn] = v.s
		}
	}
	for _, e := range srv.poolList() {
		conns := e.pool.Conns()
		sort.Slice(conns, func(i, j int) bool { return conns[i].Created.Before(conns[j].Created) })
		for _, c := range conns {
			state, link, app := "idle", "", ""
			if !c.Idle {
				state = "active"
			}
			if cl := linked[c.Conn]; cl != nil {
				link, app = strconv.FormatUint(uint64(cl.pid), 10), cl.appName
			}
			closeNeeded := int64(0)
			if cfg.Pool.PoolRecycle > 0 && time.Since(c.Created) > cfg.Pool.PoolRecycle {
				closeNeeded = 1
			}
			host, port := splitHostPort(c.Addr)
			lhost, lport := splitHostPort(c.LocalAddr)
			request := c.HandedOut
			if c.Idle {
				request = c.LastUsed
			}
			r.rows = append(r.rows, []any{"S", e.key.user, e.key.database, state, host, port, lhost, lport, c.Created, request,
				closeNeeded, link, int64(c.PID), c.Conn.TLS, app, int64(c.Prepared), srv.roleOf(e.key.server)})
		}
	}
	return r
}

func showClients(s *session) *resultSet {
	r := &resultSet{cols: []column{textCol("type"), textCol("user"), textCol("database"), textCol("state"),
		textCol("addr"), intCol("port"), textCol("local_addr"), intCol("local_port"), timeCol("connect_time"), timeCol("request_time"),
		intCol("wait"), intCol("wait_us"), textCol("ptr"), textCol("link"), textCol("tls"), textCol("application_name"),
		textCol("tx_status"), textCol("pinned_by")}}
	for _, v := range s.srv.views() {
		c := v.s
		state := "idle"
		var wait time.Duration
		switch {
		case !v.waiting.IsZero():
			state, wait = "waiting", time.Since(v.waiting)
		case c.admin != nil || len(v.ups) > 0 && !c.idle():
			state = "active"
		}
		var links []string
		for _, u := range v.ups {
			links = append(links, fmt.Sprintf("%s:%d", u.target, u.conn.PID))
		}
		host, port := splitHostPort(c.conn.RemoteAddr().String())
		lhost, lport := splitHostPort(c.conn.LocalAddr().String())
		var request time.Time
		if t := c.lastRequest.Load(); t != 0 {
			request = time.Unix(0, t)
		}
		pinned := ""
		if p := c.pinnedBy.Load(); p != nil {
			pinned = *p
		}
		r.rows = append(r.rows, []any{"C", c.user.Name, c.database, state, host, port, lhost, lport, c.connectedAt, request,
			int64(wait / time.Second), int64((wait % time.Second) / time.Microsecond), strconv.FormatUint(uint64(c.pid), 10),
			strings.Join(links, ","), c.tlsInfo, c.appName, string(rune(byte(c.txStatus.Load()))), pinned})
	}
	return r
}

func showDatabases(s *session) *resultSet {
	srv := s.srv
	cfg := srv.cfg.Load()
	r := &resultSet{cols: []column{textCol("name"), textCol("host"), intCol("port"), textCol("database"), textCol("force_user"),
		intCol("pool_size"), intCol("min_pool_size"), intCol("reserve_pool"), intCol("server_lifetime"), textCol("pool_mode"),
		intCol("max_connections"), intCol("current_connections"), intCol("paused"), intCol("disabled"),
		textCol("role"), intCol("max_overflow"), intCol("pool_timeout")}}
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
	paused := int64(0)
	if srv.pause.paused() {
		paused = 1
	}
	users := int64(len(cfg.Auth.Users))
	for _, db := range dbs {
		cur := srv.currentPrimary()
		for _, sv := range cfg.Servers {
			ep := endpointOf(sv)
			disabled := int64(0)
			if !srv.inRotation(sv) && sv != cur {
				disabled = 1
			}
			r.rows = append(r.rows, []any{db, sv.Host, int64(sv.Port), db, "", int64(cfg.Pool.PoolSize), int64(0), int64(cfg.Pool.MaxOverflow),
				int64(cfg.Pool.PoolRecycle / time.Second), cfg.Pool.Mode, users * int64(cfg.Pool.PoolSize+cfg.Pool.MaxOverflow), open[db][ep],
				paused, disabled, srv.roleOf(ep), int64(cfg.Pool.MaxOverflow), int64(cfg.Pool.PoolTimeout / time.Second)})
		}
	}
	return r
}

func showConfig(s *session) *resultSet {
	r := &resultSet{cols: []column{textCol("key"), textCol("value"), textCol("default"), boolCol("changeable")}}
	for _, st := range s.srv.cfg.Load().Settings() {
		r.rows = append(r.rows, []any{st.Key, st.Value, st.Default, st.Changeable})
	}
	return r
}

func showNodes(s *session) *resultSet {
	srv := s.srv
	r := &resultSet{cols: []column{textCol("host"), intCol("port"), textCol("role"), boolCol("healthy"), boolCol("in_recovery"),
		intCol("lag_bytes"), floatCol("lag_seconds"), boolCol("in_rotation"), intCol("weight"),
		intCol("sv_active"), intCol("sv_idle"), timeCol("last_check"), textCol("error"),
		textCol("rotation"), textCol("replay_lsn")}}
	active, idle := map[endpoint]int64{}, map[endpoint]int64{}
	for _, e := range srv.poolList() {
		st := e.pool.Stats()
		active[e.key.server] += int64(st.Open - st.Idle)
		idle[e.key.server] += int64(st.Idle)
	}
	for _, n := range srv.nodes.Status() {
		ep := endpointOf(n.Server)
		var healthy, inRecovery, lagBytes, lagSecs any
		if !n.Checked.IsZero() {
			healthy = n.Healthy
			if n.Healthy {
				inRecovery = n.InRecovery
			}
		}
		if n.LagBytes >= 0 {
			lagBytes = n.LagBytes
		}
		if n.LagSeconds >= 0 {
			lagSecs = n.LagSeconds
		}
		weight := int64(n.Server.Weight)
		if n.Role == "primary" {
			weight = 0
			if srv.cfg.Load().Routing.ReadFrom == config.ReadFromAny {
				weight = 1
			}
		}
		rotation := srv.rotationReason(n.Server)
		if rotation == "" {
			rotation = "in rotation"
		}
		var replay any
		if n.Role == "replica" {
			if l := srv.lsn.replayed(ep); l > 0 {
				replay = nodes.FormatLSN(l)
			}
		}
		r.rows = append(r.rows, []any{n.Server.Host, int64(n.Server.Port), n.Role, healthy, inRecovery, lagBytes, lagSecs,
			srv.inRotation(n.Server), weight, active[ep], idle[ep], n.Checked, n.Error, rotation, replay})
	}
	return r
}

func showQueries(s *session) *resultSet {
	r := &resultSet{cols: []column{textCol("fingerprint"), textCol("query"), intCol("calls"), floatCol("total_ms"), floatCol("mean_ms"),
		floatCol("p95_ms"), floatCol("max_ms"), floatCol("wait_ms"), intCol("rows"), intCol("slow"), intCol("errors"), floatCol("replica_share")}}
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
	for _, q := range s.srv.stats.queries.Load().top(showQueriesLimit, normalizeSQL) {
		r.rows = append(r.rows, []any{q.Fingerprint, q.Query, q.Calls, ms(q.Total), ms(q.Total / time.Duration(q.Calls)),
			ms(q.P95), ms(q.Max), ms(q.Wait), q.Rows, q.Slow, q.Errs, math.Round(1000*float64(q.Replica)/float64(q.Calls)) / 1000})
	}
	return r
}

func showVersion(*session) *resultSet {
	v := "(devel)"
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" {
		v = bi.Main.Version
	}
	return &resultSet{cols: []column{textCol("version")}, rows: [][]any{{"pgsplit " + v}}}
}

func runReload(s *session) (string, *pgmsg.Error) {
	if s.srv.reloader == nil {
		return "", pgmsg.Err(pgmsg.CodeFeatureNotSupported, "RELOAD needs pgsplit started from a configuration file (pgsplit serve)")
	}
	if err := s.srv.reloader(); err != nil {
		return "", pgmsg.Err(pgmsg.CodeInvalidParameterValue, "reload refused; the running configuration stays: "+err.Error())
	}
	return "RELOAD", nil
}

// runPause closes the gate and waits until no client is inside a
// transaction or a statement. A cancel request (Ctrl-C in psql) ends the
// wait and opens the gate again.
func runPause(s *session) (string, *pgmsg.Error) {
	srv := s.srv
	if srv.draining.Load() {
		return "", pgmsg.Err(pgmsg.CodeAdminShutdown, "pgsplit is shutting down")
	}
	gen, ok := srv.pause.pause()
	if !ok {
		return "", pgmsg.Err(pgmsg.CodeObjectNotInPrerequisiteState, "pgsplit is already paused")
	}
	srv.log.Info("PAUSE: holding new transactions; waiting for running ones to finish")
	for i := 0; ; i++ {
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
			return "PAUSE", nil
		}
		if s.admin.cancelled.Load() || srv.draining.Load() || (i%20 == 19 && s.clientGone()) {
			srv.pause.open(gen)
			return "", pgmsg.Err(pgmsg.CodeQueryCanceled,
				fmt.Sprintf("PAUSE canceled while %d client(s) were still in a transaction; pgsplit is not paused", busy))
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// clientGone reports whether the admin client closed its connection (a
// look at the socket with a 1 ms deadline; data it sent stays buffered).
func (s *session) clientGone() bool {
	if s.br.Buffered() > 0 {
		return false
	}
	_ = s.conn.SetReadDeadline(time.Now().Add(time.Millisecond))
	_, err := s.br.Peek(1)
	_ = s.conn.SetReadDeadline(time.Time{})
	var ne net.Error
	return err != nil && !(errors.As(err, &ne) && ne.Timeout())
}

func runResume(s *session) (string, *pgmsg.Error) {
	if !s.srv.pause.open(0) {
		return "", pgmsg.Err(pgmsg.CodeObjectNotInPrerequisiteState, "pgsplit is not paused")
	}
	s.srv.log.Info("RESUME: new transactions go on")
	return "RESUME", nil
}

// runShutdown asks for a graceful shutdown once the answer is written (the
// drain would otherwise close the console before it).
func runShutdown(s *session) (string, *pgmsg.Error) {
	s.admin.shutdown = true
	return "SHUTDOWN", nil
}

func runResetStats(s *session) (string, *pgmsg.Error) {
	s.srv.stats.reset()
	return "RESET", nil
}
