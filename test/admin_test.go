package test

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgsplit/pgsplit/config"
)

const (
	adminUser     = "pgadmin"
	adminPassword = "admin-secret-pw"
)

// adminProxy is a routing proxy with an admin user and fast health checks.
func adminProxy(t *testing.T, mutate func(*config.Config)) *testProxy {
	return routingProxy(t, func(c *config.Config) {
		c.Admin.Users = []config.User{{Name: adminUser, Password: adminPassword}}
		c.Routing.HealthCheckInterval = 100 * time.Millisecond
		if mutate != nil {
			mutate(c)
		}
	})
}

func (p *testProxy) adminDSN() string {
	return fmt.Sprintf("host=%s port=%d user=%s password='%s' dbname=pgsplit sslmode=disable connect_timeout=10",
		p.host, p.port, adminUser, adminPassword)
}

// adminPsql runs psql against the admin console with -c cmd, unaligned
// with a header: the first line of stdout is the column names.
func adminPsql(t *testing.T, host string, port int, cmd string) psqlResult {
	t.Helper()
	conninfo := fmt.Sprintf("host=%s port=%d user=%s dbname=pgsplit connect_timeout=10", host, port, adminUser)
	return runCmd(t, []string{"PGPASSWORD=" + adminPassword}, psqlBinary(),
		"-X", "-A", "-F", "|", "-P", "footer=off", "-v", "ON_ERROR_STOP=1", "-d", conninfo, "-c", cmd)
}

// adminRows runs a SHOW through pgx and returns its rows as column → value.
func adminRows(t *testing.T, c *pgx.Conn, cmd string) []map[string]any {
	t.Helper()
	rows, err := c.Query(testCtx(t, 10*time.Second), cmd)
	if err != nil {
		t.Fatalf("%s: %v", cmd, err)
	}
	defer rows.Close()
	var out []map[string]any
	for rows.Next() {
		vals, err := rows.Values()
		if err != nil {
			t.Fatalf("%s: %v", cmd, err)
		}
		m := map[string]any{}
		for i, f := range rows.FieldDescriptions() {
			m[f.Name] = vals[i]
		}
		out = append(out, m)
	}
	if err := rows.Err(); err != nil {
		t.Fatalf("%s: %v", cmd, err)
	}
	return out
}

// adminRow returns the first row of a SHOW whose column col is val, nil if
// none is.
func adminRow(t *testing.T, c *pgx.Conn, cmd, col string, val any) map[string]any {
	t.Helper()
	for _, r := range adminRows(t, c, cmd) {
		if r[col] == val {
			return r
		}
	}
	return nil
}

