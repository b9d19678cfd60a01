package test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgsplit/pgsplit/config"
)

// routingProxy is a pgsplit with reads offloaded to the two replicas.
func routingProxy(t *testing.T, mutate func(*config.Config)) *testProxy {
	return startProxy(t, func(c *config.Config) {
		c.Routing = config.DefaultRouting()
		// Reads right after writes in these tests must land on replicas
		// whatever this machine's replication delay (read-your-writes
		// waits for it; ryw_test.go measures the default wait).
		c.Routing.ReadYourWritesWait = 2 * time.Second
		if mutate != nil {
			mutate(c)
		}
	})
}

// serverPort runs sql (which must return inet_server_port() as its only
// column) and says which server answered.
func serverPort(t *testing.T, q interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}, sql string, args ...any) int {
	t.Helper()
	var port int
	if err := q.QueryRow(testCtx(t, 10*time.Second), sql, args...).Scan(&port); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return port
}

func role(port int) string {
	if port == cluster.Primary.Port {
		return "primary"
	}
	for _, r := range cluster.Replicas {
		if port == r.Port {
			return "replica"
		}
	}
	return fmt.Sprintf("unknown port %d", port)
}

// TestRoutingReadsAndWrites: reads land on replicas, writes on the primary,
// in the simple and the extended protocol; with read_from: primary (the
// feature off) the same reads stay on the primary, so the test can fail.
func TestRoutingReadsAndWrites(t *testing.T) {
	cases := []struct {
		sql  string
		args []any
		want string
	}{
		{"SELECT inet_server_port()", nil, "replica"},
		{"SELECT inet_server_port() FROM kv LIMIT 1 FOR UPDATE", nil, "primary"},
		{"SELECT inet_server_port() WHERE $1::int > 0", []any{1}, "replica"},
		{"/* pgsplit:primary */ SELECT inet_server_port()", nil, "primary"},
		{"SELECT inet_server_port() WHERE nextval('shutdown_rows_id_seq') > 0", nil, "primary"},
		{"WITH w AS (INSERT INTO kv VALUES ('rt-' || $1::text, 1) ON CONFLICT (k) DO UPDATE SET v = kv.v + 1 RETURNING 1) SELECT inet_server_port() FROM w", []any{"cte"}, "primary"},
		{"/* pgsplit:replica */ INSERT INTO kv VALUES ('rt-hint', 1) ON CONFLICT (k) DO UPDATE SET v = 2 RETURNING inet_server_port()", nil, "primary"},
		{"SELECT inet_server_port() WHERE pg_is_in_recovery() IS NOT NULL", nil, "primary"},
	}
	for _, mode := range []pgx.QueryExecMode{pgx.QueryExecModeSimpleProtocol, pgx.QueryExecModeCacheStatement} {
		t.Run(mode.String(), func(t *testing.T) {
			p := routingProxy(t, nil)
			c := connect(t, p.appDSN(), func(cc *pgx.ConnConfig) { cc.DefaultQueryExecMode = mode })
			if _, err := c.Exec(testCtx(t, 5*time.Second), "INSERT INTO kv VALUES ('rt-row', 1) ON CONFLICT (k) DO NOTHING"); err != nil {
				t.Fatal(err)
			}
			for _, tc := range cases {
				if got := role(serverPort(t, c, tc.sql, tc.args...)); got != tc.want {
					t.Errorf("%s: ran on the %s, want the %s", tc.sql, got, tc.want)
				}
			}
		})
	}
	t.Run("read_from primary keeps reads on the primary", func(t *testing.T) {
		p := routingProxy(t, func(c *config.Config) { c.Routing.ReadFrom = config.ReadFromPrimary })
		c := connect(t, p.appDSN())
		if got := role(serverPort(t, c, "SELECT inet_server_port()")); got != "primary" {
			t.Fatalf("ran on the %s", got)
		}
	})
}

