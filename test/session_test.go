package test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgproto3"
	"go.uber.org/goleak"

	"github.com/pgsplit/pgsplit/config"
)

// TestClientGone ends clients abruptly (the socket closed under pgx, or a
// Terminate) in each state a session can be in. Within 3 s the upstream
// backend that served the client must be gone or idle (reset and back in
// the pool): never still running the client's statement, never idle in a
// transaction, never stuck in COPY. Then the kill is repeated 20 times and
// the number of app backends on the primary must not grow.
func TestClientGone(t *testing.T) {
	p := startProxy(t, nil)
	su := superConn(t)
	ctx := testCtx(t, 90*time.Second)

	type client struct {
		conn *pgx.Conn
		fe   *pgproto3.Frontend // raw access after hijacking (nil otherwise)
	}
	// leaveAbruptly closes the client's socket without a Terminate.
	leaveAbruptly := func(c *client) { _ = c.conn.PgConn().Conn().Close() }
	cases := []struct {
		name string
		// prepare puts the session into the state under test; running
		// says it starts a pg_sleep, which the test waits for upstream.
		prepare func(t *testing.T, c *client)
		running bool
		hijack  bool // prepare speaks the protocol itself (c.fe)
		leave   func(c *client)
		// reusable: the upstream backend may stay, idle and reset, in the
		// pool; otherwise it must be gone.
		reusable bool
	}{
		{name: "running simple query, socket closed", running: true, leave: leaveAbruptly,
			prepare: func(t *testing.T, c *client) { goExec(t, c.conn, "SELECT pg_sleep(30)") }},
		{name: "running extended query, socket closed", running: true, leave: leaveAbruptly,
			prepare: func(t *testing.T, c *client) { goExec(t, c.conn, "SELECT pg_sleep($1)", 30) }},
		{name: "extended protocol without Sync, socket closed", running: true, hijack: true, leave: leaveAbruptly,
			prepare: func(t *testing.T, c *client) {
				c.fe.SendParse(&pgproto3.Parse{Query: "SELECT pg_sleep(30)"})
				c.fe.SendBind(&pgproto3.Bind{})
				c.fe.SendExecute(&pgproto3.Execute{})
				c.fe.Send(&pgproto3.Flush{})
				if err := c.fe.Flush(); err != nil {
					t.Fatal(err)
				}
			}},
		{name: "inside COPY FROM STDIN, socket closed", hijack: true, leave: leaveAbruptly,
			prepare: func(t *testing.T, c *client) {
				c.fe.Send(&pgproto3.Query{String: "COPY kv FROM STDIN"})
				c.fe.Send(&pgproto3.CopyData{Data: []byte("copy-gone\t1\n")})
				if err := c.fe.Flush(); err != nil {
					t.Fatal(err)
				}
				waitFor(t, 3*time.Second, "CopyInResponse", func() (bool, string) {
					msg, err := c.fe.Receive()
					if err != nil {
						return true, err.Error()
					}
					_, ok := msg.(*pgproto3.CopyInResponse)
					return ok, fmt.Sprintf("%T", msg)
				})
			}},
		{name: "receiving a large result, socket closed", hijack: true, leave: leaveAbruptly,
			prepare: func(t *testing.T, c *client) {
				c.fe.Send(&pgproto3.Query{String: "SELECT repeat('x', 1000) FROM generate_series(1, 1000000)"})
				if err := c.fe.Flush(); err != nil {
					t.Fatal(err)
				}
				waitFor(t, 5*time.Second, "first rows", func() (bool, string) {
					msg, err := c.fe.Receive()
					if err != nil {
						return true, err.Error()
					}
					_, ok := msg.(*pgproto3.DataRow)
					return ok, fmt.Sprintf("%T", msg)
				})
			}},
		// A client that leaves idle inside a transaction owes nothing: its
		// connection is rolled back, reset and reused (the rows below must
		// not be committed, which the check after the loop asserts).
		{name: "idle in transaction, socket closed", reusable: true, leave: leaveAbruptly,
			prepare: func(t *testing.T, c *client) {
				if _, err := c.conn.Exec(ctx, "BEGIN; INSERT INTO kv VALUES ('gone-in-tx', 1)"); err != nil {
					t.Fatal(err)
				}
			}},
		{name: "idle in transaction, Terminate", reusable: true, leave: func(c *client) { closeConn(c.conn) },
			prepare: func(t *testing.T, c *client) {
				if _, err := c.conn.Exec(ctx, "BEGIN; INSERT INTO kv VALUES ('gone-in-tx', 1)"); err != nil {
					t.Fatal(err)
				}
			}},
		{name: "idle in failed transaction, socket closed", reusable: true, leave: leaveAbruptly,
			prepare: func(t *testing.T, c *client) {
				_, err := c.conn.Exec(ctx, "BEGIN; SELECT 1/0")
				wantState(t, err, "22012", "failing statement")
			}},
		{name: "idle, socket closed", reusable: true, leave: leaveAbruptly,
			prepare: func(t *testing.T, c *client) {
				if _, err := c.conn.Exec(ctx, "SET work_mem = '7MB'"); err != nil {
					t.Fatal(err)
				}
			}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := &client{conn: connect(t, p.appDSN())}
			backend := upstreamPID(t, c.conn)
			if tc.hijack {
				// The net.Conn stays what PgConn.Conn returns, so
				// leaveAbruptly still closes it.
				if err := c.conn.PgConn().SyncConn(ctx); err != nil {
					t.Fatal(err)
				}
				hc, err := c.conn.PgConn().Hijack()
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { _ = hc.Conn.Close() })
				c.fe = pgproto3.NewFrontend(hc.Conn, hc.Conn)
			}
			tc.prepare(t, c)
			if tc.running {
				waitSleeping(t, su, backend)
			}
			tc.leave(c)
			waitFor(t, 3*time.Second, "upstream backend released", func() (bool, string) {
				st := backendState(t, su, backend)
				return st == "" || (tc.reusable && st == "idle"), fmt.Sprintf("backend %d is %q", backend, st)
			})
			if tc.reusable {
				// The reset connection goes back to the pool and serves the
				// next client, with the session state gone.
				c2 := connect(t, p.appDSN())
				var wm string
				if err := c2.QueryRow(ctx, "SHOW work_mem").Scan(&wm); err != nil || wm == "7MB" {
					t.Fatalf("work_mem on the next client = %q, %v: session state not reset", wm, err)
				}
			}
		})
	}
	var left int
	if err := su.QueryRow(ctx, "SELECT count(*) FROM kv WHERE k LIKE '%gone%'").Scan(&left); err != nil || left != 0 {
		t.Fatalf("rows of clients that left inside a transaction or COPY were committed: %d %v", left, err)
	}

	t.Run("no leak over 20 kills", func(t *testing.T) {
		before := appBackends(t, su)
		for i := range 20 {
			c := connect(t, p.appDSN())
			backend := upstreamPID(t, c)
			query := fmt.Sprintf("SELECT pg_sleep(30) /* kill %d */", i)
			goExec(t, c, query)
			waitSleeping(t, su, backend)
			_ = c.PgConn().Conn().Close()
			waitFor(t, 3*time.Second, "killed client's statement stopped", func() (bool, string) {
				var n int
				err := su.QueryRow(ctx, "SELECT count(*) FROM pg_stat_activity WHERE usename = 'app' AND query = $1 AND state = 'active'", query).Scan(&n)
				return err == nil && n == 0, fmt.Sprintf("%d backends still run %q (%v)", n, query, err)
			})
		}
		waitFor(t, 3*time.Second, "app backends back to where they were", func() (bool, string) {
			n := appBackends(t, su)
			return n <= before, fmt.Sprintf("%d app backends, %d before the 20 kills", n, before)
		})
	})
}

