package pgcluster

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// Node control for failover tests: stop a server (cleanly or as a crash),
// start it again, promote a standby and re-point a standby at a new primary.
//
// These methods act on the servers only. The Cluster's Primary and Replicas
// fields keep the nodes they were given by Start: after Promote the node
// listed among Replicas is the read-write server, and the one in Primary may
// be stopped. Stop still stops whichever of them is running.

const (
	// controlTimeout bounds each pg_ctl call and each wait of the node
	// control methods (a caller's earlier ctx deadline wins).
	controlTimeout = 60 * time.Second
	// pollEvery is the pause between two checks while waiting.
	pollEvery = 50 * time.Millisecond
)

// StopNode stops node n with `pg_ctl stop -m mode`, as the server OS user,
// and waits until the server has exited. mode is "fast" (disconnect the
// clients, write a shutdown checkpoint) or "immediate" (the equivalent of a
// crash: the server recovers from its WAL at the next start). Stopping a
// node that is not running is an error.
func (c *Cluster) StopNode(ctx context.Context, n Node, mode string) error {
	if mode != "fast" && mode != "immediate" {
		return fmt.Errorf("pgcluster: stop %s: mode must be \"fast\" or \"immediate\", got %q", n.Name, mode)
	}
	if err := c.checkNode(n); err != nil {
		return fmt.Errorf("pgcluster: stop %s: %w", n.Name, err)
	}
	ctx, cancel := context.WithTimeout(ctx, controlTimeout)
	defer cancel()
	if !c.serverRunning(ctx, n) {
		return fmt.Errorf("pgcluster: stop %s: it is not running (pg_ctl status)", n.Name)
	}
	c.logf("stopping %s (port %d) with -m %s", n.Name, n.Port, mode)
	if _, err := c.run(ctx, true, c.bin("pg_ctl"), "stop", "-D", n.DataDir, "-m", mode, "-w",
		"-t", strconv.Itoa(int(controlTimeout/time.Second)), "-s"); err != nil {
		p := c.logPath(n)
		return fmt.Errorf("pgcluster: stop %s -m %s: %w%s", n.Name, mode, err, tailSection(p, logTail(p)))
	}
	c.mu.Lock()
	delete(c.running, n.DataDir)
	c.mu.Unlock()
	return nil
}

// StartNode starts the existing data folder of node n again with `pg_ctl
// start` (on its own port: the port is not changed if it was taken in the
// meantime) and waits until it accepts connections — for a standby, until it
// has reached a consistent state and accepts read-only connections. The
// server log is appended to, not truncated.
func (c *Cluster) StartNode(ctx context.Context, n Node) error {
	if err := c.checkNode(n); err != nil {
		return fmt.Errorf("pgcluster: start %s: %w", n.Name, err)
	}
	ctx, cancel := context.WithTimeout(ctx, controlTimeout)
	defer cancel()
	if c.serverRunning(ctx, n) {
		return fmt.Errorf("pgcluster: start %s: it is already running (pg_ctl status)", n.Name)
	}
	logPath := c.logPath(n)
	c.logf("starting %s again on port %d", n.Name, n.Port)
	c.mu.Lock()
	c.running[n.DataDir] = true
	c.mu.Unlock()
	if _, err := c.run(ctx, true, c.bin("pg_ctl"), "start", "-D", n.DataDir, "-l", logPath, "-w",
		"-t", strconv.Itoa(int(controlTimeout/time.Second)), "-s"); err != nil {
		return fmt.Errorf("pgcluster: start %s on port %d: %w%s", n.Name, n.Port, err, tailSection(logPath, logTail(logPath)))
	}
	// pg_ctl -w waits for the postmaster to say it is ready; make sure a
	// session really gets in.
	if err := c.waitQuery(ctx, n, "SELECT 1", "1"); err != nil {
		return fmt.Errorf("pgcluster: start %s: it does not accept connections: %w%s", n.Name, err, tailSection(logPath, logTail(logPath)))
	}
	return nil
}

// Promote turns the standby n into a primary with `pg_ctl promote -w` and
// waits until it answers pg_is_in_recovery() = false.
func (c *Cluster) Promote(ctx context.Context, n Node) error {
	if err := c.checkNode(n); err != nil {
		return fmt.Errorf("pgcluster: promote %s: %w", n.Name, err)
	}
	ctx, cancel := context.WithTimeout(ctx, controlTimeout)
	defer cancel()
	c.logf("promoting %s (port %d)", n.Name, n.Port)
	logPath := c.logPath(n)
	if _, err := c.run(ctx, true, c.bin("pg_ctl"), "promote", "-D", n.DataDir, "-w",
		"-t", strconv.Itoa(int(controlTimeout/time.Second)), "-s"); err != nil {
		return fmt.Errorf("pgcluster: promote %s: %w%s", n.Name, err, tailSection(logPath, logTail(logPath)))
	}
	if err := c.waitQuery(ctx, n, "SELECT pg_is_in_recovery()", "f"); err != nil {
		return fmt.Errorf("pgcluster: promote %s: still in recovery: %w%s", n.Name, err, tailSection(logPath, logTail(logPath)))
	}
	return nil
}