// TestRoutingTransactions: with routing.transactions: primary a read-write
// transaction stays whole on the primary; BEGIN READ ONLY runs whole on one
// replica in both modes.
func TestRoutingTransactions(t *testing.T) {
	p := routingProxy(t, func(c *config.Config) { c.Routing.Transactions = config.TxPrimary })
	c := connect(t, p.appDSN())
	ctx := testCtx(t, 20*time.Second)

	tx, err := c.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got := role(serverPort(t, tx, "SELECT inet_server_port()")); got != "primary" {
		t.Errorf("read in a read-write transaction ran on the %s", got)
	}
	if _, err := tx.Exec(ctx, "INSERT INTO kv VALUES ('rt-tx', 1) ON CONFLICT (k) DO NOTHING"); err != nil {
		t.Fatal(err)
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}

	for _, mode := range []string{config.TxPrimary, config.TxSplit} {
		p := routingProxy(t, func(c *config.Config) { c.Routing.Transactions = mode })
		c := connect(t, p.appDSN())
		ro, err := c.BeginTx(ctx, pgx.TxOptions{AccessMode: pgx.ReadOnly})
		if err != nil {
			t.Fatal(err)
		}
		first := serverPort(t, ro, "SELECT inet_server_port()")
		second := serverPort(t, ro, "SELECT inet_server_port() WHERE $1::int = 1", 1)
		if role(first) != "replica" || first != second {
			t.Errorf("%s: read-only transaction ran on %d then %d, want one replica", mode, first, second)
		}
		if err := ro.Commit(ctx); err != nil {
			t.Fatal(err)
		}
		// After the transaction, reads are offloaded again.
		if got := role(serverPort(t, c, "SELECT inet_server_port()")); got != "replica" {
			t.Errorf("%s: read after the transactions ran on the %s", mode, got)
		}
	}
}

// TestRoutingSplitTransaction: under routing.transactions: split (the
// default) a transaction's leading reads run on a replica and it moves to
// the primary at its first write; the client sees one transaction.
func TestRoutingSplitTransaction(t *testing.T) {
	p := routingProxy(t, nil)
	c := connect(t, p.appDSN())
	ctx := testCtx(t, 20*time.Second)
	key := fmt.Sprintf("rt-split-%d", time.Now().UnixNano())

	tx, err := c.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st := c.PgConn().TxStatus(); st != 'T' {
		t.Fatalf("after BEGIN the client sees status %q, want T", st)
	}
	if got := role(serverPort(t, tx, "SELECT inet_server_port()")); got != "replica" {
		t.Errorf("leading read ran on the %s, want a replica", got)
	}
	if _, err := tx.Exec(ctx, "INSERT INTO kv VALUES ($1, 1)", key); err != nil {
		t.Fatal(err)
	}
	var n int
	var port int
	if err := tx.QueryRow(ctx, "SELECT count(*), inet_server_port() FROM kv WHERE k = $1", key).Scan(&n, &port); err != nil {
		t.Fatal(err)
	}
	if n != 1 || role(port) != "primary" {
		t.Errorf("after the write: %d rows on the %s, want 1 on the primary", n, role(port))
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	su := superConn(t)
	if err := su.QueryRow(ctx, "SELECT count(*) FROM kv WHERE k = $1", key).Scan(&n); err != nil || n != 1 {
		t.Fatalf("committed row on the primary: %d %v", n, err)
	}

	// A transaction that never ran anything is answered by pgsplit.
	tx, err = c.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	// An error in the replica part aborts the transaction as on one server:
	// the write after it fails with 25P02 instead of moving.
	tx, err = c.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, "SELECT 1/0"); sqlState(err) != "22012" {
		t.Fatalf("want 22012, got %v", err)
	}
	if _, err := tx.Exec(ctx, "INSERT INTO kv VALUES ($1, 2)", key+"-x"); sqlState(err) != "25P02" {
		t.Fatalf("write after an error: want 25P02, got %v", err)
	}
	if err := tx.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	if c.PgConn().TxStatus() != 'I' {
		t.Fatalf("status after ROLLBACK: %q", c.PgConn().TxStatus())
	}
	if got := role(serverPort(t, c, "SELECT inet_server_port()")); got != "replica" {
		t.Errorf("read after the transactions ran on the %s", got)
	}

	// SET TRANSACTION READ ONLY first: the whole transaction stays on a
	// replica, and a write in it fails as in any read-only transaction.
	tx, err = c.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, "SET TRANSACTION READ ONLY"); err != nil {
		t.Fatal(err)
	}
	if got := role(serverPort(t, tx, "SELECT inet_server_port()")); got != "replica" {
		t.Errorf("read-only transaction ran on the %s", got)
	}
	if _, err := tx.Exec(ctx, "INSERT INTO kv VALUES ($1, 3)", key+"-ro"); sqlState(err) != "25006" {
		t.Errorf("write in a read-only transaction: want 25006, got %v", err)
	}
	if err := tx.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
}

