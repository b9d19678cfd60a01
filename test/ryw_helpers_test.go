package test

// Helpers of the read-your-writes and lag-limit tests (ryw_test.go): a
// replica delayed with recovery_min_apply_delay, write-then-read cycles
// that count stale reads and which server answered, and their summary.

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgsplit/pgsplit/config"
	"github.com/pgsplit/pgsplit/internal/pgcluster"
)

// systemPython is the interpreter the psycopg2/SQLAlchemy scripts run
// with: Debian's, where python3-psycopg2 and python3-sqlalchemy install
// (the python3 on PATH may be another one without them).
const systemPython = "/usr/bin/python3"

// rywCycles is the number of write-then-read cycles per variant:
// $PGSPLIT_RYW_CYCLES, else def.
func rywCycles(t *testing.T, def int) int {
	t.Helper()
	s := os.Getenv("PGSPLIT_RYW_CYCLES")
	if s == "" {
		return def
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 {
		t.Fatalf("PGSPLIT_RYW_CYCLES=%q: want a positive number of cycles", s)
	}
	return n
}

// rywProxy is a routing proxy for the read-your-writes tests: transaction
// pooling, SCRAM, a small pool and round-robin balancing, so that the
// delayed replica really gets its share of reads, and the default
// read_your_writes_wait (routingProxy's is longer).
func rywProxy(t *testing.T, mode string, mutate func(*config.Config)) *testProxy {
	return routingProxy(t, func(c *config.Config) {
		c.Pool.Mode = config.ModeTransaction
		c.Pool.PoolSize = 5
		c.Pool.MaxOverflow = 5
		c.Routing.LoadBalance = config.BalanceRoundRobin
		c.Routing.ReadYourWrites = mode
		c.Routing.ReadYourWritesWait = config.DefaultRouting().ReadYourWritesWait
		if mutate != nil {
			mutate(c)
		}
	})
}

// nodeConn is a superuser connection to node's database postgres, closed
// when the test ends.
func nodeConn(t *testing.T, n pgcluster.Node) *pgx.Conn {
	t.Helper()
	return connect(t, cluster.SuperuserDSN(n, "postgres"))
}

// delayReplica makes replica r apply each commit only delay after it was
// made on the primary (recovery_min_apply_delay), and returns the function
// that removes the delay again and waits until r has caught up. That runs
// at the end of the test in any case (once).
func delayReplica(t *testing.T, r pgcluster.Node, delay string) (undelay func()) {
	t.Helper()
	ctx := testCtx(t, 10*time.Second)
	c, err := pgx.Connect(ctx, cluster.SuperuserDSN(r, "postgres"))
	if err != nil {
		t.Fatalf("connect to replica %d: %v", r.Port, err)
	}
	var done atomic.Bool
	undelay = func() {
		if done.Swap(true) {
			return
		}
		defer closeConn(c)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		for _, q := range []string{"ALTER SYSTEM RESET recovery_min_apply_delay", "SELECT pg_reload_conf()"} {
			if _, err := c.Exec(ctx, q); err != nil {
				t.Errorf("replica %d: %s: %v", r.Port, q, err)
				return
			}
		}
		waitSetting(t, c, "recovery_min_apply_delay", "0")
		waitCaughtUp(t, r, 30*time.Second)
	}
	t.Cleanup(undelay)
	setApplyDelay(t, c, delay)
	return undelay
}

// setApplyDelay sets recovery_min_apply_delay on the replica c is
// connected to, and waits until the replica uses it.
func setApplyDelay(t *testing.T, c *pgx.Conn, delay string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, q := range []string{fmt.Sprintf("ALTER SYSTEM SET recovery_min_apply_delay = '%s'", delay), "SELECT pg_reload_conf()"} {
		if _, err := c.Exec(ctx, q); err != nil {
			t.Fatalf("replica: %s: %v", q, err)
		}
	}
	waitSetting(t, c, "recovery_min_apply_delay", delay)
}

// waitSetting waits until SHOW name on c answers want (pg_reload_conf only
// signals the server).
func waitSetting(t *testing.T, c *pgx.Conn, name, want string) {
	t.Helper()
	waitFor(t, 10*time.Second, "SHOW "+name+" = "+want, func() (bool, string) {
		var got string
		err := c.QueryRow(context.Background(), "SHOW "+name).Scan(&got)
		return err == nil && got == want, fmt.Sprintf("%q %v", got, err)
	})
}

// waitCaughtUp waits until replica r has replayed the primary's WAL as of
// now.
func waitCaughtUp(t *testing.T, r pgcluster.Node, timeout time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout+5*time.Second)
	defer cancel()
	pc, err := pgx.Connect(ctx, cluster.SuperuserDSN(cluster.Primary, "postgres"))
	if err != nil {
		t.Errorf("connect to the primary: %v", err)
		return
	}
	defer closeConn(pc)
	var lsn string
	if err := pc.QueryRow(ctx, "SELECT pg_current_wal_lsn()::text").Scan(&lsn); err != nil {
		t.Errorf("pg_current_wal_lsn(): %v", err)
		return
	}
	rc, err := pgx.Connect(ctx, cluster.SuperuserDSN(r, "postgres"))
	if err != nil {
		t.Errorf("connect to replica %d: %v", r.Port, err)
		return
	}
	defer closeConn(rc)
	deadline := time.Now().Add(timeout)
	for {
		var ok bool
		var replayed string
		err := rc.QueryRow(ctx, "SELECT pg_last_wal_replay_lsn() >= $1::pg_lsn, pg_last_wal_replay_lsn()::text", lsn).Scan(&ok, &replayed)
		if err == nil && ok {
			return
		}
		if time.Now().After(deadline) {
			t.Errorf("replica %d has not replayed up to the primary's %s within %s (at %s, %v)", r.Port, lsn, timeout, replayed, err)
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// waitAllCaughtUp waits until every replica has replayed the primary's WAL
// as of now.
func waitAllCaughtUp(t *testing.T) {
	t.Helper()
	for _, r := range cluster.Replicas {
		waitCaughtUp(t, r, 30*time.Second)
	}
	if t.Failed() {
		t.FailNow()
	}
}

// primaryCommits sets the primary's synchronous_commit for the rest of
// the test: "on" (PostgreSQL's default: a commit's WAL is flushed and sent
// to the replicas at once) or "off" (the WAL writer sends it up to
// wal_writer_delay, 200 ms, later). The cluster's own setting is back when
// the test ends.
func primaryCommits(t *testing.T, sync string) {
	t.Helper()
	su := nodeConn(t, cluster.Primary)
	set := func(q string) error {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		for _, q := range []string{q, "SELECT pg_reload_conf()"} {
			if _, err := su.Exec(ctx, q); err != nil {
				return fmt.Errorf("primary: %s: %w", q, err)
			}
		}
		return nil
	}
	t.Cleanup(func() {
		if err := set("ALTER SYSTEM RESET synchronous_commit"); err != nil {
			t.Error(err)
		}
	})
	if err := set(fmt.Sprintf("ALTER SYSTEM SET synchronous_commit = '%s'", sync)); err != nil {
		t.Fatal(err)
	}
	// A new backend sees the setting once the postmaster has reloaded.
	waitFor(t, 10*time.Second, "synchronous_commit = "+sync+" on the primary", func() (bool, string) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		c, err := pgx.Connect(ctx, cluster.SuperuserDSN(cluster.Primary, "postgres"))
		if err != nil {
			return false, err.Error()
		}
		defer closeConn(c)
		var got string
		err = c.QueryRow(ctx, "SHOW synchronous_commit").Scan(&got)
		return err == nil && got == sync, fmt.Sprintf("%q %v", got, err)
	})
}

// rywSchema runs stmts on the primary as app (so app owns what they
// create), waits until both replicas have replayed them, and runs drop on
// the primary when the test ends.
func rywSchema(t *testing.T, stmts []string, drop string) {
	t.Helper()
	ctx := testCtx(t, 30*time.Second)
	su := superConn(t)
	if _, err := su.Exec(ctx, drop); err != nil {
		t.Fatalf("%s: %v", drop, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if _, err := su.Exec(ctx, drop); err != nil {
			t.Errorf("%s: %v", drop, err)
		}
	})
	for _, q := range append([]string{"SET ROLE app"}, append(stmts, "RESET ROLE")...) {
		if _, err := su.Exec(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	waitAllCaughtUp(t)
}

// rywTable creates table name (id bigint PRIMARY KEY, v text) for the
// write-then-read cycles; auditor may read it.
func rywTable(t *testing.T, name string) {
	t.Helper()
	rywSchema(t, []string{fmt.Sprintf("CREATE TABLE %s (id bigint PRIMARY KEY, v text NOT NULL)", name),
		fmt.Sprintf("GRANT SELECT ON %s TO %s", name, auditorUser)},
		"DROP TABLE IF EXISTS "+name)
}

// rywNextID hands out the keys of the cycles, unique within the test
// binary.
var rywNextID atomic.Int64

func rywIDs(n int) int64 { return rywNextID.Add(int64(n)) - int64(n) + 1 }

// rywStats is what a run of cycles saw.
type rywStats struct {
	mode, driver, variant string
	commit                string // the primary's synchronous_commit
	cycles, stale         int
	byPort                map[int]int
	reads                 []time.Duration // latency of each read (the whole read transaction in the tx variants)
}

func newRYWStats(mode, driver, variant, commit string) *rywStats {
	return &rywStats{mode: mode, driver: driver, variant: variant, commit: commit, byPort: map[int]int{}}
}

// record counts one read of key id: got is the value read (nil: no row),
// want what the write just committed (nil: the row is gone), old what was
// there before it (nil: nothing). Seeing old is a stale read; anything
// else but want is a wrong answer and fails the test.
func (s *rywStats) record(t *testing.T, id int64, want, old, got *string, port int, took time.Duration) {
	t.Helper()
	s.cycles++
	s.byPort[port]++
	s.reads = append(s.reads, took)
	switch {
	case eqStr(got, want):
	case eqStr(got, old):
		s.stale++
		if s.stale <= 3 {
			t.Logf("stale read: id %d read %s instead of %s on the %s (port %d) right after the commit", id, showStr(got), showStr(want), roleName(port), port)
		}
	default:
		t.Fatalf("id %d: read %s, want %s (or, stale, %s)", id, showStr(got), showStr(want), showStr(old))
	}
}

func eqStr(a, b *string) bool { return a == nil && b == nil || a != nil && b != nil && *a == *b }

func showStr(s *string) string {
	if s == nil {
		return "no row"
	}
	return strconv.Quote(*s)
}

func strPtr(s string) *string { return &s }

// share is the fraction of reads that port answered.
func (s *rywStats) share(port int) float64 {
	if s.cycles == 0 {
		return 0
	}
	return float64(s.byPort[port]) / float64(s.cycles)
}

// replicaShare is the fraction of reads the replicas answered.
func (s *rywStats) replicaShare() float64 {
	var n int
	for _, r := range cluster.Replicas {
		n += s.byPort[r.Port]
	}
	if s.cycles == 0 {
		return 0
	}
	return float64(n) / float64(s.cycles)
}

func (s *rywStats) percentile(p float64) time.Duration {
	if len(s.reads) == 0 {
		return 0
	}
	d := append([]time.Duration(nil), s.reads...)
	sort.Slice(d, func(i, j int) bool { return d[i] < d[j] })
	i := int(p*float64(len(d))+0.5) - 1
	return d[min(max(i, 0), len(d)-1)]
}

// summary is the line to grep for: "ryw: mode=table driver=pgx …".
func (s *rywStats) summary() string {
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
	return fmt.Sprintf("ryw: mode=%s driver=%s variant=%s synchronous_commit=%s cycles=%d stale=%d replica_share=%.2f delayed_share=%.2f primary_share=%.2f read_p50=%.1fms read_p99=%.1fms",
		s.mode, s.driver, s.variant, s.commit, s.cycles, s.stale, s.replicaShare(), s.share(cluster.Replicas[0].Port), s.share(cluster.Primary.Port),
		ms(s.percentile(0.50)), ms(s.percentile(0.99)))
}

// roleName says which node of the cluster listens on port.
func roleName(port int) string {
	switch port {
	case cluster.Primary.Port:
		return "primary"
	case cluster.Replicas[0].Port:
		return "delayed replica"
	case cluster.Replicas[1].Port:
		return "undelayed replica"
	}
	return fmt.Sprintf("unknown server (port %d)", port)
}

// pgxRunner is what a cycle's write needs of a connection or a
// transaction.
type pgxRunner interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	CopyFrom(ctx context.Context, table pgx.Identifier, columns []string, src pgx.CopyFromSource) (int64, error)
}

// rywOp is what one kind of cycle writes and reads back.
type rywOp struct {
	// write commits the change of key id to value v (through q, a
	// connection in autocommit or a transaction).
	write func(ctx context.Context, q pgxRunner, id int64, v string) error
	// read returns (text, inet_server_port()) for key $1.
	read string
	// want is what read must return right after write (nil: no row); old
	// what it returned before (nil: no row). Defaults: "v-<id>" and nil.
	want, old func(id int64) *string
}

// insertOp inserts (id, "v-<id>") into table ins and reads v back from
// from (a table or a view).
func insertOp(ins, from string) rywOp {
	return rywOp{
		write: func(ctx context.Context, q pgxRunner, id int64, v string) error {
			_, err := q.Exec(ctx, fmt.Sprintf("INSERT INTO %s (id, v) VALUES ($1, $2)", ins), id, v)
			return err
		},
		read: fmt.Sprintf("SELECT (SELECT v FROM %s WHERE id = $1), inet_server_port()", from),
	}
}

// pgxCycles runs n write-then-read cycles: each inserts a fresh key into
// table ins through w and reads it back at once from sel (a table or a
// view) through r (w itself for the same-connection variants), in
// autocommit or, with tx, as BEGIN; INSERT; COMMIT then BEGIN; SELECT;
// COMMIT. The read also returns inet_server_port(), so the stats know
// which server answered.
func pgxCycles(t *testing.T, st *rywStats, w, r *pgx.Conn, ins, from string, tx bool, n int) {
	t.Helper()
	opCycles(t, st, w, r, insertOp(ins, from), tx, rywIDs(n), n)
}

// opCycles runs n cycles of op on keys first, first+1, …: the write
// through w, then at once the read through r, each in autocommit or (tx)
// in an explicit transaction.
func opCycles(t *testing.T, st *rywStats, w, r *pgx.Conn, op rywOp, tx bool, first int64, n int) {
	t.Helper()
	want, old := op.want, op.old
	if want == nil {
		want = func(id int64) *string { return strPtr(fmt.Sprintf("v-%d", id)) }
	}
	if old == nil {
		old = func(int64) *string { return nil }
	}
	for i := range n {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		id := first + int64(i)
		v := fmt.Sprintf("v-%d", id)
		var err error
		if tx {
			err = pgx.BeginFunc(ctx, w, func(tx pgx.Tx) error { return op.write(ctx, tx, id, v) })
		} else {
			err = op.write(ctx, w, id, v)
		}
		if err != nil {
			cancel()
			t.Fatalf("cycle %d: write: %v", i, err)
		}
		var got *string
		var port int
		began := time.Now()
		if tx {
			err = pgx.BeginFunc(ctx, r, func(tx pgx.Tx) error {
				return tx.QueryRow(ctx, op.read, id).Scan(&got, &port)
			})
		} else {
			err = r.QueryRow(ctx, op.read, id).Scan(&got, &port)
		}
		took := time.Since(began)
		cancel()
		if err != nil {
			t.Fatalf("cycle %d: read: %v", i, err)
		}
		st.record(t, id, want(id), old(id), got, port, took)
	}
}

// pyResult is what test/testdata/ryw_clients.py prints.
type pyResult struct {
	Cycles int            `json:"cycles"`
	Stale  int            `json:"stale"`
	Ports  map[string]int `json:"ports"`
	ReadMS []float64      `json:"read_ms"`
	Errors []string       `json:"errors"`
}

// requirePython fails the test, saying what to install, unless the system
// Python has every module in mods.
func requirePython(t *testing.T, mods ...string) {
	t.Helper()
	if _, err := os.Stat(systemPython); err != nil {
		t.Fatalf("%s is needed for the psycopg2 tests: install python3 python3-psycopg2 python3-sqlalchemy (scripts/ensure-test-deps.sh does it as root)", systemPython)
	}
	for _, m := range mods {
		out, err := exec.Command(systemPython, "-c", "import "+m).CombinedOutput()
		if err != nil {
			t.Fatalf("%s cannot import %s: install Debian's python3-%s (scripts/ensure-test-deps.sh, run by make test, does it as root): %v\n%s",
				systemPython, m, m, err, out)
		}
	}
}

// pyCycles runs n cycles of test/testdata/ryw_clients.py's variant
// ("psycopg2" or "sqlalchemy") against dsn on table.
func pyCycles(t *testing.T, st *rywStats, dsn, table, variant string, n int) {
	t.Helper()
	script, err := filepath.Abs(filepath.Join("testdata", "ryw_clients.py"))
	if err != nil {
		t.Fatal(err)
	}
	first := rywIDs(n)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, systemPython, script, "--dsn", dsn, "--table", table, "--variant", variant,
		"--cycles", strconv.Itoa(n), "--first-id", strconv.FormatInt(first, 10))
	cmd.Env = cleanEnv()
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s %s: %v\nstderr:\n%s\nstdout:\n%s", systemPython, script, err, stderr.String(), out)
	}
	var res pyResult
	if err := json.Unmarshal(out, &res); err != nil {
		t.Fatalf("output of %s is not its JSON: %v\n%s\nstderr:\n%s", script, err, out, stderr.String())
	}
	if len(res.Errors) > 0 {
		t.Fatalf("%s: %d errors, first: %s", variant, len(res.Errors), res.Errors[0])
	}
	if res.Cycles != n || len(res.ReadMS) != n {
		t.Fatalf("%s ran %d cycles (%d timings), want %d", variant, res.Cycles, len(res.ReadMS), n)
	}
	st.cycles, st.stale = res.Cycles, res.Stale
	for p, c := range res.Ports {
		port, err := strconv.Atoi(p)
		if err != nil {
			t.Fatalf("port %q in the script's output", p)
		}
		st.byPort[port] += c
	}
	for _, ms := range res.ReadMS {
		st.reads = append(st.reads, time.Duration(ms*float64(time.Millisecond)))
	}
	if res.Stale > 0 {
		t.Logf("%s: %d stale reads", variant, res.Stale)
	}
}

// checkStale asserts the outcome of a run: no stale read when the feature
// is on, some when it is off (the delayed replica got reads, so the test
// can fail).
func checkStale(t *testing.T, st *rywStats, wantStale bool) {
	t.Helper()
	t.Log(st.summary())
	if !wantStale && st.stale != 0 {
		t.Errorf("read_your_writes=%s: %d of %d reads did not see the row committed just before (the ryw: line above has the details)", st.mode, st.stale, st.cycles)
	}
	if wantStale && st.stale == 0 {
		t.Errorf("read_your_writes=%s with a replica 2 s behind: no stale read in %d cycles, so the test cannot tell the feature works (the ryw: line above has the details)", st.mode, st.cycles)
	}
}

// trickle writes a row to table on the primary (directly, not through
// pgsplit) every interval until the test ends, so that a delayed replica's
// lag keeps being measurable. Each row carries pad bytes of WAL.
func trickle(t *testing.T, table string, interval time.Duration, pad int) {
	t.Helper()
	c := connect(t, cluster.SuperuserDSN(cluster.Primary, appDatabase))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		tick := time.NewTicker(interval)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			if _, err := c.Exec(ctx, fmt.Sprintf("INSERT INTO %s (pad) VALUES (repeat('x', %d))", table, pad)); err != nil && ctx.Err() == nil {
				t.Errorf("trickle insert: %v", err)
				return
			}
		}
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Error("the trickle of writes did not stop")
		}
	})
}

// nodeRow is the admin console's SHOW NODES row of the server on port.
func nodeRow(t *testing.T, admin *pgx.Conn, port int) map[string]any {
	t.Helper()
	n := adminRow(t, admin, "SHOW NODES", "port", int64(port))
	if n == nil {
		t.Fatalf("SHOW NODES has no row for port %d", port)
	}
	return n
}

// readPorts runs n autocommit `SELECT inet_server_port()` through c and
// counts the answers per server.
func readPorts(t *testing.T, c *pgx.Conn, n int) map[int]int {
	t.Helper()
	got := map[int]int{}
	for range n {
		got[serverPort(t, c, "SELECT inet_server_port()")]++
	}
	return got
}
