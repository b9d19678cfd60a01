package test

// Regression tests for transaction pooling, from a review of the first
// version: each scenario below once lost a connection, shifted answers or
// leaked a setting between clients.

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgproto3"

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

// Regression 1: a SET inside a multi-statement string leaks to the next client.
func TestTxPoolRegressMultiStatementSetLeak(t *testing.T) {
	p := oneConnProxy(t)
	a := connect(t, p.appDSN())
	mustSimple(t, a, "SET statement_timeout = '4321'; SELECT 1")
	if got := simple(t, a, "SHOW statement_timeout"); got != "4321ms" {
		t.Fatalf("A's own statement_timeout: %s", got)
	}
	closeConn(a)
	b := connect(t, p.appDSN())
	got := simple(t, b, "SHOW statement_timeout")
	t.Logf("B sees statement_timeout=%s", got)
	if got != "0" {
		t.Errorf("LEAK: client B sees statement_timeout %s", got)
	}
}

// Regression 1b: while A stays connected and idle. A SET inside a
// multi-statement string, and SET SESSION CHARACTERISTICS, pin A to its
// connection (pgsplit cannot follow which part ran): B gets another one
// and sees the defaults.
func TestTxPoolRegressMultiStatementSetLeakLive(t *testing.T) {
	p := startProxy(t, func(c *config.Config) { c.Pool.PoolSize, c.Pool.MaxOverflow = 2, 0 })
	a := connect(t, p.appDSN())
	mustSimple(t, a, "SET search_path TO pg_catalog; SELECT 1")
	b := connect(t, p.appDSN())
	got := simple(t, b, "SHOW search_path")
	if got != `"$user", public` {
		t.Errorf("LEAK: client B sees search_path %s", got)
	}
	if got := simple(t, a, "SHOW search_path"); got != "pg_catalog" {
		t.Errorf("A lost its search_path: %s", got)
	}
	if n := p.srv.PinnedClients(); n != 1 {
		t.Errorf("PinnedClients = %d, want 1 (A)", n)
	}
}

// Regression 2: SET SESSION CHARACTERISTICS leaks.
func TestTxPoolRegressSessionCharacteristicsLeak(t *testing.T) {
	p := startProxy(t, func(c *config.Config) { c.Pool.PoolSize, c.Pool.MaxOverflow = 2, 0 })
	a := connect(t, p.appDSN())
	mustSimple(t, a, "SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY")
	// The session books the pin after it relayed the answer: give it a moment.
	waitFor(t, 2*time.Second, "A pinned", func() (bool, string) {
		n := p.srv.PinnedClients()
		return n == 1, fmt.Sprintf("PinnedClients = %d", n)
	})
	if n := p.srv.PinnedClients(); n != 1 {
		t.Fatalf("PinnedClients = %d, want 1 (A): else B may get another backend and prove nothing", n)
	}
	b := connect(t, p.appDSN())
	got := simple(t, b, "SHOW default_transaction_read_only")
	if got != "off" {
		t.Errorf("LEAK: client B sees default_transaction_read_only %s; insert: %s", got,
			mustSimple(t, b, "INSERT INTO kv(k,v) VALUES ('review-ro',1) RETURNING 1"))
	}
	if got := simple(t, a, "SHOW default_transaction_read_only"); got != "on" {
		t.Errorf("A lost its session characteristics: %s", got)
	}
}

// Regression 4b: pipelined RESET ALL + SELECT (single statements).
func TestTxPoolRegressPipelinedReset(t *testing.T) {
	p := oneConnProxy(t)
	fe, _ := rawConn(t, p, "application_name=foo")
	fe.Send(&pgproto3.Query{String: "RESET ALL"})
	fe.Send(&pgproto3.Query{String: "SELECT 'second'"})
	if err := fe.Flush(); err != nil {
		t.Fatal(err)
	}
	ans := readUntilReady(t, fe, 2)
	t.Logf("answers %+v", ans)
	if len(ans[0].rows) != 0 || len(ans[1].rows) != 1 || ans[1].rows[0] != "second" {
		t.Errorf("answers shifted: %+v", ans)
	}
}

