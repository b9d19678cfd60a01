package proxy

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pgsplit/pgsplit/internal/pgmsg"

	"github.com/jackc/pgx/v5/pgproto3"
	"go.uber.org/zap"

	"github.com/pgsplit/pgsplit/internal/wire"
	"github.com/pgsplit/pgsplit/pool"
	"github.com/pgsplit/pgsplit/router"
)

// upstream is one server connection attached to a session, with the pump
// goroutine that relays its answers to the client.
//
// Ownership: the session goroutine owns the connection's writer and the
// fields marked "session goroutine"; the pump owns the reader. The atomic
// counters are shared between the two.
type upstream struct {
	target router.Target
	conn   *pool.Conn
	pool   *pool.Pool
	ep     endpoint // the server it is connected to

	// Read-your-writes (under recMu): what statements sent here may have
	// written, by the ReadyForQuery that ends each, and what the open
	// transaction wrote so far (see noteCommit).
	writes  []writeScope
	txWrote writeScope
	wrote   atomic.Bool // writes or txWrote are not empty (read without recMu)

	pending  atomic.Int32  // Query/Sync/FunctionCall sent, ReadyForQuery not yet seen
	txStatus atomic.Uint32 // status byte of this connection's last ReadyForQuery
	// Answers to statements pgsplit sent itself, which the client must not
	// see: everything up to and including dropZ ReadyForQuery messages, and
	// dropParse ParseComplete / dropClose CloseComplete messages.
	dropZ     atomic.Int32
	dropParse atomic.Int32
	dropClose atomic.Int32
	// expectErr counts the ErrorResponses among those dropped answers that
	// pgsplit provoked on purpose (see abortTransaction): not logged.
	expectErr atomic.Int32

	// Safety net: while watch is not watchOff, the pump looks at the first
	// answer to the statement just sent. If the session still waits
	// (watchWaiting) and the answer is a 25006 (read_only_sql_transaction)
	// refusal, the pump drops it and says so on verdict; if the session gave
	// up waiting (watchAbandoned), the answer goes to the client as it is.
	watch   atomic.Int32
	verdict chan bool
	// lost: the server ended the connection while it owed the client
	// nothing, and the session held it (it may have sent something since;
	// see idleEnded), or while the safety net waited for the first answer;
	// then rerun is set too and verdict says retry: nothing reached the
	// client, so the session runs the statement again elsewhere.
	lost, rerun atomic.Bool

	stopping atomic.Bool   // the session is stopping the pump on purpose
	exited   chan struct{} // closed when the pump has ended
	err      error         // the pump's result, set before exited is closed

	unsynced atomic.Bool // extended-protocol messages sent since the last Sync

	// resetOnRelease: the session was pinned to this connection and let go
	// of the state (UNLISTEN, DISCARD TEMP…); whether that worked is not
	// known here, so the connection is reset with DISCARD ALL before it
	// serves anyone else.
	resetOnRelease atomic.Bool
	// userCode: a statement sent here ran code pgsplit cannot see into (a
	// function, DO, CALL: router.Classifier.RunsUserCode), which may have
	// left session state no statement named; the connection gets
	// pool.Conn.SoftReset before it serves anyone else.
	userCode atomic.Bool

	// Query-log records of statements sent here whose answers are not all
	// relayed yet, in order (recMu: the session appends, the pump
	// completes). sent counts the ReadyForQuery messages the client will
	// get from here (session goroutine only); zSeen those relayed (pump).
	recMu sync.Mutex
	recs  []*queryRecord
	sent  int64
	zSeen int64
	// batchStart is the earliest start of the records answered since the
	// last ReadyForQuery (pump, under recMu).
	batchStart time.Time
	// parsedBatches: the named statements each batch sent here parsed, by
	// the ReadyForQuery that ends it (under recMu); a batch answered with
	// no ErrorResponse (answerErr, pump) confirms them: the server has
	// them, so a Parse of the same name again must fail (42P05).
	parsedBatches []parsedBatch
	parsing       atomic.Bool // parsedBatches is not empty (read without recMu)
	answerErr     bool

	// hold says who may use the connection; see the hold* constants. Under
	// transaction pooling the pump gives the connection back to the pool at
	// a ReadyForQuery that leaves it idle, unless the session is using it.
	hold atomic.Int32

	// errs counts the ErrorResponses relayed to the client, rollbacks the
	// transactions that ended rolled back (see tentative).
	errs      atomic.Int64
	rollbacks atomic.Int64
	// errsMark and rollbacksMark are errs and rollbacks just before the
	// session sent its latest statement (session goroutine only).
	errsMark, rollbacksMark int64
	// syncFailed: a statement pgsplit sent to replay settings failed, so
	// the connection's record of its settings cannot be trusted.
	syncFailed atomic.Bool

	// failed is set by the pump at every ErrorResponse: a statement
	// prepared since the last check may not exist (see settleStatements).
	failed atomic.Bool
	// unconfirmed lists the statements prepared on the connection whose
	// answers are not all in yet; used by whoever holds the connection
	// (the session while claimed, the pump while deciding to release).
	unconfirmed []string
}