// TestSessionReset checks that a pooled upstream connection carries nothing
// of one client's session to the next: with a pool of exactly one
// connection, client B gets client A's backend and sees none of A's
// settings, temporary tables, prepared statements, cursors, advisory locks
// or LISTENs.
func TestSessionReset(t *testing.T) {
	ignore := goleak.IgnoreCurrent()
	p := startProxy(t, func(c *config.Config) { c.Pool.PoolSize, c.Pool.MaxOverflow = 1, 0 })
	ctx := testCtx(t, 30*time.Second)
	su := superConn(t)
	var defaultTZ string
	if err := su.QueryRow(ctx, "SHOW TimeZone").Scan(&defaultTZ); err != nil {
		t.Fatal(err)
	}

	a := connect(t, p.appDSN("application_name=client_a"))
	backend := upstreamPID(t, a)
	for _, s := range []string{
		"SET search_path TO foo",
		"SET TimeZone TO 'Asia/Tokyo'",
		"SET statement_timeout = 4321",
		"CREATE TEMP TABLE reset_tmp (x int)",
		"PREPARE s AS SELECT 1",
		"SELECT pg_advisory_lock(4242)",
		"LISTEN reset_chan",
		"BEGIN; DECLARE reset_cur CURSOR WITH HOLD FOR SELECT 1; COMMIT",
	} {
		if _, err := a.Exec(ctx, s, pgx.QueryExecModeSimpleProtocol); err != nil {
			t.Fatalf("%s: %v", s, err)
		}
	}
	// pgx's statement cache prepares this under a name derived from the
	// text; B prepares the same name below, which fails (42P05) unless the
	// reset deallocated A's.
	var one int
	if err := a.QueryRow(ctx, "SELECT $1::int", 1).Scan(&one); err != nil {
		t.Fatal(err)
	}
	if tz := a.PgConn().ParameterStatus("TimeZone"); tz != "Asia/Tokyo" {
		t.Fatalf("client A's TimeZone ParameterStatus = %q", tz)
	}
	closeConn(a)

	b := connect(t, p.appDSN())
	if got := upstreamPID(t, b); got != backend {
		t.Fatalf("client B got backend %d, want A's %d (pool_size 1): the connection was not reused", got, backend)
	}
	checks := []struct {
		sql, want string
	}{
		{"SELECT current_setting('search_path')", `"$user", public`},
		{"SELECT current_setting('TimeZone')", defaultTZ},
		{"SELECT current_setting('statement_timeout')", "0"},
		{"SELECT current_setting('application_name')", ""},
		{"SELECT (to_regclass('reset_tmp') IS NULL)::text", "true"},
		{"SELECT count(*)::text FROM pg_prepared_statements WHERE name = 's'", "0"},
		{"SELECT count(*)::text FROM pg_cursors", "0"},
		{"SELECT count(*)::text FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()", "0"},
		{"SELECT count(*)::text FROM pg_listening_channels()", "0"},
	}
	for _, ck := range checks {
		var got string
		if err := b.QueryRow(ctx, ck.sql, pgx.QueryExecModeSimpleProtocol).Scan(&got); err != nil || got != ck.want {
			t.Errorf("client B: %s = %q, %v; want %q", ck.sql, got, err, ck.want)
		}
	}
	if tz := b.PgConn().ParameterStatus("TimeZone"); tz != defaultTZ {
		t.Errorf("client B's TimeZone ParameterStatus = %q, want %q", tz, defaultTZ)
	}
	_, err := b.Exec(ctx, "EXECUTE s", pgx.QueryExecModeSimpleProtocol)
	wantState(t, err, "26000", "EXECUTE of A's prepared statement")
	// The advisory lock is free for others again.
	var locked bool
	if err := su.QueryRow(ctx, "SELECT pg_try_advisory_lock(4242)").Scan(&locked); err != nil || !locked {
		t.Errorf("advisory lock 4242 still held after A left: %v %v", locked, err)
	} else {
		_, _ = su.Exec(ctx, "SELECT pg_advisory_unlock(4242)")
	}
	// pgx's own statement cache on B works on the reused connection.
	for i := range 5 {
		var n int
		if err := b.QueryRow(ctx, "SELECT $1::int", i).Scan(&n); err != nil || n != i {
			t.Fatalf("B's prepared query %d: %d %v", i, n, err)
		}
	}
	closeConn(b)
	if err := p.shutdown(10 * time.Second); err != nil {
		t.Fatal(err)
	}
	goleak.VerifyNone(t, ignore)
}

