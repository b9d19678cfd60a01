package admin

import (
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/pgsplit/pgsplit/internal/pgmsg"
)

// showRows runs cmd on src and returns its data rows as trace writes them.
func showRows(t *testing.T, src Source, cmd string) []string {
	t.Helper()
	got, _, _ := serve(t, src, &pgproto3.Query{String: cmd})
	if len(got) < 3 || got[len(got)-2] != "C SHOW" || !strings.HasPrefix(got[0], "T ") {
		t.Fatalf("%s: sent %q", cmd, got)
	}
	return got[1 : len(got)-2]
}

func wantRows(t *testing.T, cmd string, got []string, want ...string) {
	t.Helper()
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("%s rows\n  %q\nwant\n  %q", cmd, got, want)
	}
}

// SHOW POOLS: sv_active counts the handed-out connections (not those
// being dialled, which are sv_login), maxwait is split in seconds and
// microseconds, pool_mode is the configuration's.
func TestShowPoolsCountsAsPgBouncer(t *testing.T) {
	wantRows(t, "SHOW POOLS", showRows(t, newFakeSource(), "SHOW POOLS"),
		"D db|app|1|2|2|1|0|0|1|1|500000|transaction|127.0.0.1:5432|primary|10|5")
}

// SHOW CLIENTS: a client waiting shows how long; one with a statement or
// transaction running, and every admin console, is active; its server
// connections are listed as target:pid.
func TestShowClientsStates(t *testing.T) {
	src := newFakeSource()
	idle := src.clients[0]
	idle.Busy, idle.Links, idle.TxStatus, idle.PID, idle.PinnedBy, idle.LastRequest = false, nil, pgmsg.TxIdle, 8, "temp table", idle.ConnectedAt.Add(time.Second)
	admin := idle
	admin.Admin, admin.PID, admin.PinnedBy, admin.LastRequest = true, 9, "", time.Time{}
	waiting := idle
	waiting.WaitingSince, waiting.PID, waiting.PinnedBy = time.Now().Add(-2*time.Second), 10, ""
	src.clients = append(src.clients, idle, admin, waiting)
	rows := showRows(t, src, "SHOW CLIENTS")
	if len(rows) != 4 {
		t.Fatalf("rows %q", rows)
	}
	wantRows(t, "SHOW CLIENTS", rows[:3],
		"D C|app|db|active|127.0.0.1|40000|127.0.0.1|6432|2024-05-01 12:00:00.000000+00|NULL|0|0|7|primary:100,replica:200|||T|",
		"D C|app|db|idle|127.0.0.1|40000|127.0.0.1|6432|2024-05-01 12:00:00.000000+00|2024-05-01 12:00:01.000000+00|0|0|8||||I|temp table",
		"D C|app|db|active|127.0.0.1|40000|127.0.0.1|6432|2024-05-01 12:00:00.000000+00|NULL|0|0|9||||I|")
	if !strings.HasPrefix(rows[3], "D C|app|db|waiting|") || !strings.Contains(rows[3], "|2|") {
		t.Errorf("waiting client %q, want state waiting for 2 s", rows[3])
	}
}

// SHOW SERVERS: a connection handed out is active, with its client's pid
// and application_name as link; close_needed once older than
// pool_recycle; request_time is when it was handed out (or given back).
func TestShowServersLinksAndRecycling(t *testing.T) {
	src := newFakeSource()
	src.cfg.Pool.PoolRecycle = time.Hour
	idle := src.conns[0]
	idle.Idle, idle.ClientPID, idle.ClientApp, idle.Created, idle.LastUsed = true, 0, "", time.Now(), src.conns[0].Created
	src.conns = append(src.conns, idle)
	rows := showRows(t, src, "SHOW SERVERS")
	wantRows(t, "SHOW SERVERS", rows[:1],
		"D S|app|db|active|127.0.0.1|5432|127.0.0.1|50000|2024-05-01 12:00:00.000000+00|2024-05-01 12:00:01.000000+00|1|7|100||psql|0|primary")
	if !strings.HasPrefix(rows[1], "D S|app|db|idle|") || !strings.HasSuffix(rows[1], "|2024-05-01 12:00:00.000000+00|0||100|||0|primary") {
		t.Errorf("idle connection %q", rows[1])
	}
}

