package proxy

import (
	"time"

	"github.com/pgsplit/pgsplit/internal/pgmsg"

	"github.com/jackc/pgx/v5/pgproto3"
	"go.uber.org/zap"

	"github.com/pgsplit/pgsplit/config"
	"github.com/pgsplit/pgsplit/router"
)

// splitTx is a transaction under routing.transactions: split. Its BEGIN is
// held back; its leading reads run in a transaction on a replica; at the
// first statement that needs the primary, the replica transaction is rolled
// back and the same BEGIN opens the transaction on the primary, where the
// rest runs. The client sees one ordinary transaction.
type splitTx struct {
	begin    string        // the client's BEGIN, replayed where the transaction opens
	on       router.Target // where it is open; HintNone while held back
	readOnly bool          // SET TRANSACTION READ ONLY came first: never moves
}

// maySplit reports whether st is a BEGIN that split mode holds back: a
// plain READ COMMITTED BEGIN that a hot standby also accepts (so not READ
// WRITE or DEFERRABLE), in a session whose reads may be offloaded.
// Read-only transactions go whole to a replica and stricter isolation
// levels whole to the primary, as in primary mode.
func (s *session) maySplit(st router.Statement) bool {
	if s.srv.cfg.Load().Routing.Transactions != config.TxSplit || !s.route.OffloadReads || s.route.Override == router.Primary {
		return false
	}
	if st.Kind != router.KindBegin && st.Kind != router.KindStartTransaction || st.Statements != 1 {
		return false
	}
	if s.inTx() || s.route.Pins() > 0 || !st.ReadOnly {
		return false
	}
	if tx := st.Tx; tx != nil {
		if (tx.ReadOnly != nil && *tx.ReadOnly) || (tx.Isolation != "" && tx.Isolation != "read committed") || tx.Deferrable != nil {
			return false
		}
	}
	return true
}

// settleSplit forgets a split transaction that has ended on its server
// (COMMIT or ROLLBACK answered, in either protocol).
func (s *session) settleSplit() {
	tx := s.split
	if tx == nil || tx.on == router.HintNone {
		return
	}
	if u := s.ups[tx.on]; u == nil || (u.quiet() && byte(u.txStatus.Load()) == pgmsg.TxIdle) {
		s.split = nil
	}
}

// relaySplit handles one simple-protocol statement of a split transaction
// (or the BEGIN that starts one).
func (s *session) relaySplit(body []byte, sql string, st router.Statement) error {
	if s.split == nil {
		s.split = &splitTx{begin: sql, on: router.HintNone}
		return s.answerTx("BEGIN", pgmsg.TxActive)
	}
	tx := s.split
	end := st.Kind == router.KindCommit || st.Kind == router.KindRollback
	switch tx.on {
	case router.HintNone:
		if end {
			s.split = nil
			tag := "COMMIT"
			if st.Kind == router.KindRollback {
				tag = "ROLLBACK"
			}
			return s.answerTx(tag, pgmsg.TxIdle)
		}
		t := router.Primary
		if s.readsInSplit(st) && s.replicaReadable(s.ups[router.Replica], false, readStmt{sql, st}) {
			t = router.Replica
		}
		if st.Kind == router.KindSetTransaction && st.Tx != nil && st.Tx.ReadOnly != nil && *st.Tx.ReadOnly {
			t, tx.readOnly = router.Replica, true
		}
		u, err := s.switchTo(t)
		if err != nil {
			return err
		}
		if err := s.inject(u, tx.begin); err != nil {
			return err
		}
		tx.on = u.target
		s.log.Debug("split transaction opened", zap.Stringer("on", u.target))
		return s.sendQuery(u, body, sql, st)
	case router.Replica:
		r := s.ups[router.Replica]
		read := s.readsInSplit(st) && (r == nil || s.replicaReadable(r, false, readStmt{sql, st}))
		if !end && !read && !tx.readOnly && r != nil {
			// Whether the replica part failed is known only once its
			// answers are in.
			if err := s.waitQuiet(r); err != nil {
				return err
			}
		}
		if end || tx.readOnly || r == nil || byte(r.txStatus.Load()) == pgmsg.TxFailed || read {
			// Reads, the end of the transaction, and anything after an
			// error (which must fail as it would on one server) stay.
			if end {
				s.split = nil
			}
			u, err := s.switchTo(router.Replica)
			if err != nil {
				return err
			}
			return s.sendQuery(u, body, sql, st)
		}
		// The first statement that needs the primary: move.
		u, err := s.moveSplitToPrimary(r, st.Reason)
		if err != nil {
			return err
		}
		return s.sendQuery(u, body, sql, st)
	}
	// Open on the primary: everything stays there.
	if end {
		s.split = nil
	}
	u, err := s.switchTo(router.Primary)
	if err != nil {
		return err
	}
	return s.sendQuery(u, body, sql, st)
}