// States of upstream.watch.
const (
	watchOff int32 = iota
	watchWaiting
	watchAbandoned
)

// States of upstream.hold. The session goroutine claims its connections
// (holdFree → holdSending) while it handles a client message and frees them
// afterwards; the pump, or the session itself when it frees one, may give an
// idle one back (holdFree → holdReleased). holdDeciding is the pump's short
// look at whether it may.
const (
	holdFree int32 = iota
	holdSending
	holdDeciding
	holdReleased
)

// errReleased ends a pump whose connection went back to the pool.
var errReleased = errors.New("connection returned to the pool")

func newUpstream(t router.Target, c *pool.Conn, p *pool.Pool, ep endpoint) *upstream {
	u := &upstream{target: t, conn: c, pool: p, ep: ep, exited: make(chan struct{}), verdict: make(chan bool, 1)}
	u.txStatus.Store(pgmsg.TxIdle)
	u.hold.Store(holdSending) // acquired by the session goroutine, which uses it now
	return u
}

// markSend notes the error and rollback counts before a client statement is
// written (see tentative).
func (u *upstream) markSend() { u.errsMark, u.rollbacksMark = u.errs.Load(), u.rollbacks.Load() }

// owesAnswers reports whether a statement or batch is still running here.
func (u *upstream) owesAnswers() bool { return u.pending.Load() > 0 || u.unsynced.Load() }

// quietIdle reports whether the connection is idle between transactions:
// nothing owed, nothing injected pending, no transaction open.
func (u *upstream) quietIdle() bool {
	return u.quiet() && byte(u.txStatus.Load()) == pgmsg.TxIdle && u.watch.Load() == watchOff
}

// quiet reports that u owes nothing: no answer to the client's messages,
// none to pgsplit's own statements.
func (u *upstream) quiet() bool { return !u.owesAnswers() && u.dropZ.Load() == 0 }

// tryRelease is the pump's decision, at a ReadyForQuery, to give the
// connection back to the pool: only under transaction pooling, when the
// session is not using the connection and nothing pins it.
func (s *session) tryRelease(u *upstream) bool {
	if !s.pooling.Load() || !u.quietIdle() || !u.hold.CompareAndSwap(holdFree, holdDeciding) {
		return false
	}
	// The session stored pooling before it freed the connection, so this
	// look is current.
	if s.giveBack(u) {
		return true
	}
	u.hold.Store(holdFree)
	return false
}

// giveBack marks u released, its statements settled, if the session may
// pool now and u is quiet and idle; the caller holds u (sending or
// deciding). It reports whether it did.
func (s *session) giveBack(u *upstream) bool {
	if !s.pooling.Load() || !u.quietIdle() {
		return false
	}
	u.settleStatements()
	u.hold.Store(holdReleased)
	return true
}

