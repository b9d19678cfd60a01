package proxy

import (
	"bytes"
	"errors"
	"strings"
	"time"

	"github.com/pgsplit/pgsplit/internal/pgmsg"

	"github.com/jackc/pgx/v5/pgproto3"
	"go.uber.org/zap"

	"github.com/pgsplit/pgsplit/config"
	"github.com/pgsplit/pgsplit/internal/wire"
	"github.com/pgsplit/pgsplit/router"
)

// relayClient reads the client's messages, routes each statement or batch
// to the primary or a replica, and forwards it, until the client leaves or
// the session is closed. It says why it stopped.
func (s *session) relayClient() string {
	for {
		typ, err := s.nextMessage()
		if err != nil {
			return err.Error()
		}
		s.msgAt, s.waited, s.readFloor = time.Now(), 0, 0
		s.lastRequest.Store(s.msgAt.UnixNano())
		if s.srv.pause.paused() && typ != pgmsg.Terminate && s.batch.empty() && s.idle() {
			// PAUSE: a new transaction waits for RESUME.
			pe := s.srv.pause.wait(s, s.srv.cfg.Load().Pool.PoolTimeout)
			if s.srv.draining.Load() {
				// Shutdown opened the gate: this statement must not run
				// (drain may already have told the client so).
				s.out.fatal(pgmsg.Fatal(pgmsg.CodeAdminShutdown, "terminating connection due to administrator command: pgsplit is shutting down"))
				return "shutdown while held by PAUSE"
			}
			if pe != nil {
				if err := s.answerError(pe, typ); err != nil {
					return "relay client→server: " + err.Error()
				}
				continue
			}
		}
		s.claim()
		switch {
		case typ == pgmsg.Terminate:
			return "client terminated"
		case s.skipSync && pgmsg.Extended(typ):
			err = s.skipToSync(typ)
		default:
			err = s.relayMessage(typ)
		}
		if pe, ok := recoverable(err); ok {
			err = s.answerError(pe, typ)
		}
		s.settle()
		if err != nil {
			var pe *pgmsg.Error
			if errors.As(err, &pe) && pe.Severity == pgmsg.SeverityFatal {
				s.out.fatal(pe)
			}
			return "relay client→server: " + err.Error()
		}
		if s.draining.Load() && s.idle() {
			// pgsplit answered this one itself (no ReadyForQuery from a
			// server to trigger the pump's check).
			s.out.fatal(pgmsg.Fatal(pgmsg.CodeAdminShutdown, "terminating connection due to administrator command: pgsplit is shutting down"))
		}
	}
}

// nextMessage reads the next client message's header, ending the session
// when an idle limit runs out first (see idleWait). A message that breaks
// the framing gets FATAL 08P01, one over limits.max_message_size FATAL
// 54000; the error says why the session ends.
func (s *session) nextMessage() (byte, error) {
	for {
		limits := s.srv.cfg.Load().Limits
		limit := ""
		if s.cr.Buffered() == 0 {
			// Only a read that can wait needs a deadline: a pipelined
			// message already here is not idleness.
			var at time.Time
			if limit, at = s.idleWait(limits); limit != "" {
				// A timeout stops Next before it consumes a header
				// byte, so the stream stays usable (see
				// wire.Reader.Next).
				_ = s.conn.SetReadDeadline(at)
				s.idleArmed = true
			}
		}
		typ, _, err := s.cr.Next()
		if s.idleArmed {
			// The message's body is not the idle wait's to bound.
			_ = s.conn.SetReadDeadline(time.Time{})
			s.idleArmed = false
		}
		if err == nil {
			return typ, nil
		}
		var fe *wire.FrameError
		switch {
		case errors.As(err, &fe) && fe.TooLarge():
			s.out.fatal(s.messageTooLarge(fe))
			return 0, errors.New("limit: " + fe.Error())
		case errors.As(err, &fe):
			s.out.fatal(pgmsg.Fatal(pgmsg.CodeProtocolViolation, fe.Error()))
			return 0, errors.New("protocol violation: " + fe.Error())
		case limit != "" && isTimeout(err) && !s.cr.Broken():
			if pe := s.idleExpired(limits); pe != nil {
				s.out.fatal(pe)
				return 0, errors.New(pe.Message)
			}
			continue
		}
		return 0, errors.New("client connection closed")
	}
}

