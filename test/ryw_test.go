package test

// Read-your-writes by WAL position and replica lag limits (issue 10),
// against the real cluster with replica 0 delayed by
// recovery_min_apply_delay (replica 1 is not). Every guarantee is also run
// with its feature off, where it must fail: that is the proof the test can.
//
// Each write-then-read run logs a line to grep:
//
//	ryw: mode=table driver=pgx variant=autocommit-2conn synchronous_commit=on cycles=1000 stale=0 replica_share=0.99 …
//
// (replica_share: reads answered by a replica; delayed_share: by the
// delayed one; read_p50/p99: latency of the read, or of the whole read
// transaction.) PGSPLIT_RYW_CYCLES changes the number of cycles per
// variant (1000; the trigger test runs a fifth, the indirect-write cases
// a twentieth).

import (
	"context"
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgsplit/pgsplit/config"
)

// rywDelay is how far behind the delayed replica applies commits.
const rywDelay = "2s"

// rywCase is one run of write-then-read cycles.
type rywCase struct {
	mode    string // read_your_writes
	tx      bool   // explicit transactions, else autocommit
	variant string
	// commit is the primary's synchronous_commit: "on" (PostgreSQL's
	// default) or "off" (commits reach the replicas up to 200 ms after
	// they are acknowledged).
	commit string
	// auditor: the reader logs in as another user (another pool).
	auditor bool
}

// cycles is the number of cycles to run of n: a twentieth (at least 10)
// with synchronous_commit off, where each read waits for the primary's
// WAL writer (wal_writer_delay, 200 ms) to send the commit to the
// replicas.
func (c rywCase) cycles(n int) int {
	if c.commit == "off" {
		return max(n/20, 10)
	}
	return n
}

// proxy starts the case's pgsplit. With synchronous_commit off, reads may
// wait 1 s (instead of the default 10 ms, after which nearly all of them
// would go to the primary), so that each one is served by a replica and
// checks the position pgsplit waits for: the commit record's, which the
// primary acknowledges before it has flushed it.
func (c rywCase) proxy(t *testing.T) *testProxy {
	return rywProxy(t, c.mode, func(cfg *config.Config) {
		if c.commit == "off" {
			cfg.Routing.ReadYourWritesWait = time.Second
		}
	})
}

func (c rywCase) name() string { return c.mode + "/" + c.variant + "/synchronous_commit=" + c.commit }

// TestReadYourWritesSessionModeNoStaleReadOnSameConnection: with
// read_your_writes: session, a client reads its own commit at once, on the
// same connection, in autocommit and in explicit transactions, although
// one replica is 2 s behind; with off, the same cycles read stale rows.
func TestReadYourWritesSessionModeNoStaleReadOnSameConnection(t *testing.T) {
	n := rywCycles(t, 1000)
	const table = "ryw_session"
	rywTable(t, table)
	delayReplica(t, cluster.Replicas[0], rywDelay)
	for _, tc := range []rywCase{
		{config.RYWSession, false, "autocommit-1conn", "on", false},
		{config.RYWSession, true, "tx-1conn", "on", false},
		{config.RYWSession, false, "autocommit-1conn", "off", false},
		{config.RYWOff, false, "autocommit-1conn", "on", false},
		{config.RYWOff, true, "tx-1conn", "on", false},
	} {
		t.Run(tc.name(), func(t *testing.T) {
			primaryCommits(t, tc.commit)
			p := tc.proxy(t)
			c := connect(t, p.appDSN())
			st := newRYWStats(tc.mode, "pgx", tc.variant, tc.commit)
			pgxCycles(t, st, c, c, table, table, tc.tx, tc.cycles(n))
			checkStale(t, st, tc.mode == config.RYWOff)
			if tc.mode != config.RYWSession || tc.tx || tc.commit != "on" {
				return
			}
			// Session mode holds back only this client's reads: a client
			// that wrote nothing still reads on the delayed replica.
			other := connect(t, p.appDSN())
			got := readPorts(t, other, 20)
			if got[cluster.Replicas[0].Port] == 0 {
				t.Errorf("session mode: a client that wrote nothing never read on the delayed replica in 20 reads (round robin): %v", got)
			}
		})
	}
}

