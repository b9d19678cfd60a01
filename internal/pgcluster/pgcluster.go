// Package pgcluster starts a throwaway, real PostgreSQL cluster — one primary
// plus any number of streaming replicas — for the `pgsplit demo` command and
// for end-to-end tests.
//
// Every server listens on 127.0.0.1 only, on a free port chosen at start-up,
// and is tuned for speed rather than durability (fsync=off, small
// shared_buffers). The superuser "postgres" may connect over TCP without a
// password (trust); the application role (Options.AppUser) authenticates with
// Options.AppAuth.
//
// When the process runs as root (initdb refuses root), every server command
// runs as the OS user "postgres" and the data folders are owned by it.
//
// Typical use:
//
//	c, err := pgcluster.Start(ctx, pgcluster.Options{Replicas: 2})
//	if err != nil { ... }
//	defer c.Stop()
//	dsn := c.AppDSN(c.Primary)
package pgcluster

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"
)

const (
	// localhost is the only address the servers listen on.
	localhost = "127.0.0.1"
	// superuser is the bootstrap superuser created by initdb.
	superuser = "postgres"
	// streamingTimeout bounds the wait for replicas to reach 'streaming'.
	streamingTimeout = 60 * time.Second
	// stopTimeout bounds each pg_ctl stop in Stop.
	stopTimeout = 90 * time.Second
	// maxSocketPath is the usable length of a Unix socket path (sun_path is
	// 108 bytes on Linux including the terminating NUL).
	maxSocketPath = 107
)

// Options configures Start. The zero value is usable: a primary without
// replicas in a fresh temporary folder, role and database "app" with password
// "app" authenticated by scram-sha-256.
type Options struct {
	// Dir is the parent folder for the data folders, logs and sockets. ""
	// means a new os.MkdirTemp folder, removed by Stop. A caller-supplied Dir
	// is left in place by Stop (with its contents) and must not already hold
	// data folders named primary, replica1, …; when running as root the OS
	// user postgres needs search (x) permission on it and all its parents.
	Dir string
	// Replicas is the number of streaming replicas (0 allowed).
	Replicas int
	// AppUser is the LOGIN role created on the primary with password
	// AppPassword, owner of the database of the same name. Default "app".
	AppUser string
	// AppPassword is AppUser's password. Default "app".
	AppPassword string
	// AppAuth is the pg_hba.conf method for AppUser (and any other
	// non-superuser role) connecting from 127.0.0.1: "scram-sha-256"
	// (default), "md5" or "trust".
	AppAuth string
	// MaxConnections is the max_connections setting of every server.
	// Default 100.
	MaxConnections int
	// Log receives progress lines ("starting primary on port N"); nil
	// discards them.
	Log io.Writer
	// TLS, when set, turns ssl on with this certificate, and every
	// non-superuser login (AppUser's included) must come over TLS: their
	// pg_hba.conf lines are hostssl. The superuser keeps a plain host line,
	// so Psql and SuperuserDSN work as without TLS.
	TLS *TLS
}

// TLS is a server certificate and its private key, PEM (see
// internal/testcert). The files are written into the primary's data folder
// (replicas copy them with the rest).
type TLS struct {
	CertPEM, KeyPEM []byte
}

// Node is one PostgreSQL server of a Cluster.
type Node struct {
	Name    string // "primary", "replica1", "replica2"…
	Host    string // "127.0.0.1"
	Port    int
	DataDir string
}

// Cluster is a running primary plus its streaming replicas, created by Start
// and torn down by Stop.
type Cluster struct {
	// Dir is the parent folder holding the data folders, the server logs
	// (<name>.log) and, usually, the Unix socket folder.
	Dir string
	// BinDir is the folder of the PostgreSQL server binaries in use.
	BinDir string
	// Primary is the read-write server.
	Primary Node
	// Replicas are the hot-standby servers streaming from Primary.
	Replicas []Node

	opts          Options
	log           io.Writer
	psqlPath      string
	su            *serverUser // nil: run server commands as the current user
	sockDir       string
	removeDir     bool // Dir was created by Start
	removeSockDir bool // sockDir is a separate temporary folder
	usedPorts     map[int]bool

	mu      sync.Mutex
	running map[string]bool // data dirs of servers we (tried to) start and have not stopped
	stopped bool
}

// serverUser is the OS account the server commands run as when we are root.
type serverUser struct {
	name   string
	uid    int
	gid    int
	groups []int
	home   string
}

