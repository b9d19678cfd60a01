package proxy

import (
	"slices"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/pgsplit/pgsplit/config"
	"github.com/pgsplit/pgsplit/internal/pgmsg"
	"github.com/pgsplit/pgsplit/router"
)

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

// readNeed is what a read of these statements (all: of any table) must
// see, as a needFunc for awaitReplica; nil when it needs nothing
// (read_your_writes off, or nothing written yet).
func (s *session) readNeed(all bool, reads ...readStmt) needFunc {
	switch s.srv.rywMode() {
	case config.RYWOff:
		return nil
	case config.RYWLinearizable:
		// A barrier on the client's own mark: the tracker's next position
		// query, sent after this read arrived, is at or past every commit
		// made before it, on any connection to the primary. Reads that
		// arrive while one is in flight share the next. With this
		// client's synchronous_commit off its own last commit may not be
		// flushed: the insert position then.
		s.srv.lsn.commit(nil, writeScope{}, &s.commits, s.asyncCommits())
		fallthrough
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
	need := s.withMinLSN(s.readNeed(all, reads...))
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
	cfg := s.srv.cfg.Load()
	lsn, can := s.srv.lsn.awaitReplica(need, cfg.Routing.ReadYourWritesWait, ok)
	if !can && cfg.Routing.ReadYourWritesWait > 0 {
		// No primary to fall back to (a failover under way): the read
		// waits for a replica instead, as long as it would have waited
		// for the primary (pool_timeout), until a primary is known again.
		deadline := time.Now().Add(cfg.Pool.PoolTimeout)
		for !can && s.srv.currentPrimary().Host == "" && time.Now().Before(deadline) {
			lsn, can = s.srv.lsn.awaitReplica(need, 50*time.Millisecond, ok)
		}
	}
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
	if s.minLSN != 0 {
		return false
	}
	switch s.srv.rywMode() {
	case config.RYWOff:
		return true
	case config.RYWTable:
		return !s.dbWrites.written.Load()
	}
	return false // session, linearizable
}

// rywMode is routing.read_your_writes for reads, linearizable while an
// upgrade runs two processes (see handoff.go).
func (srv *Server) rywMode() string {
	mode := srv.cfg.Load().Routing.RYWMode()
	if mode != config.RYWOff && srv.upgrading.Load() && !srv.knobs.NoUpgradeBarrier {
		return config.RYWLinearizable
	}
	return mode
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
	cfg := s.srv.cfg.Load()
	mode := cfg.Routing.RYWMode()
	if (mode == config.RYWOff || len(cfg.Servers) < 2) && !s.reportLSN {
		// Off, or one server only: no read can go anywhere else, so no
		// position is worth asking the primary for after the commit.
		return
	}
	sc := writeScope{seq: seq, all: true, ddl: changesCatalog(st), async: s.asyncCommits()}
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
// and when the transaction has committed they are registered. For a client
// that asked for its commits' positions it returns the commit's (ok).
func (s *session) noteCommit(u *upstream, status byte, rolledBack bool) (token uint64, ok bool) {
	if !u.wrote.Load() {
		return 0, false // nothing written since the last commit: no lock per ReadyForQuery
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
		return 0, false
	}
	cfg := s.srv.cfg.Load()
	mode, replicas := cfg.Routing.RYWMode(), len(cfg.Servers) > 1
	if replicas && mode == config.RYWTable {
		s.srv.lsn.commit(s.dbWrites, done, nil, done.async)
	}
	// linearizable: every read asks for the primary's position itself.
	var seq uint64
	if (replicas && mode == config.RYWSession) || s.reportLSN {
		seq = s.srv.lsn.commit(nil, done, &s.commits, done.async)
	}
	if done.ddl {
		s.srv.catalogs.DDLCommitted(s.cls, s.database, s.user)
	}
	if s.reportLSN {
		return s.srv.lsn.await(&s.commits, seq, min(cfg.Pool.ConnectTimeout, tokenWait))
	}
	return 0, false
}

// asyncCommits reports whether the client runs with synchronous_commit =
// off: its commits may be answered before they are flushed.
func (s *session) asyncCommits() bool {
	v, ok := s.state.setting("synchronous_commit")
	return ok && strings.Contains(strings.ToLower(v), "'off'")
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
