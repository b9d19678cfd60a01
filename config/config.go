// Package config loads pgsplit's configuration into typed structs and checks
// it. It is the only package that touches viper: everything else receives a
// *Config (or a part of it) and never reads files or the environment itself.
//
// Sources, lowest precedence first: built-in defaults, the YAML file given by
// --config, then environment variables PGSPLIT_<KEY> where nested keys are
// joined by "_" (PGSPLIT_POOL_POOL_SIZE=50). Unknown keys, in the file or as
// PGSPLIT_ variables, are refused so that a typo is never silently ignored.
package config

import (
	"net"
	"strconv"
	"time"

	"github.com/pgsplit/pgsplit/internal/secret"
)

// Roles a server can be configured with.
const (
	RolePrimary = "primary"
	RoleReplica = "replica"
	RoleAuto    = "auto"
)

// Authentication methods pgsplit offers clients.
const (
	AuthTrust = "trust"
	AuthMD5   = "md5"
	AuthSCRAM = "scram-sha-256"
	// AuthCert: the client's TLS certificate, verified against
	// tls.client_ca_file, proves the user whose name is its subject CN.
	AuthCert = "cert"
)

// Pool modes.
const (
	ModeSession     = "session"
	ModeTransaction = "transaction"
)

// Config is the whole configuration, as read from config.yaml.
type Config struct {
	Listen          string        `mapstructure:"listen"`
	MaxClientConn   int           `mapstructure:"max_client_conn"`
	Servers         []Server      `mapstructure:"servers"`
	Databases       []string      `mapstructure:"databases"`
	Auth            Auth          `mapstructure:"auth"`
	Pool            Pool          `mapstructure:"pool"`
	Routing         Routing       `mapstructure:"routing"`
	Log             Log           `mapstructure:"log"`
	Metrics         Metrics       `mapstructure:"metrics"`
	Admin           Admin         `mapstructure:"admin"`
	Limits          Limits        `mapstructure:"limits"`
	TLS             TLS           `mapstructure:"tls"`
	ServerTLS       ServerTLS     `mapstructure:"server_tls"`
	ShutdownTimeout time.Duration `mapstructure:"shutdown_timeout"`
}

// Limits bound what one client can make pgsplit hold or wait for, so that
// a hostile or broken client costs memory and slots in proportion to what
// it sends, never more. Each limit hit is logged and counted in
// pgsplit_limit_hits_total{limit}.
type Limits struct {
	// MaxMessageSize caps one client message (bytes, after the type byte
	// and length): a bigger one gets FATAL 54000 before pgsplit reads it.
	MaxMessageSize int `mapstructure:"max_message_size"`
	// MaxClientStatements and MaxClientStatementBytes cap the prepared
	// statements (Parse) pgsplit keeps for one client: their number, and
	// the bytes of their text and Parse messages together.
	MaxClientStatements     int `mapstructure:"max_client_statements"`
	MaxClientStatementBytes int `mapstructure:"max_client_statement_bytes"`
	// MaxBatchBytes caps what pgsplit keeps of one extended-protocol batch
	// before its Sync: the messages it holds back to route the batch as a
	// whole (past this much the batch streams to the primary instead) and
	// the statement and portal names a streamed batch leaves in its books.
	MaxBatchBytes int `mapstructure:"max_batch_bytes"`
	// StartupTimeout bounds a login from accept to the end of
	// authentication (startup packet, TLS, password exchange).
	StartupTimeout time.Duration `mapstructure:"startup_timeout"`
	// ClientIdleTimeout closes a client idle outside a transaction for
	// this long (0: never).
	ClientIdleTimeout time.Duration `mapstructure:"client_idle_timeout"`
	// IdleInTransactionTimeout ends a client idle inside a transaction for
	// this long, rolling the transaction back (0: never).
	IdleInTransactionTimeout time.Duration `mapstructure:"idle_in_transaction_timeout"`
	// MaxConnectionsPerIP caps connections from one client address,
	// counted from accept (0: no cap).
	MaxConnectionsPerIP int `mapstructure:"max_connections_per_ip"`
	// MaxParseDepth and MaxParseBytes keep statements nested deeper or
	// longer than this from the SQL parser (router.Parsable: libpg_query
	// crashes the process on deep enough statements); they go to the
	// primary unparsed.
	MaxParseDepth int `mapstructure:"max_parse_depth"`
	MaxParseBytes int `mapstructure:"max_parse_bytes"`
}

