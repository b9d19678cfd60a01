package test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgsplit/pgsplit/config"
	"github.com/pgsplit/pgsplit/internal/pgcluster"
)

// Tests of transaction pooling (pool.mode: transaction, the default).

// createDatabase creates a database owned by app with table kv, and waits
// until the replicas have it. Tests that count server connections use their
// own database, so that no other proxy's pool is counted.
func createDatabase(t *testing.T, name string) {
	t.Helper()
	ctx := testCtx(t, time.Minute)
	su, err := pgx.Connect(ctx, cluster.SuperuserDSN(cluster.Primary, "postgres"))
	if err != nil {
		t.Fatal(err)
	}
	defer su.Close(ctx)
	if _, err := su.Exec(ctx, fmt.Sprintf("DROP DATABASE IF EXISTS %s WITH (FORCE)", name)); err != nil {
		t.Fatal(err)
	}
	if _, err := su.Exec(ctx, fmt.Sprintf("CREATE DATABASE %s OWNER app", name)); err != nil {
		t.Fatal(err)
	}
	cfg, err := pgx.ParseConfig(cluster.AppDSN(cluster.Primary))
	if err != nil {
		t.Fatal(err)
	}
	cfg.Database = name
	app, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer app.Close(ctx)
	if _, err := app.Exec(ctx, "CREATE TABLE kv (k text PRIMARY KEY, v int NOT NULL)"); err != nil {
		t.Fatal(err)
	}
	if err := waitReplicated(ctx); err != nil {
		t.Fatal(err)
	}
}

// dbDSN is the connection string of user app to database db through p.
func (p *testProxy) dbDSN(db string) string {
	return fmt.Sprintf("host=%s port=%d user=%s password='%s' dbname=%s sslmode=disable connect_timeout=10",
		p.host, p.port, appUser, appPassword, db)
}

// connSampler counts, every few milliseconds, the connections of user app
// to database db on every server, and keeps the largest count per server.
type connSampler struct {
	mu      sync.Mutex
	max     map[int]int // by server port
	samples int
	stop    chan struct{}
	done    sync.WaitGroup
}

func sampleConnections(t *testing.T, db string) *connSampler {
	t.Helper()
	s := &connSampler{max: map[int]int{}, stop: make(chan struct{})}
	for _, n := range append([]pgcluster.Node{cluster.Primary}, cluster.Replicas...) {
		c, err := pgx.Connect(context.Background(), cluster.SuperuserDSN(n, "postgres"))
		if err != nil {
			t.Fatal(err)
		}
		port := n.Port
		s.done.Add(1)
		go func() {
			defer s.done.Done()
			defer c.Close(context.Background())
			for {
				select {
				case <-s.stop:
					return
				case <-time.After(5 * time.Millisecond):
				}
				var k int
				err := c.QueryRow(context.Background(),
					"SELECT count(*) FROM pg_stat_activity WHERE usename = 'app' AND datname = $1 AND backend_type = 'client backend'", db).Scan(&k)
				if err != nil {
					continue
				}
				s.mu.Lock()
				s.samples++
				if k > s.max[port] {
					s.max[port] = k
				}
				s.mu.Unlock()
			}
		}()
	}
	t.Cleanup(s.finish)
	return s
}

func (s *connSampler) finish() {
	select {
	case <-s.stop:
	default:
		close(s.stop)
	}
	s.done.Wait()
}

