package proxy

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"io"
	"net"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pgsplit/pgsplit/internal/pgmsg"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
	"go.uber.org/zap"

	"github.com/pgsplit/pgsplit/admin"
	"github.com/pgsplit/pgsplit/config"
	"github.com/pgsplit/pgsplit/internal/wire"
	"github.com/pgsplit/pgsplit/nodes"
	"github.com/pgsplit/pgsplit/pool"
	"github.com/pgsplit/pgsplit/router"
)

// cleanupTimeout bounds what pgsplit does on an upstream connection after its
// client left: cancel, rollback, DISCARD ALL.
const cleanupTimeout = 5 * time.Second

// session is one client connection. serve (the login), then run, runs on
// the goroutine that owns it; a pump (startPump) runs on a goroutine of
// its own while a server connection is attached.
type session struct {
	srv  *Server
	conn net.Conn
	log  *zap.Logger

	user     config.User // set at login
	database string
	appName  string    // application_name at login, for the query log
	id       *clientID // all of the above, for query records (set at login)

	pid    uint32  // BackendKeyData given to the client
	secret [4]byte // (set before the session is shared, read-only after)

	cr *wire.Reader // client reader: the session's goroutine only (serve, then run)

	// out is the only writer to the client, set once the startup phase
	// settled the link; before the greeting only serve's goroutine uses it.
	out *clientWriter

	upMu sync.Mutex   // guards ups for readers on other goroutines (cancel)
	ups  [2]*upstream // server connections by router.Target

	zSignal chan struct{} // nudged by pumps after each ReadyForQuery

	// Set at login, read-only after.
	txPooling   bool // pool.mode transaction: connections go back between transactions
	maxPrepared int  // pool.max_prepared_statements

	// pooling is whether the session's idle connections may go back to the
	// pool now (transaction pooling, nothing pinned): written by the session
	// goroutine, read by the pumps.
	pooling atomic.Bool

	// Routing state, session goroutine only.
	active   *upstream              // where the last statement went
	route    *router.Session        // pins and SET pgsplit.route
	cls      *nodes.Catalog         // the database's statement classifier
	dbWrites *dbWrites              // the database's read-your-writes marks
	state    *clientState           // settings every server connection must have, and changes not settled yet
	stmts    map[string]*clientStmt // the client's prepared statements by name
	batch    batch                  // extended-protocol batch being collected
	split    *splitTx               // open transaction under routing.transactions: split
	skipSync bool                   // a batch failed in pgsplit: ignore messages until Sync
	connPins []string               // what pins the session to its server connections (logged once)
	pinGen   uint64                 // route.Generation() when connPins was computed
	msgAt    time.Time              // when the client message being handled arrived
	// roBegin is the BEGIN of a read-only transaction just opened on a
	// replica, until its next statement (see moveReadOnlyToPrimary).
	roBegin string
	// readFloor is the WAL position the replica chosen for the next read
	// must have replayed (read-your-writes; 0: any).
	readFloor uint64
	// commits is the client's own last commit (read_your_writes: session),
	// guarded by the Server's lsnTracker mu.
	commits mark
	// relNames is readNeed's buffer of relation names (session goroutine).
	relNames []string
	waited   time.Duration // how long it waited for server connections
	// verdictTimer bounds awaitVerdict's wait, reused statement after
	// statement.
	verdictTimer *time.Timer

	// Statistics: the database's counters (set at login), when the open
	// transaction (or autocommit statement) began (unix ns, 0: none), when
	// the session began and when its last client message arrived.
	stats       atomic.Pointer[dbStats]
	txBegan     atomic.Int64
	connectedAt time.Time
	lastRequest atomic.Int64
	readyAt     atomic.Int64           // unix ns of the last ReadyForQuery a pump relayed (idle limits)
	idleArmed   bool                   // nextMessage set a read deadline for an idle limit
	stmtBytes   int                    // at least the bytes of stmts' texts and Parses (see keepStatement)
	limits      config.Limits          // as at login, for the statement and batch caps
	admin       *admin.Session         // set for admin console sessions
	waitingFrom atomic.Int64           // unix ns since the client waits for a connection or RESUME (0: not waiting)
	pinnedBy    atomic.Pointer[string] // connPins joined, for SHOW CLIENTS
	heldAtGate  atomic.Bool            // waiting at the PAUSE gate
	br          *wire.ConnReader       // the client reader under cr (the session's goroutine)
	// tlsInfo describes the client connection's TLS ("" for plain text):
	// set by serve before ready, read-only after.
	tlsInfo string

	ready    atomic.Bool   // logged in; cancel requests are honoured
	txStatus atomic.Uint32 // status byte of the last ReadyForQuery the client saw
	draining atomic.Bool   // close as soon as the client is idle
	finished bool          // finish began (the session's goroutine)
	// resetUserCode (pool.reset_after_functions): a connection that ran a
	// function, DO or CALL is reset before it serves another client.
	resetUserCode bool
}

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
		if err := send(s.out.loginWriter(), &pgproto3.NegotiateProtocolVersion{NewestMinorProtocol: 0, UnrecognizedOptions: st.unknown}); err != nil {
			return
		}
	}
	u, err := au.authenticate(s.cr, s.out.loginWriter(), user, database, link.tls)
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
	setup, err := startupSettings(st.params)
	if err != nil {
		s.failStartup(err, user, database)
		return
	}
	cfg := s.srv.cfg.Load()
	s.user, s.database = u, database
	s.state.login(setup)
	s.txPooling, s.maxPrepared = cfg.Pool.Mode == config.ModeTransaction, cfg.Pool.MaxPreparedStatements
	s.resetUserCode = cfg.Pool.ResetAfterFunctions
	s.route = router.NewSession(s.srv.readsOffloaded())
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
	// Statistics only for a database a server has confirmed.
	s.stats.Store(s.srv.stats.db(database))
	s.cls = s.srv.catalogs.For(database, u) // the database exists: a login worked
	s.dbWrites = s.srv.lsn.writesFor(database)
	s.id = &clientID{addr: s.conn.RemoteAddr().String(), user: u, database: database, app: s.appName, stats: s.stats.Load(), cls: s.cls}
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

