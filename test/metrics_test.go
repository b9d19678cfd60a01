package test

import (
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
