package test

import (
	"bytes"
	"context"
	"crypto/md5"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// The command-line tools' cells: psql, pgbench and pg_dump/pg_restore (with
// createdb and dropdb), PostgreSQL 15's own client programs from the
// cluster's binaries, run against each target by Go checks that exec them.
// Fixtures are in test/compat/tools/.

// compatToolCells are the matrix's tool cells.
func compatToolCells() []compatCell {
	return []compatCell{
		{
			driver: "psql", tool: true,
			extra: []string{"copy", "gset", "watch", "cancel", "types", "error_rollback"},
			run: func(t *testing.T, env compatEnv) []compatResult {
				return toolRun(t, env, "psql", psqlChecks)
			},
		},
		{
			driver: "pgbench", tool: true,
			extra: pgbenchCheckNames(),
			run: func(t *testing.T, env compatEnv) []compatResult {
				return toolRun(t, env, "pgbench", pgbenchChecks)
			},
		},
		{
			driver: "pg_dump", tool: true,
			extra: []string{"createdb", "load", "dump_custom", "restore", "restored_objects",
				"dump_plain", "plain_objects", "dump_parallel", "parallel_objects", "dropdb"},
			run: func(t *testing.T, env compatEnv) []compatResult {
				return toolRun(t, env, "pg_dump", pgDumpChecks)
			},
		},
	}
}

// toolRun runs a tool cell's checks and reports the tool's version.
func toolRun(t *testing.T, env compatEnv, tool string, checks func(*testing.T, compatEnv) []goCheck) []compatResult {
	results := runGoChecks(env, checks(t, env))
	for _, r := range results {
		t.Logf("%s / %s / %s: ok %v, %.0f ms", tool, env.target, r.Check, r.OK, r.MS)
	}
	if out, err := exec.Command(toolBin(tool), "--version").Output(); err == nil {
		results = append(results, compatResult{Check: versionCheck, Detail: strings.TrimSpace(string(out))})
	}
	return results
}

// toolOut is what a tool run gave.
type toolOut struct {
	stdout, stderr string
	err            error
}

func (o toolOut) String() string {
	return fmt.Sprintf("exit %v\nstderr: %s\nstdout: %s", o.err, tail(o.stderr, 15), tail(o.stdout, 15))
}

// toolBin is a PostgreSQL client program from the cluster's binaries (the
// same major version as the servers).
func toolBin(name string) string { return filepath.Join(cluster.BinDir, name) }

// toolEnviron is the environment a tool runs with: the target through
// libpq's variables (none of the user's PG* variables), UTC, UTF-8 and
// English messages.
func toolEnviron(env compatEnv, db string) []string {
	return append(cleanEnv(),
		"PGHOST="+env.host,
		"PGPORT="+strconv.Itoa(env.port),
		"PGUSER="+env.user,
		"PGPASSWORD="+env.password,
		"PGDATABASE="+db,
		"PGCONNECT_TIMEOUT=10",
		"PGTZ=UTC",
		"PGCLIENTENCODING=UTF8",
		"PGAPPNAME=compat-"+env.prefix,
		"LC_ALL=C.UTF-8",
	)
}

// runTool runs a client program against env's target, database db, with
// stdin, until it exits or ctx ends.
func runTool(ctx context.Context, env compatEnv, db, stdin, name string, args ...string) toolOut {
	cmd := exec.CommandContext(ctx, toolBin(name), args...)
	cmd.Env = toolEnviron(env, db)
	cmd.Stdin = strings.NewReader(stdin)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.WaitDelay = 5 * time.Second
	err := cmd.Run()
	return toolOut{stdout: stdout.String(), stderr: stderr.String(), err: err}
}

// psqlArgs are the fixed options of every psql run: no psqlrc, stop on the
// first error, unaligned tuples only.
var psqlArgs = []string{"-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1"}

// psqlScript runs script through psql on env's target.
func psqlScript(ctx context.Context, env compatEnv, db, script string, args ...string) toolOut {
	return runTool(ctx, env, db, script, "psql", append(append([]string{}, psqlArgs...), args...)...)
}

// syncBuffer is a bytes.Buffer safe to read while a process writes to it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// startedTool is a client program running in the background.
type startedTool struct {
	cmd            *exec.Cmd
	stdout, stderr *syncBuffer
	done           chan error
}

func startTool(ctx context.Context, env compatEnv, db, stdin, name string, args ...string) (*startedTool, error) {
	cmd := exec.CommandContext(ctx, toolBin(name), args...)
	cmd.Env = toolEnviron(env, db)
	cmd.Stdin = strings.NewReader(stdin)
	st := &startedTool{cmd: cmd, stdout: &syncBuffer{}, stderr: &syncBuffer{}, done: make(chan error, 1)}
	cmd.Stdout, cmd.Stderr = st.stdout, st.stderr
	cmd.WaitDelay = 5 * time.Second
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	go func() { st.done <- cmd.Wait() }()
	return st, nil
}

// interrupt sends SIGINT (Ctrl-C) to the program, by its PID.
func (st *startedTool) interrupt() error { return st.cmd.Process.Signal(os.Interrupt) }

// wait waits up to d for the program to exit, and gives its exit error.
func (st *startedTool) wait(d time.Duration) (exited bool, err error) {
	select {
	case err := <-st.done:
		return true, err
	case <-time.After(d):
		return false, nil
	}
}

func (st *startedTool) String() string {
	return fmt.Sprintf("stderr: %s\nstdout: %s", tail(st.stderr.String(), 15), tail(st.stdout.String(), 15))
}

// toolWaitFor polls cond every 50 ms until it holds or d passes.
func toolWaitFor(ctx context.Context, d time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		if cond() {
			return true
		}
		time.Sleep(50 * time.Millisecond)
	}
	return cond()
}