// FreePort returns a free TCP port on 127.0.0.1 (it listens on port 0 and
// closes the listener again, so the port could be taken by someone else
// before it is used).
func FreePort() (int, error) {
	l, err := net.Listen("tcp", net.JoinHostPort(localhost, "0"))
	if err != nil {
		return 0, fmt.Errorf("find free port: %w", err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	if err := l.Close(); err != nil {
		return 0, fmt.Errorf("find free port: close listener: %w", err)
	}
	return port, nil
}

// Start creates and starts the cluster: initdb and start the primary, create
// the application role and database, clone each replica with pg_basebackup
// and start it. It returns once every replica shows state 'streaming' in
// pg_stat_replication on the primary (waiting at most 60 s, or less if ctx
// has an earlier deadline). On error everything that was started or created
// is stopped and removed again, and the error names the failed step (with
// the tail of the server log where relevant).
func Start(ctx context.Context, opts Options) (_ *Cluster, err error) {
	began := time.Now()
	opts, err = withDefaults(opts)
	if err != nil {
		return nil, err
	}
	binDir, err := FindBinDir()
	if err != nil {
		return nil, fmt.Errorf("pgcluster: %w", err)
	}
	psqlPath := filepath.Join(binDir, "psql")
	if !isExecutable(psqlPath) {
		if psqlPath, err = exec.LookPath("psql"); err != nil {
			return nil, fmt.Errorf("pgcluster: psql not found in %s or PATH: install the PostgreSQL client (`apt-get install postgresql-client`): %w", binDir, err)
		}
	}
	su, err := lookupServerUser()
	if err != nil {
		return nil, fmt.Errorf("pgcluster: %w", err)
	}

	c := &Cluster{
		BinDir:    binDir,
		opts:      opts,
		log:       opts.Log,
		psqlPath:  psqlPath,
		su:        su,
		usedPorts: map[int]bool{},
		running:   map[string]bool{},
	}
	if c.log == nil {
		c.log = io.Discard
	}
	defer func() {
		if err != nil {
			if stopErr := c.Stop(); stopErr != nil {
				err = fmt.Errorf("%w\n(cleanup after the failed start also failed: %v)", err, stopErr)
			}
		}
	}()

	if err := c.prepareDirs(); err != nil {
		return nil, fmt.Errorf("pgcluster: %w", err)
	}
	if err := c.startPrimary(ctx); err != nil {
		return nil, fmt.Errorf("pgcluster: %w", err)
	}
	for i := 1; i <= opts.Replicas; i++ {
		if err := c.startReplica(ctx, fmt.Sprintf("replica%d", i)); err != nil {
			return nil, fmt.Errorf("pgcluster: %w", err)
		}
	}
	if err := c.waitStreaming(ctx); err != nil {
		return nil, fmt.Errorf("pgcluster: %w", err)
	}

	ports := []string{strconv.Itoa(c.Primary.Port)}
	for _, r := range c.Replicas {
		ports = append(ports, strconv.Itoa(r.Port))
	}
	c.logf("cluster ready in %.1fs (primary and %d replica(s) on ports %s, data in %s)",
		time.Since(began).Seconds(), len(c.Replicas), strings.Join(ports, ", "), c.Dir)
	return c, nil
}

// withDefaults fills in defaults and validates opts.
func withDefaults(opts Options) (Options, error) {
	if opts.AppUser == "" {
		opts.AppUser = "app"
	}
	if opts.AppPassword == "" {
		opts.AppPassword = "app"
	}
	if opts.AppAuth == "" {
		opts.AppAuth = "scram-sha-256"
	}
	if opts.MaxConnections == 0 {
		opts.MaxConnections = 100
	}
	switch {
	case opts.Replicas < 0:
		return opts, fmt.Errorf("pgcluster: Replicas must be >= 0, got %d", opts.Replicas)
	case opts.AppAuth != "scram-sha-256" && opts.AppAuth != "md5" && opts.AppAuth != "trust":
		return opts, fmt.Errorf("pgcluster: AppAuth must be \"scram-sha-256\", \"md5\" or \"trust\", got %q", opts.AppAuth)
	case opts.MaxConnections < 4:
		return opts, fmt.Errorf("pgcluster: MaxConnections must be at least 4 (3 are reserved for superusers), got %d", opts.MaxConnections)
	case opts.AppUser == superuser:
		return opts, fmt.Errorf("pgcluster: AppUser must not be the superuser %q", superuser)
	case len(opts.AppUser) > 63:
		return opts, fmt.Errorf("pgcluster: AppUser %q is longer than 63 bytes", opts.AppUser)
	case strings.ContainsAny(opts.AppUser, "\"\x00\r\n\t ,"):
		return opts, fmt.Errorf("pgcluster: AppUser %q must not contain quotes, commas, whitespace or control characters", opts.AppUser)
	case strings.ContainsAny(opts.AppPassword, "\x00\r\n"):
		return opts, errors.New("pgcluster: AppPassword must not contain NUL or line breaks")
	}
	return opts, nil
}

// lookupServerUser returns the OS user "postgres" when running as root, nil
// otherwise.
func lookupServerUser() (*serverUser, error) {
	if os.Geteuid() != 0 {
		return nil, nil
	}
	u, err := user.Lookup(superuser)
	if err != nil {
		return nil, fmt.Errorf("running as root, so the servers must run as OS user %q (initdb refuses root), but it does not exist (create it with `useradd --system --create-home postgres`, or run as a non-root user): %w", superuser, err)
	}
	uid, err := strconv.Atoi(u.Uid)
	if err != nil {
		return nil, fmt.Errorf("OS user %q: bad uid %q: %w", superuser, u.Uid, err)
	}
	gid, err := strconv.Atoi(u.Gid)
	if err != nil {
		return nil, fmt.Errorf("OS user %q: bad gid %q: %w", superuser, u.Gid, err)
	}
	su := &serverUser{name: u.Username, uid: uid, gid: gid, home: u.HomeDir}
	if ids, err := u.GroupIds(); err == nil {
		for _, id := range ids {
			if g, err := strconv.Atoi(id); err == nil {
				su.groups = append(su.groups, g)
			}
		}
	}
	if len(su.groups) == 0 {
		su.groups = []int{gid}
	}
	return su, nil
}

// SuperuserDSN returns a libpq URL for the superuser postgres (trust auth on
// 127.0.0.1) on node n, for database dbname or "postgres" if dbname is "":
// "postgres://postgres@127.0.0.1:PORT/DB?sslmode=disable".
func (c *Cluster) SuperuserDSN(n Node, dbname string) string {
	if dbname == "" {
		dbname = "postgres"
	}
	return dsn(url.User(superuser), n, dbname)
}

// AppDSN returns a libpq URL for the application role on node n:
// "postgres://APPUSER:APPPASS@127.0.0.1:PORT/APPUSER?sslmode=disable".
func (c *Cluster) AppDSN(n Node) string {
	return dsn(url.UserPassword(c.opts.AppUser, c.opts.AppPassword), n, c.opts.AppUser)
}

func dsn(u *url.Userinfo, n Node, dbname string) string {
	host := n.Host
	if host == "" {
		host = localhost
	}
	return (&url.URL{
		Scheme:   "postgres",
		User:     u,
		Host:     net.JoinHostPort(host, strconv.Itoa(n.Port)),
		Path:     "/" + dbname,
		RawQuery: "sslmode=disable",
	}).String()
}

// Psql runs psql as the superuser against node n (database dbname, or
// "postgres" if dbname is "") with -X -A -t -v ON_ERROR_STOP=1 -c sql and
// returns its trimmed stdout. The error includes psql's stderr.
func (c *Cluster) Psql(ctx context.Context, n Node, dbname, sql string) (string, error) {
	if dbname == "" {
		dbname = "postgres"
	}
	host := n.Host
	if host == "" {
		host = localhost
	}
	conninfo := fmt.Sprintf("host=%s port=%d user=%s dbname=%s connect_timeout=10",
		connQuote(host), n.Port, superuser, connQuote(dbname))
	cmd := exec.CommandContext(ctx, c.psqlPath, "-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d", conninfo, "-c", sql)
	cmd.Dir = "/"
	cmd.Env = childEnv(nil)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.WaitDelay = 5 * time.Second
	if err := cmd.Run(); err != nil {
		if msg := strings.TrimSpace(stderr.String()); msg != "" {
			err = fmt.Errorf("%w: %s", err, msg)
		}
		return strings.TrimSpace(stdout.String()), fmt.Errorf("psql on %s (port %d, database %s): %w", n.Name, n.Port, dbname, err)
	}
	return strings.TrimSpace(stdout.String()), nil
}
