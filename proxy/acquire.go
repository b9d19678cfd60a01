package proxy

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"go.uber.org/zap"

	"github.com/pgsplit/pgsplit/config"
	"github.com/pgsplit/pgsplit/internal/pgmsg"
	"github.com/pgsplit/pgsplit/pool"
	"github.com/pgsplit/pgsplit/router"
)

// acquire attaches a server connection for target to the session and
// applies the client's startup settings on it. It does not start the pump.
// Errors are *pgmsg.Error for the client.
func (s *session) acquire(t router.Target) (*upstream, error) {
	cfg := s.srv.cfg.Load()
	w := &waitLimit{d: cfg.Pool.PoolTimeout + cfg.Pool.ConnectTimeout}
	defer w.done()
	if t == router.Primary {
		return s.acquirePrimary(w)
	}
	p, srv := s.srv.poolFor(t, s.user, s.database, s.readFloor)
	if p == nil {
		return nil, pgmsg.Err(pgmsg.CodeCannotConnectNow, "no server available for reads: no replica in rotation and no primary known")
	}
	if cfg.Routing.ReadFrom == config.ReadFromReplicasOnly && srv == s.srv.currentPrimary() {
		return nil, pgmsg.Err(pgmsg.CodeCannotConnectNow, "no replica available within the lag limits (routing.read_from: replicas_only)")
	}
	c, err := s.checkout(w, p)
	if err != nil {
		return nil, s.acquireError(t, srv, err)
	}
	u := newUpstream(t, c, p, endpointOf(srv))
	s.upMu.Lock()
	s.ups[t] = u
	s.upMu.Unlock()
	return u, nil
}

// acquireForLogin attaches the connection a login checks the startup
// parameters on and reports ParameterStatus from: the primary's, or, when
// no primary is known or its connection fails, a replica's, so clients can
// log in and read during a failover. Its errors are FATAL for the login.
func (s *session) acquireForLogin() (*upstream, error) {
	if srv := s.srv.currentPrimary(); srv.Host != "" {
		cfg := s.srv.cfg.Load()
		w := &waitLimit{d: cfg.Pool.PoolTimeout + cfg.Pool.ConnectTimeout}
		defer w.done()
		u, err := s.attachPrimary(w, srv)
		if err == nil {
			return u, nil
		}
		var te *pool.TimeoutError
		var se *pgconn.PgError
		if errors.As(err, &te) || (errors.As(err, &se) && err != errStandby) || !s.srv.readsOffloaded() {
			return nil, s.acquireError(router.Primary, srv, err)
		}
		s.log.Warn("primary connection failed at login; logging in on a replica", zap.String("server", srv.Addr()), zap.Error(err))
		s.srv.nodes.ProbeNow()
	} else if !s.srv.readsOffloaded() {
		return nil, pgmsg.Fatal(pgmsg.CodeCannotConnectNow, "no primary available, and reads are not offloaded (routing.read_from: primary)")
	}
	return s.acquire(router.Replica)
}

// waitLimit bounds the waits of one checkout (pool_timeout +
// connect_timeout); its context is made only when a wait is needed, so an
// idle connection is taken without one.
type waitLimit struct {
	d      time.Duration
	ctx    context.Context
	cancel context.CancelFunc
}

func (w *waitLimit) context() context.Context {
	if w.ctx == nil {
		w.ctx, w.cancel = context.WithTimeout(context.Background(), w.d)
	}
	return w.ctx
}

func (w *waitLimit) done() {
	if w.cancel != nil {
		w.cancel()
	}
}

// checkout takes a connection from p, waiting (and counting the wait) if
// none is idle.
func (s *session) checkout(w *waitLimit, p *pool.Pool) (*pool.Conn, error) {
	if c := p.TryAcquire(); c != nil {
		return c, nil
	}
	began := time.Now()
	s.waitingFrom.Store(began.UnixNano())
	c, err := p.Acquire(w.context())
	s.waitingFrom.Store(0)
	s.waited += time.Since(began)
	return c, err
}

