package proxy

import (
	"errors"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/pgsplit/pgsplit/internal/pgmsg"

	"go.uber.org/zap"

	"github.com/pgsplit/pgsplit/pool"
	"github.com/pgsplit/pgsplit/router"
)

// This file is transaction pooling: a session holds a server connection only
// while it owes the client answers or a transaction is open there, and gives
// it back to the pool at the ReadyForQuery that leaves it idle ('I').
//
// The pump sees that ReadyForQuery, so the pump gives the connection back,
// unless the session goroutine is using the connection at that moment
// (upstream.hold): then the session gives it back when it is done with the
// message (settle). Session state that a server connection carries (SETs,
// prepared statements) lives on the pool.Conn and is brought in line with
// the next client's when that client gets it (syncSettings,
// injectStatements). State pgsplit cannot carry over pins the session to its
// connections (connPin).

// claim takes the session's server connections for the handling of one
// client message: none can be given back meanwhile. A connection its pump
// has given back already is forgotten; the next statement acquires one.
func (s *session) claim() {
	s.settleTentative()
	for _, u := range s.ups {
		if u == nil {
			continue
		}
		if u.lost.Load() && closed(u.exited) {
			// Its server went away (see idleEnded): close it; the next
			// statement takes another connection.
			s.discard(u)
			if s.active == u {
				s.active = nil
			}
			continue
		}
		for {
			if u.hold.CompareAndSwap(holdFree, holdSending) {
				u.settleStatements()
				break
			}
			h := u.hold.Load()
			if h == holdSending {
				break
			}
			if h == holdReleased {
				<-u.exited
				s.forgetUpstream(u)
				if s.active == u {
					s.active = nil
				}
				break
			}
			runtime.Gosched() // holdDeciding: the pump is looking
		}
	}
}

// settle ends the handling of a client message: it updates whether the
// session may give connections back, frees its connections for the pumps,
// and gives back those that are idle already (their ReadyForQuery came
// while the session held them).
func (s *session) settle() {
	s.pooling.Store(s.mayPool())
	for _, u := range s.ups {
		if u != nil && closed(u.exited) && u.lostOwing() {
			// Sent to a connection whose pump had ended (idleEnded).
			s.out.fatal(pgmsg.Fatal(pgmsg.CodeConnectionFailure, "pgsplit lost the connection to the server"))
		}
		if u == nil || u.hold.Load() != holdSending {
			continue
		}
		if s.giveBack(u) {
			// Wake the pump, blocked reading the idle connection: it
			// ends on the timeout and gives the connection back.
			_ = u.conn.Raw().SetReadDeadline(time.Now())
			continue
		}
		u.hold.Store(holdFree)
	}
}

// closed reports whether ch is closed.
func closed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// mayPool reports whether the session's idle connections may go back to the
// pool: under transaction pooling, outside an extended-protocol batch that
// streams, and with nothing pinning the session to its connections. (A
// connection inside a transaction, split or not, is not idle; a split
// transaction whose BEGIN is held back needs none yet.)
func (s *session) mayPool() bool {
	return s.txPooling && !s.batch.large && !s.skipSync && !s.pinnedToConns()
}

// pinnedToConns reports whether something pins the session to its server
// connections. A pinned session's connections are reset with DISCARD ALL
// (temporary tables, LISTEN, advisory locks…) when it leaves.
func (s *session) pinnedToConns() bool {
	if g := s.route.Generation(); g != s.pinGen {
		// Only when the pins changed: this runs after every message.
		s.pinGen = g
		s.updateConnPins()
	}
	return len(s.connPins) > 0
}

// updateConnPins recomputes which of the session's pins hold it to its
// connections, and logs the change.
func (s *session) updateConnPins() {
	var pins []string
	for _, p := range s.route.Pinned() {
		if connPin(p) {
			pins = append(pins, p)
		}
	}
	switch {
	case len(pins) == 0 && len(s.connPins) > 0:
		// The state that pinned the session was released, or so the
		// statements say: they may have failed or been rolled back. The
		// connections are reset before anyone else gets them (the
		// client's settings and statements are applied again where
		// needed).
		for _, u := range s.ups {
			if u != nil {
				u.resetOnRelease.Store(true)
			}
		}
		s.log.Info("client no longer pinned to its server connection")
	case len(pins) > 0 && !slices.Equal(pins, s.connPins):
		s.log.Info("client pinned to its server connection until it releases the state or leaves", zap.Strings("pinned_by", pins))
	}
	s.connPins = pins
	if len(pins) == 0 {
		s.pinnedBy.Store(nil)
	} else {
		joined := strings.Join(pins, ", ")
		s.pinnedBy.Store(&joined)
	}
}

// connPin reports whether a pin (router.Statement.Pins) holds the session
// to its connections: state that lives in one backend
// (router.BindsConnection), or a SET whose value pgsplit cannot replay.
func connPin(p string) bool {
	return router.BindsConnection(p) || strings.HasPrefix(p, pinUnreplayable)
}

// pinUnreplayable starts the pin of a SET whose value pgsplit cannot replay
// on another connection (SET … FROM CURRENT, an expression).
const pinUnreplayable = "session setting "

// PinnedClients counts the sessions pinned to their server connections now.
func (srv *Server) PinnedClients() int {
	n := 0
	for _, sess := range srv.snapshot() {
		if sess.ready.Load() && sess.txPooling && !sess.pooling.Load() {
			n++
		}
	}
	return n
}

// PoolStats is a snapshot of every pool's counts.
func (srv *Server) PoolStats() []pool.Stats {
	var out []pool.Stats
	for _, e := range srv.poolList() {
		out = append(out, e.pool.Stats())
	}
	return out
}

// answerError tells the client a statement failed in pgsplit itself (no
// server connection within pool_timeout) and keeps the session: ERROR, then
// ReadyForQuery once the client's batch is over.
func (s *session) answerError(pe *pgmsg.Error, typ byte) error {
	s.batch.reset()
	// Inside an extended-protocol batch: like a server, ignore the rest of
	// it until Sync, which gets the ReadyForQuery.
	s.skipSync = pgmsg.Step(typ) || typ == pgmsg.Flush
	return s.out.refuse(pe, !s.skipSync, byte(s.txStatus.Load()))
}

// skipToSync consumes a message of a batch that failed in pgsplit; the
// batch's Sync gets its ReadyForQuery.
func (s *session) skipToSync(typ byte) error {
	if _, err := s.cr.Body(); err != nil {
		return err
	}
	if typ != pgmsg.Sync {
		return nil
	}
	s.skipSync = false
	return s.out.answer(byte(s.txStatus.Load()))
}

// recoverable reports whether err is an ERROR the session survives.
func recoverable(err error) (*pgmsg.Error, bool) {
	if err == nil {
		return nil, false
	}
	var pe *pgmsg.Error
	if errors.As(err, &pe) && pe.Severity == pgmsg.SeverityError {
		return pe, true
	}
	return nil, false
}
