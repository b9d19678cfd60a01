package proxy

import (
	"bytes"
	"errors"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"
	"go.uber.org/zap"

	"github.com/pgsplit/pgsplit/internal/pgmsg"
	"github.com/pgsplit/pgsplit/router"
)

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
