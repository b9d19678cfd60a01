package pgcluster

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

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
		"synchronous_commit = on", // as a DBA runs it: commits flushed (a no-op with fsync off) and sent at once
		"full_page_writes = off",
		"logging_collector = off",
		"password_encryption = " + confQuote(encryption),
		"cluster_name = " + confQuote(n.Name),
	}
	appHost := "host"
	if c.opts.TLS != nil {
		if err := c.writeTLSFiles(n.DataDir); err != nil {
			return fmt.Errorf("configure primary: %w", err)
		}
		conf = append(conf, "ssl = on", "ssl_cert_file = 'server.crt'", "ssl_key_file = 'server.key'")
		appHost = "hostssl"
	}
	if err := appendLines(filepath.Join(n.DataDir, "postgresql.conf"), conf); err != nil {
		return fmt.Errorf("configure primary: %w", err)
	}
	hba := []string{
		"# written by pgsplit pgcluster",
		"local all all trust",
		"host replication all " + localhost + "/32 trust",
		"host all " + superuser + " " + localhost + "/32 trust",
		appHost + " all \"" + c.opts.AppUser + "\" " + localhost + "/32 " + c.opts.AppAuth,
		appHost + " all all " + localhost + "/32 " + c.opts.AppAuth,
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

// writeTLSFiles writes the server certificate and key into dataDir, owned
// by the server's OS user with mode 0600 (the server refuses a key that
// others can read).
func (c *Cluster) writeTLSFiles(dataDir string) error {
	for _, f := range []struct {
		name string
		body []byte
	}{{"server.crt", c.opts.TLS.CertPEM}, {"server.key", c.opts.TLS.KeyPEM}} {
		path := filepath.Join(dataDir, f.name)
		if err := os.WriteFile(path, f.body, 0o600); err != nil {
			return fmt.Errorf("write %s: %w", f.name, err)
		}
		if err := c.chown(path); err != nil {
			return err
		}
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
