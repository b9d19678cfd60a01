package test

import (
	"context"
	"encoding/binary"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/pgsplit/pgsplit/config"
)

// Focused tests of the limits section, one per limit; each fails with the
// limit off (or before the limits existed). The hostile-client test is
// hostile_test.go.

// limitsProxy is a proxy with metrics on and the limits changed by mutate.
func limitsProxy(t *testing.T, mutate func(*config.Limits)) *testProxy {
	return startProxy(t, func(c *config.Config) {
		c.Metrics.Listen = "127.0.0.1:0"
		mutate(&c.Limits)
	})
}

// limitHits is pgsplit_limit_hits_total{limit} now.
func limitHits(t *testing.T, p *testProxy, limit string) float64 {
	t.Helper()
	_, text := scrape(t, p, "/metrics")
	return metricSum(text, "pgsplit_limit_hits_total", fmt.Sprintf("limit=%q", limit))
}

// wantLimitLogged checks the log has a "limit reached" line for limit
// after mark, naming the client's address.
func wantLimitLogged(t *testing.T, p *testProxy, mark int, limit string) {
	t.Helper()
	e := p.logs.waitEntry(t, mark, 5*time.Second, "limit reached "+limit, func(e logEntry) bool {
		return e.str("msg") == "limit reached" && e.str("limit") == limit
	})
	if !strings.HasPrefix(e.str("client"), "127.0.0.") {
		t.Errorf("limit line without the client address: %v", e)
	}
}

// wantFatal reads what the proxy sends on c until it closes and checks it
// ends with an ErrorResponse FATAL code.
func wantFatal(t *testing.T, c net.Conn, code, what string) *pgproto3.ErrorResponse {
	t.Helper()
	b, err := readUntilClose(c, 10*time.Second)
	if err != nil {
		t.Fatalf("%s: the proxy did not close the connection: %v (got %q)", what, err, truncate(b, 200))
	}
	msgs, err := splitMessages(b)
	if err != nil || len(msgs) == 0 || msgs[len(msgs)-1].typ != 'E' {
		t.Fatalf("%s: want an ErrorResponse last, got %q (%v)", what, truncate(b, 200), err)
	}
	var er pgproto3.ErrorResponse
	if err := er.Decode(msgs[len(msgs)-1].body); err != nil {
		t.Fatal(err)
	}
	if er.Code != code || er.Severity != "FATAL" {
		t.Fatalf("%s: want FATAL %s, got %s %s: %s", what, code, er.Severity, er.Code, er.Message)
	}
	return &er
}

// TestLimitMessageSize: a message over max_message_size, a 2^31−1 length
// field with nothing behind it or a Parse really that big, gets FATAL 54000
// and the connection closes; a message under it goes through.
func TestLimitMessageSize(t *testing.T) {
	p := limitsProxy(t, func(l *config.Limits) { l.MaxMessageSize = 1 << 20 })
	mark := p.watchLogs(t)

	_, c := rawConn(t, p)
	if _, err := c.Write([]byte{'Q', 0x7f, 0xff, 0xff, 0xff}); err != nil {
		t.Fatal(err)
	}
	er := wantFatal(t, c, "54000", "a 2^31-1 length field")
	if !strings.Contains(er.Message, "limits.max_message_size") {
		t.Errorf("message does not name the limit: %s", er.Message)
	}
	wantLimitLogged(t, p, mark, "max_message_size")

	// A Parse of 1 MB + 1 byte of text, really sent.
	_, c = rawConn(t, p)
	text := "SELECT '" + strings.Repeat("x", 1<<20) + "'"
	parse, err := (&pgproto3.Parse{Name: "big", Query: text}).Encode(nil)
	if err != nil {
		t.Fatal(err)
	}
	go func() { _, _ = c.Write(parse) }() // the proxy stops reading it
	wantFatal(t, c, "54000", "a Parse over the limit")

	// Under the limit: fine.
	conn := connect(t, p.appDSN())
	var n int
	if err := conn.QueryRow(testCtx(t, 10*time.Second), "SELECT length($1::text)", strings.Repeat("y", 900<<10)).Scan(&n); err != nil || n != 900<<10 {
		t.Fatalf("a 900 kB parameter under the 1 MB limit: %d, %v", n, err)
	}
	if h := limitHits(t, p, "max_message_size"); h != 2 {
		t.Errorf("pgsplit_limit_hits_total{limit=max_message_size} = %v, want 2", h)
	}
}