// TestMaxClientConn: with max_client_conn 2 the third client is refused
// with 53300 while the first two go on working, and a place freed by a
// client that leaves can be taken again.
func TestMaxClientConn(t *testing.T) {
	ignore := goleak.IgnoreCurrent()
	p := startProxy(t, func(c *config.Config) { c.MaxClientConn = 2 })
	ctx := testCtx(t, 30*time.Second)
	// Refused logins give their place back.
	for range 5 {
		if _, err := pgx.Connect(ctx, p.dsn(appUser, "wrong")); sqlState(err) != "28P01" {
			t.Fatalf("wrong password: %v", err)
		}
	}
	c1 := connect(t, p.appDSN(), withCancelRequests)
	c2 := connect(t, p.appDSN())
	for i := range 3 {
		_, err := pgx.Connect(ctx, p.appDSN())
		wantState(t, err, "53300", fmt.Sprintf("client %d over max_client_conn", 3+i))
	}
	mustSelectOne(t, c1, "first client")
	mustSelectOne(t, c2, "second client")
	// A CancelRequest is not a client: it works at the limit.
	qctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	start := time.Now()
	_, err := c1.Exec(qctx, "SELECT pg_sleep(5)")
	cancel()
	if (sqlState(err) != "57014" && qctx.Err() == nil) || time.Since(start) > time.Second {
		t.Fatalf("cancel at max_client_conn: %v after %s", err, time.Since(start))
	}
	mustSelectOne(t, c1, "first client after the cancel")
	closeConn(c1)
	var c3 *pgx.Conn
	waitFor(t, 3*time.Second, "a place frees up after a client leaves", func() (bool, string) {
		c, err := pgx.Connect(ctx, p.appDSN())
		if err != nil {
			return false, err.Error()
		}
		c3 = c
		return true, ""
	})
	mustSelectOne(t, c3, "client in the freed place")
	closeConn(c3)
	closeConn(c2)
	if err := p.shutdown(10 * time.Second); err != nil {
		t.Fatal(err)
	}
	goleak.VerifyNone(t, ignore)
}

