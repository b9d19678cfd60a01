package test

// Transaction pooling with routing: settings pgsplit injects, or a client rolls
// back, on a replica.

import (
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/pgsplit/pgsplit/config"
)

// A SET rolled back on the replica stays undone when a SET on the primary follows before it settled.
func TestRolledBackSetOnReplicaIsUndoneWhenNextSetGoesToPrimary(t *testing.T) {
	p := routingProxy(t, nil)
	fe, _ := rawConn(t, p)
	sendAll(t, fe,
		&pgproto3.Query{String: "BEGIN READ ONLY"},
		&pgproto3.Query{String: "SET work_mem = '5MB'"},
		&pgproto3.Query{String: "ROLLBACK"},
		&pgproto3.Query{String: "SET lock_timeout = '3s'"})
	t.Logf("%+v", readUntilReady(t, fe, 4))
	sendAll(t, fe, &pgproto3.Query{String: "SHOW work_mem"})
	ans := readUntilReady(t, fe, 1)
	t.Logf("SHOW: %+v", ans)
	if len(ans[0].rows) != 1 || ans[0].rows[0] != "4MB" {
		t.Errorf("rolled-back SET kept: %+v", ans)
	}
}

// The safety net reruns a misrouted write on the primary even when pgsplit first injected a setting on the replica.
func TestMisroutedWriteRerunsOnPrimaryAfterInjectedSet(t *testing.T) {
	ctx := testCtx(t, 30*time.Second)
	writingFunction(t, "rv2_write")
	p := routingProxy(t, func(c *config.Config) { c.Routing.ReadFunctions = []string{"rv2_write"} })
	c := connect(t, p.appDSN(), func(cc *pgx.ConnConfig) { cc.DefaultQueryExecMode = pgx.QueryExecModeSimpleProtocol })
	if _, err := c.Exec(ctx, "SET work_mem = '8MB'"); err != nil {
		t.Fatal(err)
	}
	before := p.srv.Misroutes()
	if got := role(serverPort(t, c, "SELECT rv2_write()")); got != "primary" {
		t.Fatalf("the write ran on the %s", got)
	}
	if n := p.srv.Misroutes() - before; n != 1 {
		t.Fatalf("misroutes counted: %d, want 1 (the retry path ran)", n)
	}
}
