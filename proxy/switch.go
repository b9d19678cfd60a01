package proxy

import (
	"errors"
	"time"

	"go.uber.org/zap"

	"github.com/pgsplit/pgsplit/config"
	"github.com/pgsplit/pgsplit/internal/pgmsg"
	"github.com/pgsplit/pgsplit/router"
)

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
