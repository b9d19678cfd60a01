package test

import (
	"net"
	"strconv"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/pgsplit/pgsplit/config"
)

// rawFrontend logs in through p with pgx and takes the connection over, to
// send protocol messages in exactly the order and grouping a test needs.
func rawFrontend(t *testing.T, p *testProxy) *pgproto3.Frontend {
	fe, _ := rawConn(t, p)
	return fe
}

// sendAll sends msgs and flushes.
func sendAll(t *testing.T, fe *pgproto3.Frontend, msgs ...pgproto3.FrontendMessage) {
	t.Helper()
	for _, m := range msgs {
		fe.Send(m)
	}
	if err := fe.Flush(); err != nil {
		t.Fatal(err)
	}
}

// rawConn is rawFrontend that also returns the connection, to write bytes
// no well-behaved frontend would. extra adds connection settings.
func rawConn(t *testing.T, p *testProxy, extra ...string) (*pgproto3.Frontend, net.Conn) {
	t.Helper()
	return rawConnDSN(t, p.appDSN(extra...))
}

// rawConnDSN logs in with dsn (pgx) and hands over the raw connection.
func rawConnDSN(t *testing.T, dsn string) (*pgproto3.Frontend, net.Conn) {
	t.Helper()
	ctx := testCtx(t, 5*time.Second)
	c := connect(t, dsn)
	if err := c.PgConn().SyncConn(ctx); err != nil {
		t.Fatal(err)
	}
	hc, err := c.PgConn().Hijack()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = hc.Conn.Close() })
	_ = hc.Conn.SetDeadline(time.Now().Add(20 * time.Second))
	return pgproto3.NewFrontend(hc.Conn, hc.Conn), hc.Conn
}

// answer is what the server said up to a ReadyForQuery.
type answer struct {
	rows   []string // first column of each DataRow
	errors []string // SQLSTATEs
	status byte
}

// readUntilReady reads n ReadyForQuery-terminated answers.
func readUntilReady(t *testing.T, fe *pgproto3.Frontend, n int) []answer {
	t.Helper()
	var out []answer
	cur := answer{}
	for len(out) < n {
		msg, err := fe.Receive()
		if err != nil {
			t.Fatalf("receive: %v (answers so far %+v)", err, out)
		}
		switch m := msg.(type) {
		case *pgproto3.DataRow:
			cur.rows = append(cur.rows, string(m.Values[0]))
		case *pgproto3.ErrorResponse:
			cur.errors = append(cur.errors, m.Code)
		case *pgproto3.ReadyForQuery:
			cur.status = m.TxStatus
			out = append(out, cur)
			cur = answer{}
		}
	}
	return out
}

func portRole(t *testing.T, s string) string {
	t.Helper()
	n, err := strconv.Atoi(s)
	if err != nil {
		t.Fatalf("not a port: %q", s)
	}
	return role(n)
}

// A pipelining client: a write sent right behind a read that went to a
// replica must still run on the primary (after the read's answer).
func TestRoutingPipelinedWrite(t *testing.T) {
	p := routingProxy(t, nil)
	fe := rawFrontend(t, p)
	fe.Send(&pgproto3.Query{String: "SELECT inet_server_port()"})
	fe.Send(&pgproto3.Query{String: "INSERT INTO kv VALUES ('rt-pipe', 1) ON CONFLICT (k) DO UPDATE SET v = kv.v + 1 RETURNING inet_server_port()"})
	fe.Send(&pgproto3.Query{String: "SELECT inet_server_port()"})
	if err := fe.Flush(); err != nil {
		t.Fatal(err)
	}
	got := readUntilReady(t, fe, 3)
	want := []string{"replica", "primary", "primary"} // the last read follows the busy primary
	for i, a := range got {
		if len(a.errors) > 0 || len(a.rows) != 1 {
			t.Fatalf("answer %d: %+v", i, a)
		}
		if r := portRole(t, a.rows[0]); r != want[i] {
			t.Errorf("statement %d ran on the %s, want the %s", i, r, want[i])
		}
	}
}