// TestReadYourWritesTableModeNoStaleReadAcrossConnections: with
// read_your_writes: table (the default), a row committed through one
// connection is read at once through another (of the same user, or of
// another user: another pool), in autocommit and in
// explicit transactions, although one replica is 2 s behind, and also
// with the primary's synchronous_commit off (its commits reach the
// replicas later than they are acknowledged); reads of tables nobody
// wrote still use the delayed replica; with off, the same cycles read
// stale rows.
func TestReadYourWritesTableModeNoStaleReadAcrossConnections(t *testing.T) {
	n := rywCycles(t, 1000)
	const table = "ryw_table"
	rywTable(t, table)
	delayReplica(t, cluster.Replicas[0], rywDelay)
	for _, tc := range []rywCase{
		{config.RYWTable, false, "autocommit-2conn", "on", false},
		{config.RYWTable, true, "tx-2conn", "on", false},
		{config.RYWTable, false, "autocommit-2users", "on", true},
		{config.RYWTable, false, "autocommit-2conn", "off", false},
		{config.RYWOff, false, "autocommit-2conn", "on", false},
		{config.RYWOff, true, "tx-2conn", "on", false},
		{config.RYWOff, false, "autocommit-2users", "on", true},
	} {
		t.Run(tc.name(), func(t *testing.T) {
			primaryCommits(t, tc.commit)
			p := tc.proxy(t)
			w := connect(t, p.appDSN())
			readerDSN := p.appDSN()
			if tc.auditor {
				readerDSN = p.dsn(auditorUser, auditorPassword)
			}
			r := connect(t, readerDSN)
			st := newRYWStats(tc.mode, "pgx", tc.variant, tc.commit)
			began := time.Now()
			pgxCycles(t, st, w, r, table, table, tc.tx, tc.cycles(n))
			checkStale(t, st, tc.mode == config.RYWOff)
			if tc.mode != config.RYWTable || tc.tx || tc.commit != "on" || tc.auditor {
				return
			}
			// Table mode holds back only reads of written tables: between
			// writes to the test table, a read of kv, which no client of this
			// pgsplit wrote, still goes to the delayed replica in its turn.
			// (Until pgsplit has read the catalog, just after the first
			// login, a write counts as one to every table: the delayed
			// replica must have replayed the first cycles, 2 s after they
			// began, and pgsplit learnt it, at worst from the next health
			// check.)
			time.Sleep(time.Until(began.Add(2*time.Second + config.DefaultRouting().HealthCheckInterval + 500*time.Millisecond)))
			got := map[int]int{}
			first := rywIDs(20)
			for i := range int64(20) {
				if _, err := w.Exec(testCtx(t, 10*time.Second), "INSERT INTO "+table+" (id, v) VALUES ($1, 'x')", first+i); err != nil {
					t.Fatal(err)
				}
				got[serverPort(t, r, "SELECT inet_server_port() FROM (SELECT count(*) FROM kv) s")]++
			}
			if got[cluster.Replicas[0].Port] == 0 {
				t.Errorf("table mode: 20 reads of an unwritten table, each right after a write to another, never reached the delayed replica (round robin): %v", got)
			}
		})
	}
}

// TestReadYourWritesPsycopg2NoStaleReadAcrossConnections: the pooled
// application pattern through psycopg2 (an implicit BEGIN … COMMIT around
// every operation; the write committed on one connection, the read on
// another) and through a SQLAlchemy QueuePool reads its writes in table
// mode; with off it reads stale rows.
func TestReadYourWritesPsycopg2NoStaleReadAcrossConnections(t *testing.T) {
	requirePython(t, "psycopg2", "sqlalchemy")
	n := rywCycles(t, 1000)
	const table = "ryw_py"
	rywTable(t, table)
	delayReplica(t, cluster.Replicas[0], rywDelay)
	for _, tc := range []struct{ mode, variant string }{
		{config.RYWTable, "psycopg2"}, {config.RYWTable, "sqlalchemy"},
		{config.RYWOff, "psycopg2"}, {config.RYWOff, "sqlalchemy"},
	} {
		t.Run(tc.mode+"/"+tc.variant, func(t *testing.T) {
			primaryCommits(t, "on")
			p := rywProxy(t, tc.mode, nil)
			driver, variant := tc.variant, "implicit-tx-2conn"
			if tc.variant == "sqlalchemy" {
				variant = "queuepool-2conn"
			}
			st := newRYWStats(tc.mode, driver, variant, "on")
			pyCycles(t, st, p.appDSN(), table, tc.variant, n)
			checkStale(t, st, tc.mode == config.RYWOff)
		})
	}
}

// TestReadYourWritesThroughTriggerAndView: a row written by a trigger (an
// insert into ryw_src copies it into ryw_dst) is read at once through a
// view over ryw_dst on another connection in table mode: the tables a
// statement writes and reads are those PostgreSQL touches, not only those
// it names. With off the same reads are stale.
func TestReadYourWritesThroughTriggerAndView(t *testing.T) {
	n := max(rywCycles(t, 1000)/5, 1)
	rywSchema(t, []string{
		`CREATE TABLE ryw_src (id bigint PRIMARY KEY, v text NOT NULL)`,
		`CREATE TABLE ryw_dst (id bigint PRIMARY KEY, v text NOT NULL)`,
		`CREATE FUNCTION ryw_copy() RETURNS trigger LANGUAGE plpgsql AS $$
		 BEGIN INSERT INTO ryw_dst (id, v) VALUES (NEW.id, NEW.v); RETURN NEW; END $$`,
		`CREATE TRIGGER ryw_copy AFTER INSERT ON ryw_src FOR EACH ROW EXECUTE FUNCTION ryw_copy()`,
		`CREATE VIEW ryw_v AS SELECT id, v FROM ryw_dst`,
	}, "DROP VIEW IF EXISTS ryw_v; DROP TABLE IF EXISTS ryw_src, ryw_dst; DROP FUNCTION IF EXISTS ryw_copy()")
	delayReplica(t, cluster.Replicas[0], rywDelay)
	for _, tc := range []rywCase{
		{config.RYWTable, false, "trigger-view-autocommit-2conn", "on", false},
		{config.RYWTable, true, "trigger-view-tx-2conn", "on", false},
		{config.RYWOff, false, "trigger-view-autocommit-2conn", "on", false},
	} {
		t.Run(tc.name(), func(t *testing.T) {
			primaryCommits(t, tc.commit)
			p := tc.proxy(t)
			w := connect(t, p.appDSN())
			r := connect(t, p.appDSN())
			st := newRYWStats(tc.mode, "pgx", tc.variant, tc.commit)
			pgxCycles(t, st, w, r, "ryw_src", "ryw_v", tc.tx, n)
			checkStale(t, st, tc.mode == config.RYWOff)
		})
	}
}