// relayMessage routes one client message.
func (s *session) relayMessage(typ byte) error {
	switch typ {
	case pgmsg.Query:
		return s.relayQuery()
	case pgmsg.Parse, pgmsg.Bind, pgmsg.Describe, pgmsg.Execute, pgmsg.Close, pgmsg.Flush, pgmsg.Sync:
		return s.relayExtended(typ)
	case pgmsg.FunctionCall:
		return s.relayFunctionCall()
	}
	// COPY data and anything else belong to the statement running on the
	// active connection.
	return s.forwardToActive(typ)
}

// relayFunctionCall forwards a FunctionCall (a server function by OID,
// nothing to classify: libpq's large-object calls): to the primary, or
// inside the client's transaction. A split transaction moves to the primary
// first; a read-only replica transaction keeps it (a write fails there as
// it would on any read-only transaction).
func (s *session) relayFunctionCall() error {
	s.settleSplit()
	t := router.Primary
	if s.split != nil {
		var err error
		if t, err = s.splitBatch(router.Primary); err != nil {
			return err
		}
	} else if tx, err := s.txTarget(false); err != nil {
		return err
	} else if tx != router.HintNone {
		t = tx
	}
	u, err := s.switchTo(t)
	if err != nil {
		return err
	}
	u.pending.Add(1)
	// no query record: nothing to show but an OID; it may write anything,
	// and leave any session state
	if s.resetUserCode {
		u.userCode.Store(true)
	}
	s.noteWrite(u, u.expectReady(), "", router.Statement{Kind: router.KindOther})
	u.unsynced.Store(false) // a FunctionCall ends an unfinished batch, as a Query does
	if err := s.cr.Forward(u.conn.W); err != nil {
		return err
	}
	return s.flushIfIdle(u)
}

// refuseBackendSignal answers a statement calling pg_cancel_backend or
// pg_terminate_backend (router.SignalsBackend) with 0A000, aborting an
// open transaction as the error would.
func (s *session) refuseBackendSignal() error {
	pe := pgmsg.Err(pgmsg.CodeFeatureNotSupported,
		"pg_cancel_backend() and pg_terminate_backend() are refused through pgsplit: the backend pids a client sees belong to pooled server connections that serve other clients too")
	pe.Detail = "Cancel a statement with your driver's cancel (a CancelRequest: pgsplit sends it to the server running that client's statement); to stop other sessions, connect to the server directly."
	if err := s.abortTransaction(pe); err != nil {
		return err
	}
	return pe
}

