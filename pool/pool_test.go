package pool

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pgsplit/pgsplit/internal/pgcluster"
)

// The pool is tested against a real PostgreSQL server started for this
// package; there is no mock.
var cluster *pgcluster.Cluster

func TestMain(m *testing.M) {
	if _, err := pgcluster.FindBinDir(); err != nil {
		fmt.Fprintln(os.Stderr, "pool tests need PostgreSQL:", err)
		os.Exit(1)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	c, err := pgcluster.Start(ctx, pgcluster.Options{Replicas: 0})
	cancel()
	if err != nil {
		fmt.Fprintln(os.Stderr, "starting PostgreSQL:", err)
		os.Exit(1)
	}
	cluster = c
	code := m.Run()
	if err := c.Stop(); err != nil {
		fmt.Fprintln(os.Stderr, err)
	}
	os.Exit(code)
}

func newPool(size, overflow int, timeout time.Duration) *Pool {
	return New(Options{
		Host: cluster.Primary.Host, Port: cluster.Primary.Port,
		User: "app", Password: "app", Database: "app",
		Limits:         Limits{Size: size, MaxOverflow: overflow, Timeout: timeout, PrePing: true},
		ConnectTimeout: 5 * time.Second,
	})
}

// backends counts the server's connections for user app.
func backends(t *testing.T) int {
	t.Helper()
	out, err := cluster.Psql(context.Background(), cluster.Primary, "postgres",
		"SELECT count(*) FROM pg_stat_activity WHERE usename = 'app'")
	if err != nil {
		t.Fatal(err)
	}
	var n int
	fmt.Sscan(out, &n)
	return n
}

func TestLimitsTimeoutAndOverflow(t *testing.T) {
	p := newPool(2, 1, 300*time.Millisecond)
	defer p.Close()
	ctx := context.Background()
	var held []*Conn
	for i := 0; i < 3; i++ {
		c, err := p.Acquire(ctx)
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, c)
	}
	if got := backends(t); got != 3 {
		t.Fatalf("want 3 server connections, got %d", got)
	}
	start := time.Now()
	_, err := p.Acquire(ctx)
	var te *TimeoutError
	if !errors.As(err, &te) {
		t.Fatalf("4th acquire: want TimeoutError, got %v", err)
	}
	if waited := time.Since(start); waited < 250*time.Millisecond || waited > 2*time.Second {
		t.Fatalf("waited %s, want about pool_timeout (300ms)", waited)
	}
	if !strings.Contains(err.Error(), "pool_size 2 + max_overflow 1") || !strings.Contains(err.Error(), "app@app") {
		t.Fatalf("error must name the pool and its limit: %v", err)
	}

	// A waiter gets the connection that comes back, woken by Release: with
	// a long pool_timeout, a lost wake-up would leave it asleep for 10 s.
	p.SetLimits(Limits{Size: 2, MaxOverflow: 1, Timeout: 10 * time.Second, PrePing: true})
	got := make(chan *Conn, 1)
	go func() {
		c, err := p.Acquire(ctx)
		if err != nil {
			t.Error(err)
		}
		got <- c
	}()
	time.Sleep(50 * time.Millisecond)
	p.Release(held[0])
	select {
	case c := <-got:
		held[0] = c
	case <-time.After(time.Second):
		t.Fatal("waiter not woken by Release")
	}

	// Release all three: only pool_size (2) stay open, the overflow one closes.
	for _, c := range held {
		p.Release(c)
	}
	if s := p.Stats(); s.Open != 2 || s.Idle != 2 {
		t.Fatalf("after release want 2 open/2 idle, got %+v", s)
	}
	waitFor(t, func() bool { return backends(t) == 2 })
}