// toolSuperConn connects as the superuser to db straight on the primary, for
// checks that look behind the tools' backs.
func toolSuperConn(ctx context.Context, db string) (*pgx.Conn, error) {
	return pgx.Connect(ctx, cluster.SuperuserDSN(cluster.Primary, db))
}

// activeQueryOnAnyNode reports whether a query containing marker is running
// on the primary or a replica (routed reads run on the replicas).
func activeQueryOnAnyNode(ctx context.Context, marker string) bool {
	nodes := append([]string{cluster.SuperuserDSN(cluster.Primary, "postgres")}, replicaDSNs()...)
	for _, dsn := range nodes {
		c, err := pgx.Connect(ctx, dsn)
		if err != nil {
			continue
		}
		var n int
		err = c.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity
			WHERE state = 'active' AND pid <> pg_backend_pid() AND strpos(query, $1) > 0`, marker).Scan(&n)
		c.Close(ctx)
		if err == nil && n > 0 {
			return true
		}
	}
	return false
}

// replicaDSNs are superuser DSNs of the replicas.
func replicaDSNs() []string {
	var out []string
	for _, r := range cluster.Replicas {
		out = append(out, cluster.SuperuserDSN(r, "postgres"))
	}
	return out
}

// --- psql ---------------------------------------------------------------

func psqlChecks(t *testing.T, env compatEnv) []goCheck {
	p := env.prefix
	db := env.database
	dir := t.TempDir()
	return []goCheck{
		{"copy", func(ctx context.Context) error {
			in := filepath.Join(dir, "copy_in.csv")
			out := filepath.Join(dir, "copy_out.csv")
			data, rows, idSum := copyFixture(5000)
			if err := os.WriteFile(in, data, 0o644); err != nil {
				return err
			}
			script := fmt.Sprintf(`DROP TABLE IF EXISTS %[1]scopy;
CREATE TABLE %[1]scopy (id int PRIMARY KEY, t text, b bytea, ts timestamptz, j jsonb, n numeric);
\copy %[1]scopy FROM '%[2]s' WITH (FORMAT csv)
\echo copied :ROW_COUNT
SELECT 'count', count(*), sum(id), count(t), count(b) FROM %[1]scopy;
\copy (SELECT * FROM %[1]scopy ORDER BY id) TO '%[3]s' WITH (FORMAT csv)
\echo exported :ROW_COUNT
`, p, in, out)
			o := psqlScript(ctx, env, db, script)
			if o.err != nil {
				return fmt.Errorf("psql: %s", o)
			}
			nulls := rows / 8
			want := fmt.Sprintf("copied %d\ncount|%d|%d|%d|%d\nexported %d\n", rows, rows, idSum, rows-nulls, rows-rows/10, rows)
			if o.stdout != want {
				return fmt.Errorf("psql output: expected %q, got %q (stderr %q)", want, o.stdout, o.stderr)
			}
			got, err := os.ReadFile(out)
			if err != nil {
				return err
			}
			if !bytes.Equal(got, data) {
				return fmt.Errorf("\\copy out differs from \\copy in: %d bytes in (md5 %s), %d out (md5 %s); first difference %s",
					len(data), md5hex(data), len(got), md5hex(got), firstDiff(data, got))
			}
			return nil
		}},
		{"gset", func(ctx context.Context) error {
			script := fmt.Sprintf(`DROP TABLE IF EXISTS %[1]sgset;
CREATE TABLE %[1]sgset (id serial PRIMARY KEY, v int, s text);
SELECT 42 AS answer, 'it''s "ok"' AS phrase \gset
INSERT INTO %[1]sgset (v, s) VALUES (:answer * 2, :'phrase') RETURNING id AS new_id \gset
SELECT v, s, id = :new_id AS same_id FROM %[1]sgset WHERE id = :new_id \gset row_
\echo got :answer :row_v [:row_s] :row_same_id
SELECT count(*) AS n FROM %[1]sgset WHERE s = :'row_s' AND v = :row_v \gset
\if :n
\echo found :n
\else
\echo missing
\endif
`, p)
			o := psqlScript(ctx, env, db, script)
			if o.err != nil {
				return fmt.Errorf("psql: %s", o)
			}
			want := "got 42 84 [it's \"ok\"] t\nfound 1\n"
			if o.stdout != want {
				return fmt.Errorf("expected %q, got %q (stderr %q)", want, o.stdout, o.stderr)
			}
			return nil
		}},
		{"watch", func(ctx context.Context) error {
			// psql 15's \watch has no count: it runs until SIGINT, then
			// psql carries on with the next command of its input.
			script := fmt.Sprintf(`DROP TABLE IF EXISTS %[1]swatch;
CREATE TABLE %[1]swatch (id int);
INSERT INTO %[1]swatch VALUES (1), (2), (3);
SELECT 'tick', count(*), clock_timestamp() FROM %[1]swatch \watch 0.2
SELECT 'after-watch', sum(id) FROM %[1]swatch;
`, p)
			st, err := startTool(ctx, env, db, script, "psql", "-X", "-q", "-A", "-t")
			if err != nil {
				return err
			}
			tickRe := regexp.MustCompile(`(?m)^tick\|(\d+)\|(.+)$`)
			if !toolWaitFor(ctx, 10*time.Second, func() bool { return len(tickRe.FindAllString(st.stdout.String(), -1)) >= 3 }) {
				_ = st.interrupt()
				st.wait(5 * time.Second)
				return fmt.Errorf("expected 3 \\watch outputs within 10 s, got %s", st)
			}
			interrupted := time.Now()
			if err := st.interrupt(); err != nil {
				return err
			}
			exited, werr := st.wait(10 * time.Second)
			if !exited {
				_ = st.cmd.Process.Kill()
				return fmt.Errorf("psql still running 10 s after SIGINT: %s", st)
			}
			if werr != nil {
				return fmt.Errorf("psql after SIGINT: expected exit 0, got %v: %s", werr, st)
			}
			out := st.stdout.String()
			ticks := tickRe.FindAllStringSubmatch(out, -1)
			stamps := map[string]bool{}
			for _, m := range ticks {
				if m[1] != "3" {
					return fmt.Errorf("a \\watch output counted %s rows, expected 3: %s", m[1], st)
				}
				stamps[m[2]] = true
			}
			if len(stamps) != len(ticks) {
				return fmt.Errorf("\\watch outputs repeat a clock_timestamp (%d outputs, %d distinct): %s", len(ticks), len(stamps), st)
			}
			if !strings.Contains(out, "\nafter-watch|6\n") {
				return fmt.Errorf("expected the statement after \\watch to print after-watch|6: %s", st)
			}
			if s := st.stderr.String(); strings.Contains(s, "ERROR") || strings.Contains(s, "FATAL") {
				return fmt.Errorf("psql reported an error: %s", st)
			}
			if d := time.Since(interrupted); d > 5*time.Second {
				return fmt.Errorf("psql took %v to stop \\watch", d)
			}
			return nil
		}},
		{"cancel", func(ctx context.Context) error {
			// Non-interactive psql stops reading a script after Ctrl-C, but
			// runs the rest of its -c commands on the same connection (with
			// query results muted once Ctrl-C was pressed: the next
			// statement is an INSERT, its row checked afterwards).
			marker := p + "cancel_marker"
			if o := psqlScript(ctx, env, db, fmt.Sprintf("DROP TABLE IF EXISTS %[1]scancel; CREATE TABLE %[1]scancel (v int, u text);", p)); o.err != nil {
				return fmt.Errorf("psql: %s", o)
			}
			st, err := startTool(ctx, env, db, "", "psql", "-X", "-q", "-A", "-t",
				"-c", fmt.Sprintf("SELECT pg_sleep(30), '%s'", marker),
				"-c", `\echo sqlstate :LAST_ERROR_SQLSTATE`,
				"-c", fmt.Sprintf("INSERT INTO %scancel SELECT 6 * 7, current_user", p),
				"-c", `\echo next :ROW_COUNT :ERROR`)
			if err != nil {
				return err
			}
			if !toolWaitFor(ctx, 10*time.Second, func() bool { return activeQueryOnAnyNode(ctx, marker) }) {
				_ = st.interrupt()
				st.wait(5 * time.Second)
				return fmt.Errorf("pg_sleep(30) never showed up as active on any server: %s", st)
			}
			time.Sleep(300 * time.Millisecond)
			interrupted := time.Now()
			if err := st.interrupt(); err != nil {
				return err
			}
			exited, werr := st.wait(10 * time.Second)
			took := time.Since(interrupted)
			if !exited {
				_ = st.cmd.Process.Kill()
				return fmt.Errorf("psql still running 10 s after SIGINT: %s", st)
			}
			if !strings.Contains(st.stderr.String(), "canceling statement due to user request") {
				return fmt.Errorf("expected \"canceling statement due to user request\" on stderr: %s", st)
			}
			want := "sqlstate 57014\nnext 1 false\n"
			if got := st.stdout.String(); got != want {
				return fmt.Errorf("expected %q, got %q (exit %v, stderr %q)", want, got, werr, st.stderr.String())
			}
			if werr != nil {
				return fmt.Errorf("psql: expected exit 0 (the last command worked), got %v: %s", werr, st)
			}
			if took > 5*time.Second {
				return fmt.Errorf("the cancel took %v", took)
			}
			if activeQueryOnAnyNode(ctx, marker) {
				return fmt.Errorf("pg_sleep(30) still running on a server after psql exited")
			}
			c, err := toolSuperConn(ctx, db)
			if err != nil {
				return err
			}
			defer c.Close(ctx)
			var rows []string
			r, err := c.Query(ctx, fmt.Sprintf("SELECT v || ' ' || u FROM %scancel", p))
			if err != nil {
				return err
			}
			rows, err = pgx.CollectRows(r, pgx.RowTo[string])
			if err != nil {
				return err
			}
			if len(rows) != 1 || rows[0] != "42 "+env.user {
				return fmt.Errorf("the INSERT after the cancelled statement: expected one row %q, got %q", "42 "+env.user, rows)
			}
			return nil
		}},
		{"types", func(ctx context.Context) error { return psqlTypes(ctx, env) }},
		{"error_rollback", func(ctx context.Context) error {
			script := fmt.Sprintf(`DROP TABLE IF EXISTS %[1]serr;
CREATE TABLE %[1]serr (id int PRIMARY KEY);
\set ON_ERROR_ROLLBACK on
BEGIN;
INSERT INTO %[1]serr VALUES (1);
INSERT INTO %[1]serr VALUES (1);
\echo a :LAST_ERROR_SQLSTATE
INSERT INTO %[1]serr VALUES (2);
COMMIT;
SELECT 'b', count(*), sum(id) FROM %[1]serr;
\set ON_ERROR_ROLLBACK off
BEGIN;
INSERT INTO %[1]serr VALUES (3);
INSERT INTO %[1]serr VALUES (2);
\echo c :LAST_ERROR_SQLSTATE
INSERT INTO %[1]serr VALUES (4);
\echo d :LAST_ERROR_SQLSTATE
ROLLBACK;
SELECT 'e', count(*), sum(id) FROM %[1]serr;
INSERT INTO %[1]serr VALUES (5);
SELECT 'f', count(*), sum(id) FROM %[1]serr;
`, p)
			// No ON_ERROR_STOP here: the errors are the point.
			o := runTool(ctx, env, db, script, "psql", "-X", "-q", "-A", "-t")
			if o.err != nil {
				return fmt.Errorf("psql: %s", o)
			}
			want := "a 23505\nb|2|3\nc 23505\nd 25P02\ne|2|3\nf|3|8\n"
			if o.stdout != want {
				return fmt.Errorf("expected %q, got %q (stderr %q)", want, o.stdout, o.stderr)
			}
			if n := strings.Count(o.stderr, "duplicate key value violates unique constraint"); n != 2 {
				return fmt.Errorf("expected 2 unique violations on stderr, got %d: %q", n, o.stderr)
			}
			if !strings.Contains(o.stderr, "current transaction is aborted") {
				return fmt.Errorf("expected \"current transaction is aborted\" on stderr: %q", o.stderr)
			}
			return nil
		}},
	}
}

// copyFixture is a CSV file for \copy in PostgreSQL's own CSV output form
// (so that \copy out gives it back byte for byte): awkward text (quotes,
// commas, newlines, an empty string against NULL, a "\." line, non-ASCII),
// bytea, timestamptz in UTC, jsonb, numeric. It returns the rows and the
// sum of their ids; every 8th t and every 10th b is NULL.
func copyFixture(rows int) ([]byte, int, int) {
	texts := []string{
		"plain", `comma, "quote" and` + "\nnewline", "", `\.`, "tab\there", "unicode é✓ 日本",
		`back\slash`, "carriage\rreturn", " leading and trailing ",
	}
	field := func(s string) string {
		if s == "" || s == `\.` || strings.ContainsAny(s, ",\"\n\r") {
			return `"` + strings.ReplaceAll(s, `"`, `""`) + `"`
		}
		return s
	}
	base := time.Date(2024, 2, 29, 23, 59, 59, 0, time.UTC)
	var b bytes.Buffer
	sum := 0
	for i := 1; i <= rows; i++ {
		sum += i
		t := ""
		if i%8 != 0 {
			t = field(fmt.Sprintf("%s %d", texts[i%len(texts)], i))
			if i%len(texts) == 2 {
				t = `""` // the empty string, not NULL
			}
		}
		by := ""
		if i%10 != 0 {
			by = `\x` + hex.EncodeToString([]byte{byte(i), byte(i >> 8), 0, 0xff})
		}
		ts := base.Add(time.Duration(i)*1234567*time.Microsecond).Format("2006-01-02 15:04:05.999999") + "+00"
		j := field(fmt.Sprintf(`{"i": %d, "s": "v%d"}`, i, i%7))
		n := fmt.Sprintf("%d.%02d", i*37, i%100)
		fmt.Fprintf(&b, "%d,%s,%s,%s,%s,%s\n", i, t, by, ts, j, n)
	}
	return b.Bytes(), rows, sum
}

