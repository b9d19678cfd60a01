package config

import (
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/pgsplit/pgsplit/internal/secret"
)

// Validate returns one line per problem, each naming the key, the bad value
// and what is allowed. An empty result means the configuration is usable.
func (c *Config) Validate() []string {
	var p []string
	bad := func(key string, val any, allowed string) {
		p = append(p, fmt.Sprintf("%s: %v is not allowed: %s", key, fmtVal(val), allowed))
	}
	listenAddr := func(key, val, example string) {
		if host, port, err := net.SplitHostPort(val); err != nil || host == "" {
			bad(key, val, "must be host:port, e.g. "+example)
		} else if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
			bad(key, val, "port must be 0-65535")
		}
	}

	listenAddr("listen", c.Listen, "127.0.0.1:6432")
	if c.MaxClientConn < 1 {
		bad("max_client_conn", c.MaxClientConn, "must be at least 1")
	}

	if len(c.Servers) == 0 {
		p = append(p, "servers: empty is not allowed: list at least one server, e.g. { host: 127.0.0.1, port: 5432, role: primary }")
	}
	primaries := 0
	for i, s := range c.Servers {
		key := fmt.Sprintf("servers[%d]", i)
		if s.Host == "" {
			bad(key+".host", s.Host, "must be a host name or IP address")
		}
		if s.Port < 1 || s.Port > 65535 {
			bad(key+".port", s.Port, "must be 1-65535")
		}
		switch s.Role {
		case RolePrimary:
			primaries++
		case RoleReplica, RoleAuto:
		default:
			bad(key+".role", s.Role, "must be primary, replica or auto")
		}
		if s.Weight < 0 {
			bad(key+".weight", s.Weight, "must be 0 or more")
		}
	}
	if primaries > 1 {
		bad("servers", fmt.Sprintf("%d primaries", primaries), "at most one server may have role primary")
	}

	switch c.Auth.Method {
	case AuthTrust, AuthMD5, AuthSCRAM:
	case AuthCert:
		if c.TLS.TLSMode() == TLSDisable || c.TLS.ClientCAFile == "" {
			bad("auth.method", c.Auth.Method, "needs tls.mode allow or require and tls.client_ca_file (the CAs that sign the clients' certificates)")
		}
	default:
		bad("auth.method", c.Auth.Method, "must be trust, md5, scram-sha-256 or cert")
	}
	if len(c.Auth.Users) == 0 {
		p = append(p, "auth.users: empty is not allowed: list at least one { name, password } (pgsplit also uses them to log in to the servers)")
	}
	// users checks a list of logins; noPassword says why an empty password
	// is refused ("" when it is allowed); method is how its clients prove
	// the password, and upstream whether pgsplit logs in to the servers
	// with it.
	users := func(list string, us []User, noPassword, method string, upstream bool) {
		seen := map[string]bool{}
		for i, u := range us {
			key := fmt.Sprintf("%s[%d]", list, i)
			if u.Name == "" {
				bad(key+".name", u.Name, "must not be empty")
			}
			if seen[u.Name] {
				bad(key+".name", u.Name, "each user may be listed once")
			}
			seen[u.Name] = true
			from := key + ".password"
			switch {
			case u.PasswordFile != "":
				from = key + ".password_file"
			case u.PasswordEnv != "":
				from = key + ".password_env"
			}
			if u.Password == "" {
				if from != key+".password" {
					p = append(p, from+": not read yet (config.Load reads it: Config.ResolveSecrets)")
				} else if noPassword != "" {
					p = append(p, fmt.Sprintf("%s.password: empty is not allowed %s", key, noPassword))
				}
				continue
			}
			if problem := SecretProblem(u.Password, method, upstream); problem != "" {
				p = append(p, from+": "+problem)
			}
		}
	}
	authNoPassword := "with auth.method " + c.Auth.Method
	if c.Auth.Method == AuthTrust || c.Auth.Method == AuthCert {
		authNoPassword = "" // the password is only pgsplit's login to the servers
	}
	users("auth.users", c.Auth.Users, authNoPassword, c.Auth.Method, true)
	users("admin.users", c.Admin.Users, "(admin logins always need a password: SCRAM when auth.method is trust or cert)", c.Auth.AdminMethod(), false)
	p = append(p, c.Auth.lookupProblems()...)

	switch c.Pool.Mode {
	case ModeSession, ModeTransaction:
	default:
		bad("pool.mode", c.Pool.Mode, "must be transaction or session")
	}
	if _, _, ok := ProfileSizes(c.Pool.Profile); !ok && c.Pool.Profile != "" {
		bad("pool.profile", c.Pool.Profile, "must be development (pool_size 5, max_overflow 10), staging (10, 20) or production (20, 40)")
	}
	if c.Pool.MaxPreparedStatements < 1 {
		bad("pool.max_prepared_statements", c.Pool.MaxPreparedStatements, "must be at least 1")
	}
	dbs := map[string]bool{}
	for i, d := range c.Databases {
		if d == "" || dbs[d] {
			bad(fmt.Sprintf("databases[%d]", i), d, "must be a database name, each listed once")
		}
		dbs[d] = true
	}
	if c.Pool.PoolSize < 1 {
		bad("pool.pool_size", c.Pool.PoolSize, "must be at least 1")
	}
	if c.Pool.MaxOverflow < 0 {
		bad("pool.max_overflow", c.Pool.MaxOverflow, "must be 0 or more")
	}
	positive := func(key string, d time.Duration) {
		if d <= 0 {
			bad(key, d, "must be a positive duration, e.g. 30s")
		}
	}
	positive("pool.pool_timeout", c.Pool.PoolTimeout)
	positive("pool.connect_timeout", c.Pool.ConnectTimeout)
	if c.Pool.PoolRecycle < 0 {
		bad("pool.pool_recycle", c.Pool.PoolRecycle, "must be 0 (never recycle) or a positive duration")
	}
	if c.Pool.OverflowIdleTimeout < 0 {
		bad("pool.overflow_idle_timeout", c.Pool.OverflowIdleTimeout, "must be 0 (close overflow connections when they come back) or a positive duration, e.g. 60s")
	}
	if c.Routing.HealthCheckInterval < 0 {
		bad("routing.health_check_interval", c.Routing.HealthCheckInterval, "must be 0 (no health checks) or a positive duration, e.g. 2s")
	}
	if c.ShutdownTimeout < 0 {
		bad("shutdown_timeout", c.ShutdownTimeout, "must be 0 or a positive duration")
	}

	switch c.Routing.ReadFrom {
	case ReadFromReplicas, ReadFromAny, ReadFromPrimary, ReadFromReplicasOnly:
	default:
		bad("routing.read_from", c.Routing.ReadFrom, "must be replicas, replicas_only, any or primary")
	}
	switch c.Routing.ReadYourWrites {
	case "", RYWTable, RYWSession, RYWLinearizable, RYWOff:
	default:
		bad("routing.read_your_writes", c.Routing.ReadYourWrites, "must be table, session, linearizable or off")
	}
	if c.Routing.ReadYourWrites == RYWLinearizable && c.Routing.ReadYourWritesWait == 0 {
		bad("routing.read_your_writes_wait", c.Routing.ReadYourWritesWait, "must be above 0 with read_your_writes: linearizable (each read waits for the primary's position; with 0 every read would go to the primary), e.g. 10ms")
	}
	if c.Routing.ReadYourWritesWait < 0 {
		bad("routing.read_your_writes_wait", c.Routing.ReadYourWritesWait, "must be 0 (no wait: straight to the primary) or a positive duration, e.g. 10ms")
	}
	if c.Routing.MaxReplicaLag < 0 {
		bad("routing.max_replica_lag", c.Routing.MaxReplicaLag, "must be 0 (no limit) or a positive duration, e.g. 10s")
	}
	if c.Routing.MaxReplicaLagBytes < 0 {
		bad("routing.max_replica_lag_bytes", c.Routing.MaxReplicaLagBytes, "must be 0 (no limit) or a positive number of bytes")
	}
	switch c.Routing.Transactions {
	case TxSplit, TxPrimary:
	default:
		bad("routing.transactions", c.Routing.Transactions, "must be split or primary")
	}
	switch c.Routing.LoadBalance {
	case BalanceLeastConn, BalanceRoundRobin, BalanceRandom:
	default:
		bad("routing.load_balance", c.Routing.LoadBalance, "must be least_conn, round_robin or random")
	}
	switch c.Log.Level {
	case "debug", "info", "warn", "error":
	default:
		bad("log.level", c.Log.Level, "must be debug, info, warn or error")
	}
	if c.Metrics.Listen != "" {
		listenAddr("metrics.listen", c.Metrics.Listen, "127.0.0.1:9930, or empty for no metrics")
	}
	switch c.Log.Queries {
	case QueriesAll, QueriesSlow, QueriesOff:
	default:
		bad("log.queries", c.Log.Queries, "must be all, slow or off")
	}
	positive("log.slow_query_threshold", c.Log.SlowQueryThreshold)
	if c.Log.SampleRate < 0 || c.Log.SampleRate > 1 {
		bad("log.sample_rate", c.Log.SampleRate, "must be between 0 and 1 (the share of statements under the threshold logged when log.queries is all)")
	}
	if c.Log.FileMaxSizeMB < 1 {
		bad("log.file_max_size_mb", c.Log.FileMaxSizeMB, "must be at least 1")
	}
	if c.Log.FileMaxBackups < 0 {
		bad("log.file_max_backups", c.Log.FileMaxBackups, "must be 0 or more")
	}
	c.Limits.validate(bad)
	p = append(p, c.TLS.validate()...)
	p = append(p, c.ServerTLS.validate()...)
	switch c.Log.Format {
	case "json", "console":
	default:
		bad("log.format", c.Log.Format, "must be json or console")
	}
	return p
}

