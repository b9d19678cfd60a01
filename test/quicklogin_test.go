package test

import (
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgsplit/pgsplit/config"
)

// TestLoginDoesNotWaitBehindABusyPool: under transaction pooling, once one
// login of (database, user) was checked on a server, the next logins are
// answered from the server parameters it reported (the server's
// server_version, the client's own application_name) without taking a
// server connection: with the pool's only connection busy in a
// transaction a login takes no time, and its first statement waits for
// the connection as any statement does. A login whose startup parameters
// need a server to check them (here options) still takes a connection:
// behind the same busy pool it waits pool_timeout and is refused 53300.
func TestLoginDoesNotWaitBehindABusyPool(t *testing.T) {
	const db = "quick_login"
	createDatabase(t, db)
	dropDatabaseAtEnd(t, db)
	p := startProxy(t, func(c *config.Config) {
		c.Pool.PoolSize, c.Pool.MaxOverflow, c.Pool.PoolTimeout = 1, 0, 2*time.Second
	})
	ctx := testCtx(t, 2*time.Minute)
	first := connect(t, p.dbDSN(db)) // checked on the primary
	var version string
	if err := first.QueryRow(ctx, "SHOW server_version").Scan(&version); err != nil {
		t.Fatal(err)
	}

	c := connect(t, p.dbDSN(db)+" application_name=mine")
	if got := c.PgConn().ParameterStatus("server_version"); got != version {
		t.Errorf("server_version reported %q, want the server's %q", got, version)
	}
	if got := c.PgConn().ParameterStatus("application_name"); got != "mine" {
		t.Errorf("application_name reported %q, want the client's own %q", got, "mine")
	}
	var app string
	if err := c.QueryRow(ctx, "SELECT current_setting('application_name')").Scan(&app); err != nil || app != "mine" {
		t.Errorf("application_name on the server %q (%v), want %q", app, err, "mine")
	}

	tx, err := first.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, "SELECT 1"); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	late := connect(t, p.dbDSN(db))
	if waited := time.Since(start); waited > time.Second {
		t.Errorf("login behind a busy pool took %s, want well under pool_timeout (2s)", waited)
	}

	start = time.Now()
	_, err = pgx.Connect(ctx, p.dbDSN(db)+" options='-c geqo=on'")
	waited := time.Since(start)
	if err == nil || !strings.Contains(err.Error(), "53300") || waited < 1500*time.Millisecond {
		t.Errorf("a login with options behind the busy pool: %v after %s, want FATAL 53300 after pool_timeout: the check above would prove nothing", err, waited)
	}

	committed := make(chan error, 1)
	go func() { time.Sleep(200 * time.Millisecond); committed <- tx.Commit(ctx) }()
	mustSelectOne(t, late, "first statement of a login answered without a server")
	if err := <-committed; err != nil { // before the cleanups close first
		t.Fatal(err)
	}
}