// relayQuery routes and forwards one simple-protocol Query.
func (s *session) relayQuery() error {
	body, err := s.cr.Body()
	if err != nil {
		return err
	}
	sql := string(bytes.TrimRight(body, "\x00"))
	if k := s.srv.knobs.OnQuery; k != nil {
		k(sql)
	}
	st := s.cls.Classify(sql)
	if st.Unparsed {
		s.noteUnparsed(st, len(sql))
	}
	if router.SignalsBackend(st) {
		return s.refuseBackendSignal()
	}
	if st.FreesDatabase != "" {
		s.srv.freeDatabase(st.FreesDatabase)
	}
	if s.deallocatesOurs(st) {
		// A statement the client prepared with Parse: pgsplit keeps it
		// under another name on the servers, so DEALLOCATE is its own.
		delete(s.stmts, st.PreparedName)
		return s.answerLocally([]pgproto3.BackendMessage{&pgproto3.CommandComplete{CommandTag: []byte("DEALLOCATE")}})
	}
	s.settleSplit()
	if roBegin := s.roBegin; roBegin != "" {
		s.roBegin = ""
		if st.Kind == router.KindSetTransaction && st.Tx != nil && st.Tx.Isolation == "serializable" {
			return s.moveReadOnlyToPrimary(roBegin, body, sql, st)
		}
	}
	d, err := s.decide(st, sql)
	if err != nil {
		return err
	}
	if d.target == router.Replica && (st.Kind == router.KindBegin || st.Kind == router.KindStartTransaction) && st.Statements == 1 {
		s.roBegin = sql // a SET TRANSACTION … SERIALIZABLE right after it moves it
	}
	if d.local != nil {
		return s.answerLocally(d.local)
	}
	if s.split != nil || s.maySplit(st) {
		return s.relaySplit(body, sql, st)
	}
	u, err := s.switchTo(d.target)
	if err != nil {
		return err
	}
	if ce := s.log.Check(zap.DebugLevel, "route"); ce != nil { // no field allocation when off
		ce.Write(zap.Stringer("to", u.target), zap.String("reason", d.reason))
	}
	// Safety net: an autocommit statement on a replica that the replica
	// refuses as a write (25006) before answering anything else is run
	// again on the primary. Only when the client waits for this answer
	// (nothing pipelined behind it), so answers stay in order.
	watch := u.target == router.Replica && !s.inTx() && s.cr.Buffered() == 0 &&
		st.Kind != router.KindBegin && st.Kind != router.KindStartTransaction
	if watch {
		u.watch.Store(watchWaiting)
	}
	rec, err := s.writeQuery(u, body, sql, st, d.reason)
	if err != nil {
		return err
	}
	s.afterStatement(u, st)
	ferr := s.flushIfIdle(u)
	if ferr != nil || !watch {
		if !watch {
			return ferr
		}
		// A replica that went away: its pump says so (lost) at once.
		_ = u.conn.Raw().SetReadDeadline(time.Now())
	}
	if !s.awaitVerdict(u) {
		return ferr
	}
	u.dropRecord(rec) // the refused answer is dropped; another server answers
	why := "misroute: re-run on the primary"
	if u.lost.Load() {
		why = "re-run: the replica was lost before answering"
	}
	p, err := s.rerunElsewhere(u)
	if err != nil {
		return err
	}
	if _, err := s.writeQuery(p, body, sql, st, why); err != nil {
		return err
	}
	return p.conn.W.Flush()
}

// moveReadOnlyToPrimary handles SET TRANSACTION ISOLATION LEVEL
// SERIALIZABLE as the first statement of a read-only transaction that
// opened on a replica, which a standby refuses: the replica transaction
// (nothing ran in it) is rolled back and the same BEGIN opens it on the
// primary, where the SET runs.
func (s *session) moveReadOnlyToPrimary(begin string, body []byte, sql string, st router.Statement) error {
	r := s.ups[router.Replica]
	if r == nil {
		return errors.New("read-only transaction lost its replica connection")
	}
	if err := s.waitQuiet(r); err != nil {
		return err
	}
	if byte(r.txStatus.Load()) != pgmsg.TxActive {
		// The BEGIN failed, or the transaction is over: nothing to move.
		u, err := s.switchTo(router.Replica)
		if err != nil {
			return err
		}
		return s.sendQuery(u, body, sql, st)
	}
	if err := s.inject(r, "ROLLBACK"); err != nil {
		return err
	}
	if err := r.conn.W.Flush(); err != nil {
		return err
	}
	u, err := s.switchTo(router.Primary)
	if err != nil {
		return err
	}
	if err := s.inject(u, begin); err != nil {
		return err
	}
	s.log.Debug("read-only transaction moved to the primary: serializable")
	if _, err := s.writeQuery(u, body, sql, st, "serializable transaction (a standby refuses it)"); err != nil {
		return err
	}
	s.afterStatement(u, st)
	return s.flushIfIdle(u)
}

// rerunElsewhere picks the server that runs again what u was watched for
// (see upstream.watch): after a 25006 refusal the primary; after the
// replica went away before answering another replica (the primary if none
// is left), with u discarded and its replica out of rotation.
func (s *session) rerunElsewhere(u *upstream) (*upstream, error) {
	if !u.lost.Load() {
		s.srv.misroutes.Add(1)
		s.log.Warn("misroute: a replica refused the statement as a write (25006); running it on the primary")
		return s.switchTo(router.Primary)
	}
	<-u.exited
	s.discard(u)
	if s.active == u {
		s.active = nil
	}
	s.srv.markDown(s.srv.serverAt(u.ep))
	s.srv.readRetries.Add(1)
	s.log.Warn("replica connection lost before the answer; running the read again elsewhere", zap.String("server", u.conn.Addr))
	return s.switchTo(router.Replica)
}

