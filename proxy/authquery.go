package proxy

import (
	"context"
	"errors"
	"strings"
	"sync"
	"time"

	"github.com/pgsplit/pgsplit/internal/pgmsg"

	"github.com/jackc/pgx/v5/pgconn"
	"go.uber.org/zap"

	"github.com/pgsplit/pgsplit/pool"
	"github.com/pgsplit/pgsplit/router"
)

// LookupTTL is how long an auth.auth_query answer is kept, found or not: a
// role created (or its password changed) on the server is seen by the
// logins that start this long after the last lookup of its name at most.
const LookupTTL = 30 * time.Second

// maxLookups bounds the cache; past it, expired answers are dropped (a
// flood of made-up names cannot grow it without bound for long).
const maxLookups = 10000

// userLookups finds users that are not in auth.users with auth.auth_query,
// run with the extended protocol ($1 is the name, never spliced into the
// SQL) on the current primary as auth.auth_user, on a connection of the
// primary's pool for (auth_user, database): lookups count within that
// pool's limits and reuse its connections. Each lookup is bounded by
// pool.connect_timeout. Answers are cached for LookupTTL; errors are not.
// The Server owns it; it is safe for concurrent use. The cache holds
// verifiers and md5 hashes: it is never logged or shown.
type userLookups struct {
	s *Server

	mu    sync.Mutex
	cache map[string]lookupAnswer
}

type lookupAnswer struct {
	password string
	found    bool
	at       time.Time
}

func newUserLookups(s *Server) *userLookups {
	return &userLookups{s: s, cache: map[string]lookupAnswer{}}
}

// errLookupShape: auth_query did not return (name, password).
var errLookupShape = errors.New("auth.auth_query must return one row of two columns (name, password) or no row")

func (l *userLookups) find(user, database string) (string, bool, error) {
	now := time.Now()
	l.mu.Lock()
	a, ok := l.cache[user]
	l.mu.Unlock()
	if ok && now.Sub(a.at) < LookupTTL {
		return a.password, a.found, nil
	}
	previous := a.password
	cfg := l.s.cfg.Load()
	if !l.s.servesDatabase(database) {
		database = "postgres" // pg_authid is shared: any database answers
		if len(cfg.Databases) > 0 {
			database = cfg.Databases[0]
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), cfg.Pool.ConnectTimeout)
	defer cancel()
	var rows [][][]byte
	_, err := l.s.withPooledConn(ctx, router.Primary, cfg.Auth.ServiceUser(), database, func(c *pool.Conn) (err error) {
		rows, err = c.QueryParams(ctx, cfg.Auth.AuthQuery, nil, nil, [][]byte{[]byte(user)})
		return err
	})
	if err == nil && (len(rows) > 1 || len(rows) == 1 && len(rows[0]) != 2) {
		err = errLookupShape
	}
	if err != nil {
		l.s.log.Warn("auth.auth_query failed", zap.String("user", user), zap.String("auth_user", cfg.Auth.AuthUser), zap.Error(err))
		var pe *pgconn.PgError
		if errors.As(err, &pe) && (pe.Code == pgmsg.CodeInvalidCatalogName || strings.HasPrefix(pe.Code, "28")) {
			// The lookup's pool for a database that does not exist (any
			// name, with databases empty) must not stay behind.
			l.s.dropEmptyPools(database, cfg.Auth.ServiceUser().Name)
		}
		return "", false, err
	}
	a = lookupAnswer{at: now}
	if len(rows) == 1 && rows[0][1] != nil {
		a.password, a.found = string(rows[0][1]), true
		if a.password != previous {
			// A rotated verifier reaches the pools made with the old one.
			l.s.setPoolSecret(user, a.password)
		}
	}
	l.mu.Lock()
	if len(l.cache) >= maxLookups {
		for name, old := range l.cache {
			if now.Sub(old.at) >= LookupTTL {
				delete(l.cache, name)
			}
		}
	}
	l.cache[user] = a
	l.mu.Unlock()
	return a.password, a.found, nil
}