// SHOW DATABASES: the pool settings of the configuration for each database
// on each server; max_connections is users × (pool_size + max_overflow).
func TestShowDatabasesCombinesSourceAndConfig(t *testing.T) {
	src := newFakeSource()
	src.paused = true
	src.dbs = append(src.dbs, DatabaseInfo{Name: "db", Host: "10.0.0.2", Port: 5433, Role: "replica", Disabled: true})
	wantRows(t, "SHOW DATABASES", showRows(t, src, "SHOW DATABASES"),
		"D db|127.0.0.1|5432|db||10|0|5|0|transaction|15|4|1|0|primary|5|30",
		"D db|10.0.0.2|5433|db||10|0|5|0|transaction|15|0|1|1|replica|5|30")
}

// SHOW NODES: NULL for what no health check has told yet (health,
// recovery, lag, replay position), recovery only for a healthy server;
// "in rotation" when nothing keeps a server out.
func TestShowNodesNullsWhatIsNotKnown(t *testing.T) {
	src := newFakeSource()
	checked := time.Date(2024, 5, 1, 12, 0, 5, 0, time.UTC)
	src.nodes = append(src.nodes,
		NodeInfo{Host: "10.0.0.2", Port: 5433, Role: "replica", Checked: checked, Healthy: true, InRecovery: true,
			LagBytes: 0, LagSeconds: 0.25, InRotation: true, Weight: 2, ReplayLSN: "0/3000060", SvActive: 1, SvIdle: 3},
		NodeInfo{Host: "10.0.0.3", Port: 5433, Role: "replica", Checked: checked, InRecovery: true, Error: "refused",
			LagBytes: -1, LagSeconds: -1, Rotation: "unreachable"})
	wantRows(t, "SHOW NODES", showRows(t, src, "SHOW NODES"),
		"D 127.0.0.1|5432|primary|NULL|NULL|NULL|NULL|f|0|0|0|NULL||in rotation|NULL",
		"D 10.0.0.2|5433|replica|t|t|0|0.25|t|2|1|3|2024-05-01 12:00:05.000000+00||in rotation|0/3000060",
		"D 10.0.0.3|5433|replica|f|NULL|NULL|NULL|f|0|0|0|2024-05-01 12:00:05.000000+00|refused|unreachable|NULL")
}

// SHOW STATS: totals as counted, averages per second of the period (at
// least one; whole numbers, rounded down) and per transaction or statement.
func TestShowStatsAverages(t *testing.T) {
	src := newFakeSource()
	src.stats = Stats{Since: time.Now().Add(-10 * time.Second), Databases: []DatabaseStats{
		{Name: "a", Xacts: 15, Queries: 25, XactTime: 1000, QueryTime: 4000, Wait: 600, Received: 55, Sent: 105},
		{Name: "b"},
	}}
	rows := showRows(t, src, "SHOW STATS")
	wantRows(t, "SHOW STATS", rows, "D a|15|25|55|105|1000|4000|600|1|2|5|10|66|160|24", "D b|0|0|0|0|0|0|0|0|0|0|0|0|0|0")
}

// SHOW QUERIES: times in milliseconds, the mean per call and the share of
// calls that ran on a replica, to three places.
func TestShowQueriesInMilliseconds(t *testing.T) {
	src := newFakeSource()
	src.queries = []QueryInfo{{Fingerprint: "f", Query: "SELECT $1", Calls: 3, Rows: 3, Slow: 1, Errors: 0, Replica: 2,
		Total: 9 * time.Millisecond, Wait: 1500 * time.Microsecond, Max: 5 * time.Millisecond, P95: 5 * time.Millisecond}}
	wantRows(t, "SHOW QUERIES", showRows(t, src, "SHOW QUERIES"), "D f|SELECT $1|3|9|3|5|5|1.5|3|1|0|0.667")
}

// SHOW CONFIG lists the configuration's settings, SHOW VERSION pgsplit's
// version, SHOW HELP every command.
func TestShowConfigVersionHelp(t *testing.T) {
	src := newFakeSource()
	if rows := showRows(t, src, "SHOW CONFIG"); len(rows) != len(src.cfg.Settings()) || len(rows) == 0 {
		t.Errorf("SHOW CONFIG: %d rows for %d settings", len(rows), len(src.cfg.Settings()))
	}
	if rows := showRows(t, src, "SHOW VERSION"); len(rows) != 1 || !strings.HasPrefix(rows[0], "D pgsplit ") {
		t.Errorf("SHOW VERSION: %q", rows)
	}
	if rows := showRows(t, src, "SHOW HELP"); len(rows) != 14 {
		t.Errorf("SHOW HELP: %d rows", len(rows))
	}
}