func md5hex(b []byte) string {
	s := md5.Sum(b)
	return hex.EncodeToString(s[:])
}

// firstDiff describes where a and b first differ.
func firstDiff(a, b []byte) string {
	i := 0
	for i < len(a) && i < len(b) && a[i] == b[i] {
		i++
	}
	clip := func(x []byte) string {
		end := i + 60
		if end > len(x) {
			end = len(x)
		}
		if i > len(x) {
			return ""
		}
		return string(x[i:end])
	}
	return fmt.Sprintf("at byte %d: expected %q, got %q", i, clip(a), clip(b))
}

// psqlTypes round-trips literals of the common types through psql's text
// output, as SELECTed literals and as a row written and read back.
func psqlTypes(ctx context.Context, env compatEnv) error {
	type lit struct{ typ, in, out string }
	lits := []lit{
		{"int", "'-2147483648'", "-2147483648"},
		{"int", "42", "42"},
		{"bigint", "9223372036854775807", "9223372036854775807"},
		{"numeric", "-12345678901234567890.000000012345", "-12345678901234567890.000000012345"},
		{"double precision", "0.1", "0.1"},
		{"double precision", "-1.5e300", "-1.5e+300"},
		{"boolean", "'yes'", "t"},
		{"text", "'it''s ✓ é 日本'", "it's ✓ é 日本"},
		{"text", "''", ""},
		{"bytea", `'\xDEADbeef00'`, `\xdeadbeef00`},
		{"date", "'2024-02-29'", "2024-02-29"},
		{"timestamptz", "'2024-02-29 23:59:59.123456+05:30'", "2024-02-29 18:29:59.123456+00"},
		{"timestamp", "'1999-12-31 23:59:59'", "1999-12-31 23:59:59"},
		{"interval", "'1 day 2 hours 3 minutes 4.5 seconds'", "1 day 02:03:04.5"},
		{"json", `'{"b": [1, 2.50, "x"], "a": null}'`, `{"b": [1, 2.50, "x"], "a": null}`},
		{"jsonb", `'{"b": [1, 2.50, "x"], "a": null}'`, `{"a": null, "b": [1, 2.50, "x"]}`},
		{"uuid", "'A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11'", "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"},
		{"int[]", "'{1,2,NULL,-3}'", "{1,2,NULL,-3}"},
		{"text[]", `ARRAY['a b', 'c', 'd"e', NULL]`, `{"a b",c,"d\"e",NULL}`},
		{"inet", "'192.168.0.1/24'", "192.168.0.1/24"},
		{"int", "NULL", "<null>"},
	}
	var cols, sel, vals []string
	var want []string
	for i, l := range lits {
		cols = append(cols, fmt.Sprintf("c%d %s", i, l.typ))
		sel = append(sel, fmt.Sprintf("%s::%s", l.in, l.typ))
		vals = append(vals, fmt.Sprintf("c%d", i))
		want = append(want, l.out)
	}
	p := env.prefix
	script := fmt.Sprintf(`\pset null '<null>'
DROP TABLE IF EXISTS %[1]stypes;
CREATE TABLE %[1]stypes (id int PRIMARY KEY, %[2]s);
SELECT %[3]s;
INSERT INTO %[1]stypes VALUES (1, %[3]s);
SELECT %[4]s FROM %[1]stypes WHERE id = 1;
`, p, strings.Join(cols, ", "), strings.Join(sel, ", "), strings.Join(vals, ", "))
	// Fields apart by a control character, so that no value needs quoting
	// (and none holds a newline).
	o := psqlScript(ctx, env, env.database, script, "-F", "\x1f")
	if o.err != nil {
		return fmt.Errorf("psql: %s", o)
	}
	recs := strings.Split(strings.TrimSuffix(o.stdout, "\n"), "\n")
	if len(recs) != 2 {
		return fmt.Errorf("expected 2 records (literals, row read back), got %d: %q", len(recs), o.stdout)
	}
	for r, rec := range recs {
		what := [...]string{"literal", "row read back"}[r]
		got := strings.Split(rec, "\x1f")
		if len(got) != len(want) {
			return fmt.Errorf("%s: expected %d fields, got %d: %q", what, len(want), len(got), rec)
		}
		for i := range want {
			if got[i] != want[i] {
				return fmt.Errorf("%s %s %s: expected %q, got %q", what, lits[i].typ, lits[i].in, want[i], got[i])
			}
		}
	}
	return nil
}

