package test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgsplit/pgsplit/config"
)

// leakCase is session state one client leaves inside code pgsplit cannot
// see into, and how the next client on the same backend would notice it.
type leakCase struct {
	name  string
	leave []string // client A's statements
	probe string   // client B's query: one text column, leaked when it is not ""
}

func leakCases() []leakCase {
	return []leakCase{
		{"set_config in a DO block (row-level security tenant)",
			[]string{"DO $$BEGIN PERFORM set_config('app.tenant', '42', false); END$$"},
			"SELECT coalesce(current_setting('app.tenant', true), '')"},
		{"set_config in a volatile function",
			[]string{"SELECT leak_set_tenant('43')", "SELECT leak_set_tenant('44')"},
			"SELECT coalesce(current_setting('app.tenant', true), '')"},
		{"set_config in a procedure (CALL)",
			[]string{"CALL leak_proc()"},
			"SELECT coalesce(current_setting('app.proc', true), '')"},
		{"LISTEN in a DO block",
			[]string{"DO $$BEGIN EXECUTE 'LISTEN leak_ch'; END$$"},
			"SELECT coalesce(string_agg(c, ','), '') FROM pg_listening_channels() c"},
		{"advisory lock in a DO block",
			[]string{"DO $$BEGIN PERFORM pg_advisory_lock(4242); END$$"},
			"SELECT coalesce(string_agg(objid::text, ','), '') FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()"},
		{"temporary table in a DO block",
			[]string{"DO $$BEGIN EXECUTE 'CREATE TEMP TABLE IF NOT EXISTS leak_tmp (x int)'; END$$"},
			"SELECT coalesce(to_regclass('pg_temp.leak_tmp')::text, '')"},
		{"role set in a function",
			[]string{"SELECT leak_set_role()"},
			"SELECT CASE WHEN current_user = session_user THEN '' ELSE current_user END"},
	}
}