// TestReadYourWritesTableModeIndirectWritesAndReads: table mode covers the
// other ways a statement writes a table (a writing function, DO, COPY,
// a writable CTE, MERGE, UPDATE, DELETE, a foreign key's ON UPDATE
// CASCADE, an auto-updatable view, a partitioned table and its partition,
// a schema-qualified quoted name) and reads it (a view over a view, a
// CTE, a STABLE SQL function): a read on another connection right after
// the commit never sees the old state. Each case also runs with off,
// where it must read stale rows.
func TestReadYourWritesTableModeIndirectWritesAndReads(t *testing.T) {
	n := max(rywCycles(t, 1000)/20, 10)
	tables := []string{"ryw_ix_fn", "ryw_ix_do", "ryw_ix_copy", `"ryw_ix_Q"`, "ryw_ix_cte", "ryw_ix_merge",
		"ryw_ix_upd", "ryw_ix_del", "ryw_ix_base", "ryw_ix_vvt", "ryw_ix_rf", "ryw_ix_j"}
	var schema []string
	for _, tb := range tables {
		schema = append(schema, fmt.Sprintf("CREATE TABLE %s (id bigint PRIMARY KEY, v text NOT NULL)", tb))
	}
	schema = append(schema,
		`CREATE FUNCTION ryw_ix_put(bigint, text) RETURNS void LANGUAGE plpgsql AS $$
		 BEGIN INSERT INTO ryw_ix_fn (id, v) VALUES ($1, $2); END $$`,
		`CREATE FUNCTION ryw_ix_get(bigint) RETURNS text LANGUAGE sql STABLE AS $$ SELECT v FROM ryw_ix_rf WHERE id = $1 $$`,
		`CREATE VIEW ryw_ix_uv AS SELECT id, v FROM ryw_ix_base`,
		`CREATE VIEW ryw_ix_vv1 AS SELECT id, v FROM ryw_ix_vvt`,
		`CREATE VIEW ryw_ix_vv2 AS SELECT id, v FROM ryw_ix_vv1`,
		`CREATE TABLE ryw_ix_parent (id bigint PRIMARY KEY, k text UNIQUE NOT NULL)`,
		`CREATE TABLE ryw_ix_child (id bigint PRIMARY KEY, k text NOT NULL REFERENCES ryw_ix_parent (k) ON UPDATE CASCADE)`,
		`CREATE TABLE ryw_ix_part (id bigint NOT NULL, v text NOT NULL) PARTITION BY RANGE (id)`,
		`CREATE TABLE ryw_ix_part_d PARTITION OF ryw_ix_part DEFAULT`,
		`CREATE TABLE ryw_ix_part2 (id bigint NOT NULL, v text NOT NULL) PARTITION BY RANGE (id)`,
		`CREATE TABLE ryw_ix_part2_d PARTITION OF ryw_ix_part2 DEFAULT`,
	)
	// Keys of the two modes, and the rows that UPDATE, DELETE and the
	// cascade change, there before the replica is delayed.
	ids := map[string]int64{config.RYWTable: rywIDs(n), config.RYWOff: rywIDs(n)}
	for _, first := range ids {
		r := fmt.Sprintf("generate_series(%d::bigint, %d::bigint) g", first, first+int64(n)-1)
		schema = append(schema,
			"INSERT INTO ryw_ix_upd SELECT g, 'old' FROM "+r,
			"INSERT INTO ryw_ix_del SELECT g, 'old' FROM "+r,
			"INSERT INTO ryw_ix_parent SELECT g, 'old-' || g FROM "+r,
			"INSERT INTO ryw_ix_child SELECT g, 'old-' || g FROM "+r)
	}
	rywSchema(t, schema, "DROP TABLE IF EXISTS "+strings.Join(tables, ", ")+
		", ryw_ix_child, ryw_ix_parent, ryw_ix_part, ryw_ix_part2 CASCADE; DROP FUNCTION IF EXISTS ryw_ix_put(bigint, text), ryw_ix_get(bigint)")
	primaryCommits(t, "on")
	delayReplica(t, cluster.Replicas[0], rywDelay)

	exec := func(sql string) func(ctx context.Context, q pgxRunner, id int64, v string) error {
		return func(ctx context.Context, q pgxRunner, id int64, v string) error {
			tag, err := q.Exec(ctx, sql, id, v)
			if err == nil && tag.RowsAffected() != 1 && !tag.Select() {
				err = fmt.Errorf("%s: %d rows, want 1", sql, tag.RowsAffected())
			}
			return err
		}
	}
	readOf := func(from string) string {
		return fmt.Sprintf("SELECT (SELECT v FROM %s WHERE id = $1), inet_server_port()", from)
	}
	cases := []struct {
		name string
		op   rywOp
	}{
		{"writing function", rywOp{write: exec("SELECT ryw_ix_put($1, $2)"), read: readOf("ryw_ix_fn")}},
		{"DO block", rywOp{write: func(ctx context.Context, q pgxRunner, id int64, v string) error {
			_, err := q.Exec(ctx, fmt.Sprintf("DO $$ BEGIN INSERT INTO ryw_ix_do (id, v) VALUES (%d, '%s'); END $$", id, v))
			return err
		}, read: readOf("ryw_ix_do")}},
		{"COPY FROM STDIN", rywOp{write: func(ctx context.Context, q pgxRunner, id int64, v string) error {
			_, err := q.CopyFrom(ctx, pgx.Identifier{"ryw_ix_copy"}, []string{"id", "v"}, pgx.CopyFromRows([][]any{{id, v}}))
			return err
		}, read: readOf("ryw_ix_copy")}},
		{"schema-qualified quoted name", insertOp(`public."ryw_ix_Q"`, `"ryw_ix_Q"`)},
		{"writable CTE", rywOp{write: exec("WITH x AS (INSERT INTO ryw_ix_cte (id, v) VALUES ($1, $2) RETURNING 1) SELECT count(*) FROM x"),
			read: readOf("ryw_ix_cte")}},
		{"MERGE", rywOp{write: exec("MERGE INTO ryw_ix_merge t USING (SELECT $1::bigint AS id, $2::text AS v) s ON t.id = s.id WHEN NOT MATCHED THEN INSERT (id, v) VALUES (s.id, s.v)"),
			read: readOf("ryw_ix_merge")}},
		{"UPDATE", rywOp{write: exec("UPDATE ryw_ix_upd SET v = $2 WHERE id = $1"), read: readOf("ryw_ix_upd"),
			old: func(int64) *string { return strPtr("old") }}},
		{"DELETE", rywOp{write: func(ctx context.Context, q pgxRunner, id int64, _ string) error {
			_, err := q.Exec(ctx, "DELETE FROM ryw_ix_del WHERE id = $1", id)
			return err
		}, read: readOf("ryw_ix_del"), want: func(int64) *string { return nil }, old: func(int64) *string { return strPtr("old") }}},
		{"ON UPDATE CASCADE", rywOp{write: exec("UPDATE ryw_ix_parent SET k = $2 WHERE id = $1"),
			read: "SELECT (SELECT k FROM ryw_ix_child WHERE id = $1), inet_server_port()",
			old:  func(id int64) *string { return strPtr(fmt.Sprintf("old-%d", id)) }}},
		{"auto-updatable view", insertOp("ryw_ix_uv", "ryw_ix_base")},
		{"partitioned table, read its partition", insertOp("ryw_ix_part", "ryw_ix_part_d")},
		{"partition, read the partitioned table", insertOp("ryw_ix_part2_d", "ryw_ix_part2")},
		{"view over a view", insertOp("ryw_ix_vvt", "ryw_ix_vv2")},
		{"read in a CTE", rywOp{write: insertOp("ryw_ix_j", "ryw_ix_j").write,
			read: "WITH c AS (SELECT v FROM ryw_ix_j WHERE id = $1) SELECT (SELECT v FROM c), inet_server_port()"}},
		{"read through a STABLE function", rywOp{write: insertOp("ryw_ix_rf", "ryw_ix_rf").write,
			read: "SELECT ryw_ix_get($1), inet_server_port()"}},
	}
	type conns struct{ w, r *pgx.Conn }
	byMode := map[string]conns{}
	for _, mode := range []string{config.RYWTable, config.RYWOff} {
		p := rywProxy(t, mode, nil)
		byMode[mode] = conns{connect(t, p.appDSN()), connect(t, p.appDSN())}
	}
	for _, tc := range cases {
		for _, mode := range []string{config.RYWTable, config.RYWOff} {
			t.Run(mode+"/"+tc.name, func(t *testing.T) {
				st := newRYWStats(mode, "pgx", strings.NewReplacer(",", "", " ", "-").Replace(tc.name), "on")
				c := byMode[mode]
				// Every case uses the same keys: each writes its own table.
				opCycles(t, st, c.w, c.r, tc.op, false, ids[mode], n)
				checkStale(t, st, mode == config.RYWOff)
			})
		}
	}
}