// --- pgbench ------------------------------------------------------------

var pgbenchModes = []string{"simple", "extended", "prepared"}

// pgbench's runs: each script in each query mode.
var pgbenchScripts = []struct{ name, arg string }{
	{"select_only", "-b select-only"},
	{"tpcb", "-b tpcb-like"},
	{"custom", "-f"},
}

const (
	pgbenchClients = 8
	pgbenchTxPerC  = 25
)

func pgbenchCheckNames() []string {
	names := []string{"createdb", "init"}
	for _, s := range pgbenchScripts {
		for _, m := range pgbenchModes {
			names = append(names, s.name+"_"+m)
		}
	}
	return append(names, "balances", "dropdb")
}

func pgbenchChecks(t *testing.T, env compatEnv) []goCheck {
	bench := env.prefix + "bench"
	script, err := filepath.Abs("compat/tools/bench_write.sql")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	historyWant := 0 // rows in pgbench_history the runs that passed should have left
	checks := []goCheck{
		{"createdb", func(ctx context.Context) error { return recreateDB(ctx, env, bench) }},
		{"init", func(ctx context.Context) error {
			o := runTool(ctx, env, bench, "", "pgbench", "-i", "-q", "-s", "1")
			if o.err != nil {
				return fmt.Errorf("pgbench -i: %s", o)
			}
			c, err := toolSuperConn(ctx, bench)
			if err != nil {
				return err
			}
			defer c.Close(ctx)
			var acc, br, tel, hist int
			if err := c.QueryRow(ctx, `SELECT (SELECT count(*) FROM pgbench_accounts), (SELECT count(*) FROM pgbench_branches),
				(SELECT count(*) FROM pgbench_tellers), (SELECT count(*) FROM pgbench_history)`).Scan(&acc, &br, &tel, &hist); err != nil {
				return err
			}
			if acc != 100000 || br != 1 || tel != 10 || hist != 0 {
				return fmt.Errorf("after pgbench -i -s 1: expected 100000 accounts, 1 branch, 10 tellers, 0 history; got %d, %d, %d, %d", acc, br, tel, hist)
			}
			return nil
		}},
	}
	for _, s := range pgbenchScripts {
		for _, m := range pgbenchModes {
			checks = append(checks, goCheck{s.name + "_" + m, func(ctx context.Context) error {
				args := []string{"-n", "-c", strconv.Itoa(pgbenchClients), "-j", "2", "-t", strconv.Itoa(pgbenchTxPerC), "-M", m}
				if s.arg == "-f" {
					args = append(args, "-f", script)
				} else {
					args = append(args, strings.Fields(s.arg)...)
				}
				o := runTool(ctx, env, bench, "", "pgbench", args...)
				total := pgbenchClients * pgbenchTxPerC
				if s.name != "select_only" {
					// Each transaction of these adds a history row, also a
					// failed run's completed ones: count what pgbench says.
					if n, ok := pgbenchProcessed(o.stdout); ok {
						mu.Lock()
						historyWant += n
						mu.Unlock()
					}
				}
				if o.err != nil {
					return fmt.Errorf("pgbench %s: %s", strings.Join(args, " "), o)
				}
				want := fmt.Sprintf("number of transactions actually processed: %d/%d\n", total, total)
				if !strings.Contains(o.stdout, want) {
					return fmt.Errorf("expected %q in pgbench's report: %s", strings.TrimSpace(want), o)
				}
				if !strings.Contains(o.stdout, "number of failed transactions: 0 (0.000%)\n") {
					return fmt.Errorf("expected 0 failed transactions: %s", o)
				}
				if !strings.Contains(o.stdout, "query mode: "+m+"\n") {
					return fmt.Errorf("expected query mode %s: %s", m, o)
				}
				return nil
			}})
		}
	}
	checks = append(checks,
		goCheck{"balances", func(ctx context.Context) error {
			c, err := toolSuperConn(ctx, bench)
			if err != nil {
				return err
			}
			defer c.Close(ctx)
			// Every delta, tpcb-like's and the custom script's, went to
			// pgbench_accounts; tpcb-like's also to a teller and a branch.
			var acc, tel, br, delta, hist int64
			if err := c.QueryRow(ctx, `SELECT (SELECT sum(abalance) FROM pgbench_accounts),
				(SELECT sum(tbalance) FROM pgbench_tellers), (SELECT sum(bbalance) FROM pgbench_branches),
				(SELECT coalesce(sum(delta), 0) FROM pgbench_history),
				(SELECT count(*) FROM pgbench_history)`).Scan(&acc, &tel, &br, &delta, &hist); err != nil {
				return err
			}
			mu.Lock()
			wantHist := historyWant
			mu.Unlock()
			if acc != delta {
				return fmt.Errorf("sum(abalance) = %d, expected sum(pgbench_history.delta) = %d", acc, delta)
			}
			if tel != br {
				return fmt.Errorf("sum(tbalance) = %d, expected sum(bbalance) = %d", tel, br)
			}
			if hist != int64(wantHist) {
				return fmt.Errorf("pgbench_history has %d rows, expected %d (the tpcb-like and custom transactions processed)", hist, wantHist)
			}
			want := int64(2 * len(pgbenchModes) * pgbenchClients * pgbenchTxPerC)
			if hist != want {
				return fmt.Errorf("pgbench_history has %d rows, expected %d", hist, want)
			}
			return nil
		}},
		goCheck{"dropdb", func(ctx context.Context) error { return dropDBChecked(ctx, env, bench) }},
	)
	return checks
}