// With overflow_idle_timeout an overflow connection that comes back stays
// open, so a load that hovers around pool_size reuses it instead of dialling
// a new one each time, and is closed once it sat idle that long; pool_size
// connections stay. A reload to 0 closes the idle overflow at once.
func TestOverflowConnectionStaysOpenUntilIdleTimeout(t *testing.T) {
	p := newPool(1, 2, time.Second)
	defer p.Close()
	p.SetLimits(Limits{Size: 1, MaxOverflow: 2, Timeout: time.Second, PrePing: true, IdleTimeout: 400 * time.Millisecond})
	ctx := context.Background()
	pids := map[uint32]bool{}
	for round := 0; round < 20; round++ {
		a, err := p.Acquire(ctx)
		if err != nil {
			t.Fatal(err)
		}
		b, err := p.Acquire(ctx)
		if err != nil {
			t.Fatal(err)
		}
		pids[a.PID], pids[b.PID] = true, true
		p.Release(a)
		p.Release(b)
	}
	if len(pids) != 2 {
		t.Fatalf("20 rounds of 2 connections on pool_size 1 used %d server connections, want 2 (the overflow one kept)", len(pids))
	}
	if s := p.Stats(); s.Open != 2 || s.Idle != 2 {
		t.Fatalf("right after the load want 2 open/2 idle, got %+v", s)
	}
	waitFor(t, func() bool { return p.Stats().Open == 1 })
	if s := p.Stats(); s.Idle != 1 {
		t.Fatalf("after overflow_idle_timeout want pool_size (1) idle, got %+v", s)
	}
	waitFor(t, func() bool { return backends(t) == 1 })

	a, _ := p.Acquire(ctx)
	b, _ := p.Acquire(ctx)
	p.Release(a)
	p.Release(b)
	p.SetLimits(Limits{Size: 1, MaxOverflow: 2, Timeout: time.Second, PrePing: true})
	if s := p.Stats(); s.Open != 1 || s.Idle != 1 {
		t.Fatalf("after a reload to overflow_idle_timeout 0 want 1 open/1 idle, got %+v", s)
	}
}

// A connection killed on the server while idle is replaced by pre-ping, so
// the caller never sees the dead one; with pre-ping off it is handed out.
// Idle a minute, the empty-query ping catches it (Acquire); idle 100 ms,
// under PingAfter, only the socket check can (TryAcquire, the sessions'
// first try, as well as Acquire).
func TestPrePingReplacesDeadConnection(t *testing.T) {
	for _, tc := range []struct {
		idle time.Duration
		try  bool
	}{{time.Minute, false}, {100 * time.Millisecond, false}, {100 * time.Millisecond, true}} {
		for _, prePing := range []bool{true, false} {
			t.Run(fmt.Sprintf("idle=%s/try=%v/pre_ping=%v", tc.idle, tc.try, prePing), func(t *testing.T) {
				p := newPool(1, 0, time.Second)
				p.opts.PrePing = prePing
				defer p.Close()
				ctx := context.Background()
				c, err := p.Acquire(ctx)
				if err != nil {
					t.Fatal(err)
				}
				pid := c.PID
				p.Release(c)
				if _, err := cluster.Psql(ctx, cluster.Primary, "postgres", fmt.Sprintf("SELECT pg_terminate_backend(%d, 5000)", pid)); err != nil {
					t.Fatal(err)
				}
				c.lastUsed = time.Now().Add(-tc.idle)
				var c2 *Conn
				if tc.try {
					if c2 = p.TryAcquire(); c2 == nil {
						if c2, err = p.Acquire(ctx); err != nil { // the dead one was closed: dial
							t.Fatal(err)
						}
					}
				} else if c2, err = p.Acquire(ctx); err != nil {
					t.Fatal(err)
				}
				_, execErr := c2.Exec(ctx, "SELECT 1")
				if prePing {
					if c2.PID == pid || execErr != nil {
						t.Fatalf("pre-ping should have replaced backend %d: got %d, %v", pid, c2.PID, execErr)
					}
					p.Release(c2)
				} else {
					if c2.PID != pid || execErr == nil {
						t.Fatalf("without pre-ping the dead connection is handed out: got pid %d err %v", c2.PID, execErr)
					}
					p.Discard(c2)
				}
			})
		}
	}
}

func TestRecycle(t *testing.T) {
	p := newPool(1, 0, time.Second)
	p.opts.Recycle = 50 * time.Millisecond
	defer p.Close()
	ctx := context.Background()
	c, err := p.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	pid := c.PID
	time.Sleep(80 * time.Millisecond)
	p.Release(c) // too old: closed instead of kept
	c, err = p.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if c.PID == pid {
		t.Fatal("connection older than pool_recycle was reused")
	}
	p.Release(c)
}

