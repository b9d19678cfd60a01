package nodes

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/pgsplit/pgsplit/config"
)

// OwnConnections is how many connections pgsplit keeps to a server outside
// its pools: the health check's and read-your-writes' position reads (at
// start, finding the primary and this check use one of them at a time).
// Reading the catalog goes through the pools.
const OwnConnections = 2

// ServerLimit compares what a server allows with what pgsplit's
// configuration may open on it, as the team's guide does:
// total = pool_size + max_overflow per pool, one pool per user and
// database, against max_connections less the reserved slots.
type ServerLimit struct {
	Server                     config.Server
	Role                       string // primary or replica
	MaxConnections             int
	SuperuserReserved          int
	Reserved                   int // reserved_connections (PostgreSQL 16+), else 0
	Users, Databases           int
	DatabasesFrom              string // "databases key" or "server" (connectable databases there now)
	PoolSize, MaxOverflow, Own int
	Err                        error // the server could not be asked
}

// Available is what the server lets roles without reserved slots open.
func (l ServerLimit) Available() int { return l.MaxConnections - l.SuperuserReserved - l.Reserved }

// Needed is the most pgsplit may open on the server.
func (l ServerLimit) Needed() int { return l.Users*l.Databases*(l.PoolSize+l.MaxOverflow) + l.Own }

// Exceeds reports whether pgsplit may open more than the server allows.
func (l ServerLimit) Exceeds() bool { return l.Err == nil && l.Needed() > l.Available() }

// Formula writes the check out with its numbers.
func (l ServerLimit) Formula() string {
	if l.Err != nil {
		return fmt.Sprintf("server %s (%s): could not read its limits: %v", l.Server.Addr(), l.Role, l.Err)
	}
	verdict := fmt.Sprintf("%d remain for other clients", l.Available()-l.Needed())
	if l.Exceeds() {
		verdict = fmt.Sprintf("exceeds the server's limit by %d", l.Needed()-l.Available())
	}
	return fmt.Sprintf("server %s (%s): %d user(s) × %d database(s) (%s) × (pool_size %d + max_overflow %d) + %d pgsplit = %d; "+
		"the server allows max_connections %d − superuser_reserved_connections %d − reserved_connections %d = %d: %s",
		l.Server.Addr(), l.Role, l.Users, l.Databases, l.DatabasesFrom, l.PoolSize, l.MaxOverflow, l.Own, l.Needed(),
		l.MaxConnections, l.SuperuserReserved, l.Reserved, l.Available(), verdict)
}

// LimitError refuses a configuration whose pools can exceed a server's
// connection limit.
type LimitError struct{ Limits []ServerLimit }

func (e *LimitError) Error() string {
	var lines []string
	for _, l := range e.Limits {
		if l.Exceeds() {
			lines = append(lines, l.Formula())
		}
	}
	return "pool limits exceed what the servers allow (lower pool.pool_size / pool.max_overflow, list fewer databases or users, or raise max_connections):\n  " +
		strings.Join(lines, "\n  ")
}

// CheckLimits asks every server of cfg for its connection limits and
// compares them with what cfg's pools may open there. primary names the
// primary ("" if unknown: servers then show their configured role). It
// returns a *LimitError if any server can be exceeded; servers that cannot
// be asked are reported in their ServerLimit.Err, not as an error.
func CheckLimits(ctx context.Context, cfg *config.Config, primary string) ([]ServerLimit, error) {
	var out []ServerLimit
	var bad bool
	for _, srv := range cfg.Servers {
		if primary != "" && srv.Addr() != primary && (srv.Weight == 0 || cfg.Routing.ReadFrom == config.ReadFromPrimary) {
			continue // a replica that takes no reads gets no pool
		}
		l := ServerLimit{Server: srv, Role: srv.Role, Users: len(cfg.Auth.Users),
			PoolSize: cfg.Pool.PoolSize, MaxOverflow: cfg.Pool.MaxOverflow, Own: OwnConnections}
		if primary != "" {
			l.Role = config.RoleReplica
			if srv.Addr() == primary {
				l.Role = config.RolePrimary
			}
		}
		l.Err = readLimits(ctx, cfg, srv, &l)
		bad = bad || l.Exceeds()
		out = append(out, l)
	}
	if bad {
		return out, &LimitError{Limits: out}
	}
	return out, nil
}

const limitsQuery = `SELECT current_setting('max_connections')::int,
	current_setting('superuser_reserved_connections')::int,
	coalesce(current_setting('reserved_connections', true), '0')::int,
	(SELECT count(*) FROM pg_catalog.pg_database WHERE datallowconn AND NOT datistemplate)::int`

func readLimits(ctx context.Context, cfg *config.Config, srv config.Server, l *ServerLimit) error {
	u := cfg.Auth.ServiceUser()
	db := "postgres"
	if len(cfg.Databases) > 0 {
		db = cfg.Databases[0]
	}
	ctx, cancel := context.WithTimeout(ctx, cfg.Pool.ConnectTimeout+5*time.Second)
	defer cancel()
	rows, err := queryOnce(ctx, srv, u, nil, db, cfg.Pool.ConnectTimeout, cfg.ServerTLS, "pgsplit limits check", limitsQuery)
	if err != nil {
		return err
	}
	if len(rows) != 1 || len(rows[0]) != 4 {
		return errors.New("unexpected answer to the limits query")
	}
	n := make([]int, 4)
	for i, v := range rows[0] {
		if n[i], err = strconv.Atoi(string(v)); err != nil {
			return fmt.Errorf("limits query: %w", err)
		}
	}
	l.MaxConnections, l.SuperuserReserved, l.Reserved = n[0], n[1], n[2]
	if len(cfg.Databases) > 0 {
		l.Databases, l.DatabasesFrom = len(cfg.Databases), "databases key"
	} else {
		l.Databases, l.DatabasesFrom = n[3], "every connectable database on the server, as databases is empty"
	}
	return nil
}
