package admin

import (
	"fmt"
	"math"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/pgsplit/pgsplit/internal/version"
)

// The SHOW commands. Column names follow PgBouncer's where the concept is
// the same, so scripts written for its console carry over; pgsplit's own
// columns (role, server, lag…) are added after them. Each reads what it
// shows from the Source once, as copies.

// showQueriesLimit is how many fingerprints SHOW QUERIES lists.
const showQueriesLimit = 100

func showHelp(Source) *resultSet {
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

// seconds and micros split d as PgBouncer's maxwait and maxwait_us (and
// wait, wait_us) do.
func seconds(d time.Duration) int64 { return int64(d / time.Second) }
func micros(d time.Duration) int64  { return int64((d % time.Second) / time.Microsecond) }

func showPools(src Source) *resultSet {
	cfg := src.Config()
	r := &resultSet{cols: []column{textCol("database"), textCol("user"), intCol("cl_active"), intCol("cl_waiting"),
		intCol("sv_active"), intCol("sv_idle"), intCol("sv_used"), intCol("sv_tested"), intCol("sv_login"),
		intCol("maxwait"), intCol("maxwait_us"), textCol("pool_mode"),
		textCol("server"), textCol("role"), intCol("pool_size"), intCol("max_overflow")}}
	for _, p := range src.Pools() {
		r.rows = append(r.rows, []any{p.Database, p.User, p.Clients, p.Waiting,
			p.Open - p.Idle - p.Dialing, p.Idle, int64(0), int64(0), p.Dialing,
			seconds(p.MaxWait), micros(p.MaxWait), cfg.Pool.Mode,
			p.Server, p.Role, p.Size, p.MaxOverflow})
	}
	return r
}

func showStats(src Source) *resultSet {
	r := &resultSet{cols: []column{textCol("database"), intCol("total_xact_count"), intCol("total_query_count"),
		intCol("total_received"), intCol("total_sent"), intCol("total_xact_time"), intCol("total_query_time"), intCol("total_wait_time"),
		intCol("avg_xact_count"), intCol("avg_query_count"), intCol("avg_recv"), intCol("avg_sent"),
		intCol("avg_xact_time"), intCol("avg_query_time"), intCol("avg_wait_time")}}
	st := src.Stats()
	secs := max(time.Since(st.Since).Seconds(), 1)
	per := func(v int64) int64 { return int64(float64(v) / secs) }
	avg := func(total, n int64) int64 {
		if n == 0 {
			return 0
		}
		return total / n
	}
	for _, d := range st.Databases {
		r.rows = append(r.rows, []any{d.Name, d.Xacts, d.Queries, d.Received, d.Sent, d.XactTime, d.QueryTime, d.Wait,
			per(d.Xacts), per(d.Queries), per(d.Received), per(d.Sent), avg(d.XactTime, d.Xacts), avg(d.QueryTime, d.Queries), avg(d.Wait, d.Queries)})
	}
	return r
}

// splitHostPort splits host:port for the addr and port columns (an address
// that is not host:port is all host, port 0).
func splitHostPort(addr string) (string, int64) {
	h, p, err := net.SplitHostPort(addr)
	if err != nil {
		return addr, 0
	}
	n, _ := strconv.ParseInt(p, 10, 64)
	return h, n
}

func showServers(src Source) *resultSet {
	cfg := src.Config()
	r := &resultSet{cols: []column{textCol("type"), textCol("user"), textCol("database"), textCol("state"),
		textCol("addr"), intCol("port"), textCol("local_addr"), intCol("local_port"), timeCol("connect_time"), timeCol("request_time"),
		intCol("close_needed"), textCol("link"), intCol("remote_pid"), textCol("tls"), textCol("application_name"),
		intCol("prepared_statements"), textCol("role")}}
	for _, c := range src.ServerConns() {
		state, link := "idle", ""
		if !c.Idle {
			state = "active"
		}
		if c.ClientPID != 0 {
			link = strconv.FormatUint(uint64(c.ClientPID), 10)
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
		r.rows = append(r.rows, []any{"S", c.User, c.Database, state, host, port, lhost, lport, c.Created, request,
			closeNeeded, link, c.PID, c.TLS, c.ClientApp, c.Prepared, c.Role})
	}
	return r
}

func showClients(src Source) *resultSet {
	r := &resultSet{cols: []column{textCol("type"), textCol("user"), textCol("database"), textCol("state"),
		textCol("addr"), intCol("port"), textCol("local_addr"), intCol("local_port"), timeCol("connect_time"), timeCol("request_time"),
		intCol("wait"), intCol("wait_us"), textCol("ptr"), textCol("link"), textCol("tls"), textCol("application_name"),
		textCol("tx_status"), textCol("pinned_by")}}
	for _, c := range src.Clients() {
		state := "idle"
		var wait time.Duration
		switch {
		case !c.WaitingSince.IsZero():
			state, wait = "waiting", time.Since(c.WaitingSince)
		case c.Admin || c.Busy:
			state = "active"
		}
		links := make([]string, len(c.Links))
		for i, l := range c.Links {
			links[i] = fmt.Sprintf("%s:%d", l.Target, l.PID)
		}
		host, port := splitHostPort(c.RemoteAddr)
		lhost, lport := splitHostPort(c.LocalAddr)
		r.rows = append(r.rows, []any{"C", c.User, c.Database, state, host, port, lhost, lport, c.ConnectedAt, c.LastRequest,
			seconds(wait), micros(wait), strconv.FormatUint(uint64(c.PID), 10),
			strings.Join(links, ","), c.TLS, c.AppName, string(rune(c.TxStatus)), c.PinnedBy})
	}
	return r
}

func showDatabases(src Source) *resultSet {
	cfg := src.Config()
	r := &resultSet{cols: []column{textCol("name"), textCol("host"), intCol("port"), textCol("database"), textCol("force_user"),
		intCol("pool_size"), intCol("min_pool_size"), intCol("reserve_pool"), intCol("server_lifetime"), textCol("pool_mode"),
		intCol("max_connections"), intCol("current_connections"), intCol("paused"), intCol("disabled"),
		textCol("role"), intCol("max_overflow"), intCol("pool_timeout")}}
	dbs := src.Databases()
	paused := int64(0)
	if src.Paused() {
		paused = 1
	}
	users := int64(len(cfg.Auth.Users))
	for _, d := range dbs {
		disabled := int64(0)
		if d.Disabled {
			disabled = 1
		}
		r.rows = append(r.rows, []any{d.Name, d.Host, d.Port, d.Name, "", int64(cfg.Pool.PoolSize), int64(0), int64(cfg.Pool.MaxOverflow),
			seconds(cfg.Pool.PoolRecycle), cfg.Pool.Mode, users * int64(cfg.Pool.PoolSize+cfg.Pool.MaxOverflow), d.Open,
			paused, disabled, d.Role, int64(cfg.Pool.MaxOverflow), seconds(cfg.Pool.PoolTimeout)})
	}
	return r
}

func showConfig(src Source) *resultSet {
	r := &resultSet{cols: []column{textCol("key"), textCol("value"), textCol("default"), boolCol("changeable")}}
	for _, st := range src.Config().Settings() {
		r.rows = append(r.rows, []any{st.Key, st.Value, st.Default, st.Changeable})
	}
	return r
}

func showNodes(src Source) *resultSet {
	r := &resultSet{cols: []column{textCol("host"), intCol("port"), textCol("role"), boolCol("healthy"), boolCol("in_recovery"),
		intCol("lag_bytes"), floatCol("lag_seconds"), boolCol("in_rotation"), intCol("weight"),
		intCol("sv_active"), intCol("sv_idle"), timeCol("last_check"), textCol("error"),
		textCol("rotation"), textCol("replay_lsn")}}
	for _, n := range src.NodeHealth() {
		// NULL for what is not known (yet).
		var healthy, inRecovery, lagBytes, lagSecs, replay any
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
		rotation := n.Rotation
		if rotation == "" {
			rotation = "in rotation"
		}
		if n.ReplayLSN != "" {
			replay = n.ReplayLSN
		}
		r.rows = append(r.rows, []any{n.Host, n.Port, n.Role, healthy, inRecovery, lagBytes, lagSecs,
			n.InRotation, n.Weight, n.SvActive, n.SvIdle, n.Checked, n.Error, rotation, replay})
	}
	return r
}

func showQueries(src Source) *resultSet {
	r := &resultSet{cols: []column{textCol("fingerprint"), textCol("query"), intCol("calls"), floatCol("total_ms"), floatCol("mean_ms"),
		floatCol("p95_ms"), floatCol("max_ms"), floatCol("wait_ms"), intCol("rows"), intCol("slow"), intCol("errors"), floatCol("replica_share")}}
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
	for _, q := range src.TopQueries(showQueriesLimit) {
		calls := max(q.Calls, 1) // a fingerprint listed has run at least once
		r.rows = append(r.rows, []any{q.Fingerprint, q.Query, q.Calls, ms(q.Total), ms(q.Total / time.Duration(calls)),
			ms(q.P95), ms(q.Max), ms(q.Wait), q.Rows, q.Slow, q.Errors, math.Round(1000*float64(q.Replica)/float64(calls)) / 1000})
	}
	return r
}

func showVersion(Source) *resultSet {
	return &resultSet{cols: []column{textCol("version")}, rows: [][]any{{version.Get().String()}}}
}
