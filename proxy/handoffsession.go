package proxy

import (
	"errors"
	"maps"
	"net"
	"syscall"
	"time"

	"go.uber.org/zap"

	"github.com/pgsplit/pgsplit/config"
	"github.com/pgsplit/pgsplit/internal/handoff"
	"github.com/pgsplit/pgsplit/internal/pgmsg"
	"github.com/pgsplit/pgsplit/internal/wire"
	"github.com/pgsplit/pgsplit/router"
)

// One session's part of an upgrade (see handoff.go): in the old process,
// askToMove, moveOut; in the new one, adoptSession.

// errMoved ends the old process's session of a client handed over.
var errMoved = errors.New("moved to the new pgsplit process")

// askToMove asks a session to move to the new process (the mover's
// goroutine) and wakes it if it waits for the client; false: it cannot
// move (TLS, admin console) or is not logged in yet.
func (s *session) askToMove() bool {
	if !s.ready.Load() {
		return true // logging in: asked again once ready
	}
	if s.admin != nil || s.tlsInfo != "" {
		return false
	}
	s.handing.Store(true)
	s.nudge()
	return true
}

// nudge wakes the session goroutine if it waits for a message header, so
// that it looks at the handover again; never during a message body.
func (s *session) nudge() {
	s.nudgeMu.Lock()
	if s.inNext && !s.nudged {
		s.nudged = true
		_ = s.conn.SetReadDeadline(time.Now())
	}
	s.nudgeMu.Unlock()
}

// moveOut hands the client to the new process, if it can move now: it is
// idle between transactions, nothing of its is buffered here, and it holds
// no server connection. The session goroutine calls it between messages;
// true: the client is the new process's, and this session ends.
func (s *session) moveOut() bool {
	l := s.srv.peer.Load()
	if l == nil || !s.srv.handingOver.Load() || s.draining.Load() || !s.movable() {
		return false
	}
	body, err := encodeMoved(s.movedState())
	if err != nil {
		s.log.Error("upgrade: could not describe the session; the client stays on this process", zap.Error(err))
		s.handing.Store(false)
		return false
	}
	sc, ok := s.conn.(countingConn).Conn.(syscall.Conn)
	if !ok {
		s.handing.Store(false)
		return false
	}
	raw, err := sc.SyscallConn()
	if err == nil {
		// The keys first: a login that finished after HandOver sent them
		// may have added this user's (verifier users, auth_query).
		err = s.srv.sendKeys(l)
	}
	if err == nil {
		var serr error
		err = raw.Control(func(fd uintptr) { serr = l.Send(handoff.Session, body, int(fd)) })
		if err == nil {
			err = serr
		}
	}
	if err != nil {
		if s.srv.peer.CompareAndSwap(l, nil) {
			s.log.Error("upgrade: handing a client over failed; clients not moved yet stay on this process", zap.Error(err))
		}
		_ = l.Close() // the new process ends its side, and Shutdown need not wait for it
		return false
	}
	return true
}

// movable reports whether the session can move now; it forgets the server
// connections its pumps gave back already (as claim does).
func (s *session) movable() bool {
	if s.admin != nil || s.tlsInfo != "" || !s.batch.empty() || s.skipSync || s.split != nil || s.roBegin != "" ||
		s.route.Pins() > 0 || byte(s.txStatus.Load()) != pgmsg.TxIdle {
		return false
	}
	for _, u := range s.ups {
		if u != nil && u.hold.Load() != holdReleased {
			return false
		}
	}
	for _, u := range s.ups {
		if u != nil {
			<-u.exited
			s.forgetUpstream(u)
			if s.active == u {
				s.active = nil
			}
		}
	}
	s.settleTentative()
	return !s.state.pending()
}

// adoptSession serves, in the new process, a client the old one handed
// over, from the state m it sent: the session is logged in and idle, as
// it was there, under this process's configuration.
func (srv *Server) adoptSession(c net.Conn, m *movedSession) {
	s := &session{srv: srv, connectedAt: m.ConnectedAt}
	s.conn = countingConn{Conn: c, s: s}
	copy(s.secret[:], m.Secret)
	srv.mu.Lock()
	s.pid = m.PID
	_, taken := srv.sessions[s.pid]
	if taken {
		// A client of this process has the key already (1 in 2^31): keep
		// the client's key, which its cancel requests cannot reach now.
		for taken {
			s.pid++
			_, taken = srv.sessions[s.pid]
		}
	}
	srv.sessions[s.pid] = s
	srv.mu.Unlock()

	s.appName = m.AppName
	s.log = srv.log.With(zap.String("client", c.RemoteAddr().String()), zap.String("user", m.User.Name),
		zap.String("database", m.Database), zap.String("application_name", m.AppName))
	if s.pid != m.PID {
		s.log.Warn("upgrade: the client's cancel key is taken in this process; its cancel requests are ignored")
	}
	s.txStatus.Store(pgmsg.TxIdle)
	s.zSignal = make(chan struct{}, 1)
	s.state, s.stmts = newClientState(), map[string]*clientStmt{}
	seat := srv.adoptSeat(c.RemoteAddr())
	cfg := srv.cfg.Load()
	s.limits = cfg.Limits
	s.br = wire.NewConnReader(s.conn, &srv.readBufs)
	s.cr = wire.NewReader(s.br, s.limits.MaxMessageSize)
	s.out = newClientWriter(s.conn, s.conn, &srv.writeBufs)

	u := m.User
	if cu, ok := srv.auth.Load().users[u.Name]; ok {
		u = cu // this process's configuration of the user
	}
	s.loggedIn(u, m.Database, m.Startup)
	clear(s.state.settings)
	maps.Copy(s.state.settings, m.Settings)
	switch t := router.Target(m.Route); t {
	case router.Primary, router.Replica:
		s.route.Override = t
	}
	s.minLSN, s.reportLSN = m.MinLSN, m.ReportLSN
	s.attachDatabase()
	for _, st := range m.Stmts {
		cs := &clientStmt{sql: st.SQL, server: st.Server, parse: st.Parse}
		cs.class, cs.gen = s.cls.Classify(cs.sql), s.cls.Generation()
		cs.confirmed.Store(st.Confirmed)
		s.keepStatement(st.Name, cs)
	}
	if cfg.Routing.RYWMode() != config.RYWOff {
		// Its own last commit was made through the old process: a barrier
		// on its mark is past it (session mode; the token).
		srv.lsn.commit(nil, writeScope{}, &s.commits, false)
	}
	now := time.Now()
	s.readyAt.Store(now.UnixNano())
	s.lastRequest.Store(now.UnixNano())
	s.ready.Store(true)
	s.settle()
	s.log.Info("client taken over from the previous pgsplit process", zap.Int("prepared_statements", len(m.Stmts)))
	if srv.draining.Load() {
		s.drain()
	}
	srv.wg.Add(1)
	go s.run(seat)
}

// adoptSeat counts a client taken over in an upgrade: it was let in by
// the old process's limits, so it is not refused here.
func (srv *Server) adoptSeat(from net.Addr) *seat {
	ip := clientIP(from)
	srv.ipMu.Lock()
	srv.ipConns[ip]++
	srv.ipMu.Unlock()
	srv.clients.Add(1)
	return &seat{srv: srv, ip: ip, counter: &srv.clients}
}

// clientIP is the address a client connects from, without the port.
func clientIP(from net.Addr) string {
	ip := from.String()
	if h, _, err := net.SplitHostPort(ip); err == nil {
		ip = h
	}
	return ip
}