// readsInSplit reports whether st may run in the replica part of a split
// transaction: a plain read (no session-state statement, no hint or pin
// forcing the primary).
func (s *session) readsInSplit(st router.Statement) bool {
	if st.BySession {
		return false
	}
	return s.route.Read(st.Target, st.Hint, st.Reason).Target == router.Replica
}

// sendQuery forwards the client's current Query (body) to u.
func (s *session) sendQuery(u *upstream, body []byte, sql string, st router.Statement) error {
	if _, err := s.writeQuery(u, body, sql, st, "split transaction"); err != nil {
		return err
	}
	s.afterStatement(u, st)
	return s.flushIfIdle(u)
}

// readOnlyReplicaTx reports whether the client is in a transaction on a
// replica that can never move to the primary (BEGIN READ ONLY, or a split
// transaction that began with SET TRANSACTION READ ONLY).
func (s *session) readOnlyReplicaTx() bool {
	r := s.ups[router.Replica]
	if r == nil || byte(r.txStatus.Load()) == pgmsg.TxIdle {
		return false
	}
	return s.split == nil || s.split.readOnly
}

// answerTx answers a held BEGIN, or the COMMIT/ROLLBACK of a transaction
// that never reached a server, as the server would.
func (s *session) answerTx(tag string, status byte) error {
	if u := s.active; u != nil {
		if err := s.waitAnswered(u); err != nil {
			return err
		}
	}
	s.txStatus.Store(uint32(status))
	if status == pgmsg.TxIdle {
		if began := s.txBegan.Swap(0); began != 0 {
			s.endTransaction(began, time.Now())
		}
	}
	return s.out.answer(status, &pgproto3.CommandComplete{CommandTag: []byte(tag)})
}

// splitBatch routes an extended-protocol batch (whose statements need t)
// inside a split transaction: it opens the held transaction where the batch
// goes, or moves it to the primary unless the batch only reads.
func (s *session) splitBatch(t router.Target) (router.Target, error) {
	tx := s.split
	switch tx.on {
	case router.HintNone:
		if t == router.Replica {
			t = s.route.Read(t, router.HintNone, "").Target
		}
		if t == router.Replica && !s.batchReadable(s.ups[router.Replica]) {
			t = router.Primary
		}
		u, err := s.switchTo(t)
		if err != nil {
			return router.Primary, err
		}
		tx.on = u.target
		return u.target, s.inject(u, tx.begin)
	case router.Replica:
		r := s.ups[router.Replica]
		if t == router.Replica && !tx.readOnly && r != nil && !r.unsynced.Load() && !s.batchReadable(r) {
			t = router.Primary // the replica has not replayed what the batch must see
		}
		if t != router.Replica && !tx.readOnly && r != nil && !r.unsynced.Load() {
			if err := s.waitQuiet(r); err != nil {
				return router.Replica, err
			}
		}
		if t == router.Replica || tx.readOnly || r == nil || r.unsynced.Load() || byte(r.txStatus.Load()) == pgmsg.TxFailed {
			return router.Replica, nil
		}
		_, err := s.moveSplitToPrimary(r, "batch needs the primary")
		return router.Primary, err
	}
	return router.Primary, nil
}

// moveSplitToPrimary ends the replica part of the split transaction (its
// answers in, ROLLBACK) and opens the same BEGIN on the primary, which it
// returns as the active connection.
func (s *session) moveSplitToPrimary(r *upstream, reason string) (*upstream, error) {
	if err := s.waitQuiet(r); err != nil {
		return nil, err
	}
	if err := s.inject(r, "ROLLBACK"); err != nil {
		return nil, err
	}
	if err := r.conn.W.Flush(); err != nil {
		return nil, err
	}
	u, err := s.switchTo(router.Primary)
	if err != nil {
		return nil, err
	}
	if err := s.inject(u, s.split.begin); err != nil {
		return nil, err
	}
	s.split.on = router.Primary
	s.log.Debug("split transaction moved to the primary", zap.String("reason", reason))
	return u, nil
}