// pump relays the server's messages to the client until the server
// connection fails or the session stops it with a read deadline. zSignal
// is nudged after every ReadyForQuery so the session can wait for a quiet
// connection before switching servers.
func (s *session) pump(u *upstream, zSignal chan<- struct{}) error {
	var held []byte       // acknowledgements held back by the safety net (see acknowledges)
	var lastRollback bool // since the last ReadyForQuery, the last COMMIT or ROLLBACK tag was ROLLBACK
	for {
		typ, n, err := u.conn.R.Next()
		if k := s.srv.knobs.OnServerMessage; k != nil && err == nil {
			k(typ, n)
		}
		if err != nil && !u.stopping.Load() {
			if lostWatched(u) {
				return fmt.Errorf("relay server→client: read: %w", err)
			}
			if u.quietIdle() && !isTimeout(err) && s.replaceable(u) {
				return s.idleEnded(u, fmt.Errorf("relay server→client: read: %w", err))
			}
			// The session may have sent a watched read between the two
			// looks above (quietIdle is false once the watch is set).
			if lostWatched(u) {
				return fmt.Errorf("relay server→client: read: %w", err)
			}
		}
		if err != nil {
			if u.hold.Load() == holdReleased && isTimeout(err) && !u.conn.R.Broken() {
				// The session gave the idle connection back and woke us.
				_ = u.conn.Raw().SetReadDeadline(time.Time{})
				return errReleased
			}
			return fmt.Errorf("relay server→client: read: %w", err)
		}
		if typ == pgmsg.ErrorResponse && u.quietIdle() && s.replaceable(u) {
			// An error while nothing is owed is the server ending the
			// session (shutdown, crash, terminate): not the client's.
			b, err := u.conn.R.Body()
			if err != nil {
				return fmt.Errorf("relay server→client: read: %w", err)
			}
			return s.idleEnded(u, fmt.Errorf("relay server→client: the server ended the idle connection (%s)", errorCode(b)))
		}
		if u.dropZ.Load() > 0 && typ != pgmsg.NotificationResponse {
			// An answer to a statement pgsplit injected: consume it.
			switch typ {
			case pgmsg.ReadyForQuery:
				u.dropZ.Add(-1)
				u.pending.Add(-1)
				b, err := u.conn.R.Body()
				if err != nil {
					return fmt.Errorf("relay server→client: read: %w", err)
				}
				if len(b) == 1 {
					u.txStatus.Store(uint32(b[0]))
				}
				nudge(zSignal)
				if s.tryRelease(u) {
					return errReleased
				}
			case pgmsg.ErrorResponse:
				u.failed.Store(true)
				if takeOne(&u.expectErr) {
					break
				}
				u.syncFailed.Store(true)
				// A statement pgsplit sent for the client failed (a SET
				// replayed, a statement prepared again): say so.
				if b, err := u.conn.R.Body(); err == nil {
					var e pgproto3.ErrorResponse
					if e.Decode(b) == nil {
						// The message may quote the value of a SET: only
						// with log.redact off.
						fields := []zap.Field{zap.Stringer("role", u.target), zap.String("sqlstate", e.Code)}
						if !s.srv.cfg.Load().Log.Redact {
							fields = append(fields, zap.String("message", e.Message))
						}
						s.log.Warn("a statement pgsplit sent on the client's behalf failed", fields...)
					}
				}
			}
			continue
		}
		if (typ == pgmsg.ParseComplete && takeOne(&u.dropParse)) || (typ == pgmsg.CloseComplete && takeOne(&u.dropClose)) {
			continue // answers to statements pgsplit prepared itself
		}
		if u.watch.Load() != watchOff && typ != pgmsg.NotificationResponse && typ != pgmsg.NoticeResponse && typ != pgmsg.ParameterStatus {
			// The first answer to a watched statement: what only
			// acknowledges the batch's messages (ParseComplete,
			// BindComplete, RowDescription…, no row yet) is held back
			// until what follows shows whether the statement ran, so
			// that a refusal or a replica going away still leaves
			// nothing relayed: a backend that dies mid-read flushes what
			// it had buffered (a BindComplete, say) before it goes.
			b, err := u.conn.R.Body()
			if err != nil {
				return fmt.Errorf("relay server→client: read: %w", err)
			}
			if acknowledges(typ) && (len(held) == 0 || len(held)+len(b) <= maxHeld) {
				var start int
				held, start = pgmsg.Begin(held, typ)
				held = pgmsg.Finish(append(held, b...), start)
				continue
			}
			code := ""
			if typ == pgmsg.ErrorResponse {
				code = errorCode(b)
				if serverGoingAway(code) && u.watch.CompareAndSwap(watchWaiting, watchOff) {
					// The replica is shutting down or crashed before
					// answering: the session runs the read elsewhere
					// (rerun: the client is not told the connection
					// was lost).
					u.rerun.Store(true)
					u.lost.Store(true)
					u.verdict <- true
					return fmt.Errorf("relay server→client: the server ended the connection (%s)", code)
				}
				u.failed.Store(true)
				u.errs.Add(1) // counted even if retried: harmless (see tentative)
			}
			retry := typ == pgmsg.ErrorResponse && code == pgmsg.CodeReadOnlyTransaction
			if u.watch.CompareAndSwap(watchWaiting, watchOff) {
				u.verdict <- retry
				if retry {
					held = nil
					u.dropZ.Add(1) // drop the rest of this answer, up to its ReadyForQuery
					continue
				}
			}
			u.watch.Store(watchOff)
			w := s.out.relay()
			_, err = w.Write(held)
			if err == nil {
				err = u.conn.R.WriteBodyAfterHeader(w, b)
			}
			held = nil
			if ferr := s.out.done(err == nil && u.conn.R.Buffered() == 0); err == nil {
				err = ferr
			}
			if err != nil {
				return fmt.Errorf("relay server→client: %w", &clientWriteError{err})
			}
			if pgmsg.Ends(typ) {
				s.noteAnswer(u, typ, b)
			}
			if typ == pgmsg.ReadyForQuery && len(b) == 1 {
				// Not expected first, but keep the books right.
				s.readyForQuery(u, b[0])
				nudge(zSignal)
			}
			continue
		}
		if typ == pgmsg.ErrorResponse {
			u.failed.Store(true)
			u.errs.Add(1)
		}
		w := s.out.relay()
		var status byte
		var body []byte // of C, E and Z, for the query log
		if typ == pgmsg.CommandComplete || typ == pgmsg.ErrorResponse {
			if body, err = u.conn.R.Body(); err == nil {
				b := body
				// ROLLBACK, ROLLBACK TO SAVEPOINT, and COMMIT of a failed
				// transaction all answer "ROLLBACK"; it counts when the
				// ReadyForQuery that follows says I (no transaction) and
				// no COMMIT came after it.
				switch string(b) {
				case "ROLLBACK\x00":
					lastRollback = true
				case "COMMIT\x00":
					lastRollback = false
				}
				if werr := u.conn.R.WriteBodyAfterHeader(w, b); werr != nil {
					err = &clientWriteError{werr}
				}
			}
		} else if typ == pgmsg.ReadyForQuery {
			var b []byte
			b, err = u.conn.R.Body()
			body = b
			if err == nil && len(b) != 1 {
				err = fmt.Errorf("ReadyForQuery with %d bytes", len(b))
			}
			if err == nil {
				status = b[0]
				if status == pgmsg.TxIdle && lastRollback {
					u.rollbacks.Add(1)
				}
				// Before the client can see the commit: register it
				// for read-your-writes.
				s.noteCommit(u, status, lastRollback)
				lastRollback = false
				// And the statements its batch prepared, before the
				// client can Parse their names again.
				if u.parsing.Load() { // no lock per ReadyForQuery otherwise
					u.recMu.Lock()
					u.confirmParsed(u.zSeen + 1)
					u.recMu.Unlock()
				}
				s.readyForQuery(u, status)
				if werr := u.conn.R.WriteBodyAfterHeader(w, b); werr != nil {
					err = &clientWriteError{werr}
				}
			}
		} else if err = u.conn.R.Forward(w); err != nil && !errors.Is(err, wire.ErrBroken) {
			err = &clientWriteError{err} // Forward wraps read failures in ErrBroken
		}
		// Flush when nothing more of the answer is buffered, and at the
		// ReadyForQuery that ends all the client is owed even if the
		// server sent more (a dying backend's FATAL right behind it): the
		// connection may go back to the pool next, and nothing would
		// flush what is buffered for the client.
		flush := err == nil && (u.conn.R.Buffered() == 0 || (typ == pgmsg.ReadyForQuery && u.pending.Load() == 0))
		if werr := s.out.done(flush); werr != nil {
			err = &clientWriteError{werr}
		}
		if err != nil {
			return fmt.Errorf("relay server→client: %w", err)
		}
		if pgmsg.Ends(typ) {
			s.noteAnswer(u, typ, body)
		}
		if typ == pgmsg.ReadyForQuery {
			nudge(zSignal)
			if status == pgmsg.TxIdle && s.draining.Load() && s.idle() {
				s.out.fatal(pgmsg.Fatal(pgmsg.CodeAdminShutdown, "terminating connection due to administrator command: pgsplit is shutting down"))
			}
			if s.tryRelease(u) {
				return errReleased
			}
		}
	}
}

