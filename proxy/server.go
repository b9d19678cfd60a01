// Package proxy is pgsplit's PostgreSQL front end: the listener, one session
// per client (startup, authentication, relay), cancel requests, reload and
// graceful shutdown.
//
// Ownership: the Server owns the listener, the pools, the read rotation
// and the registry of sessions. Package nodes owns the roles (which server
// is the primary), the health checks and the catalogs; the Server asks it
// and keeps no copy, and nodes reaches back only through nodesHost
// (nodes.go). Each session is owned by the goroutine that accepted its client
// (serveConn); that goroutine owns the client connection's reader and the
// upstream connection while the session holds one. A session's second
// goroutine, the server pump, owns the upstream reader and writes to the
// client under the session's write lock.
package proxy

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/pgsplit/pgsplit/config"
	"github.com/pgsplit/pgsplit/internal/handoff"
	"github.com/pgsplit/pgsplit/internal/secret"
	"github.com/pgsplit/pgsplit/internal/wire"
	"github.com/pgsplit/pgsplit/nodes"
	"github.com/pgsplit/pgsplit/pool"
)

// Server accepts clients and relays them to the primary in session mode.
type Server struct {
	// Buffers client connections borrow while bytes wait in them.
	readBufs  wire.BufPool
	writeBufs writerPool

	log   *zap.Logger
	cfg   atomic.Pointer[config.Config]
	auth  atomic.Pointer[authenticator]
	front atomic.Pointer[frontTLS] // the tls section, loaded; swapped by Reload

	ln          net.Listener
	draining    atomic.Bool
	clients     atomic.Int64 // connections counted in max_client_conn, from accept
	overflow    atomic.Int64 // connections over max_client_conn that may be admin logins (see takeSeat)
	adminConns  atomic.Int64 // admin console sessions (logged in)
	adminLogins atomic.Int64 // admin console logins in progress
	misroutes   atomic.Int64 // statements a replica refused as writes, re-run on the primary
	panics      atomic.Int64 // sessions and pumps ended by a recovered panic
	mockKey     []byte       // salts mock SCRAM logins of unknown users; fixed for the process's life
	unparsed    atomic.Int64 // statements kept from the parser (router.Parsable)
	knobs       Knobs        // test hooks, fixed before Listen
	readRetries atomic.Int64 // autocommit reads re-run because their replica went away before answering
	qlog        *queryLog
	pumps       *workers // goroutines the pumps run on
	metrics     *metrics
	qlogOn      bool // the query log's writer runs (Listen started it)
	stats       *statsBook
	bytesIn     atomic.Int64 // client traffic, for metrics (never reset)
	bytesOut    atomic.Int64
	nodes       *nodes.Monitor  // the roles (primary, replicas) and the health checks
	catalogs    *nodes.Catalogs // each database's classifier and catalog
	logins      loginCache      // server parameters for logins without a server
	lsn         *lsnTracker     // read-your-writes positions
	pause       pauseGate
	adminAuth   atomic.Pointer[authenticator]
	// keys holds the ClientKeys of verifier users, from their clients'
	// logins, for SCRAM pass-through; lookups is auth.auth_query's cache.
	// Both live as long as the Server, across reloads.
	keys    *secret.KeyRing
	lookups *userLookups
	// reloader re-reads the configuration for RELOAD (set before Serve).
	reloader func() error
	// shutdownReq is closed by the admin console's SHUTDOWN.
	shutdownReq  chan struct{}
	shutdownOnce sync.Once
	started      time.Time
	wg           sync.WaitGroup

	// The upgrade (handoff.go): listening sockets from the process this
	// one takes over from (set before Listen); the control link to the
	// other process while both run; upgrading: reads take barriers (as in
	// linearizable mode) because commits are being made by two processes.
	inherited   inheritedListeners
	peer        atomic.Pointer[handoff.Link]
	upgrading   atomic.Bool
	handingOver atomic.Bool // this is the old process: it accepts no more clients
	// acceptWake wakes Serve, paused while handing over, when the upgrade
	// failed (accept again) or Shutdown began (return).
	acceptWake chan struct{}
	// drained closes when Shutdown begins.
	drained chan struct{}

	ipMu    sync.Mutex
	ipConns map[string]int // connections by client IP address, from accept

	mu       sync.Mutex
	sessions map[uint32]*session // by the BackendKeyData process id pgsplit gave the client
	pools    map[poolKey]*pool.Pool
	rr       uint64 // round-robin position
	// The read rotation, fed by the health checks (nodes.Rotation) and
	// by failed connections.
	downUntil map[endpoint]time.Time // replicas that failed to connect, skipped until then
	lagOut    map[endpoint]string    // replicas out of rotation for lag, with the reason
}