// writeQuery writes the client's current Query (body, whose text is sql) to
// u, with the books every client Query keeps: the counts the tentative
// settings and the query log go by, the ReadyForQuery u now owes, the end of
// any unfinished extended-protocol batch and of the unnamed statement.
func (s *session) writeQuery(u *upstream, body []byte, sql string, st router.Statement, reason string) (*queryRecord, error) {
	u.markSend()
	s.noteUserCode(u, st)
	seq := u.expectReady()
	s.noteWrite(u, seq, sql, st)
	rec := s.startRecord(u, sql, st.Kind, false, nil, reason, s.msgAt, seq)
	u.pending.Add(1)
	u.unsynced.Store(false)    // a Query ends an unfinished extended-protocol batch
	u.conn.State.Unnamed = nil // a simple Query destroys the unnamed statement
	return rec, s.cr.WriteBodyAfterHeader(u.conn.W, body)
}

// verdictWait bounds how long the safety net holds the session for the
// first answer of a statement on a replica: a replica refuses a write as
// soon as it starts it, while a long read must not stop pgsplit from
// reading the client (a Terminate, a client gone).
const verdictWait = 2 * time.Second

// awaitVerdict waits for the pump's look at the first answer from u, and
// reports whether the statement must run again on the primary.
func (s *session) awaitVerdict(u *upstream) bool {
	t := s.verdictTimer
	if t == nil {
		t = time.NewTimer(verdictWait)
		s.verdictTimer = t
	} else {
		t.Reset(verdictWait) // (Go 1.23 timers: no stale tick after Stop)
	}
	defer t.Stop()
	select {
	case retry := <-u.verdict:
		return retry
	case <-u.exited:
	case <-s.out.goneCh():
	case <-t.C:
	}
	if u.watch.CompareAndSwap(watchWaiting, watchAbandoned) {
		// Nothing of the answer was relayed: run it again only if the
		// server went away (the pump ended lost, see idleEnded).
		return closed(u.exited) && u.lost.Load()
	}
	// The pump decided meanwhile (it may have relayed the answer and then
	// lost the connection): take its verdict, which it sends right after
	// it takes the watch, before it ends. Both may be ready when the pump
	// ended before this wait began (the server went away while the batch
	// was being written): the verdict counts, or a read the pump left to
	// be run again would get no answer at all.
	select {
	case retry := <-u.verdict:
		return retry
	case <-u.exited:
	}
	select {
	case retry := <-u.verdict:
		return retry
	default:
		return false
	}
}

// forwardToActive forwards the current message unchanged to the active
// connection (the primary when there is none yet).
func (s *session) forwardToActive(typ byte) error {
	u := s.active
	if u == nil && (typ == pgmsg.CopyData || typ == pgmsg.CopyDone || typ == pgmsg.CopyFail) {
		// COPY data with no COPY running (it failed, and its connection
		// went back to the pool): ignored, as PostgreSQL ignores it.
		_, err := s.cr.Body()
		return err
	}
	if u == nil {
		var err error
		if u, err = s.switchTo(router.Primary); err != nil {
			return err
		}
	}
	if err := s.cr.Forward(u.conn.W); err != nil {
		return err
	}
	return s.flushIfIdle(u)
}

func (s *session) flushIfIdle(u *upstream) error {
	if s.cr.Buffered() == 0 {
		return u.conn.W.Flush()
	}
	return nil
}