// maxHeld bounds what the safety net holds back of a watched answer (see
// acknowledges) beyond its first message: past it, the watch ends and the
// answer is relayed.
const maxHeld = 64 << 10

// acknowledges reports the answers that only acknowledge a batch's
// messages, which the safety net holds back: ParseComplete, BindComplete,
// CloseComplete, ParameterDescription, RowDescription, NoData. Anything
// else (a row, a command tag, an error, ReadyForQuery…) shows the
// statement ran or failed.
func acknowledges(typ byte) bool {
	switch typ {
	case pgmsg.ParseComplete, pgmsg.BindComplete, pgmsg.CloseComplete, pgmsg.ParameterDescription, pgmsg.RowDescription, pgmsg.NoData:
		return true
	}
	return false
}

// readyForQuery books a ReadyForQuery from u that goes to the client.
func (s *session) readyForQuery(u *upstream, status byte) {
	u.txStatus.Store(uint32(status))
	s.txStatus.Store(uint32(status))
	s.readyAt.Store(time.Now().UnixNano())

	u.pending.Add(-1)
	// A batch is over: any Parse/Close answers still expected were
	// skipped by an error.
	u.dropParse.Store(0)
	u.dropClose.Store(0)
}

// lostWatched reports, on a failed read, whether u was watched for its
// first answer (see upstream.watch): nothing reached the client, so the
// session runs the read again elsewhere. It sets the watch off, marks u
// lost and re-run, and hands the session its verdict.
func lostWatched(u *upstream) bool {
	if !u.watch.CompareAndSwap(watchWaiting, watchOff) {
		return false
	}
	u.rerun.Store(true)
	u.lost.Store(true)
	u.verdict <- true
	return true
}