func TestResetClearsSessionState(t *testing.T) {
	p := newPool(1, 0, time.Second)
	defer p.Close()
	ctx := context.Background()
	c, err := p.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	st, err := c.Exec(ctx, "BEGIN; SET search_path TO nowhere")
	if err != nil || st != 'T' {
		t.Fatalf("status %q err %v", st, err)
	}
	if err := c.Reset(ctx, st); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Exec(ctx, "SET TimeZone TO 'Asia/Tokyo'"); err != nil {
		t.Fatal(err)
	}
	if c.Params["TimeZone"] != "Asia/Tokyo" {
		t.Fatalf("ParameterStatus not tracked: %v", c.Params["TimeZone"])
	}
	if err := c.Reset(ctx, 'I'); err != nil {
		t.Fatal(err)
	}
	if c.Params["TimeZone"] == "Asia/Tokyo" {
		t.Fatal("DISCARD ALL should have reported TimeZone back to default")
	}
	_, err = c.Exec(ctx, "SELECT 1/0")
	if se, ok := IsServerError(err); !ok || se.Msg.Code != "22012" {
		t.Fatalf("want 22012, got %v", err)
	}
	p.Release(c)
}

func TestConcurrentAcquireNeverExceedsMax(t *testing.T) {
	p := newPool(3, 2, 10*time.Second)
	defer p.Close()
	var mu sync.Mutex
	inUse, peak := 0, 0
	var wg sync.WaitGroup
	for i := 0; i < 40; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := p.Acquire(context.Background())
			if err != nil {
				t.Error(err)
				return
			}
			mu.Lock()
			inUse++
			peak = max(peak, inUse)
			mu.Unlock()
			if _, err := c.Exec(context.Background(), "SELECT pg_sleep(0.01)"); err != nil {
				t.Error(err)
			}
			mu.Lock()
			inUse--
			mu.Unlock()
			p.Release(c)
		}()
	}
	wg.Wait()
	if peak > 5 || p.Stats().Open > 5 {
		t.Fatalf("peak %d, open %d: limit is 5", peak, p.Stats().Open)
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	for i := 0; i < 50; i++ {
		if cond() {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatal("condition not reached in 5s")
}

// QueryParams binds parameters as a client's Bind carries them (binary and
// text formats, a declared and an inferred type, NULL) and returns text
// rows; a server error leaves the connection usable and the unnamed
// statement is no longer taken to be the client's.
func TestQueryParams(t *testing.T) {
	p := newPool(1, 0, time.Second)
	defer p.Close()
	ctx := context.Background()
	c, err := p.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Release(c)
	c.State.Unnamed = []byte("P…")
	rows, err := c.QueryParams(ctx, "SELECT $1::int8 + 1, $2 || '!', $3::text IS NULL",
		[]uint32{20}, []int16{1, 0, 0}, [][]byte{{0, 0, 0, 0, 0, 0, 0, 41}, []byte("hi"), nil})
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) != 1 || string(rows[0][0]) != "42" || string(rows[0][1]) != "hi!" || string(rows[0][2]) != "t" {
		t.Fatalf("rows %q", rows)
	}
	if c.State.Unnamed != nil {
		t.Fatal("the unnamed statement was replaced but State still has the client's")
	}
	_, err = c.QueryParams(ctx, "SELECT 1/$1::int", nil, nil, [][]byte{[]byte("0")})
	if se, ok := IsServerError(err); !ok || se.Msg.Code != "22012" {
		t.Fatalf("want 22012, got %v", err)
	}
	if rows, err := c.QueryParams(ctx, "SELECT $1::int * 2", nil, []int16{0}, [][]byte{[]byte("21")}); err != nil || string(rows[0][0]) != "42" {
		t.Fatalf("after an error: %q %v", rows, err)
	}
}

// TestCancelAddressOfAnIPv6Server: the address cancel requests are dialed
// with is [host]:port for an IPv6 server ("::1:5432" cannot be dialed).
func TestCancelAddressOfAnIPv6Server(t *testing.T) {
	for _, tc := range []struct {
		host string
		want string
	}{{"::1", "[::1]:5432"}, {"fe80::1%lo", "[fe80::1%lo]:5432"}, {"127.0.0.1", "127.0.0.1:5432"}, {"db.example", "db.example:5432"}} {
		o := &Options{Host: tc.host, Port: 5432}
		got := o.Addr()
		if got != tc.want {
			t.Errorf("Addr() for host %q = %q, want %q", tc.host, got, tc.want)
		}
		if h, _, err := net.SplitHostPort(got); err != nil || h != tc.host {
			t.Errorf("Addr() for host %q = %q does not split back: %q, %v", tc.host, got, h, err)
		}
	}
}
