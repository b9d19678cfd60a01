package nodes

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

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

// Catalog is the statement classifier of one database, with the
// volatility of its user functions read from pg_proc on the primary. Until
// the catalog is loaded, user functions count as unknown, which sends them
// to the primary. It also holds what the catalog says of the database's
// relations, for read-your-writes. Any number of sessions use it at once.
type Catalog struct {
	*router.Classifier
	volatile atomic.Pointer[map[string]bool] // "f" and "schema.f" → any overload volatile
	loading  atomic.Bool

	// rels is the catalog's relations as of loaded; changed counts the DDL
	// commits seen. While loaded < changed (or nothing is loaded) the
	// relations are not known: every write counts as writing every table.
	rels    atomic.Pointer[map[string]relInfo]
	changed atomic.Uint64
	loaded  atomic.Uint64
}

// NewCatalog returns a Catalog with cfg's routing lists and parser limits
// and nothing read from a server yet; Catalogs.For makes and loads the
// ones of the proxy's databases.
func NewCatalog(cfg *config.Config) *Catalog {
	d := &Catalog{}
	d.Classifier = router.NewClassifier(router.Options{
		WriteFunctions: cfg.Routing.WriteFunctions,
		ReadFunctions:  cfg.Routing.ReadFunctions,
		Volatile:       d.lookup,
		MaxParseDepth:  cfg.Limits.MaxParseDepth,
		MaxParseBytes:  cfg.Limits.MaxParseBytes,
	})
	return d
}

// relations is the catalog's relations while it is current, nil otherwise.
func (d *Catalog) relations() map[string]relInfo {
	m := d.rels.Load()
	if m == nil || d.loaded.Load() < d.changed.Load() {
		return nil
	}
	return *m
}

// WritesAny reports whether a write naming these relations may write
// relations it does not name (or the catalog is not current).
func (d *Catalog) WritesAny(names []string) bool {
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

// ReadsAny reports whether a read naming these relations may read
// relations it does not name: a view.
func (d *Catalog) ReadsAny(names []string) bool {
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

func (d *Catalog) lookup(name string) (volatile, known bool) {
	m := d.volatile.Load()
	if m == nil {
		return false, false
	}
	v, ok := (*m)[name]
	return v, ok
}

// Catalogs is the Catalog of every database clients have logged in to,
// each read in the background from the primary through the proxy's pools
// (so that pgsplit's own work stays within the pools' limits).
//
// Ownership: the proxy's Server owns it. It owns its load goroutines, at
// most one per database at a time; Wait waits for them.
type Catalogs struct {
	pools Pools
	log   *zap.Logger
	wg    sync.WaitGroup // the loads

	mu  sync.Mutex
	dbs map[string]*Catalog
}

// NewCatalogs returns an empty set that reads through pools (log nil: no
// logs).
func NewCatalogs(pools Pools, log *zap.Logger) *Catalogs {
	if log == nil {
		log = zap.NewNop()
	}
	return &Catalogs{pools: pools, log: log, dbs: map[string]*Catalog{}}
}

// For returns the Catalog of database, starting its load in the background
// the first time (with u's credentials).
func (cs *Catalogs) For(database string, u config.User) *Catalog {
	cfg := cs.pools.Config() // not under mu: see the package comment
	cs.mu.Lock()
	d, ok := cs.dbs[database]
	if !ok {
		d = NewCatalog(cfg)
		cs.dbs[database] = d
	}
	cs.mu.Unlock()
	if !ok {
		cs.load(d, database, u)
	}
	return d
}

// DDLCommitted notes a committed DDL statement in database, whose Catalog
// is d: relations may have been created or changed, so writes count as
// writing every table until the catalog, read again now, is loaded.
func (cs *Catalogs) DDLCommitted(d *Catalog, database string, u config.User) {
	d.changed.Add(1)
	cs.load(d, database, u)
}

// Refresh reads every database's catalog again (on RELOAD, and on the new
// primary after a failover).
func (cs *Catalogs) Refresh(u config.User) {
	cs.mu.Lock()
	all := make(map[string]*Catalog, len(cs.dbs))
	for db, d := range cs.dbs {
		all[db] = d
	}
	cs.mu.Unlock()
	for db, d := range all {
		cs.load(d, db, u)
	}
}

// Wait waits for the loads in progress.
func (cs *Catalogs) Wait() { cs.wg.Wait() }

// load reads function volatility for database in the background and
// drops the classifier's cache, whose answers were made without it.
func (cs *Catalogs) load(d *Catalog, database string, u config.User) {
	if !d.loading.CompareAndSwap(false, true) {
		return
	}
	cs.wg.Add(1)
	go func() {
		defer cs.wg.Done()
		for {
			gen := d.changed.Load()
			cs.loadOnce(d, database, u, gen)
			d.loading.Store(false)
			// A DDL commit while the load ran may not be in it: again.
			if d.changed.Load() == gen || !d.loading.CompareAndSwap(false, true) {
				return
			}
		}
	}()
}

// loadOnce reads function volatility and relations for database; gen is
// the count of DDL commits seen before it began.
func (cs *Catalogs) loadOnce(d *Catalog, database string, u config.User, gen uint64) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var vols, rels [][][]byte
	err := cs.pools.WithPrimaryConn(ctx, u, database, func(c *pool.Conn) (err error) {
		if vols, err = c.Query(ctx, volatilityQuery); err == nil {
			rels, err = c.Query(ctx, relationsQuery)
		}
		return err
	})
	if err != nil {
		cs.log.Warn("reading the catalog (pg_proc, pg_class) failed; user functions go to the primary and every write counts as writing every table",
			zap.String("database", database), zap.Error(err))
		return
	}
	m := volatilityMap(vols)
	d.volatile.Store(&m)
	rm := make(map[string]relInfo, len(rels))
	for _, row := range rels {
		rm[string(row[0])] = relInfo{view: string(row[1]) == "t", indirect: string(row[2]) == "t"}
	}
	d.rels.Store(&rm)
	d.loaded.Store(gen)
	d.Reset()
	cs.log.Debug("catalog loaded", zap.String("database", database), zap.Int("functions", len(m)), zap.Int("relations", len(rm)))
}

// ReadVolatility reads, from pg_proc of database on srv, whether each user
// function is VOLATILE (any overload), keyed by "name" and "schema.name".
// It opens a connection of its own (for the CLI).
func ReadVolatility(ctx context.Context, srv config.Server, u config.User, database string, timeout time.Duration, st config.ServerTLS) (map[string]bool, error) {
	rows, err := queryOnce(ctx, srv, u, nil, database, timeout, st, "pgsplit catalog", volatilityQuery)
	if err != nil {
		return nil, err
	}
	return volatilityMap(rows), nil
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
