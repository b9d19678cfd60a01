package proxy

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/pgsplit/pgsplit/config"
)

// This file is read-your-writes by WAL position (routing.read_your_writes).
//
// Writes: when a primary connection's ReadyForQuery says a transaction that
// wrote has committed (status I, no ROLLBACK), the pump registers the commit
// with the tracker before that ReadyForQuery reaches the client: the tables
// it wrote (table mode) or the client (session mode) are marked with a
// commit sequence number whose WAL position is not known yet. The tracker's
// goroutine then reads pg_current_wal_insert_lsn() on a connection of its
// own to the primary: sent after those commits completed, its answer is at
// or past each of them, and it resolves every commit registered before it
// was sent (many at once under load).
//
// Reads: a read that touches a marked table (or, in session mode, a client
// with a commit) may only go to a replica whose replayed position is at or
// past the mark. Replica positions come from the health checks and, while a
// read waits, from the tracker polling every replica's
// pg_last_wal_replay_lsn(). A read that no replica can serve within
// routing.read_your_writes_wait goes to the primary. A position only ever
// errs low (a replica has replayed at least what pgsplit knows), so no read
// is served by a replica that has not replayed a commit whose answer was
// relayed to any client.

// lsnTracker holds the commit marks and the replicas' replayed positions.
//
// Ownership: the Server owns it; its goroutine (run) owns the position
// connections. Everything under mu is shared by the sessions and pumps;
// replay positions are atomics, readable without mu.
type lsnTracker struct {
	s *Server

	mu       sync.Mutex
	changed  chan struct{} // closed and replaced whenever marks or positions move
	seq      uint64        // the last commit sequence number handed out
	resolved uint64        // every commit up to this one has its position
	pending  []pendingCommit
	history  []resolution // the latest resolutions, oldest first (bounded)
	polls    int          // reads waiting for fresher replica positions

	replay map[endpoint]*atomic.Uint64 // replayed position per server, set at Listen
	dbs    map[string]*dbWrites        // table mode's marks by database, under mu
	// everyDB: a failed upgrade's other process may have written to any
	// database, so each database met from then on is marked written at
	// the primary's next position when first met (markEverything). Under mu.
	everyDB bool

	wake chan struct{} // to run: commits to resolve or reads waiting

	// Counters (metrics and SHOW NODES).
	positionQueries atomic.Int64 // pg_current_wal_insert_lsn() reads
	replicaPolls    atomic.Int64 // rounds of pg_last_wal_replay_lsn() reads
	readsWaited     atomic.Int64 // reads that waited for a replica to catch up
	readsToPrimary  atomic.Int64 // reads sent to the primary because no replica had caught up

	// fallbackSeq: commits up to it were resolved from the replicas'
	// received WAL (the primary lost), not by the primary: no token is
	// reported for them. Under mu.
	fallbackSeq uint64
	// lostSince is when position queries began failing (zero: they
	// answer); fellBack says the fallback was logged for this outage. The
	// run goroutine's only.
	lostSince time.Time
	fellBack  bool

	quit, done chan struct{}
	started    atomic.Bool
}

// mark is the newest commit a table (or a client) must be seen with: its
// WAL position once known (lsn) and its sequence number, pending while
// seq > the tracker's resolved.
type mark struct{ lsn, seq uint64 }

func (m *mark) raise(seq uint64) {
	if seq > m.seq {
		m.seq = seq
	}
}

// dbWrites is one database's marks (table mode). Guarded by the tracker's mu.
type dbWrites struct {
	written atomic.Bool      // a commit was registered (read without mu)
	all     mark             // the last write that may have touched any table
	max     mark             // the last write of all
	tables  map[string]*mark // by relation name as router.Relations folds it
}

// pendingCommit is a registered commit whose position is not known yet.
type pendingCommit struct {
	seq    uint64
	async  bool      // synchronous_commit = off: resolved with the insert position
	db     *dbWrites // table mode
	tables []string
	all    bool
	client *mark // session mode
}

func newLSNTracker(s *Server) *lsnTracker {
	return &lsnTracker{s: s, changed: make(chan struct{}), replay: map[endpoint]*atomic.Uint64{}, dbs: map[string]*dbWrites{}, history: make([]resolution, 0, 256),
		wake: make(chan struct{}, 1), quit: make(chan struct{}), done: make(chan struct{})}
}