// endpoint is a server's address as a map key (no string formatting on the
// hot path).
type endpoint struct {
	host string
	port int
}

func endpointOf(srv config.Server) endpoint { return endpoint{srv.Host, srv.Port} }

func (e endpoint) String() string { return net.JoinHostPort(e.host, strconv.Itoa(e.port)) }

// New checks cfg and prepares a server; it opens no sockets.
func New(cfg *config.Config, log *zap.Logger) (*Server, error) {
	if log == nil {
		log = zap.NewNop()
	}
	s := &Server{log: log, sessions: map[uint32]*session{}, ipConns: map[string]int{}, pools: map[poolKey]*pool.Pool{},
		downUntil: map[endpoint]time.Time{}, lagOut: map[endpoint]string{}, stats: newStatsBook(), shutdownReq: make(chan struct{}), started: time.Now(),
		acceptWake: make(chan struct{}, 1), drained: make(chan struct{}),
		keys: secret.NewKeyRing(), mockKey: make([]byte, 32)}
	if _, err := rand.Read(s.mockKey); err != nil {
		return nil, err
	}
	s.lookups = newUserLookups(s)
	if err := s.setAuth(cfg); err != nil {
		return nil, err
	}
	front, err := newFrontTLS(cfg.TLS)
	if err != nil {
		return nil, err
	}
	s.front.Store(front)
	s.cfg.Store(cfg)
	s.qlog = newQueryLog(cfg.Log, log)
	s.pumps = newWorkers()
	s.qlog.explain = newExplainer(s)
	s.catalogs = nodes.NewCatalogs(nodesHost{s}, log)
	s.nodes = nodes.New(nodes.Options{Host: nodesHost{s}, Keys: s.keys, Catalogs: s.catalogs, Logger: log})
	s.lsn = newLSNTracker(s)
	for _, srv := range cfg.Servers {
		s.lsn.replay[endpointOf(srv)] = new(atomic.Uint64)
	}
	s.metrics = newMetrics(s)
	return s, nil
}

// setAuth builds the authenticators of cfg's users and admin users.
func (s *Server) setAuth(cfg *config.Config) error {
	var lookup userLookup
	if cfg.Auth.AuthUser != "" {
		lookup = s.lookups
	}
	au, err := newAuthenticator(cfg.Auth.Method, cfg.Auth.Users, "auth.users", s.keys, lookup, s.mockKey)
	if err != nil {
		return err
	}
	ad, err := newAuthenticator(cfg.Auth.AdminMethod(), cfg.Admin.Users, "admin.users", nil, nil, s.mockKey)
	if err != nil {
		return err
	}
	s.auth.Store(au)
	s.adminAuth.Store(ad)
	return nil
}

