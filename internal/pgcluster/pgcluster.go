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

// prepareDirs creates Dir (if needed) and the Unix socket folder.
func (c *Cluster) prepareDirs() error {
	if c.opts.Dir == "" {
		dir, err := os.MkdirTemp("", "pgsplit-cluster-")
		if err != nil {
			return fmt.Errorf("create temporary folder: %w", err)
		}
		c.Dir, c.removeDir = dir, true
		if err := c.chown(dir); err != nil {
			return err
		}
	} else {
		dir, err := filepath.Abs(c.opts.Dir)
		if err != nil {
			return fmt.Errorf("resolve folder %q: %w", c.opts.Dir, err)
		}
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return fmt.Errorf("create folder: %w", err)
		}
		c.Dir = dir
	}

	sock := filepath.Join(c.Dir, "sock")
	if len(sock)+len("/.s.PGSQL.65535.lock") > maxSocketPath {
		// Socket paths are limited to ~107 bytes; fall back to a short
		// temporary folder for deep Dirs.
		dir, err := os.MkdirTemp("", "pgs-")
		if err != nil {
			return fmt.Errorf("create socket folder: %w", err)
		}
		sock, c.removeSockDir = dir, true
	} else if err := os.MkdirAll(sock, 0o700); err != nil {
		return fmt.Errorf("create socket folder: %w", err)
	}
	c.sockDir = sock
	return c.chown(sock)
}

// startPrimary initializes, configures and starts the primary, then creates
// the application role and database.
func (c *Cluster) startPrimary(ctx context.Context) error {
	c.Primary = Node{Name: "primary", Host: localhost, DataDir: filepath.Join(c.Dir, "primary")}
	n := &c.Primary
	port, err := c.freePort()
	if err != nil {
		return err
	}
	n.Port = port

	c.logf("initializing primary in %s", n.DataDir)
	if err := c.mkdirOwned(n.DataDir); err != nil {
		return fmt.Errorf("initdb primary: %w", err)
	}
	out, err := c.run(ctx, true, c.bin("initdb"),
		"-D", n.DataDir, "-U", superuser, "--auth-local=trust", "--auth-host=trust",
		"-E", "UTF8", "--locale=C", "--no-sync")
	if err != nil {
		if c.su != nil && strings.Contains(out, "ermission denied") {
			err = fmt.Errorf("%w\n(hint: the servers run as OS user %q, which needs search (x) permission on %s and all its parent folders; leave Options.Dir empty to use a fresh temporary folder)", err, c.su.name, c.Dir)
		}
		return fmt.Errorf("initdb primary: %w", err)
	}

	encryption := "scram-sha-256"
	if c.opts.AppAuth == "md5" {
		encryption = "md5"
	}
	conf := []string{
		"",
		"# added by pgsplit pgcluster",
		"listen_addresses = '" + localhost + "'",
		fmt.Sprintf("port = %d", n.Port),
		"unix_socket_directories = " + confQuote(c.sockDir),
		fmt.Sprintf("max_connections = %d", c.opts.MaxConnections),
		"shared_buffers = 32MB",
		"wal_level = replica",
		"max_wal_senders = 10",
		"hot_standby = on",
		"hot_standby_feedback = on",
		"wal_keep_size = 256MB",
		"fsync = off",
		"synchronous_commit = off",
		"full_page_writes = off",
		"logging_collector = off",
		"password_encryption = " + confQuote(encryption),
		"cluster_name = " + confQuote(n.Name),
	}
	if err := appendLines(filepath.Join(n.DataDir, "postgresql.conf"), conf); err != nil {
		return fmt.Errorf("configure primary: %w", err)
	}
	hba := []string{
		"# written by pgsplit pgcluster",
		"local all all trust",
		"host replication all " + localhost + "/32 trust",
		"host all " + superuser + " " + localhost + "/32 trust",
		"host all \"" + c.opts.AppUser + "\" " + localhost + "/32 " + c.opts.AppAuth,
		"host all all " + localhost + "/32 " + c.opts.AppAuth,
	}
	hbaPath := filepath.Join(n.DataDir, "pg_hba.conf")
	if err := os.WriteFile(hbaPath, []byte(strings.Join(hba, "\n")+"\n"), 0o600); err != nil {
		return fmt.Errorf("configure primary: write pg_hba.conf: %w", err)
	}
	if err := c.chown(hbaPath); err != nil {
		return fmt.Errorf("configure primary: %w", err)
	}

	if err := c.startNode(ctx, n); err != nil {
		return err
	}

	c.logf("creating role and database %q on primary", c.opts.AppUser)
	role := fmt.Sprintf("CREATE ROLE %s LOGIN PASSWORD %s", quoteIdent(c.opts.AppUser), quoteLiteral(c.opts.AppPassword))
	if _, err := c.Psql(ctx, *n, "", role); err != nil {
		return fmt.Errorf("create role %q on primary: %w", c.opts.AppUser, err)
	}
	db := fmt.Sprintf("CREATE DATABASE %s OWNER %s", quoteIdent(c.opts.AppUser), quoteIdent(c.opts.AppUser))
	if _, err := c.Psql(ctx, *n, "", db); err != nil {
		return fmt.Errorf("create database %q on primary: %w", c.opts.AppUser, err)
	}
	return nil
}

