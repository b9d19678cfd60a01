package test

import (
	"fmt"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/pgsplit/pgsplit/config"
)

// What the admin console must get right at its corners: counts, links,
// health-check logins, PAUSE at shutdown, the extended protocol.

// Pipelined autocommit statements, each with its own Sync, are one
// transaction each in SHOW STATS (the first version counted one).
func TestShowStatsCountsEachPipelinedSyncAsATransaction(t *testing.T) {
	p := adminProxy(t, nil)
	ctx := testCtx(t, 30*time.Second)
	app := connect(t, p.appDSN())
	admin := connect(t, p.adminDSN())
	mustSelectOne(t, app, "warm")
	// The pump counts a transaction once it has relayed its
	// ReadyForQuery: wait for the warm-up's, or it may land after the
	// RESET and count as one of the test's.
	waitFor(t, 5*time.Second, "the warm-up counted", func() (bool, string) {
		r := adminRow(t, admin, "SHOW STATS", "database", appDatabase)
		return r != nil && r["total_xact_count"].(int64) >= 1, fmt.Sprint(r)
	})
	if _, err := admin.Exec(ctx, "RESET STATS"); err != nil {
		t.Fatal(err)
	}
	const n = 20
	pl := app.PgConn().StartPipeline(ctx)
	for i := 0; i < n; i++ {
		pl.SendQueryParams("SELECT 1", nil, nil, nil, nil)
		pl.SendPipelineSync()
	}
	if err := pl.Flush(); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 2*n; i++ {
		r, err := pl.GetResults()
		if err != nil {
			t.Fatal(err)
		}
		if rr, ok := r.(interface{ Close() }); ok {
			rr.Close()
		}
	}
	if err := pl.Close(); err != nil {
		t.Fatal(err)
	}
	// And one explicit transaction of three statements.
	tx, err := app.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, "SELECT 1"); err != nil {
		t.Fatal(err)
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "SHOW STATS counts", func() (bool, string) {
		// BEGIN is answered by pgsplit (routing.transactions split holds
		// it back): not a statement that reached a server.
		r := adminRow(t, admin, "SHOW STATS", "database", appDatabase)
		return r != nil && r["total_xact_count"] == int64(n+1) && r["total_query_count"] == int64(n+2), fmt.Sprint(r)
	})
}

// Idle clients under transaction pooling hold no server connection: SHOW
// CLIENTS links them to none and SHOW POOLS counts no active client (the
// first version showed the connection the pump had given back).
func TestShowClientsLinksIdlePooledClientsToNoServer(t *testing.T) {
	p := adminProxy(t, nil)
	ctx := testCtx(t, 30*time.Second)
	a := connect(t, p.appDSN("application_name=cl_a"))
	b := connect(t, p.appDSN("application_name=cl_b"))
	admin := connect(t, p.adminDSN())
	for i := 0; i < 3; i++ {
		for _, c := range []*pgx.Conn{a, b} {
			if _, err := c.Exec(ctx, "SELECT 1"); err != nil {
				t.Fatal(err)
			}
		}
	}
	time.Sleep(300 * time.Millisecond)
	seen := 0
	for _, r := range adminRows(t, admin, "SHOW CLIENTS") {
		if r["application_name"] == "cl_a" || r["application_name"] == "cl_b" {
			seen++
			if r["link"] != "" || r["state"] != "idle" {
				t.Errorf("idle client %v: link %q, state %v", r["application_name"], r["link"], r["state"])
			}
		}
	}
	if seen != 2 {
		t.Errorf("SHOW CLIENTS listed %d of the 2 clients", seen)
	}
	for _, r := range adminRows(t, admin, "SHOW POOLS") {
		if r["database"] == appDatabase && r["cl_active"].(int64) != 0 {
			t.Errorf("cl_active %v with every client idle: %v", r["cl_active"], r)
		}
	}
	for _, r := range adminRows(t, admin, "SHOW SERVERS") {
		if r["link"] != "" {
			t.Errorf("server connection linked to an idle client: %v", r)
		}
	}
}