func leakSchema(t *testing.T) {
	t.Helper()
	ctx := testCtx(t, 30*time.Second)
	su := superConn(t)
	defer closeConn(su)
	for _, sql := range []string{
		`CREATE OR REPLACE FUNCTION leak_set_tenant(v text) RETURNS void LANGUAGE plpgsql AS $$BEGIN PERFORM set_config('app.tenant', v, false); END$$`,
		`CREATE OR REPLACE PROCEDURE leak_proc() LANGUAGE plpgsql AS $$BEGIN PERFORM set_config('app.proc', 'p1', false); END$$`,
		`DO $$BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'leak_reader') THEN CREATE ROLE leak_reader; END IF; END$$`,
		`GRANT leak_reader TO ` + appUser,
		`CREATE OR REPLACE FUNCTION leak_set_role() RETURNS void LANGUAGE plpgsql AS $$BEGIN PERFORM set_config('role', 'leak_reader', false); END$$`,
	} {
		if _, err := su.Exec(ctx, sql); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
}

// TestTxPoolNoLeakThroughFunctionsDoAndCall: session state set inside a
// DO block, a function or a procedure — invisible to the router — never
// reaches the next client served by the same backend; with
// pool.reset_after_functions off, the same steps leak (so the test can
// fail). pool_size 1 makes both clients use one backend, which the test
// checks.
func TestTxPoolNoLeakThroughFunctionsDoAndCall(t *testing.T) {
	leakSchema(t)
	for _, reset := range []bool{true, false} {
		t.Run(fmt.Sprintf("reset_after_functions=%v", reset), func(t *testing.T) {
			p := startProxy(t, func(c *config.Config) {
				c.Pool.PoolSize, c.Pool.MaxOverflow = 1, 0
				c.Pool.ResetAfterFunctions = reset
			})
			ctx := testCtx(t, 60*time.Second)
			leaked := 0
			for _, lc := range leakCases() {
				for _, mode := range []pgx.QueryExecMode{pgx.QueryExecModeCacheStatement, pgx.QueryExecModeSimpleProtocol} {
					a := connect(t, p.appDSN(), func(c *pgx.ConnConfig) { c.DefaultQueryExecMode = mode })
					b := connect(t, p.appDSN())
					for _, sql := range lc.leave {
						if _, err := a.Exec(ctx, sql); err != nil {
							t.Fatalf("%s: A: %s: %v", lc.name, sql, err)
						}
						pidA := upstreamPID(t, a)
						var got string
						if err := b.QueryRow(ctx, lc.probe).Scan(&got); err != nil {
							t.Fatalf("%s: B: %v", lc.name, err)
						}
						if pidB := upstreamPID(t, b); pidB != pidA {
							t.Fatalf("%s: A and B used backends %d and %d: with pool_size 1 they must share one", lc.name, pidA, pidB)
						}
						if got != "" {
							leaked++
							if reset {
								t.Errorf("%s (%s): the next client sees %q", lc.name, mode, got)
							}
						}
					}
					closeConn(a)
					closeConn(b)
				}
			}
			if !reset && leaked == 0 {
				t.Error("with reset_after_functions off nothing leaked: the test cannot tell the reset works")
			}
			t.Logf("reset_after_functions=%v: %d leaks", reset, leaked)
		})
	}
}

// TestTxPoolResetAfterFunctionsKeepsPreparedStatements: the reset after a
// function keeps the backend's prepared statements (it is not DISCARD
// ALL: the statement is never prepared again, its prepare_time stays), and
// the client's own settings still apply afterwards.
func TestTxPoolResetAfterFunctionsKeepsPreparedStatements(t *testing.T) {
	leakSchema(t)
	p := startProxy(t, func(c *config.Config) { c.Pool.PoolSize, c.Pool.MaxOverflow = 1, 0 })
	ctx := testCtx(t, 30*time.Second)
	a := connect(t, p.appDSN())
	if _, err := a.Exec(ctx, "SET application_name TO 'leak-a'"); err != nil {
		t.Fatal(err)
	}
	prepared := func() (n int, at time.Time) {
		t.Helper()
		if err := a.QueryRow(context.Background(), "SELECT count(*)::int, coalesce(max(prepare_time), now()) FROM pg_prepared_statements WHERE statement LIKE 'SELECT $1::int + 1%'").Scan(&n, &at); err != nil {
			t.Fatal(err)
		}
		return n, at
	}
	var n int
	var first time.Time
	for i := range 3 {
		if err := a.QueryRow(ctx, "SELECT $1::int + 1", i).Scan(&n); err != nil {
			t.Fatal(err)
		}
		if i == 0 {
			_, first = prepared()
		}
		if _, err := a.Exec(ctx, "SELECT leak_set_tenant('x')"); err != nil {
			t.Fatal(err)
		}
	}
	if count, at := prepared(); count != 1 || !at.Equal(first) {
		t.Errorf("after 3 resets the backend has %d copies of the statement, prepared at %v (first at %v): want 1, never prepared again", count, at, first)
	}
	var name string
	if err := a.QueryRow(ctx, "SELECT current_setting('application_name')").Scan(&name); err != nil {
		t.Fatal(err)
	}
	if name != "leak-a" {
		t.Errorf("A's application_name after the resets: %q", name)
	}
}

// TestReplicaNoLeakThroughReadFunctions: a function listed in
// routing.read_functions runs on a replica; the state it sets there is
// reset on the hot standby too (every part of the reset is allowed in
// recovery) before the next client gets that backend; with
// pool.reset_after_functions off the same rounds leak.
func TestReplicaNoLeakThroughReadFunctions(t *testing.T) {
	leakSchema(t)
	waitAllCaughtUp(t)
	replica := cluster.Replicas[0]
	for _, reset := range []bool{true, false} {
		t.Run(fmt.Sprintf("reset_after_functions=%v", reset), func(t *testing.T) {
			p := routingProxy(t, func(c *config.Config) {
				c.Servers = c.Servers[:2] // the primary and one replica: one replica backend
				c.Pool.PoolSize, c.Pool.MaxOverflow = 1, 0
				c.Pool.ResetAfterFunctions = reset
				c.Routing.ReadFunctions = []string{"leak_set_tenant"}
				c.Routing.ReadYourWrites = config.RYWOff
			})
			ctx := testCtx(t, 30*time.Second)
			mark := p.logs.mark()
			leaked := 0
			for i := range 5 {
				a := connect(t, p.appDSN())
				var port int
				if err := a.QueryRow(ctx, "SELECT inet_server_port() FROM leak_set_tenant($1)", fmt.Sprint(100+i)).Scan(&port); err != nil {
					t.Fatal(err)
				}
				if port != replica.Port {
					t.Fatalf("the read function ran on port %d, want the replica %d", port, replica.Port)
				}
				pidA := upstreamPID(t, a)
				closeConn(a)
				b := connect(t, p.appDSN())
				var tenant string
				var pidB int64
				var portB int
				if err := b.QueryRow(ctx, "SELECT coalesce(current_setting('app.tenant', true), ''), pg_backend_pid(), inet_server_port()").Scan(&tenant, &pidB, &portB); err != nil {
					t.Fatal(err)
				}
				closeConn(b)
				if uint32(pidB) != pidA || portB != replica.Port {
					t.Fatalf("round %d: B on backend %d port %d, A on %d: they must share the replica backend", i, pidB, portB, pidA)
				}
				if tenant != "" {
					leaked++
					if reset {
						t.Errorf("round %d: the next client on the replica saw tenant %q", i, tenant)
					}
				}
			}
			if !reset && leaked == 0 {
				t.Error("with reset_after_functions off nothing leaked: the test cannot tell the reset works")
			}
			if strings.Contains(p.logs.since(mark), "reset after a function") {
				t.Errorf("the reset failed on the replica:\n%s", p.logs.since(mark))
			}
		})
	}
}

// TestTxPoolUnnamedStatementIsNotShared: a client that Binds the unnamed
// statement without having prepared one gets PostgreSQL's 26000, never the
// unnamed statement another client left on the backend (before: client B
// ran client A's statement and read its answer).
func TestTxPoolUnnamedStatementIsNotShared(t *testing.T) {
	p := startProxy(t, func(c *config.Config) { c.Pool.PoolSize, c.Pool.MaxOverflow = 1, 0 })
	ctx := testCtx(t, 30*time.Second)
	a := connect(t, p.appDSN())
	b := connect(t, p.appDSN())
	if _, err := a.PgConn().Prepare(ctx, "", "SELECT 'A-secret'::text", nil); err != nil {
		t.Fatal(err)
	}
	pidA := upstreamPID(t, a)
	// upstreamPID ran a simple Query, which destroys the unnamed
	// statement: prepare it again as the last thing A does.
	if _, err := a.PgConn().Prepare(ctx, "", "SELECT 'A-secret'::text", nil); err != nil {
		t.Fatal(err)
	}
	res := b.PgConn().ExecPrepared(ctx, "", nil, nil, nil).Read()
	if res.Err == nil {
		t.Fatalf("B bound an unnamed statement it never prepared and got %q", res.Rows)
	}
	wantState(t, res.Err, "26000", "Bind of an unnamed statement B never prepared")
	if pidB := upstreamPID(t, b); pidB != pidA {
		t.Fatalf("A and B used backends %d and %d: with pool_size 1 they must share one", pidA, pidB)
	}
	// A's own unnamed statement still works for A.
	res = a.PgConn().ExecPrepared(ctx, "", nil, nil, nil).Read()
	if res.Err != nil || len(res.Rows) != 1 || string(res.Rows[0][0]) != "A-secret" {
		t.Errorf("A's own unnamed statement: %v %q", res.Err, res.Rows)
	}
	mustSelectOne(t, b, "B after its error")
}

// TestUnknownDatabasesLeaveNoPools: with databases empty (any name may be
// tried), logins to databases that do not exist leave no pool and no
// statistics behind (before: one pool and one stats entry per name, for
// as long as pgsplit ran).
func TestUnknownDatabasesLeaveNoPools(t *testing.T) {
	p := startProxy(t, func(c *config.Config) { c.Databases = nil })
	ctx := testCtx(t, 60*time.Second)
	mustSelectOne(t, connect(t, p.appDSN()), "a client of a real database")
	pools, stats := p.srv.PoolCount(), p.srv.StatsDatabases()
	for i := range 30 {
		dsn := strings.Replace(p.appDSN(), "dbname="+appDatabase, fmt.Sprintf("dbname=nosuchdb_%d", i), 1)
		c, err := pgx.Connect(ctx, dsn)
		if err == nil {
			closeConn(c)
			t.Fatalf("logged in to nosuchdb_%d", i)
		}
		wantState(t, err, "3D000", "a database that does not exist")
	}
	if got := p.srv.PoolCount(); got != pools {
		t.Errorf("%d pools after 30 logins to missing databases, %d before", got, pools)
	}
	if got := p.srv.StatsDatabases(); got != stats {
		t.Errorf("statistics for %d databases after 30 logins to missing databases, %d before", got, stats)
	}
}
