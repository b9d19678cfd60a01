package proxy

import (
	"context"
	"errors"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"go.uber.org/zap"

	"github.com/pgsplit/pgsplit/config"
	"github.com/pgsplit/pgsplit/internal/secret"
	"github.com/pgsplit/pgsplit/pool"
	"github.com/pgsplit/pgsplit/router"
)

// volatilityQuery lists user functions (outside pg_catalog and
// information_schema) and whether any overload of each is VOLATILE.
const volatilityQuery = `SELECT n.nspname, p.proname, bool_or(p.provolatile = 'v')
FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
WHERE n.nspname NOT IN ('pg_catalog', 'information_schema')
GROUP BY 1, 2`

// relationsQuery lists the relations whose names a statement may use and
// what read-your-writes must know of each: a view (a read of it may read
// any table), or a table that a write may change others through (a
// trigger, a rule, a foreign key that cascades to another table,
// partitions or inheritance).
const relationsQuery = `SELECT c.relname, bool_or(c.relkind = 'v'),
 bool_or(c.relkind = 'v' OR c.relkind = 'p' OR c.relispartition
  OR EXISTS (SELECT 1 FROM pg_catalog.pg_trigger t WHERE t.tgrelid = c.oid AND NOT t.tgisinternal)
  OR EXISTS (SELECT 1 FROM pg_catalog.pg_rewrite r WHERE r.ev_class = c.oid AND r.rulename <> '_RETURN')
  OR EXISTS (SELECT 1 FROM pg_catalog.pg_constraint k WHERE k.contype = 'f' AND k.confrelid = c.oid
   AND (k.confdeltype IN ('c', 'n', 'd') OR k.confupdtype IN ('c', 'n', 'd')))
  OR EXISTS (SELECT 1 FROM pg_catalog.pg_inherits i WHERE i.inhrelid = c.oid OR i.inhparent = c.oid))
FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f') AND n.nspname NOT IN ('pg_catalog', 'information_schema')
GROUP BY 1`

// relInfo is what read-your-writes knows of a relation name.
type relInfo struct {
	view     bool // reading it may read any table
	indirect bool // writing it may write other tables
}

// dbClassifier is the classifier of one database, with the volatility of
// its user functions read from pg_proc on the primary. Until the catalog is
// loaded, user functions count as unknown, which sends them to the primary.
// It also holds the database's read-your-writes marks and what the catalog
// says of its relations.
type dbClassifier struct {
	*router.Classifier
	volatile atomic.Pointer[map[string]bool] // "f" and "schema.f" → any overload volatile
	loading  atomic.Bool

	writes *dbWrites // guarded by the Server's lsnTracker mu
	// rels is the catalog's relations as of loaded; changed counts the DDL
	// commits seen. While loaded < changed (or nothing is loaded) the
	// relations are not known: every write counts as writing every table.
	rels    atomic.Pointer[map[string]relInfo]
	changed atomic.Uint64
	loaded  atomic.Uint64
}

// catalogChanged notes a committed DDL statement: relations may have been
// created or changed, so writes count as writing every table until the
// catalog is read again.
func (d *dbClassifier) catalogChanged() { d.changed.Add(1) }

// relations is the catalog's relations while it is current, nil otherwise.
func (d *dbClassifier) relations() map[string]relInfo {
	m := d.rels.Load()
	if m == nil || d.loaded.Load() < d.changed.Load() {
		return nil
	}
	return *m
}

// writesAny reports whether a write naming these relations may write
// relations it does not name (or the catalog is not current).
func (d *dbClassifier) writesAny(names []string) bool {
	rels := d.relations()
	if rels == nil {
		return true
	}
	for _, n := range names {
		if rels[n].indirect {
			return true
		}
	}
	return false
}

// readsAny reports whether a read naming these relations may read
// relations it does not name: a view.
func (d *dbClassifier) readsAny(names []string) bool {
	m := d.rels.Load()
	if m == nil {
		return true
	}
	for _, n := range names {
		if (*m)[n].view {
			return true
		}
	}
	return false
}

func (d *dbClassifier) lookup(name string) (volatile, known bool) {
	m := d.volatile.Load()
	if m == nil {
		return false, false
	}
	v, ok := (*m)[name]
	return v, ok
}

// classifierFor returns the classifier for database, starting a catalog
// load in the background the first time (with u's credentials).
func (s *Server) classifierFor(database string, u config.User) *dbClassifier {
	s.mu.Lock()
	d, ok := s.classifiers[database]
	if !ok {
		cfg := s.cfg.Load()
		d = &dbClassifier{writes: &dbWrites{tables: map[string]*mark{}}}
		d.Classifier = router.NewClassifier(router.Options{
			WriteFunctions: cfg.Routing.WriteFunctions,
			ReadFunctions:  cfg.Routing.ReadFunctions,
			Volatile:       d.lookup,
			MaxParseDepth:  cfg.Limits.MaxParseDepth,
			MaxParseBytes:  cfg.Limits.MaxParseBytes,
		})
		s.classifiers[database] = d
	}
	s.mu.Unlock()
	if !ok {
		s.loadCatalog(d, database, u)
	}
	return d
}