// TestTxPoolThousandClients: 1,000 clients at once, each running short
// transactions (reads on replicas, writes on the primary), through pools of
// pool_size 10 + max_overflow 10: all finish, and no server ever shows more
// than 20 connections from pgsplit.
func TestTxPoolThousandClients(t *testing.T) {
	const db, clients, limit = "txpool_many", 1000, 20
	createDatabase(t, db)
	p := routingProxy(t, func(c *config.Config) {
		c.Pool.PoolSize, c.Pool.MaxOverflow, c.Pool.PoolTimeout = 10, 10, 60*time.Second
		c.MaxClientConn = clients + 10
	})
	s := sampleConnections(t, db)
	ctx := testCtx(t, 3*time.Minute)
	start := time.Now()
	var wg sync.WaitGroup
	errs := make(chan error, clients)
	var arrived atomic.Int32
	allIn := make(chan struct{})
	arrive := func() {
		if arrived.Add(1) == clients {
			close(allIn)
		}
	}
	logins := make(chan struct{}, 50) // logins in flight (SCRAM costs CPU on both sides)
	for i := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			logins <- struct{}{}
			c, err := pgx.Connect(ctx, p.dbDSN(db)+" connect_timeout=60")
			<-logins
			if err != nil {
				arrive()
				errs <- fmt.Errorf("client %d: connect: %w", i, err)
				return
			}
			defer closeConn(c)
			// Every client is connected before any runs a transaction:
			// 1,000 sessions at once over 20 server connections.
			arrive()
			select {
			case <-allIn:
			case <-ctx.Done():
				errs <- fmt.Errorf("client %d: not all clients connected", i)
				return
			}
			errs <- shortTransactions(ctx, c, i)
		}()
	}
	wg.Wait()
	s.finish()
	close(errs)
	failed := 0
	for err := range errs {
		if err != nil {
			if failed < 5 {
				t.Error(err)
			}
			failed++
		}
	}
	if failed > 0 {
		t.Fatalf("%d of %d clients failed", failed, clients)
	}
	t.Logf("%d clients in %s; most connections seen per server: %v (%d samples)", clients, time.Since(start).Round(time.Millisecond), s.max, s.samples)
	if s.max[cluster.Primary.Port] == 0 || s.samples < 20 {
		t.Fatalf("the sampler saw nothing (%v, %d samples): the check would prove nothing", s.max, s.samples)
	}
	for port, n := range s.max {
		if n > limit {
			t.Errorf("server on port %d (%s) had %d connections from pgsplit, more than pool_size + max_overflow = %d", port, role(port), n, limit)
		}
	}
	var n int
	c := connect(t, p.dbDSN(db))
	if err := c.QueryRow(ctx, "/* pgsplit:primary */ SELECT count(*) FROM kv").Scan(&n); err != nil || n != clients {
		t.Fatalf("rows written: %d (%v), want %d", n, err, clients)
	}
}

// shortTransactions is one client's work: an autocommit read, a write
// transaction that reads its own write, and a read-only transaction.
func shortTransactions(ctx context.Context, c *pgx.Conn, i int) error {
	key := fmt.Sprintf("k%d", i)
	var n int
	if err := c.QueryRow(ctx, "SELECT count(*) FROM kv WHERE k = $1", key).Scan(&n); err != nil {
		return fmt.Errorf("client %d: read: %w", i, err)
	}
	err := pgx.BeginFunc(ctx, c, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "INSERT INTO kv VALUES ($1, $2)", key, i); err != nil {
			return err
		}
		var v int
		if err := tx.QueryRow(ctx, "SELECT v FROM kv WHERE k = $1", key).Scan(&v); err != nil || v != i {
			return fmt.Errorf("read own write: %d %v", v, err)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("client %d: write transaction: %w", i, err)
	}
	err = pgx.BeginTxFunc(ctx, c, pgx.TxOptions{AccessMode: pgx.ReadOnly}, func(tx pgx.Tx) error {
		return tx.QueryRow(ctx, "SELECT count(*) FROM kv WHERE v >= 0").Scan(&n)
	})
	if err != nil {
		return fmt.Errorf("client %d: read-only transaction: %w", i, err)
	}
	return nil
}

// TestTxPoolTimeout: with the only server connection held by a transaction,
// a connected client's statement gets 53300 after pool_timeout (1 s), and
// the same session works once the connection is free.
func TestTxPoolTimeout(t *testing.T) {
	p := startProxy(t, func(c *config.Config) {
		c.Pool.PoolSize, c.Pool.MaxOverflow, c.Pool.PoolTimeout = 1, 0, time.Second
	})
	ctx := testCtx(t, 30*time.Second)
	a := connect(t, p.appDSN())
	b := connect(t, p.appDSN()) // logs in while the connection is free
	tx, err := a.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	mustSelectOne(t, a, "client in a transaction")
	start := time.Now()
	var one int
	err = b.QueryRow(ctx, "SELECT 1").Scan(&one)
	waited := time.Since(start)
	pe := wantState(t, err, "53300", "statement while the only connection is in a transaction")
	if pe.Severity != "ERROR" {
		t.Errorf("severity %s, want ERROR (the session goes on)", pe.Severity)
	}
	if waited < 900*time.Millisecond || waited > 3*time.Second {
		t.Errorf("refused after %s, want after pool_timeout (1s)", waited)
	}
	t.Logf("after %s: %s", waited.Round(time.Millisecond), pe.Message)
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	mustSelectOne(t, b, "the refused client once the connection is free")
	// Simple protocol too.
	tx, err = a.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	_, err = b.Exec(ctx, "SELECT 1", pgx.QueryExecModeSimpleProtocol)
	wantState(t, err, "53300", "simple-protocol statement while the connection is held")
	if err := tx.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Exec(ctx, "SELECT 1", pgx.QueryExecModeSimpleProtocol); err != nil {
		t.Fatalf("simple protocol after the refusal: %v", err)
	}
}

