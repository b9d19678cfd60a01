package proxy

import (
	"context"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"go.uber.org/zap"

	"github.com/pgsplit/pgsplit/config"
	"github.com/pgsplit/pgsplit/pool"
	"github.com/pgsplit/pgsplit/router"
)

// volatilityQuery lists user functions (outside pg_catalog and
// information_schema) and whether any overload of each is VOLATILE.
const volatilityQuery = `SELECT n.nspname, p.proname, bool_or(p.provolatile = 'v')
FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
WHERE n.nspname NOT IN ('pg_catalog', 'information_schema')
GROUP BY 1, 2`

// dbClassifier is the classifier of one database, with the volatility of
// its user functions read from pg_proc on the primary. Until the catalog is
// loaded, user functions count as unknown, which sends them to the primary.
type dbClassifier struct {
	*router.Classifier
	volatile atomic.Pointer[map[string]bool] // "f" and "schema.f" → any overload volatile
	loading  atomic.Bool
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
		d = &dbClassifier{}
		d.Classifier = router.NewClassifier(router.Options{
			WriteFunctions: cfg.Routing.WriteFunctions,
			ReadFunctions:  cfg.Routing.ReadFunctions,
			Volatile:       d.lookup,
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
		defer d.loading.Store(false)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		m, err := s.readVolatilityPooled(ctx, u, database)
		if err != nil {
			s.log.Warn("reading function volatility from pg_proc failed; user functions go to the primary",
				zap.String("database", database), zap.Error(err))
			return
		}
		d.volatile.Store(&m)
		d.Reset()
		s.log.Info("function volatility loaded", zap.String("database", database), zap.Int("functions", len(m)))
	}()
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
func (s *Server) readVolatilityPooled(ctx context.Context, u config.User, database string) (map[string]bool, error) {
	p, _ := s.poolFor(router.Primary, u, database)
	c, err := p.Acquire(ctx)
	if err != nil {
		return nil, err
	}
	if len(c.State.Settings) > 0 {
		// A client's settings (statement_timeout…) must not fail pgsplit's
		// own query; the next client's SETs are replayed from scratch.
		if _, err := c.Exec(ctx, "RESET ALL"); err != nil {
			p.Discard(c)
			return nil, err
		}
		clear(c.State.Settings)
	}
	rows, err := c.Query(ctx, volatilityQuery)
	if err != nil {
		if _, ok := pool.IsServerError(err); ok {
			p.Release(c)
		} else {
			p.Discard(c)
		}
		return nil, err
	}
	p.Release(c)
	return volatilityMap(rows), nil
}

// ReadVolatility reads, from pg_proc of database on srv, whether each user
// function is VOLATILE (any overload), keyed by "name" and "schema.name".
func ReadVolatility(ctx context.Context, srv config.Server, u config.User, database string, timeout time.Duration) (map[string]bool, error) {
	pc, err := pool.ConnConfig(srv.Host, srv.Port, u.Name, u.Password, database, timeout)
	if err != nil {
		return nil, err
	}
	pc.RuntimeParams["application_name"] = "pgsplit catalog"
	conn, err := pgconn.ConnectConfig(ctx, pc)
	if err != nil {
		return nil, err
	}
	defer conn.Close(context.Background())
	res := conn.ExecParams(ctx, volatilityQuery, nil, nil, nil, nil).Read()
	if res.Err != nil {
		return nil, res.Err
	}
	return volatilityMap(res.Rows), nil
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
