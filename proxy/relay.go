package proxy

import (
	"context"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/pgsplit/pgsplit/internal/wire"
	"github.com/pgsplit/pgsplit/pool"
	"go.uber.org/zap"
)

// relayClient forwards the client's messages to the server until the client
// leaves or the session is closed, and says why it stopped.
func (s *session) relayClient(up *pool.Conn) string {
	for {
		typ, _, err := s.cr.Next()
		if err != nil {
			var fe *wire.FrameError
			if errors.As(err, &fe) {
				s.sendFatal(fatal(codeProtocolViolation, fe.Error()))
				return "protocol violation: " + fe.Error()
			}
			return "client connection closed"
		}
		switch typ {
		case 'X':
			return "client terminated"
		case 'Q', 'F':
			s.pending.Add(1)
		case 'S':
			s.pending.Add(1)
			s.unsynced.Store(false)
		case 'P', 'B', 'E', 'D', 'C', 'H':
			s.unsynced.Store(true)
		}
		if err := s.cr.Forward(up.W); err != nil {
			return "relay client→server: " + err.Error()
		}
		if s.cr.Buffered() == 0 {
			if err := up.W.Flush(); err != nil {
				return "relay client→server: " + err.Error()
			}
		}
	}
}

// pumpServer forwards the server's messages to the client until the server
// connection fails or serve stops it with a read deadline.
func (s *session) pumpServer(up *pool.Conn) error {
	for {
		typ, _, err := up.R.Next()
		if err != nil {
			return fmt.Errorf("relay server→client: read: %w", err)
		}
		s.wmu.Lock()
		var status byte
		if typ == 'Z' {
			var b []byte
			b, err = up.R.Body()
			if err == nil && len(b) != 1 {
				err = fmt.Errorf("ReadyForQuery with %d bytes", len(b))
			}
			if err == nil {
				status = b[0]
				s.txStatus.Store(uint32(status))
				s.pending.Add(-1)
				if werr := up.R.WriteBodyAfterHeader(s.cw, b); werr != nil {
					err = &clientWriteError{werr}
				}
			}
		} else if err = up.R.Forward(s.cw); err != nil && !errors.Is(err, wire.ErrBroken) {
			err = &clientWriteError{err} // Forward wraps read failures in ErrBroken
		}
		if err == nil && up.R.Buffered() == 0 {
			if werr := s.cw.Flush(); werr != nil {
				err = &clientWriteError{werr}
			}
		}
		s.wmu.Unlock()
		if err != nil {
			return fmt.Errorf("relay server→client: %w", err)
		}
		if status == 'I' && s.draining.Load() && s.idle() {
			s.sendFatal(fatal(codeAdminShutdown, "terminating connection due to administrator command: pgsplit is shutting down"))
		}
	}
}

// clientWriteError marks a relay failure on the client's side: the server
// connection is fine but may still be busy sending results.
type clientWriteError struct{ err error }

func (e *clientWriteError) Error() string { return "write to client: " + e.err.Error() }
func (e *clientWriteError) Unwrap() error { return e.err }

// idle reports whether the client has no statement running and no
// transaction open.
func (s *session) idle() bool {
	return s.pending.Load() <= 0 && !s.unsynced.Load() && byte(s.txStatus.Load()) == 'I'
}

// sendFatal writes a FATAL error to the client and closes the connection,
// which ends serve's read loop.
func (s *session) sendFatal(e *pgError) {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	if s.closed {
		return
	}
	s.closed = true
	_ = s.conn.SetWriteDeadline(time.Now().Add(time.Second))
	_, _ = s.cw.Write(e.encode(nil))
	_ = s.cw.Flush()
	_ = s.conn.Close()
}

// finish returns or closes the upstream connection once the client is gone.
func (s *session) finish(up *pool.Conn, pumpErr chan error, reason string) {
	busy := !s.idle()
	select {
	case err := <-pumpErr:
		var cwe *clientWriteError
		if errors.As(err, &cwe) {
			// The client stopped reading while the server was sending:
			// the server may still be busy, so cancel before closing.
			s.cancelUpstream(up)
			s.log.Info("client disconnected", zap.String("reason", err.Error()), zap.String("upstream", "cancelled and closed"))
		} else {
			s.log.Info("client disconnected", zap.String("reason", "server connection ended: "+err.Error()))
		}
		s.detach(up, false)
		return
	default:
	}
	if busy {
		// The client left mid-statement or mid-transaction-step: stop the
		// server's work, and do not trust the connection's state.
		s.cancelUpstream(up)
		s.stopping.Store(true)
		_ = up.Raw().Close()
		<-pumpErr
		s.detach(up, false)
		s.log.Info("client disconnected", zap.String("reason", reason), zap.String("upstream", "cancelled and closed: client left mid-statement"))
		return
	}
	s.stopping.Store(true)
	_ = up.Raw().SetReadDeadline(time.Now())
	err := <-pumpErr
	_ = up.Raw().SetReadDeadline(time.Time{})
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() || up.R.Broken() {
		s.log.Info("client disconnected", zap.String("reason", reason), zap.String("upstream", "closed: "+err.Error()))
		s.detach(up, false)
		return
	}
	s.detach(up, true)
	s.log.Info("client disconnected", zap.String("reason", reason))
}

// detach gives the upstream connection back: reset and released when
// reuse is true and the reset works, closed otherwise.
func (s *session) detach(up *pool.Conn, reuse bool) {
	s.upMu.Lock()
	s.up = nil
	s.upMu.Unlock()
	p := s.pool
	if reuse {
		ctx, cancel := context.WithTimeout(context.Background(), cleanupTimeout)
		err := up.Reset(ctx, byte(s.txStatus.Load()))
		cancel()
		if err == nil {
			p.Release(up)
			return
		}
		s.log.Info("upstream reset failed; closing the connection", zap.Error(err))
	}
	p.Discard(up)
}

// cancelUpstream sends a cancel for whatever up is running, bounded by
// cleanupTimeout.
func (s *session) cancelUpstream(up *pool.Conn) {
	ctx, cancel := context.WithTimeout(context.Background(), cleanupTimeout)
	defer cancel()
	if err := up.Cancel(ctx); err != nil {
		s.log.Warn("cancel after client left failed", zap.Error(err))
	}
}
