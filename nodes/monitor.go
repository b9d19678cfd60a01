// Package nodes is what pgsplit knows of its servers: which one is the
// primary (failover, roles.go), how healthy each one is and how far each
// replica is behind (the health checks, health.go), what the primary's
// catalog says of each database's functions and relations (catalog.go),
// and whether the servers allow as many connections as the pools may open
// (limits.go).
//
// Dependencies point one way: proxy imports nodes, never the reverse. nodes
// talks back to the proxy only through Host, which the proxy implements:
// the configuration in force, its pools (close a server's idle
// connections, run pgsplit's own query on a pooled primary connection) and
// its read rotation (a replica down, reachable again, lagging, its replayed
// WAL position).
//
// Ownership: nodes owns the roles — the current primary, the list of
// replicas, and the channels that announce a change of primary or a round
// of checks. The proxy asks for them (Monitor.Primary, Roles,
// AwaitPrimary) and keeps no copy. The proxy owns the pools and the read
// rotation; nodes changes them only by calling Host. nodes never holds one
// of its locks while it calls Host, so the proxy may call into nodes under
// its own locks and Host's methods may call back into nodes.
//
// Goroutines: a Monitor's goroutine runs from Start to Stop and owns the
// health-check connections; a Catalogs' loads (one goroutine per database
// while it loads) are waited for by Catalogs.Wait.
package nodes

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"go.uber.org/zap"

	"github.com/pgsplit/pgsplit/config"
	"github.com/pgsplit/pgsplit/internal/secret"
	"github.com/pgsplit/pgsplit/pool"
)

// Pools is what nodes needs of the proxy's configuration and pools.
type Pools interface {
	// Config is the configuration in force now.
	Config() *config.Config
	// CloseIdle closes every idle pooled connection to srv (it changed
	// role), so that none is handed out again.
	CloseIdle(srv config.Server)
	// WithPrimaryConn runs fn, pgsplit's own work, on a connection of
	// the primary's pool for (u, database), within the pool's limits.
	WithPrimaryConn(ctx context.Context, u config.User, database string, fn func(*pool.Conn) error) error
}

// Rotation is the proxy's read rotation, which the health checks feed
// after each round, replica by replica.
type Rotation interface {
	// MarkDown takes a replica that failed its check out of rotation.
	MarkDown(srv config.Server)
	// MarkUp puts a replica that a fresh check connection reached back
	// into rotation.
	MarkUp(srv config.Server)
	// SetLagOut takes a replica out of rotation for lag (reason not
	// empty) or lets it back (reason empty).
	SetLagOut(srv config.Server, reason string)
	// SetReplayed records the WAL position srv has replayed.
	SetReplayed(srv config.Server, lsn uint64)
}

// Host is the proxy as a Monitor sees it.
type Host interface {
	Pools
	Rotation
}

// Options configure a Monitor. Host is required; nil fields mean what
// each says.
type Options struct {
	Host Host
	// Keys holds the ClientKeys of users configured with a SCRAM
	// verifier, for the checks' logins (nil: none).
	Keys *secret.KeyRing
	// Catalogs are read again on the new primary after a failover (nil:
	// none).
	Catalogs *Catalogs
	// Logger (nil: no logs).
	Logger *zap.Logger
}

// Monitor checks every configured server, every
// routing.health_check_interval, and decides from what they report which
// one is the primary (see roles.go and health.go).
//
// Ownership: the proxy's Server owns it, from New to Stop. Its goroutine
// owns the check connections (one per server: the "+1" of the
// connection-limits formula) and what was logged already; the roles are
// under mu and the statuses under statusMu, for any goroutine to read.
type Monitor struct {
	host Host
	cats *Catalogs
	keys *secret.KeyRing
	log  *zap.Logger

	conns map[string]*pgconn.PgConn // by server address; the checking goroutine's only

	statusMu sync.Mutex
	status   map[string]*NodeStatus // by server address: the last check's result

	mu        sync.Mutex
	primary   config.Server   // Host empty: none known
	replicas  []config.Server // every configured server that is not primary; replaced, never changed in place
	primaryCh chan struct{}   // closed (and replaced) when primary changes
	checkedCh chan struct{}   // closed (and replaced) after every round of checks
	changes   int64           // changes of primary

	started atomic.Bool
	quit    chan struct{}
	done    chan struct{}
	probe   chan struct{} // check now (a primary connection failed)

	// The checking goroutine's only: what was logged already.
	warnedStandby map[string]bool
	warnedSplit   bool
}

// New prepares a Monitor; it opens no connection and knows no primary
// until FindPrimary.
func New(o Options) *Monitor {
	log := o.Logger
	if log == nil {
		log = zap.NewNop()
	}
	return &Monitor{host: o.Host, cats: o.Catalogs, keys: o.Keys, log: log,
		conns: map[string]*pgconn.PgConn{}, status: map[string]*NodeStatus{},
		primaryCh: make(chan struct{}), checkedCh: make(chan struct{}),
		quit: make(chan struct{}), done: make(chan struct{}), probe: make(chan struct{}, 1), warnedStandby: map[string]bool{}}
}

// Start checks every server once, before the first client (roles as the
// servers report them: a server configured primary that is a standby gets
// no writes), when checks are on, then starts the goroutine that checks
// them every routing.health_check_interval until Stop.
func (m *Monitor) Start() {
	if m.host.Config().Routing.HealthCheckInterval > 0 {
		m.checkAll()
	}
	m.started.Store(true)
	go m.run()
}

// Stop ends the checks and closes their connections, waiting up to 10 s
// for a check in progress. It may be called more than once, and without
// Start.
func (m *Monitor) Stop() {
	if !m.started.Load() {
		return
	}
	select {
	case <-m.quit:
		return
	default:
	}
	close(m.quit)
	select {
	case <-m.done:
	case <-time.After(10 * time.Second):
	}
}

// ProbeNow asks for a check of every server at once (a primary connection
// failed).
func (m *Monitor) ProbeNow() {
	select {
	case m.probe <- struct{}{}:
	default: // one is asked for already
	}
}

func (m *Monitor) run() {
	defer close(m.done)
	defer func() {
		for _, c := range m.conns {
			_ = c.Close(context.Background())
		}
	}()
	for {
		every := m.host.Config().Routing.HealthCheckInterval
		if every > 0 {
			m.checkAll()
			if m.Primary().Host == "" {
				every = min(every, noPrimaryProbe) // follow a failover closely
			}
		} else {
			every = time.Second // checks off: look at the setting again later
		}
		select {
		case <-m.quit:
			return
		case <-m.probe:
		case <-time.After(every):
		}
	}
}
