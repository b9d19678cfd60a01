package admin

import (
	"errors"
	"fmt"
	"time"

	"github.com/pgsplit/pgsplit/config"
)

// Source is what the console reads and runs; proxy.Server implements it.
//
// Every method may be called from any goroutine. The listing methods return
// copies, taken under the implementation's own locks, that belong to the
// caller: the console holds no lock of the server and sees no session.
type Source interface {
	// Config is the running configuration. It is shared: read it, never
	// change it.
	Config() *config.Config

	// Clients lists the logged-in client sessions (the console's own
	// too), oldest first.
	Clients() []ClientInfo
	// Pools lists the pools by database, user and server.
	Pools() []PoolInfo
	// ServerConns lists the open server connections, in the order of
	// Pools and oldest first within a pool.
	ServerConns() []ServerConnInfo
	// Databases lists each database (those configured, or those seen
	// when any may be served) on each configured server.
	Databases() []DatabaseInfo
	// NodeHealth lists each configured server, primary first.
	NodeHealth() []NodeInfo
	// Stats are the per-database counters since start or ResetStats.
	Stats() Stats
	// TopQueries are the n statement fingerprints with the most total
	// time since start or ResetStats, most first.
	TopQueries(n int) []QueryInfo
	// Paused reports whether new transactions are held (PAUSE).
	Paused() bool

	// Pause holds new transactions and returns once none is running. It
	// calls abandon between its looks at the running ones; when that
	// reports true it lets them go again and returns a
	// *PauseAbandonedError. It refuses with ErrShuttingDown or
	// ErrAlreadyPaused.
	Pause(abandon func() bool) error
	// Resume lets held transactions go on; ErrNotPaused if none are held.
	Resume() error
	// ReloadFile re-reads the configuration file and applies it (as
	// SIGHUP); ErrNoConfigFile when there is none, or why the new
	// configuration was refused (the running one stays).
	ReloadFile() error
	// RequestShutdown asks the Server's owner for a graceful shutdown (as
	// SIGTERM); it returns at once.
	RequestShutdown()
	// ResetStats starts Stats and TopQueries again from zero.
	ResetStats()
}

// What Pause, Resume and ReloadFile refuse with.
var (
	ErrShuttingDown  = errors.New("pgsplit is shutting down")
	ErrAlreadyPaused = errors.New("pgsplit is already paused")
	ErrNotPaused     = errors.New("pgsplit is not paused")
	ErrNoConfigFile  = errors.New("RELOAD needs pgsplit started from a configuration file (pgsplit serve)")
)

// PauseAbandonedError is Pause giving up (the admin cancelled, left, or
// pgsplit began shutting down) while Busy clients were still inside a
// transaction or a statement.
type PauseAbandonedError struct{ Busy int }

func (e *PauseAbandonedError) Error() string {
	return fmt.Sprintf("PAUSE canceled while %d client(s) were still in a transaction; pgsplit is not paused", e.Busy)
}

// ClientInfo is one client session (SHOW CLIENTS).
type ClientInfo struct {
	User, Database string
	PID            uint32 // the BackendKeyData process id pgsplit gave it
	AppName        string // application_name at login
	TLS            string // the connection's TLS, "" for plain text
	// RemoteAddr and LocalAddr are host:port.
	RemoteAddr, LocalAddr string
	ConnectedAt           time.Time
	LastRequest           time.Time // zero: no message since login
	// WaitingSince is when it began waiting for a server connection or
	// RESUME (zero: not waiting).
	WaitingSince time.Time
	Admin        bool // an admin console session
	// Busy: it holds a server connection with a statement running or a
	// transaction open.
	Busy     bool
	Links    []ServerLink // the server connections it holds
	TxStatus byte         // of the last ReadyForQuery it saw (pgmsg.TxIdle…)
	PinnedBy string       // what pins it to its server connections
}

// ServerLink is a server connection a client holds.
type ServerLink struct {
	Target string // primary or replica
	PID    uint32 // the server's backend pid
}

// PoolInfo is one pool of server connections (SHOW POOLS).
type PoolInfo struct {
	Database, User string
	Server         string // host:port
	Role           string // primary or replica
	Clients        int64  // client sessions holding one of its connections
	// Open counts the connections open or being opened, Dialing those
	// being opened and Idle those waiting in the pool.
	Open, Idle, Dialing int64
	Waiting             int64         // clients waiting for a connection
	MaxWait             time.Duration // how long the oldest of them has waited
	Size, MaxOverflow   int64         // the pool's current knobs
}

// ServerConnInfo is one open server connection (SHOW SERVERS).
type ServerConnInfo struct {
	User, Database      string
	Role                string // of its server: primary or replica
	Addr, LocalAddr     string // the server's end and pgsplit's, host:port
	PID                 int64  // the server's backend pid
	TLS                 string // "" for plain text
	Idle                bool   // in the pool, not handed out
	Created             time.Time
	HandedOut, LastUsed time.Time // last taken from and given back to the pool
	Prepared            int64     // pgsplit statements prepared on it
	ClientPID           uint32    // the client holding it (0: none)
	ClientApp           string    // that client's application_name
}

// DatabaseInfo is one database on one server (SHOW DATABASES).
type DatabaseInfo struct {
	Name string
	Host string
	Port int64
	Role string // primary or replica
	Open int64  // server connections open for it on this server
	// Disabled: a replica out of read rotation.
	Disabled bool
}

// NodeInfo is one server's role and health (SHOW NODES).
type NodeInfo struct {
	Host string
	Port int64
	Role string // primary or replica, as pgsplit uses it
	// Checked is the last health check (zero: none yet); Healthy, Error
	// and InRecovery are its findings.
	Checked    time.Time
	Healthy    bool
	InRecovery bool
	Error      string
	LagBytes   int64   // replicas: WAL behind the primary; -1 unknown
	LagSeconds float64 // replicas: 0 when caught up; -1 unknown
	InRotation bool    // reads may go to it now
	Weight     int64   // its share of the reads
	// Rotation says why it is out of read rotation ("" when it is in).
	Rotation string
	// ReplayLSN is a replica's replayed WAL position as pg_lsn text (""
	// unknown).
	ReplayLSN        string
	SvActive, SvIdle int64 // its server connections handed out and idle
}

// Stats are the SHOW STATS counters.
type Stats struct {
	Since     time.Time // start, or the last ResetStats
	Databases []DatabaseStats
}

// DatabaseStats are one database's counters; times in microseconds.
type DatabaseStats struct {
	Name                      string
	Xacts, Queries            int64
	XactTime, QueryTime, Wait int64
	Received, Sent            int64 // client traffic, bytes
}

// QueryInfo is one statement fingerprint's numbers (SHOW QUERIES).
type QueryInfo struct {
	Fingerprint, Query    string
	Calls, Rows           int64
	Slow, Errors, Replica int64 // calls that were slow, failed, ran on a replica
	Total, Wait, Max, P95 time.Duration
}