// Regression 5: two client names with the same SQL parsed in one batch.
func TestTxPoolRegressSameSQLTwoNames(t *testing.T) {
	p := oneConnProxy(t)
	fe := rawFrontend(t, p)
	fe.Send(&pgproto3.Parse{Name: "s1", Query: "SELECT 1"})
	fe.Send(&pgproto3.Parse{Name: "s2", Query: "SELECT 1"})
	fe.Send(&pgproto3.Describe{ObjectType: 'S', Name: "s2"})
	fe.Send(&pgproto3.Sync{})
	if err := fe.Flush(); err != nil {
		t.Fatal(err)
	}
	ans := readUntilReady(t, fe, 1)
	t.Logf("answers %+v", ans)
	if len(ans[0].errors) > 0 {
		t.Errorf("valid batch failed: %+v", ans)
	}
}

// Regression 6: Parse-only Sync after a Flush-ended segment is answered locally; the
// server never gets the Sync; the write is lost when the client leaves.
func TestTxPoolRegressParseOnlyAfterFlush(t *testing.T) {
	p := oneConnProxy(t)
	fe, nc := rawConn(t, p)
	key := fmt.Sprintf("review-%d", time.Now().UnixNano())
	fe.Send(&pgproto3.Parse{Query: "INSERT INTO kv(k, v) VALUES ($1, 1)"})
	fe.Send(&pgproto3.Bind{Parameters: [][]byte{[]byte(key)}})
	fe.Send(&pgproto3.Execute{})
	fe.Send(&pgproto3.Flush{})
	if err := fe.Flush(); err != nil {
		t.Fatal(err)
	}
	for {
		m, err := fe.Receive()
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("got %T", m)
		if _, ok := m.(*pgproto3.CommandComplete); ok {
			break
		}
		if e, ok := m.(*pgproto3.ErrorResponse); ok {
			t.Fatalf("error %v", e.Message)
		}
	}
	fe.Send(&pgproto3.Parse{Name: "later", Query: "SELECT 1"})
	fe.Send(&pgproto3.Sync{})
	if err := fe.Flush(); err != nil {
		t.Fatal(err)
	}
	ans := readUntilReady(t, fe, 1)
	t.Logf("answer to the Sync: %+v", ans)
	nc.Close()
	time.Sleep(500 * time.Millisecond)
	su := superConn(t)
	var n int
	if err := su.QueryRow(testCtx(t, 5*time.Second), "SELECT count(*) FROM kv WHERE k = $1", key).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 1 {
		t.Errorf("client saw ReadyForQuery %q after its Sync but the INSERT is gone (rows %d)", ans[0].status, n)
	}
}

// Regression 7: a Parse skipped by the server (error earlier in the same Sync
// segment, sent after a Flush) is recorded as prepared; another client's
// Bind of the same SQL then fails with 26000.
func TestTxPoolRegressSkippedParseConfirmed(t *testing.T) {
	p := oneConnProxy(t)
	fe := rawFrontend(t, p)
	fe.Send(&pgproto3.Parse{Query: "SELECT 1/0"})
	fe.Send(&pgproto3.Bind{})
	fe.Send(&pgproto3.Execute{})
	fe.Send(&pgproto3.Flush{})
	if err := fe.Flush(); err != nil {
		t.Fatal(err)
	}
	for {
		m, err := fe.Receive()
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := m.(*pgproto3.ErrorResponse); ok {
			break
		}
	}
	fe.Send(&pgproto3.Parse{Name: "s7", Query: "SELECT 7"})
	fe.Send(&pgproto3.Describe{ObjectType: 'S', Name: "s7"})
	fe.Send(&pgproto3.Sync{})
	if err := fe.Flush(); err != nil {
		t.Fatal(err)
	}
	t.Logf("A's batch: %+v", readUntilReady(t, fe, 1))
	// Let the session settle; then a second client on the same (only)
	// server connection.
	time.Sleep(200 * time.Millisecond)
	fe2 := rawFrontend(t, p)
	fe2.Send(&pgproto3.Parse{Name: "mine", Query: "SELECT 7"})
	fe2.Send(&pgproto3.Sync{})
	fe2.Send(&pgproto3.Bind{PreparedStatement: "mine"})
	fe2.Send(&pgproto3.Execute{})
	fe2.Send(&pgproto3.Sync{})
	if err := fe2.Flush(); err != nil {
		t.Fatal(err)
	}
	ans := readUntilReady(t, fe2, 2)
	t.Logf("B: %+v", ans)
	if len(ans[1].errors) > 0 {
		t.Errorf("B's Bind failed: %+v", ans)
	}
}

