package test

// Transaction pooling and giving connections back: once a client is done with
// a server connection, it goes back to the pool with nothing lost, pinned,
// leaked or answered twice.

import (
	"fmt"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/pgsplit/pgsplit/config"
)

// A Parse-only Sync after a Flush-ended segment reaches the server: the segment's
// INSERT stays committed when the client leaves.
func TestParseOnlySyncAfterFlushKeepsEarlierWrite(t *testing.T) {
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

// Copy data a client still streams after its COPY failed, with another client on the
// only connection, brings no stray answer and leaves the client unpinned.
func TestCopyDataAfterErrorLeavesNoStrayAnswerOrPin(t *testing.T) {
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

// A client that leaves while the connection is still writing it the last answer
// does not leak the connection (open, not idle, no session).
func TestClientLeavingDuringLargeAnswerDoesNotLeakConnection(t *testing.T) {
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

// A Flush-ended batch followed by a simple Query: the connection goes back to the pool.
func TestFlushEndedBatchThenSimpleQueryReleasesConnection(t *testing.T) {
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