// TestLagLimitTakesReplicaOutOfRotation: with max_replica_lag 1s (or
// max_replica_lag_bytes 16 kB) a replica 2 s behind leaves read rotation
// within a few seconds (SHOW NODES says so and no read reaches it), and
// comes back once the delay is removed; with no limit the same replica
// keeps getting reads. read_your_writes is off, so only the limit decides.
func TestLagLimitTakesReplicaOutOfRotation(t *testing.T) {
	rywSchema(t, []string{`CREATE TABLE ryw_trickle (id bigserial PRIMARY KEY, pad text NOT NULL)`},
		"DROP TABLE IF EXISTS ryw_trickle")
	// About 20 kB of WAL a second: 2 s behind is about 40 kB behind.
	trickle(t, "ryw_trickle", 50*time.Millisecond, 1000)
	delayed := cluster.Replicas[0]
	for _, tc := range []struct {
		name  string
		secs  time.Duration
		bytes int64
	}{
		{"max_replica_lag=1s", time.Second, 0},
		{"max_replica_lag_bytes=16kB", 0, 16 << 10},
		{"no limit", 0, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			limited := tc.secs > 0 || tc.bytes > 0
			p := rywProxy(t, config.RYWOff, func(c *config.Config) {
				c.Routing.MaxReplicaLag = tc.secs
				c.Routing.MaxReplicaLagBytes = tc.bytes
				c.Routing.HealthCheckInterval = 200 * time.Millisecond
				c.Admin.Users = []config.User{{Name: adminUser, Password: adminPassword}}
			})
			mark := p.logs.mark()
			admin := connect(t, p.adminDSN())
			c := connect(t, p.appDSN(), func(cc *pgx.ConnConfig) { cc.DefaultQueryExecMode = pgx.QueryExecModeSimpleProtocol })
			if got := readPorts(t, c, 10); got[delayed.Port] == 0 {
				t.Fatalf("before the delay, 10 reads (round robin) never reached replica %d: %v", delayed.Port, got)
			}

			undelay := delayReplica(t, delayed, rywDelay)
			began := time.Now()
			if !limited {
				// The control: the lag is there and over what the limits
				// above allow, yet the replica stays in rotation.
				waitFor(t, 10*time.Second, "the delayed replica's lag measured over 1 s", func() (bool, string) {
					n := nodeRow(t, admin, delayed.Port)
					s, _ := n["lag_seconds"].(float64)
					return s > 1, fmt.Sprint(n)
				})
				if n := nodeRow(t, admin, delayed.Port); n["in_rotation"] != true {
					t.Errorf("with no lag limit the delayed replica left rotation: %v", n)
				}
				if got := readPorts(t, c, 40); got[delayed.Port] == 0 {
					t.Errorf("with no lag limit, 40 reads never reached the delayed replica: %v", got)
				}
				return
			}
			waitFor(t, 10*time.Second, "the delayed replica out of rotation in SHOW NODES", func() (bool, string) {
				n := nodeRow(t, admin, delayed.Port)
				return n["in_rotation"] == false, fmt.Sprint(n)
			})
			out := time.Since(began)
			n := nodeRow(t, admin, delayed.Port)
			t.Logf("out of rotation after %.1fs: %v", out.Seconds(), n)
			if got := readPorts(t, c, 40); got[delayed.Port] != 0 {
				t.Errorf("out of rotation, yet %d of 40 reads reached the delayed replica: %v", got[delayed.Port], got)
			}
			if un := nodeRow(t, admin, cluster.Replicas[1].Port); un["in_rotation"] != true {
				t.Errorf("the undelayed replica left rotation too: %v", un)
			}
			logLagLines(t, p, mark, delayed.Port)

			undelay()
			began = time.Now()
			waitFor(t, 10*time.Second, "a read on the replica again once its delay is removed", func() (bool, string) {
				got := readPorts(t, c, 2)
				return got[delayed.Port] > 0, fmt.Sprintf("reads %v, SHOW NODES %v", got, nodeRow(t, admin, delayed.Port))
			})
			back := time.Since(began)
			if n := nodeRow(t, admin, delayed.Port); n["in_rotation"] != true {
				t.Errorf("a read reached the replica but SHOW NODES says: %v", n)
			}
			t.Logf("lag: limit=%s out_after=%.1fs back_after=%.1fs (after catching up)", tc.name, out.Seconds(), back.Seconds())
		})
	}
}

