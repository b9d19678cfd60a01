package test

// Helpers of the transaction-pooling tests (txpool_*_test.go): a proxy with
// one server connection, statements in the simple protocol, and the check that a
// refused SET leaves no other client's setting behind.

import (
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/pgsplit/pgsplit/config"
)

func oneConnProxy(t *testing.T) *testProxy {
	return startProxy(t, func(c *config.Config) { c.Pool.PoolSize, c.Pool.MaxOverflow = 1, 0 })
}

func simple(t *testing.T, c *pgx.Conn, sql string) string {
	t.Helper()
	ctx := testCtx(t, 10*time.Second)
	res, err := c.PgConn().Exec(ctx, sql).ReadAll()
	if err != nil {
		return "ERR " + err.Error()
	}
	var out []string
	for _, r := range res {
		for _, row := range r.Rows {
			out = append(out, string(row[0]))
		}
	}
	return strings.Join(out, ",")
}

// mustSimple is simple for a statement that must succeed (a test's set-up:
// if it failed, the check after it would pass for nothing).
func mustSimple(t *testing.T, c *pgx.Conn, sql string) string {
	t.Helper()
	out := simple(t, c, sql)
	if strings.HasPrefix(out, "ERR ") {
		t.Fatalf("%s: %s", sql, out)
	}
	return out
}

// failedSetLeak: client A runs prelude (if any) and then a SET the server
// refuses; client B sets lock_timeout on the one shared connection; A must
// still see the default lock_timeout.
func failedSetLeak(t *testing.T, prelude, badSet string) {
	t.Helper()
	p := oneConnProxy(t)
	a := connect(t, p.appDSN())
	if prelude != "" {
		mustSimple(t, a, prelude)
	}
	if got := simple(t, a, badSet); !strings.HasPrefix(got, "ERR ") {
		t.Fatalf("%s did not fail: %s", badSet, got)
	}
	b := connect(t, p.appDSN())
	mustSimple(t, b, "SET lock_timeout = '7s'")
	if got := simple(t, a, "SHOW lock_timeout"); got != "0" {
		t.Errorf("LEAK: A sees B's lock_timeout %s", got)
	}
}