// TestAdminConsole: every SHOW command answers from psql and from pgx
// (extended protocol with binary results, and simple protocol), with
// PgBouncer's column names and numbers that match a known workload.
func TestAdminConsole(t *testing.T) {
	p := adminProxy(t, nil)
	ctx := testCtx(t, 60*time.Second)
	app := connect(t, p.appDSN("application_name=admintest"))
	for i := 0; i < 20; i++ {
		var n int
		if err := app.QueryRow(ctx, "SELECT $1::int + 1", i).Scan(&n); err != nil || n != i+1 {
			t.Fatalf("read %d: %v %d", i, err, n)
		}
	}
	if _, err := app.Exec(ctx, "CREATE TEMP TABLE IF NOT EXISTS admin_t (x int)"); err != nil {
		t.Fatal(err)
	}
	if _, err := app.Exec(ctx, "INSERT INTO admin_t VALUES (1), (2), (3)"); err != nil {
		t.Fatal(err)
	}

	// Every SHOW from psql: exit 0 and the expected columns.
	wantCols := map[string][]string{
		"SHOW POOLS":     {"database", "user", "cl_active", "cl_waiting", "sv_active", "sv_idle", "sv_used", "sv_login", "maxwait", "maxwait_us", "pool_mode", "server", "role"},
		"SHOW STATS":     {"database", "total_xact_count", "total_query_count", "total_received", "total_sent", "total_xact_time", "total_query_time", "total_wait_time", "avg_query_time"},
		"SHOW SERVERS":   {"type", "user", "database", "state", "addr", "port", "local_addr", "connect_time", "request_time", "remote_pid", "role"},
		"SHOW CLIENTS":   {"type", "user", "database", "state", "addr", "port", "connect_time", "request_time", "application_name", "tx_status"},
		"SHOW DATABASES": {"name", "host", "port", "database", "pool_size", "reserve_pool", "pool_mode", "max_connections", "current_connections", "paused", "disabled"},
		"SHOW CONFIG":    {"key", "value", "default", "changeable"},
		"SHOW NODES":     {"host", "port", "role", "healthy", "lag_bytes", "lag_seconds", "in_rotation"},
		"SHOW QUERIES":   {"fingerprint", "query", "calls", "total_ms", "mean_ms", "p95_ms", "max_ms", "rows", "slow", "replica_share"},
		"SHOW HELP":      {"command", "description"},
		"SHOW VERSION":   {"version"},
	}
	for cmd, cols := range wantCols {
		res := adminPsql(t, p.host, p.port, cmd)
		if res.exitCode != 0 {
			t.Fatalf("psql %s: exit %d: %s", cmd, res.exitCode, res.stderr)
		}
		lines := strings.Split(strings.TrimSpace(res.stdout), "\n")
		header := "|" + lines[0] + "|"
		for _, c := range cols {
			if !strings.Contains(header, "|"+c+"|") {
				t.Errorf("psql %s: no column %s in %q", cmd, c, lines[0])
			}
		}
		if len(lines) < 2 {
			t.Errorf("psql %s: no rows:\n%s", cmd, res.stdout)
		}
	}

	// The same from pgx, in both protocols.
	for _, mode := range []pgx.QueryExecMode{pgx.QueryExecModeCacheStatement, pgx.QueryExecModeSimpleProtocol} {
		admin := connect(t, p.adminDSN(), func(cc *pgx.ConnConfig) { cc.DefaultQueryExecMode = mode })
		for cmd := range wantCols {
			if rows := adminRows(t, admin, cmd); len(rows) == 0 {
				t.Errorf("pgx (%v) %s: no rows", mode, cmd)
			}
		}

		pools := adminRows(t, admin, "SHOW POOLS")
		var primaryOpen int64
		for _, r := range pools {
			if r["database"] == appDatabase && r["user"] == appUser && r["role"] == "primary" {
				primaryOpen = r["sv_active"].(int64) + r["sv_idle"].(int64)
				if r["pool_mode"] != "transaction" {
					t.Errorf("pool_mode %v", r["pool_mode"])
				}
			}
		}
		if primaryOpen < 1 {
			t.Errorf("SHOW POOLS: no open primary connection for %s/%s: %v", appDatabase, appUser, pools)
		}

		appStats := adminRow(t, admin, "SHOW STATS", "database", appDatabase)
		if appStats == nil || appStats["total_query_count"].(int64) < 22 || appStats["total_received"].(int64) == 0 ||
			appStats["total_sent"].(int64) == 0 || appStats["total_xact_count"].(int64) < 22 {
			t.Errorf("SHOW STATS for %s: %v (want ≥ 22 statements and transactions, bytes both ways)", appDatabase, appStats)
		}

		var found bool
		for _, r := range adminRows(t, admin, "SHOW QUERIES") {
			if r["query"] == "SELECT $1::int + $2" {
				found = true
				if r["calls"].(int64) != 20 || r["replica_share"].(float64) != 1 || r["rows"].(int64) != 20 {
					t.Errorf("SHOW QUERIES row: %v (want 20 calls, 20 rows, all on replicas)", r)
				}
				if r["p95_ms"].(float64) > r["max_ms"].(float64) || r["mean_ms"].(float64) <= 0 {
					t.Errorf("SHOW QUERIES timings: %v", r)
				}
			}
		}
		if !found {
			t.Errorf("SHOW QUERIES: no row for SELECT $1::int + $2: %v", adminRows(t, admin, "SHOW QUERIES"))
		}

		client := adminRow(t, admin, "SHOW CLIENTS", "application_name", "admintest")
		if client == nil || client["user"] != appUser || client["database"] != appDatabase || client["type"] != "C" ||
			!strings.Contains(fmt.Sprint(client["pinned_by"]), "temp") {
			t.Errorf("SHOW CLIENTS: app client %v (want user, database, and pinned by its temp table)", client)
		}

		// The app client is pinned (temp table): its primary connection is
		// listed as active and linked to it, with the backend's pid.
		pid := upstreamPID(t, app)
		server := adminRow(t, admin, "SHOW SERVERS", "remote_pid", int64(pid))
		if server == nil || server["state"] != "active" || server["role"] != "primary" || server["link"] != client["ptr"] {
			t.Errorf("SHOW SERVERS: backend %d: %v (client ptr %v)", pid, server, client["ptr"])
		}

		cfgRows := map[string]map[string]any{}
		for _, r := range adminRows(t, admin, "SHOW CONFIG") {
			cfgRows[r["key"].(string)] = r
		}
		if v := cfgRows["auth.users"]["value"]; v != appUser+":****,"+auditorUser+":****" {
			t.Errorf("SHOW CONFIG auth.users = %v", v)
		}
		if v := cfgRows["admin.users"]["value"]; v != adminUser+":****" {
			t.Errorf("SHOW CONFIG admin.users = %v", v)
		}
	}

	// SHOW NODES: the primary and both replicas, checked, replicas lag
	// known and in rotation.
	admin := connect(t, p.adminDSN())
	waitFor(t, 10*time.Second, "health checks of every server", func() (bool, string) {
		nodes := adminRows(t, admin, "SHOW NODES")
		if len(nodes) != 3 {
			return false, fmt.Sprint(nodes)
		}
		for _, n := range nodes {
			if n["healthy"] != true {
				return false, fmt.Sprint(nodes)
			}
			if n["role"] == "replica" && (n["lag_bytes"] == nil || n["lag_seconds"] == nil || n["in_rotation"] != true || n["in_recovery"] != true) {
				return false, fmt.Sprint(nodes)
			}
		}
		return true, ""
	})

	// Errors: an unknown command is 42601 and the console goes on; a user
	// who is not an admin cannot log in to it.
	_, err := admin.Exec(ctx, "SHOW NOTHING")
	wantState(t, err, "42601", "unknown admin command")
	if rows := adminRows(t, admin, "SHOW VERSION"); len(rows) != 1 {
		t.Errorf("console after an error: %v", rows)
	}
	_, err = pgx.Connect(ctx, p.dsn(appUser, appPassword)+" dbname=pgsplit")
	wantState(t, err, "28000", "app user on the admin console")
}

