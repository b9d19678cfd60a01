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
				if err == nil {
					t.resolve(target, flushed, recordEnd(inserted), row[2] == "off")
				} else if !t.pause(50 * time.Millisecond) {
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