var processedRe = regexp.MustCompile(`number of transactions actually processed: (\d+)`)

// pgbenchProcessed is the transaction count pgbench reports.
func pgbenchProcessed(out string) (int, bool) {
	m := processedRe.FindStringSubmatch(out)
	if m == nil {
		return 0, false
	}
	n, err := strconv.Atoi(m[1])
	return n, err == nil
}

// recreateDB drops db if it exists and creates it, through the target with
// dropdb and createdb, and checks on the primary that it is there.
func recreateDB(ctx context.Context, env compatEnv, db string) error {
	if o := runTool(ctx, env, env.database, "", "dropdb", "--if-exists", db); o.err != nil {
		return fmt.Errorf("dropdb --if-exists %s: %s", db, o)
	}
	if o := runTool(ctx, env, env.database, "", "createdb", db); o.err != nil {
		return fmt.Errorf("createdb %s: %s", db, o)
	}
	owner, err := dbOwner(ctx, db)
	if err != nil {
		return err
	}
	if owner != env.user {
		return fmt.Errorf("database %s: expected owner %q, got %q", db, env.user, owner)
	}
	return nil
}

// dbOwner is the owner of db on the primary ("" if there is no such
// database).
func dbOwner(ctx context.Context, db string) (string, error) {
	c, err := toolSuperConn(ctx, "postgres")
	if err != nil {
		return "", err
	}
	defer c.Close(ctx)
	var owner string
	err = c.QueryRow(ctx, "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = $1", db).Scan(&owner)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", nil
	}
	return owner, err
}