// TestPoolExhausted: with one upstream connection (pool_size 1,
// max_overflow 0), a second client waits pool_timeout and is refused with
// 53300; a client that waits while the first one leaves gets the connection.
func TestPoolExhausted(t *testing.T) {
	// Session pooling: a client holds its connection from login to logout.
	p := startProxy(t, func(c *config.Config) {
		c.Pool.Mode, c.Pool.PoolSize, c.Pool.MaxOverflow, c.Pool.PoolTimeout = config.ModeSession, 1, 0, time.Second
	})
	ctx := testCtx(t, 30*time.Second)
	c1 := connect(t, p.appDSN())
	backend := upstreamPID(t, c1)

	start := time.Now()
	_, err := pgx.Connect(ctx, p.appDSN())
	pe := wantState(t, err, "53300", "second client while the only connection is in use")
	if waited := time.Since(start); waited < 900*time.Millisecond || waited > 3*time.Second {
		t.Fatalf("refused after %s, want after pool_timeout (1s)", waited)
	}
	t.Logf("refusal: %s", pe.Message)
	mustSelectOne(t, c1, "first client")

	type connected struct {
		c   *pgx.Conn
		err error
	}
	got := make(chan connected, 1)
	go func() {
		c, err := pgx.Connect(ctx, p.appDSN()) // ends within connect_timeout
		got <- connected{c, err}
	}()
	time.Sleep(300 * time.Millisecond)
	closeConn(c1)
	r := <-got
	if r.err != nil {
		t.Fatalf("client waiting while the first one left: %v", r.err)
	}
	c3 := r.c
	defer closeConn(c3)
	if b := upstreamPID(t, c3); b != backend {
		t.Fatalf("waiting client got backend %d, want the released %d", b, backend)
	}
}

