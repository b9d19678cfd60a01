package test

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgsplit/pgsplit/internal/pgcluster"
)

// Users the proxies know. auditorPassword is distinctive on purpose: the
// auth tests check that it never shows up in a log line.
const (
	appUser         = "app"
	appPassword     = "app"
	appDatabase     = "app"
	auditorUser     = "auditor"
	auditorPassword = "Audit0r-s3cret-Qx7v"
)

// Package-wide test bed, set up once by TestMain and read-only afterwards.
var (
	cluster *pgcluster.Cluster
	shared  *testProxy // pgsplit with the base configuration
)

func TestMain(m *testing.M) {
	os.Exit(runMain(m))
}

// runMain starts the cluster and the shared proxy, runs the tests and tears
// everything down again; it is separate from TestMain so that its defers run.
func runMain(m *testing.M) int {
	flag.Parse()
	if _, err := pgcluster.FindBinDir(); err != nil {
		fmt.Fprintln(os.Stderr, "test: cannot run the end-to-end tests:", err)
		return 1
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	began := time.Now()
	// Interrupted while starting, Start removes what it started itself.
	startCtx, stopSignals := signal.NotifyContext(ctx, syscall.SIGINT, syscall.SIGTERM)
	c, err := pgcluster.Start(startCtx, pgcluster.Options{Replicas: 2, AppAuth: "scram-sha-256", MaxConnections: 500})
	stopSignals()
	if err != nil {
		fmt.Fprintln(os.Stderr, "test: start cluster:", err)
		return 1
	}
	cluster = c
	var stopOnce sync.Once
	stopCluster := func() {
		stopOnce.Do(func() {
			if err := c.Stop(); err != nil {
				fmt.Fprintln(os.Stderr, "test: stop cluster:", err)
			}
		})
	}
	defer stopCluster()
	stopWatchdog := watchdog(stopCluster)
	defer stopWatchdog()
	if testing.Verbose() {
		fmt.Fprintf(os.Stderr, "test: cluster up in %.1fs: primary on port %d, replicas on %d and %d\n",
			time.Since(began).Seconds(), c.Primary.Port, c.Replicas[0].Port, c.Replicas[1].Port)
	}

	if err := setupSchema(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "test: set up schema:", err)
		return 1
	}
	if err := waitReplicated(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "test: replicas did not replay the schema:", err)
		return 1
	}
	p, err := launchProxy(baseConfig())
	if err != nil {
		fmt.Fprintln(os.Stderr, "test: start pgsplit:", err)
		return 1
	}
	shared = p
	defer func() {
		if binDir != "" {
			_ = os.RemoveAll(binDir)
		}
	}()
	code := m.Run()
	if err := p.shutdown(10 * time.Second); err != nil {
		fmt.Fprintln(os.Stderr, "test: shared pgsplit:", err)
		code = 1
	}
	// Passwords, verifiers, keys and literals tests marked secret must
	// not appear in any log any pgsplit of the run wrote.
	if found := scanLogsForSecrets(); len(found) > 0 {
		fmt.Fprintln(os.Stderr, "test: secrets found in pgsplit's logs:\n  "+strings.Join(found, "\n  "))
		code = 1
	} else if testing.Verbose() {
		fmt.Fprintf(os.Stderr, "test: scanned %d pgsplit logs for %d secrets: none found\n", len(allLogs), len(secretSet))
	}
	return code
}

// watchdog stops the cluster when the test binary is interrupted, or just
// before `go test -timeout` would kill it, so that no PostgreSQL server
// outlives the tests. The returned function disarms it.
func watchdog(stop func()) func() {
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	var timer <-chan time.Time
	if f := flag.Lookup("test.timeout"); f != nil {
		if d, err := time.ParseDuration(f.Value.String()); err == nil && d > 20*time.Second {
			timer = time.After(d - 15*time.Second)
		}
	}
	done := make(chan struct{})
	go func() {
		select {
		case s := <-sig:
			fmt.Fprintf(os.Stderr, "test: %v: stopping the cluster\n", s)
			stop()
			os.Exit(1)
		case <-timer:
			fmt.Fprintln(os.Stderr, "test: close to -timeout: stopping the cluster before the test binary is killed")
			stop()
		case <-done:
		}
	}()
	return func() {
		signal.Stop(sig)
		close(done)
	}
}

// setupSchema creates what the tests need on the primary: the tables (owned
// by app) and a second login role.
func setupSchema(ctx context.Context) error {
	su, err := pgx.Connect(ctx, cluster.SuperuserDSN(cluster.Primary, appDatabase))
	if err != nil {
		return err
	}
	defer su.Close(ctx)
	stmts := []string{
		fmt.Sprintf("CREATE ROLE %s LOGIN PASSWORD '%s'", auditorUser, auditorPassword),
		"SET ROLE app",
		`CREATE TABLE kv (k text PRIMARY KEY, v int NOT NULL)`,
		`CREATE TABLE shutdown_rows (id serial PRIMARY KEY, note text NOT NULL UNIQUE)`,
		`CREATE TABLE copy_rows (id int PRIMARY KEY, name text, note text, amount numeric, payload bytea)`,
		"RESET ROLE",
	}
	for _, s := range stmts {
		if _, err := su.Exec(ctx, s); err != nil {
			return fmt.Errorf("%s: %w", s, err)
		}
	}
	return nil
}

// waitReplicated waits until every replica has replayed the primary's WAL
// as of now, so tests that read on replicas see the schema.
func waitReplicated(ctx context.Context) error {
	su, err := pgx.Connect(ctx, cluster.SuperuserDSN(cluster.Primary, "postgres"))
	if err != nil {
		return err
	}
	defer su.Close(ctx)
	var lsn string
	if err := su.QueryRow(ctx, "SELECT pg_current_wal_lsn()::text").Scan(&lsn); err != nil {
		return err
	}
	for _, r := range cluster.Replicas {
		rc, err := pgx.Connect(ctx, cluster.SuperuserDSN(r, "postgres"))
		if err != nil {
			return err
		}
		deadline := time.Now().Add(30 * time.Second)
		for {
			var done bool
			err := rc.QueryRow(ctx, "SELECT pg_last_wal_replay_lsn() >= $1::pg_lsn", lsn).Scan(&done)
			if err == nil && done {
				break
			}
			if time.Now().After(deadline) {
				rc.Close(ctx)
				return fmt.Errorf("replica on port %d has not replayed up to %s: %v", r.Port, lsn, err)
			}
			time.Sleep(20 * time.Millisecond)
		}
		rc.Close(ctx)
	}
	return nil
}
