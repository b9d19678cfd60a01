package test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgsplit/pgsplit/config"
	"github.com/pgsplit/pgsplit/internal/pgcluster"
)

// scrape fetches path from p's metrics endpoint.
func scrape(t *testing.T, p *testProxy, path string) (int, string) {
	t.Helper()
	addr := p.srv.MetricsAddr()
	if addr == nil {
		t.Fatal("metrics endpoint not started")
	}
	resp, err := http.Get("http://" + addr.String() + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// metricSum adds the samples of a metric whose labels contain every part
// of match.
func metricSum(text, name string, match ...string) float64 {
	var sum float64
	for _, line := range strings.Split(text, "\n") {
		if !strings.HasPrefix(line, name+" ") && !strings.HasPrefix(line, name+"{") {
			continue
		}
		ok := true
		for _, m := range match {
			ok = ok && strings.Contains(line, m)
		}
		if !ok {
			continue
		}
		f := strings.Fields(line)
		v, err := strconv.ParseFloat(f[len(f)-1], 64)
		if err == nil {
			sum += v
		}
	}
	return sum
}

// TestMetrics scrapes /metrics before and after a known workload and
// checks the deltas; /healthz and /readyz answer.
func TestMetrics(t *testing.T) {
	p := startProxy(t, func(c *config.Config) { c.Metrics.Listen = "127.0.0.1:0" })
	ctx := testCtx(t, 30*time.Second)
	c := connect(t, p.appDSN(), func(cc *pgx.ConnConfig) { cc.DefaultQueryExecMode = pgx.QueryExecModeSimpleProtocol })
	mustSelectOne(t, c, "warm-up") // pools exist
	_, before := scrape(t, p, "/metrics")
	for range 50 {
		mustSelectOne(t, c, "workload")
	}
	if _, err := c.Exec(ctx, "SELECT pg_sleep(1.1)"); err != nil {
		t.Fatal(err)
	}
	_, err := c.Exec(ctx, "SELECT 1/0")
	wantState(t, err, "22012", "division by zero")
	time.Sleep(100 * time.Millisecond)
	code, after := scrape(t, p, "/metrics")
	if code != 200 {
		t.Fatalf("/metrics: %d", code)
	}
	delta := func(name string, match ...string) float64 {
		return metricSum(after, name, match...) - metricSum(before, name, match...)
	}
	if d := delta("pgsplit_queries_total", `role="primary"`, `kind="Select"`); d != 52 {
		t.Errorf("pgsplit_queries_total{kind=Select} grew by %v, want 52 (50 + pg_sleep + 1/0)\n%s", d, after)
	}
	if d := delta("pgsplit_query_duration_seconds_count", `role="primary"`); d != 52 {
		t.Errorf("duration histogram count grew by %v, want 52", d)
	}
	if d := delta("pgsplit_slow_queries_total"); d != 1 {
		t.Errorf("slow queries grew by %v, want 1", d)
	}
	if d := delta("pgsplit_query_errors_total", `class="22"`); d != 1 {
		t.Errorf("errors of class 22 grew by %v, want 1", d)
	}
	for _, name := range []string{"pgsplit_pool_connections_idle", "pgsplit_pool_connections_max", "pgsplit_client_connections", "pgsplit_pool_wait_seconds_count"} {
		if !strings.Contains(after, name) {
			t.Errorf("%s missing", name)
		}
	}
	if metricSum(after, "pgsplit_client_connections") < 1 {
		t.Errorf("pgsplit_client_connections < 1")
	}
	if code, body := scrape(t, p, "/healthz"); code != 200 {
		t.Errorf("/healthz: %d %s", code, body)
	}
	if code, body := scrape(t, p, "/readyz"); code != 200 {
		t.Errorf("/readyz: %d %s", code, body)
	}

	// With the primary unreachable, /readyz says so.
	port, err := pgcluster.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	down := startProxy(t, func(c *config.Config) {
		c.Metrics.Listen = "127.0.0.1:0"
		c.Servers = []config.Server{{Host: "127.0.0.1", Port: port, Role: config.RolePrimary}}
	})
	if code, body := scrape(t, down, "/readyz"); code != 503 || !strings.Contains(body, "unreachable") {
		t.Errorf("/readyz with the primary down: %d %s", code, body)
	}
	if code, _ := scrape(t, down, "/healthz"); code != 200 {
		t.Errorf("/healthz with the primary down: %d", code)
	}
}

// TestHealthAndLag: the health checks measure replica lag (non-zero while a
// replica's WAL replay is paused and writes go on, back to zero once it
// replays), report a server that cannot be reached as down and out of
// rotation, and the client traffic counters grow with a known workload.
func TestHealthAndLag(t *testing.T) {
	deadPort, err := pgcluster.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	p := routingProxy(t, func(c *config.Config) {
		c.Metrics.Listen = "127.0.0.1:0"
		c.Routing.HealthCheckInterval = 100 * time.Millisecond
		c.Admin.Users = []config.User{{Name: adminUser, Password: adminPassword}}
		c.Servers = append(c.Servers, config.Server{Host: "127.0.0.1", Port: deadPort, Role: config.RoleReplica, Weight: 1})
	})
	ctx := testCtx(t, 60*time.Second)
	replica := cluster.Replicas[0]
	replicaAddr := fmt.Sprintf("%s:%d", replica.Host, replica.Port)
	deadAddr := fmt.Sprintf("127.0.0.1:%d", deadPort)
	lagOf := func(body string) (float64, float64) {
		return metricSum(body, "pgsplit_replica_lag_bytes", `server="`+replicaAddr+`"`),
			metricSum(body, "pgsplit_replica_lag_seconds", `server="`+replicaAddr+`"`)
	}
	waitFor(t, 10*time.Second, "every server checked, the dead one down", func() (bool, string) {
		_, body := scrape(t, p, "/metrics")
		ok := metricSum(body, "pgsplit_server_up", `server="`+deadAddr+`"`) == 0 &&
			strings.Contains(body, `pgsplit_server_up{role="replica",server="`+deadAddr+`"} 0`) &&
			metricSum(body, "pgsplit_server_up", `role="replica"`) == 2 && metricSum(body, "pgsplit_server_up", `role="primary"`) == 1 &&
			strings.Contains(body, `pgsplit_replica_lag_bytes{server="`+replicaAddr+`"}`)
		return ok, body
	})
	admin := connect(t, p.adminDSN())
	if n := adminRow(t, admin, "SHOW NODES", "port", int64(deadPort)); n == nil || n["healthy"] != false || n["in_rotation"] != false || n["error"] == "" {
		t.Errorf("unreachable replica in SHOW NODES: %v", n)
	}

	// Pause replay on one replica and write on the primary: its lag grows.
	rs := connect(t, cluster.SuperuserDSN(replica, appDatabase))
	if _, err := rs.Exec(ctx, "SELECT pg_wal_replay_pause()"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _, _ = rs.Exec(context.Background(), "SELECT pg_wal_replay_resume()") })
	su := superConn(t)
	if _, err := su.Exec(ctx, "CREATE TABLE IF NOT EXISTS lag_probe (x int); INSERT INTO lag_probe SELECT generate_series(1, 1000)"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _, _ = su.Exec(context.Background(), "DROP TABLE IF EXISTS lag_probe") })
	waitFor(t, 10*time.Second, "lag of the paused replica", func() (bool, string) {
		_, body := scrape(t, p, "/metrics")
		b, s := lagOf(body)
		return b > 10000 && s > 0, fmt.Sprintf("lag %v bytes %v s", b, s)
	})
	lagged := adminRow(t, admin, "SHOW NODES", "port", int64(replica.Port))
	if b, _ := lagged["lag_bytes"].(int64); b <= 10000 {
		t.Errorf("SHOW NODES of the paused replica: %v", lagged)
	}
	if _, err := rs.Exec(ctx, "SELECT pg_wal_replay_resume()"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "lag back to zero", func() (bool, string) {
		_, body := scrape(t, p, "/metrics")
		b, s := lagOf(body)
		// metricSum reads an absent metric as 0: the zeros must be there.
		present := strings.Contains(body, `pgsplit_replica_lag_bytes{server="`+replicaAddr+`"} 0`) &&
			strings.Contains(body, `pgsplit_replica_lag_seconds{server="`+replicaAddr+`"} 0`)
		return present && b == 0 && s == 0, fmt.Sprintf("lag %v bytes %v s", b, s)
	})

	// Traffic: 100 statements of a known size each way.
	c := connect(t, p.appDSN(), func(cc *pgx.ConnConfig) { cc.DefaultQueryExecMode = pgx.QueryExecModeSimpleProtocol })
	_, before := scrape(t, p, "/metrics")
	sql := "SELECT repeat('x', 1000)"
	for range 100 {
		if _, err := c.Exec(ctx, sql); err != nil {
			t.Fatal(err)
		}
	}
	_, after := scrape(t, p, "/metrics")
	in := metricSum(after, "pgsplit_client_bytes_received_total") - metricSum(before, "pgsplit_client_bytes_received_total")
	out := metricSum(after, "pgsplit_client_bytes_sent_total") - metricSum(before, "pgsplit_client_bytes_sent_total")
	// Each Query is 5 + len(sql) + 1 bytes; each answer carries 1000 x's.
	if in < float64(100*(len(sql)+6)) || in > float64(100*(len(sql)+6)+2000) || out < 100*1000 || out > 100*1200 {
		t.Errorf("traffic: %v bytes in (want about %d), %v bytes out (want about 100,000–120,000)", in, 100*(len(sql)+6), out)
	}
}
