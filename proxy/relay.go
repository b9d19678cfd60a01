package proxy

import (
	"errors"
	"time"

	"github.com/pgsplit/pgsplit/internal/pgmsg"

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
		if s.handing.Load() && s.cr.Buffered() == 0 && s.moveOut() {
			return 0, errMoved
		}
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
		s.nudgeMu.Lock()
		s.inNext = true
		s.nudgeMu.Unlock()
		typ, _, err := s.cr.Next()
		s.nudgeMu.Lock()
		s.inNext = false
		nudged := s.nudged
		s.nudged = false
		s.nudgeMu.Unlock()
		if s.idleArmed || nudged {
			// The message's body is not the idle wait's (or the
			// handover's nudge) to bound.
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
		case (limit != "" || nudged) && isTimeout(err) && !s.cr.Broken():
			if limit == "" {
				continue // nudged: look at the handover again
			}
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