// TestStartupTimeoutDropsSilentConnection: a connection that sends nothing,
// and one that sends its startup packet a byte at a time (slowloris), are
// dropped about startup_timeout after accept.
func TestStartupTimeoutDropsSilentConnection(t *testing.T) {
	const timeout = time.Second
	p := limitsProxy(t, func(l *config.Limits) { l.StartupTimeout = timeout })
	mark := p.watchLogs(t)

	began := time.Now()
	silent := rawDial(t, p)
	slow := rawDial(t, p)
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		pkt := startupPacket(196608, "user", appUser, "database", appDatabase)
		for _, b := range pkt {
			select {
			case <-stop:
				return
			case <-time.After(200 * time.Millisecond):
			}
			if _, err := slow.Write([]byte{b}); err != nil {
				return
			}
		}
	}()
	for _, c := range []net.Conn{silent, slow} {
		if _, err := readUntilClose(c, 5*time.Second); err != nil {
			t.Fatalf("not dropped within 5 s: %v", err)
		}
		if d := time.Since(began); d < timeout-100*time.Millisecond || d > timeout+2*time.Second {
			t.Fatalf("dropped after %s, want about %s", d, timeout)
		}
	}
	t.Logf("both dropped %s after accept", time.Since(began).Round(10*time.Millisecond))
	wantLimitLogged(t, p, mark, "startup_timeout")
	if h := limitHits(t, p, "startup_timeout"); h != 2 {
		t.Errorf("pgsplit_limit_hits_total{limit=startup_timeout} = %v, want 2", h)
	}
	checkProxyWorks(t, p, "after dropping slow logins")
}

// TestStartupCountedInMaxClientConn: connections that never send a
// startup packet take max_client_conn places from accept, so a real client
// is refused (53300) while they are open; an admin still gets in (its
// logins count apart); once they close, the client gets in.
func TestStartupCountedInMaxClientConn(t *testing.T) {
	p := startProxy(t, func(c *config.Config) {
		c.MaxClientConn = 3
		c.Admin.Users = []config.User{{Name: adminUser, Password: adminPassword}}
		c.Limits.StartupTimeout = 20 * time.Second
	})
	var silent []net.Conn
	for range 3 {
		silent = append(silent, rawDial(t, p))
	}
	waitFor(t, 5*time.Second, "3 silent connections counted", func() (bool, string) {
		return p.srv.ClientConnections() == 3, fmt.Sprint(p.srv.ClientConnections())
	})
	_, err := pgx.Connect(testCtx(t, 10*time.Second), p.appDSN())
	wantState(t, err, "53300", "a client while silent connections fill max_client_conn")

	admin, err := pgx.Connect(testCtx(t, 10*time.Second), p.adminDSN())
	if err != nil {
		t.Fatalf("admin console while max_client_conn is full: %v", err)
	}
	closeConn(admin)

	for _, c := range silent {
		_ = c.Close()
	}
	waitFor(t, 5*time.Second, "places given back", func() (bool, string) {
		return p.srv.ClientConnections() == 0, fmt.Sprint(p.srv.ClientConnections())
	})
	checkProxyWorks(t, p, "after the silent connections left")
}

