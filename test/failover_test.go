package test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgsplit/pgsplit/config"
	"github.com/pgsplit/pgsplit/internal/pgcluster"
)

// Failover and replica loss (issue 10). Each test here starts its own
// cluster (a primary and two streaming replicas) and its own pgsplit, so it
// can stop, crash and promote servers without touching the shared cluster.
//
// PGSPLIT_FAILOVER_SECONDS shortens (or lengthens) the read-load test
// (default 30 s).

// clusterLog forwards pgcluster's progress lines to t.Log.
type clusterLog struct{ t *testing.T }

func (w clusterLog) Write(p []byte) (int, error) {
	w.t.Log("pgcluster: " + strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// startOwnCluster starts a primary and two replicas for one test, with the
// tables fo_small (20 rows) and fo_writes owned by app, replayed on both
// replicas; the cluster is stopped when the test ends.
func startOwnCluster(t *testing.T) *pgcluster.Cluster {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c, err := pgcluster.Start(ctx, pgcluster.Options{Replicas: 2, AppAuth: "scram-sha-256", MaxConnections: 200, Log: clusterLog{t}})
	if err != nil {
		t.Fatalf("start this test's cluster: %v", err)
	}
	t.Cleanup(func() {
		if err := c.Stop(); err != nil {
			t.Errorf("stop this test's cluster: %v", err)
		}
	})
	app, err := pgx.Connect(ctx, c.AppDSN(c.Primary))
	if err != nil {
		t.Fatal(err)
	}
	defer closeConn(app)
	for _, s := range []string{
		`CREATE TABLE fo_small (id int PRIMARY KEY, note text NOT NULL)`,
		`INSERT INTO fo_small SELECT g, 'row ' || g FROM generate_series(1, 20) g`,
		`CREATE TABLE fo_writes (id bigint PRIMARY KEY, at timestamptz NOT NULL DEFAULT clock_timestamp())`,
	} {
		if _, err := app.Exec(ctx, s); err != nil {
			t.Fatalf("%s: %v", s, err)
		}
	}
	for _, r := range c.Replicas {
		deadline := time.Now().Add(30 * time.Second)
		for {
			out, err := c.Psql(ctx, r, appDatabase, "SELECT (SELECT count(*) FROM fo_small) || '/' || (SELECT count(*) FROM fo_writes)")
			if err == nil && out == "20/0" {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s has not replayed the schema after 30s: %q, %v", r.Name, out, err)
			}
			time.Sleep(25 * time.Millisecond)
		}
	}
	return c
}

// ownServer is node n as a pgsplit server entry.
func ownServer(n pgcluster.Node, role string) config.Server {
	return config.Server{Host: n.Host, Port: n.Port, Role: role, Weight: 1}
}

// ownConfig is baseConfig pointed at servers of a test's own cluster: user
// app only, database app only, routing on with health checks every 500 ms,
// transaction pooling.
func ownConfig(servers ...config.Server) *config.Config {
	cfg := baseConfig()
	cfg.Servers = servers
	cfg.Auth.Users = []config.User{{Name: appUser, Password: appPassword}}
	cfg.Databases = []string{appDatabase}
	cfg.Routing = config.DefaultRouting()
	cfg.Routing.HealthCheckInterval = 500 * time.Millisecond
	cfg.Pool.Mode = config.ModeTransaction
	return cfg
}

// nodeNames maps the ports of c's servers to their names.
func nodeNames(c *pgcluster.Cluster) map[int]string {
	m := map[int]string{c.Primary.Port: c.Primary.Name}
	for _, r := range c.Replicas {
		m[r.Port] = r.Name
	}
	return m
}

// failoverSeconds is the length of the read-load test.
func failoverSeconds(t *testing.T) time.Duration {
	s := os.Getenv("PGSPLIT_FAILOVER_SECONDS")
	if s == "" {
		return 30 * time.Second
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 6 {
		t.Fatalf("PGSPLIT_FAILOVER_SECONDS=%q: want a whole number of seconds, at least 6", s)
	}
	return time.Duration(n) * time.Second
}

// isConnectionError reports whether err leaves c unusable (pgx closed it,
// or no server error came back: the connection broke).
func isConnectionError(c *pgx.Conn, err error) bool {
	var pe *pgconn.PgError
	return c == nil || c.IsClosed() || !errors.As(err, &pe) || pe.Severity == "FATAL" || pe.Severity == "PANIC"
}

// dialProxy opens a fresh pgx connection within 5 s.
func dialProxy(cfg *pgx.ConnConfig) (*pgx.Conn, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return pgx.ConnectConfig(ctx, cfg.Copy())
}

// readFailure is one read that did not get its answer.
type readFailure struct {
	phase  int
	at     time.Time
	worker int
	err    error
}

// TestReplicaKilledUnderReadLoadNoFailedReads crashes a replica (pg_ctl stop
// -m immediate) under a read load of 8 clients and starts it again: no read
// fails (reads avoid the dead replica, a read that failed on it before any
// answer reached the client is re-run elsewhere), and the replica serves
// reads again within 10 s of its restart.
func TestReplicaKilledUnderReadLoadNoFailedReads(t *testing.T) {
	c := startOwnCluster(t)
	r0 := c.Replicas[0]
	names := nodeNames(c)
	p := startProxyWith(t, ownConfig(ownServer(c.Primary, config.RolePrimary),
		ownServer(c.Replicas[0], config.RoleReplica), ownServer(c.Replicas[1], config.RoleReplica)))

	total := failoverSeconds(t)
	before, down := total/6, total/3
	after := total - before - down
	const (
		workers     = 8
		backWithin  = 10 * time.Second
		phaseBefore = 0
		phaseDown   = 1
		phaseAfter  = 2
	)
	phaseNames := []string{"before", "down", "after"}

	var phase atomic.Int32
	var mu sync.Mutex
	served := [3]map[int]int{{}, {}, {}} // phase → port → reads
	var failures []readFailure
	var restarted atomic.Int64 // UnixNano when StartNode returned
	var backAt atomic.Int64    // UnixNano of the first read r0 served after that
	stop := make(chan struct{})
	var wg sync.WaitGroup

	queries := []string{
		"SELECT inet_server_port(), 0",
		"SELECT inet_server_port(), count(*)::int FROM fo_small",
		"SELECT inet_server_port(), length(note) FROM fo_small WHERE id = $1",
	}
	stopLoad := stopLoops(t, stop, &wg, "readers")
	t.Cleanup(stopLoad)
	for w := range workers {
		cc := connectConfig(t, p.appDSN("application_name=fo-reader-"+strconv.Itoa(w)))
		if w%2 == 0 {
			cc.DefaultQueryExecMode = pgx.QueryExecModeSimpleProtocol
		}
		conn, err := dialProxy(cc)
		if err != nil {
			t.Fatalf("reader %d: connect: %v", w, err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() {
				if conn != nil {
					closeConn(conn)
				}
			}()
			fail := func(err error) {
				mu.Lock()
				failures = append(failures, readFailure{phase: int(phase.Load()), at: time.Now(), worker: w, err: err})
				mu.Unlock()
			}
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				if conn == nil {
					var err error
					if conn, err = dialProxy(cc); err != nil {
						conn = nil
						fail(fmt.Errorf("reconnect: %w", err))
						time.Sleep(50 * time.Millisecond)
						continue
					}
				}
				q := queries[i%len(queries)]
				var args []any
				id := i%20 + 1
				if i%len(queries) == 2 {
					args = []any{id}
				}
				ph := int(phase.Load())
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				var port, n int
				err := conn.QueryRow(ctx, q, args...).Scan(&port, &n)
				cancel()
				switch {
				case err != nil:
				case i%len(queries) == 1 && n != 20:
					err = fmt.Errorf("%s: count %d, want 20", q, n)
				case i%len(queries) == 2 && n != len("row "+strconv.Itoa(id)):
					err = fmt.Errorf("%s [%d]: length %d, want %d", q, id, n, len("row "+strconv.Itoa(id)))
				}
				if err != nil {
					fail(fmt.Errorf("%s: %w", q, err))
					if isConnectionError(conn, err) {
						closeConn(conn)
						conn = nil
					}
					continue
				}
				mu.Lock()
				served[ph][port]++
				mu.Unlock()
				if port == r0.Port && ph == phaseAfter && restarted.Load() != 0 {
					backAt.CompareAndSwap(0, time.Now().UnixNano())
				}
				time.Sleep(time.Millisecond)
			}
		}()
	}

	began := time.Now()
	time.Sleep(before)
	phaseBeforeLen := time.Since(began)

	ctx := testCtx(t, 3*time.Minute)
	downBegan := time.Now()
	phase.Store(phaseDown)
	if err := c.StopNode(ctx, r0, "immediate"); err != nil {
		t.Fatal(err)
	}
	stopTook := time.Since(downBegan)
	time.Sleep(time.Until(downBegan.Add(down)))
	startBegan := time.Now()
	if err := c.StartNode(ctx, r0); err != nil {
		t.Fatal(err)
	}
	startTook := time.Since(startBegan)
	phase.Store(phaseAfter)
	restartedAt := time.Now()
	restarted.Store(restartedAt.UnixNano())
	phaseDownLen := restartedAt.Sub(downBegan)
	// Run the rest of the load; past its end, keep going until r0 served
	// again or the allowed time is up (so a short run still checks it).
	for {
		now := time.Now()
		if !now.Before(restartedAt.Add(after)) && (backAt.Load() != 0 || now.After(restartedAt.Add(backWithin+time.Second))) {
			break
		}
		time.Sleep(25 * time.Millisecond)
	}
	phaseAfterLen := time.Since(restartedAt)
	stopLoad()

	mu.Lock()
	defer mu.Unlock()
	ports := []int{c.Primary.Port, c.Replicas[0].Port, c.Replicas[1].Port}
	var b strings.Builder
	fmt.Fprintf(&b, "reads per server and phase (%d readers; %s stopped -m immediate in %v, started again in %v):\n",
		workers, r0.Name, stopTook.Round(time.Millisecond), startTook.Round(time.Millisecond))
	fmt.Fprintf(&b, "  %-16s", "phase")
	for _, port := range ports {
		fmt.Fprintf(&b, " %10s", names[port])
	}
	fmt.Fprintf(&b, " %10s %8s\n", "other", "failed")
	lens := []time.Duration{phaseBeforeLen, phaseDownLen, phaseAfterLen}
	for ph := range served {
		fmt.Fprintf(&b, "  %-16s", fmt.Sprintf("%s (%.1fs)", phaseNames[ph], lens[ph].Seconds()))
		other := 0
		for port, n := range served[ph] {
			if names[port] == "" {
				other += n
			}
		}
		for _, port := range ports {
			fmt.Fprintf(&b, " %10d", served[ph][port])
		}
		failed := 0
		for _, f := range failures {
			if f.phase == ph {
				failed++
			}
		}
		fmt.Fprintf(&b, " %10d %8d\n", other, failed)
	}
	if at := backAt.Load(); at != 0 {
		fmt.Fprintf(&b, "%s served reads again %v after StartNode returned", r0.Name, time.Unix(0, at).Sub(restartedAt).Round(time.Millisecond))
	} else {
		fmt.Fprintf(&b, "%s served no read in the %v after StartNode returned", r0.Name, phaseAfterLen.Round(time.Millisecond))
	}
	t.Log(b.String())

	if served[phaseBefore][r0.Port] == 0 {
		t.Fatalf("%s served no read before it was stopped: the load does not reach it, so the test proves nothing", r0.Name)
	}
	if len(failures) > 0 {
		var lines []string
		for i, f := range failures {
			if i == 15 {
				lines = append(lines, fmt.Sprintf("… and %d more", len(failures)-i))
				break
			}
			lines = append(lines, fmt.Sprintf("  [%s +%v, reader %d] %v", phaseNames[f.phase], f.at.Sub(downBegan).Round(time.Millisecond), f.worker, f.err))
		}
		t.Errorf("%d reads failed (want 0; times relative to the stop of %s):\n%s", len(failures), r0.Name, strings.Join(lines, "\n"))
	}
	if at := backAt.Load(); at == 0 || time.Unix(0, at).Sub(restartedAt) > backWithin {
		t.Errorf("%s did not serve reads again within %v of its restart", r0.Name, backWithin)
	}
}

// TestReplicaKilledReadsNeverHang crashes the only replica (pg_ctl stop -m
// immediate) under 8 clients' autocommit reads, 4 in the simple protocol and
// 4 in the extended one (pgx's statement cache), five times, each with a
// fresh pgsplit: every read gets an answer (rows or an error) within 3 s;
// none waits for an answer that never comes.
func TestReplicaKilledReadsNeverHang(t *testing.T) {
	c := startOwnCluster(t)
	r0 := c.Replicas[0]
	const (
		rounds  = 5
		clients = 8
		answer  = 3 * time.Second
	)
	modes := []pgx.QueryExecMode{pgx.QueryExecModeSimpleProtocol, pgx.QueryExecModeCacheStatement}
	hung := map[pgx.QueryExecMode][]string{}
	errs := map[pgx.QueryExecMode][]string{}
	reads := map[pgx.QueryExecMode]int{}
	ctx := testCtx(t, 3*time.Minute)
	for round := range rounds {
		t.Run(fmt.Sprintf("round %d", round), func(t *testing.T) {
			cfg := ownConfig(ownServer(c.Primary, config.RolePrimary), ownServer(r0, config.RoleReplica))
			// No lag limit: right after a restart an idle replica's lag
			// reads as the time since its last replayed transaction, which
			// would keep it out of rotation; this test is about answers.
			cfg.Routing.MaxReplicaLag = 0
			p := startProxyWith(t, cfg)
			var mu sync.Mutex
			var onReplica atomic.Int64
			stop := make(chan struct{})
			var wg sync.WaitGroup
			var crashAt atomic.Int64
			stopLoad := sync.OnceFunc(func() { close(stop); wg.Wait() })
			t.Cleanup(stopLoad)
			for w := range clients {
				mode := modes[w%2]
				cc := connectConfig(t, p.appDSN(fmt.Sprintf("application_name=fo-hang-%d", w)), func(cc *pgx.ConnConfig) { cc.DefaultQueryExecMode = mode })
				conn, err := dialProxy(cc)
				if err != nil {
					t.Fatalf("round %d, client %d: connect: %v", round, w, err)
				}
				wg.Add(1)
				go func() {
					defer wg.Done()
					defer func() {
						if conn != nil {
							closeConn(conn)
						}
					}()
					for {
						select {
						case <-stop:
							return
						default:
						}
						if conn == nil {
							var err error
							if conn, err = dialProxy(cc); err != nil {
								conn = nil
								time.Sleep(20 * time.Millisecond)
								continue
							}
						}
						qctx, cancel := context.WithTimeout(context.Background(), answer)
						began := time.Now()
						var port, n int
						err := conn.QueryRow(qctx, "SELECT inet_server_port(), count(*)::int FROM fo_small").Scan(&port, &n)
						cancel()
						mu.Lock()
						reads[mode]++
						switch {
						case err == nil && port == r0.Port:
							onReplica.Add(1)
						case err != nil && errors.Is(err, context.DeadlineExceeded):
							hung[mode] = append(hung[mode], fmt.Sprintf("round %d, client %d: read sent %+.3fs after the crash got no answer in %v",
								round, w, float64(began.UnixNano()-crashAt.Load())/1e9, answer))
						case err != nil:
							errs[mode] = append(errs[mode], fmt.Sprintf("round %d, client %d: read sent %+.3fs after the crash, answered in %v: %v",
								round, w, float64(began.UnixNano()-crashAt.Load())/1e9, time.Since(began).Round(time.Millisecond), err))
						}
						mu.Unlock()
						if err != nil && isConnectionError(conn, err) {
							closeConn(conn)
							conn = nil
						}
					}
				}()
			}
			waitFor(t, 10*time.Second, "reads on the replica before the crash", func() (bool, string) {
				n := onReplica.Load()
				return n >= 100, fmt.Sprintf("%d reads on %s", n, r0.Name)
			})
			crashAt.Store(time.Now().UnixNano())
			if err := c.StopNode(ctx, r0, "immediate"); err != nil {
				t.Fatal(err)
			}
			time.Sleep(answer + time.Second)
			stopLoad()
			mu.Lock()
			for _, mode := range modes {
				for _, h := range hung[mode] {
					if strings.HasPrefix(h, fmt.Sprintf("round %d,", round)) {
						t.Errorf("%s: %s", mode, h)
					}
				}
			}
			mu.Unlock()
			if err := p.shutdown(cfg.ShutdownTimeout + 10*time.Second); err != nil {
				t.Error(err)
			}
			if err := c.StartNode(ctx, r0); err != nil {
				t.Fatal(err)
			}
		})
	}
	for _, mode := range modes {
		t.Logf("%s: %d reads, %d failed with an error, %d got no answer within %v", mode, reads[mode], len(errs[mode]), len(hung[mode]), answer)
		for i, e := range errs[mode] {
			if i == 10 {
				t.Logf("  … and %d more errors", len(errs[mode])-i)
				break
			}
			t.Logf("  %s", e)
		}
	}
	for _, mode := range modes {
		if len(hung[mode]) > 0 {
			t.Errorf("%s: %d reads got no answer at all (neither rows nor an error) within %v of a replica crash", mode, len(hung[mode]), answer)
		}
	}
}

// writeRec is one attempted write of the failover test.
type writeRec struct {
	id   int64
	at   time.Time // when the answer (or error) came back
	port int       // inet_server_port() of an acknowledged write
	err  error
}

// readRec is one read of the failover test.
type readRec struct {
	at   time.Time
	port int
	err  error
}

// TestFailoverPromotedReplicaTakesWritesWithinOneSecond: with every server
// `role: auto`, a writer (an INSERT every ~10 ms) and a reader run while the
// primary crashes (pg_ctl stop -m immediate) and a replica is promoted (the
// most advanced one, replica1 on a tie, so that the other can follow it) and
// the other made to follow it. Writes resume on the new primary within 1 s of
// the promotion; no statement reaches a standby (no 25006); no acknowledged
// write is missing on the new primary except those acknowledged in the last
// second before the crash (asynchronous replication); reads never fail; and a
// new client can log in and read while there is no primary.
func TestFailoverPromotedReplicaTakesWritesWithinOneSecond(t *testing.T) {
	c := startOwnCluster(t)
	names := nodeNames(c)
	oldPrimary := c.Primary
	cfg := ownConfig(ownServer(c.Primary, config.RoleAuto),
		ownServer(c.Replicas[0], config.RoleAuto), ownServer(c.Replicas[1], config.RoleAuto))
	cfg.Pool.PoolTimeout = 2 * time.Second
	p := startProxyWith(t, cfg)
	ctx := testCtx(t, 3*time.Minute)

	const (
		every      = 10 * time.Millisecond
		resumeMax  = time.Second
		lossWindow = time.Second
	)
	var mu sync.Mutex
	var writes []writeRec
	var reads []readRec
	var connectErrs []error
	stop := make(chan struct{})
	var wg sync.WaitGroup

	writerCfg := connectConfig(t, p.appDSN("application_name=fo-writer"))
	readerCfg := connectConfig(t, p.appDSN("application_name=fo-reader"), func(cc *pgx.ConnConfig) {
		cc.DefaultQueryExecMode = pgx.QueryExecModeSimpleProtocol
	})
	// loop runs one attempt every ~10 ms on a connection it reopens when
	// it breaks, until stop.
	loop := func(cc *pgx.ConnConfig, attempt func(conn *pgx.Conn, i int64) error) {
		defer wg.Done()
		var conn *pgx.Conn
		defer func() {
			if conn != nil {
				closeConn(conn)
			}
		}()
		next := time.Now()
		for i := int64(1); ; {
			select {
			case <-stop:
				return
			case <-time.After(time.Until(next)):
			}
			next = next.Add(every)
			if now := time.Now(); next.Before(now) {
				next = now
			}
			if conn == nil {
				var err error
				if conn, err = dialProxy(cc); err != nil {
					conn = nil
					mu.Lock()
					connectErrs = append(connectErrs, fmt.Errorf("%s at %s: %w", cc.RuntimeParams["application_name"], time.Now().Format("15:04:05.000"), err))
					mu.Unlock()
					continue
				}
			}
			if err := attempt(conn, i); err != nil && isConnectionError(conn, err) {
				closeConn(conn)
				conn = nil
			}
			i++
		}
	}
	wg.Add(2)
	go loop(writerCfg, func(conn *pgx.Conn, id int64) error {
		actx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		var port int
		err := conn.QueryRow(actx, "INSERT INTO fo_writes (id) VALUES ($1) RETURNING inet_server_port()", id).Scan(&port)
		mu.Lock()
		writes = append(writes, writeRec{id: id, at: time.Now(), port: port, err: err})
		mu.Unlock()
		return err
	})
	go loop(readerCfg, func(conn *pgx.Conn, _ int64) error {
		actx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		var port, n int
		err := conn.QueryRow(actx, "SELECT inet_server_port(), count(*)::int FROM fo_small").Scan(&port, &n)
		if err == nil && n != 20 {
			err = fmt.Errorf("count %d, want 20", n)
		}
		mu.Lock()
		reads = append(reads, readRec{at: time.Now(), port: port, err: err})
		mu.Unlock()
		return err
	})
	stopAll := stopLoops(t, stop, &wg, "writer and reader")
	t.Cleanup(stopAll)
	ackedOn := func(port int) int {
		mu.Lock()
		defer mu.Unlock()
		n := 0
		for _, w := range writes {
			if w.err == nil && w.port == port {
				n++
			}
		}
		return n
	}

	// Warm up: writes land on the primary.
	waitFor(t, 10*time.Second, "50 writes acknowledged by the primary before the crash", func() (bool, string) {
		n := ackedOn(oldPrimary.Port)
		return n >= 50, fmt.Sprintf("%d acknowledged", n)
	})

	crashAt := time.Now()
	if err := c.StopNode(ctx, oldPrimary, "immediate"); err != nil {
		t.Fatal(err)
	}
	stopDone := time.Now()

	// No primary: a new client logs in and reads.
	time.Sleep(time.Second)
	loginBegan := time.Now()
	var loginErr error
	var loginPort int
	if nc, err := dialProxy(connectConfig(t, p.appDSN("application_name=fo-new-client"))); err != nil {
		loginErr = fmt.Errorf("log in: %w", err)
	} else {
		rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		var n int
		if err := nc.QueryRow(rctx, "SELECT inet_server_port(), count(*)::int FROM fo_small").Scan(&loginPort, &n); err != nil {
			loginErr = fmt.Errorf("read: %w", err)
		} else if n != 20 {
			loginErr = fmt.Errorf("read: count %d, want 20", n)
		}
		cancel()
		closeConn(nc)
	}
	loginTook := time.Since(loginBegan)
	// Long enough for a write to wait out pool_timeout with no primary.
	time.Sleep(time.Until(stopDone.Add(cfg.Pool.PoolTimeout + 500*time.Millisecond)))

	// Promote the replica that received the most WAL, so the other can
	// follow it (replica1 on a tie).
	lsnOf := func(n pgcluster.Node) int64 {
		out, err := c.Psql(ctx, n, "", "SELECT (pg_last_wal_receive_lsn() - '0/0'::pg_lsn)::bigint")
		if err != nil {
			t.Fatal(err)
		}
		v, err := strconv.ParseInt(out, 10, 64)
		if err != nil {
			t.Fatalf("receive LSN of %s: %q", n.Name, out)
		}
		return v
	}
	promoted, follower := c.Replicas[0], c.Replicas[1]
	lsn0, lsn1 := lsnOf(promoted), lsnOf(follower)
	if lsn1 > lsn0 {
		promoted, follower = follower, promoted
	}
	promoteBegan := time.Now()
	if err := c.Promote(ctx, promoted); err != nil {
		t.Fatal(err)
	}
	promoteDone := time.Now()
	if err := c.Follow(ctx, follower, promoted); err != nil {
		t.Fatal(err)
	}
	followDone := time.Now()

	// Writes on the new primary, or give up after 10 s; then 2 s more.
	deadline := promoteDone.Add(10 * time.Second)
	for ackedOn(promoted.Port) == 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(2 * time.Second)
	endAt := time.Now()
	stopAll()

	// What the new primary has.
	pc, err := pgx.Connect(ctx, c.AppDSN(promoted))
	if err != nil {
		t.Fatal(err)
	}
	defer closeConn(pc)
	have := map[int64]bool{}
	rows, err := pc.Query(ctx, "SELECT id FROM fo_writes")
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var id int64
		if err := rows.Scan(&id); err != nil {
			t.Fatal(err)
		}
		have[id] = true
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}

	mu.Lock()
	defer mu.Unlock()
	rel := func(at time.Time) string { return fmt.Sprintf("%+.3fs", at.Sub(crashAt).Seconds()) }
	var firstResume time.Time
	ackedPer := map[string]int{}
	codes := map[string]int{}
	samples := map[string]string{}
	var unexpected, lostInWindow, lostOutside, ackedOld, during25006 []string
	for _, w := range writes {
		if w.err != nil {
			code := sqlState(w.err)
			if code == "" {
				code = "(no SQLSTATE)"
			}
			codes[code]++
			if _, ok := samples[code]; !ok {
				samples[code] = fmt.Sprintf("write %d at %s: %v", w.id, rel(w.at), w.err)
			}
			switch {
			case code == "25006":
				during25006 = append(during25006, samples[code])
			case code == "57P01", code == "57P02", code == "57P03", strings.HasPrefix(code, "08"), code == "(no SQLSTATE)":
			default:
				unexpected = append(unexpected, fmt.Sprintf("write %d at %s: %v", w.id, rel(w.at), w.err))
			}
			continue
		}
		name := names[w.port]
		if name == "" {
			name = fmt.Sprintf("port %d", w.port)
		}
		ackedPer[name]++
		if w.port == promoted.Port && firstResume.IsZero() {
			firstResume = w.at
		}
		if w.port == oldPrimary.Port {
			ackedOld = append(ackedOld, strconv.FormatInt(w.id, 10))
		}
		if have[w.id] {
			continue
		}
		desc := fmt.Sprintf("id %d acknowledged by %s at %s", w.id, name, rel(w.at))
		if w.port == oldPrimary.Port && !w.at.Before(crashAt.Add(-lossWindow)) && w.at.Before(stopDone.Add(100*time.Millisecond)) {
			lostInWindow = append(lostInWindow, desc)
		} else {
			lostOutside = append(lostOutside, desc)
		}
	}
	readFails := 0
	readsInOutage := 0
	readsPer := map[string]int{}
	var readSamples []string
	for _, r := range reads {
		if r.err != nil {
			readFails++
			if sqlState(r.err) == "25006" {
				during25006 = append(during25006, fmt.Sprintf("read at %s: %v", rel(r.at), r.err))
			}
			if len(readSamples) < 10 {
				readSamples = append(readSamples, fmt.Sprintf("  read at %s: %v", rel(r.at), r.err))
			}
			continue
		}
		readsPer[names[r.port]]++
		if r.at.After(stopDone) && r.at.Before(promoteBegan) {
			readsInOutage++
		}
	}

	var b strings.Builder
	fmt.Fprintf(&b, "failover timeline (relative to the crash of %s):\n", oldPrimary.Name)
	fmt.Fprintf(&b, "  stop -m immediate done %s; new client's login+read %s (took %v, port %d, err %v)\n",
		rel(stopDone), rel(loginBegan), loginTook.Round(time.Millisecond), loginPort, loginErr)
	fmt.Fprintf(&b, "  receive LSN replica1 %d, replica2 %d: promoting %s, %s follows\n", lsn0, lsn1, promoted.Name, follower.Name)
	fmt.Fprintf(&b, "  promote %s → %s (%v); follow done %s; end %s\n", rel(promoteBegan), rel(promoteDone),
		promoteDone.Sub(promoteBegan).Round(time.Millisecond), rel(followDone), rel(endAt))
	if firstResume.IsZero() {
		fmt.Fprintf(&b, "  writes resumed on the new primary: never (%v watched after the promotion)\n", endAt.Sub(promoteDone).Round(time.Millisecond))
	} else {
		fmt.Fprintf(&b, "  writes resumed on the new primary %v after the promotion completed\n", firstResume.Sub(promoteDone).Round(time.Millisecond))
	}
	fmt.Fprintf(&b, "  writes: %d attempted, acknowledged per server %v, errors per SQLSTATE %v, reconnect failures %d\n",
		len(writes), ackedPer, codes, len(connectErrs))
	keys := make([]string, 0, len(samples))
	for k := range samples {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		fmt.Fprintf(&b, "    first %s: %s\n", k, samples[k])
	}
	if len(connectErrs) > 0 {
		fmt.Fprintf(&b, "    first reconnect failure: %v\n", connectErrs[0])
	}
	fmt.Fprintf(&b, "  acknowledged but missing on the new primary: %d within the last %v before the crash, %d outside it\n",
		len(lostInWindow), lossWindow, len(lostOutside))
	fmt.Fprintf(&b, "  reads: %d, per server %v, %d failed, %d succeeded while no primary was up", len(reads), readsPer, readFails, readsInOutage)
	t.Log(b.String())

	if loginErr != nil {
		t.Errorf("a new client could not log in and read while no primary was up: %v", loginErr)
	}
	if firstResume.IsZero() {
		t.Errorf("writes never resumed on the new primary %s (watched for %v after the promotion)", promoted.Name, endAt.Sub(promoteDone).Round(time.Millisecond))
	} else if d := firstResume.Sub(promoteDone); d > resumeMax {
		t.Errorf("writes resumed on the new primary %v after the promotion, want at most %v", d.Round(time.Millisecond), resumeMax)
	}
	if len(during25006) > 0 {
		t.Errorf("%d statements reached a standby (SQLSTATE 25006), e.g. %s", len(during25006), during25006[0])
	}
	if len(unexpected) > 0 {
		t.Errorf("%d writes failed with an SQLSTATE other than 57P01/57P02/57P03/08xxx, e.g. %s", len(unexpected), unexpected[0])
	}
	if len(lostOutside) > 0 {
		t.Errorf("%d acknowledged writes are missing on the new primary outside the %v before the crash, e.g. %s",
			len(lostOutside), lossWindow, strings.Join(lostOutside[:min(5, len(lostOutside))], "; "))
	}
	if readFails > 0 {
		t.Errorf("%d reads failed (want 0):\n%s", readFails, strings.Join(readSamples, "\n"))
	}
	if readsInOutage == 0 {
		t.Errorf("no read succeeded between the crash and the promotion")
	}
	if len(ackedOld) == 0 {
		t.Errorf("no write was acknowledged by the old primary: the test proves nothing")
	}
}

// TestStandbyConfiguredAsPrimaryGetsNoWrites: a configuration that names a
// standby `role: primary` (and the real primary `role: replica`) never sends
// it a write: pgsplit either refuses to start, naming the server, or fails
// writes with a clear SQLSTATE that is not 25006; nothing is written
// anywhere.
func TestStandbyConfiguredAsPrimaryGetsNoWrites(t *testing.T) {
	c := startOwnCluster(t)
	standby := c.Replicas[0]
	standbyAddr := ownServer(standby, "").Addr()
	cfg := ownConfig(ownServer(standby, config.RolePrimary),
		ownServer(c.Primary, config.RoleReplica), ownServer(c.Replicas[1], config.RoleReplica))
	ctx := testCtx(t, time.Minute)

	written := func() string {
		var found []string
		for _, n := range append([]pgcluster.Node{c.Primary}, c.Replicas...) {
			out, err := c.Psql(ctx, n, appDatabase, "SELECT count(*) FROM fo_writes")
			if err != nil {
				t.Fatal(err)
			}
			if out != "0" {
				found = append(found, fmt.Sprintf("%s has %s rows", n.Name, out))
			}
		}
		return strings.Join(found, ", ")
	}

	p, err := launchProxy(cfg)
	if err != nil {
		t.Logf("pgsplit refused to start: %v", err)
		if !strings.Contains(err.Error(), standbyAddr) {
			t.Errorf("pgsplit refused to start, but the error does not name the standby %s: %v", standbyAddr, err)
		}
		if w := written(); w != "" {
			t.Errorf("rows in fo_writes: %s", w)
		}
		return
	}
	t.Cleanup(func() {
		if err := p.shutdown(cfg.ShutdownTimeout + 10*time.Second); err != nil {
			t.Error(err)
		}
		if t.Failed() {
			t.Logf("pgsplit log of this test's proxy (last 60 lines):\n%s", p.logs.tail(0, 60))
			saveLog(t, p.logs.since(0))
		}
	})
	t.Logf("pgsplit started with %s (a standby) as its primary", standbyAddr)

	insert := func(when string, mode pgx.QueryExecMode, id int) {
		t.Helper()
		conn := connect(t, p.appDSN(), func(cc *pgx.ConnConfig) { cc.DefaultQueryExecMode = mode })
		var port int
		err := conn.QueryRow(ctx, "INSERT INTO fo_writes (id) VALUES ($1) RETURNING inet_server_port()", id).Scan(&port)
		switch code := sqlState(err); {
		case err == nil:
			t.Errorf("%s (%s): INSERT succeeded on port %d (%s), want a clear error", when, mode, port, nodeNames(c)[port])
		case code == "25006":
			t.Errorf("%s (%s): the INSERT reached the standby: %v", when, mode, err)
		case code == "":
			t.Errorf("%s (%s): INSERT failed without an SQLSTATE: %v", when, mode, err)
		default:
			t.Logf("%s (%s): INSERT refused with %s: %v", when, mode, code, err)
		}
	}
	insert("right after start", pgx.QueryExecModeSimpleProtocol, -1)
	insert("right after start", pgx.QueryExecModeCacheStatement, -2)
	time.Sleep(2 * cfg.Routing.HealthCheckInterval)
	insert("after two health checks", pgx.QueryExecModeSimpleProtocol, -3)
	insert("after two health checks", pgx.QueryExecModeCacheStatement, -4)

	// Reads (reported, not asserted).
	rc := connect(t, p.appDSN())
	var port, n int
	if err := rc.QueryRow(ctx, "SELECT inet_server_port(), count(*)::int FROM fo_small").Scan(&port, &n); err != nil {
		t.Logf("a read: %v", err)
	} else {
		t.Logf("a read ran on %s (%d rows)", nodeNames(c)[port], n)
	}

	// Said loudly: a warning or error naming the standby whose message
	// (not only its error field) says it is in recovery or a standby.
	deadline := time.Now().Add(5 * time.Second)
	var loud logEntry
	for loud == nil && time.Now().Before(deadline) {
		for _, e := range p.logs.entries(0) {
			msg := strings.ToLower(e.str("msg"))
			if lv := e.str("level"); (lv == "warn" || lv == "error") && strings.Contains(fmt.Sprint(map[string]any(e)), standbyAddr) &&
				(strings.Contains(msg, "recovery") || strings.Contains(msg, "standby")) {
				loud = e
				break
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	if loud == nil {
		t.Errorf("no warning or error in pgsplit's log names %s and says (in msg) that this server configured as primary is in recovery or a standby", standbyAddr)
	} else {
		t.Logf("pgsplit logged: %v", map[string]any(loud))
	}
	if w := written(); w != "" {
		t.Errorf("rows in fo_writes: %s", w)
	}
}

// stopLoops returns a function, safe to call more than once, that closes
// stop and waits (30 s at most) for the load goroutines in wg to end.
func stopLoops(t *testing.T, stop chan struct{}, wg *sync.WaitGroup, what string) func() {
	return sync.OnceFunc(func() {
		close(stop)
		done := make(chan struct{})
		go func() { wg.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			t.Errorf("%s did not stop within 30s of the end of the load", what)
		}
	})
}
