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
	"github.com/pgsplit/pgsplit/internal/secret"
	"github.com/pgsplit/pgsplit/internal/wire"
	"github.com/pgsplit/pgsplit/nodes"
	"github.com/pgsplit/pgsplit/pool"
	"github.com/pgsplit/pgsplit/router"
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

type poolKey struct {
	server         endpoint
	database, user string
}

// New checks cfg and prepares a server; it opens no sockets.
func New(cfg *config.Config, log *zap.Logger) (*Server, error) {
	if log == nil {
		log = zap.NewNop()
	}
	s := &Server{log: log, sessions: map[uint32]*session{}, ipConns: map[string]int{}, pools: map[poolKey]*pool.Pool{},
		downUntil: map[endpoint]time.Time{}, lagOut: map[endpoint]string{}, stats: newStatsBook(), shutdownReq: make(chan struct{}), started: time.Now(),
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

// SetReloader sets what the admin console's RELOAD runs: typically re-read
// the configuration file and call Reload, as on SIGHUP. Call it before
// Serve. Without one, RELOAD answers that it is not available.
func (s *Server) SetReloader(f func() error) { s.reloader = f }

// ShutdownRequested is closed when an admin runs SHUTDOWN; the owner of the
// Server then calls Shutdown.
func (s *Server) ShutdownRequested() <-chan struct{} { return s.shutdownReq }

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
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", cfg.Listen)
	if err != nil {
		return fmt.Errorf("listen %s: %w", cfg.Listen, err)
	}
	if cfg.Metrics.Listen != "" {
		if err := s.metrics.serve(ctx, cfg.Metrics.Listen, s, s.log); err != nil {
			_ = ln.Close()
			return err
		}
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
	if s.metrics.ln == nil {
		return nil
	}
	return s.metrics.ln.Addr()
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

// Serve accepts clients until the listener is closed by Shutdown. Each client
// is served by its own goroutine, which Shutdown waits for.
func (s *Server) Serve() error {
	for {
		c, err := s.ln.Accept()
		if err != nil {
			if s.draining.Load() || errors.Is(err, net.ErrClosed) {
				return nil
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

// poolFor returns the pool for target (the primary, or the replica chosen
// by load balancing among those that have replayed floor) and (database,
// user), creating it.
func (s *Server) poolFor(t router.Target, u config.User, database string, floor uint64) (*pool.Pool, config.Server) {
	cfg := s.cfg.Load()
	s.mu.Lock()
	defer s.mu.Unlock()
	var srv config.Server
	if t == router.Replica {
		srv = s.pickReplicaLocked(u.Name, database, floor)
	} else {
		srv = s.currentPrimary()
	}
	if srv.Host == "" {
		return nil, srv // no primary known (failover)
	}
	return s.poolLocked(cfg, srv, u, database), srv
}

// poolForServer returns the pool for srv and (database, user), creating it.
func (s *Server) poolForServer(srv config.Server, u config.User, database string) *pool.Pool {
	cfg := s.cfg.Load()
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.poolLocked(cfg, srv, u, database)
}

// poolLocked returns (creating it) the pool for srv, database, u; the
// caller holds mu.
// poolLimits is the pool package's view of the pool knobs.
func poolLimits(c *config.Pool) pool.Limits {
	return pool.Limits{Size: c.PoolSize, MaxOverflow: c.MaxOverflow, Timeout: c.PoolTimeout,
		Recycle: c.PoolRecycle, PrePing: c.PoolPrePing, IdleTimeout: c.OverflowIdleTimeout}
}

func (s *Server) poolLocked(cfg *config.Config, srv config.Server, u config.User, database string) *pool.Pool {
	k := poolKey{endpointOf(srv), database, u.Name}
	if p, ok := s.pools[k]; ok {
		return p
	}
	p := pool.New(pool.Options{
		Host: srv.Host, Port: srv.Port,
		User: u.Name, Password: u.Password, Keys: s.keys, Database: database,
		Limits:         poolLimits(&cfg.Pool),
		ConnectTimeout: cfg.Pool.ConnectTimeout,
		TLS:            nodes.PoolTLS(cfg.ServerTLS),
		Logger:         s.log,
	})
	s.pools[k] = p
	return p
}

// dropEmptyPools removes the pools of (database, user) that hold no
// connection, after a login the server refused for the database or the
// user: a client must not make pgsplit keep a pool per name it tries.
func (s *Server) dropEmptyPools(database, user string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for k, p := range s.pools {
		if k.database == database && k.user == user && p.Open() == 0 {
			delete(s.pools, k)
			p.Close()
		}
	}
}

// setPoolSecret gives every pool of user the secret a lookup just found
// (auth.auth_query: the role's verifier may have been rotated since its
// pools were made).
func (s *Server) setPoolSecret(user, pw string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for k, p := range s.pools {
		if k.user == user {
			p.SetPassword(pw)
		}
	}
}

// PoolCount is the number of pools pgsplit keeps now, and StatsDatabases
// the number of databases it keeps statistics for.
func (s *Server) PoolCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.pools)
}

// StatsDatabases: see PoolCount.
func (s *Server) StatsDatabases() int {
	s.stats.mu.Lock()
	defer s.stats.mu.Unlock()
	return len(s.stats.dbs)
}

// pickReplicaLocked chooses a replica for a new session connection: the one
// with the fewest open connections for (database, user) per unit of weight
// (least_conn), or by turns (round_robin) or at random, as configured.
func (s *Server) pickReplicaLocked(user, database string, floor uint64) config.Server {
	primary, replicas := s.nodes.Roles()
	var best config.Server
	bestScore := -1.0
	var buf [8]config.Server
	eligible := buf[:0]
	now := time.Now()
	for _, r := range replicas {
		ep := endpointOf(r)
		if r.Weight > 0 && (len(s.downUntil) == 0 || now.After(s.downUntil[ep])) && s.lagOut[ep] == "" &&
			(floor == 0 || s.lsn.replayed(ep) >= floor) {
			eligible = append(eligible, r)
		}
	}
	if s.cfg.Load().Routing.ReadFrom == config.ReadFromAny && primary.Host != "" {
		p := primary
		p.Weight = 1
		eligible = append(eligible, p)
	}
	if len(eligible) == 0 {
		return primary // none in rotation: the primary reads (Host empty: none known)
	}
	switch s.cfg.Load().Routing.LoadBalance {
	case config.BalanceRoundRobin:
		s.rr++
		return weightedPick(eligible, s.rr)
	case config.BalanceRandom:
		var b [8]byte
		_, _ = rand.Read(b[:])
		return weightedPick(eligible, binary.BigEndian.Uint64(b[:]))
	}
	for _, r := range eligible {
		open := 0
		if p, ok := s.pools[poolKey{endpointOf(r), database, user}]; ok {
			open = p.Open()
		}
		score := float64(open+1) / float64(r.Weight)
		if bestScore < 0 || score < bestScore {
			best, bestScore = r, score
		}
	}
	return best
}

// ReplicaRetry is how long a replica that could not be connected to is left
// out of rotation before pgsplit tries it again.
const ReplicaRetry = 10 * time.Second

// markDown takes a replica out of rotation for ReplicaRetry.
func (s *Server) markDown(srv config.Server) {
	if srv == s.currentPrimary() {
		return
	}
	now := time.Now()
	s.mu.Lock()
	wasUp := now.After(s.downUntil[endpointOf(srv)])
	s.downUntil[endpointOf(srv)] = now.Add(ReplicaRetry)
	s.mu.Unlock()
	if wasUp {
		s.log.Warn("replica unreachable: out of rotation", zap.String("server", srv.Addr()), zap.Duration("retry_in", ReplicaRetry))
		s.closeIdle(srv)
	}
}

// markUp puts a replica that a fresh health-check connection reached back
// into rotation at once, rather than after the rest of ReplicaRetry.
func (s *Server) markUp(srv config.Server) {
	now := time.Now()
	s.mu.Lock()
	ep := endpointOf(srv)
	wasDown := now.Before(s.downUntil[ep])
	delete(s.downUntil, ep)
	s.mu.Unlock()
	if wasDown {
		s.log.Info("replica reachable again: back in rotation", zap.String("server", srv.Addr()))
	}
}

// closeIdle closes every pooled idle connection to srv: its server went
// away (or changed role), so they must not be handed out again.
func (s *Server) closeIdle(srv config.Server) {
	ep := endpointOf(srv)
	if n := s.closeIdleWhere(func(k poolKey) bool { return k.server == ep }); n > 0 {
		s.log.Info("closed pooled connections to a server that went away or changed role", zap.String("server", srv.Addr()), zap.Int("closed", n))
	}
}

// freeDatabase closes every idle pooled connection to database, on every
// server, before a statement that needs nobody else connected to it runs
// (router.Statement.FreesDatabase: DROP DATABASE, ALTER DATABASE … RENAME,
// CREATE DATABASE … TEMPLATE): pgsplit's own idle connections would make
// PostgreSQL refuse it as "being accessed by other users". Connections in
// use stay: those are other clients', as they would be without pgsplit.
func (s *Server) freeDatabase(database string) {
	if n := s.closeIdleWhere(func(k poolKey) bool { return k.database == database }); n > 0 {
		s.log.Info("closed idle pooled connections to a database a statement needs to itself", zap.String("database", database), zap.Int("closed", n))
	}
}

// closeIdleWhere closes the idle connections of every pool whose key
// matches and returns how many it closed.
func (s *Server) closeIdleWhere(match func(poolKey) bool) int {
	s.mu.Lock()
	var ps []*pool.Pool
	for k, p := range s.pools {
		if match(k) {
			ps = append(ps, p)
		}
	}
	s.mu.Unlock()
	n := 0
	for _, p := range ps {
		n += p.CloseIdle()
	}
	return n
}

// setLagOut takes a replica out of read rotation for lag (reason not
// empty) or puts it back (reason empty), logging the change.
func (s *Server) setLagOut(srv config.Server, reason string) {
	ep := endpointOf(srv)
	s.mu.Lock()
	old := s.lagOut[ep]
	if reason == "" {
		delete(s.lagOut, ep)
	} else {
		s.lagOut[ep] = reason
	}
	s.mu.Unlock()
	switch {
	case old == "" && reason != "":
		s.log.Warn("replica lags too far: out of read rotation", zap.String("server", srv.Addr()), zap.String("reason", reason))
	case old != "" && reason == "":
		s.log.Info("replica caught up: back in read rotation", zap.String("server", srv.Addr()))
	}
}

// rotationReason says why a replica is out of read rotation ("" when it
// is in).
func (s *Server) rotationReason(srv config.Server) string {
	ep := endpointOf(srv)
	primary := s.currentPrimary()
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case primary == srv:
		return "primary"
	case srv.Weight == 0:
		return "weight 0"
	case time.Now().Before(s.downUntil[ep]):
		return "unreachable"
	case s.lagOut[ep] != "":
		return s.lagOut[ep]
	}
	return ""
}

// inRotation reports whether reads may go to srv now.
func (s *Server) inRotation(srv config.Server) bool {
	if srv == s.currentPrimary() {
		return s.cfg.Load().Routing.ReadFrom == config.ReadFromAny || s.cfg.Load().Routing.ReadFrom == config.ReadFromPrimary || !s.hasReplicas()
	}
	if srv.Weight == 0 || !s.readsOffloaded() {
		return false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	ep := endpointOf(srv)
	return time.Now().After(s.downUntil[ep]) && s.lagOut[ep] == "" && s.isReplicaLocked(srv)
}

// inRotationEP is inRotation for a server known by its address.
func (s *Server) inRotationEP(ep endpoint) bool {
	for _, srv := range s.cfg.Load().Servers {
		if endpointOf(srv) == ep {
			return s.inRotation(srv)
		}
	}
	return false
}

// isReplicaLocked reports whether srv is one of the servers reads go to
// (not the primary); the caller holds mu.
func (s *Server) isReplicaLocked(srv config.Server) bool {
	return slices.Contains(s.replicaList(), srv)
}

// serverAt is the configured server at ep.
func (s *Server) serverAt(ep endpoint) config.Server {
	for _, srv := range s.cfg.Load().Servers {
		if endpointOf(srv) == ep {
			return srv
		}
	}
	return config.Server{Host: ep.host, Port: ep.port}
}

// ReadRetries counts autocommit reads run again on another server because
// their replica went away before answering.
func (s *Server) ReadRetries() int64 { return s.readRetries.Load() }

// weightedPick takes the n-th slot of the replicas laid out by weight.
func weightedPick(rs []config.Server, n uint64) config.Server {
	total := 0
	for _, r := range rs {
		total += r.Weight
	}
	i := int(n % uint64(total))
	for _, r := range rs {
		if i < r.Weight {
			return r
		}
		i -= r.Weight
	}
	return rs[0]
}

// servesDatabase reports whether clients may connect to database: any, when
// the databases key is empty.
func (s *Server) servesDatabase(database string) bool {
	dbs := s.cfg.Load().Databases
	return len(dbs) == 0 || slices.Contains(dbs, database)
}

// readsOffloaded reports whether reads may go to replicas at all.
func (s *Server) readsOffloaded() bool {
	return s.cfg.Load().Routing.ReadFrom != config.ReadFromPrimary && s.hasReplicas()
}

// hasReplicas reports whether any replica may take reads.
func (s *Server) hasReplicas() bool {
	for _, r := range s.replicaList() {
		if r.Weight > 0 {
			return true
		}
	}
	return false
}

// Reload applies a new configuration to what can change while running:
// auth.method and auth.users (for new logins), the tls section (new
// handshakes use the certificate files as they are now), max_client_conn,
// shutdown_timeout and the pool knobs. listen, servers, server_tls and
// log.format need a restart; changes to them are reported and ignored.
func (s *Server) Reload(cfg *config.Config) error {
	old := s.cfg.Load()
	if cfg.Listen != old.Listen {
		s.log.Warn("reload: listen changes need a restart; keeping the old value", zap.String("listen", old.Listen))
		cfg.Listen = old.Listen
	}
	if fmt.Sprint(cfg.Servers) != fmt.Sprint(old.Servers) {
		s.log.Warn("reload: servers changes need a restart; keeping the old list")
		cfg.Servers = old.Servers
	}
	if cfg.ServerTLS != old.ServerTLS {
		s.log.Warn("reload: server_tls changes need a restart; keeping the old values")
		cfg.ServerTLS = old.ServerTLS
	}
	// The certificate files are read again now: a file that does not load
	// refuses the whole reload, and the running certificate stays.
	front, err := newFrontTLS(cfg.TLS)
	if err != nil {
		return fmt.Errorf("reload refused: %w", err)
	}
	if err := s.checkLimits(context.Background(), cfg); err != nil {
		return err
	}
	if err := s.setAuth(cfg); err != nil {
		return err
	}
	s.front.Store(front)
	s.cfg.Store(cfg)
	if cfg.Log.File != old.Log.File {
		s.log.Warn("reload: log.file changes need a restart; keeping the old file", zap.String("log.file", old.Log.File))
	}
	s.qlog.cfg.Store(&cfg.Log)
	s.mu.Lock()
	secrets := map[string]string{}
	for _, u := range cfg.Auth.Users {
		secrets[u.Name] = u.Password
	}
	for k, p := range s.pools {
		p.SetLimits(poolLimits(&cfg.Pool))
		if pw, ok := secrets[k.user]; ok {
			p.SetPassword(pw) // a rotated password or verifier reaches the pools
		}
	}
	s.mu.Unlock()
	if len(cfg.Auth.Users) > 0 {
		s.catalogs.Refresh(cfg.Auth.ServiceUser())
	}
	s.log.Info("configuration reloaded")
	return nil
}

// checkLimits refuses cfg if its pools can open more connections on a
// server than the server allows, and logs each server's numbers. A server
// that cannot be asked is logged and not held against cfg: pgsplit starts
// while a replica is down.
func (s *Server) checkLimits(ctx context.Context, cfg *config.Config) error {
	limits, err := nodes.CheckLimits(ctx, cfg, s.currentPrimary().Addr())
	if err != nil {
		return err
	}
	for _, l := range limits {
		if l.Err != nil {
			s.log.Warn("connection limits not checked", zap.String("server", l.Server.Addr()), zap.Error(l.Err))
			continue
		}
		s.log.Info("connection limits", zap.String("server", l.Server.Addr()), zap.String("check", l.Formula()))
	}
	return nil
}

// Shutdown stops accepting clients, tells idle clients the server is going
// away (57P01 admin_shutdown), lets clients inside a transaction or a
// running statement finish for up to shutdown_timeout, then tells and
// disconnects the rest. It returns when every session has ended.
func (s *Server) Shutdown(ctx context.Context) {
	if !s.draining.CompareAndSwap(false, true) {
		return
	}
	timeout := s.cfg.Load().ShutdownTimeout
	s.pause.open(0) // held clients wake up, see the drain and end with 57P01
	if s.ln != nil {
		_ = s.ln.Close()
	}
	s.log.Info("shutting down: waiting for running transactions", zap.Duration("shutdown_timeout", timeout))
	for _, sess := range s.snapshot() {
		sess.drain()
	}
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-done:
	case <-t.C:
		left := s.snapshot()
		s.log.Warn("shutdown_timeout reached: disconnecting clients still in a transaction", zap.Int("clients", len(left)))
		for _, sess := range left {
			sess.kill()
		}
		<-done
	case <-ctx.Done():
		for _, sess := range s.snapshot() {
			sess.kill()
		}
		<-done
	}
	// Every session has ended, so no more query records: write the last
	// ones (and let a running EXPLAIN finish) before the pools close.
	if s.qlogOn {
		s.qlog.stop() // no more offers to the explainer
		s.qlog.explain.stop()
	}
	s.mu.Lock()
	for _, p := range s.pools {
		p.Close()
	}
	s.mu.Unlock()
	s.catalogs.Wait()
	s.nodes.Stop()
	s.lsn.stop()
	s.metrics.stop()
	s.log.Info("shutdown complete")
}

func (s *Server) snapshot() []*session {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]*session, 0, len(s.sessions))
	for _, sess := range s.sessions {
		out = append(out, sess)
	}
	return out
}