// TestTxPoolTerminated: a pooled connection whose backend is terminated
// between transactions costs the next transaction nothing (pre-ping); one
// terminated inside a transaction fails that client, and the pool recovers.
func TestTxPoolTerminated(t *testing.T) {
	p := startProxy(t, func(c *config.Config) { c.Pool.PoolSize, c.Pool.MaxOverflow = 2, 0 })
	su := superConn(t)
	ctx := testCtx(t, 30*time.Second)
	terminate := func(pid uint32) {
		t.Helper()
		var ok bool
		if err := su.QueryRow(ctx, "SELECT pg_terminate_backend($1, 5000)", int64(pid)).Scan(&ok); err != nil || !ok {
			t.Fatalf("pg_terminate_backend(%d): %v %v", pid, ok, err)
		}
	}
	c := connect(t, p.appDSN())
	for round := range 3 {
		pid := upstreamPID(t, c) // the connection goes back to the pool after this
		waitFor(t, 3*time.Second, "connection idle in the pool", func() (bool, string) {
			st := backendState(t, su, pid)
			return st == "idle", "state " + st
		})
		terminate(pid)
		var n int
		if err := c.QueryRow(ctx, "SELECT count(*) FROM kv").Scan(&n); err != nil {
			t.Fatalf("round %d: first transaction after the pooled backend %d was terminated: %v", round, pid, err)
		}
	}

	tx, err := c.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var pid int64
	if err := tx.QueryRow(ctx, "SELECT pg_backend_pid()").Scan(&pid); err != nil {
		t.Fatal(err)
	}
	terminate(uint32(pid))
	if _, err := tx.Exec(ctx, "SELECT 1"); err == nil {
		t.Fatal("a statement on a backend terminated mid-transaction succeeded")
	} else {
		t.Logf("client inside the transaction got: %v", err)
	}
	c2 := connect(t, p.appDSN())
	for range 3 {
		mustSelectOne(t, c2, "a client after a backend died mid-transaction")
	}
}

// TestTxPoolNoLeak: client A's SETs (search_path, timezone) never show for
// client B on the same server connection, and A keeps them when it gets the
// connection back after B. pool_size 1 makes both use one backend, which
// the test checks, so a leak could not hide.
func TestTxPoolNoLeak(t *testing.T) {
	p := startProxy(t, func(c *config.Config) { c.Pool.PoolSize, c.Pool.MaxOverflow = 1, 0 })
	ctx := testCtx(t, 30*time.Second)
	show := func(c *pgx.Conn, name string) string {
		t.Helper()
		var v string
		if err := c.QueryRow(ctx, "SELECT current_setting($1)", name).Scan(&v); err != nil {
			t.Fatalf("current_setting(%s): %v", name, err)
		}
		return v
	}
	b := connect(t, p.appDSN())
	defaultPath, defaultZone := show(b, "search_path"), show(b, "TimeZone")
	a := connect(t, p.appDSN())
	if _, err := a.Exec(ctx, "SET search_path TO leak_schema, public"); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Exec(ctx, "SET timezone TO 'Pacific/Chatham'"); err != nil {
		t.Fatal(err)
	}
	pidA := upstreamPID(t, a)
	if got := show(a, "search_path"); got != "leak_schema, public" {
		t.Fatalf("A's own search_path: %q", got)
	}
	pidB := upstreamPID(t, b)
	if pidA != pidB {
		t.Fatalf("A and B used backends %d and %d: with pool_size 1 they must share one, or the test proves nothing", pidA, pidB)
	}
	if got := show(b, "search_path"); got != defaultPath {
		t.Errorf("B sees search_path %q, want the default %q", got, defaultPath)
	}
	if got := show(b, "TimeZone"); got != defaultZone {
		t.Errorf("B sees TimeZone %q, want the default %q", got, defaultZone)
	}
	// B has used the shared backend since A's SET: pgx has read any
	// ParameterStatus it was sent.
	if got := b.PgConn().ParameterStatus("TimeZone"); got == "Pacific/Chatham" {
		t.Errorf("B was told A's TimeZone in a ParameterStatus")
	}
	if got := show(a, "TimeZone"); got != "Pacific/Chatham" {
		t.Errorf("A lost its TimeZone after B used the connection: %q", got)
	}
	if got := a.PgConn().ParameterStatus("TimeZone"); got != "Pacific/Chatham" {
		t.Errorf("A's ParameterStatus TimeZone: %q", got)
	}
	if _, err := a.Exec(ctx, "RESET timezone"); err != nil {
		t.Fatal(err)
	}
	if got := show(a, "TimeZone"); got != defaultZone {
		t.Errorf("A after RESET timezone: %q, want %q", got, defaultZone)
	}
}

