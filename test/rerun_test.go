package test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgsplit/pgsplit/config"
	"github.com/pgsplit/pgsplit/internal/pgcluster"
)

// midReadSQL is a read that sleeps on the server, long enough to end its
// backend mid-read and short enough for the safety net, which waits 2 s for
// a first answer (verdictWait in proxy).
const midReadSQL = "SELECT inet_server_port(), pg_sleep($1)::text"

// midReadConfig lets pgsplit send midReadSQL to a replica.
func midReadConfig(c *config.Config) {
	c.Routing.ReadFunctions = []string{"pg_sleep"}
	c.Routing.ReadYourWrites = config.RYWOff
	c.Routing.MaxReplicaLag = 0
}

// endMidRead runs midReadSQL on conn, which pgsplit p sends to replica r
// (the warm-up checks it, and prepares the statement in pgx's statement
// cache mode); once r's backend sleeps in it, end ends that backend. The
// read must still answer, from the primary (port primary), run again there
// by the safety net.
func endMidRead(t *testing.T, p *testProxy, conn *pgx.Conn, c *pgcluster.Cluster, r pgcluster.Node, end func(ctx context.Context, su *pgx.Conn, pid int) error) {
	t.Helper()
	ctx := testCtx(t, 30*time.Second)
	var port int
	var slept string
	if err := conn.QueryRow(ctx, midReadSQL, 0).Scan(&port, &slept); err != nil || port != r.Port {
		t.Fatalf("warm-up read: port %d, %v; want %s's %d", port, err, r.Name, r.Port)
	}
	su := connect(t, c.SuperuserDSN(r, appDatabase))
	before := p.srv.ReadRetries()

	ended := make(chan error, 1)
	go func() {
		deadline := time.Now().Add(5 * time.Second)
		for time.Now().Before(deadline) {
			var pid int
			err := su.QueryRow(ctx, `SELECT pid FROM pg_stat_activity
				WHERE pid <> pg_backend_pid() AND state = 'active' AND wait_event = 'PgSleep' AND query LIKE 'SELECT inet_server_port(), pg_sleep(%'`).Scan(&pid)
			if err == nil {
				ended <- end(ctx, su, pid)
				return
			}
			if err != pgx.ErrNoRows {
				ended <- err
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
		ended <- fmt.Errorf("the read never showed up sleeping on %s", r.Name)
	}()
	qctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	err := conn.QueryRow(qctx, midReadSQL, 1.5).Scan(&port, &slept)
	cancel()
	if eerr := <-ended; eerr != nil {
		t.Fatal(eerr)
	}
	if err != nil {
		t.Fatalf("the read whose replica backend ended failed: %v (SQLSTATE %q); want it run again on the primary", err, sqlState(err))
	}
	if port != c.Primary.Port {
		t.Fatalf("the read answered from port %d, want the primary's %d (run again there)", port, c.Primary.Port)
	}
	if n := p.srv.ReadRetries() - before; n != 1 {
		t.Fatalf("read retries counted: %d, want 1", n)
	}
	// The session goes on.
	if err := conn.QueryRow(ctx, midReadSQL, 0).Scan(&port, &slept); err != nil {
		t.Fatalf("the next read: %v", err)
	}
}

// TestReplicaBackendEndedMidReadIsRerun: the replica backend running an
// autocommit read is ended with pg_terminate_backend (FATAL 57P01, as in a
// fast shutdown) while the read runs, after the server has answered the
// batch's Bind and Describe but before any row: the read runs again on the
// primary and the client gets its rows, in the simple protocol and in pgx's
// statement cache mode (Bind/Describe/Execute/Sync of a prepared
// statement). The dying backend flushes what it had buffered
// (BindComplete, RowDescription) before its FATAL; the safety net holds
// those back until a row, a command tag or an error shows the read ran, so
// nothing reached the client and the FATAL means "run it again" (the client
// is not told the connection was lost).
func TestReplicaBackendEndedMidReadIsRerun(t *testing.T) {
	r := cluster.Replicas[0]
	for _, mode := range []pgx.QueryExecMode{pgx.QueryExecModeSimpleProtocol, pgx.QueryExecModeCacheStatement} {
		t.Run(mode.String(), func(t *testing.T) {
			// A fresh pgsplit per mode: the rerun takes the replica out of
			// rotation for a while.
			p := routingProxy(t, func(c *config.Config) {
				c.Servers = c.Servers[:2] // the primary and r
				midReadConfig(c)
			})
			conn := connect(t, p.appDSN(), func(cc *pgx.ConnConfig) { cc.DefaultQueryExecMode = mode })
			endMidRead(t, p, conn, cluster, r, func(ctx context.Context, su *pgx.Conn, pid int) error {
				_, err := su.Exec(ctx, "SELECT pg_terminate_backend($1)", pid)
				return err
			})
		})
	}
}

// TestReplicaCrashedMidReadIsRerun: as TestReplicaBackendEndedMidReadIsRerun,
// with the replica stopped with -m immediate mid-read (a crash: its backends
// flush what they had buffered, send a WARNING and go) under a pgx client in
// statement cache mode, whose batch's BindComplete comes first. This is what
// TestReplicaKilledUnderReadLoadNoFailedReads meets once in some tens of
// thousands of reads; here every time.
func TestReplicaCrashedMidReadIsRerun(t *testing.T) {
	c := startOwnCluster(t)
	r0 := c.Replicas[0]
	cfg := ownConfig(ownServer(c.Primary, config.RolePrimary), ownServer(r0, config.RoleReplica))
	midReadConfig(cfg)
	p := startProxyWith(t, cfg)
	conn := connect(t, p.appDSN())
	endMidRead(t, p, conn, c, r0, func(ctx context.Context, _ *pgx.Conn, _ int) error {
		return c.StopNode(ctx, r0, "immediate")
	})
}