// dropDBChecked drops the databases through the target with dropdb (all
// at once: a DROP DATABASE that others use waits 5 s before it fails) and
// checks on the primary and the replicas that they are gone. A database
// dropdb could not drop is still dropped with dropdb --force (so that the
// run leaves nothing behind), and the check fails.
func dropDBChecked(ctx context.Context, env compatEnv, dbs ...string) error {
	failures := make([]string, len(dbs))
	var wg sync.WaitGroup
	for i, db := range dbs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			o := runTool(ctx, env, env.database, "", "dropdb", db)
			if o.err == nil {
				return
			}
			msg := fmt.Sprintf("dropdb %s: %s", db, o)
			if f := runTool(ctx, env, env.database, "", "dropdb", "--force", db); f.err != nil {
				msg += fmt.Sprintf("\n(then dropdb --force %s: %s)", db, f)
			} else {
				msg += fmt.Sprintf("\n(then dropdb --force %s worked)", db)
			}
			failures[i] = msg
		}()
	}
	wg.Wait()
	var failed []string
	for _, f := range failures {
		if f != "" {
			failed = append(failed, f)
		}
	}
	for _, dsn := range append([]string{cluster.SuperuserDSN(cluster.Primary, "postgres")}, replicaDSNs()...) {
		ok := toolWaitFor(ctx, 10*time.Second, func() bool {
			c, err := pgx.Connect(ctx, dsn)
			if err != nil {
				return false
			}
			defer c.Close(ctx)
			var n int
			return c.QueryRow(ctx, "SELECT count(*) FROM pg_database WHERE datname = ANY($1)", dbs).Scan(&n) == nil && n == 0
		})
		if !ok {
			failed = append(failed, fmt.Sprintf("after dropdb, %v still in pg_database (%s)", dbs, dsn))
		}
	}
	if len(failed) > 0 {
		return errors.New(strings.Join(failed, "\n"))
	}
	return nil
}