// TestLagLimitReturnsOnlyUnderHalf: a replica that left rotation over
// max_replica_lag 1s stays out while its lag is between half the limit
// and the limit (0.7 s here), and comes back under half (0.3 s); the
// control is the same 0.7 s lag on a replica that never went over, which
// stays in rotation. The lag is set exactly with recovery_min_apply_delay
// and a steady trickle of writes.
func TestLagLimitReturnsOnlyUnderHalf(t *testing.T) {
	rywSchema(t, []string{`CREATE TABLE ryw_trickle_h (id bigserial PRIMARY KEY, pad text NOT NULL)`},
		"DROP TABLE IF EXISTS ryw_trickle_h")
	trickle(t, "ryw_trickle_h", 50*time.Millisecond, 100)
	delayed := cluster.Replicas[0]
	p := rywProxy(t, config.RYWOff, func(c *config.Config) {
		c.Routing.MaxReplicaLag = time.Second
		c.Routing.HealthCheckInterval = 200 * time.Millisecond
		c.Admin.Users = []config.User{{Name: adminUser, Password: adminPassword}}
	})
	admin := connect(t, p.adminDSN())
	c := connect(t, p.appDSN(), func(cc *pgx.ConnConfig) { cc.DefaultQueryExecMode = pgx.QueryExecModeSimpleProtocol })
	rc := nodeConn(t, delayed)
	lagNear := func(lo, hi float64) {
		t.Helper()
		waitFor(t, 10*time.Second, fmt.Sprintf("lag of the delayed replica between %.1f s and %.1f s", lo, hi), func() (bool, string) {
			n := nodeRow(t, admin, delayed.Port)
			s, _ := n["lag_seconds"].(float64)
			return s >= lo && s < hi, fmt.Sprint(n)
		})
	}
	// Five health checks at a steady lag, then the replica's state.
	steady := func(wantIn bool, what string) {
		t.Helper()
		time.Sleep(time.Second)
		n := nodeRow(t, admin, delayed.Port)
		got := readPorts(t, c, 20)
		if n["in_rotation"] != wantIn || (got[delayed.Port] > 0) != wantIn {
			t.Fatalf("%s: want in rotation %v; SHOW NODES: %v; 20 reads: %v", what, wantIn, n, got)
		}
	}

	delayReplica(t, delayed, "700ms")
	lagNear(0.6, 0.95)
	steady(true, "lag 0.7 s, never over 1 s (control)")

	setApplyDelay(t, rc, "2s")
	waitFor(t, 10*time.Second, "the delayed replica out of rotation", func() (bool, string) {
		n := nodeRow(t, admin, delayed.Port)
		return n["in_rotation"] == false, fmt.Sprint(n)
	})

	setApplyDelay(t, rc, "700ms")
	lagNear(0.6, 0.95)
	steady(false, "lag back to 0.7 s after being over 1 s (over half the limit)")

	setApplyDelay(t, rc, "300ms")
	lagNear(0.2, 0.5)
	waitFor(t, 5*time.Second, "the replica back in rotation under half the limit", func() (bool, string) {
		n := nodeRow(t, admin, delayed.Port)
		return n["in_rotation"] == true, fmt.Sprint(n)
	})
	if got := readPorts(t, c, 20); got[delayed.Port] == 0 {
		t.Errorf("back in rotation, yet 20 reads never reached the replica: %v", got)
	}
}

