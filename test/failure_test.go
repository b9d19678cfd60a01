package test

import (
	"errors"
	"fmt"
	"io"
	"testing"
	"time"

	"github.com/pgsplit/pgsplit/config"
)

// TestProtocolViolationAfterLogin sends a logged-in session a message
// header that cannot be right: pgsplit answers FATAL 08P01 (54000 for a
// length past limits.max_message_size) and closes, the
// upstream connection is not left running or in an unknown state, and the
// proxy serves the next client.
func TestProtocolViolationAfterLogin(t *testing.T) {
	shared.watchLogs(t)
	su := superConn(t)
	cases := []struct {
		name string
		send []byte
		code string // 08P01 for a broken frame, 54000 past limits.max_message_size
	}{
		{"length 3", []byte{'Q', 0, 0, 0, 3}, "08P01"},
		{"length over 1 GB", []byte{'Q', 0x7f, 0xff, 0xff, 0xff}, "54000"},
		{"length 0xFFFFFFFF", []byte{'P', 0xff, 0xff, 0xff, 0xff}, "54000"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ctx := testCtx(t, 10*time.Second)
			c := connect(t, shared.appDSN())
			backend := upstreamPID(t, c)
			if err := c.PgConn().SyncConn(ctx); err != nil {
				t.Fatal(err)
			}
			hc, err := c.PgConn().Hijack()
			if err != nil {
				t.Fatal(err)
			}
			defer hc.Conn.Close()
			if _, err := hc.Conn.Write(tc.send); err != nil {
				t.Fatal(err)
			}
			got, err := readUntilClose(hc.Conn, 5*time.Second)
			if err != nil {
				t.Fatalf("pgsplit neither answered nor closed: %v", err)
			}
			er, err := onlyError(got)
			if err != nil {
				t.Fatal(err)
			}
			if er.Code != tc.code || er.Severity != "FATAL" {
				t.Fatalf("got %s %s %q, want FATAL %s", er.Severity, er.Code, er.Message, tc.code)
			}
			waitFor(t, 3*time.Second, "upstream backend gone or idle", func() (bool, string) {
				st := backendState(t, su, backend)
				return st == "" || st == "idle", "state " + st
			})
		})
	}
	checkProxyWorks(t, shared, "after the protocol violations")
}

// TestUpstreamTerminated kills upstream backends with pg_terminate_backend:
// the client whose backend died is told and disconnected, and later clients
// never get the dead connection — neither the one in use nor idle ones in
// the pool, whether the pool last used them a moment ago or long ago (when
// pool_pre_ping checks them).
func TestUpstreamTerminated(t *testing.T) {
	// pool_size 2 with no overflow: a connection released a moment after
	// the next client connected is kept idle, not closed as overflow (the
	// pool keeps idle connections most-recently-used first, so the
	// terminated backend is the one the next client would get).
	// Session pooling: a client keeps its backend (txpool_test.go has the
	// same under transaction pooling).
	p := startProxy(t, func(c *config.Config) { c.Pool.Mode, c.Pool.PoolSize, c.Pool.MaxOverflow = config.ModeSession, 2, 0 })
	su := superConn(t)
	ctx := testCtx(t, 30*time.Second)
	terminate := func(t *testing.T, pid uint32) {
		t.Helper()
		var ok bool
		if err := su.QueryRow(ctx, "SELECT pg_terminate_backend($1, 5000)", int64(pid)).Scan(&ok); err != nil || !ok {
			t.Fatalf("pg_terminate_backend(%d): %v %v", pid, ok, err)
		}
	}

	t.Run("backend of a connected client", func(t *testing.T) {
		c := connect(t, p.appDSN())
		backend := upstreamPID(t, c)
		terminate(t, backend)
		_, err := c.Exec(ctx, "SELECT 1")
		if err == nil {
			t.Fatal("query on a terminated backend succeeded")
		}
		if code := sqlState(err); code != "57P01" && code != "08006" && !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Fatalf("want 57P01, 08006 or a closed connection, got %v", err)
		}
		c2 := connect(t, p.appDSN())
		if b := upstreamPID(t, c2); b == backend {
			t.Fatalf("the next client got the terminated backend %d", b)
		}
	})

	for _, idleFor := range []time.Duration{0, 2500 * time.Millisecond} {
		t.Run(fmt.Sprintf("idle in the pool for %s", idleFor), func(t *testing.T) {
			c := connect(t, p.appDSN())
			backend := upstreamPID(t, c)
			closeConn(c)
			waitFor(t, 3*time.Second, "connection back in the pool", func() (bool, string) {
				st := backendState(t, su, backend)
				return st == "idle", "state " + st
			})
			terminate(t, backend)
			time.Sleep(idleFor)
			c2 := connect(t, p.appDSN())
			var one int
			if err := c2.QueryRow(ctx, "SELECT 1").Scan(&one); err != nil {
				t.Fatalf("first query of a new client after its pooled backend was terminated: %v", err)
			}
			if b := upstreamPID(t, c2); b == backend {
				t.Fatalf("the new client got the terminated backend %d", b)
			}
		})
	}
}