// --- pg_dump ------------------------------------------------------------

func pgDumpChecks(t *testing.T, env compatEnv) []goCheck {
	src, dst, txt, par := env.prefix+"src", env.prefix+"dst", env.prefix+"txt", env.prefix+"par"
	dir := t.TempDir()
	fixture, err := filepath.Abs("compat/tools/dump_source.sql")
	if err != nil {
		t.Fatal(err)
	}
	dumpFile := filepath.Join(dir, "src.dump")
	var srcPrint map[string]string
	return []goCheck{
		{"createdb", func(ctx context.Context) error {
			for _, db := range []string{src, dst, txt, par} {
				if err := recreateDB(ctx, env, db); err != nil {
					return err
				}
			}
			return nil
		}},
		{"load", func(ctx context.Context) error {
			o := runTool(ctx, env, src, "", "psql", append(append([]string{}, psqlArgs...), "-f", fixture)...)
			if o.err != nil {
				return fmt.Errorf("psql -f dump_source.sql: %s", o)
			}
			fp, err := dbFingerprint(ctx, src)
			if err != nil {
				return err
			}
			if err := checkDumpSource(fp); err != nil {
				return fmt.Errorf("source database: %w", err)
			}
			srcPrint = fp
			return nil
		}},
		{"dump_custom", func(ctx context.Context) error {
			o := runTool(ctx, env, src, "", "pg_dump", "-Fc", "-f", dumpFile)
			if o.err != nil {
				return fmt.Errorf("pg_dump -Fc: %s", o)
			}
			if o.stderr != "" {
				return fmt.Errorf("pg_dump -Fc said: %s", o.stderr)
			}
			// The archive's table of contents, read offline.
			l := runTool(ctx, env, src, "", "pg_restore", "-l", dumpFile)
			if l.err != nil {
				return fmt.Errorf("pg_restore -l: %s", l)
			}
			for _, want := range []string{"TABLE public customers", "TABLE public orders", "VIEW public customer_totals",
				"SEQUENCE public invoice_no", "SEQUENCE SET public invoice_no", "INDEX public orders_customer_placed_idx",
				"FK CONSTRAINT public orders orders_customer_id_fkey", "TABLE DATA public orders"} {
				if !strings.Contains(l.stdout, want) {
					return fmt.Errorf("the archive's table of contents lacks %q:\n%s", want, l.stdout)
				}
			}
			return nil
		}},
		{"restore", func(ctx context.Context) error {
			o := runTool(ctx, env, dst, "", "pg_restore", "--exit-on-error", "--no-owner", "-d", dst, dumpFile)
			if o.err != nil {
				return fmt.Errorf("pg_restore: %s", o)
			}
			if o.stderr != "" {
				return fmt.Errorf("pg_restore said: %s", o.stderr)
			}
			return nil
		}},
		{"restored_objects", func(ctx context.Context) error { return compareDB(ctx, srcPrint, dst) }},
		{"dump_plain", func(ctx context.Context) error {
			d := runTool(ctx, env, src, "", "pg_dump", "--no-owner")
			if d.err != nil {
				return fmt.Errorf("pg_dump: %s", d)
			}
			if !strings.Contains(d.stdout, "COPY public.orders (") {
				return fmt.Errorf("the plain dump has no COPY of public.orders: %s", d)
			}
			o := psqlScript(ctx, env, txt, d.stdout)
			if o.err != nil {
				return fmt.Errorf("psql < plain dump: %s", o)
			}
			return nil
		}},
		{"plain_objects", func(ctx context.Context) error { return compareDB(ctx, srcPrint, txt) }},
		{"dump_parallel", func(ctx context.Context) error {
			// A directory dump by 3 jobs: the leader exports its snapshot
			// (pg_export_snapshot) and each worker connection imports it
			// with SET TRANSACTION SNAPSHOT, which works only on the
			// server that exported it; pg_restore by 3 jobs too.
			out := filepath.Join(dir, "src.dir")
			d := runTool(ctx, env, src, "", "pg_dump", "-Fd", "-j", "3", "-f", out)
			if d.err != nil {
				return fmt.Errorf("pg_dump -Fd -j 3: %s", d)
			}
			if d.stderr != "" {
				return fmt.Errorf("pg_dump -Fd -j 3 said: %s", d.stderr)
			}
			r := runTool(ctx, env, par, "", "pg_restore", "--exit-on-error", "--no-owner", "-j", "3", "-d", par, out)
			if r.err != nil {
				return fmt.Errorf("pg_restore -j 3: %s", r)
			}
			if r.stderr != "" {
				return fmt.Errorf("pg_restore -j 3 said: %s", r.stderr)
			}
			return nil
		}},
		{"parallel_objects", func(ctx context.Context) error { return compareDB(ctx, srcPrint, par) }},
		{"dropdb", func(ctx context.Context) error { return dropDBChecked(ctx, env, src, dst, txt, par) }},
	}
}