// TestTxPoolPins: a temp table or LISTEN keeps the client on its server
// connection (with pool_size 1 another client waits, then gets 53300),
// and releasing the state gives the connection back.
func TestTxPoolPins(t *testing.T) {
	p := startProxy(t, func(c *config.Config) {
		c.Pool.PoolSize, c.Pool.MaxOverflow, c.Pool.PoolTimeout = 1, 0, time.Second
	})
	ctx := testCtx(t, 30*time.Second)
	a := connect(t, p.appDSN())
	b := connect(t, p.appDSN())

	if _, err := a.Exec(ctx, "CREATE TEMP TABLE pin_tmp (x int)"); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Exec(ctx, "INSERT INTO pin_tmp VALUES (7)"); err != nil {
		t.Fatalf("temp table in the next transaction: %v", err)
	}
	if got := p.srv.PinnedClients(); got != 1 {
		t.Errorf("PinnedClients = %d, want 1", got)
	}
	var one int
	wantState(t, b.QueryRow(ctx, "SELECT 1").Scan(&one), "53300", "another client while A is pinned by a temp table")
	if _, err := a.Exec(ctx, "DISCARD TEMP"); err != nil {
		t.Fatal(err)
	}
	mustSelectOne(t, b, "another client once A dropped its temp table")
	p.logs.waitEntry(t, 0, 5*time.Second, "pin logged", func(e logEntry) bool {
		return e.str("msg") == "client pinned to its server connection until it releases the state or leaves"
	})

	// LISTEN: notifications reach the listener across transactions.
	p2 := startProxy(t, func(c *config.Config) { c.Pool.PoolSize, c.Pool.MaxOverflow = 2, 0 })
	l := connect(t, p2.appDSN())
	n := connect(t, p2.appDSN())
	if _, err := l.Exec(ctx, "LISTEN pin_channel"); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		mustSelectOne(t, n, "notifier")
		if _, err := n.Exec(ctx, "SELECT pg_notify('pin_channel', $1)", fmt.Sprint(i)); err != nil {
			t.Fatal(err)
		}
		wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		note, err := l.WaitForNotification(wctx)
		cancel()
		if err != nil || note.Payload != fmt.Sprint(i) {
			t.Fatalf("notification %d: %+v %v", i, note, err)
		}
		mustSelectOne(t, l, "listener between notifications")
	}
}

