package test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgsplit/pgsplit/config"
)

// TestReadYourWritesLinearizableAcrossInstancesAndDirectWriters: with
// read_your_writes: linearizable, a row committed through one pgsplit, or
// straight to the primary, is read at once through a second pgsplit,
// although one replica is 2 s behind; with table (which sees only its own
// instance's writes) the same cycles read stale rows. It also measures what
// a linearizable read costs: its latency, and how many position queries
// the primary sees for concurrent readers (one in flight serves every read
// that arrived before it was sent).
func TestReadYourWritesLinearizableAcrossInstancesAndDirectWriters(t *testing.T) {
	n := rywCycles(t, 1000)
	const table = "ryw_lin"
	rywTable(t, table)
	delayReplica(t, cluster.Replicas[0], rywDelay)
	primaryCommits(t, "on")
	for _, mode := range []string{config.RYWLinearizable, config.RYWTable} {
		t.Run(mode, func(t *testing.T) {
			metrics := func(c *config.Config) { c.Metrics.Listen = "127.0.0.1:0" }
			a, b := rywProxy(t, mode, metrics), rywProxy(t, mode, metrics)
			r := connect(t, b.appDSN())
			for _, w := range []struct {
				variant string
				conn    *pgx.Conn
			}{
				{"write-via-other-instance", connect(t, a.appDSN())},
				{"write-direct-to-primary", connect(t, cluster.AppDSN(cluster.Primary))},
			} {
				st := newRYWStats(mode, "pgx", w.variant, "on")
				_, before := scrape(t, b, "/metrics")
				began := time.Now()
				pgxCycles(t, st, w.conn, r, table, table, false, n)
				_, after := scrape(t, b, "/metrics")
				positions := metricSum(after, "pgsplit_wal_position_queries_total") - metricSum(before, "pgsplit_wal_position_queries_total")
				t.Logf("ryw-cost: mode=%s variant=%s positions=%.0f positions_per_read=%.2f took=%v", mode, w.variant, positions, positions/float64(st.cycles), time.Since(began).Round(time.Millisecond))
				checkStale(t, st, mode == config.RYWTable)
			}
			if mode == config.RYWTable {
				tokenCycles(t, a, r, table, n)
			}
			concurrentReads(t, b, table, mode, 8, 3*time.Second)
		})
	}
}

// tokenCycles is the causal token across instances: the writer logs in to
// a with pgsplit.report_commit_lsn=on (through libpq's options, as psql or
// psycopg would pass it) and gets each commit's position as
// ParameterStatus pgsplit.commit_lsn; the reader, on another instance in
// table mode (stale on its own), sets pgsplit.min_lsn to it before it
// reads: no stale read.
func tokenCycles(t *testing.T, a *testProxy, r *pgx.Conn, table string, n int) {
	t.Helper()
	w := connect(t, a.appDSN("options='-c pgsplit.report_commit_lsn=on'"))
	ins := insertOp(table, table)
	write := ins.write
	var last string
	ins.write = func(ctx context.Context, q pgxRunner, id int64, v string) error {
		if err := write(ctx, q, id, v); err != nil {
			return err
		}
		lsn := w.PgConn().ParameterStatus("pgsplit.commit_lsn")
		if lsn == "" || lsn == last {
			return fmt.Errorf("after commit %d: ParameterStatus pgsplit.commit_lsn = %q (before it: %q), want a new position", id, lsn, last)
		}
		last = lsn
		_, err := r.Exec(ctx, "SET pgsplit.min_lsn = '"+lsn+"'")
		return err
	}
	st := newRYWStats(config.RYWTable, "pgx", "token-write-via-other-instance", "on")
	opCycles(t, st, w, r, ins, false, rywIDs(n), n)
	checkStale(t, st, false)
	var shown string
	if err := r.QueryRow(testCtx(t, 5*time.Second), "SHOW pgsplit.min_lsn").Scan(&shown); err != nil || shown != last {
		t.Errorf("SHOW pgsplit.min_lsn = %q, %v; want %q", shown, err, last)
	}
	if _, err := r.Exec(testCtx(t, 5*time.Second), "RESET pgsplit.min_lsn"); err != nil {
		t.Fatal(err)
	}
	// Refused, the session going on: not a position; pgsplit's setting in
	// a multi-statement query (its other statements would be lost).
	_, err := r.Exec(testCtx(t, 5*time.Second), "SET pgsplit.min_lsn = 'yesterday'")
	wantState(t, err, "22023", "WAL position")
	_, err = r.Exec(testCtx(t, 5*time.Second), "SET pgsplit.min_lsn = '0/1'; SELECT 1")
	wantState(t, err, "0A000", "statement of its own")
	if err := r.QueryRow(testCtx(t, 5*time.Second), "SHOW pgsplit.min_lsn").Scan(&shown); err != nil || shown != "0/0" {
		t.Errorf("after RESET and two refused SETs: SHOW pgsplit.min_lsn = %q, %v; want 0/0", shown, err)
	}
}

// concurrentReads runs readers clients reading table through p as fast as
// they can for d, and logs reads per second, read latency and the position
// queries the primary saw per second. In linearizable mode the queries
// must be fewer than the reads: reads that arrive while one is in flight
// share the next.
func concurrentReads(t *testing.T, p *testProxy, table, mode string, readers int, d time.Duration) {
	t.Helper()
	conns := make([]*pgx.Conn, readers)
	for i := range conns {
		conns[i] = connect(t, p.appDSN())
	}
	_, before := scrape(t, p, "/metrics")
	st := newRYWStats(mode, "pgx", fmt.Sprintf("concurrent-%d-readers", readers), "on")
	var mu sync.Mutex
	var wg sync.WaitGroup
	var failed error
	end := time.Now().Add(d)
	for _, c := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(end) {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				var port, n int
				began := time.Now()
				err := c.QueryRow(ctx, "SELECT inet_server_port(), count(*)::int FROM (SELECT 1 FROM "+table+" LIMIT 1) s").Scan(&port, &n)
				took := time.Since(began)
				cancel()
				mu.Lock()
				if err != nil {
					failed = err
					mu.Unlock()
					return
				}
				st.cycles++
				st.byPort[port]++
				st.reads = append(st.reads, took)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if failed != nil {
		t.Fatalf("concurrent read: %v", failed)
	}
	_, after := scrape(t, p, "/metrics")
	positions := metricSum(after, "pgsplit_wal_position_queries_total") - metricSum(before, "pgsplit_wal_position_queries_total")
	secs := d.Seconds()
	t.Logf("%s reads_per_s=%.0f positions_per_s=%.0f positions_per_read=%.2f", st.summary(), float64(st.cycles)/secs, positions/secs, positions/float64(max(st.cycles, 1)))
	if mode == config.RYWLinearizable && (positions == 0 || positions >= float64(st.cycles)) {
		t.Errorf("linearizable: %d reads by %d clients took %.0f position queries: want at least one and fewer than one per read", st.cycles, readers, positions)
	}
}