// broadcastLocked wakes every waiter; the caller holds mu.
func (t *lsnTracker) broadcastLocked() {
	close(t.changed)
	t.changed = make(chan struct{})
}

// writesFor is database's marks, made the first time.
func (t *lsnTracker) writesFor(database string) *dbWrites {
	t.mu.Lock()
	db, ok := t.dbs[database]
	if !ok {
		db = &dbWrites{tables: map[string]*mark{}}
		t.dbs[database] = db
	}
	every := !ok && t.everyDB
	if every {
		t.commitLocked(db, writeScope{all: true}, nil, false)
	}
	t.mu.Unlock()
	if every {
		nudge(t.wake)
	}
	return db
}

// replayed is the position srv is known to have replayed (0: unknown).
func (t *lsnTracker) replayed(ep endpoint) uint64 {
	if p := t.replay[ep]; p != nil {
		return p.Load()
	}
	return 0
}

// setReplayed records a replica position read by a health check or a poll.
// A lower value than known is taken as is: the replica was restored or
// rebuilt, and only a lower bound is safe.
func (t *lsnTracker) setReplayed(ep endpoint, lsn uint64) {
	p := t.replay[ep]
	if p == nil || p.Swap(lsn) == lsn {
		return
	}
	t.mu.Lock()
	t.broadcastLocked()
	t.mu.Unlock()
}

// commit registers a committed transaction's writes (before its
// ReadyForQuery is relayed) and returns its sequence number. async: the
// client runs with synchronous_commit = off, so the commit may not be
// flushed yet.
func (t *lsnTracker) commit(db *dbWrites, scope writeScope, client *mark, async bool) uint64 {
	t.mu.Lock()
	seq := t.commitLocked(db, scope, client, async)
	t.mu.Unlock()
	nudge(t.wake)
	return seq
}

// commitLocked is commit with mu held; the caller nudges t.wake after.
func (t *lsnTracker) commitLocked(db *dbWrites, scope writeScope, client *mark, async bool) uint64 {
	t.seq++
	seq := t.seq
	p := pendingCommit{seq: seq, client: client, async: async}
	if client != nil {
		client.raise(seq)
	} else {
		p.db, p.tables, p.all = db, scope.tables, scope.all
		db.written.Store(true)
		db.max.raise(seq)
		if scope.all {
			db.all.raise(seq)
		}
		for _, name := range scope.tables {
			m := db.tables[name]
			if m == nil {
				m = &mark{}
				db.tables[name] = m
			}
			m.raise(seq)
		}
	}
	t.pending = append(t.pending, p)
	return seq
}

// resolve gives every commit up to seq its position: the primary's flush
// position, which a synchronous commit has reached before it answers, or
// for commits that may not be flushed yet (async, or the server's own
// synchronous_commit is off) the insert position.
func (t *lsnTracker) resolve(seq, flushed, inserted uint64, serverAsync bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	n := 0
	batch := flushed // what every commit of this batch is covered by
	for _, p := range t.pending {
		if p.seq > seq {
			t.pending[n] = p
			n++
			continue
		}
		lsn := flushed
		if p.async || serverAsync {
			lsn = inserted
		}
		batch = max(batch, lsn)
		lift := func(m *mark) { m.lsn = max(m.lsn, lsn) }
		if p.client != nil {
			lift(p.client)
			continue
		}
		lift(&p.db.max)
		if p.all {
			lift(&p.db.all)
		}
		for _, name := range p.tables {
			lift(p.db.tables[name])
		}
	}
	clear(t.pending[n:])
	t.pending = t.pending[:n]
	t.resolved = max(t.resolved, seq)
	if len(t.history) == cap(t.history) && len(t.history) > 0 {
		t.history = append(t.history[:0], t.history[len(t.history)/2:]...)
	}
	// The batch's own position: the flush position unless one of its
	// commits may not be flushed (the insert position runs ahead of it
	// under writes, and no replica can have replayed past the flush).
	t.history = append(t.history, resolution{seq: seq, lsn: batch})
	t.broadcastLocked()
}

// resolution is one WAL position read: every commit up to seq has a
// position at or before lsn.
type resolution struct{ seq, lsn uint64 }