// TestTxPoolPreparedStatements: pgx's statement cache (named statements
// prepared once per client connection) over 100 clients sharing 10 server
// connections, the statements served by many connections on the primary
// and the replicas; and pool.max_prepared_statements keeps what one server
// connection holds within bounds.
func TestTxPoolPreparedStatements(t *testing.T) {
	p := routingProxy(t, func(c *config.Config) {
		c.Pool.PoolSize, c.Pool.MaxOverflow, c.Pool.MaxPreparedStatements = 5, 5, 3
	})
	ctx := testCtx(t, 2*time.Minute)
	const clients = 100
	var wg sync.WaitGroup
	errs := make(chan error, clients)
	for i := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- func() error {
				c, err := pgx.Connect(ctx, p.appDSN())
				if err != nil {
					return err
				}
				defer closeConn(c)
				key := fmt.Sprintf("ps-%d", i)
				for j := range 8 {
					// Five statements against a cap of three per server
					// connection: evicted and prepared again as needed.
					var a, b int
					if err := c.QueryRow(ctx, "SELECT $1::int + $2::int", i, j).Scan(&a); err != nil || a != i+j {
						return fmt.Errorf("client %d: add: %d %v", i, a, err)
					}
					if err := c.QueryRow(ctx, "SELECT $1::int * 2, $2::text", i, key).Scan(&b, new(string)); err != nil || b != 2*i {
						return fmt.Errorf("client %d: double: %d %v", i, b, err)
					}
					err := pgx.BeginFunc(ctx, c, func(tx pgx.Tx) error {
						if _, err := tx.Exec(ctx, "INSERT INTO kv VALUES ($1, $2) ON CONFLICT (k) DO UPDATE SET v = excluded.v", key, j); err != nil {
							return fmt.Errorf("upsert: %w", err)
						}
						var v int
						if err := tx.QueryRow(ctx, "SELECT v FROM kv WHERE k = $1", key).Scan(&v); err != nil || v != j {
							return fmt.Errorf("read own write: %d %v", v, err)
						}
						return nil
					})
					if err != nil {
						return fmt.Errorf("client %d: %w", i, err)
					}
					if err := c.QueryRow(ctx, "SELECT length($1::text)", key).Scan(&a); err != nil || a != len(key) {
						return fmt.Errorf("client %d: length: %d %v", i, a, err)
					}
				}
				_, err = c.Exec(ctx, "DELETE FROM kv WHERE k = $1", key)
				return err
			}()
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	// Each server connection holds at most max_prepared_statements of
	// pgsplit's statements (pg_prepared_statements lists the backend's).
	c := connect(t, p.appDSN())
	var held int
	if err := c.QueryRow(ctx, "SELECT count(*) FROM pg_prepared_statements WHERE name LIKE 'pgsplit_%'", pgx.QueryExecModeSimpleProtocol).Scan(&held); err != nil {
		t.Fatal(err)
	}
	if held > 3 || held == 0 {
		t.Errorf("a server connection holds %d of pgsplit's statements, want 1..3 (pool.max_prepared_statements)", held)
	}

	// DEALLOCATE of a protocol-level statement, and DEALLOCATE ALL, as
	// psycopg sends them: the client's statement is gone.
	if _, err := c.Prepare(ctx, "mine", "SELECT 42"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Exec(ctx, "DEALLOCATE mine", pgx.QueryExecModeSimpleProtocol); err != nil {
		t.Fatalf("DEALLOCATE of a statement prepared with Parse: %v", err)
	}
	_, err := c.Exec(ctx, "DEALLOCATE mine", pgx.QueryExecModeSimpleProtocol)
	wantState(t, err, "26000", "DEALLOCATE of a statement already deallocated")
}

// TestTxPoolPgbench runs pgbench through transaction pooling with 100
// clients over 10 server connections in every query mode, read-only on the
// replicas and read-write on the primary: prepared statements are served
// by many connections on several servers.
func TestTxPoolPgbench(t *testing.T) {
	const db = "txpool_bench"
	createDatabase(t, db)
	bin, err := pgcluster.FindBinDir()
	if err != nil {
		t.Fatal(err)
	}
	init := runCmd(t, []string{"PGPASSWORD=" + appPassword}, bin+"/pgbench", "-i", "-q", "-s", "1",
		"-h", cluster.Primary.Host, "-p", fmt.Sprint(cluster.Primary.Port), "-U", appUser, db)
	if init.exitCode != 0 {
		t.Fatalf("pgbench -i: %s", init.stderr)
	}
	if err := waitReplicated(testCtx(t, time.Minute)); err != nil {
		t.Fatal(err)
	}
	p := routingProxy(t, func(c *config.Config) { c.Pool.PoolSize, c.Pool.MaxOverflow = 5, 5 })
	for _, run := range []struct{ mode, script string }{
		{"simple", "select-only"}, {"extended", "select-only"}, {"prepared", "select-only"},
		{"prepared", "tpcb-like"}, {"extended", "simple-update"},
	} {
		t.Run(run.mode+"/"+run.script, func(t *testing.T) {
			r := runCmd(t, []string{"PGPASSWORD=" + appPassword}, bin+"/pgbench", "-n", "-c", "100", "-j", "2", "-t", "10",
				"-M", run.mode, "-b", run.script, "-h", p.host, "-p", fmt.Sprint(p.port), "-U", appUser, db)
			if r.exitCode != 0 {
				t.Fatalf("pgbench exited %d:\n%s\n%s", r.exitCode, r.stdout, r.stderr)
			}
			if !strings.Contains(r.stdout, "number of transactions actually processed: 1000/1000") ||
				!strings.Contains(r.stdout, "number of failed transactions: 0 ") {
				t.Fatalf("pgbench:\n%s\n%s", r.stdout, r.stderr)
			}
		})
	}
}

// runCmd runs a program with a clean environment plus env, for at most two
// minutes.
func runCmd(t *testing.T, env []string, bin string, args ...string) psqlResult {
	t.Helper()
	return runCmdInput(t, env, "", bin, args...)
}

// runCmdInput is runCmd with stdin as the program's standard input.
func runCmdInput(t *testing.T, env []string, stdin, bin string, args ...string) psqlResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = append(cleanEnv(), env...)
	cmd.Stdin = strings.NewReader(stdin)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	res := psqlResult{stdout: stdout.String(), stderr: stderr.String()}
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		res.exitCode = ee.ExitCode()
	case err != nil:
		t.Fatalf("run %s: %v", bin, err)
	}
	return res
}