// TestLagReplicasOnlyFailsReadsWithNoReplicaInLimits: with read_from:
// replicas_only and the only replica over max_replica_lag, reads fail with
// 57P03 instead of going to the primary, writes still work, and reads work
// again once the replica is back; with read_from: replicas (the control)
// the same read is answered by the primary.
func TestLagReplicasOnlyFailsReadsWithNoReplicaInLimits(t *testing.T) {
	rywSchema(t, []string{`CREATE TABLE ryw_trickle_ro (id bigserial PRIMARY KEY, pad text NOT NULL)`},
		"DROP TABLE IF EXISTS ryw_trickle_ro")
	trickle(t, "ryw_trickle_ro", 50*time.Millisecond, 100)
	delayed := cluster.Replicas[0]
	undelay := delayReplica(t, delayed, rywDelay)
	proxyFor := func(readFrom string) *testProxy {
		return rywProxy(t, config.RYWOff, func(c *config.Config) {
			c.Servers = []config.Server{
				{Host: cluster.Primary.Host, Port: cluster.Primary.Port, Role: config.RolePrimary},
				{Host: delayed.Host, Port: delayed.Port, Role: config.RoleReplica, Weight: 1},
			}
			c.Routing.ReadFrom = readFrom
			c.Routing.MaxReplicaLag = time.Second
			c.Routing.HealthCheckInterval = 200 * time.Millisecond
			c.Admin.Users = []config.User{{Name: adminUser, Password: adminPassword}}
		})
	}
	only, fallback := proxyFor(config.ReadFromReplicasOnly), proxyFor(config.ReadFromReplicas)
	for _, p := range []*testProxy{only, fallback} {
		admin := connect(t, p.adminDSN())
		waitFor(t, 10*time.Second, "the delayed replica out of rotation", func() (bool, string) {
			n := nodeRow(t, admin, delayed.Port)
			return n["in_rotation"] == false, fmt.Sprint(n)
		})
	}
	ctx := testCtx(t, 30*time.Second)

	fb := connect(t, fallback.appDSN())
	if got := serverPort(t, fb, "SELECT inet_server_port()"); got != cluster.Primary.Port {
		t.Errorf("read_from replicas, no replica in rotation: the read ran on %s, want the primary", roleName(got))
	}

	c := connect(t, only.appDSN())
	var port int
	err := c.QueryRow(ctx, "SELECT inet_server_port()").Scan(&port)
	if err == nil {
		t.Fatalf("read_from replicas_only, no replica in rotation: the read ran on %s", roleName(port))
	}
	wantState(t, err, "57P03", "read with no replica in rotation")
	if _, err := c.Exec(ctx, "INSERT INTO ryw_trickle_ro (pad) VALUES ('through pgsplit')"); err != nil {
		t.Errorf("a write with no replica in rotation: %v", err)
	}
	readsOnReplica := func() (bool, string) {
		var p int
		err := c.QueryRow(ctx, "SELECT inet_server_port()").Scan(&p)
		return err == nil && p == delayed.Port, fmt.Sprintf("port %d, %v", p, err)
	}
	undelay()
	waitFor(t, 10*time.Second, "reads on the replica again once it caught up", readsOnReplica)
}