// TestAdminResetStats: RESET STATS starts SHOW STATS and SHOW QUERIES from
// zero; the next statements count again.
func TestAdminResetStats(t *testing.T) {
	p := adminProxy(t, nil)
	ctx := testCtx(t, 30*time.Second)
	app := connect(t, p.appDSN())
	admin := connect(t, p.adminDSN())
	count := func() (int64, int) {
		n, _ := adminRow(t, admin, "SHOW STATS", "database", appDatabase)["total_query_count"].(int64)
		return n, len(adminRows(t, admin, "SHOW QUERIES"))
	}
	for i := 0; i < 5; i++ {
		mustSelectOne(t, app, "before reset")
	}
	if n, q := count(); n < 5 || q == 0 {
		t.Fatalf("before RESET STATS: %d statements, %d fingerprints", n, q)
	}
	if _, err := admin.Exec(ctx, "RESET STATS"); err != nil {
		t.Fatal(err)
	}
	if n, q := count(); n != 0 || q != 0 {
		t.Fatalf("after RESET STATS: %d statements, %d fingerprints, want 0 and 0", n, q)
	}
	for i := 0; i < 3; i++ {
		mustSelectOne(t, app, "after reset")
	}
	if n, q := count(); n != 3 || q != 1 {
		t.Fatalf("3 statements after RESET STATS: counted %d statements, %d fingerprints", n, q)
	}
}