// idleEnded ends the pump of a connection whose server ended it while it
// owed the client nothing. If the session is not using it, it goes as a
// release would (startPump discards it, claim forgets it); if the session
// holds it, it is marked lost: a watched read sent meanwhile runs again
// elsewhere (awaitVerdict), anything else sent meanwhile gets 08006
// (startPump, settle), and claim discards it.
func (s *session) idleEnded(u *upstream, why error) error {
	if u.hold.CompareAndSwap(holdFree, holdDeciding) {
		u.hold.Store(holdReleased)
	} else {
		u.lost.Store(true)
	}
	return why
}

// lostOwing reports whether u's server went away after the session sent
// it something that is not re-run elsewhere: the client must be told.
func (u *upstream) lostOwing() bool {
	return u.lost.Load() && !u.rerun.Load() && u.owesAnswers() && u.watch.Load() != watchWaiting
}

// replaceable reports whether u, idle, can be replaced by another
// connection without the client losing anything: a replica connection
// (pins keep session state on the primary), or any under transaction
// pooling with nothing pinned. Otherwise (session mode, a pinned client)
// the client is told the connection was lost, as with one server.
func (s *session) replaceable(u *upstream) bool {
	return u.target == router.Replica || s.pooling.Load()
}

// isTimeout reports a read deadline (the session waking the pump).
func isTimeout(err error) bool {
	// errors.Is, unlike errors.As with an interface, costs no reflection:
	// a pump ends this way once per transaction under transaction pooling.
	return errors.Is(err, os.ErrDeadlineExceeded)
}