// dumpFingerprintQueries describe a database of dump_source.sql: each
// query's one text value, compared between the source and its copies.
var dumpFingerprintQueries = map[string]string{
	"tables": `SELECT string_agg(c.relname || ':' || c.relkind::text, ',' ORDER BY c.relname) FROM pg_class c
		WHERE c.relnamespace = 'public'::regnamespace`,
	"columns": `SELECT string_agg(format('%s.%s %s %s %s %s', c.relname, a.attname, format_type(a.atttypid, a.atttypmod),
			a.attnotnull, a.attidentity, coalesce(pg_get_expr(d.adbin, d.adrelid), '')), ',' ORDER BY c.relname, a.attnum)
		FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
		LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
		WHERE c.relnamespace = 'public'::regnamespace AND c.relkind IN ('r', 'v') AND a.attnum > 0 AND NOT a.attisdropped`,
	"views":       `SELECT string_agg(viewname || ':' || definition, E'\n' ORDER BY viewname) FROM pg_views WHERE schemaname = 'public'`,
	"sequences":   `SELECT string_agg(format('%s start %s inc %s last %s', sequencename, start_value, increment_by, last_value), ',' ORDER BY sequencename) FROM pg_sequences WHERE schemaname = 'public'`,
	"owned":       `SELECT pg_get_serial_sequence('public.customers', 'id') || ',' || pg_get_serial_sequence('public.orders', 'id')`,
	"indexes":     `SELECT string_agg(indexdef, E'\n' ORDER BY indexname) FROM pg_indexes WHERE schemaname = 'public'`,
	"constraints": `SELECT string_agg(conrelid::regclass || ' ' || conname || ': ' || pg_get_constraintdef(oid), E'\n' ORDER BY conname) FROM pg_constraint WHERE connamespace = 'public'::regnamespace`,
	"comment":     `SELECT obj_description('public.orders'::regclass, 'pg_class')`,
	"customers":   `SELECT count(*) || ' ' || md5(string_agg(c::text, E'\n' ORDER BY id)) FROM public.customers c`,
	"orders":      `SELECT count(*) || ' ' || md5(string_agg(o::text, E'\n' ORDER BY id)) FROM public.orders o`,
	"bytea":       `SELECT count(payload) || ' ' || sum(length(payload)) || ' ' || md5(string_agg(payload, '' ORDER BY id)) FROM public.orders`,
	"view_rows":   `SELECT count(*) || ' ' || sum(orders) || ' ' || sum(total) FROM public.customer_totals`,
}

// dbFingerprint runs dumpFingerprintQueries on db, straight on the primary
// as the superuser, in UTC.
func dbFingerprint(ctx context.Context, db string) (map[string]string, error) {
	c, err := toolSuperConn(ctx, db)
	if err != nil {
		return nil, err
	}
	defer c.Close(ctx)
	if _, err := c.Exec(ctx, "SET TimeZone = 'UTC'"); err != nil {
		return nil, err
	}
	fp := map[string]string{}
	for k, q := range dumpFingerprintQueries {
		var v *string
		if err := c.QueryRow(ctx, q).Scan(&v); err != nil {
			return nil, fmt.Errorf("%s: %w", k, err)
		}
		if v == nil {
			fp[k] = "<null>"
		} else {
			fp[k] = *v
		}
	}
	return fp, nil
}

// checkDumpSource checks that the source database is what dump_source.sql
// makes, so that a copy equal to it has every object.
func checkDumpSource(fp map[string]string) error {
	wants := map[string][]string{
		"tables": {"customer_totals:v", "customers:r", "customers_id_seq:S", "customers_pkey:i", "customers_email_key:i",
			"invoice_no:S", "orders:r", "orders_customer_placed_idx:i", "orders_id_seq:S", "orders_pkey:i"},
		"sequences":   {"customers_id_seq start 1 inc 1 last 201", "invoice_no start 100 inc 7 last 1234", "orders_id_seq start 1 inc 1 last 3000"},
		"owned":       {"public.customers_id_seq,public.orders_id_seq"},
		"indexes":     {"CREATE INDEX orders_customer_placed_idx ON public.orders USING btree (customer_id, placed_at DESC)"},
		"constraints": {"orders orders_customer_id_fkey: FOREIGN KEY (customer_id) REFERENCES customers(id) ON DELETE CASCADE"},
		"comment":     {"compat: orders, 'quoted' comment"},
		"customers":   {"200 "},
		"orders":      {"3000 "},
		"bytea":       {"2700 48600 "},
		"view_rows":   {"200 3000 "},
	}
	for k, subs := range wants {
		for _, s := range subs {
			if !strings.Contains(fp[k], s) {
				return fmt.Errorf("%s: expected %q in %q", k, s, fp[k])
			}
		}
	}
	return nil
}

// compareDB checks that db, a copy of the source, has the source's
// fingerprint.
func compareDB(ctx context.Context, src map[string]string, db string) error {
	if src == nil {
		return errors.New("no fingerprint of the source database (its load failed)")
	}
	fp, err := dbFingerprint(ctx, db)
	if err != nil {
		return err
	}
	var diffs []string
	for k, want := range src {
		if fp[k] != want {
			diffs = append(diffs, fmt.Sprintf("%s: expected %q, got %q", k, want, fp[k]))
		}
	}
	if len(diffs) > 0 {
		return fmt.Errorf("%s differs from the source: %s", db, strings.Join(diffs, "; "))
	}
	return nil
}
