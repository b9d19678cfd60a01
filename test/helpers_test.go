package test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgconn/ctxwatch"
)

// testCtx returns a context that ends after d or when the test ends.
func testCtx(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// connectConfig parses dsn and applies the tweaks.
func connectConfig(t *testing.T, dsn string, tweaks ...func(*pgx.ConnConfig)) *pgx.ConnConfig {
	t.Helper()
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		t.Fatalf("parse %q: %v", dsn, err)
	}
	for _, tw := range tweaks {
		tw(cfg)
	}
	return cfg
}

// connect opens a pgx connection, closed when the test ends.
func connect(t *testing.T, dsn string, tweaks ...func(*pgx.ConnConfig)) *pgx.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	c, err := pgx.ConnectConfig(ctx, connectConfig(t, dsn, tweaks...))
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	t.Cleanup(func() { closeConn(c) })
	return c
}

func closeConn(c *pgx.Conn) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = c.Close(ctx)
}

// superConn is a superuser connection straight to the primary (database
// app), for checking what pgsplit did upstream.
func superConn(t *testing.T) *pgx.Conn {
	t.Helper()
	return connect(t, cluster.SuperuserDSN(cluster.Primary, appDatabase))
}

// withCancelRequests makes ctx cancellation send a CancelRequest and keep
// the connection, instead of pgx's default of breaking it with a deadline.
func withCancelRequests(cfg *pgx.ConnConfig) {
	cfg.BuildContextWatcherHandler = func(pc *pgconn.PgConn) ctxwatch.Handler {
		return &pgconn.CancelRequestContextWatcherHandler{Conn: pc, DeadlineDelay: 5 * time.Second}
	}
}

// goExec runs a statement on c on another goroutine and returns its
// result. Before the test's earlier cleanups close c, the goroutine is
// ended (by closing c's socket, if it still runs) and waited for.
func goExec(t *testing.T, c *pgx.Conn, sql string, args ...any) <-chan error {
	result := make(chan error, 1)
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		_, err := c.Exec(context.Background(), sql, args...)
		result <- err
	}()
	t.Cleanup(func() {
		select {
		case <-finished:
			return
		case <-time.After(100 * time.Millisecond):
		}
		_ = c.PgConn().Conn().Close()
		select {
		case <-finished:
		case <-time.After(10 * time.Second):
			t.Errorf("background statement %q did not end", sql)
		}
	})
	return result
}

// sqlState returns the SQLSTATE of err, or "" when err carries no server
// error.
func sqlState(err error) string {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return pe.Code
	}
	return ""
}

// wantState fails the test unless err is a *pgconn.PgError with code.
func wantState(t *testing.T, err error, code, what string) *pgconn.PgError {
	t.Helper()
	var pe *pgconn.PgError
	if !errors.As(err, &pe) {
		t.Fatalf("%s: want a server error with SQLSTATE %s, got %T: %v", what, code, err, err)
	}
	if pe.Code != code {
		t.Fatalf("%s: want SQLSTATE %s, got %s: %s", what, code, pe.Code, pe.Message)
	}
	return pe
}

// waitFor polls cond every 25 ms until it reports true, failing the test
// with cond's last description after timeout.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ok, desc := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not reached within %s: %s", what, timeout, desc)
		}
		time.Sleep(25 * time.Millisecond)
	}
}

// backendState returns the pg_stat_activity state of backend pid on the
// primary, or "" when the backend is gone.
func backendState(t *testing.T, su *pgx.Conn, pid uint32) string {
	t.Helper()
	var state string
	err := su.QueryRow(context.Background(), "SELECT coalesce(state, '') FROM pg_stat_activity WHERE pid = $1", int64(pid)).Scan(&state)
	if errors.Is(err, pgx.ErrNoRows) {
		return ""
	}
	if err != nil {
		t.Fatalf("pg_stat_activity: %v", err)
	}
	if state == "" {
		state = "(null)"
	}
	return state
}

// isSleeping reports whether backend pid on the primary is inside
// pg_sleep (state active is not enough: a backend parsing the statement is
// active too).
func isSleeping(su *pgx.Conn, pid uint32) bool {
	var n int
	err := su.QueryRow(context.Background(),
		"SELECT count(*) FROM pg_stat_activity WHERE pid = $1 AND state = 'active' AND wait_event = 'PgSleep'", int64(pid)).Scan(&n)
	return err == nil && n == 1
}

// waitSleeping waits until backend pid on the primary runs pg_sleep.
func waitSleeping(t *testing.T, su *pgx.Conn, pid uint32) {
	t.Helper()
	waitFor(t, 5*time.Second, fmt.Sprintf("backend %d inside pg_sleep", pid), func() (bool, string) {
		return isSleeping(su, pid), "state " + backendState(t, su, pid)
	})
}

// appBackends counts the client backends of user app on the primary.
func appBackends(t *testing.T, su *pgx.Conn) int {
	t.Helper()
	var n int
	err := su.QueryRow(context.Background(),
		"SELECT count(*) FROM pg_stat_activity WHERE usename = 'app' AND backend_type = 'client backend'").Scan(&n)
	if err != nil {
		t.Fatalf("pg_stat_activity: %v", err)
	}
	return n
}

// upstreamPID is the PostgreSQL backend serving c through pgsplit.
func upstreamPID(t *testing.T, c *pgx.Conn) uint32 {
	t.Helper()
	var pid int64
	if err := c.QueryRow(context.Background(), "SELECT pg_backend_pid()").Scan(&pid); err != nil {
		t.Fatalf("pg_backend_pid(): %v", err)
	}
	return uint32(pid)
}

// psqlResult is what one psql run printed.
type psqlResult struct {
	stdout, stderr string
	exitCode       int
}

// runPsql runs the psql binary against the proxy as user (password in
// PGPASSWORD; sslmode is libpq's default, prefer, so psql starts with an
// SSLRequest). env adds environment variables; args follow the fixed
// "-X -A -t -q -v ON_ERROR_STOP=1 -d conninfo".
func runPsql(t *testing.T, p *testProxy, user, password, stdin string, env []string, args ...string) psqlResult {
	t.Helper()
	conninfo := fmt.Sprintf("host=%s port=%d user=%s dbname=%s connect_timeout=10", p.host, p.port, user, appDatabase)
	return runCmdInput(t, append([]string{"PGPASSWORD=" + password}, env...), stdin, psqlBinary(),
		append([]string{"-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1", "-d", conninfo}, args...)...)
}

// psqlBinary is psql from PATH, else from the cluster's binaries.
func psqlBinary() string {
	if bin, err := exec.LookPath("psql"); err == nil {
		return bin
	}
	return filepath.Join(cluster.BinDir, "psql")
}

// cleanEnv is this process's environment without PG* and PGSPLIT_*
// variables, which would change what psql or pgsplit do.
func cleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "PG") {
			continue
		}
		env = append(env, kv)
	}
	return env
}

// mustSelectOne fails the test unless "SELECT 1" works on c.
func mustSelectOne(t *testing.T, c *pgx.Conn, what string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var one int
	if err := c.QueryRow(ctx, "SELECT 1").Scan(&one); err != nil || one != 1 {
		t.Fatalf("%s: SELECT 1 = %d, %v", what, one, err)
	}
}

// checkProxyWorks connects afresh through p and runs a query.
func checkProxyWorks(t *testing.T, p *testProxy, what string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := pgx.Connect(ctx, p.appDSN())
	if err != nil {
		t.Fatalf("%s: a normal client cannot connect: %v", what, err)
	}
	defer closeConn(c)
	mustSelectOne(t, c, what)
}