// TestAdminPause: PAUSE waits for a running transaction to finish, then
// holds a new transaction until RESUME; without PAUSE the same statement
// runs at once. A held statement that waits over pool_timeout gets 53300
// and the client's session goes on.
func TestAdminPause(t *testing.T) {
	p := adminProxy(t, func(c *config.Config) { c.Pool.PoolTimeout = 2 * time.Second })
	ctx := testCtx(t, 60*time.Second)
	admin := connect(t, p.adminDSN())
	a := connect(t, p.appDSN())
	b := connect(t, p.appDSN())

	// Control: not paused, b's statement runs at once.
	start := time.Now()
	mustSelectOne(t, b, "not paused")
	if d := time.Since(start); d > time.Second {
		t.Fatalf("unpaused statement took %s", d)
	}

	tx, err := a.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, "SELECT 1"); err != nil {
		t.Fatal(err)
	}
	paused := goExec(t, admin, "PAUSE")
	select {
	case err := <-paused:
		t.Fatalf("PAUSE returned (%v) while a transaction was open", err)
	case <-time.After(500 * time.Millisecond):
	}
	// The running transaction goes on and finishes.
	if _, err := tx.Exec(ctx, "SELECT 2"); err != nil {
		t.Fatal(err)
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-paused:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("PAUSE did not return after the transaction committed")
	}

	// A new transaction is held.
	held := goExec(t, b, "SELECT 1")
	select {
	case err := <-held:
		t.Fatalf("statement ran while paused: %v", err)
	case <-time.After(700 * time.Millisecond):
	}
	var waiting bool
	for _, r := range adminRows(t, admin, "SHOW CLIENTS") {
		waiting = waiting || r["state"] == "waiting"
	}
	if !waiting {
		t.Error("SHOW CLIENTS shows no waiting client while paused")
	}
	if _, err := admin.Exec(ctx, "RESUME"); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-held:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("held statement did not run after RESUME")
	}
	_, err = admin.Exec(ctx, "RESUME")
	wantState(t, err, "55000", "RESUME when not paused")

	// Held past pool_timeout: 53300, and the session goes on.
	if _, err := admin.Exec(ctx, "PAUSE"); err != nil {
		t.Fatal(err)
	}
	start = time.Now()
	_, err = b.Exec(ctx, "SELECT 1")
	wantState(t, err, "53300", "held past pool_timeout")
	if d := time.Since(start); d < 2*time.Second || d > 4*time.Second {
		t.Errorf("held for %s, want about pool_timeout (2s)", d)
	}
	if _, err := admin.Exec(ctx, "RESUME"); err != nil {
		t.Fatal(err)
	}
	mustSelectOne(t, b, "after the pause")
}

// TestAdminReloadShutdown: RELOAD re-reads the configuration file of a
// running pgsplit (SHOW CONFIG shows the new value) and refuses a bad one;
// SHUTDOWN stops the process with exit status 0.
func TestAdminReloadShutdown(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "config.yaml")
	write := func(poolSize string) {
		yaml := fmt.Sprintf(`listen: "127.0.0.1:0"
servers:
  - { host: %s, port: %d, role: primary }
auth:
  method: scram-sha-256
  users:
    - { name: %s, password: %s }
admin:
  users:
    - { name: %s, password: %s }
pool:
  pool_size: %s
  max_overflow: 5
`, cluster.Primary.Host, cluster.Primary.Port, appUser, appPassword, adminUser, adminPassword, poolSize)
		if err := os.WriteFile(path, []byte(yaml), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("4")
	proc := startProcessIn(t, dir, []string{"serve", "--config", path})
	host, _, _ := strings.Cut(proc.addr, ":")
	portN := portOf(t, proc.addr)
	setting := func(key string) string {
		res := adminPsql(t, host, portN, "SHOW CONFIG")
		for _, line := range strings.Split(res.stdout, "\n") {
			if f := strings.Split(line, "|"); f[0] == key {
				return f[1]
			}
		}
		t.Fatalf("no %s in SHOW CONFIG:\n%s%s", key, res.stdout, res.stderr)
		return ""
	}
	if v := setting("pool.pool_size"); v != "4" {
		t.Fatalf("pool.pool_size %s, want 4", v)
	}
	write("6")
	if res := adminPsql(t, host, portN, "RELOAD"); res.exitCode != 0 {
		t.Fatalf("RELOAD: %d %s", res.exitCode, res.stderr)
	}
	if v := setting("pool.pool_size"); v != "6" {
		t.Fatalf("after RELOAD pool.pool_size %s, want 6", v)
	}
	write("zero")
	res := adminPsql(t, host, portN, "RELOAD")
	if res.exitCode == 0 || !strings.Contains(res.stderr, "pool.pool_size") {
		t.Fatalf("RELOAD of a bad file: exit %d, %s (want an error naming pool.pool_size)", res.exitCode, res.stderr)
	}
	if v := setting("pool.pool_size"); v != "6" {
		t.Fatalf("after a refused RELOAD pool.pool_size %s, want 6", v)
	}
	if res := adminPsql(t, host, portN, "SHUTDOWN"); res.exitCode != 0 {
		t.Fatalf("SHUTDOWN: %d %s", res.exitCode, res.stderr)
	}
	if code := proc.waitExit(t, 15*time.Second); code != 0 {
		t.Fatalf("exit status %d after SHUTDOWN", code)
	}
}