// TestConcurrentClients runs 200 clients at once through the shared proxy
// (40 upstream connections at most), each logging in, running a few
// statements and leaving; all must succeed.
func TestConcurrentClients(t *testing.T) {
	shared.watchLogs(t)
	const clients = 200
	ctx := testCtx(t, 60*time.Second)
	errs := make(chan error, clients)
	var wg sync.WaitGroup
	start := time.Now()
	for i := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- oneClient(ctx, i)
		}()
	}
	wg.Wait()
	close(errs)
	failed := 0
	for err := range errs {
		if err != nil {
			failed++
			if failed <= 5 {
				t.Error(err)
			}
		}
	}
	if failed > 0 {
		t.Fatalf("%d of %d concurrent clients failed", failed, clients)
	}
	t.Logf("%d clients in %s", clients, time.Since(start).Round(time.Millisecond))
}

func oneClient(ctx context.Context, i int) error {
	c, err := pgx.Connect(ctx, shared.appDSN(fmt.Sprintf("application_name=client%d", i)))
	if err != nil {
		return fmt.Errorf("client %d: connect: %w", i, err)
	}
	defer closeConn(c)
	var n int
	var name string
	if err := c.QueryRow(ctx, "SELECT $1::int * 3, current_setting('application_name')", i).Scan(&n, &name); err != nil || n != 3*i || name != fmt.Sprintf("client%d", i) {
		return fmt.Errorf("client %d: query: %d %q %v", i, n, name, err)
	}
	key := fmt.Sprintf("concurrent-%d", i)
	tx, err := c.Begin(ctx)
	if err != nil {
		return fmt.Errorf("client %d: begin: %w", i, err)
	}
	if _, err := tx.Exec(ctx, "INSERT INTO kv VALUES ($1, $2)", key, i); err != nil {
		return fmt.Errorf("client %d: insert: %w", i, err)
	}
	if _, err := tx.Exec(ctx, "DELETE FROM kv WHERE k = $1", key); err != nil {
		return fmt.Errorf("client %d: delete: %w", i, err)
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("client %d: commit: %w", i, err)
	}
	if _, err := c.Exec(ctx, "SELECT pg_sleep(0.01)"); err != nil {
		return fmt.Errorf("client %d: sleep: %w", i, err)
	}
	return nil
}

// TestNoGoroutineLeak drives one proxy through a bit of everything — plain
// sessions, a cancel, a refused login, garbage, a client killed mid-query,
// a transaction cut off by shutdown — and checks that once Shutdown
// returned and the clients are closed, no goroutine started since is left.
func TestNoGoroutineLeak(t *testing.T) {
	ignore := goleak.IgnoreCurrent()
	p := startProxy(t, func(c *config.Config) { c.ShutdownTimeout = 500 * time.Millisecond })
	ctx := testCtx(t, 30*time.Second)
	su := superConn(t)

	c := connect(t, p.appDSN(), withCancelRequests)
	mustSelectOne(t, c, "plain session")
	qctx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	_, err := c.Exec(qctx, "SELECT pg_sleep(5)")
	cancel()
	if code := sqlState(err); code != "57014" && qctx.Err() == nil {
		t.Fatalf("cancel: %v", err)
	}
	mustSelectOne(t, c, "after the cancel")

	if _, err := pgx.Connect(ctx, p.dsn(appUser, "wrong")); sqlState(err) != "28P01" {
		t.Fatalf("wrong password: %v", err)
	}
	nc := rawDial(t, p)
	_, _ = nc.Write([]byte("GET / HTTP/1.1\r\n\r\n"))
	if _, err := readUntilClose(nc, 3*time.Second); err != nil {
		t.Fatal(err)
	}

	k := connect(t, p.appDSN())
	backend := upstreamPID(t, k)
	goExec(t, k, "SELECT pg_sleep(30)")
	waitSleeping(t, su, backend)
	_ = k.PgConn().Conn().Close()

	inTx := connect(t, p.appDSN())
	if _, err := inTx.Exec(ctx, "BEGIN"); err != nil {
		t.Fatal(err)
	}
	idle := connect(t, p.appDSN())
	mustSelectOne(t, idle, "idle client")

	if err := p.shutdown(10 * time.Second); err != nil {
		t.Fatal(err)
	}
	for _, cl := range []*pgx.Conn{c, inTx, idle} {
		closeConn(cl)
	}
	goleak.VerifyNone(t, ignore)
}