// startReplica clones the primary into a new data folder and starts it as a
// hot standby.
func (c *Cluster) startReplica(ctx context.Context, name string) error {
	port, err := c.freePort()
	if err != nil {
		return err
	}
	c.Replicas = append(c.Replicas, Node{Name: name, Host: localhost, Port: port, DataDir: filepath.Join(c.Dir, name)})
	n := &c.Replicas[len(c.Replicas)-1]

	c.logf("cloning %s from primary with pg_basebackup into %s", name, n.DataDir)
	if err := c.mkdirOwned(n.DataDir); err != nil {
		return fmt.Errorf("pg_basebackup %s: %w", name, err)
	}
	if _, err := c.run(ctx, true, c.bin("pg_basebackup"),
		"-h", localhost, "-p", strconv.Itoa(c.Primary.Port), "-U", superuser, "-w",
		"-D", n.DataDir, "-R", "-X", "stream", "-c", "fast", "--no-sync"); err != nil {
		return fmt.Errorf("pg_basebackup %s: %w", name, err)
	}
	conf := []string{
		"",
		"# added by pgsplit pgcluster for " + name,
		fmt.Sprintf("port = %d", n.Port),
		"unix_socket_directories = " + confQuote(c.sockDir),
		"cluster_name = " + confQuote(name),
	}
	if err := appendLines(filepath.Join(n.DataDir, "postgresql.conf"), conf); err != nil {
		return fmt.Errorf("configure %s: %w", name, err)
	}
	return c.startNode(ctx, n)
}

// startNode runs pg_ctl start for n, retrying once on a fresh port when the
// chosen one turned out to be taken.
func (c *Cluster) startNode(ctx context.Context, n *Node) error {
	logPath := c.logPath(*n)
	f, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o640)
	if err != nil {
		return fmt.Errorf("start %s: create log file: %w", n.Name, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("start %s: create log file: %w", n.Name, err)
	}
	if err := c.chown(logPath); err != nil {
		return fmt.Errorf("start %s: %w", n.Name, err)
	}

	for attempt := 1; ; attempt++ {
		c.logf("starting %s on port %d", n.Name, n.Port)
		c.mu.Lock()
		c.running[n.DataDir] = true
		c.mu.Unlock()
		_, err := c.run(ctx, true, c.bin("pg_ctl"), "start", "-D", n.DataDir, "-l", logPath, "-w", "-t", "60", "-s")
		if err == nil {
			return nil
		}
		tail := logTail(logPath)
		if attempt == 1 && ctx.Err() == nil && addressInUse(tail) && !fileExists(filepath.Join(n.DataDir, "postmaster.pid")) {
			port, perr := c.freePort()
			if perr != nil {
				return fmt.Errorf("start %s: %w (after: %v)", n.Name, perr, err)
			}
			c.logf("port %d of %s is in use, retrying on port %d", n.Port, n.Name, port)
			n.Port = port
			if err := appendLines(filepath.Join(n.DataDir, "postgresql.conf"), []string{fmt.Sprintf("port = %d", port)}); err != nil {
				return fmt.Errorf("start %s: set new port: %w", n.Name, err)
			}
			continue
		}
		return fmt.Errorf("start %s on port %d: %w%s", n.Name, n.Port, err, tailSection(logPath, tail))
	}
}

