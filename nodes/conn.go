package nodes

import (
	"context"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgsplit/pgsplit/config"
	"github.com/pgsplit/pgsplit/internal/secret"
	"github.com/pgsplit/pgsplit/pool"
)

// This file is pgsplit's own connections to the servers, outside the pools.

// PoolTLS is server_tls in the pool's terms: for the proxy's pools and for
// pgsplit's own connections alike.
func PoolTLS(t config.ServerTLS) pool.TLS {
	return pool.TLS{Mode: t.SSLMode(), CAFile: t.CAFile, CertFile: t.CertFile, KeyFile: t.KeyFile}
}

// Dial opens one of pgsplit's own long-lived connections to srv (health
// checks, read-your-writes' positions: OwnConnections): database postgres
// as auth.ServiceUser, else the first listed database when postgres
// refuses the login. keys (nil: none) holds the ClientKeys of users
// configured with a SCRAM verifier. application_name says what the
// connection is for. The caller owns the connection and closes it.
func Dial(ctx context.Context, cfg *config.Config, keys *secret.KeyRing, srv config.Server, appName string) (*pgconn.PgConn, error) {
	dbs := []string{"postgres"}
	if len(cfg.Databases) > 0 {
		dbs = append(dbs, cfg.Databases[0])
	}
	var err error
	for _, db := range dbs {
		var pc *pgconn.Config
		u := cfg.Auth.ServiceUser()
		pc, err = pool.LoginConfig(srv.Host, srv.Port, PoolTLS(cfg.ServerTLS), u.Name, u.Password, db, cfg.Pool.ConnectTimeout, keys)
		if err == nil {
			pc.RuntimeParams["application_name"] = appName
			var c *pgconn.PgConn
			if c, err = pgconn.ConnectConfig(ctx, pc); err == nil {
				return c, nil
			}
		}
		if !loginRefused(err) {
			break
		}
	}
	return nil, err
}

// queryOnce opens a connection of its own to srv (outside the pools: for
// the CLI and for checks before the pools exist), runs one query and closes
// the connection. application_name says what pgsplit is doing. keys (nil:
// none) holds the ClientKey of a user configured with a SCRAM verifier;
// st is server_tls.
func queryOnce(ctx context.Context, srv config.Server, u config.User, keys *secret.KeyRing, database string, timeout time.Duration, st config.ServerTLS, appName, sql string) ([][][]byte, error) {
	pc, err := pool.LoginConfig(srv.Host, srv.Port, PoolTLS(st), u.Name, u.Password, database, timeout, keys)
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
