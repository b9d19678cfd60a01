package proxy

import (
	"context"
	"errors"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"go.uber.org/zap"

	"github.com/pgsplit/pgsplit/config"
	"github.com/pgsplit/pgsplit/nodes"
)

func (t *lsnTracker) start() {
	t.started.Store(true)
	go t.run()
}

func (t *lsnTracker) stop() {
	if !t.started.Load() {
		return
	}
	close(t.quit)
	select {
	case <-t.done:
	case <-time.After(10 * time.Second):
	}
}

// run resolves commits and polls replicas while reads wait. It owns its
// connections: one to the primary, one to each replica (the limits
// formula's second pgsplit connection).
func (t *lsnTracker) run() {
	defer close(t.done)
	conns := map[endpoint]*pgconn.PgConn{}
	defer func() {
		for _, c := range conns {
			_ = c.Close(context.Background())
		}
	}()
	// Connect ahead of the first read that waits: a login costs more than
	// read_your_writes_wait.
	if _, err := t.queryRow(conns, t.s.currentPrimary(), primaryPositionSQL, 3); err != nil {
		t.s.log.Debug("read-your-writes: no position connection to the primary yet", zap.Error(err))
	}
	for _, r := range t.s.replicaList() {
		if lsn, err := t.query(conns, r, "SELECT COALESCE(pg_last_wal_replay_lsn(), pg_current_wal_lsn())::text"); err == nil {
			t.setReplayed(endpointOf(r), lsn)
		}
	}
	for {
		select {
		case <-t.quit:
			return
		case <-t.wake:
		}
		for {
			t.mu.Lock()
			target, resolved, polls := t.seq, t.resolved, t.polls
			t.mu.Unlock()
			if target == resolved && polls == 0 {
				break
			}
			if target > resolved {
				row, err := t.queryRow(conns, t.s.currentPrimary(), primaryPositionSQL, 3)
				t.positionQueries.Add(1)
				var flushed, inserted uint64
				if err == nil {
					flushed, err = nodes.ParseLSN(row[0])
				}
				if err == nil {
					inserted, err = nodes.ParseLSN(row[1])
				}
				switch {
				case err == nil:
					t.lostSince, t.fellBack = time.Time{}, false
					t.resolve(target, flushed, recordEnd(inserted), row[2] == "off")
				case t.resolveFromReplicas(conns, target):
				case !t.pause(50 * time.Millisecond):
					return
				}
			}
			if polls > 0 {
				t.replicaPolls.Add(1)
				for _, r := range t.s.replicaList() {
					if !t.s.inRotation(r) {
						continue
					}
					if lsn, err := t.query(conns, r, "SELECT COALESCE(pg_last_wal_replay_lsn(), pg_current_wal_lsn())::text"); err == nil {
						t.setReplayed(endpointOf(r), lsn)
					}
				}
				// A short breath between rounds: replicas replay in
				// well under a millisecond, and the servers have work
				// to do.
				if !t.pause(200 * time.Microsecond) {
					return
				}
			}
		}
	}
}

// resolveFromReplicas resolves the commits up to target when the primary
// is lost and can no longer send WAL to anyone: position queries have
// failed for a health-check interval (at least 500 ms: longer than a
// crashed primary takes to restart and answer again), the health checks
// know no primary (role auto; a configured primary is waited for), and
// every replica that answers has no WAL receiver (its stream from the
// primary has ended). Then what the surviving servers will ever hold of the
// old primary's commits is what they received, and a commit beyond the most
// any of them received is lost to the failover (asynchronous replication);
// waiting for it could only send reads to a primary that is not there.
// Replicas that do not answer cannot serve reads and are left out. It
// reports whether it resolved.
func (t *lsnTracker) resolveFromReplicas(conns map[endpoint]*pgconn.PgConn, target uint64) bool {
	if t.lostSince.IsZero() {
		t.lostSince = time.Now()
	}
	grace := t.s.cfg.Load().Routing.HealthCheckInterval
	if grace == 0 {
		grace = config.DefaultRouting().HealthCheckInterval
	}
	if time.Since(t.lostSince) < max(grace, 500*time.Millisecond) || t.s.currentPrimary().Host != "" {
		return false
	}
	var got []replicaWAL
	for _, r := range t.s.replicaList() {
		if row, err := t.queryRow(conns, r, replicaWALSQL, 2); err == nil {
			lsn, err := nodes.ParseLSN(row[0])
			got = append(got, replicaWAL{received: lsn, known: err == nil, streaming: row[1] != "0"})
		}
	}
	lsn, ok := survivingPosition(got)
	if !ok {
		return false
	}
	if !t.fellBack {
		t.fellBack = true
		t.s.log.Warn("read-your-writes: the primary is lost and no replica streams from it; commits without a position take the most WAL a replica received",
			zap.String("position", nodes.FormatLSN(lsn)), zap.Int("replicas", len(got)))
	}
	t.mu.Lock()
	t.fallbackSeq = max(t.fallbackSeq, target)
	t.mu.Unlock()
	t.resolve(target, lsn, lsn, false)
	return true
}

