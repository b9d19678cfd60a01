package proxy

import (
	"context"
	"crypto/subtle"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pgsplit/pgsplit/internal/pgmsg"

	"github.com/jackc/pgx/v5/pgproto3"
	"go.uber.org/zap"

	"github.com/pgsplit/pgsplit/admin"
	"github.com/pgsplit/pgsplit/config"
	"github.com/pgsplit/pgsplit/internal/wire"
	"github.com/pgsplit/pgsplit/nodes"
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
	// commits is the newest position the client itself must see: its own
	// last commit (read_your_writes: session; the token) and, in
	// linearizable mode, the last read's barrier. Guarded by the Server's
	// lsnTracker mu.
	commits mark
	// relNames is readNeed's buffer of relation names (session goroutine).
	relNames []string
	// minLSN is SET pgsplit.min_lsn: the WAL position every read of the
	// session must see (0: none). Session goroutine only.
	minLSN uint64
	// reportLSN: the client asked at login (pgsplit.report_commit_lsn) for
	// each commit's position as ParameterStatus pgsplit.commit_lsn. Set at
	// login.
	reportLSN bool
	waited    time.Duration // how long it waited for server connections
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
	// handing: an upgrade is under way; the session moves to the new
	// process the next time it is idle between messages (moveOut).
	handing atomic.Bool
	// nudgeMu guards inNext (the session goroutine waits for a message
	// header: a read deadline can stop it safely) and nudged (nudge set
	// one meanwhile), so that a nudge never cuts a message body short.
	nudgeMu  sync.Mutex
	inNext   bool
	nudged   bool
	finished bool // finish began (the session's goroutine)
	// resetUserCode (pool.reset_after_functions): a connection that ran a
	// function, DO or CALL is reset before it serves another client.
	resetUserCode bool
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
	if sess == nil && srv.forwardCancel(cr) {
		return // perhaps a client the previous process still serves (an upgrade)
	}
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
	if reason == errMoved.Error() {
		s.log.Info("client handed over to the new pgsplit process")
		return
	}
	fields := []zap.Field{zap.String("reason", reason)}
	for _, u := range s.ups {
		if u != nil {
			fields = append(fields, zap.String(u.target.String(), s.release(u)))
		}
	}
	s.log.Info("client disconnected", fields...)
}
