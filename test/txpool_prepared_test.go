package test

// Transaction pooling and prepared statements: client statements served by
// server statements that clients share (same SQL under several names, Parse
// and Close in one batch, skipped Parses, injected Parses, search_path).

import (
	"fmt"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgproto3"
)

// Two client statement names parsed with the same SQL in one batch: the batch succeeds.
func TestSameSQLUnderTwoNamesInOneBatchSucceeds(t *testing.T) {
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

// A Parse the server skipped (an error earlier in the same Sync segment, sent after a
// Flush) is not recorded as prepared: another client's Bind of the same SQL succeeds.
func TestParseSkippedAfterErrorIsNotRecordedAsPrepared(t *testing.T) {
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

// The answers to what pgsplit injects for a streamed batch, while an earlier batch is
// still unanswered, do not reach the client: one ParseComplete per batch.
func TestInjectedAnswersDoNotReachClientWhileEarlierBatchPending(t *testing.T) {
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

// A batch that binds s1 and then parses s2 with the same SQL succeeds (the shared server statement is not closed first).
func TestBindThenParseOfSameSQLInOneBatchSucceeds(t *testing.T) {
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

// Parse s1, Close s1, Parse s1 (same SQL) in one batch succeeds: the Close reaches the server statement, no 42P05.
func TestParseCloseParseOfSameNameInOneBatchSucceeds(t *testing.T) {
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

// Two clients on one connection, same SQL (one shared server statement), other search_paths: each reads its own table.
func TestSharedStatementFollowsEachClientsSearchPath(t *testing.T) {
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