// replicaWAL is what one replica answered to replicaWALSQL.
type replicaWAL struct {
	received  uint64
	known     bool // the server is in recovery and has received or replayed WAL
	streaming bool // a WAL receiver runs: more may arrive
}

// replicaWALSQL reads a replica's received (or, restored from an archive,
// replayed) position and whether a WAL receiver runs (its pid is visible
// to every user; its status only to pg_read_all_stats).
const replicaWALSQL = "SELECT GREATEST(pg_last_wal_receive_lsn(), pg_last_wal_replay_lsn())::text, (SELECT count(*) FROM pg_stat_wal_receiver)::text"

// survivingPosition is the most WAL any replica received, when at least one
// answered and none can receive more (no WAL receiver, no server out of
// recovery among them): the end of what the old primary's commits can be
// found at after a failover.
func survivingPosition(replicas []replicaWAL) (uint64, bool) {
	var lsn uint64
	for _, r := range replicas {
		if r.streaming || !r.known {
			return 0, false
		}
		lsn = max(lsn, r.received)
	}
	return lsn, len(replicas) > 0
}

// recordEnd turns an insert position into the end of the last record
// inserted: at a page boundary pg_current_wal_insert_lsn() points past the
// next page's header (24 bytes; 40 at a segment's first page), which no
// replica reports as replayed until another record follows. (Default page
// and segment sizes; with others a read may only wait longer.)
func recordEnd(lsn uint64) uint64 {
	const page, segment = 8192, 16 << 20
	switch {
	case lsn%segment == 40:
		return lsn - 40
	case lsn%page == 24:
		return lsn - 24
	}
	return lsn
}

// pause sleeps for d unless the tracker stops; it reports whether to go on.
func (t *lsnTracker) pause(d time.Duration) bool {
	select {
	case <-t.quit:
		return false
	case <-time.After(d):
		return true
	}
}

// primaryPositionSQL reads the primary's flush and insert positions and
// its default synchronous_commit.
const primaryPositionSQL = "SELECT pg_current_wal_flush_lsn()::text, pg_current_wal_insert_lsn()::text, current_setting('synchronous_commit')"

// query reads one WAL position from srv on the tracker's connection to it.
func (t *lsnTracker) query(conns map[endpoint]*pgconn.PgConn, srv config.Server, sql string) (uint64, error) {
	row, err := t.queryRow(conns, srv, sql, 1)
	if err != nil {
		return 0, err
	}
	return nodes.ParseLSN(row[0])
}

// queryRow runs sql, which returns one row of cols text values, on the
// tracker's connection to srv.
func (t *lsnTracker) queryRow(conns map[endpoint]*pgconn.PgConn, srv config.Server, sql string, cols int) ([]string, error) {
	cfg := t.s.cfg.Load()
	ctx, cancel := context.WithTimeout(context.Background(), cfg.Pool.ConnectTimeout)
	defer cancel()
	ep := endpointOf(srv)
	c := conns[ep]
	if c == nil {
		var err error
		c, err = nodes.Dial(ctx, t.s.cfg.Load(), t.s.keys, srv, "pgsplit positions")
		if err != nil {
			return nil, err
		}
		conns[ep] = c
	}
	res := c.ExecParams(ctx, sql, nil, nil, nil, nil).Read()
	if res.Err == nil && (len(res.Rows) != 1 || len(res.Rows[0]) != cols) {
		res.Err = errUnexpectedAnswer
	}
	if res.Err != nil {
		_ = c.Close(context.Background())
		delete(conns, ep)
		return nil, res.Err
	}
	row := make([]string, cols)
	for i, v := range res.Rows[0] {
		row[i] = string(v)
	}
	return row, nil
}

// errUnexpectedAnswer: a position query did not return one value.
var errUnexpectedAnswer = errors.New("unexpected answer to a WAL position query")
