package proxy

import (
	"context"
	"errors"

	"github.com/pgsplit/pgsplit/config"
	"github.com/pgsplit/pgsplit/nodes"
	"github.com/pgsplit/pgsplit/pool"
	"github.com/pgsplit/pgsplit/router"
)

// This file is the proxy's side of package nodes, which owns the roles
// (the current primary and the replicas), the health checks and the
// catalogs. nodesHost is the Server as nodes sees it (nodes.Host): the
// configuration, the pools, and the read rotation the Server owns. It is a
// type of its own so that these methods do not join the Server's exported
// API.
type nodesHost struct{ s *Server }

var _ nodes.Host = nodesHost{}

func (h nodesHost) Config() *config.Config                  { return h.s.cfg.Load() }
func (h nodesHost) CloseIdle(srv config.Server)             { h.s.closeIdle(srv) }
func (h nodesHost) MarkDown(srv config.Server)              { h.s.markDown(srv) }
func (h nodesHost) MarkUp(srv config.Server)                { h.s.markUp(srv) }
func (h nodesHost) SetLagOut(srv config.Server, why string) { h.s.setLagOut(srv, why) }
func (h nodesHost) SetReplayed(srv config.Server, l uint64) { h.s.lsn.setReplayed(endpointOf(srv), l) }
func (h nodesHost) WithPrimaryConn(ctx context.Context, u config.User, database string, fn func(*pool.Conn) error) error {
	_, err := h.s.withPooledConn(ctx, router.Primary, u, database, fn)
	return err
}

// currentPrimary is the server writes go to now; its Host is empty while
// no primary is known (failover).
func (s *Server) currentPrimary() config.Server { return s.nodes.Primary() }

// replicaList is the servers that are not the primary now (shared: read
// it, never change it).
func (s *Server) replicaList() []config.Server {
	_, r := s.nodes.Roles()
	return r
}

// withPooledConn runs fn, pgsplit's own work, on a connection of the pool
// for (t, u, database), within the pool's limits. A client's settings left
// on the connection (statement_timeout…) are reset first so they cannot
// change or fail that work. The connection goes back afterwards unless it
// failed (an error from the server leaves it usable).
func (s *Server) withPooledConn(ctx context.Context, t router.Target, u config.User, database string, fn func(*pool.Conn) error) (config.Server, error) {
	p, srv := s.poolFor(t, u, database, 0)
	if p == nil {
		return srv, errNoServer
	}
	c, err := p.Acquire(ctx)
	if err != nil {
		return srv, err
	}
	err = c.ResetSettings(ctx)
	if err == nil {
		err = fn(c)
	}
	if _, serverErr := pool.IsServerError(err); err == nil || serverErr {
		p.Release(c)
	} else {
		p.Discard(c)
	}
	return srv, err
}

// errNoServer: no primary is known (failover) and no replica can serve.
var errNoServer = errors.New("no server available: no primary known")
