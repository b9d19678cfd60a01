package proxy

import (
	"context"
	"errors"
	"time"

	"go.uber.org/zap"

	"github.com/pgsplit/pgsplit/internal/pgmsg"
	"github.com/pgsplit/pgsplit/pool"
)

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
