package test

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgsplit/pgsplit/config"
)

// TestQueryLogSlow: with the defaults (log.queries slow, threshold 1 s) a
// 1.2 s statement is logged once, at WARN, with every field of the record
// and its literals replaced by $n; a fast one is not logged.
func TestQueryLogSlow(t *testing.T) {
	p := startProxy(t, nil)
	ctx := testCtx(t, 30*time.Second)
	c := connect(t, p.appDSN("application_name=slowtest"), func(cc *pgx.ConnConfig) {
		cc.DefaultQueryExecMode = pgx.QueryExecModeSimpleProtocol
	})
	mark := p.logs.mark()
	if _, err := c.Exec(ctx, "SELECT 'fast-literal-abc'"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Exec(ctx, "SELECT pg_sleep(1.2), 'secret-literal-xyz'"); err != nil {
		t.Fatal(err)
	}
	e := p.logs.waitEntry(t, mark, 10*time.Second, "slow query record", func(e logEntry) bool { return e.str("msg") == "query" })
	want := map[string]string{
		"level": "warn", "slow": "true", "role": "primary", "user": appUser, "database": appDatabase,
		"application_name": "slowtest", "rows": "1", "sqlstate": "", "in_transaction": "false", "protocol": "simple",
		"query": "SELECT pg_sleep($1), $2", "server": cluster.Primary.Host + ":" + itoa(cluster.Primary.Port),
	}
	for k, v := range want {
		if got := e.str(k); got != v {
			t.Errorf("%s = %q, want %q", k, got, v)
		}
	}
	if d, _ := e["duration_ms"].(float64); d < 1200 || d > 5000 {
		t.Errorf("duration_ms %v, want about 1200", e["duration_ms"])
	}
	for _, k := range []string{"start", "wait_ms", "reason", "client", "fingerprint"} {
		if _, ok := e[k]; !ok {
			t.Errorf("field %s missing: %v", k, e)
		}
	}
	time.Sleep(200 * time.Millisecond)
	n := 0
	for _, e := range p.logs.entries(mark) {
		if e.str("msg") == "query" {
			n++
		}
	}
	if log := p.logs.since(mark); n != 1 || strings.Contains(log, "secret-literal-xyz") || strings.Contains(log, "fast-literal-abc") {
		t.Fatalf("%d query records (want 1), or a literal reached the log:\n%s", n, log)
	}
}

// TestQueryLogAll: with log.queries all, 1,000 fast statements (extended
// protocol, one fingerprint) are all logged and counted, an error carries
// its SQLSTATE (pgx sends a statement without arguments as a simple
// Query), and log.file receives the records instead of stderr.
func TestQueryLogAll(t *testing.T) {
	file := filepath.Join(t.TempDir(), "query.log")
	p := startProxy(t, func(c *config.Config) {
		c.Log.Queries = config.QueriesAll
		c.Log.File = file
	})
	ctx := testCtx(t, 60*time.Second)
	c := connect(t, p.appDSN())
	before := p.srv.QueryLogStats()
	for i := range 1000 {
		var n int
		if err := c.QueryRow(ctx, "SELECT $1::int + 1", i).Scan(&n); err != nil || n != i+1 {
			t.Fatalf("statement %d: %d %v", i, n, err)
		}
	}
	_, err := c.Exec(ctx, "SELECT 1/0")
	wantState(t, err, "22012", "division by zero")
	var records []logEntry
	waitFor(t, 10*time.Second, "1,001 records in log.file", func() (bool, string) {
		b, err := os.ReadFile(file)
		if err != nil {
			return false, err.Error()
		}
		records = records[:0]
		lb := &logBuffer{}
		_, _ = lb.Write(b)
		for _, e := range lb.entries(0) {
			if e.str("msg") == "query" {
				records = append(records, e)
			}
		}
		return len(records) >= 1001, itoa(len(records))
	})
	fps := map[string]int{}
	var divErr logEntry
	for _, e := range records {
		if e.str("query") == "SELECT $1::int + $2" || e.str("query") == "SELECT $1::int + 1" {
			fps[e.str("fingerprint")]++
		}
		if e.str("sqlstate") == "22012" {
			divErr = e
		}
	}
	if len(fps) != 1 {
		t.Fatalf("want one fingerprint for the 1,000 statements, got %v", fps)
	}
	for _, n := range fps {
		if n != 1000 {
			t.Fatalf("%d records of the repeated statement, want 1000", n)
		}
	}
	if divErr == nil || divErr.str("protocol") != "simple" || divErr.str("level") != "info" {
		t.Fatalf("error record: %v", divErr)
	}
	// pgsplit slowlog reads the file as written.
	r := runCmd(t, nil, pgsplitBinary(t), "slowlog", "--format", "json", file)
	if r.exitCode != 0 || !strings.Contains(r.stdout, `"count": 1000`) {
		t.Fatalf("pgsplit slowlog on the query log: exit %d\n%s%s", r.exitCode, r.stdout, r.stderr)
	}
	st := p.srv.QueryLogStats()
	if st.Logged-before.Logged < 1001 || st.Dropped != before.Dropped {
		t.Fatalf("stats %+v (before %+v)", st, before)
	}
	for _, e := range p.logs.entries(0) {
		if e.str("msg") == "query" {
			t.Fatalf("a query record went to the process log although log.file is set: %v", e)
		}
	}
}

func itoa(n int) string { return strconv.Itoa(n) }
