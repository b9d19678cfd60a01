package test

// Transaction pooling and resets: RESET, SET … TO DEFAULT and DISCARD ALL,
// including a DISCARD ALL the server refuses inside a transaction.

import (
	"testing"

	"github.com/jackc/pgx/v5/pgproto3"
)

// RESET ALL pipelined with a SELECT (single-statement Queries): each gets its own answer, in order.
func TestPipelinedResetAllKeepsAnswersInOrder(t *testing.T) {
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

// SET … TO DEFAULT, RESET and RESET ALL do not pin the client to its connection.
func TestSetToDefaultAndResetDoNotPin(t *testing.T) {
	p := oneConnProxy(t)
	a := connect(t, p.appDSN())
	mustSimple(t, a, "SET statement_timeout TO DEFAULT")
	mustSimple(t, a, "RESET statement_timeout")
	mustSimple(t, a, "RESET ALL")
	if n := p.srv.PinnedClients(); n > 0 {
		t.Errorf("%d client(s) pinned after SET TO DEFAULT / RESET", n)
	}
}

// DISCARD ALL refused inside a transaction forgets none of the client's settings: the next client sees the defaults.
func TestFailedDiscardAllForgetsNoSetting(t *testing.T) {
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

// DISCARD ALL refused inside a transaction unpins nothing: the next client cannot read the temp table.
func TestFailedDiscardAllUnpinsNothing(t *testing.T) {
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
