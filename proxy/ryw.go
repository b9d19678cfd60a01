package proxy

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"go.uber.org/zap"

	"github.com/pgsplit/pgsplit/config"
	"github.com/pgsplit/pgsplit/internal/pgmsg"
	"github.com/pgsplit/pgsplit/nodes"
	"github.com/pgsplit/pgsplit/router"
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

	wake chan struct{} // to run: commits to resolve or reads waiting

	// Counters (metrics and SHOW NODES).
	positionQueries atomic.Int64 // pg_current_wal_insert_lsn() reads
	replicaPolls    atomic.Int64 // rounds of pg_last_wal_replay_lsn() reads
	readsWaited     atomic.Int64 // reads that waited for a replica to catch up
	readsToPrimary  atomic.Int64 // reads sent to the primary because no replica had caught up

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

// writeScope is what statements sent on a connection may have written:
// the tables named, or every table. seq is the ReadyForQuery that ends the
// statement (upstream.sent numbering).
type writeScope struct {
	seq    int64
	tables []string
	all    bool
	ddl    bool // the catalog changes: reload it once committed
	async  bool // sent while the client had synchronous_commit = off
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
	defer t.mu.Unlock()
	db, ok := t.dbs[database]
	if !ok {
		db = &dbWrites{tables: map[string]*mark{}}
		t.dbs[database] = db
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
// ReadyForQuery is relayed). async: the client runs with
// synchronous_commit = off, so the commit may not be flushed yet.
func (t *lsnTracker) commit(db *dbWrites, scope writeScope, client *mark, async bool) {
	t.mu.Lock()
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
	t.mu.Unlock()
	nudge(t.wake)
}

// resolve gives every commit up to seq its position: the primary's flush
// position, which a synchronous commit has reached before it answers, or
// for commits that may not be flushed yet (async, or the server's own
// synchronous_commit is off) the insert position.
func (t *lsnTracker) resolve(seq, flushed, inserted uint64, serverAsync bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	n := 0
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
	t.history = append(t.history, resolution{seq: seq, lsn: max(flushed, inserted)})
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

// readNeed is what a read of these statements (all: of any table) must
// see, as a needFunc for awaitReplica; nil when it needs nothing
// (read_your_writes off, or nothing written yet).
func (s *session) readNeed(all bool, reads ...readStmt) needFunc {
	switch s.srv.cfg.Load().Routing.RYWMode() {
	case config.RYWOff:
		return nil
	case config.RYWSession:
		m := &s.commits
		return func() (uint64, uint64) { return m.lsn, m.seq }
	}
	db := s.dbWrites
	if !db.written.Load() {
		return nil // nothing written through this pgsplit yet: no lock, no tokens
	}
	// A buffer of the session's: the names are used only until the read
	// is routed (awaitReplica is synchronous), before the next readNeed.
	names := s.relNames[:0]
	for _, r := range reads {
		var ok bool
		if names, ok = router.Relations(r.sql, names); !ok || !s.cls.ReadsNamedOnly(r.st) {
			all = true
			break
		}
	}
	s.relNames = names
	if !all {
		all = s.cls.ReadsAny(names)
	}
	return func() (uint64, uint64) {
		if all {
			return db.max.lsn, db.max.seq
		}
		lsn, seq := db.all.lsn, db.all.seq
		for _, n := range names {
			if m := db.tables[n]; m != nil {
				lsn, seq = max(lsn, m.lsn), max(seq, m.seq)
			}
		}
		return lsn, seq
	}
}

// replicaReadable decides whether a read (of reads, or of any table) may
// run on a replica under read-your-writes: it waits up to
// routing.read_your_writes_wait for one to catch up. attached is the
// replica the read must run on (a session's own connection, an open
// replica transaction), nil when any replica in rotation will do; then
// s.readFloor is set for the replica choice.
func (s *session) replicaReadable(attached *upstream, all bool, reads ...readStmt) bool {
	s.readFloor = 0
	need := s.readNeed(all, reads...)
	if need == nil {
		return true
	}
	var ok func(endpoint) bool
	if attached != nil {
		ep := attached.endpoint()
		ok = func(e endpoint) bool { return e == ep }
	} else {
		ok = func(e endpoint) bool { return s.srv.inRotationEP(e) }
	}
	lsn, can := s.srv.lsn.awaitReplica(need, s.srv.cfg.Load().Routing.ReadYourWritesWait, ok)
	if !can {
		s.srv.lsn.readsToPrimary.Add(1)
		if ce := s.log.Check(zap.DebugLevel, "read-your-writes: no replica has replayed the commits this read must see; reading from the primary"); ce != nil {
			ce.Write(zap.Uint64("lsn", lsn))
		}
		return false
	}
	s.readFloor = lsn
	return true
}

// rywIdle reports, without a lock or a look at the statements, that no
// read needs to wait: read_your_writes is off, or (table mode) nothing was
// written through this pgsplit in the database yet.
func (s *session) rywIdle() bool {
	switch s.srv.cfg.Load().Routing.RYWMode() {
	case config.RYWOff:
		return true
	case config.RYWTable:
		return !s.dbWrites.written.Load()
	}
	return false
}

// readStmt is one statement of a read: its text and classification.
type readStmt struct {
	sql string
	st  router.Statement
}

// reasonRYW is the routing reason of a read sent to the primary because
// no replica had replayed what it must see in time.
const reasonRYW = "read-your-writes: no replica has replayed the write yet"

// noteWrite records that st, sent to u as the statement ended by
// ReadyForQuery number seq, may write, so that its commit is registered.
func (s *session) noteWrite(u *upstream, seq int64, sql string, st router.Statement) {
	if u.target != router.Primary || st.Target == router.Replica || !mayWrite(st) {
		return
	}
	mode := s.srv.cfg.Load().Routing.RYWMode()
	if mode == config.RYWOff {
		return
	}
	sc := writeScope{seq: seq, all: true, ddl: changesCatalog(st)}
	if v, ok := s.state.setting("synchronous_commit"); ok {
		sc.async = strings.Contains(strings.ToLower(v), "'off'")
	}
	if mode == config.RYWTable && !sc.ddl && s.cls.WritesNamedOnly(st) {
		if names, ok := router.Relations(sql, nil); ok && !s.cls.WritesAny(names) {
			sc.tables, sc.all = names, false
		}
	}
	u.recMu.Lock()
	u.writes = append(u.writes, sc)
	u.wrote.Store(true)
	u.recMu.Unlock()
}

// noteCommit is the pump's look at a client ReadyForQuery from u, before it
// is relayed: writes whose statements it ends join the open transaction's,
// and when the transaction has committed they are registered.
func (s *session) noteCommit(u *upstream, status byte, rolledBack bool) {
	if !u.wrote.Load() {
		return // nothing written since the last commit: no lock per ReadyForQuery
	}
	u.recMu.Lock()
	z := u.zSeen + 1 // noteAnswer counts this ReadyForQuery after it is relayed
	for _, w := range u.writes {
		if w.seq <= z {
			u.txWrote.merge(w)
		}
	}
	u.writes = slices.DeleteFunc(u.writes, func(w writeScope) bool { return w.seq <= z })
	var done writeScope
	if status == pgmsg.TxIdle {
		done, u.txWrote = u.txWrote, writeScope{}
	}
	u.wrote.Store(len(u.writes) > 0 || u.txWrote.all || len(u.txWrote.tables) > 0)
	u.recMu.Unlock()
	if status != pgmsg.TxIdle || rolledBack || (!done.all && len(done.tables) == 0) {
		return
	}
	if s.srv.cfg.Load().Routing.RYWMode() == config.RYWSession {
		s.srv.lsn.commit(nil, done, &s.commits, done.async)
	} else {
		s.srv.lsn.commit(s.dbWrites, done, nil, done.async)
	}
	if done.ddl {
		s.srv.catalogs.DDLCommitted(s.cls, s.database, s.user)
	}
}

// kindsOf lists the statements' kinds of st (one, or each of a multi-
// statement string).
func kindsOf(st router.Statement) []router.Kind {
	if st.Kind == router.KindMulti {
		return st.Kinds
	}
	return []router.Kind{st.Kind}
}

// mayWrite reports whether st may change data that a later read must see.
// Session statements (SET, LISTEN, DISCARD, cursors, LOCK, savepoints…)
// change none, nor do the reads the classifier proved.
func mayWrite(st router.Statement) bool {
	for _, k := range kindsOf(st) {
		switch k {
		case router.KindSelect:
			if !st.ReadOnly { // nextval, a writable CTE, FOR UPDATE, a volatile function
				return true
			}
		case router.KindInsert, router.KindUpdate, router.KindDelete, router.KindMerge, router.KindTruncate,
			router.KindCopyFrom, router.KindDDL, router.KindMaintenance, router.KindCall, router.KindDo,
			router.KindExecute, router.KindCommitPrepared, router.KindOther, router.KindExplain:
			return true
		}
	}
	return false
}

// changesCatalog reports whether st may create or change relations,
// types or functions (DDL, or DO/CALL, which may run DDL).
func changesCatalog(st router.Statement) bool {
	for _, k := range kindsOf(st) {
		switch k {
		case router.KindDDL, router.KindDo, router.KindCall:
			return true
		}
	}
	return false
}

// errUnexpectedAnswer: a position query did not return one value.
var errUnexpectedAnswer = errors.New("unexpected answer to a WAL position query")

// merge adds what w wrote to the open transaction's scope.
func (sc *writeScope) merge(w writeScope) {
	sc.all, sc.ddl, sc.async = sc.all || w.all, sc.ddl || w.ddl, sc.async || w.async
	for _, t := range w.tables {
		if !slices.Contains(sc.tables, t) {
			sc.tables = append(sc.tables, t)
		}
	}
}

// endpoint is the server u is connected to.
func (u *upstream) endpoint() endpoint { return u.ep }