// validate checks the tls section: the mode, and that the files it names
// load (a certificate and its key, the client CAs).
func (t TLS) validate() []string {
	var p []string
	switch t.Mode {
	case "", TLSDisable, TLSAllow, TLSRequire:
	default:
		p = append(p, fmt.Sprintf("tls.mode: %s is not allowed: must be disable, allow or require", fmtVal(t.Mode)))
	}
	if t.TLSMode() != TLSDisable {
		for _, f := range []struct{ key, path string }{{"tls.cert_file", t.CertFile}, {"tls.key_file", t.KeyFile}} {
			if f.path == "" {
				p = append(p, fmt.Sprintf("%s: empty is not allowed with tls.mode %s: name the PEM file of pgsplit's server certificate and its key", f.key, t.Mode))
			}
		}
	}
	p = append(p, pairProblems("tls.cert_file", t.CertFile, "tls.key_file", t.KeyFile)...)
	if t.ClientCAFile != "" {
		if _, err := LoadCAPool("tls.client_ca_file", t.ClientCAFile); err != nil {
			p = append(p, err.Error())
		}
	}
	return p
}

// validate checks the server_tls section.
func (t ServerTLS) validate() []string {
	var p []string
	switch t.Mode {
	case "", SSLDisable, SSLAllow, SSLPrefer, SSLRequire, SSLVerifyCA, SSLVerifyFull:
	default:
		p = append(p, fmt.Sprintf("server_tls.mode: %s is not allowed: must be disable, allow, prefer, require, verify-ca or verify-full (libpq's sslmode)", fmtVal(t.Mode)))
	}
	if (t.Mode == SSLVerifyCA || t.Mode == SSLVerifyFull) && t.CAFile == "" {
		p = append(p, fmt.Sprintf("server_tls.ca_file: empty is not allowed with server_tls.mode %s: name the PEM file of the CAs that sign the servers' certificates", t.Mode))
	}
	if t.CAFile != "" {
		if _, err := LoadCAPool("server_tls.ca_file", t.CAFile); err != nil {
			p = append(p, err.Error())
		}
	}
	if (t.CertFile == "") != (t.KeyFile == "") {
		p = append(p, "server_tls.cert_file, server_tls.key_file: set both (pgsplit's client certificate for the servers and its key) or neither")
	}
	return append(p, pairProblems("server_tls.cert_file", t.CertFile, "server_tls.key_file", t.KeyFile)...)
}