// TestStartupAdminLoginCountNoLeak: admin logins that ask for protocol 3.1
// with an unknown _pq_ option and reset the connection at once make the
// NegotiateProtocolVersion write fail; each used to leak an admin-login
// place, and after 50 the console refused everyone until a restart.
func TestStartupAdminLoginCountNoLeak(t *testing.T) {
	p := startProxy(t, func(c *config.Config) {
		c.Admin.Users = []config.User{{Name: adminUser, Password: adminPassword}}
	})
	pkt := startupPacket(196609, "user", adminUser, "database", "pgsplit", "_pq_.hostile", "1")
	for range 60 {
		c, err := net.DialTimeout("tcp", p.addr(), 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.Write(pkt); err != nil {
			t.Fatal(err)
		}
		_ = c.(*net.TCPConn).SetLinger(0) // close with a reset: the proxy's write fails
		_ = c.Close()
	}
	time.Sleep(300 * time.Millisecond) // let the proxy handle them
	admin, err := pgx.Connect(testCtx(t, 10*time.Second), p.adminDSN())
	if err != nil {
		t.Fatalf("admin console after 60 aborted protocol-3.1 logins: %v", err)
	}
	closeConn(admin)
}

// TestLimitConnectionsPerIP: a third connection from 127.0.0.1 with
// max_connections_per_ip 2 gets FATAL 53300 "too many connections from
// this address", but a cancel request from there still works; one from
// 127.0.0.2 gets in; closing one makes room.
func TestLimitConnectionsPerIP(t *testing.T) {
	p := limitsProxy(t, func(l *config.Limits) { l.MaxConnectionsPerIP = 2 })
	mark := p.watchLogs(t)
	a := connect(t, p.appDSN())
	b := connect(t, p.appDSN(), withCancelRequests)
	_, err := pgx.Connect(testCtx(t, 10*time.Second), p.appDSN())
	pe := wantState(t, err, "53300", "a third connection from 127.0.0.1")
	if pe.Message != "too many connections from this address" {
		t.Errorf("message %q", pe.Message)
	}
	wantLimitLogged(t, p, mark, "max_connections_per_ip")

	// At the cap, a cancel request (a new connection) still gets through.
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	began := time.Now()
	_, err = b.Exec(ctx, "SELECT pg_sleep(10)")
	if sqlState(err) != "57014" || time.Since(began) > 5*time.Second {
		t.Fatalf("a cancel request while the address is at its cap: %v after %s, want 57014 at once", err, time.Since(began))
	}
	mustSelectOne(t, b, "after the cancel")
	_, err = pgx.Connect(testCtx(t, 10*time.Second), p.appDSN())
	wantState(t, err, "53300", "again a third connection")

	other := connect(t, p.appDSN(), func(cc *pgx.ConnConfig) {
		d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 2)}, Timeout: 5 * time.Second}
		cc.DialFunc = d.DialContext
	})
	mustSelectOne(t, other, "from 127.0.0.2")
	closeConn(a)
	waitFor(t, 5*time.Second, "room after a close", func() (bool, string) {
		c, err := pgx.Connect(testCtx(t, 10*time.Second), p.appDSN())
		if err != nil {
			return false, err.Error()
		}
		closeConn(c)
		return true, ""
	})
	if h := limitHits(t, p, "max_connections_per_ip"); h < 1 {
		t.Errorf("pgsplit_limit_hits_total{limit=max_connections_per_ip} = %v", h)
	}
}