// After a batch ended by Flush, the client may continue the same batch; a
// write in the continuation must not reach a replica.
func TestRoutingFlushThenWrite(t *testing.T) {
	p := routingProxy(t, nil)
	fe := rawFrontend(t, p)
	fe.Send(&pgproto3.Parse{Query: "SELECT inet_server_port()"})
	fe.Send(&pgproto3.Bind{})
	fe.Send(&pgproto3.Execute{})
	fe.Send(&pgproto3.Flush{})
	if err := fe.Flush(); err != nil {
		t.Fatal(err)
	}
	var first string
	for first == "" {
		msg, err := fe.Receive()
		if err != nil {
			t.Fatal(err)
		}
		if dr, ok := msg.(*pgproto3.DataRow); ok {
			first = string(dr.Values[0])
		}
		if e, ok := msg.(*pgproto3.ErrorResponse); ok {
			t.Fatalf("first part: %s %s", e.Code, e.Message)
		}
	}
	fe.Send(&pgproto3.Parse{Query: "INSERT INTO kv VALUES ('rt-flush', 1) ON CONFLICT (k) DO UPDATE SET v = kv.v + 1 RETURNING inet_server_port()"})
	fe.Send(&pgproto3.Bind{})
	fe.Send(&pgproto3.Execute{})
	fe.Send(&pgproto3.Sync{})
	if err := fe.Flush(); err != nil {
		t.Fatal(err)
	}
	got := readUntilReady(t, fe, 1)[0]
	if len(got.errors) > 0 || len(got.rows) != 1 || portRole(t, got.rows[0]) != "primary" {
		t.Fatalf("write after Flush: %+v (first part ran on the %s)", got, portRole(t, first))
	}
}

// Statements sent with the extended protocol update the session like simple
// ones: a SET is replayed on the replica, a temp table pins the session.
func TestRoutingExtendedSessionState(t *testing.T) {
	p := routingProxy(t, nil)
	fe := rawFrontend(t, p)
	run := func(sql string) answer {
		fe.Send(&pgproto3.Parse{Query: sql})
		fe.Send(&pgproto3.Bind{})
		fe.Send(&pgproto3.Execute{})
		fe.Send(&pgproto3.Sync{})
		if err := fe.Flush(); err != nil {
			t.Fatal(err)
		}
		return readUntilReady(t, fe, 1)[0]
	}
	if a := run("SET statement_timeout = '9s'"); len(a.errors) > 0 {
		t.Fatal(a.errors)
	}
	if a := run("SELECT current_setting('statement_timeout') || ' ' || inet_server_port()"); len(a.rows) != 1 || a.rows[0][:3] != "9s " || portRole(t, a.rows[0][3:]) != "replica" {
		t.Fatalf("SET over the extended protocol not replayed on the replica: %+v", a)
	}
	if a := run("CREATE TEMP TABLE rt_ext_tmp (x int)"); len(a.errors) > 0 {
		t.Fatal(a.errors)
	}
	if a := run("SELECT inet_server_port()::text FROM (SELECT count(*) FROM rt_ext_tmp) s"); len(a.errors) > 0 || portRole(t, a.rows[0]) != "primary" {
		t.Fatalf("temp table over the extended protocol did not pin the session: %+v", a)
	}
}

// A malformed Describe in a batch pgsplit answers itself is refused; the
// proxy stays up.
func TestRoutingLocalBatchBadDescribe(t *testing.T) {
	p := routingProxy(t, nil)
	fe, conn := rawConn(t, p)
	var buf []byte
	buf, _ = (&pgproto3.Parse{Query: "SHOW pgsplit.route"}).Encode(buf)
	buf = append(buf, 'D', 0, 0, 0, 4) // Describe with an empty body
	buf, _ = (&pgproto3.Sync{}).Encode(buf)
	if _, err := conn.Write(buf); err != nil {
		t.Fatal(err)
	}
	readUntilReady(t, fe, 1)
	checkProxyWorks(t, p, "after a malformed local batch")
}

// In split mode, BEGIN READ WRITE (which a hot standby refuses) runs whole
// on the primary and rolls back as one transaction.
func TestRoutingSplitReadWriteBegin(t *testing.T) {
	p := routingProxy(t, func(c *config.Config) { c.Routing.Transactions = config.TxSplit })
	fe := rawFrontend(t, p)
	key := "rt-rw-" + strconv.FormatInt(time.Now().UnixNano(), 10)
	fe.Send(&pgproto3.Query{String: "START TRANSACTION READ WRITE"})
	fe.Send(&pgproto3.Query{String: "SELECT inet_server_port()"})
	fe.Send(&pgproto3.Query{String: "INSERT INTO kv VALUES ('" + key + "', 1)"})
	fe.Send(&pgproto3.Query{String: "ROLLBACK"})
	if err := fe.Flush(); err != nil {
		t.Fatal(err)
	}
	got := readUntilReady(t, fe, 4)
	if got[0].status != 'T' || len(got[1].rows) != 1 || portRole(t, got[1].rows[0]) != "primary" || got[3].status != 'I' {
		t.Fatalf("answers %+v", got)
	}
	var n int
	if err := superConn(t).QueryRow(testCtx(t, 5*time.Second), "SELECT count(*) FROM kv WHERE k = $1", key).Scan(&n); err != nil || n != 0 {
		t.Fatalf("rolled-back row present: %d %v", n, err)
	}
}