// DefaultLimits is the limits section's defaults, for configurations built
// in code.
func DefaultLimits() Limits {
	return Limits{MaxMessageSize: 64 << 20, MaxClientStatements: 1000, MaxClientStatementBytes: 16 << 20,
		MaxBatchBytes: 1 << 20, StartupTimeout: 15 * time.Second, MaxParseDepth: 1000, MaxParseBytes: 1 << 20}
}

// Server is one PostgreSQL server pgsplit may send statements to.
type Server struct {
	Host   string `mapstructure:"host"`
	Port   int    `mapstructure:"port"`
	Role   string `mapstructure:"role"`
	Weight int    `mapstructure:"weight"`
}

// Addr returns host:port.
func (s Server) Addr() string { return net.JoinHostPort(s.Host, strconv.Itoa(s.Port)) }

// Auth says how clients log in to pgsplit. The same users and passwords are
// used by pgsplit to log in to the servers.
type Auth struct {
	Method string `mapstructure:"method"`
	Users  []User `mapstructure:"users"`
	// AuthUser, when set, names an auth.users entry that pgsplit logs in
	// to the primary as to look up, with AuthQuery, users not in the list
	// (as PgBouncer's auth_user and auth_query do).
	AuthUser string `mapstructure:"auth_user"`
	// AuthQuery takes the user name as $1 and returns (name, password)
	// with the password as pg_authid holds it (SCRAM verifier or md5 hash).
	AuthQuery string `mapstructure:"auth_query"`
}

// ServiceUser is the login of pgsplit's own connections (role probe,
// limits check, health checks, positions, catalog reloads): auth_user if
// set, else the first auth.users entry with a plain password (which works
// before any client logged in), else the first entry. Call it on a valid
// configuration (auth.users is not empty).
func (a Auth) ServiceUser() User {
	for _, u := range a.Users {
		if a.AuthUser != "" && u.Name == a.AuthUser {
			return u
		}
	}
	for _, u := range a.Users {
		if a.AuthUser == "" && secret.KindOf(u.Password) == secret.Plain {
			return u
		}
	}
	return a.Users[0]
}

// DefaultAuthQuery is auth.auth_query's default, PgBouncer's: pg_shadow is
// readable by superusers only, so auth_user is a superuser or the query
// calls a SECURITY DEFINER function that reads it.
const DefaultAuthQuery = "SELECT usename, passwd FROM pg_shadow WHERE usename = $1"

// AdminMethod is how admin console logins are checked: auth.method, but
// SCRAM where that proves no password (trust, cert), since the console can
// shut pgsplit down.
func (a Auth) AdminMethod() string {
	if a.Method == AuthTrust || a.Method == AuthCert {
		return AuthSCRAM
	}
	return a.Method
}

// User is one login known to pgsplit. Its secret comes from exactly one of
// Password, PasswordFile and PasswordEnv; Load reads the file or the
// variable into Password (ResolveSecrets), so the rest of pgsplit only
// reads Password, which holds a plain password, an md5 hash ("md5" + 32
// hex digits) or a SCRAM-SHA-256 verifier as in pg_authid.rolpassword.
type User struct {
	Name     string `mapstructure:"name"`
	Password string `mapstructure:"password"`
	// PasswordFile is a file holding the secret (trailing newlines
	// dropped); it must not be readable by other users (mode 0600/0640).
	PasswordFile string `mapstructure:"password_file"`
	// PasswordEnv names an environment variable holding the secret.
	PasswordEnv string `mapstructure:"password_env"`
}

// String never shows the password, so a User can be logged safely.
func (u User) String() string { return u.Name + ":***" }