// pairProblems reports a certificate and key that are both named but do
// not load as a pair.
func pairProblems(certKey, certFile, keyKey, keyFile string) []string {
	if certFile == "" || keyFile == "" {
		return nil
	}
	if _, err := LoadKeyPair(certKey, certFile, keyKey, keyFile); err != nil {
		return []string{err.Error()}
	}
	return nil
}

func fmtVal(v any) string {
	switch x := v.(type) {
	case string:
		return strconv.Quote(x)
	case time.Duration:
		return x.String()
	}
	return fmt.Sprint(v)
}

// Bounds of the limits section: a message cap under 64 kB would refuse
// ordinary statements, one over PostgreSQL's own 1 GB is no cap.
const (
	minMessageSize = 64 << 10
	maxMessageSize = 1 << 30
)

func (l Limits) validate(bad func(key string, val any, allowed string)) {
	if l.MaxMessageSize < minMessageSize || l.MaxMessageSize > maxMessageSize {
		bad("limits.max_message_size", l.MaxMessageSize, fmt.Sprintf("must be %d (64 kB) to %d (1 GB, PostgreSQL's own limit) bytes", minMessageSize, maxMessageSize))
	}
	if l.MaxClientStatements < 1 {
		bad("limits.max_client_statements", l.MaxClientStatements, "must be at least 1")
	}
	if l.MaxClientStatementBytes < minMessageSize {
		bad("limits.max_client_statement_bytes", l.MaxClientStatementBytes, fmt.Sprintf("must be at least %d (64 kB)", minMessageSize))
	}
	if l.MaxBatchBytes < minMessageSize {
		bad("limits.max_batch_bytes", l.MaxBatchBytes, fmt.Sprintf("must be at least %d (64 kB)", minMessageSize))
	}
	if l.StartupTimeout <= 0 {
		bad("limits.startup_timeout", l.StartupTimeout, "must be a positive duration, e.g. 15s")
	}
	if l.ClientIdleTimeout < 0 {
		bad("limits.client_idle_timeout", l.ClientIdleTimeout, "must be 0 (never) or a positive duration, e.g. 1h")
	}
	if l.IdleInTransactionTimeout < 0 {
		bad("limits.idle_in_transaction_timeout", l.IdleInTransactionTimeout, "must be 0 (never) or a positive duration, e.g. 5m")
	}
	if l.MaxConnectionsPerIP < 0 {
		bad("limits.max_connections_per_ip", l.MaxConnectionsPerIP, "must be 0 (no cap) or more")
	}
	if l.MaxParseDepth < 10 || l.MaxParseDepth > 2500 {
		// libpg_query was seen to crash on 30,000 levels and refuses
		// 5,000; 2,500 keeps a margin.
		bad("limits.max_parse_depth", l.MaxParseDepth, "must be 10 to 2500")
	}
	if l.MaxParseBytes < 1024 {
		bad("limits.max_parse_bytes", l.MaxParseBytes, "must be at least 1024 bytes")
	}
}

