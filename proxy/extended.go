package proxy

import (
	"time"

	"go.uber.org/zap"

	"github.com/pgsplit/pgsplit/internal/pgmsg"
	"github.com/pgsplit/pgsplit/router"
)

// relayExtended collects an extended-protocol batch until Sync or Flush,
// then routes it as a whole: to a replica only if every statement in it is
// read-only.
func (s *session) relayExtended(typ byte) error {
	b := &s.batch
	if b.large {
		// Streaming the rest of a large or incomplete batch to where its
		// start went (the primary).
		return s.streamExtended(typ)
	}
	body, err := s.cr.Body()
	if err != nil {
		return err
	}
	if err := s.appendExtended(typ, body); err != nil {
		return err
	}
	complete := typ == pgmsg.Sync || typ == pgmsg.Flush
	if !complete && len(b.buf) <= s.maxBatch() && s.cr.Buffered() > 0 {
		return nil // more of the batch is already here
	}
	if typ == pgmsg.Sync && s.parseOnly() {
		err := s.answerParseOnly()
		b.reset()
		return err
	}
	if local, mixed := s.batchIsLocal(); local || mixed {
		err := s.answerBatchLocally(mixed)
		b.reset()
		return err
	}
	t := router.Replica
	switch {
	case b.primary:
		t = router.Primary
	case len(b.parses) == 0 && len(b.refs) == 0:
		// A lone Sync, Flush or Close: nothing to offload.
		t = router.Primary
		if s.active != nil {
			t = s.active.target
		} else if onlySyncFlush(b.buf) {
			// No server connection is attached, so none owes anything:
			// answer the Syncs, nothing to flush.
			err := s.answerParseOnly()
			b.reset()
			return err
		}
	case typ == pgmsg.Flush && !s.readOnlyReplicaTx():
		// After a Flush the client may go on with the same unfinished
		// batch, which then cannot leave this server: only a read-only
		// transaction may keep it on a replica.
		t, b.reason = router.Primary, "batch ended by Flush"
	}
	if !complete {
		// The client sent part of a batch and may be waiting for answers
		// (PostgreSQL executes messages as they come), or the batch is
		// too large to hold: what follows is unknown and could be a
		// write, so the rest streams to the primary.
		b.large = true
		t, b.reason = router.Primary, "incomplete or large batch"
	}
	s.settleSplit()
	var d decision
	if s.split != nil {
		tt, err := s.splitBatch(t)
		if err != nil {
			b.reset()
			return err
		}
		d = decision{target: tt, reason: "split transaction"}
	} else if d, err = s.decideBatch(t, b.reason); err != nil {
		b.reset()
		return err
	}
	u, err := s.switchTo(d.target)
	if err != nil {
		b.reset()
		return err
	}
	// The safety net, as for a simple Query: a read batch on a replica,
	// outside a transaction, the client waiting for it, is watched for a
	// 25006 refusal or the replica going away before its first answer.
	watch := typ == pgmsg.Sync && complete && !b.large && u.target == router.Replica && s.split == nil &&
		!s.inTx() && s.cr.Buffered() == 0 && len(b.execs) > 0
	if watch {
		u.watch.Store(watchWaiting)
	}
	if err := s.sendBatch(u, typ, d.reason); err != nil && !watch {
		return err
	}
	if watch {
		ferr := u.conn.W.Flush()
		if ferr != nil {
			_ = u.conn.Raw().SetReadDeadline(time.Now()) // its pump says lost at once
		}
		if !s.awaitVerdict(u) {
			b.reset()
			return ferr
		}
		u.dropBatchRecords()
		if u, err = s.rerunElsewhere(u); err != nil {
			b.reset()
			return err
		}
		if err := s.sendBatch(u, typ, "re-run elsewhere"); err != nil {
			return err
		}
	}
	if ce := s.log.Check(zap.DebugLevel, "route batch"); ce != nil { // no field allocation when off
		ce.Write(zap.Stringer("to", u.target), zap.String("reason", d.reason))
	}
	if b.large {
		b.sent() // the rest streams: its Executes need the portals bound so far
	} else {
		b.reset()
	}
	return s.flushIfIdle(u)
}

// streamExtended forwards an extended-protocol message straight to the
// active connection.
func (s *session) streamExtended(typ byte) error {
	u := s.active
	if typ == pgmsg.Sync {
		u.expectReady()
		u.pending.Add(1)
		u.unsynced.Store(false)
		s.batch.reset() // the streamed batch is over
	} else {
		u.unsynced.Store(true)
	}
	if !pgmsg.Step(typ) {
		if err := s.cr.Forward(u.conn.W); err != nil {
			return err
		}
		return s.flushIfIdle(u)
	}
	// Keep the statement registry right, name statements as the servers
	// know them, and prepare here a statement the client prepared on
	// another connection, even when streaming.
	body, err := s.cr.Body()
	if err != nil {
		return err
	}
	b := &s.batch
	if err := s.appendExtended(typ, body); err != nil {
		return err
	}
	if err := s.checkBooks(); err != nil {
		return err
	}
	if err := s.sendBatch(u, typ, "incomplete or large batch"); err != nil {
		return err
	}
	b.sent()
	return s.flushIfIdle(u)
}