// TestRoutingSessionState: harmless SETs follow the client to the replica;
// temp tables pin the session to the primary and keep working; the
// pgsplit.route setting is answered by pgsplit.
func TestRoutingSessionState(t *testing.T) {
	p := routingProxy(t, nil)
	c := connect(t, p.appDSN())
	ctx := testCtx(t, 20*time.Second)

	if _, err := c.Exec(ctx, "SET statement_timeout = '7s'"); err != nil {
		t.Fatal(err)
	}
	var timeout string
	var port int
	if err := c.QueryRow(ctx, "SELECT current_setting('statement_timeout'), inet_server_port()").Scan(&timeout, &port); err != nil {
		t.Fatal(err)
	}
	if role(port) != "replica" || timeout != "7s" {
		t.Errorf("statement_timeout %q on the %s, want 7s on a replica", timeout, role(port))
	}

	if _, err := c.Exec(ctx, "SET pgsplit.route = primary"); err != nil {
		t.Fatal(err)
	}
	var route string
	if err := c.QueryRow(ctx, "SHOW pgsplit.route").Scan(&route); err != nil || route != "primary" {
		t.Errorf("SHOW pgsplit.route = %q, %v", route, err)
	}
	if got := role(serverPort(t, c, "SELECT inet_server_port()")); got != "primary" {
		t.Errorf("with pgsplit.route = primary a read ran on the %s", got)
	}
	if _, err := c.Exec(ctx, "SET pgsplit.route = sideways"); sqlState(err) != "22023" {
		t.Errorf("bad pgsplit.route value: want 22023, got %v", err)
	}
	if _, err := c.Exec(ctx, "RESET pgsplit.route"); err != nil {
		t.Fatal(err)
	}
	if got := role(serverPort(t, c, "SELECT inet_server_port()")); got != "replica" {
		t.Errorf("after RESET pgsplit.route a read ran on the %s", got)
	}

	if _, err := c.Exec(ctx, "CREATE TEMP TABLE rt_tmp (x int); INSERT INTO rt_tmp VALUES (42)"); err != nil {
		t.Fatal(err)
	}
	var x int
	if err := c.QueryRow(ctx, "SELECT x FROM rt_tmp").Scan(&x); err != nil || x != 42 {
		t.Fatalf("temp table read after creating it: %d %v", x, err)
	}
	if got := role(serverPort(t, c, "SELECT inet_server_port()")); got != "primary" {
		t.Errorf("a session with a temp table read on the %s", got)
	}
	if _, err := c.Exec(ctx, "DISCARD ALL"); err != nil {
		t.Fatal(err)
	}
	// DISCARD ALL dropped pgx's cached statements, as on PostgreSQL: ask
	// with a statement pgx has not prepared yet.
	if got := role(serverPort(t, c, "SELECT inet_server_port() AS after_discard")); got != "replica" {
		t.Errorf("after DISCARD ALL a read ran on the %s", got)
	}
}