// Regression 8: COPY that fails while the client still streams: the rest of the copy
// data makes the session acquire a connection; with none free it gets a
// stray ERROR and stays pinned (skipSync).
func TestTxPoolRegressCopyAfterError(t *testing.T) {
	p := startProxy(t, func(c *config.Config) { c.Pool.PoolSize, c.Pool.MaxOverflow, c.Pool.PoolTimeout = 1, 0, time.Second })
	ctx := testCtx(t, 30*time.Second)
	fe := rawFrontend(t, p)
	fe.Send(&pgproto3.Query{String: "COPY copy_rows(id) FROM STDIN"})
	if err := fe.Flush(); err != nil {
		t.Fatal(err)
	}
	for {
		m, err := fe.Receive()
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := m.(*pgproto3.CopyInResponse); ok {
			break
		}
	}
	fe.Send(&pgproto3.CopyData{Data: []byte("not a number\n")})
	if err := fe.Flush(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond) // server: E + Z; the pump gives the connection back
	// another client takes the only connection
	b := connect(t, p.appDSN())
	tx, err := b.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	fe.Send(&pgproto3.CopyData{Data: []byte("2\n")})
	fe.Send(&pgproto3.CopyDone{})
	if err := fe.Flush(); err != nil {
		t.Fatal(err)
	}
	ans := readUntilReady(t, fe, 1) // the COPY's own answer
	t.Logf("copy answer %+v", ans)
	time.Sleep(1500 * time.Millisecond) // beyond pool_timeout (1 s)
	_ = tx.Rollback(ctx)
	// anything more?
	fe.Send(&pgproto3.Query{String: "SELECT 'after'"})
	_ = fe.Flush()
	more := readUntilReady(t, fe, 1)
	t.Logf("next answer %+v", more)
	if len(more[0].errors) > 0 || len(more[0].rows) != 1 || more[0].rows[0] != "after" {
		t.Errorf("stray answer after COPY: %+v", more)
	}
	if n := p.srv.PinnedClients(); n > 0 {
		t.Errorf("%d client(s) pinned after the COPY", n)
	}
}

// Regression 3b: a SET rolled back is replayed on the client's next connection.
func TestTxPoolRegressRolledBackSetOtherConn(t *testing.T) {
	p := startProxy(t, func(c *config.Config) { c.Pool.PoolSize, c.Pool.MaxOverflow = 2, 0 })
	a := connect(t, p.appDSN())
	x := connect(t, p.appDSN())
	y := connect(t, p.appDSN())
	mustSimple(t, a, "BEGIN")
	mustSimple(t, a, "SET work_mem = '77MB'")
	mustSimple(t, a, "ROLLBACK")
	if got := simple(t, a, "SHOW work_mem"); got != "4MB" {
		t.Fatalf("A on the same connection after ROLLBACK: work_mem %s, want 4MB", got)
	}
	pidBefore := upstreamPID(t, a)
	// x and y each hold one of the two connections in a transaction; the
	// one holding the other connection than A's lets go, so A's next
	// statement runs there and the one holding A's keeps it.
	mustSimple(t, x, "BEGIN")
	pidX := mustSimple(t, x, "SELECT pg_backend_pid()")
	mustSimple(t, y, "BEGIN")
	pidY := mustSimple(t, y, "SELECT pg_backend_pid()")
	free, holder := x, y
	if pidX == fmt.Sprint(pidBefore) {
		free, holder = y, x
	}
	mustSimple(t, free, "COMMIT") // the connection that is not A's is free again
	got := simple(t, a, "SHOW work_mem")
	if pidAfter := upstreamPID(t, a); pidAfter == pidBefore {
		t.Fatalf("A got backend %d while another client held it (x on %s, y on %s)", pidAfter, pidX, pidY)
	}
	if got != "4MB" {
		t.Errorf("rolled-back SET replayed on the other connection: work_mem %s, want 4MB", got)
	}
	mustSimple(t, holder, "COMMIT")
}