// switchTo makes t's connection the active one: it waits until the current
// one owes the client nothing (answers must reach the client in order),
// attaches a connection for t if the session has none, and brings its
// session settings up to date. A replica that cannot be reached falls back
// to the primary.
func (s *session) switchTo(t router.Target) (*upstream, error) {
	if s.active != nil && s.active.target != t {
		if err := s.waitQuiet(s.active); err != nil {
			return nil, err
		}
	}
	u := s.ups[t]
	if u == nil {
		var err error
		u, err = s.acquire(t)
		if err != nil {
			if t == router.Primary {
				var pe *pgmsg.Error
				if errors.As(err, &pe) && !((pe.Code == pgmsg.CodeTooManyConnections || pe.Code == pgmsg.CodeCannotConnectNow) && s.txPooling && s.split == nil && byte(s.txStatus.Load()) == pgmsg.TxIdle) {
					// Without a server the session cannot go on, unless
					// transaction pooling lets the next statement try
					// again.
					pe.Severity = pgmsg.SeverityFatal
				}
				return nil, err
			}
			var pe *pgmsg.Error
			if s.srv.cfg.Load().Routing.ReadFrom == config.ReadFromReplicasOnly && errors.As(err, &pe) {
				return nil, err
			}
			s.log.Warn("no replica connection; reading from the primary", zap.Error(err))
			return s.switchTo(router.Primary)
		}
		s.startPump(u)
	}
	if err := s.syncSettings(u); err != nil {
		return nil, err
	}
	s.active = u
	return u, nil
}

// waitQuiet blocks until u has answered everything sent to it and is not
// inside an unfinished batch.
func (s *session) waitQuiet(u *upstream) error {
	return s.waitUntil(u, u.quiet)
}

// waitAnswered blocks until u has answered every Query and Sync sent to it
// (it may still be inside an unfinished batch).
func (s *session) waitAnswered(u *upstream) error {
	return s.waitUntil(u, func() bool { return u.pending.Load() == 0 && u.dropZ.Load() == 0 })
}

// waitUntil flushes u and waits, woken by each ReadyForQuery, until done
// holds, the server connection ends or the session is closed.
func (s *session) waitUntil(u *upstream, done func() bool) error {
	if err := u.conn.W.Flush(); err != nil {
		return err
	}
	for !done() {
		select {
		case <-s.zSignal:
		case <-u.exited:
			return errors.New("server connection ended")
		case <-s.out.goneCh():
			return errors.New("session closed")
		case <-time.After(time.Second):
			// A signal may have gone to an earlier wait; look again.
		}
	}
	return nil
}

// syncSettings brings u's session settings in line with the client's (its
// startup parameters and the harmless SETs it ran): what differs is set,
// what the client does not have (another client's, under transaction
// pooling) is reset to the server default. Each is its own injected
// statement, so one that fails does not stop the others. Inside a
// transaction or an unfinished extended-protocol batch nothing is injected
// (a Query would end the batch); the next statement after it catches up.
func (s *session) syncSettings(u *upstream) error {
	if u.unsynced.Load() || !s.state.differs(u.conn.State.Settings) {
		return nil
	}
	if u.pending.Load() > 0 {
		// The pump drops everything up to an injected statement's
		// ReadyForQuery: earlier answers must be through first (and the
		// transaction status known).
		if err := s.waitAnswered(u); err != nil {
			return err
		}
	}
	if byte(u.txStatus.Load()) != pgmsg.TxIdle {
		// Inside a transaction the connection has the settings it was
		// given when the transaction began, plus the client's own
		// changes, which a rollback may still undo: nothing to replay.
		return nil
	}
	for _, q := range s.state.diff(u.conn.State.Settings) {
		if err := s.inject(u, q); err != nil {
			return err
		}
	}
	return nil
}

// inject sends sql to u as a simple Query whose answers the pump drops.
func (s *session) inject(u *upstream, sql string) error {
	msg := pgmsg.AppendQuery(make([]byte, 0, 6+len(sql)), sql)
	u.dropZ.Add(1)
	u.pending.Add(1)
	u.conn.State.Unnamed = nil
	_, err := u.conn.W.Write(msg)
	return err
}

// cut splits a NUL-terminated string off the front of b.
func cut(b []byte) (string, []byte, bool) {
	i := bytes.IndexByte(b, 0)
	if i < 0 {
		return "", nil, false
	}
	return string(b[:i]), b[i+1:], true
}

func cstring(b []byte) string {
	s, _, _ := cut(b)
	return s
}

func quoteIdent(s string) string {
	return `"` + strings.ReplaceAll(s, `"`, `""`) + `"`
}
