package test

// Regression tests from a second review of transaction pooling.

import (
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/pgsplit/pgsplit/config"
)

// Regression (second review) 1: DISCARD ALL refused inside a transaction clears the pins anyway; the
// temp table stays on the connection, which goes to the next client.
func TestTxPoolRegress2FailedDiscardUnpins(t *testing.T) {
	p := oneConnProxy(t)
	a := connect(t, p.appDSN())
	t.Log(simple(t, a, "CREATE TEMP TABLE rv2_secret(x int)"))
	t.Log(simple(t, a, "INSERT INTO rv2_secret VALUES (42)"))
	mustSimple(t, a, "BEGIN")
	t.Logf("DISCARD in tx: %s", simple(t, a, "DISCARD ALL"))
	mustSimple(t, a, "ROLLBACK")
	t.Logf("pinned clients: %d", p.srv.PinnedClients())
	b := connect(t, p.appDSN())
	got := simple(t, b, "SELECT x::text FROM rv2_secret")
	t.Logf("B reads A's temp table: %s", got)
	if got == "42" {
		t.Errorf("LEAK: B sees A's temp table")
	}
}

// Regression (second review) 2: a SET executed in an extended-protocol batch that streams is never
// observed: the connection goes back with the SET, unrecorded.
func TestTxPoolRegress2StreamedSetUnobserved(t *testing.T) {
	p := oneConnProxy(t)
	fe, _ := rawConn(t, p)
	sendAll(t, fe, &pgproto3.Parse{Query: "SET work_mem = '77MB'"})
	time.Sleep(100 * time.Millisecond) // incomplete batch: streams
	sendAll(t, fe, &pgproto3.Bind{}, &pgproto3.Execute{}, &pgproto3.Sync{})
	t.Logf("A: %+v", readUntilReady(t, fe, 1))
	time.Sleep(200 * time.Millisecond)
	b := connect(t, p.appDSN())
	got := simple(t, b, "SHOW work_mem")
	t.Logf("B sees work_mem=%s", got)
	if got == "77MB" {
		t.Errorf("LEAK: B sees A's streamed SET")
	}
}

// Regression (second review) 3: a failing SET right after another SET (whose re-application pgsplit
// injects first: pending 2) counts as "inside a transaction" and is kept;
// replaying it fails, and A sees the value another client left.
func TestTxPoolRegress2FailedSetAfterInjectionLeak(t *testing.T) {
	failedSetLeak(t, "SET work_mem = '64MB'", "SET lock_timeout = 'bogus'")
}

// Regression (second review) 6: ROLLBACK followed by another statement in one Query: the rollback is
// not counted, the rolled-back SET stays.
func TestTxPoolRegress2RollbackInMultiNotCounted(t *testing.T) {
	p := oneConnProxy(t)
	a := connect(t, p.appDSN())
	mustSimple(t, a, "BEGIN")
	mustSimple(t, a, "SET work_mem = '68MB'")
	mustSimple(t, a, "ROLLBACK; SELECT 1")
	if got := simple(t, a, "SHOW work_mem"); got != "4MB" {
		t.Errorf("A after ROLLBACK: work_mem %s, want 4MB", got)
	}
}

// Regression (second review) 7: a batch that uses s1 and then parses s2 with the same SQL: the
// injected Close of the shared server name comes before the Bind of s1.
func TestTxPoolRegress2BindThenParseSameSQL(t *testing.T) {
	p := oneConnProxy(t)
	fe := rawFrontend(t, p)
	sendAll(t, fe, &pgproto3.Parse{Name: "s1", Query: "SELECT 'r7'"}, &pgproto3.Describe{ObjectType: 'S', Name: "s1"}, &pgproto3.Sync{})
	t.Logf("prepare: %+v", readUntilReady(t, fe, 1))
	sendAll(t, fe,
		&pgproto3.Bind{PreparedStatement: "s1"}, &pgproto3.Execute{},
		&pgproto3.Parse{Name: "s2", Query: "SELECT 'r7'"},
		&pgproto3.Bind{PreparedStatement: "s2"}, &pgproto3.Execute{},
		&pgproto3.Sync{})
	ans := readUntilReady(t, fe, 1)
	t.Logf("batch: %+v", ans)
	if len(ans[0].errors) > 0 {
		t.Errorf("valid batch failed: %+v", ans)
	}
}