// Listen binds the configured address. Addr is valid afterwards.
func (s *Server) Listen(ctx context.Context) error {
	cfg := s.cfg.Load()
	primary, err := s.nodes.FindPrimary(ctx)
	if err != nil {
		return err
	}
	if err := s.checkLimits(ctx, cfg); err != nil {
		return err
	}
	ln, mln := s.inherited.client, s.inherited.metrics
	if ln == nil {
		var lc net.ListenConfig
		if ln, err = lc.Listen(ctx, "tcp", cfg.Listen); err != nil {
			return fmt.Errorf("listen %s: %w", cfg.Listen, err)
		}
	}
	if cfg.Metrics.Listen != "" {
		if err := s.metrics.serve(ctx, cfg.Metrics.Listen, mln, s, s.log); err != nil {
			_ = ln.Close()
			return err
		}
	} else if mln != nil {
		_ = mln.Close() // the metrics listener was turned off
	}
	s.ln = ln
	s.qlog.explain.start()
	s.qlog.start()
	s.qlogOn = true
	s.nodes.Start() // a first round of checks before the first client
	s.lsn.start()
	s.log.Info("listening", zap.String("addr", ln.Addr().String()), zap.String("primary", primary.Addr()),
		zap.String("pool_mode", cfg.Pool.Mode))
	return nil
}

// MetricsAddr is the address of the metrics endpoint, nil when off.
func (s *Server) MetricsAddr() net.Addr {
	return s.metrics.addr()
}

// QueryLogStats counts the query-log records written and dropped (the
// writer fell behind).
func (s *Server) QueryLogStats() QueryLogStats {
	return QueryLogStats{Logged: s.qlog.logged.Load(), Dropped: s.qlog.dropped.Load()}
}

// ClientConnections counts the connections in max_client_conn now: from
// accept, logged in or not.
func (s *Server) ClientConnections() int64 { return s.clients.Load() }

// Misroutes counts statements a replica refused as writes (SQLSTATE 25006)
// that pgsplit ran again on the primary.
func (s *Server) Misroutes() int64 { return s.misroutes.Load() }

// Addr is the address the server listens on.
func (s *Server) Addr() net.Addr { return s.ln.Addr() }

// Serve accepts clients until the listener is closed by Shutdown (paused
// while an upgrade hands clients over). Each client is served by its own
// goroutine, which Shutdown waits for.
func (s *Server) Serve() error {
	for {
		c, err := s.ln.Accept()
		if err != nil {
			if s.draining.Load() || errors.Is(err, net.ErrClosed) {
				return nil
			}
			if s.handingOver.Load() {
				// The new process accepts; this one accepts again if the
				// upgrade fails (handoff.go).
				for s.handingOver.Load() && !s.draining.Load() {
					<-s.acceptWake
				}
				continue
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			s.log.Error("accept failed", zap.Error(err))
			time.Sleep(50 * time.Millisecond) // e.g. out of file descriptors: do not spin
			continue
		}
		sess := s.newSession(c)
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			sess.serve()
		}()
	}
}

// newSession registers a session under a fresh, unique cancel key.
func (s *Server) newSession(c net.Conn) *session {
	sess := &session{srv: s, connectedAt: time.Now()}
	sess.conn = countingConn{Conn: c, s: sess}
	var b [8]byte
	s.mu.Lock()
	defer s.mu.Unlock()
	for {
		_, _ = rand.Read(b[:])
		pid := binary.BigEndian.Uint32(b[:4]) & 0x7fffffff // positive, as backend pids are
		if _, taken := s.sessions[pid]; pid == 0 || taken {
			continue
		}
		sess.pid = pid
		copy(sess.secret[:], b[4:])
		s.sessions[pid] = sess
		return sess
	}
}

func (s *Server) forget(sess *session) {
	s.mu.Lock()
	delete(s.sessions, sess.pid)
	s.mu.Unlock()
}

// ReadRetries counts autocommit reads run again on another server because
// their replica went away before answering.
func (s *Server) ReadRetries() int64 { return s.readRetries.Load() }

// servesDatabase reports whether clients may connect to database: any, when
// the databases key is empty.
func (s *Server) servesDatabase(database string) bool {
	dbs := s.cfg.Load().Databases
	return len(dbs) == 0 || slices.Contains(dbs, database)
}