// TestReadYourWritesReplicasOnlyNeverFallsBackToPrimary: with read_from:
// replicas_only, a read that must see a commit no replica has replayed
// within read_your_writes_wait does not go to the primary (reads never
// do): it fails with 57P03, or is answered by a replica once it has caught
// up, and the session goes on. The control, read_from: replicas, answers
// it from the primary.
func TestReadYourWritesReplicasOnlyNeverFallsBackToPrimary(t *testing.T) {
	const table = "ryw_ro"
	rywTable(t, table)
	delayed := cluster.Replicas[0]
	delayReplica(t, delayed, rywDelay)
	for _, readFrom := range []string{config.ReadFromReplicasOnly, config.ReadFromReplicas} {
		t.Run(readFrom, func(t *testing.T) {
			p := rywProxy(t, config.RYWTable, func(c *config.Config) {
				c.Servers = []config.Server{
					{Host: cluster.Primary.Host, Port: cluster.Primary.Port, Role: config.RolePrimary},
					{Host: delayed.Host, Port: delayed.Port, Role: config.RoleReplica, Weight: 1},
				}
				c.Routing.ReadFrom = readFrom
			})
			w := connect(t, p.appDSN())
			r := connect(t, p.appDSN())
			ctx := testCtx(t, 20*time.Second)
			id := rywIDs(1)
			if _, err := w.Exec(ctx, "INSERT INTO "+table+" (id, v) VALUES ($1, 'x')", id); err != nil {
				t.Fatal(err)
			}
			var v *string
			var port int
			err := r.QueryRow(ctx, "SELECT (SELECT v FROM "+table+" WHERE id = $1), inet_server_port()", id).Scan(&v, &port)
			switch {
			case readFrom == config.ReadFromReplicas:
				if err != nil || port != cluster.Primary.Port || v == nil {
					t.Fatalf("read_from replicas: the read after the write: port %d (%s), row seen %v, %v; want the primary's answer", port, roleName(port), v != nil, err)
				}
			case err != nil:
				wantState(t, err, "57P03", "replicas_only read that no replica can serve yet")
			case port == cluster.Primary.Port:
				t.Fatalf("read_from replicas_only: a read that must see a commit no replica has replayed went to the primary")
			case v == nil:
				t.Fatalf("read_from replicas_only: a replica (port %d) answered the read without the row committed before it", port)
			}
			// The session goes on.
			if _, err := r.Exec(ctx, "INSERT INTO "+table+" (id, v) VALUES ($1, 'y')", rywIDs(1)); err != nil {
				t.Errorf("a write after that read: %v", err)
			}
		})
	}
}

// logLagLines prints what p logged about the server on port since mark,
// and says so when it logged nothing (the admin console is what the test
// asserts).
func logLagLines(t *testing.T, p *testProxy, mark, port int) {
	t.Helper()
	needle := fmt.Sprintf(":%d", port)
	var lines []string
	for _, e := range p.logs.entries(mark) {
		if strings.HasSuffix(e.str("server"), needle) || strings.Contains(e.str("raw"), needle) {
			lines = append(lines, fmt.Sprint(e))
		}
	}
	if len(lines) == 0 {
		t.Logf("pgsplit logged nothing about server port %d leaving rotation", port)
		return
	}
	t.Logf("pgsplit's log about port %d:\n%s", port, strings.Join(lines, "\n"))
}

// TestNewcomerPsqlSeesOwnInsert: the `make demo` newcomer's first
// commands, one psql with three -c through pgsplit with the default
// routing, answer count 1 (CREATE TABLE, INSERT, then SELECT on a
// replica). Made deterministic with pgsplit's only replica 2 s behind,
// where read_your_writes: off answers from the stale replica.
func TestNewcomerPsqlSeesOwnInsert(t *testing.T) {
	su := superConn(t)
	drop := func(t *testing.T) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if _, err := su.Exec(ctx, "DROP TABLE IF EXISTS t_n"); err != nil {
			t.Fatalf("DROP TABLE t_n: %v", err)
		}
		// The next run must not find the old t_n on a replica.
		waitAllCaughtUp(t)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_, _ = su.Exec(ctx, "DROP TABLE IF EXISTS t_n")
	})
	countRE := regexp.MustCompile(`(?m)^\s*count\s*\n-+\n\s*(\d+)\s*\n\(1 row\)`)
	newcomer := func(t *testing.T, p *testProxy) (string, psqlResult) {
		drop(t)
		url := fmt.Sprintf("postgres://%s:%s@%s/%s?sslmode=disable", appUser, appPassword, p.addr(), appDatabase)
		res := runCmd(t, nil, psqlBinary(), "-X", url,
			"-c", "CREATE TABLE t_n (x int)", "-c", "INSERT INTO t_n VALUES (1)", "-c", "SELECT count(*) FROM t_n")
		m := countRE.FindStringSubmatch(res.stdout)
		if res.exitCode != 0 || m == nil {
			return "", res
		}
		return m[1], res
	}

	// demoProxy has the default routing section, as `make demo` runs
	// (routingProxy waits longer for replicas).
	demoProxy := func(t *testing.T, mutate func(*config.Config)) *testProxy {
		return startProxy(t, func(c *config.Config) {
			c.Routing = config.DefaultRouting()
			if mutate != nil {
				mutate(c)
			}
		})
	}
	t.Run("make demo config", func(t *testing.T) {
		// Exactly the demo's routing (both replicas, no delay) a few times.
		p := demoProxy(t, nil)
		for i := range 5 {
			got, res := newcomer(t, p)
			if got != "1" {
				t.Fatalf("run %d: psql exit %d, count %q, want 1\nstdout:\n%s\nstderr:\n%s", i, res.exitCode, got, res.stdout, res.stderr)
			}
		}
	})

	undelay := delayReplica(t, cluster.Replicas[0], rywDelay)
	onlyDelayed := func(c *config.Config) {
		c.Servers = []config.Server{
			{Host: cluster.Primary.Host, Port: cluster.Primary.Port, Role: config.RolePrimary},
			{Host: cluster.Replicas[0].Host, Port: cluster.Replicas[0].Port, Role: config.RoleReplica, Weight: 1},
		}
	}
	t.Run("off reads the stale replica", func(t *testing.T) {
		p := demoProxy(t, func(c *config.Config) {
			onlyDelayed(c)
			c.Routing.ReadYourWrites = config.RYWOff
		})
		got, res := newcomer(t, p)
		t.Logf("read_your_writes off: psql exit %d, count %q, stderr %q", res.exitCode, got, strings.TrimSpace(res.stderr))
		if got == "1" {
			t.Errorf("read_your_writes off with the only replica 2 s behind: psql still counted 1, so the test cannot fail\nstdout:\n%s", res.stdout)
		}
	})
	t.Run("default table mode, only replica 2 s behind", func(t *testing.T) {
		p := demoProxy(t, func(c *config.Config) {
			onlyDelayed(c)
			c.Routing.ReadYourWrites = "" // the default
		})
		got, res := newcomer(t, p)
		if got != "1" {
			t.Errorf("psql exit %d, count %q, want 1\nstdout:\n%s\nstderr:\n%s", res.exitCode, got, res.stdout, res.stderr)
		}
	})
	undelay()
}

