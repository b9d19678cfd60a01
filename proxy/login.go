package proxy

import (
	"errors"
	"fmt"
	"io"
	"net"
	"sort"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"
	"go.uber.org/zap"

	"github.com/pgsplit/pgsplit/config"
	"github.com/pgsplit/pgsplit/internal/pgmsg"
	"github.com/pgsplit/pgsplit/internal/wire"
	"github.com/pgsplit/pgsplit/router"
)

// serve runs the login on the accepting goroutine, whose stack
// authentication grows, and hands the logged-in session to a goroutine of
// its own (run): an idle client then waits on a small stack. Whichever of
// the two holds the session ends it (forget, Close).
func (s *session) serve() {
	handed := false // run owns the session now
	defer func() {
		if !handed {
			s.srv.forget(s)
			_ = s.conn.Close()
		}
	}()
	defer s.recoverSession() // before Close: it tells the client why
	client := zap.String("client", s.conn.RemoteAddr().String())
	s.log = s.srv.log.With(client)
	s.txStatus.Store(pgmsg.TxIdle)
	s.zSignal = make(chan struct{}, 1)
	s.state, s.stmts = newClientState(), map[string]*clientStmt{}

	// startup_timeout counts from accept, and so does max_client_conn: a
	// connection that never finishes its startup packet holds a place
	// for startup_timeout at most.
	seat, pe := s.srv.takeSeat(s.conn.RemoteAddr(), s.log)
	if pe != nil {
		refuseEarly(s.conn, pe)
		return
	}
	defer func() {
		if !handed {
			seat.release()
		}
	}()
	s.limits = s.srv.cfg.Load().Limits
	_ = s.conn.SetDeadline(s.connectedAt.Add(s.limits.StartupTimeout))
	if s.srv.draining.Load() {
		// Shutdown began before the deadline above was set, which may have
		// overwritten drain's wake-up: wake the startup reads again.
		_ = s.conn.SetReadDeadline(time.Now())
	}
	link := &clientLink{conn: s.conn, br: wire.NewConnReader(s.conn, &s.srv.readBufs), dst: s.conn, bufs: &s.srv.readBufs}
	st, err := readStartup(link, s.srv.front.Load())
	// From here on the session reads and writes through TLS if the client
	// negotiated it (the error answer too).
	s.br, s.cr = link.br, wire.NewReader(link.br, s.limits.MaxMessageSize)
	s.out = newClientWriter(s.conn, link.dst, &s.srv.writeBufs)
	s.tlsInfo = link.describe()
	tlsField := zap.Skip()
	if s.tlsInfo != "" {
		tlsField = zap.String("tls", s.tlsInfo)
		s.log = s.log.With(tlsField)
	}
	if err != nil {
		s.failStartup(err, "", "")
		return
	}
	if st.cancel != nil {
		seat.release()
		s.srv.cancel(st.cancel, s.conn.RemoteAddr())
		return
	}
	user, database := st.params["user"], st.params["database"]
	// One logger with every field (each With keeps an encoded copy).
	s.log = s.srv.log.With(client, tlsField, zap.String("user", user), zap.String("database", database),
		zap.String("application_name", st.params["application_name"]))
	s.appName = st.params["application_name"]

	// Admin console logins count apart from clients (max_client_conn), so
	// an admin gets in when clients fill it, and unauthenticated
	// connections cannot take a logged-in admin's place.
	admin := database == config.AdminDatabase
	au := s.srv.auth.Load()
	if admin {
		au = s.srv.adminAuth.Load()
	}
	if pe := seat.seatFor(admin, s.log); pe != nil {
		s.failStartup(pe, user, database)
		return
	}

	if st.minor > 0 || len(st.unknown) > 0 {
		if err := s.out.sendMsgs(&pgproto3.NegotiateProtocolVersion{NewestMinorProtocol: 0, UnrecognizedOptions: st.unknown}); err != nil {
			return
		}
	}
	u, err := au.authenticate(s.cr, s.out, user, database, link.tls)
	if err == nil && s.srv.draining.Load() {
		err = pgmsg.Fatal(pgmsg.CodeAdminShutdown, "the database system is shutting down")
	}
	if admin {
		seat.move(nil) // logged in, or not: no longer a login in progress
		if err == nil {
			s.serveAdmin(u)
			return
		}
	}
	if err != nil {
		s.failStartup(err, user, database)
		return
	}
	// Authenticated: startup_timeout is over. Waiting for a server
	// connection is bounded by pool_timeout.
	_ = s.conn.SetDeadline(time.Time{})
	if !s.srv.servesDatabase(database) {
		s.failStartup(pgmsg.Fatal(pgmsg.CodeInvalidCatalogName, fmt.Sprintf("database %q is not served by pgsplit (not listed in databases)", database)), user, database)
		return
	}
	setup, own, err := startupSettings(st.params)
	if err == nil {
		s.reportLSN, err = ownStartup(own, st.params)
	}
	if err != nil {
		s.failStartup(err, user, database)
		return
	}
	s.loggedIn(u, database, setup)
	primary := s.srv.currentPrimary()
	primaryAddr := ""
	if primary.Host != "" {
		primaryAddr = primary.Addr()
	}
	params, quick := s.quickLogin(st.params, primaryAddr)
	var up *upstream
	if !quick {
		up, err = s.acquireForLogin()
		if err == nil {
			err = s.applyStartup(up)
		}
		if err != nil {
			var pe *pgmsg.Error
			if errors.As(err, &pe) {
				pe.Severity = pgmsg.SeverityFatal // no session without a first server connection
				if pe.Code == pgmsg.CodeInvalidCatalogName || strings.HasPrefix(pe.Code, "28") {
					// No such database, or pgsplit's login refused: the pools
					// made for it hold nothing and must not pile up (any
					// name is tried when databases is empty).
					s.srv.dropEmptyPools(database, u.Name)
					s.srv.logins.drop(database, u.Name)
				}
			}
			s.failStartup(err, user, database)
			return
		}
		params = up.conn.Params
		if plainStartup(st.params) {
			s.srv.logins.put(database, u.Name, primaryAddr, params)
		}
	}
	s.attachDatabase() // statistics only for a database a server has confirmed
	if err := s.greet(params); err != nil {
		if up != nil {
			// No pump runs yet, so release's quiet path would wait forever.
			s.discard(up)
		}
		return
	}
	_ = s.conn.SetDeadline(time.Time{})
	if up != nil {
		s.log.Info("client connected", zap.Uint32("backend_pid", up.conn.PID), zap.String("server", up.conn.Addr))
	} else {
		s.log.Info("client connected", zap.String("server", "none: login answered from the server parameters a checked login reported"))
	}
	s.readyAt.Store(time.Now().UnixNano())
	s.ready.Store(true)
	if s.draining.Load() {
		// drain ran while the client was logging in and could not end the
		// session then; ready is set now, so drain can.
		s.drain()
	}
	if up != nil {
		s.startPump(up)
	}
	s.settle() // under transaction pooling the connection goes back now
	handed = true
	s.srv.wg.Add(1) // before serve's own count goes (Shutdown waits for both)
	go s.run(seat)
}