// acquirePrimary attaches a connection to the primary: the server the
// health checks say takes writes, never one in recovery. While none is
// known, or its connection fails, it waits (up to pool_timeout) for the
// checks, which a failure starts at once, to find one; then 57P03.
func (s *session) acquirePrimary(w *waitLimit) (*upstream, error) {
	var failed config.Server
	for {
		srv := s.srv.currentPrimary()
		if srv.Host == "" || srv == failed { // only then make the wait's context
			var err error
			if srv, err = s.srv.nodes.AwaitPrimary(w.context(), failed); err != nil {
				return nil, err
			}
		}
		u, err := s.attachPrimary(w, srv)
		if err == nil {
			return u, nil
		}
		var te *pool.TimeoutError
		var se *pgconn.PgError
		if errors.As(err, &te) || (errors.As(err, &se) && err != errStandby) {
			return nil, s.acquireError(router.Primary, srv, err)
		}
		// Down, or not a primary: check every server now and wait for
		// the verdict.
		s.log.Warn("primary connection failed; checking every server", zap.String("server", srv.Addr()), zap.Error(err))
		s.srv.nodes.ProbeNow()
		failed = srv
	}
}

// attachPrimary checks out a connection to srv, the primary as the health
// checks last saw it, and attaches it to the session; a connection that
// reports in_hot_standby = on is discarded (errStandby): promotion cannot be
// undone without a restart, so the checks have not caught up yet.
func (s *session) attachPrimary(w *waitLimit, srv config.Server) (*upstream, error) {
	p := s.srv.poolForServer(srv, s.user, s.database)
	c, err := s.checkout(w, p)
	if err != nil {
		return nil, err
	}
	if c.Params["in_hot_standby"] == "on" {
		p.Discard(c)
		s.log.Error("a connection to the primary reports in_hot_standby = on (a standby): not used for writes", zap.String("server", srv.Addr()))
		return nil, errStandby
	}
	u := newUpstream(router.Primary, c, p, endpointOf(srv))
	s.upMu.Lock()
	s.ups[router.Primary] = u
	s.upMu.Unlock()
	return u, nil
}

// errStandby: the server pgsplit took for the primary is in recovery.
var errStandby = errors.New("the server is in recovery (a standby)")

// acquireError is the client's error for a failed checkout from srv.
func (s *session) acquireError(t router.Target, srv config.Server, err error) error {
	var te *pool.TimeoutError
	timedOut := errors.As(err, &te)
	// A secret that cannot log in is the user's problem: the replica stays
	// in rotation for everyone else.
	if t == router.Replica && !timedOut && !pool.IsLoginRefusal(err) {
		s.srv.markDown(srv)
	}
	var se *pgconn.PgError
	switch {
	case timedOut:
		// An ERROR: under transaction pooling the session goes on
		// (switchTo makes it FATAL where it cannot).
		return pgmsg.Err(pgmsg.CodeTooManyConnections, te.Error())
	case errors.As(err, &se):
		return &pgmsg.Error{Severity: pgmsg.SeverityFatal, Code: se.Code, Message: se.Message, Detail: se.Detail}
	}
	return pgmsg.Fatal(pgmsg.CodeCannotConnect, fmt.Sprintf("pgsplit could not connect to server %s: %v", srv.Addr(), err))
}

// applyStartup applies the client's startup parameters on its first server
// connection and waits for the answer, so a bad one fails the login with
// the server's own error.
func (s *session) applyStartup(u *upstream) error {
	stmts := s.state.diff(u.conn.State.Settings)
	if len(stmts) == 0 {
		return nil
	}
	q := strings.Join(stmts, ";")
	ctx, cancel := context.WithTimeout(context.Background(), s.srv.cfg.Load().Pool.ConnectTimeout)
	defer cancel()
	if _, err := u.conn.Exec(ctx, q); err != nil {
		s.discard(u)
		if se, ok := pool.IsServerError(err); ok {
			return &pgmsg.Error{Severity: pgmsg.SeverityFatal, Code: se.Msg.Code, Message: se.Msg.Message, Detail: se.Msg.Detail}
		}
		return pgmsg.Fatal(pgmsg.CodeConnectionFailure, "pgsplit: applying startup parameters: "+err.Error())
	}
	return nil
}
