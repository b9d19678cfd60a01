package proxy

import (
	"go.uber.org/zap"

	"github.com/pgsplit/pgsplit/config"
	"github.com/pgsplit/pgsplit/nodes"
	"github.com/pgsplit/pgsplit/pool"
	"github.com/pgsplit/pgsplit/router"
)

type poolKey struct {
	server         endpoint
	database, user string
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