// waitStreaming polls pg_stat_replication on the primary until every replica
// is in state 'streaming'.
func (c *Cluster) waitStreaming(ctx context.Context) error {
	if len(c.Replicas) == 0 {
		return nil
	}
	c.logf("waiting for %d replica(s) to stream from the primary", len(c.Replicas))
	names := make([]string, len(c.Replicas))
	for i, r := range c.Replicas {
		names[i] = quoteLiteral(r.Name)
	}
	query := fmt.Sprintf("SELECT count(DISTINCT application_name) FROM pg_stat_replication WHERE state = 'streaming' AND application_name IN (%s)",
		strings.Join(names, ", "))
	wctx, cancel := context.WithTimeout(ctx, streamingTimeout)
	defer cancel()

	var lastOut string
	var lastErr error
	for {
		out, err := c.Psql(wctx, c.Primary, "", query)
		lastOut, lastErr = out, err
		if err == nil && out == strconv.Itoa(len(c.Replicas)) {
			return nil
		}
		select {
		case <-wctx.Done():
			return c.streamingError(ctx, lastOut, lastErr)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// streamingError describes why waitStreaming gave up.
func (c *Cluster) streamingError(ctx context.Context, lastOut string, lastErr error) error {
	why := "timed out after " + streamingTimeout.String()
	if ctx.Err() != nil {
		why = ctx.Err().Error()
	}
	var b strings.Builder
	fmt.Fprintf(&b, "wait for %d replica(s) to reach state 'streaming' on the primary: %s", len(c.Replicas), why)
	if lastErr != nil {
		fmt.Fprintf(&b, "\nlast check failed: %v", lastErr)
	} else {
		fmt.Fprintf(&b, "\nlast check: %s of %d streaming", lastOut, len(c.Replicas))
	}
	dctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if state, err := c.Psql(dctx, c.Primary, "", "SELECT application_name || ' ' || coalesce(state, '?') FROM pg_stat_replication"); err == nil {
		if state == "" {
			state = "(no rows)"
		}
		fmt.Fprintf(&b, "\npg_stat_replication:\n%s", state)
	}
	for _, n := range append([]Node{c.Primary}, c.Replicas...) {
		p := c.logPath(n)
		b.WriteString(tailSection(p, logTail(p)))
	}
	return errors.New(b.String())
}

// Stop stops the replicas first, then the primary, with `pg_ctl stop -m fast`
// (falling back to -m immediate), touching only the servers this cluster
// started. It then removes Dir if Start created it. Stop is idempotent and
// safe on a nil or half-started Cluster. If a server cannot be stopped, its
// files are kept and the error says so; calling Stop again retries.
func (c *Cluster) Stop() error {
	if c == nil {
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.stopped {
		return nil
	}
	nodes := make([]Node, 0, len(c.Replicas)+1)
	for i := len(c.Replicas) - 1; i >= 0; i-- {
		nodes = append(nodes, c.Replicas[i])
	}
	nodes = append(nodes, c.Primary)

	var errs []error
	for _, n := range nodes {
		if n.DataDir == "" || !c.running[n.DataDir] {
			continue
		}
		if err := c.stopNode(n); err != nil {
			errs = append(errs, err)
			continue
		}
		delete(c.running, n.DataDir)
	}
	if len(errs) > 0 {
		return fmt.Errorf("pgcluster: stop: %w (data left in %s)", errors.Join(errs...), c.Dir)
	}
	if c.removeSockDir {
		if err := os.RemoveAll(c.sockDir); err != nil {
			errs = append(errs, fmt.Errorf("remove socket folder: %w", err))
		}
	}
	if c.removeDir && c.Dir != "" {
		if err := os.RemoveAll(c.Dir); err != nil {
			errs = append(errs, fmt.Errorf("remove %s: %w", c.Dir, err))
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("pgcluster: stop: %w", errors.Join(errs...))
	}
	c.stopped = true
	return nil
}

// stopNode stops one server via its data folder.
func (c *Cluster) stopNode(n Node) error {
	if !fileExists(filepath.Join(n.DataDir, "postmaster.pid")) {
		return nil // never came up, or already gone
	}
	c.logf("stopping %s (port %d)", n.Name, n.Port)
	ctx, cancel := context.WithTimeout(context.Background(), stopTimeout)
	defer cancel()
	_, err := c.run(ctx, true, c.bin("pg_ctl"), "stop", "-D", n.DataDir, "-m", "fast", "-w", "-t", "60", "-s")
	if err == nil {
		return nil
	}
	if !c.serverRunning(ctx, n) {
		return nil
	}
	_, err2 := c.run(ctx, true, c.bin("pg_ctl"), "stop", "-D", n.DataDir, "-m", "immediate", "-w", "-t", "30", "-s")
	if err2 == nil || !c.serverRunning(ctx, n) {
		return nil
	}
	return fmt.Errorf("stop %s: %w; immediate shutdown also failed: %v", n.Name, err, err2)
}

// serverRunning asks pg_ctl status whether the server of n is running.
// pg_ctl status exits with 3 when no server is running.
func (c *Cluster) serverRunning(ctx context.Context, n Node) bool {
	_, err := c.run(ctx, true, c.bin("pg_ctl"), "status", "-D", n.DataDir)
	var exitErr *exec.ExitError
	if errors.As(err, &exitErr) && exitErr.ExitCode() == 3 {
		return false
	}
	return true
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

// run executes a command (as the server OS user if asServer) and returns its
// trimmed combined output; the error includes the command line and output.
func (c *Cluster) run(ctx context.Context, asServer bool, bin string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Dir = "/"
	var su *serverUser
	if asServer {
		su = c.su
	}
	if su != nil {
		su.apply(cmd)
	}
	cmd.Env = childEnv(su)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	// pg_ctl start leaves a daemon behind; it does not hold our pipe (its
	// output goes to the -l log), but never hang on it if it did.
	cmd.WaitDelay = 10 * time.Second
	err := cmd.Run()
	text := strings.TrimSpace(out.String())
	if err != nil {
		msg := fmt.Sprintf("%s %s", filepath.Base(bin), strings.Join(args, " "))
		if text != "" {
			return text, fmt.Errorf("%s: %w\n%s", msg, err, text)
		}
		return text, fmt.Errorf("%s: %w", msg, err)
	}
	return text, nil
}

// childEnv is the environment for child processes: ours without PG*
// variables (PGPORT, PGDATA, PGPASSWORD… would interfere), and with HOME,
// USER and LOGNAME of su if set.
func childEnv(su *serverUser) []string {
	var env []string
	for _, kv := range os.Environ() {
		key, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(key, "PG") {
			continue
		}
		if su != nil && (key == "HOME" || key == "USER" || key == "LOGNAME") {
			continue
		}
		env = append(env, kv)
	}
	if su != nil {
		env = append(env, "HOME="+su.home, "USER="+su.name, "LOGNAME="+su.name)
	}
	return env
}

func (c *Cluster) bin(name string) string { return filepath.Join(c.BinDir, name) }

func (c *Cluster) logPath(n Node) string { return filepath.Join(c.Dir, n.Name+".log") }

func (c *Cluster) logf(format string, args ...any) {
	fmt.Fprintf(c.log, format+"\n", args...)
}

// freePort returns a free port not yet handed out to this cluster.
func (c *Cluster) freePort() (int, error) {
	for range 20 {
		p, err := FreePort()
		if err != nil {
			return 0, err
		}
		if !c.usedPorts[p] {
			c.usedPorts[p] = true
			return p, nil
		}
	}
	return 0, errors.New("find free port: kept getting ports already in use by this cluster")
}

// chown gives path to the server OS user (no-op when not root).
func (c *Cluster) chown(path string) error {
	if c.su == nil {
		return nil
	}
	if err := os.Chown(path, c.su.uid, c.su.gid); err != nil {
		return fmt.Errorf("chown %s to %s: %w", path, c.su.name, err)
	}
	return nil
}

// mkdirOwned creates dir with mode 0700 owned by the server OS user.
func (c *Cluster) mkdirOwned(dir string) error {
	if err := os.Mkdir(dir, 0o700); err != nil && !errors.Is(err, os.ErrExist) {
		return fmt.Errorf("create %s: %w", dir, err)
	}
	return c.chown(dir)
}

// appendLines appends lines to the file at path (a config file: the last
// setting wins).
func appendLines(path string, lines []string) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		return fmt.Errorf("open %s: %w", path, err)
	}
	if _, err := f.WriteString(strings.Join(lines, "\n") + "\n"); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

// addressInUse reports whether a server log says the port was taken.
func addressInUse(log string) bool {
	for _, s := range []string{"Address already in use", "could not create any TCP/IP sockets", "another postmaster already running on port"} {
		if strings.Contains(log, s) {
			return true
		}
	}
	return false
}

// logTail returns the last lines (at most ~4 KB, 30 lines) of a log file.
func logTail(path string) string {
	const maxBytes, maxLines = 4096, 30
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return ""
	}
	off := fi.Size() - maxBytes
	if off < 0 {
		off = 0
	}
	buf := make([]byte, fi.Size()-off)
	n, _ := f.ReadAt(buf, off)
	text := strings.TrimRight(string(buf[:n]), "\n")
	lines := strings.Split(text, "\n")
	if off > 0 && len(lines) > 1 {
		lines = lines[1:] // drop the partial first line
	}
	if len(lines) > maxLines {
		lines = lines[len(lines)-maxLines:]
	}
	return strings.Join(lines, "\n")
}

// tailSection formats a log tail for an error message.
func tailSection(path, tail string) string {
	if tail == "" {
		return fmt.Sprintf("\n--- %s is empty or missing ---", path)
	}
	return fmt.Sprintf("\n--- tail of %s ---\n%s", path, tail)
}

func fileExists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

// quoteIdent quotes a SQL identifier.
func quoteIdent(s string) string {
	return `"` + strings.ReplaceAll(s, `"`, `""`) + `"`
}

// quoteLiteral quotes a SQL string literal (standard_conforming_strings is on
// by default, so backslashes need no escaping).
func quoteLiteral(s string) string {
	return "'" + strings.ReplaceAll(s, "'", "''") + "'"
}

// confQuote quotes a postgresql.conf string value.
func confQuote(s string) string {
	s = strings.ReplaceAll(s, `\`, `\\`)
	return "'" + strings.ReplaceAll(s, "'", "''") + "'"
}

// connQuote quotes a libpq key=value connection string value.
func connQuote(s string) string {
	s = strings.ReplaceAll(s, `\`, `\\`)
	return "'" + strings.ReplaceAll(s, "'", `\'`) + "'"
}