// abortTransaction makes the server's open transaction fail as an error
// pgsplit answers itself (pe) would have made it fail on one server: the
// client is told ReadyForQuery E (failed), and what it sends next gets 25P02 until
// it rolls back, as from PostgreSQL. Outside a transaction it does nothing.
func (s *session) abortTransaction(pe *pgmsg.Error) error {
	if byte(s.txStatus.Load()) != pgmsg.TxActive {
		return nil
	}
	u := s.active
	if tx := s.split; tx != nil {
		if tx.on == router.HintNone {
			// The BEGIN is still held: open the transaction on the
			// primary, to fail there.
			var err error
			if u, err = s.switchTo(router.Primary); err != nil {
				return err
			}
			if err := s.inject(u, tx.begin); err != nil {
				return err
			}
			tx.on = u.target
		} else {
			u = s.ups[tx.on]
		}
	}
	if u == nil {
		return nil
	}
	u.expectErr.Add(1)
	msg := "DO $pgsplit$BEGIN RAISE EXCEPTION USING ERRCODE = '" + pe.Code + "', MESSAGE = 'pgsplit: transaction aborted by an error pgsplit answered'; END$pgsplit$"
	if err := s.inject(u, msg); err != nil {
		return err
	}
	if err := u.conn.W.Flush(); err != nil {
		return err
	}
	s.txStatus.Store(pgmsg.TxFailed)
	return nil
}

// sendBatch writes the collected messages to u, preceded by what u lacks
// for them (injectStatements), and keeps the books: a query record per
// Execute, the statements now prepared on u, and for each Execute what its
// statement does to the session (pins, SETs to replay, DISCARD/DEALLOCATE),
// as for a Query. last is the type of the batch's last message: a Sync
// makes u owe a ReadyForQuery, anything else leaves the batch unfinished.
func (s *session) sendBatch(u *upstream, last byte, reason string) error {
	b := &s.batch
	if err := s.injectStatements(u, b); err != nil {
		return err
	}
	u.markSend()
	if len(b.parsed) > 0 {
		u.noteParsed(b.parsed)
	}
	for _, x := range b.execs {
		s.startRecord(u, x.stmt.sql, x.stmt.class.Kind, true, x.params, reason, x.at, u.sent+1)
		s.noteWrite(u, u.sent+1, x.stmt.sql, s.classOf(x.stmt))
		s.noteUserCode(u, s.classOf(x.stmt))
	}
	if _, err := u.conn.W.Write(b.buf); err != nil {
		return err
	}
	if last == pgmsg.Sync {
		u.expectReady()
		u.pending.Add(1)
		u.unsynced.Store(false)
	} else {
		u.unsynced.Store(true)
	}
	s.noteParsed(u, b)
	for _, x := range b.execs {
		s.afterStatement(u, s.classOf(x.stmt))
	}
	return nil
}

// parseOnly reports whether the batch only prepares statements (Parse,
// Close of statements, Sync: libpq's PQprepare, pgbench -M prepared) while
// the client is outside a transaction: pgsplit answers it itself and
// prepares the statements on a server when they are first used. Under
// transaction pooling that keeps a client that prepares from waiting for a
// server connection (a client like pgbench prepares synchronously while
// its other connections hold theirs: waiting could deadlock them). A
// statement that is not valid SQL is sent to a server, for its error.
func (s *session) parseOnly() bool {
	b := &s.batch
	if len(b.parses) == 0 || len(b.refs) > 0 || len(b.execs) > 0 || b.large ||
		byte(s.txStatus.Load()) != pgmsg.TxIdle || s.openTxOn() != router.HintNone {
		return false
	}
	for _, u := range s.ups {
		if u != nil && u.owesAnswers() {
			return false // inside a batch the client continues, or behind one: the server's Sync must come
		}
	}
	for _, name := range b.parses {
		if cs := s.stmts[name]; cs == nil || cs.class.Statements == 0 || router.IsOwnSetting(cs.class.SetName) {
			return false
		}
	}
	for typ, body := range pgmsg.Frames(b.buf) {
		switch typ {
		case pgmsg.Parse, pgmsg.Sync:
		case pgmsg.Close:
			if len(body) < 1 || body[0] != pgmsg.TargetStatement {
				return false
			}
		default:
			return false
		}
	}
	return true
}

// answerParseOnly answers a parseOnly batch as the server would.
func (s *session) answerParseOnly() error {
	if u := s.active; u != nil {
		if err := s.waitAnswered(u); err != nil {
			return err
		}
	}
	// Answered ParseComplete: to the client the statements exist.
	for _, cs := range s.batch.parsed {
		cs.confirmed.Store(true)
	}
	var out []byte
	for typ := range pgmsg.Frames(s.batch.buf) {
		switch typ {
		case pgmsg.Parse:
			out = pgmsg.AppendEmpty(out, pgmsg.ParseComplete)
		case pgmsg.Close:
			out = pgmsg.AppendEmpty(out, pgmsg.CloseComplete)
		case pgmsg.Sync:
			out = pgmsg.AppendReadyForQuery(out, byte(s.txStatus.Load()))
		}
	}
	return s.out.send(out)
}

// onlySyncFlush reports whether buf holds only Sync and Flush messages.
func onlySyncFlush(buf []byte) bool {
	for typ := range pgmsg.Frames(buf) {
		if typ != pgmsg.Sync && typ != pgmsg.Flush {
			return false
		}
	}
	return true
}