// serverGoingAway reports the SQLSTATEs of a server that ends every
// session: shutdown, crash of another backend, not accepting connections.
func serverGoingAway(code string) bool {
	return code == "57P01" || code == "57P02" || code == "57P03"
}

// errorCode returns the SQLSTATE field of an ErrorResponse body.
func errorCode(b []byte) string {
	for len(b) > 0 && b[0] != 0 {
		field := b[0]
		end := bytes.IndexByte(b[1:], 0)
		if end < 0 {
			return ""
		}
		if field == 'C' { // the SQLSTATE field
			return string(b[1 : 1+end])
		}
		b = b[2+end:]
	}
	return ""
}

func takeOne(c *atomic.Int32) bool {
	for {
		n := c.Load()
		if n <= 0 {
			return false
		}
		if c.CompareAndSwap(n, n-1) {
			return true
		}
	}
}

func nudge(c chan<- struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

// clientWriteError marks a relay failure on the client's side: the server
// connection is fine but may still be busy sending results.
type clientWriteError struct{ err error }

func (e *clientWriteError) Error() string { return "write to client: " + e.err.Error() }
func (e *clientWriteError) Unwrap() error { return e.err }

// startPump runs the pump for u on a goroutine of its own (one of
// Server.pumps, reused across pumps); its result is u.err once u.exited is
// closed. A pump that ends on its own closes the client connection, since
// the session cannot go on without that server.
func (s *session) startPump(u *upstream) {
	s.srv.pumps.run(func() {
		err := s.runPump(u)
		var ie *internalError
		if !errors.Is(err, errReleased) && !errors.As(err, &ie) {
			// The pump flushes the client's output only when it has
			// consumed everything read from the server (more of the answer
			// may follow) or at the ReadyForQuery that ends what is owed.
			// After a read failure nothing follows: what was relayed so
			// far must not stay in cw while the client waits for it.
			s.out.flush()
		}
		var cwe *clientWriteError
		switch {
		case ie != nil:
			s.fatalAfterPanic()
		case errors.Is(err, errReleased):
			if !s.resetReleased(u) {
				s.upMu.Lock()
				u.pool.Discard(u.conn)
				s.upMu.Unlock()
				break
			}
			// Under upMu: a cancel request being forwarded to this
			// connection is delivered before anyone else can use it.
			s.upMu.Lock()
			u.pool.Release(u.conn)
			s.upMu.Unlock()
		case u.hold.Load() == holdReleased:
			// The session gave the connection up (it owed nothing) but the
			// pump failed before it could hand it back: writing the last
			// answer to a client that left, or a server that closed. The
			// session has nothing running here, so only the connection is
			// lost; the session learns of a gone client on its own.
			s.upMu.Lock()
			u.pool.Discard(u.conn)
			s.upMu.Unlock()
			s.log.Info("pooled connection closed after a failure", zap.Stringer("role", u.target), zap.Error(err))
		case u.stopping.Load():
		case u.lost.Load():
			// The session discards the connection when it next looks
			// (claim, rerunElsewhere, release).
			s.log.Info("server connection lost while it owed nothing, or before its answer", zap.Stringer("role", u.target), zap.String("server", u.conn.Addr), zap.Error(err))
			if u.lostOwing() {
				s.out.fatal(pgmsg.Fatal(pgmsg.CodeConnectionFailure, "pgsplit lost the connection to the server"))
			}
		case errors.As(err, &cwe):
			s.out.fatal(pgmsg.Fatal(pgmsg.CodeConnectionFailure, "pgsplit could not write to the client"))
		default:
			s.log.Info("upstream connection lost", zap.Stringer("role", u.target), zap.String("server", u.conn.Addr), zap.Error(err))
			s.out.fatal(pgmsg.Fatal(pgmsg.CodeConnectionFailure, "pgsplit lost the connection to the server"))
		}
		u.err = err
		close(u.exited)
	})
}

// resetReleased resets a connection the pump is giving back, when it must
// be: DISCARD ALL after a session let go of the state that pinned it, the
// reset after user code (pool.Conn.SoftReset) after a function, DO or
// CALL. It reports false, having logged why, when the reset failed and the
// connection must be closed instead.
func (s *session) resetReleased(u *upstream) bool {
	var reset func(context.Context) error
	var what string
	switch {
	case u.resetOnRelease.Load():
		reset = func(ctx context.Context) error { return u.conn.Reset(ctx, pgmsg.TxIdle) }
		what = "reset of a formerly pinned connection failed; closing it"
	case u.userCode.Load():
		reset, what = u.conn.SoftReset, "reset after a function, DO or CALL failed; closing the connection"
	default:
		return true
	}
	ctx, cancel := context.WithTimeout(context.Background(), cleanupTimeout)
	defer cancel()
	if err := reset(ctx); err != nil {
		s.log.Info(what, zap.Error(err))
		return false
	}
	return true
}

// release stops u's pump and gives the connection back: reset and reused
// when it is quiet, cancelled and closed when it was still working (the
// client left mid-statement), closed when it failed. It returns a word for
// the log.
func (s *session) release(u *upstream) string {
	select {
	case <-u.exited:
		err := u.err
		var cwe *clientWriteError
		if errors.As(err, &cwe) {
			// The client stopped reading while the server was sending.
			s.cancelUpstream(u.conn)
			s.discard(u)
			return "cancelled and closed (client stopped reading)"
		}
		s.discard(u)
		return "closed: " + err.Error()
	default:
	}
	if !u.quiet() {
		s.cancelUpstream(u.conn)
		u.stopping.Store(true)
		_ = u.conn.Raw().Close()
		<-u.exited
		s.discard(u)
		return "cancelled and closed: client left mid-statement"
	}
	u.stopping.Store(true)
	_ = u.conn.Raw().SetReadDeadline(time.Now())
	<-u.exited
	err := u.err
	_ = u.conn.Raw().SetReadDeadline(time.Time{})
	if !isTimeout(err) || u.conn.R.Broken() {
		s.discard(u)
		return "closed: " + err.Error()
	}
	ctx, cancel := context.WithTimeout(context.Background(), cleanupTimeout)
	defer cancel()
	if s.txPooling && !u.resetOnRelease.Load() && !s.pinnedToConns() {
		// Nothing pinned: the settings and statements stay on the
		// connection, recorded in its State for the next client.
		if err := u.conn.Rollback(ctx, byte(u.txStatus.Load())); err != nil {
			s.log.Info("upstream rollback failed; closing the connection", zap.Error(err))
			s.discard(u)
			return "closed: rollback failed"
		}
		if !s.resetReleased(u) { // the reset after functions, when one ran
			s.discard(u)
			return "closed: reset failed"
		}
		u.settleStatements()
		s.forgetUpstream(u)
		u.pool.Release(u.conn)
		return "returned to the pool"
	}
	if err := u.conn.Reset(ctx, byte(u.txStatus.Load())); err != nil {
		s.log.Info("upstream reset failed; closing the connection", zap.Error(err))
		s.discard(u)
		return "closed: reset failed"
	}
	s.forgetUpstream(u)
	u.pool.Release(u.conn)
	return "reset and returned to the pool"
}

func (s *session) discard(u *upstream) {
	s.forgetUpstream(u)
	u.pool.Discard(u.conn)
}

// forgetUpstream unregisters u under upMu, so a cancel in flight finishes
// before the connection can serve anyone else.
func (s *session) forgetUpstream(u *upstream) {
	s.upMu.Lock()
	if s.ups[u.target] == u {
		s.ups[u.target] = nil
	}
	s.upMu.Unlock()
}

// cancelUpstream sends a cancel for whatever c is running, bounded by
// cleanupTimeout.
func (s *session) cancelUpstream(c *pool.Conn) {
	ctx, cancel := context.WithTimeout(context.Background(), cleanupTimeout)
	defer cancel()
	if err := c.Cancel(ctx); err != nil {
		s.log.Warn("cancel failed", zap.Error(err))
	}
}