// positionOf is the position of resolved commit seq: that of the first
// resolution that covered it, or, if it has left the history, the
// requirement as it is now (later, so safe). The caller holds mu.
func (t *lsnTracker) positionOf(seq uint64, need needFunc) uint64 {
	for _, r := range t.history {
		if r.seq >= seq {
			return r.lsn
		}
	}
	lsn, _ := need()
	return lsn
}

// need is a read's requirement as of now: the newest known position it must
// see and the newest commit (sequence number) it depends on, which may have
// no position yet (seq > resolved). The caller holds mu.
type needFunc func() (lsn, seq uint64)

// awaitReplica waits, up to wait, until need is known and some replica for
// which ok holds has replayed it. It returns the position (0: nothing to
// wait for) and whether a replica can serve the read.
func (t *lsnTracker) awaitReplica(need needFunc, wait time.Duration, ok func(endpoint) bool) (uint64, bool) {
	var deadline time.Time
	var timer *time.Timer
	waited, polling := false, false
	defer func() {
		if timer != nil {
			timer.Stop()
		}
		if polling {
			t.mu.Lock()
			t.polls--
			t.mu.Unlock()
		}
		if waited {
			t.readsWaited.Add(1)
		}
	}()
	// The requirement is fixed when the read arrives: commits registered
	// later need not be waited for (under steady writes to a table that
	// would chase a moving target).
	t.mu.Lock()
	lsn, seq := need()
	unresolved := seq > t.resolved
	t.mu.Unlock()
	current := func() (uint64, bool) { // under mu
		if unresolved {
			if seq > t.resolved {
				return lsn, true
			}
			lsn, unresolved = max(lsn, t.positionOf(seq, need)), false
		}
		return lsn, false
	}
	for {
		t.mu.Lock()
		lsn, pending := current()
		ch := t.changed
		t.mu.Unlock()
		if lsn == 0 && !pending {
			return 0, true
		}
		if !pending {
			for ep, p := range t.replay {
				if p.Load() >= lsn && ok(ep) {
					return lsn, true
				}
			}
			if !polling {
				polling = true
				t.mu.Lock()
				t.polls++
				t.mu.Unlock()
			}
		}
		nudge(t.wake)
		if deadline.IsZero() {
			if wait <= 0 {
				return lsn, false
			}
			deadline = time.Now().Add(wait)
			timer = time.NewTimer(wait)
		}
		waited = true
		select {
		case <-ch:
		case <-timer.C:
			t.mu.Lock()
			lsn, pending = current()
			t.mu.Unlock()
			if !pending {
				for ep, p := range t.replay {
					if p.Load() >= lsn && ok(ep) {
						return lsn, true
					}
				}
			}
			return lsn, false
		}
	}
}

// writtenDatabases lists the databases with registered writes (table
// mode), for the process that takes over in an upgrade.
func (t *lsnTracker) writtenDatabases() []string {
	t.mu.Lock()
	defer t.mu.Unlock()
	var names []string
	for name, db := range t.dbs {
		if db.written.Load() {
			names = append(names, name)
		}
	}
	return names
}

// markWritten registers, in table mode, a write of every table of the
// databases named and of those this process has marks for, resolved at the
// primary's next position: after an upgrade's old process ended, its
// commits (which this process's marks do not know) are behind that
// position.
func (t *lsnTracker) markWritten(names []string) {
	if t.s.cfg.Load().Routing.RYWMode() != config.RYWTable || t.s.knobs.NoUpgradeBarrier {
		return
	}
	t.mu.Lock()
	dbs := make([]*dbWrites, 0, len(t.dbs)+len(names))
	for _, db := range t.dbs {
		dbs = append(dbs, db)
	}
	for _, name := range names {
		if _, ok := t.dbs[name]; !ok {
			db := &dbWrites{tables: map[string]*mark{}}
			t.dbs[name] = db
			dbs = append(dbs, db)
		}
	}
	t.mu.Unlock()
	for _, db := range dbs {
		t.commit(db, writeScope{all: true}, nil, false)
	}
}

// markEverything is markWritten when which databases the other process
// of an upgrade wrote is unknown (it stopped or died before it said): every
// database this process has marks for now, and each one it meets later,
// when it first meets it.
func (t *lsnTracker) markEverything() {
	if t.s.cfg.Load().Routing.RYWMode() != config.RYWTable || t.s.knobs.NoUpgradeBarrier {
		return
	}
	t.mu.Lock()
	t.everyDB = true
	t.mu.Unlock()
	t.markWritten(nil)
}
