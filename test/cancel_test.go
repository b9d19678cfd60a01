package test

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"net"
	"sync"
	"testing"
	"time"
)

// TestCancel cancels a running pg_sleep(10) through pgsplit in several ways;
// each must end it within a second with 57014 (or the context's error) and
// leave the same session, on the same upstream backend, usable.
func TestCancel(t *testing.T) {
	shared.watchLogs(t)
	su := superConn(t)
	c := connect(t, shared.appDSN(), withCancelRequests)
	backend := upstreamPID(t, c)

	// whenRunning calls f on another goroutine once the upstream backend
	// runs the sleep; the case waits for it before it ends.
	var helper sync.WaitGroup
	whenRunning := func(f func()) {
		helper.Add(1)
		go func() {
			defer helper.Done()
			deadline := time.Now().Add(5 * time.Second)
			for time.Now().Before(deadline) && !isSleeping(su, backend) {
				time.Sleep(10 * time.Millisecond)
			}
			f()
		}()
	}
	cases := []struct {
		name string
		run  func() error
	}{
		{"context cancelled after 200ms", func() error {
			ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
			defer cancel()
			_, err := c.Exec(ctx, "SELECT pg_sleep(10)")
			return err
		}},
		{"context cancelled, extended protocol", func() error {
			ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
			defer cancel()
			var s string
			return c.QueryRow(ctx, "SELECT pg_sleep($1)::text", 10).Scan(&s)
		}},
		{"PgConn.CancelRequest from another goroutine", func() error {
			whenRunning(func() {
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				defer cancel()
				if err := c.PgConn().CancelRequest(ctx); err != nil {
					t.Errorf("CancelRequest: %v", err)
				}
			})
			_, err := c.Exec(context.Background(), "SELECT pg_sleep(10)")
			return err
		}},
		{"raw CancelRequest with the key pgsplit gave", func() error {
			whenRunning(func() { sendCancel(t, shared, c.PgConn().PID(), c.PgConn().SecretKey()) })
			_, err := c.Exec(context.Background(), "SELECT pg_sleep(10)")
			return err
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			start := time.Now()
			err := tc.run()
			elapsed := time.Since(start)
			helper.Wait()
			if err == nil {
				t.Fatal("pg_sleep(10) was not cancelled")
			}
			if code := sqlState(err); code != "57014" && !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, context.Canceled) {
				t.Fatalf("want SQLSTATE 57014 or the context's error, got %v", err)
			}
			if elapsed > time.Second {
				t.Fatalf("cancelled statement returned after %s, want < 1s", elapsed)
			}
			if c.IsClosed() {
				t.Fatal("the connection was closed by the cancel")
			}
			mustSelectOne(t, c, "same connection after the cancel")
			if got := upstreamPID(t, c); got != backend {
				t.Fatalf("upstream backend changed from %d to %d: the session should have kept its connection", backend, got)
			}
			if st := backendState(t, su, backend); st != "idle" {
				t.Fatalf("upstream backend state %q after the cancel, want idle", st)
			}
		})
	}
}

// TestCancelWrongKey sends CancelRequests with keys pgsplit never gave out:
// each is ignored silently (the connection is closed without a reply, as
// PostgreSQL does), the running statement finishes normally and the proxy
// keeps serving.
func TestCancelWrongKey(t *testing.T) {
	mark := shared.watchLogs(t)
	su := superConn(t)
	c := connect(t, shared.appDSN())
	backend := upstreamPID(t, c)
	pid, secret := c.PgConn().PID(), c.PgConn().SecretKey()

	start := time.Now()
	done := goExec(t, c, "SELECT pg_sleep(1.5)")
	waitSleeping(t, su, backend)

	randomKey := func() (uint32, []byte) {
		var b [8]byte
		_, _ = rand.Read(b[:])
		return binary.BigEndian.Uint32(b[:4]) & 0x7fffffff, b[4:]
	}
	rp, rs := randomKey()
	wrongSecret := append([]byte(nil), secret...)
	wrongSecret[0] ^= 0xff
	cases := []struct {
		name   string
		pid    uint32
		secret []byte
	}{
		{"random pid and secret", rp, rs},
		{"right pid, wrong secret", pid, wrongSecret},
		{"wrong pid, right secret", pid ^ 0x5a5a, secret},
		{"upstream backend's pid, random secret", backend, rs},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			nc := rawDial(t, shared)
			if _, err := nc.Write(cancelPacket(tc.pid, tc.secret)); err != nil {
				t.Fatal(err)
			}
			b, err := readUntilClose(nc, 3*time.Second)
			if err != nil {
				t.Fatalf("cancel connection: %v (pgsplit should close it)", err)
			}
			if len(b) != 0 {
				t.Fatalf("pgsplit answered a CancelRequest with %q; it must close silently", b)
			}
		})
	}
	if err := <-done; err != nil {
		t.Fatalf("pg_sleep(1.5) after the wrong-key cancels: %v", err)
	}
	if elapsed := time.Since(start); elapsed < 1400*time.Millisecond {
		t.Fatalf("pg_sleep(1.5) returned after %s: it was cut short", elapsed)
	}
	mustSelectOne(t, c, "connection after the wrong-key cancels")
	checkProxyWorks(t, shared, "after the wrong-key cancels")
	client := c.PgConn().Conn().LocalAddr().String()
	for _, e := range shared.logs.entries(mark) {
		if e.str("msg") == "cancel request forwarded" && e.str("client") == client {
			t.Fatalf("pgsplit forwarded a cancel request with a wrong key: %v", e)
		}
	}
}

// sendCancel sends a raw CancelRequest to the proxy and waits for it to
// close the connection.
func sendCancel(t *testing.T, p *testProxy, pid uint32, secret []byte) {
	nc, err := net.DialTimeout("tcp", p.addr(), 5*time.Second)
	if err != nil {
		t.Errorf("dial for cancel: %v", err)
		return
	}
	defer nc.Close()
	if _, err := nc.Write(cancelPacket(pid, secret)); err != nil {
		t.Errorf("write cancel: %v", err)
		return
	}
	if _, err := readUntilClose(nc, 5*time.Second); err != nil {
		t.Errorf("cancel connection: %v", err)
	}
}