// Follow re-points the standby replica at newPrimary: it sets
// primary_conninfo with ALTER SYSTEM and reloads the configuration (PostgreSQL
// 13 and later restart the WAL receiver when primary_conninfo changes;
// recovery_target_timeline defaults to latest, so the standby follows the
// promoted server's new timeline). It waits until the standby's WAL receiver
// streams from newPrimary's port. A standby that has already replayed WAL
// past the point where newPrimary's timeline forked off cannot follow it;
// the error then carries the tail of its log, which says so.
func (c *Cluster) Follow(ctx context.Context, replica, newPrimary Node) error {
	if err := c.checkNode(replica); err != nil {
		return fmt.Errorf("pgcluster: follow: %s: %w", replica.Name, err)
	}
	if replica.DataDir == newPrimary.DataDir {
		return fmt.Errorf("pgcluster: follow: %s cannot follow itself", replica.Name)
	}
	ctx, cancel := context.WithTimeout(ctx, controlTimeout)
	defer cancel()
	host := newPrimary.Host
	if host == "" {
		host = localhost
	}
	conninfo := fmt.Sprintf("host=%s port=%d user=%s application_name=%s",
		connQuote(host), newPrimary.Port, superuser, connQuote(replica.Name))
	c.logf("pointing %s at %s (port %d)", replica.Name, newPrimary.Name, newPrimary.Port)
	if _, err := c.Psql(ctx, replica, "", "ALTER SYSTEM SET primary_conninfo = "+quoteLiteral(conninfo)); err != nil {
		return fmt.Errorf("pgcluster: follow: set primary_conninfo of %s: %w", replica.Name, err)
	}
	if _, err := c.Psql(ctx, replica, "", "SELECT pg_reload_conf()"); err != nil {
		return fmt.Errorf("pgcluster: follow: reload %s: %w", replica.Name, err)
	}
	q := fmt.Sprintf("SELECT count(*) FROM pg_stat_wal_receiver WHERE status = 'streaming' AND sender_port = %d", newPrimary.Port)
	if err := c.waitQuery(ctx, replica, q, "1"); err != nil {
		var b strings.Builder
		dctx, dcancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer dcancel()
		if st, serr := c.Psql(dctx, replica, "",
			"SELECT coalesce(status, '?') || ' from port ' || coalesce(sender_port::text, '?') FROM pg_stat_wal_receiver"); serr == nil {
			if st == "" {
				st = "(no WAL receiver)"
			}
			fmt.Fprintf(&b, "\npg_stat_wal_receiver on %s: %s", replica.Name, st)
		}
		p := c.logPath(replica)
		b.WriteString(tailSection(p, logTail(p)))
		return fmt.Errorf("pgcluster: follow: %s does not stream from %s (port %d): %w%s",
			replica.Name, newPrimary.Name, newPrimary.Port, err, b.String())
	}
	return nil
}

// checkNode refuses nodes that are not part of a running cluster.
func (c *Cluster) checkNode(n Node) error {
	if c == nil {
		return errors.New("nil cluster")
	}
	c.mu.Lock()
	stopped := c.stopped
	c.mu.Unlock()
	if stopped {
		return errors.New("the cluster has been stopped")
	}
	if n.DataDir == "" || n.Port == 0 {
		return fmt.Errorf("node %+v has no data folder or port", n)
	}
	if _, err := os.Stat(filepath.Join(n.DataDir, "PG_VERSION")); err != nil {
		return fmt.Errorf("no data folder at %s: %w", n.DataDir, err)
	}
	return nil
}

// waitQuery runs sql on n as the superuser until it prints want, until ctx
// ends; the error says what the last attempt gave.
func (c *Cluster) waitQuery(ctx context.Context, n Node, sql, want string) error {
	var lastOut string
	var lastErr error
	for {
		qctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		out, err := c.Psql(qctx, n, "", sql)
		cancel()
		if err == nil && out == want {
			return nil
		}
		lastOut, lastErr = out, err
		select {
		case <-ctx.Done():
			if lastErr != nil {
				return fmt.Errorf("%s: %w (last attempt: %v)", sql, ctx.Err(), lastErr)
			}
			return fmt.Errorf("%s: %w (last answer %q, want %q)", sql, ctx.Err(), lastOut, want)
		case <-time.After(pollEvery):
		}
	}
}