// SecretProblem says why a user's secret cannot serve clients that log in
// with method (and, if upstream, pgsplit's own logins to the servers); ""
// when it can. It never includes the secret. Validate uses it for the
// configured users, the proxy for users auth.auth_query finds.
func SecretProblem(pw, method string, upstream bool) string {
	switch secret.KindOf(pw) {
	case secret.SCRAM:
		if _, err := secret.ParseVerifier(pw); err != nil {
			return err.Error()
		}
		if upstream && (method == AuthTrust || method == AuthCert) {
			return "a SCRAM verifier is not allowed with auth.method " + method + ": pgsplit logs in to the servers with the key it recovers from a client's SCRAM proof, and " + method + " asks for none (give the plain password, or use scram-sha-256)"
		}
	case secret.MD5:
		if method == AuthSCRAM {
			return "an md5 hash cannot check SCRAM logins (auth.method scram-sha-256; admin logins use SCRAM when auth.method is trust): give the plain password or the SCRAM verifier (pg_authid.rolpassword after SET password_encryption = 'scram-sha-256'), or use auth.method md5"
		}
	}
	return ""
}

// lookupProblems checks auth.auth_user and auth.auth_query.
func (a Auth) lookupProblems() []string {
	if a.AuthUser == "" {
		return nil
	}
	var p []string
	var lookup *User
	for i := range a.Users {
		if a.Users[i].Name == a.AuthUser {
			lookup = &a.Users[i]
		}
	}
	switch {
	case lookup == nil:
		p = append(p, fmt.Sprintf("auth.auth_user: %q is not allowed: must be one of auth.users (pgsplit logs in as it to look up the others)", a.AuthUser))
	case secret.KindOf(lookup.Password) == secret.SCRAM:
		p = append(p, fmt.Sprintf("auth.auth_user: %q has only a SCRAM verifier in auth.users: pgsplit needs its plain password (password, password_file or password_env) to log in as it before any client does", a.AuthUser))
	}
	if a.Method == AuthTrust || a.Method == AuthCert {
		p = append(p, "auth.auth_user: not allowed with auth.method "+a.Method+": a looked-up user logs in to the servers with what its client proves, and "+a.Method+" asks for no password")
	}
	if !strings.Contains(a.AuthQuery, "$1") {
		p = append(p, "auth.auth_query: must take the user name as $1, e.g. "+DefaultAuthQuery)
	}
	return p
}