// loggedIn sets what a logged-in session of user u in database needs
// (setup: its startup settings), under the configuration now.
func (s *session) loggedIn(u config.User, database string, setup map[string]string) {
	cfg := s.srv.cfg.Load()
	s.user, s.database = u, database
	s.state.login(setup)
	s.txPooling, s.maxPrepared = cfg.Pool.Mode == config.ModeTransaction, cfg.Pool.MaxPreparedStatements
	s.resetUserCode = cfg.Pool.ResetAfterFunctions
	s.route = router.NewSession(s.srv.readsOffloaded())
}

// attachDatabase gives the session its database's statistics,
// classifier and read-your-writes marks, once the database is known to
// exist (a login to it worked).
func (s *session) attachDatabase() {
	s.stats.Store(s.srv.stats.db(s.database))
	s.cls = s.srv.catalogs.For(s.database, s.user)
	s.dbWrites = s.srv.lsn.writesFor(s.database)
	s.id = &clientID{addr: s.conn.RemoteAddr().String(), user: s.user, database: s.database, app: s.appName, stats: s.stats.Load(), cls: s.cls}
}

// failStartup tells the client why it cannot log in, logs it, and returns.
func (s *session) failStartup(err error, user, database string) {
	var pe *pgmsg.Error
	var fe *wire.FrameError
	var he *handshakeError
	switch {
	case errors.As(err, &he):
		s.log.Info("login refused", zap.Error(err)) // nothing to tell a client that speaks TLS, not the protocol yet
		return
	case errors.As(err, &fe) && fe.TooLarge() && fe.Type != 0:
		pe = s.messageTooLarge(fe) // a password message
	case errors.As(err, &fe) && fe.TooLarge():
		s.srv.limitHit(s.log, limitStartupPacket, zap.Int("max", wire.MaxStartupLen))
		fallthrough
	case errors.As(err, &fe):
		pe = pgmsg.Fatal(pgmsg.CodeProtocolViolation, fe.Error())
	}
	if pe == nil && !errors.As(err, &pe) {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, net.ErrClosed) {
			s.log.Debug("client left during startup", zap.Error(err))
			return
		}
		var ne net.Error
		switch {
		case errors.As(err, &ne) && ne.Timeout() && s.srv.draining.Load():
			// drain woke the login's reads: pgsplit is shutting down.
			pe = pgmsg.Fatal(pgmsg.CodeAdminShutdown, "the database system is shutting down")
		case errors.As(err, &ne) && ne.Timeout():
			s.srv.limitHit(s.log, limitStartupTimeout, zap.Duration("timeout", s.srv.cfg.Load().Limits.StartupTimeout))
			pe = pgmsg.Fatal(pgmsg.CodeProtocolViolation, "timeout during startup and authentication (limits.startup_timeout)")
		default:
			pe = pgmsg.Fatal(pgmsg.CodeInternalError, "pgsplit: "+err.Error())
		}
	}
	fields := []zap.Field{zap.String("sqlstate", pe.Code), zap.String("reason", pe.Message)}
	if pe.LogDetail != "" {
		fields = append(fields, zap.String("detail", pe.LogDetail))
	}
	switch pe.Code {
	case pgmsg.CodeInvalidPassword, pgmsg.CodeInvalidAuthSpec:
		s.log.Warn("authentication failed", fields...)
	default:
		s.log.Info("login refused", fields...)
	}
	s.out.fatal(pe)
}

// greet completes the login: AuthenticationOk, params as ParameterStatus
// (a server's, or the admin console's own), pgsplit's own BackendKeyData,
// ReadyForQuery.
func (s *session) greet(params map[string]string) error {
	msgs := []pgproto3.BackendMessage{&pgproto3.AuthenticationOk{}}
	names := make([]string, 0, len(params))
	for k := range params {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, k := range names {
		v := params[k]
		if k == "in_hot_standby" && s.admin == nil {
			// pgsplit as a whole takes writes (target_session_attrs=
			// read-write), whichever server the login was checked on.
			v = "off"
		}
		msgs = append(msgs, &pgproto3.ParameterStatus{Name: k, Value: v})
	}
	msgs = append(msgs, &pgproto3.BackendKeyData{ProcessID: s.pid, SecretKey: s.secret[:]})
	return s.out.answer(pgmsg.TxIdle, msgs...)
}
