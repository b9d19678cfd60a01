package test

// Transaction pooling and session settings: a client's SETs follow it from
// connection to connection, are undone when they fail or roll back, pin it
// where pgsplit cannot follow them, and never show to another client.

import (
	"fmt"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/pgsplit/pgsplit/config"
)

// A SET inside a multi-statement Query does not leak to the next client of the connection.
func TestMultiStatementSetDoesNotLeakToNextClient(t *testing.T) {
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

// A SET inside a multi-statement Query pins the client to its connection (pgsplit
// cannot follow which part ran): a client connected meanwhile gets another one
// and sees the defaults.
func TestMultiStatementSetPinsClientToItsConnection(t *testing.T) {
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

// SET SESSION CHARACTERISTICS pins the client to its connection: another client sees the default, the client keeps its own.
func TestSetSessionCharacteristicsPinsClientToItsConnection(t *testing.T) {
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

// A SET executed in an extended-protocol batch that streams is observed: it does not leak to the next client.
func TestSetInStreamedBatchDoesNotLeakToNextClient(t *testing.T) {
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

// A SET rolled back is not replayed on the client's next connection.
func TestRolledBackSetIsNotReplayedOnAnotherConnection(t *testing.T) {
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

// ROLLBACK followed by another statement in one Query undoes the rolled-back SET.
func TestRollbackInMultiStatementQueryUndoesSet(t *testing.T) {
	p := oneConnProxy(t)
	a := connect(t, p.appDSN())
	mustSimple(t, a, "BEGIN")
	mustSimple(t, a, "SET work_mem = '68MB'")
	mustSimple(t, a, "ROLLBACK; SELECT 1")
	if got := simple(t, a, "SHOW work_mem"); got != "4MB" {
		t.Errorf("A after ROLLBACK: work_mem %s, want 4MB", got)
	}
}

// ROLLBACK TO SAVEPOINT answers "ROLLBACK" too but does not end the
// transaction. pgsplit does not follow savepoints: a transaction in which
// one was rolled back to has its SETs undone at its end (documented), and
// no client ever sees another's value.
func TestSetAroundSavepointsKeptOrUndoneWithoutLeak(t *testing.T) {
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

// A SET the server refused is not replayed, so the reset of another client's setting is not lost with it.
func TestFailedSetDoesNotExposeAnotherClientsSetting(t *testing.T) {
	failedSetLeak(t, "", "SET work_mem = 'bogus'")
}

// A SET refused right after another SET (whose replay pgsplit injects first) is not kept either.
func TestFailedSetAfterAnotherSetDoesNotExposeOtherClientsSetting(t *testing.T) {
	failedSetLeak(t, "SET work_mem = '64MB'", "SET lock_timeout = 'bogus'")
}