// loadCatalog reads function volatility for database in the background and
// drops the classifier's cache, whose answers were made without it.
func (s *Server) loadCatalog(d *dbClassifier, database string, u config.User) {
	if !d.loading.CompareAndSwap(false, true) {
		return
	}
	s.bg.Add(1)
	go func() {
		defer s.bg.Done()
		for {
			gen := d.changed.Load()
			s.loadCatalogOnce(d, database, u, gen)
			d.loading.Store(false)
			// A DDL commit while the load ran may not be in it: again.
			if d.changed.Load() == gen || !d.loading.CompareAndSwap(false, true) {
				return
			}
		}
	}()
}

// loadCatalogOnce reads function volatility and relations for database;
// gen is the count of DDL commits seen before it began.
func (s *Server) loadCatalogOnce(d *dbClassifier, database string, u config.User, gen uint64) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var rels [][][]byte
	m, err := s.readVolatilityPooled(ctx, u, database, func(c *pool.Conn) (err error) {
		rels, err = c.Query(ctx, relationsQuery)
		return err
	})
	if err != nil {
		s.log.Warn("reading the catalog (pg_proc, pg_class) failed; user functions go to the primary and every write counts as writing every table",
			zap.String("database", database), zap.Error(err))
		return
	}
	d.volatile.Store(&m)
	rm := make(map[string]relInfo, len(rels))
	for _, row := range rels {
		rm[string(row[0])] = relInfo{view: string(row[1]) == "t", indirect: string(row[2]) == "t"}
	}
	d.rels.Store(&rm)
	d.loaded.Store(gen)
	d.Reset()
	s.log.Debug("catalog loaded", zap.String("database", database), zap.Int("functions", len(m)), zap.Int("relations", len(rm)))
}

// refreshCatalogs reloads every database's catalog (on RELOAD).
func (s *Server) refreshCatalogs(u config.User) {
	s.mu.Lock()
	all := make(map[string]*dbClassifier, len(s.classifiers))
	for db, d := range s.classifiers {
		all[db] = d
	}
	s.mu.Unlock()
	for db, d := range all {
		s.loadCatalog(d, db, u)
	}
}

// readVolatilityPooled reads the volatility of database's functions on a
// connection of the primary's pool for (database, u), so that pgsplit's own
// work stays within the pool's limits.
func (s *Server) readVolatilityPooled(ctx context.Context, u config.User, database string, also func(*pool.Conn) error) (map[string]bool, error) {
	var rows [][][]byte
	_, err := s.withPooledConn(ctx, router.Primary, u, database, func(c *pool.Conn) (err error) {
		if rows, err = c.Query(ctx, volatilityQuery); err == nil && also != nil {
			err = also(c)
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	return volatilityMap(rows), nil
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

// ReadVolatility reads, from pg_proc of database on srv, whether each user
// function is VOLATILE (any overload), keyed by "name" and "schema.name".
func ReadVolatility(ctx context.Context, srv config.Server, u config.User, database string, timeout time.Duration, st config.ServerTLS) (map[string]bool, error) {
	rows, err := queryOnce(ctx, srv, u, nil, database, timeout, st, "pgsplit catalog", volatilityQuery)
	if err != nil {
		return nil, err
	}
	return volatilityMap(rows), nil
}

// queryOnce opens a connection of its own to srv (outside the pools: for
// the CLI and for checks before the pools exist), runs one query and closes
// the connection. application_name says what pgsplit is doing. keys (nil:
// none) holds the ClientKey of a user configured with a SCRAM verifier;
// st is server_tls.
func queryOnce(ctx context.Context, srv config.Server, u config.User, keys *secret.KeyRing, database string, timeout time.Duration, st config.ServerTLS, appName, sql string) ([][][]byte, error) {
	pc, err := pool.LoginConfig(srv.Host, srv.Port, upstreamTLS(st), u.Name, u.Password, database, timeout, keys)
	if err != nil {
		return nil, err
	}
	pc.RuntimeParams["application_name"] = appName
	conn, err := pgconn.ConnectConfig(ctx, pc)
	if err != nil {
		return nil, err
	}
	defer conn.Close(context.Background())
	res := conn.ExecParams(ctx, sql, nil, nil, nil, nil).Read()
	return res.Rows, res.Err
}

// volatilityMap turns volatilityQuery's rows into the classifier's lookup.
func volatilityMap(rows [][][]byte) map[string]bool {
	m := make(map[string]bool, 2*len(rows))
	for _, row := range rows {
		schema, name, volatile := string(row[0]), string(row[1]), string(row[2]) == "t"
		m[schema+"."+name] = volatile
		// Unqualified, the search_path decides which schema's function
		// runs: volatile if any of them is.
		m[name] = m[name] || volatile
	}
	return m
}