// Regression 9: the session's settle gives the connection back while the pump is
// still writing the last answer to a client that does not read; the client
// goes away; the pump ends with a client write error and nobody returns or
// discards the connection.
func TestTxPoolRegressReleasedPumpLeak(t *testing.T) {
	p := oneConnProxy(t)
	busy := 0 // rounds where the client left while its connection was still working
	// Sizes around what the loopback socket buffers hold (they autotune up
	// to net.ipv4.tcp_wmem's maximum, 4 MB on Debian), so that some rounds
	// leave the pump blocked writing to the client.
	for kb := 3000; kb <= 9000; kb += 300 {
		fe, nc := rawConn(t, p)
		_ = nc.(interface{ SetReadBuffer(int) error }).SetReadBuffer(4096)
		fe.Send(&pgproto3.Query{String: fmt.Sprintf("SELECT repeat('x', 1000) FROM generate_series(1, %d)", kb)})
		_ = fe.Flush()
		time.Sleep(150 * time.Millisecond)
		fe.Send(&pgproto3.CopyData{Data: []byte("x")})
		_ = fe.Flush()
		time.Sleep(100 * time.Millisecond)
		if st := p.srv.PoolStats(); len(st) != 1 {
			t.Fatalf("%d pools, want 1", len(st))
		} else if st[0].Idle == 0 {
			busy++
		}
		_ = nc.(interface{ SetLinger(int) error }).SetLinger(0)
		nc.Close()
		time.Sleep(300 * time.Millisecond)
		st := p.srv.PoolStats()
		t.Logf("%d KB: pools %+v", kb, st)
		if len(st) == 1 && st[0].Open == 1 && st[0].Idle == 0 {
			time.Sleep(2 * time.Second)
			t.Logf("2s later: %+v", p.srv.PoolStats())
			c := connect(t, p.appDSN())
			t.Logf("new client: %s", simple(t, c, "SELECT 'hello'"))
			t.Logf("log: %s", p.logs.tail(0, 8))
			t.Errorf("LEAK at %d KB: connection open, not idle, no session", kb)
			break
		}
	}
	if busy == 0 {
		t.Errorf("no round closed the client while its connection was busy: the race was never reached")
	}
}

// Regression 10: a SET the server refused is recorded; replaying it makes the whole
// injected sync fail, so another client's setting is not reset.
func TestTxPoolRegressFailedSetPoisonsSync(t *testing.T) {
	failedSetLeak(t, "", "SET work_mem = 'bogus'")
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

// Regression 11: DISCARD ALL refused inside a transaction still clears pgsplit's books.
func TestTxPoolRegressFailedDiscardAll(t *testing.T) {
	p := oneConnProxy(t)
	a := connect(t, p.appDSN())
	mustSimple(t, a, "SET lock_timeout = '9s'")
	mustSimple(t, a, "BEGIN")
	t.Logf("DISCARD in tx: %s", simple(t, a, "DISCARD ALL"))
	mustSimple(t, a, "ROLLBACK")
	b := connect(t, p.appDSN())
	got := simple(t, b, "SHOW lock_timeout")
	t.Logf("B sees lock_timeout=%s", got)
	if got != "0" {
		t.Errorf("LEAK: B sees A's lock_timeout %s", got)
	}
}

// Regression 12: injections for a streamed batch while an earlier batch is still
// unanswered: that batch's ReadyForQuery zeroes dropParse/dropClose and the
// injected answers reach the client.
func TestTxPoolRegressStreamedInjectCounters(t *testing.T) {
	p := oneConnProxy(t)
	fe, nc := rawConn(t, p)
	// s2 prepared locally (Parse-only batch): not on any server yet.
	fe.Send(&pgproto3.Parse{Name: "s2", Query: "SELECT 2"})
	fe.Send(&pgproto3.Sync{})
	_ = fe.Flush()
	t.Logf("prepare: %+v", readUntilReady(t, fe, 1))
	// batch 1: slow
	fe.Send(&pgproto3.Parse{Query: "SELECT pg_sleep(0.5)::text"})
	fe.Send(&pgproto3.Bind{})
	fe.Send(&pgproto3.Execute{})
	fe.Send(&pgproto3.Sync{})
	_ = fe.Flush()
	time.Sleep(50 * time.Millisecond)
	// batch 2, part 1 alone: incomplete → streams
	fe.Send(&pgproto3.Parse{Query: "SELECT 1"})
	_ = fe.Flush()
	time.Sleep(50 * time.Millisecond)
	fe.Send(&pgproto3.Bind{PreparedStatement: "s2"})
	fe.Send(&pgproto3.Execute{})
	fe.Send(&pgproto3.Sync{})
	_ = fe.Flush()
	_ = nc.SetReadDeadline(time.Now().Add(5 * time.Second))
	var got []string
	zs := 0
	for zs < 2 {
		m, err := fe.Receive()
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, fmt.Sprintf("%T", m)[len("*pgproto3."):])
		if _, ok := m.(*pgproto3.ReadyForQuery); ok {
			zs++
		}
	}
	t.Logf("messages: %v", got)
	n := 0
	for _, g := range got {
		if g == "CloseComplete" || g == "ParseComplete" {
			n++
		}
	}
	if n != 2 { // one ParseComplete per batch
		t.Errorf("client got %d Parse/CloseComplete, want 2: %v", n, got)
	}
}