// TestIdleInTransactionTimeout: a client idle inside a transaction past
// idle_in_transaction_timeout is ended with FATAL 25P03; its transaction
// is rolled back (its INSERT is not there) and its server connection goes
// back to the pool clean (the next client gets the same backend, outside
// a transaction). A transaction busy in a long statement is not idle.
func TestIdleInTransactionTimeout(t *testing.T) {
	p := startProxy(t, func(c *config.Config) {
		c.Metrics.Listen = "127.0.0.1:0"
		c.Pool.PoolSize, c.Pool.MaxOverflow = 1, 0
		c.Limits.IdleInTransactionTimeout = time.Second
	})
	mark := p.watchLogs(t)
	ctx := testCtx(t, 30*time.Second)
	key := fmt.Sprintf("idle-tx-%d", time.Now().UnixNano())

	busy := connect(t, p.appDSN())
	if _, err := busy.Exec(ctx, "BEGIN"); err != nil {
		t.Fatal(err)
	}
	if _, err := busy.Exec(ctx, "SELECT pg_sleep(1.6)"); err != nil {
		t.Fatalf("a statement running longer than the timeout: %v", err)
	}
	if _, err := busy.Exec(ctx, "COMMIT"); err != nil {
		t.Fatalf("COMMIT right after a long statement: %v", err)
	}
	closeConn(busy)

	c := connect(t, p.appDSN())
	if _, err := c.Exec(ctx, "BEGIN"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Exec(ctx, "INSERT INTO kv VALUES ($1, 1)", key); err != nil {
		t.Fatal(err)
	}
	pid := upstreamPID(t, c)
	time.Sleep(1500 * time.Millisecond)
	_, err := c.Exec(ctx, "COMMIT")
	pe := wantState(t, err, "25P03", "COMMIT after sitting idle in the transaction")
	if pe.Message != "terminating connection due to idle-in-transaction timeout" || pe.Severity != "FATAL" {
		t.Errorf("got %s %q", pe.Severity, pe.Message)
	}
	wantLimitLogged(t, p, mark, "idle_in_transaction_timeout")

	next := connect(t, p.appDSN())
	var status string
	var n int
	if err := next.QueryRow(ctx, "SELECT count(*) FROM kv WHERE k = $1", key).Scan(&n); err != nil || n != 0 {
		t.Fatalf("the idle transaction's INSERT: %d rows (%v), want 0: it must be rolled back", n, err)
	}
	if got := upstreamPID(t, next); got != pid {
		t.Fatalf("the next client got backend %d, want the pool's one connection %d back", got, pid)
	}
	su := superConn(t)
	if err := su.QueryRow(ctx, "SELECT state FROM pg_stat_activity WHERE pid = $1", int64(pid)).Scan(&status); err != nil {
		t.Fatal(err)
	}
	if status == "idle in transaction" || status == "idle in transaction (aborted)" {
		t.Fatalf("the pooled backend is %q", status)
	}
	if h := limitHits(t, p, "idle_in_transaction_timeout"); h != 1 {
		t.Errorf("pgsplit_limit_hits_total{limit=idle_in_transaction_timeout} = %v, want 1", h)
	}
}

// TestLimitClientIdleTimeout: a client idle (outside a transaction) past
// client_idle_timeout is closed with FATAL 57P05; one that keeps talking
// is not, and neither is one idle inside a transaction (that is the other
// limit's, off here).
func TestLimitClientIdleTimeout(t *testing.T) {
	p := limitsProxy(t, func(l *config.Limits) { l.ClientIdleTimeout = time.Second })
	mark := p.watchLogs(t)
	ctx := testCtx(t, 30*time.Second)
	idle := connect(t, p.appDSN())
	talking := connect(t, p.appDSN())
	inTx := connect(t, p.appDSN())
	if _, err := inTx.Exec(ctx, "BEGIN"); err != nil {
		t.Fatal(err)
	}
	for range 8 {
		mustSelectOne(t, talking, "a client that keeps talking")
		time.Sleep(250 * time.Millisecond)
	}
	_, err := idle.Exec(ctx, "SELECT 1")
	pe := wantState(t, err, "57P05", "a query after 2 s idle")
	if pe.Severity != "FATAL" || !strings.Contains(pe.Message, "idle-session timeout") {
		t.Errorf("got %s %q", pe.Severity, pe.Message)
	}
	if _, err := inTx.Exec(ctx, "COMMIT"); err != nil {
		t.Fatalf("a client idle inside a transaction (client_idle_timeout does not apply): %v", err)
	}
	wantLimitLogged(t, p, mark, "client_idle_timeout")
	if h := limitHits(t, p, "client_idle_timeout"); h != 1 {
		t.Errorf("pgsplit_limit_hits_total{limit=client_idle_timeout} = %v, want 1", h)
	}
}

// parseMsg encodes a Parse of query under name.
func parseMsg(t *testing.T, name, query string) []byte {
	t.Helper()
	b, err := (&pgproto3.Parse{Name: name, Query: query}).Encode(nil)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestLimitParseFlood: named Parses past max_client_statements end the
// connection with FATAL 54000 (with the cap off, pgsplit kept every one);
// a flood of Parses of one name without a Sync, which pgsplit streams,
// ends at max_batch_bytes of names; up to the cap, statements work.
func TestLimitParseFlood(t *testing.T) {
	p := limitsProxy(t, func(l *config.Limits) {
		l.MaxClientStatements = 50
		l.MaxBatchBytes = 64 << 10
	})
	mark := p.watchLogs(t)

	// 50 statements: fine, answered with 50 ParseComplete.
	fe, c := rawConn(t, p)
	var batch []byte
	for i := range 50 {
		batch = append(batch, parseMsg(t, fmt.Sprintf("s%d", i), fmt.Sprintf("SELECT %d", i))...)
	}
	batch = append(batch, 'S', 0, 0, 0, 4)
	if _, err := c.Write(batch); err != nil {
		t.Fatal(err)
	}
	for i := 0; ; i++ {
		m, err := fe.Receive()
		if err != nil {
			t.Fatalf("50 Parses: %v", err)
		}
		if _, ok := m.(*pgproto3.ReadyForQuery); ok {
			if i != 50 {
				t.Fatalf("%d answers before ReadyForQuery, want 50 ParseComplete", i)
			}
			break
		}
		if _, ok := m.(*pgproto3.ParseComplete); !ok {
			t.Fatalf("answer %d: %T", i, m)
		}
	}
	// The 51st, in a flood of distinct names with no Sync.
	go func() {
		for i := 50; i < 5000; i++ {
			if _, err := c.Write(parseMsg(t, fmt.Sprintf("flood%d", i), "SELECT 1")); err != nil {
				return
			}
		}
	}()
	er := wantFatal(t, c, "54000", "the 51st prepared statement")
	if !strings.Contains(er.Message, "limits.max_client_statements") {
		t.Errorf("message %q", er.Message)
	}
	wantLimitLogged(t, p, mark, "max_client_statements")

	// One name parsed again and again without a Sync: the batch streams to
	// the primary (past 64 kB held) and its books of server names grow.
	_, c = rawConn(t, p)
	go func() {
		msg := parseMsg(t, "same", "SELECT 1")
		for range 20000 {
			if _, err := c.Write(msg); err != nil {
				return
			}
		}
	}()
	er = wantFatal(t, c, "54000", "a Parse flood of one name without Sync")
	if !strings.Contains(er.Message, "limits.max_batch_bytes") {
		t.Errorf("message %q", er.Message)
	}
	if limitHits(t, p, "max_client_statements") != 1 || limitHits(t, p, "max_batch_bytes") != 1 {
		t.Errorf("limit hits: max_client_statements %v, max_batch_bytes %v, want 1 each",
			limitHits(t, p, "max_client_statements"), limitHits(t, p, "max_batch_bytes"))
	}
	checkProxyWorks(t, p, "after the floods")
}

// TestStartupPartialPacketCounted: a connection that sent 3 of its startup
// packet's 4 length bytes holds a max_client_conn place until it closes.
func TestStartupPartialPacketCounted(t *testing.T) {
	p := startProxy(t, func(c *config.Config) { c.Limits.StartupTimeout = 10 * time.Second })
	c := rawDial(t, p)
	var l [4]byte
	binary.BigEndian.PutUint32(l[:], 9)
	if _, err := c.Write(l[:3]); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "the partial startup counted", func() (bool, string) {
		return p.srv.ClientConnections() == 1, fmt.Sprint(p.srv.ClientConnections())
	})
	_ = c.Close()
	waitFor(t, 5*time.Second, "released on close", func() (bool, string) {
		return p.srv.ClientConnections() == 0, fmt.Sprint(p.srv.ClientConnections())
	})
}