// Regression (second review) 8: Parse s1, Close s1, Parse s1 (same SQL) in one batch: the client's
// Close does not reach the server name, the second Parse fails 42P05.
func TestTxPoolRegress2ParseCloseParseSameName(t *testing.T) {
	p := oneConnProxy(t)
	fe := rawFrontend(t, p)
	sendAll(t, fe,
		&pgproto3.Parse{Name: "s1", Query: "SELECT 'r8'"},
		&pgproto3.Bind{PreparedStatement: "s1"}, &pgproto3.Execute{},
		&pgproto3.Close{ObjectType: 'S', Name: "s1"},
		&pgproto3.Parse{Name: "s1", Query: "SELECT 'r8'"},
		&pgproto3.Bind{PreparedStatement: "s1"}, &pgproto3.Execute{},
		&pgproto3.Sync{})
	ans := readUntilReady(t, fe, 1)
	t.Logf("batch: %+v", ans)
	if len(ans[0].errors) > 0 {
		t.Errorf("valid batch failed: %+v", ans)
	}
}

// Regression (second review) 9: safety net skipped when pgsplit injected a setting on the replica
// first (pending counts the injection: inTx() is true, no watch).
func TestTxPoolRegress2SafetyNetAfterInjection(t *testing.T) {
	ctx := testCtx(t, 30*time.Second)
	writingFunction(t, "rv2_write")
	p := routingProxy(t, func(c *config.Config) { c.Routing.ReadFunctions = []string{"rv2_write"} })
	c := connect(t, p.appDSN(), func(cc *pgx.ConnConfig) { cc.DefaultQueryExecMode = pgx.QueryExecModeSimpleProtocol })
	if _, err := c.Exec(ctx, "SET work_mem = '8MB'"); err != nil {
		t.Fatal(err)
	}
	before := p.srv.Misroutes()
	if got := role(serverPort(t, c, "SELECT rv2_write()")); got != "primary" {
		t.Fatalf("the write ran on the %s", got)
	}
	if n := p.srv.Misroutes() - before; n != 1 {
		t.Fatalf("misroutes counted: %d, want 1 (the retry path ran)", n)
	}
}

// search_path + shared server statement names.
func TestTxPoolRegress2SearchPathSharedStatement(t *testing.T) {
	ctx := testCtx(t, 30*time.Second)
	su := superConn(t)
	for _, q := range []string{
		"DROP SCHEMA IF EXISTS rv2_a CASCADE", "DROP SCHEMA IF EXISTS rv2_b CASCADE",
		"CREATE SCHEMA rv2_a AUTHORIZATION app", "CREATE SCHEMA rv2_b AUTHORIZATION app",
		"CREATE TABLE rv2_a.t(v text)", "CREATE TABLE rv2_b.t(v text)",
		"INSERT INTO rv2_a.t VALUES ('A')", "INSERT INTO rv2_b.t VALUES ('B')",
		"ALTER TABLE rv2_a.t OWNER TO app", "ALTER TABLE rv2_b.t OWNER TO app",
	} {
		if _, err := su.Exec(ctx, q); err != nil {
			t.Fatal(q, err)
		}
	}
	p := oneConnProxy(t)
	a := connect(t, p.appDSN())
	b := connect(t, p.appDSN())
	mustSimple(t, a, "SET search_path TO rv2_a")
	mustSimple(t, b, "SET search_path TO rv2_b")
	q := func(c *pgx.Conn) string {
		var v string
		if err := c.QueryRow(ctx, "SELECT v FROM t").Scan(&v); err != nil {
			return "ERR " + err.Error()
		}
		return v
	}
	t.Logf("A: %s", q(a))
	t.Logf("B: %s", q(b))
	ga := q(a)
	gb := q(b)
	t.Logf("A again: %s, B again: %s", ga, gb)
	if ga != "A" || gb != "B" {
		t.Errorf("LEAK: A=%s B=%s", ga, gb)
	}
}

// Regression (second review) 10: a tentative on the replica replaced, unsettled, by one on the primary.
func TestTxPoolRegress2TentativeReplaced(t *testing.T) {
	p := routingProxy(t, nil)
	fe, _ := rawConn(t, p)
	sendAll(t, fe,
		&pgproto3.Query{String: "BEGIN READ ONLY"},
		&pgproto3.Query{String: "SET work_mem = '5MB'"},
		&pgproto3.Query{String: "ROLLBACK"},
		&pgproto3.Query{String: "SET lock_timeout = '3s'"})
	t.Logf("%+v", readUntilReady(t, fe, 4))
	sendAll(t, fe, &pgproto3.Query{String: "SHOW work_mem"})
	ans := readUntilReady(t, fe, 1)
	t.Logf("SHOW: %+v", ans)
	if len(ans[0].rows) != 1 || ans[0].rows[0] != "4MB" {
		t.Errorf("rolled-back SET kept: %+v", ans)
	}
}