// Regression 13: SET … TO DEFAULT pins the client to its connection for good.
func TestTxPoolRegressSetToDefaultPins(t *testing.T) {
	p := oneConnProxy(t)
	a := connect(t, p.appDSN())
	mustSimple(t, a, "SET statement_timeout TO DEFAULT")
	mustSimple(t, a, "RESET statement_timeout")
	mustSimple(t, a, "RESET ALL")
	if n := p.srv.PinnedClients(); n > 0 {
		t.Errorf("%d client(s) pinned after SET TO DEFAULT / RESET", n)
	}
}

// Regression 14: a Flush-ended batch followed by simple queries: unsynced never clears.
func TestTxPoolRegressFlushThenSimple(t *testing.T) {
	p := oneConnProxy(t)
	fe := rawFrontend(t, p)
	fe.Send(&pgproto3.Parse{Query: "SELECT 1"})
	fe.Send(&pgproto3.Flush{})
	_ = fe.Flush()
	m, err := fe.Receive()
	t.Logf("%T %v", m, err)
	fe.Send(&pgproto3.Query{String: "SELECT 'q'"})
	_ = fe.Flush()
	t.Logf("%+v", readUntilReady(t, fe, 1))
	time.Sleep(100 * time.Millisecond)
	t.Logf("pools %+v", p.srv.PoolStats())
	if st := p.srv.PoolStats(); st[0].Idle == 0 {
		t.Errorf("connection still held by an idle client")
	}
}

// ROLLBACK TO SAVEPOINT answers "ROLLBACK" too but does not end the
// transaction. pgsplit does not follow savepoints: a transaction in which
// one was rolled back to has its SETs undone at its end (documented), and
// no client ever sees another's value.
func TestTxPoolRegressSavepointSet(t *testing.T) {
	p := startProxy(t, func(c *config.Config) { c.Pool.PoolSize, c.Pool.MaxOverflow = 2, 0 })
	a := connect(t, p.appDSN())
	x := connect(t, p.appDSN())
	for _, q := range []string{"BEGIN", "SAVEPOINT s", "SET work_mem = '66MB'", "ROLLBACK TO SAVEPOINT s", "COMMIT"} {
		mustSimple(t, a, q)
	}
	if got := simple(t, a, "SHOW work_mem"); got != "4MB" {
		t.Errorf("A after a SET rolled back to a savepoint: work_mem %s, want 4MB", got)
	}
	for _, q := range []string{"BEGIN", "SET work_mem = '55MB'", "SAVEPOINT s", "SELECT 1", "RELEASE SAVEPOINT s", "COMMIT"} {
		mustSimple(t, a, q)
	}
	if got := simple(t, a, "SHOW work_mem"); got != "55MB" {
		t.Errorf("A after COMMIT: work_mem %s, want 55MB", got)
	}
	mustSimple(t, x, "BEGIN") // takes the connection A just gave back
	mustSimple(t, x, "SELECT 1")
	if got := simple(t, a, "SHOW work_mem"); got != "55MB" {
		t.Errorf("A on another connection: work_mem %s, want 55MB", got)
	}
	mustSimple(t, x, "COMMIT")
	if got := simple(t, x, "SHOW work_mem"); got == "55MB" {
		t.Errorf("LEAK: x sees A's work_mem")
	}
}