// run relays the logged-in client's messages until the session ends, on
// the session's own goroutine (see serve), and ends it.
func (s *session) run(st *seat) {
	defer s.srv.wg.Done()
	defer s.srv.forget(s)
	defer s.conn.Close()
	defer s.recoverSession() // before Close: it tells the client why
	defer st.release()
	reason := s.relayClient()
	s.ready.Store(false)
	// A client that left without reading its answers must not hold a pump
	// (and its server connection) in a blocked write.
	_ = s.conn.SetWriteDeadline(time.Now())
	s.finish(reason)
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

// drain asks the session to end as soon as its client is idle: now, if it
// is idle already.
func (s *session) drain() {
	s.draining.Store(true)
	if !s.ready.Load() {
		// Still logging in, so no transaction to wait for. A client that
		// stalls in its startup or login (silent socket, health check)
		// would otherwise hold the shutdown up for shutdown_timeout: wake
		// its reads now, and serve refuses it with 57P01. A session that
		// is past its reads (being set up) checks draining once ready.
		_ = s.conn.SetReadDeadline(time.Now())
		return
	}
	if s.idle() {
		s.out.fatal(pgmsg.Fatal(pgmsg.CodeAdminShutdown, "terminating connection due to administrator command: pgsplit is shutting down"))
	}
}

// kill ends the session now, telling the client why.
func (s *session) kill() {
	if !s.ready.Load() {
		// Logging in: serve's goroutine owns the client writer until ready,
		// so only wake its reads and writes; failStartup answers 57P01.
		_ = s.conn.SetDeadline(time.Now())
		return
	}
	_ = s.conn.SetDeadline(time.Now().Add(time.Second))
	s.out.fatal(pgmsg.Fatal(pgmsg.CodeAdminShutdown, "terminating connection due to administrator command: pgsplit shutdown_timeout reached"))
}

// cancel forwards a client's CancelRequest to the upstream connection that
// is serving the session with that key. A wrong key is ignored silently, as
// PostgreSQL does.
func (srv *Server) cancel(cr *pgproto3.CancelRequest, from net.Addr) {
	srv.mu.Lock()
	sess := srv.sessions[cr.ProcessID]
	srv.mu.Unlock()
	if sess == nil || !sess.ready.Load() || len(cr.SecretKey) != 4 || subtle.ConstantTimeCompare(cr.SecretKey, sess.secret[:]) != 1 {
		srv.log.Debug("cancel request with unknown key ignored", zap.String("client", from.String()))
		return
	}
	if sess.admin != nil {
		sess.admin.Cancel() // ends a PAUSE wait
		return
	}
	// Hold upMu until the requests are delivered: a connection cannot be
	// handed to another client meanwhile, so a late cancel never hits
	// someone else's statement.
	sess.upMu.Lock()
	defer sess.upMu.Unlock()
	for _, u := range sess.ups {
		if u == nil || !u.owesAnswers() {
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), cleanupTimeout)
		err := u.conn.Cancel(ctx)
		cancel()
		if err != nil {
			srv.log.Warn("forwarding cancel request failed", zap.Error(err))
			continue
		}
		sess.log.Info("cancel request forwarded", zap.Stringer("role", u.target), zap.Uint32("backend_pid", u.conn.PID))
	}
}

// idle reports whether the client has no statement running and no
// transaction open on any of its server connections.
func (s *session) idle() bool {
	return s.quietUpstreams() && byte(s.txStatus.Load()) == pgmsg.TxIdle
}

// finish gives back every server connection once the client is gone.
func (s *session) finish(reason string) {
	s.finished = true
	s.claim()
	fields := []zap.Field{zap.String("reason", reason)}
	for _, u := range s.ups {
		if u != nil {
			fields = append(fields, zap.String(u.target.String(), s.release(u)))
		}
	}
	s.log.Info("client disconnected", fields...)
}
