package proxy

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"
	"go.uber.org/zap"

	"github.com/pgsplit/pgsplit/internal/pgmsg"
	"github.com/pgsplit/pgsplit/internal/wire"
	"github.com/pgsplit/pgsplit/router"
)

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
			// Idle first: quietIdle is false once the session set the
			// watch, so a watched read sent at any moment is seen by one
			// of the two looks (one sent after the first is handled by
			// idleEnded's lost mark, see awaitVerdict).
			if u.quietIdle() && !isTimeout(err) && s.replaceable(u) {
				return s.idleEnded(u, fmt.Errorf("relay server→client: read: %w", err))
			}
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
				if lsn, ok := s.noteCommit(u, status, lastRollback); ok {
					err = writeCommitLSN(w, lsn)
				}
				lastRollback = false
				// And the statements its batch prepared, before the
				// client can Parse their names again.
				if u.parsing.Load() { // no lock per ReadyForQuery otherwise
					u.recMu.Lock()
					u.confirmParsed(u.zSeen + 1)
					u.recMu.Unlock()
				}
				s.readyForQuery(u, status)
				if err != nil {
					err = &clientWriteError{err}
				} else if werr := u.conn.R.WriteBodyAfterHeader(w, b); werr != nil {
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