// TestReadYourWritesDescribeFirstDriverSeesNewTable: a driver that
// describes a statement before it runs it (pgx's describe_exec and
// cache_describe modes, JDBC, node-postgres' named statements) sends a
// Parse/Describe/Sync with no Execute; right after a CREATE TABLE that
// batch names a table the delayed replica does not have yet. Under table
// mode it waits (or goes to the primary) like the read itself; with
// read_your_writes off some of those describes hit the delayed replica and
// fail with 42P01.
func TestReadYourWritesDescribeFirstDriverSeesNewTable(t *testing.T) {
	delayReplica(t, cluster.Replicas[0], rywDelay)
	su := superConn(t)
	for _, mode := range []string{config.RYWTable, config.RYWOff} {
		t.Run(mode, func(t *testing.T) {
			p := rywProxy(t, mode, nil)
			c := connect(t, p.appDSN(), func(cfg *pgx.ConnConfig) { cfg.DefaultQueryExecMode = pgx.QueryExecModeDescribeExec })
			ctx := testCtx(t, time.Minute)
			missing := 0
			for i := range 10 {
				tbl := fmt.Sprintf("ryw_describe_%s_%d", mode, i)
				if err := execAll(ctx, c, "DROP TABLE IF EXISTS "+tbl, "CREATE TABLE "+tbl+" (id int)"); err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { _, _ = su.Exec(context.Background(), "DROP TABLE IF EXISTS "+tbl) })
				var n int
				err := c.QueryRow(ctx, "SELECT count(*) FROM "+tbl+" WHERE id > $1", 0).Scan(&n)
				switch {
				case sqlState(err) == "42P01":
					missing++
				case err != nil:
					t.Fatalf("round %d: %v", i, err)
				}
			}
			if mode == config.RYWTable && missing > 0 {
				t.Errorf("table mode: %d of 10 describe-first reads of a table just created found no such table", missing)
			}
			if mode == config.RYWOff && missing == 0 {
				t.Errorf("read_your_writes off: no describe of 10 reached the delayed replica before it replayed the CREATE: the test cannot tell")
			}
		})
	}
}

// TestReadYourWritesLargeBindWrite: an INSERT whose Bind is over
// limits.max_batch_bytes streams to the primary message by message; its
// Execute still registers the write, so a read of the table on another
// connection waits for it (table mode) — with read_your_writes off some
// reads come from the delayed replica and miss the row.
func TestReadYourWritesLargeBindWrite(t *testing.T) {
	const table = "ryw_large_bind"
	rywSchema(t, []string{"CREATE TABLE " + table + " (id int PRIMARY KEY, b bytea)"}, "DROP TABLE IF EXISTS "+table)
	delayReplica(t, cluster.Replicas[0], rywDelay)
	blob := make([]byte, 2<<20) // over the default max_batch_bytes (1 MB)
	for i := range blob {
		blob[i] = byte(i * 7)
	}
	id := int(rywIDs(20))
	for _, mode := range []string{config.RYWTable, config.RYWOff} {
		t.Run(mode, func(t *testing.T) {
			p := rywProxy(t, mode, nil)
			w, r := connect(t, p.appDSN()), connect(t, p.appDSN())
			ctx := testCtx(t, time.Minute)
			stale := 0
			for range 10 {
				id++
				if _, err := w.Exec(ctx, "INSERT INTO "+table+" VALUES ($1, $2)", id, blob); err != nil {
					t.Fatal(err)
				}
				var n int
				if err := r.QueryRow(ctx, "SELECT count(*) FROM "+table+" WHERE id = $1", id).Scan(&n); err != nil {
					t.Fatal(err)
				}
				if n == 0 {
					stale++
				}
			}
			if mode == config.RYWTable && stale > 0 {
				t.Errorf("table mode: %d of 10 reads after a large-Bind INSERT did not see it", stale)
			}
			if mode == config.RYWOff && stale == 0 {
				t.Errorf("read_your_writes off: no read of 10 came from the delayed replica: the test cannot tell")
			}
		})
	}
}
