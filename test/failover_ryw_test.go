package test

import (
	"fmt"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgsplit/pgsplit/config"
)

// TestPrimaryLostBeforeCommitPositionReadsGoOnOnReplicas: a write commits,
// and the primary goes away before pgsplit has read the commit's WAL
// position (its position connection is frozen with SIGSTOP, then the
// primary is stopped with -m immediate). Reads of the written table must
// not wait for a position the dead primary can no longer give: once no
// replica streams from it, the commit takes the most WAL a replica received
// and reads run on the replicas, seeing the write. (Before that rule they
// went to the primary, which was not there, and failed.)
func TestPrimaryLostBeforeCommitPositionReadsGoOnOnReplicas(t *testing.T) {
	c := startOwnCluster(t)
	cfg := ownConfig(ownServer(c.Primary, config.RoleAuto),
		ownServer(c.Replicas[0], config.RoleAuto), ownServer(c.Replicas[1], config.RoleAuto))
	cfg.Pool.PoolTimeout = 2 * time.Second
	cfg.Pool.ConnectTimeout = 2 * time.Second // the frozen position query gives up after this
	p := startProxyWith(t, cfg)
	ctx := testCtx(t, 2*time.Minute)

	conn, err := dialProxy(connectConfig(t, p.appDSN("application_name=fo-app"), func(cc *pgx.ConnConfig) {
		cc.DefaultQueryExecMode = pgx.QueryExecModeSimpleProtocol
	}))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { closeConn(conn) }()
	// A first write opens the tracker's position connection to the primary.
	if _, err := conn.Exec(ctx, "INSERT INTO fo_writes (id) VALUES (1)"); err != nil {
		t.Fatal(err)
	}
	var pid int
	waitFor(t, 10*time.Second, "pgsplit's position connection on the primary", func() (bool, string) {
		out, err := c.Psql(ctx, c.Primary, "", "SELECT pid FROM pg_stat_activity WHERE application_name = 'pgsplit positions'")
		if err != nil {
			return false, err.Error()
		}
		pid, err = strconv.Atoi(out)
		return err == nil, fmt.Sprintf("pg_stat_activity says %q", out)
	})
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		t.Fatalf("freeze the position backend %d: %v", pid, err)
	}
	// The commit is registered; its position query hangs on the frozen
	// backend.
	if _, err := conn.Exec(ctx, "INSERT INTO fo_writes (id) VALUES (2)"); err != nil {
		t.Fatal(err)
	}
	crashAt := time.Now()
	// The postmaster kills the frozen backend (SIGKILL) after 5 s.
	if err := c.StopNode(ctx, c.Primary, "immediate"); err != nil {
		t.Fatal(err)
	}
	t.Logf("primary stopped %v after the commit", time.Since(crashAt).Round(time.Millisecond))

	ports := map[int]string{c.Replicas[0].Port: c.Replicas[0].Name, c.Replicas[1].Port: c.Replicas[1].Name}
	deadline := time.Now().Add(15 * time.Second)
	var errs []string
	for {
		var port, n int
		err := conn.QueryRow(ctx, "SELECT inet_server_port(), count(*)::int FROM fo_writes").Scan(&port, &n)
		switch {
		case err == nil && n != 2:
			t.Fatalf("read on port %d saw %d rows, want 2: the committed write is missing", port, n)
		case err == nil && ports[port] == "":
			t.Fatalf("read answered by port %d, not a replica", port)
		case err == nil:
			t.Logf("read on %s %v after the commit, after %d failed reads %v", ports[port], time.Since(crashAt).Round(time.Millisecond), len(errs), errs)
			return
		}
		errs = append(errs, err.Error())
		if isConnectionError(conn, err) {
			closeConn(conn)
			if conn, err = dialProxy(connectConfig(t, p.appDSN("application_name=fo-app"), func(cc *pgx.ConnConfig) {
				cc.DefaultQueryExecMode = pgx.QueryExecModeSimpleProtocol
			})); err != nil {
				t.Fatalf("log in again: %v", err)
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no read of the written table succeeded within 15 s of the primary's loss (%d failed: %v)", len(errs), errs)
		}
		time.Sleep(200 * time.Millisecond)
	}
}