// Pool holds the pool knobs. Names and meanings follow SQLAlchemy's QueuePool
// as the team's guide uses them: at most PoolSize+MaxOverflow connections per
// pool, PoolSize of them kept when idle.
type Pool struct {
	Mode        string        `mapstructure:"mode"`
	Profile     string        `mapstructure:"profile"`
	PoolSize    int           `mapstructure:"pool_size"`
	MaxOverflow int           `mapstructure:"max_overflow"`
	PoolTimeout time.Duration `mapstructure:"pool_timeout"`
	PoolRecycle time.Duration `mapstructure:"pool_recycle"`
	PoolPrePing bool          `mapstructure:"pool_pre_ping"`
	// OverflowIdleTimeout is how long a connection over PoolSize stays open
	// idle (PgBouncer's server_idle_timeout); 0 closes it when it comes back.
	OverflowIdleTimeout time.Duration `mapstructure:"overflow_idle_timeout"`
	ConnectTimeout      time.Duration `mapstructure:"connect_timeout"`
	// MaxPreparedStatements caps the statements pgsplit keeps prepared on
	// one server connection; the least recently used is closed beyond it.
	MaxPreparedStatements int `mapstructure:"max_prepared_statements"`
	// ResetAfterFunctions resets a server connection (all session state but
	// prepared statements) before another client gets it when it ran a
	// function, DO block or CALL pgsplit cannot see into; false saves that
	// round trip and lets such state leak to the next client.
	ResetAfterFunctions bool `mapstructure:"reset_after_functions"`
}

// Pool profiles: the team's guide's recommended pool_size / max_overflow
// per environment.
const (
	ProfileDevelopment = "development"
	ProfileStaging     = "staging"
	ProfileProduction  = "production"
)

// ProfileSizes returns a profile's pool_size and max_overflow.
func ProfileSizes(profile string) (size, overflow int, ok bool) {
	switch profile {
	case ProfileDevelopment:
		return 5, 10, true
	case ProfileStaging:
		return 10, 20, true
	case ProfileProduction:
		return 20, 40, true
	}
	return 0, 0, false
}

// Routing values.
const (
	ReadFromReplicas = "replicas" // reads to replicas, the primary when none is usable
	ReadFromAny      = "any"      // reads to replicas and the primary alike
	ReadFromPrimary  = "primary"  // no offloading
	// ReadFromReplicasOnly: reads never go to the primary; with no replica
	// in rotation they fail (57P03).
	ReadFromReplicasOnly = "replicas_only"

	RYWTable   = "table"   // a read waits for the last commit of every table it touches
	RYWSession = "session" // a read waits for the client's own last commit
	RYWOff     = "off"     // no read-your-writes
	// RYWLinearizable: a read waits for the primary's position as of its
	// arrival, so it sees every commit made anywhere before it.
	RYWLinearizable = "linearizable"

	TxSplit   = "split"   // leading reads of a transaction on a replica, the rest on the primary
	TxPrimary = "primary" // every transaction that is not READ ONLY on the primary

	BalanceLeastConn  = "least_conn"
	BalanceRoundRobin = "round_robin"
	BalanceRandom     = "random"
)

// Routing says where statements go.
type Routing struct {
	ReadFrom       string   `mapstructure:"read_from"`
	Transactions   string   `mapstructure:"transactions"`
	LoadBalance    string   `mapstructure:"load_balance"`
	WriteFunctions []string `mapstructure:"write_functions"`
	ReadFunctions  []string `mapstructure:"read_functions"`
	// HealthCheckInterval is how often pgsplit asks every server whether it
	// is up and how far each replica lags (0: never).
	HealthCheckInterval time.Duration `mapstructure:"health_check_interval"`
	// ReadYourWrites is table, session, linearizable or off ("" means table).
	ReadYourWrites string `mapstructure:"read_your_writes"`
	// ReadYourWritesWait bounds how long a read waits for a replica to
	// replay the commits it must see before it goes to the primary.
	ReadYourWritesWait time.Duration `mapstructure:"read_your_writes_wait"`
	// MaxReplicaLag and MaxReplicaLagBytes take a replica out of read
	// rotation while it lags more (0: no limit); it returns under half.
	MaxReplicaLag      time.Duration `mapstructure:"max_replica_lag"`
	MaxReplicaLagBytes int64         `mapstructure:"max_replica_lag_bytes"`
}

// RYWMode is ReadYourWrites with the default filled in.
func (r Routing) RYWMode() string {
	if r.ReadYourWrites == "" {
		return RYWTable
	}
	return r.ReadYourWrites
}