// When the health check's login is refused (auth.users[0] is unknown to the
// servers), the replicas stay in rotation: reads still reach them.
func TestRefusedHealthCheckLoginKeepsReplicasInRotation(t *testing.T) {
	p := adminProxy(t, func(c *config.Config) {
		c.Auth.Users = append([]config.User{{Name: "pgsplit_only", Password: "x-very-secret-1"}}, c.Auth.Users...)
	})
	admin := connect(t, p.adminDSN())
	waitFor(t, 5*time.Second, "failed checks", func() (bool, string) {
		nodes := adminRows(t, admin, "SHOW NODES")
		for _, n := range nodes {
			if n["healthy"] != false || n["error"] == "" {
				return false, fmt.Sprint(nodes)
			}
		}
		return true, ""
	})
	time.Sleep(300 * time.Millisecond) // several more failing checks
	for _, n := range adminRows(t, admin, "SHOW NODES") {
		if n["role"] == "replica" && n["in_rotation"] != true {
			t.Errorf("replica out of rotation after refused health-check logins: %v", n)
		}
	}
	app := connect(t, p.appDSN())
	replica := 0
	for i := 0; i < 5; i++ {
		if serverPort(t, app, "SELECT inet_server_port()") != cluster.Primary.Port {
			replica++
		}
	}
	if replica == 0 {
		t.Error("all 5 reads went to the primary")
	}
}

// A statement held by PAUSE when shutdown begins never runs: the client is
// told 57P01 and the row is not there (the first version ran it after
// telling the client the connection was terminated).
func TestStatementHeldByPauseNeverRunsAfterShutdown(t *testing.T) {
	p := adminProxy(t, func(c *config.Config) { c.Pool.PoolTimeout = 10 * time.Second })
	ctx := testCtx(t, 30*time.Second)
	su := superConn(t)
	admin := connect(t, p.adminDSN())
	b := connect(t, p.appDSN())
	mustSelectOne(t, b, "warm")
	if _, err := admin.Exec(ctx, "PAUSE"); err != nil {
		t.Fatal(err)
	}
	held := goExec(t, b, "INSERT INTO shutdown_rows (note) VALUES ('pause-held')")
	time.Sleep(300 * time.Millisecond)
	go func() { _ = p.shutdown(15 * time.Second) }()
	err := <-held
	wantAdminShutdown(t, err, "statement held by PAUSE at shutdown")
	time.Sleep(500 * time.Millisecond)
	var n int
	if err := su.QueryRow(ctx, "SELECT count(*) FROM shutdown_rows WHERE note = 'pause-held'").Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 0 {
		t.Errorf("the held INSERT ran after the client was told 57P01")
	}
}

// Extended-protocol corners of the admin console, as PostgreSQL answers
// them: a second Parse of a named statement is 42P05; Execute with a row
// limit returns PortalSuspended and the rest on the next Execute; after an
// error a Query is ignored until Sync; BEGIN/COMMIT are accepted.
func TestAdminConsoleAnswersExtendedProtocolCornersAsPostgres(t *testing.T) {
	p := adminProxy(t, nil)
	fe, _ := rawConnDSN(t, p.adminDSN())
	send := func(msgs ...pgproto3.FrontendMessage) { sendAll(t, fe, msgs...) }
	// Row limit: SHOW HELP has 14 rows; 5, then the rest.
	send(&pgproto3.Parse{Name: "h", Query: "SHOW HELP"}, &pgproto3.Bind{PreparedStatement: "h"},
		&pgproto3.Execute{MaxRows: 5}, &pgproto3.Execute{}, &pgproto3.Sync{})
	var rows, suspended, complete int
	for done := false; !done; {
		msg, err := fe.Receive()
		if err != nil {
			t.Fatal(err)
		}
		switch msg.(type) {
		case *pgproto3.DataRow:
			rows++
		case *pgproto3.PortalSuspended:
			suspended++
			if rows != 5 {
				t.Errorf("PortalSuspended after %d rows, want 5", rows)
			}
		case *pgproto3.CommandComplete:
			complete++
		case *pgproto3.ErrorResponse:
			t.Fatalf("error: %+v", msg)
		case *pgproto3.ReadyForQuery:
			done = true
		}
	}
	if rows != 14 || suspended != 1 || complete != 1 {
		t.Errorf("row limit: %d rows, %d PortalSuspended, %d CommandComplete; want 14, 1, 1", rows, suspended, complete)
	}
	// Duplicate name, then a Query before Sync is ignored.
	send(&pgproto3.Parse{Name: "h", Query: "SHOW HELP"}, &pgproto3.Query{String: "SHUTDOWN"}, &pgproto3.Sync{})
	got := readUntilReady(t, fe, 1)
	if len(got[0].errors) != 1 || got[0].errors[0] != "42P05" {
		t.Errorf("duplicate Parse: %+v, want one 42P05", got)
	}
	select {
	case <-p.srv.ShutdownRequested():
		t.Fatal("a Query sent after an error, before Sync, ran")
	default:
	}
	send(&pgproto3.Query{String: "BEGIN; SHOW VERSION; COMMIT"})
	if got := readUntilReady(t, fe, 1); len(got[0].errors) != 0 || len(got[0].rows) != 1 {
		t.Errorf("BEGIN; SHOW VERSION; COMMIT: %+v", got)
	}
}