// TestDeallocateInExtendedProtocolForgetsClientStatement: psycopg 3 sends
// DEALLOCATE of a statement it prepared with Parse as an extended-protocol
// batch (Parse/Bind/Execute of the unnamed statement) once it holds more than
// prepared_max statements. pgsplit keeps the statement on the servers under its
// own name, so it must answer that DEALLOCATE itself, as for a simple Query,
// instead of letting the server answer 26000.
func TestDeallocateInExtendedProtocolForgetsClientStatement(t *testing.T) {
	p := routingProxy(t, func(c *config.Config) { c.Pool.PoolSize, c.Pool.MaxOverflow = 2, 0 })
	ctx := testCtx(t, 30*time.Second)
	c := connect(t, p.appDSN())
	// Parse/Bind/Describe/Execute/Sync of the unnamed statement, as psycopg
	// 3's send_query_params (pgx's Exec without arguments would use the
	// simple protocol).
	extended := func(sql string) (string, error) {
		r := c.PgConn().ExecParams(ctx, sql, nil, nil, nil, nil).Read()
		return r.CommandTag.String(), r.Err
	}
	for name, sql := range map[string]string{"mine1": "DEALLOCATE mine1", "mine2": "DEALLOCATE PREPARE mine2"} {
		if _, err := c.Prepare(ctx, name, "SELECT 42"); err != nil {
			t.Fatalf("%s: prepare: %v", sql, err)
		}
		if tag, err := extended(sql); err != nil || tag != "DEALLOCATE" {
			t.Fatalf("%s in the extended protocol: tag %q, %v", sql, tag, err)
		}
		_, err := extended(sql)
		wantState(t, err, "26000", sql+" of a statement already deallocated")
	}
	// Prepared and described first, then executed (a named DEALLOCATE
	// statement, as pgx's cache modes would send it).
	if _, err := c.Prepare(ctx, "mine", "SELECT 42"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Prepare(ctx, "drop_mine", "DEALLOCATE mine"); err != nil {
		t.Fatal(err)
	}
	if r := c.PgConn().ExecPrepared(ctx, "drop_mine", nil, nil, nil).Read(); r.Err != nil || r.CommandTag.String() != "DEALLOCATE" {
		t.Fatalf("a prepared DEALLOCATE: tag %q, %v", r.CommandTag, r.Err)
	}
	// A new text under the name: Parse, which the server would refuse
	// (42P05) had pgsplit not forgotten the name.
	if _, err := c.PgConn().Prepare(ctx, "mine", "SELECT 43", nil); err != nil {
		t.Fatalf("prepare again after DEALLOCATE: %v", err)
	}
	r := c.PgConn().ExecPrepared(ctx, "mine", nil, nil, nil).Read()
	if r.Err != nil || len(r.Rows) != 1 || string(r.Rows[0][0]) != "43" {
		t.Fatalf("the new statement: %v, %v", r.Rows, r.Err)
	}
}