// Log configures process logging.
type Log struct {
	Level  string `mapstructure:"level"`
	Format string `mapstructure:"format"`
	// Queries says which statements get a query-log record: all, slow (the
	// default: those over SlowQueryThreshold) or off.
	Queries            string        `mapstructure:"queries"`
	SlowQueryThreshold time.Duration `mapstructure:"slow_query_threshold"`
	// SampleRate is the share (0..1) of statements under the threshold that
	// are logged when Queries is all.
	SampleRate float64 `mapstructure:"sample_rate"`
	// Redact logs statements normalized (literals as $n); false keeps them.
	Redact bool `mapstructure:"redact"`
	// File, when set, receives the query log (rotated by size); process
	// logs stay on stderr.
	File           string `mapstructure:"file"`
	FileMaxSizeMB  int    `mapstructure:"file_max_size_mb"`
	FileMaxBackups int    `mapstructure:"file_max_backups"`
	// ExplainSlow runs EXPLAIN (FORMAT JSON) of slow reads on a replica in
	// the background and logs a plan summary.
	ExplainSlow bool `mapstructure:"explain_slow"`
	// ExplainAnalyze makes that EXPLAIN (ANALYZE, BUFFERS): the read runs
	// again on the replica, and the summary can flag row-estimate misses
	// and sorts that spilled to disk.
	ExplainAnalyze bool `mapstructure:"explain_analyze"`
}

// Admin configures the admin console (database "pgsplit").
type Admin struct {
	// Users may log in to the admin console; they authenticate with
	// auth.method like everyone else but need no server login.
	Users []User `mapstructure:"users"`
}

// AdminDatabase is the database name that opens the admin console.
const AdminDatabase = "pgsplit"

// Metrics configures the Prometheus endpoint.
type Metrics struct {
	// Listen is the address of /metrics, /healthz and /readyz; empty: off.
	Listen string `mapstructure:"listen"`
}

// Client-side TLS modes (tls.mode).
const (
	TLSDisable = "disable" // SSLRequest answered 'N', as before TLS existed
	TLSAllow   = "allow"   // TLS offered; plaintext clients still accepted
	TLSRequire = "require" // plaintext clients refused with FATAL 28000
)

// TLS is the TLS pgsplit offers its clients (the tls section). File paths
// may be shown (SHOW CONFIG); the key file's contents never are.
type TLS struct {
	// Mode is disable, allow or require ("" means disable).
	Mode     string `mapstructure:"mode"`
	CertFile string `mapstructure:"cert_file"`
	KeyFile  string `mapstructure:"key_file"`
	// ClientCAFile, when set, makes pgsplit ask clients for a certificate
	// and verify one that is given against these CAs (auth.method cert
	// needs it).
	ClientCAFile string `mapstructure:"client_ca_file"`
}

// TLSMode is Mode with the default filled in.
func (t TLS) TLSMode() string {
	if t.Mode == "" {
		return TLSDisable
	}
	return t.Mode
}

// Server-side TLS modes (server_tls.mode): libpq's sslmode values with
// libpq's meanings.
const (
	SSLDisable    = "disable"
	SSLAllow      = "allow"
	SSLPrefer     = "prefer"
	SSLRequire    = "require"
	SSLVerifyCA   = "verify-ca"
	SSLVerifyFull = "verify-full"
)

// ServerTLS is how pgsplit secures its own connections to the servers (the
// server_tls section): pooled connections, health checks, catalog reads
// and probes alike.
type ServerTLS struct {
	// Mode is a libpq sslmode ("" means prefer, libpq's default).
	Mode string `mapstructure:"mode"`
	// CAFile holds the CAs that sign the servers' certificates
	// (libpq's sslrootcert); verify-ca and verify-full need it.
	CAFile string `mapstructure:"ca_file"`
	// CertFile and KeyFile are the client certificate pgsplit shows the
	// servers (libpq's sslcert and sslkey), for hba method cert.
	CertFile string `mapstructure:"cert_file"`
	KeyFile  string `mapstructure:"key_file"`
}

// SSLMode is Mode with the default filled in.
func (t ServerTLS) SSLMode() string {
	if t.Mode == "" {
		return SSLPrefer
	}
	return t.Mode
}

// Query-log settings.
const (
	QueriesAll  = "all"
	QueriesSlow = "slow"
	QueriesOff  = "off"
)

// Primary returns the first server configured with role primary, if any.
func (c *Config) Primary() (Server, bool) {
	for _, s := range c.Servers {
		if s.Role == RolePrimary {
			return s, true
		}
	}
	return Server{}, false
}