// TestRoutingPreparedAcrossServers: a statement pgx prepared on the primary
// (inside a transaction) is executed later on a replica, and one prepared
// on a replica inside a write transaction: pgsplit prepares it where it
// runs.
func TestRoutingPreparedAcrossServers(t *testing.T) {
	// transactions: primary, so the transaction below prepares on the primary.
	p := routingProxy(t, func(c *config.Config) { c.Routing.Transactions = config.TxPrimary })
	c := connect(t, p.appDSN())
	ctx := testCtx(t, 20*time.Second)
	const q = "SELECT inet_server_port() WHERE $1::int > 0"

	tx, err := c.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got := role(serverPort(t, tx, q, 1)); got != "primary" {
		t.Errorf("in the transaction: %s", got)
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 3; i++ {
		if got := role(serverPort(t, c, q, i+1)); got != "replica" {
			t.Errorf("cached statement after the transaction ran on the %s", got)
		}
	}
	tx, err = c.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got := role(serverPort(t, tx, q, 5)); got != "primary" {
		t.Errorf("cached statement in a new transaction ran on the %s", got)
	}
	if err := tx.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
}

// TestRoutingReplicaDown: with no reachable replica, reads fall back to the
// primary and the client sees no error.
func TestRoutingReplicaDown(t *testing.T) {
	p := routingProxy(t, func(c *config.Config) {
		c.Servers = []config.Server{
			{Host: cluster.Primary.Host, Port: cluster.Primary.Port, Role: config.RolePrimary},
			{Host: "127.0.0.1", Port: 1, Role: config.RoleReplica, Weight: 1},
		}
	})
	c := connect(t, p.appDSN())
	if got := role(serverPort(t, c, "SELECT inet_server_port()")); got != "primary" {
		t.Fatalf("ran on the %s", got)
	}
}

// TestRoutingSafetyNet: a writing function wrongly declared safe
// (routing.read_functions) is sent to a replica, which refuses it with
// 25006; pgsplit runs it again on the primary and the client sees only the
// result. The misroute counter proves the retry path ran. In the extended
// protocol the refusal comes after BindComplete and RowDescription, which
// the safety net holds back too.
func TestRoutingSafetyNet(t *testing.T) {
	writingFunction(t, "rt_write")
	p := routingProxy(t, func(c *config.Config) { c.Routing.ReadFunctions = []string{"rt_write"} })
	for _, mode := range []pgx.QueryExecMode{pgx.QueryExecModeSimpleProtocol, pgx.QueryExecModeCacheStatement} {
		t.Run(mode.String(), func(t *testing.T) {
			c := connect(t, p.appDSN(), func(cc *pgx.ConnConfig) { cc.DefaultQueryExecMode = mode })
			before := p.srv.Misroutes()
			if got := role(serverPort(t, c, "SELECT rt_write()")); got != "primary" {
				t.Fatalf("the write ran on the %s", got)
			}
			if n := p.srv.Misroutes() - before; n != 1 {
				t.Fatalf("misroutes counted: %d, want 1", n)
			}
			// The session is still in order: the next read is offloaded.
			if got := role(serverPort(t, c, "SELECT inet_server_port()")); got != "replica" {
				t.Fatalf("next read ran on the %s", got)
			}
		})
	}
}

// TestRoutingListenSession: LISTEN pins the session to the primary, where
// notifications keep arriving; UNLISTEN * releases it.
func TestRoutingListenSession(t *testing.T) {
	p := routingProxy(t, nil)
	ctx := testCtx(t, 20*time.Second)
	a := connect(t, p.appDSN())
	b := connect(t, p.appDSN())
	if _, err := a.Exec(ctx, "LISTEN rt_chan"); err != nil {
		t.Fatal(err)
	}
	if got := role(serverPort(t, a, "SELECT inet_server_port()")); got != "primary" {
		t.Errorf("a listening session read on the %s", got)
	}
	if _, err := b.Exec(ctx, "SELECT pg_notify('rt_chan', 'hello')"); err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	n, err := a.WaitForNotification(wctx)
	if err != nil || n.Payload != "hello" {
		t.Fatalf("notification: %+v %v", n, err)
	}
	if _, err := a.Exec(ctx, "UNLISTEN *"); err != nil {
		t.Fatal(err)
	}
	if got := role(serverPort(t, a, "SELECT inet_server_port()")); got != "replica" {
		t.Errorf("after UNLISTEN * a read ran on the %s", got)
	}
}

// TestRoutingCatalogVolatility: user functions are judged by their
// volatility in pg_proc, which pgsplit reads once per database: a STABLE
// function may run on a replica, a VOLATILE one goes to the primary.
func TestRoutingCatalogVolatility(t *testing.T) {
	ctx := testCtx(t, 30*time.Second)
	su := superConn(t)
	for _, q := range []string{
		`CREATE OR REPLACE FUNCTION public.rt_stable() RETURNS int LANGUAGE sql STABLE AS $$ SELECT 1 $$`,
		`CREATE OR REPLACE FUNCTION public.rt_volatile() RETURNS int LANGUAGE sql VOLATILE AS $$ SELECT 1 $$`,
	} {
		if _, err := su.Exec(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	for _, r := range cluster.Replicas {
		rc, err := pgx.Connect(ctx, cluster.SuperuserDSN(r, appDatabase))
		if err != nil {
			t.Fatal(err)
		}
		waitFor(t, 10*time.Second, "functions replicated", func() (bool, string) {
			var n int
			err := rc.QueryRow(ctx, "SELECT count(*) FROM pg_proc WHERE proname IN ('rt_stable', 'rt_volatile')").Scan(&n)
			return err == nil && n == 2, fmt.Sprint(n, err)
		})
		_ = rc.Close(ctx)
	}
	p := routingProxy(t, nil)
	c := connect(t, p.appDSN())
	waitFor(t, 10*time.Second, "catalog loaded: the STABLE function offloaded", func() (bool, string) {
		r := role(serverPort(t, c, "SELECT inet_server_port() WHERE rt_stable() = 1"))
		return r == "replica", r
	})
	if got := role(serverPort(t, c, "SELECT inet_server_port() WHERE rt_volatile() = 1")); got != "primary" {
		t.Errorf("a VOLATILE user function ran on the %s", got)
	}
}

// writingFunction creates public.name(), a VOLATILE function that inserts
// into kv and returns the server's port, and waits until both replicas
// have it.
func writingFunction(t *testing.T, name string) {
	t.Helper()
	ctx := testCtx(t, 30*time.Second)
	su := superConn(t)
	if _, err := su.Exec(ctx, fmt.Sprintf(`CREATE OR REPLACE FUNCTION public.%s() RETURNS int LANGUAGE sql VOLATILE AS
		$$ INSERT INTO kv VALUES ('%s-' || clock_timestamp()::text, 1) RETURNING inet_server_port() $$`, name, name)); err != nil {
		t.Fatal(err)
	}
	for _, r := range cluster.Replicas {
		rc, err := pgx.Connect(ctx, cluster.SuperuserDSN(r, appDatabase))
		if err != nil {
			t.Fatal(err)
		}
		waitFor(t, 10*time.Second, "function replicated", func() (bool, string) {
			var n int
			err := rc.QueryRow(ctx, "SELECT count(*) FROM pg_proc WHERE proname = $1", name).Scan(&n)
			return err == nil && n == 1, fmt.Sprint(n, err)
		})
		_ = rc.Close(ctx)
	}
}

// TestRoutingSerializableReadOnlyGoesToPrimary: a hot standby refuses
// serializable transactions, so a READ ONLY one that is SERIALIZABLE runs
// on the primary, whether it says so in START TRANSACTION or in a SET
// TRANSACTION right after BEGIN READ ONLY; plain READ ONLY stays on a
// replica (the control).
func TestRoutingSerializableReadOnlyGoesToPrimary(t *testing.T) {
	p := routingProxy(t, nil)
	c := connect(t, p.appDSN(), func(cc *pgx.ConnConfig) { cc.DefaultQueryExecMode = pgx.QueryExecModeSimpleProtocol })
	ctx := testCtx(t, 20*time.Second)
	cases := []struct {
		name  string
		begin []string
		want  string
	}{
		{"START TRANSACTION SERIALIZABLE READ ONLY DEFERRABLE", []string{"START TRANSACTION ISOLATION LEVEL SERIALIZABLE, READ ONLY, DEFERRABLE"}, "primary"},
		{"BEGIN READ ONLY then SET TRANSACTION SERIALIZABLE", []string{"BEGIN READ ONLY", "SET TRANSACTION ISOLATION LEVEL SERIALIZABLE"}, "primary"},
		{"BEGIN READ ONLY (control)", []string{"BEGIN READ ONLY"}, "replica"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			for _, q := range tc.begin {
				if _, err := c.Exec(ctx, q); err != nil {
					t.Fatalf("%s: %v", q, err)
				}
			}
			var port int
			var iso, ro string
			if err := c.QueryRow(ctx, "SELECT inet_server_port(), current_setting('transaction_isolation'), current_setting('transaction_read_only')").Scan(&port, &iso, &ro); err != nil {
				t.Fatalf("read in the transaction: %v", err)
			}
			if _, err := c.Exec(ctx, "COMMIT"); err != nil {
				t.Fatal(err)
			}
			if got := role(port); got != tc.want {
				t.Errorf("ran on the %s, want the %s", got, tc.want)
			}
			if ro != "on" || (tc.want == "primary" && iso != "serializable") {
				t.Errorf("transaction_read_only %s, isolation %s", ro, iso)
			}
		})
	}
}
