package test

import (
	"bytes"
	"context"
	"crypto/rand"
	"database/sql"
	"database/sql/driver"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgtype"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/lib/pq"
)

// compatGoCells are the matrix's Go cells: pgx in each QueryExecMode,
// pgxpool, and database/sql with pgx/stdlib and with lib/pq.
func compatGoCells() []compatCell {
	pgxV, pqV := moduleVersion("github.com/jackc/pgx/v5"), moduleVersion("github.com/lib/pq")
	pgxExtra := []string{"batch", "copy", "prepare_name_reuse", "pg_temp", "backend_signal"}
	var cells []compatCell
	for _, m := range []struct {
		name string
		mode pgx.QueryExecMode
	}{
		{"cache_statement", pgx.QueryExecModeCacheStatement},
		{"cache_describe", pgx.QueryExecModeCacheDescribe},
		{"describe_exec", pgx.QueryExecModeDescribeExec},
		{"exec", pgx.QueryExecModeExec},
		{"simple_protocol", pgx.QueryExecModeSimpleProtocol},
	} {
		mode := m.mode
		cells = append(cells, compatCell{driver: "pgx/" + m.name, version: "pgx " + pgxV, extra: pgxExtra, run: func(t *testing.T, env compatEnv) []compatResult {
			c := pgxCompat{env: env, tweak: func(cfg *pgx.ConnConfig) { cfg.DefaultQueryExecMode = mode }}
			return runGoChecks(env, c.checks())
		}})
	}
	cells = append(cells,
		compatCell{driver: "pgxpool", version: "pgx " + pgxV, extra: []string{"pool_reuse"}, run: func(t *testing.T, env compatEnv) []compatResult {
			return runGoChecks(env, pgxpoolChecks(env))
		}},
		compatCell{driver: "database/sql+pgx/stdlib", version: "pgx " + pgxV, run: func(t *testing.T, env compatEnv) []compatResult {
			return runGoChecks(env, sqlCompat{env: env, driver: "pgx"}.checks())
		}},
		compatCell{driver: "database/sql+lib/pq", version: "lib/pq " + pqV, run: func(t *testing.T, env compatEnv) []compatResult {
			return runGoChecks(env, sqlCompat{env: env, driver: "postgres"}.checks())
		}},
	)
	return cells
}

// moduleVersion is the version go.mod requires of module path.
func moduleVersion(path string) string {
	mod, err := os.ReadFile(filepath.Join("..", "go.mod"))
	if err != nil {
		return "?"
	}
	for _, line := range strings.Split(string(mod), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == path {
			return f[1]
		}
	}
	return "?"
}

// compatTypes is the row the types checks write and read back: one value
// of each common type, and a NULL.
type compatTypes struct {
	I   int32
	B   int64
	N   string // numeric, exchanged as text
	T   string
	By  []byte
	TS  time.Time
	J   map[string]any
	JB  map[string]any
	U   string
	IA  []int32
	TA  []string
	Nul *string
}

func newCompatTypes() compatTypes {
	by := make([]byte, 512)
	for i := range by {
		by[i] = byte(i)
	}
	return compatTypes{
		I: -2147483648, B: 9007199254740993, N: "12345678901234567890.000000000123",
		T: "héllo, 'quoted' \"text\" \\ ; -- not a comment", By: by,
		TS: time.Date(2026, 12, 2, 19, 20, 7, 123456000, time.UTC),
		J:  map[string]any{"a": 1.5, "b": []any{"x", nil}}, JB: map[string]any{"k": "v", "n": 2.0},
		U: "4f1b9c3e-6b1d-4b8e-9c61-0a4e8f2d7c55", IA: []int32{1, -2, 3}, TA: []string{"a,b", `c"d`, "", "{}"},
	}
}

// equal compares two rows, the timestamp by instant.
func (a compatTypes) equal(b compatTypes) error {
	if !a.TS.Equal(b.TS) {
		return fmt.Errorf("timestamptz: sent %v, got %v", a.TS, b.TS)
	}
	a.TS, b.TS = time.Time{}, time.Time{}
	if !reflect.DeepEqual(a, b) {
		return fmt.Errorf("round trip differs:\n sent %+v\n got  %+v", a, b)
	}
	return nil
}

const compatTypesCols = "i int, b bigint, n numeric, t text, by bytea, ts timestamptz, j json, jb jsonb, u uuid, ia int[], ta text[], nul text"

// compatTypesEcho selects its parameters back, each cast to its type.
const compatTypesEcho = `SELECT $1::int, $2::bigint, $3::numeric::text, $4::text, $5::bytea, $6::timestamptz,
	$7::json, $8::jsonb, $9::uuid::text, $10::int[], $11::text[], $12::text`

// pgxCompat runs the common checks with pgx connections made with tweak.
type pgxCompat struct {
	env   compatEnv
	tweak func(*pgx.ConnConfig)
}

func (c pgxCompat) open(ctx context.Context) (*pgx.Conn, error) { return compatDB(ctx, c.env, c.tweak) }

// with runs f on a fresh connection, closed afterwards.
func (c pgxCompat) with(ctx context.Context, f func(*pgx.Conn) error) error {
	conn, err := c.open(ctx)
	if err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	defer conn.Close(context.Background())
	return f(conn)
}

func (c pgxCompat) checks() []goCheck {
	p := c.env.prefix
	return []goCheck{
		{"types", func(ctx context.Context) error {
			return c.with(ctx, func(conn *pgx.Conn) error { return pgxTypes(ctx, conn, p) })
		}},
		{"tx_own_write", func(ctx context.Context) error {
			return c.with(ctx, func(conn *pgx.Conn) error { return checkTxOwnWrite(ctx, pgxDB{conn}, p) })
		}},
		{"ryw_same_conn", func(ctx context.Context) error {
			return c.with(ctx, func(conn *pgx.Conn) error { return checkRYW(ctx, pgxDB{conn}, pgxDB{conn}, p+"ryw1") })
		}},
		{"ryw_other_conn", func(ctx context.Context) error {
			return c.with(ctx, func(w *pgx.Conn) error {
				return c.with(ctx, func(r *pgx.Conn) error { return checkRYW(ctx, pgxDB{w}, pgxDB{r}, p+"ryw2") })
			})
		}},
		{"error_rollback", func(ctx context.Context) error {
			return c.with(ctx, func(conn *pgx.Conn) error { return checkErrorRollback(ctx, pgxDB{conn}, p) })
		}},
		{"cancel", func(ctx context.Context) error {
			return c.with(ctx, func(conn *pgx.Conn) error { return pgxCancel(ctx, conn) })
		}},
		{"large_result", func(ctx context.Context) error {
			return c.with(ctx, func(conn *pgx.Conn) error { return checkLargeResult(ctx, pgxDB{conn}) })
		}},
		{"large_value", func(ctx context.Context) error {
			return c.with(ctx, func(conn *pgx.Conn) error { return checkLargeValue(ctx, pgxDB{conn}, p) })
		}},
		{"listen_notify", func(ctx context.Context) error {
			return c.with(ctx, func(l *pgx.Conn) error {
				return c.with(ctx, func(n *pgx.Conn) error { return pgxListenNotify(ctx, l, n, p+"chan") })
			})
		}},
		{"concurrency", func(ctx context.Context) error {
			return checkConcurrency(ctx, p+"conc", func(ctx context.Context, f func(dbq) error) error {
				return c.with(ctx, func(conn *pgx.Conn) error { return f(pgxDB{conn}) })
			})
		}},
		{"batch", func(ctx context.Context) error {
			return c.with(ctx, func(conn *pgx.Conn) error { return pgxBatch(ctx, conn, p) })
		}},
		{"copy", func(ctx context.Context) error {
			return c.with(ctx, func(conn *pgx.Conn) error { return pgxCopy(ctx, conn, p) })
		}},
		{"prepare_name_reuse", func(ctx context.Context) error {
			return c.with(ctx, func(conn *pgx.Conn) error { return pgxPrepareNameReuse(ctx, conn) })
		}},
		{"pg_temp", func(ctx context.Context) error {
			return c.with(ctx, func(conn *pgx.Conn) error { return pgxPgTemp(ctx, conn) })
		}},
		{"backend_signal", func(ctx context.Context) error {
			return c.with(ctx, func(conn *pgx.Conn) error { return pgxBackendSignal(ctx, conn, c.env.target == "direct") })
		}},
	}
}

// pgxBackendSignal: straight to PostgreSQL, pg_cancel_backend of a pid
// that is no backend says false; through pgsplit it is refused (0A000: a
// pooled backend's pid may be another client's), and inside a transaction
// that error aborts it like any other.
func pgxBackendSignal(ctx context.Context, conn *pgx.Conn, direct bool) error {
	const sql = "SELECT pg_cancel_backend($1)"
	var ok bool
	err := conn.QueryRow(ctx, sql, 1).Scan(&ok)
	if direct {
		if err != nil || ok {
			return fmt.Errorf("direct: want false (pid 1 is no backend), got %v, %v", ok, err)
		}
		return nil
	}
	if sqlState(err) != "0A000" {
		return fmt.Errorf("through pgsplit: want SQLSTATE 0A000, got %v, %v", ok, err)
	}
	tx, err := conn.Begin(ctx)
	if err != nil {
		return err
	}
	defer tx.Rollback(context.Background())
	if _, err := tx.Exec(ctx, "SELECT pg_terminate_backend(1)"); sqlState(err) != "0A000" {
		return fmt.Errorf("in a transaction: want SQLSTATE 0A000, got %v", err)
	}
	if _, err := tx.Exec(ctx, "SELECT 1"); sqlState(err) != "25P02" {
		return fmt.Errorf("after the refusal in a transaction: want 25P02, got %v", err)
	}
	if err := tx.Rollback(ctx); err != nil {
		return err
	}
	var one int
	if err := conn.QueryRow(ctx, "SELECT 1").Scan(&one); err != nil || one != 1 {
		return fmt.Errorf("after the rollback: %d, %v", one, err)
	}
	return nil
}

// pgxQuerier is what *pgx.Conn, pgx.Tx and *pgxpool.Conn share.
type pgxQuerier interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
	Begin(ctx context.Context) (pgx.Tx, error)
}

// execAll runs statements in order.
func execAll(ctx context.Context, q pgxQuerier, stmts ...string) error {
	for _, s := range stmts {
		if _, err := q.Exec(ctx, s); err != nil {
			return fmt.Errorf("%s: %w", s, err)
		}
	}
	return nil
}

func scanCompatTypes(row pgx.Row) (compatTypes, error) {
	var r compatTypes
	err := row.Scan(&r.I, &r.B, &r.N, &r.T, &r.By, &r.TS, &r.J, &r.JB, &r.U, &r.IA, &r.TA, &r.Nul)
	return r, err
}

// args are v as query parameters, json as its text (pgx's exec and
// simple_protocol modes send parameters without asking the server their
// types, so a Go map has no json encoding there).
func (v compatTypes) args() []any {
	j, _ := json.Marshal(v.J)
	jb, _ := json.Marshal(v.JB)
	return []any{v.I, v.B, v.N, v.T, v.By, v.TS, string(j), string(jb), v.U, v.IA, v.TA, v.Nul}
}

func pgxTypes(ctx context.Context, conn *pgx.Conn, p string) error {
	want := newCompatTypes()
	// Unprepared (the cell's exec mode) and through a named statement.
	got, err := scanCompatTypes(conn.QueryRow(ctx, compatTypesEcho, want.args()...))
	if err != nil {
		return fmt.Errorf("echo: %w", err)
	}
	if err := want.equal(got); err != nil {
		return fmt.Errorf("echo: %w", err)
	}
	if _, err := conn.Prepare(ctx, p+"echo", compatTypesEcho); err != nil {
		return fmt.Errorf("prepare: %w", err)
	}
	for i := 0; i < 3; i++ {
		got, err = scanCompatTypes(conn.QueryRow(ctx, p+"echo", want.args()...))
		if err != nil {
			return fmt.Errorf("prepared echo: %w", err)
		}
		if err := want.equal(got); err != nil {
			return fmt.Errorf("prepared echo: %w", err)
		}
	}
	tbl := p + "types"
	if err := execAll(ctx, conn, "DROP TABLE IF EXISTS "+tbl, "CREATE TABLE "+tbl+" (id int PRIMARY KEY, "+compatTypesCols+")"); err != nil {
		return err
	}
	if _, err := conn.Exec(ctx, "INSERT INTO "+tbl+" VALUES (1, $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)", want.args()...); err != nil {
		return fmt.Errorf("insert: %w", err)
	}
	got, err = scanCompatTypes(conn.QueryRow(ctx, "SELECT i, b, n::text, t, by, ts, j, jb, u::text, ia, ta, nul FROM "+tbl+" WHERE id = $1", 1))
	if err != nil {
		return fmt.Errorf("read back: %w", err)
	}
	if err := want.equal(got); err != nil {
		return fmt.Errorf("read back: %w", err)
	}
	return nil
}

func pgxCancel(ctx context.Context, conn *pgx.Conn) error {
	cctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
	defer cancel()
	began := time.Now()
	_, err := conn.Exec(cctx, "SELECT pg_sleep(30)")
	if sqlState(err) != "57014" {
		return fmt.Errorf("want SQLSTATE 57014, got %v", err)
	}
	if took := time.Since(began); took > 10*time.Second {
		return fmt.Errorf("the cancel took %v", took)
	}
	var one int
	if err := conn.QueryRow(ctx, "SELECT 1").Scan(&one); err != nil || one != 1 {
		return fmt.Errorf("next statement on the connection: %d, %v", one, err)
	}
	return nil
}

func compatBlob() ([]byte, error) {
	b := make([]byte, 10<<20)
	_, err := rand.Read(b)
	return b, err
}

func pgxListenNotify(ctx context.Context, l, n *pgx.Conn, channel string) error {
	if _, err := l.Exec(ctx, "LISTEN "+channel); err != nil {
		return err
	}
	if _, err := n.Exec(ctx, "SELECT pg_notify($1, $2)", channel, "payload-1"); err != nil {
		return err
	}
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	note, err := l.WaitForNotification(wctx)
	if err != nil {
		return fmt.Errorf("no notification within 10s: %w", err)
	}
	if note.Channel != channel || note.Payload != "payload-1" {
		return fmt.Errorf("want %s/payload-1, got %s/%s", channel, note.Channel, note.Payload)
	}
	return execAll(ctx, l, "UNLISTEN "+channel)
}

// pgxBatch pipelines several statements, one of them failing: the ones
// before it take effect, the error is the server's, the connection works.
func pgxBatch(ctx context.Context, conn *pgx.Conn, p string) error {
	tbl := p + "batch"
	if err := execAll(ctx, conn, "DROP TABLE IF EXISTS "+tbl, "CREATE TABLE "+tbl+" (id int PRIMARY KEY)"); err != nil {
		return err
	}
	b := &pgx.Batch{}
	for i := 1; i <= 5; i++ {
		b.Queue("INSERT INTO "+tbl+" VALUES ($1)", i)
	}
	b.Queue("SELECT count(*) FROM " + tbl)
	if err := conn.SendBatch(ctx, b).Close(); err != nil {
		return fmt.Errorf("batch: %w", err)
	}
	b = &pgx.Batch{}
	b.Queue("SELECT 1")
	b.Queue("INSERT INTO "+tbl+" VALUES ($1)", 1)
	b.Queue("SELECT 2")
	err := conn.SendBatch(ctx, b).Close()
	if sqlState(err) != "23505" {
		return fmt.Errorf("failing batch: want SQLSTATE 23505, got %v", err)
	}
	var n int
	if err := conn.QueryRow(ctx, "SELECT count(*) FROM "+tbl).Scan(&n); err != nil || n != 5 {
		return fmt.Errorf("after the batches: want 5 rows, got %d, %v", n, err)
	}
	return nil
}

func pgxCopy(ctx context.Context, conn *pgx.Conn, p string) error {
	tbl := p + "copy"
	if err := execAll(ctx, conn, "DROP TABLE IF EXISTS "+tbl, "CREATE TABLE "+tbl+" (id int PRIMARY KEY, name text, b bytea)"); err != nil {
		return err
	}
	rows := make([][]any, 10000)
	for i := range rows {
		rows[i] = []any{i, fmt.Sprintf("name %d\t\"\\", i), []byte{byte(i), 0, 255}}
	}
	n, err := conn.CopyFrom(ctx, pgx.Identifier{tbl}, []string{"id", "name", "b"}, pgx.CopyFromRows(rows))
	if err != nil || n != int64(len(rows)) {
		return fmt.Errorf("COPY FROM: %d rows, %v", n, err)
	}
	var out bytes.Buffer
	tag, err := conn.PgConn().CopyTo(ctx, &out, "COPY (SELECT id, name FROM "+tbl+" ORDER BY id) TO STDOUT")
	if err != nil || tag.RowsAffected() != int64(len(rows)) {
		return fmt.Errorf("COPY TO: %v, %v", tag, err)
	}
	lines := strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n")
	if len(lines) != len(rows) || lines[42] != `42	name 42\t"\\` {
		return fmt.Errorf("COPY TO: %d lines, line 42 %q", len(lines), lines[min(42, len(lines)-1)])
	}
	return nil
}

// pgxPrepareNameReuse: a second Parse under a name already taken with
// other SQL is refused with 42P05, as PostgreSQL does, and the first
// statement still runs.
func pgxPrepareNameReuse(ctx context.Context, conn *pgx.Conn) error {
	if _, err := conn.Prepare(ctx, "reused_name", "SELECT 1::int"); err != nil {
		return err
	}
	_, err := conn.Prepare(ctx, "reused_name", "SELECT 2::int")
	if sqlState(err) != "42P05" {
		return fmt.Errorf("Parse of a taken name with other SQL: want SQLSTATE 42P05, got %v", err)
	}
	var v int
	if err := conn.QueryRow(ctx, "reused_name").Scan(&v); err != nil || v != 1 {
		return fmt.Errorf("the first statement: want 1, got %d, %v", v, err)
	}
	// Inside a transaction the error aborts it, as any error does.
	tx, err := conn.Begin(ctx)
	if err != nil {
		return err
	}
	defer tx.Rollback(context.Background())
	if _, err := tx.Exec(ctx, "SELECT 1"); err != nil {
		return err
	}
	if _, err := tx.Prepare(ctx, "reused_name", "SELECT 3::int"); sqlState(err) != "42P05" {
		return fmt.Errorf("in a transaction: want SQLSTATE 42P05, got %v", err)
	}
	if _, err := tx.Exec(ctx, "SELECT 1"); sqlState(err) != "25P02" {
		return fmt.Errorf("after 42P05 in a transaction: want SQLSTATE 25P02 (transaction aborted), got %v", err)
	}
	if err := tx.Rollback(ctx); err != nil {
		return err
	}
	if err := conn.QueryRow(ctx, "reused_name").Scan(&v); err != nil || v != 1 {
		return fmt.Errorf("after the rollback: want 1, got %d, %v", v, err)
	}
	return conn.Deallocate(ctx, "reused_name")
}

// pgxPgTemp: a type in the session's own temporary schema, named pg_temp
// explicitly, is created and then used by later statements.
func pgxPgTemp(ctx context.Context, conn *pgx.Conn) error {
	if err := execAll(ctx, conn, "DROP TYPE IF EXISTS pg_temp.compat_pair", "CREATE TYPE pg_temp.compat_pair AS (a int, b text)"); err != nil {
		return err
	}
	for i := 0; i < 5; i++ {
		var a int
		if err := conn.QueryRow(ctx, "SELECT (('(7,x)')::pg_temp.compat_pair).a").Scan(&a); err != nil || a != 7 {
			return fmt.Errorf("read %d of the temp type: want 7, got %d, %v", i, a, err)
		}
	}
	return execAll(ctx, conn, "DROP TYPE pg_temp.compat_pair")
}

// pgxpoolChecks are the common checks through a pgxpool.Pool (a pool of
// 20 connections), each check's connections acquired from it.
func pgxpoolChecks(env compatEnv) []goCheck {
	var (
		once    sync.Once
		pool    *pgxpool.Pool
		openErr error
	)
	get := func(ctx context.Context) (*pgxpool.Pool, error) {
		once.Do(func() {
			cfg, err := pgxpool.ParseConfig(env.url())
			if err != nil {
				openErr = err
				return
			}
			withCancelRequests(cfg.ConnConfig)
			cfg.MaxConns = 20
			pool, openErr = pgxpool.NewWithConfig(context.Background(), cfg)
		})
		return pool, openErr
	}
	withConn := func(ctx context.Context, f func(*pgx.Conn) error) error {
		p, err := get(ctx)
		if err != nil {
			return err
		}
		c, err := p.Acquire(ctx)
		if err != nil {
			return fmt.Errorf("acquire: %w", err)
		}
		defer c.Release()
		return f(c.Conn())
	}
	pfx := env.prefix
	pooled := func(ctx context.Context, f func(dbq) error) error {
		p, err := get(ctx)
		if err != nil {
			return err
		}
		return f(pgxDB{p})
	}
	checks := []goCheck{
		{"types", func(ctx context.Context) error {
			return withConn(ctx, func(c *pgx.Conn) error { return pgxTypes(ctx, c, pfx) })
		}},
		{"tx_own_write", func(ctx context.Context) error {
			return withConn(ctx, func(c *pgx.Conn) error { return checkTxOwnWrite(ctx, pgxDB{c}, pfx) })
		}},
		{"ryw_same_conn", func(ctx context.Context) error {
			return withConn(ctx, func(c *pgx.Conn) error { return checkRYW(ctx, pgxDB{c}, pgxDB{c}, pfx+"ryw1") })
		}},
		{"ryw_other_conn", func(ctx context.Context) error {
			// The pool's own rotation: each statement on whichever
			// connection the pool hands out.
			return pooled(ctx, func(q dbq) error { return checkRYW(ctx, q, q, pfx+"ryw2") })
		}},
		{"error_rollback", func(ctx context.Context) error {
			return withConn(ctx, func(c *pgx.Conn) error { return checkErrorRollback(ctx, pgxDB{c}, pfx) })
		}},
		{"cancel", func(ctx context.Context) error {
			return withConn(ctx, func(c *pgx.Conn) error { return pgxCancel(ctx, c) })
		}},
		{"large_result", func(ctx context.Context) error {
			return withConn(ctx, func(c *pgx.Conn) error { return checkLargeResult(ctx, pgxDB{c}) })
		}},
		{"large_value", func(ctx context.Context) error {
			return withConn(ctx, func(c *pgx.Conn) error { return checkLargeValue(ctx, pgxDB{c}, pfx) })
		}},
		{"listen_notify", func(ctx context.Context) error {
			return withConn(ctx, func(l *pgx.Conn) error {
				return withConn(ctx, func(n *pgx.Conn) error { return pgxListenNotify(ctx, l, n, pfx+"chan") })
			})
		}},
		{"concurrency", func(ctx context.Context) error {
			// 50 clients sharing the pool's 20 connections.
			return checkConcurrency(ctx, pfx+"conc", pooled)
		}},
		{"pool_reuse", func(ctx context.Context) error {
			p, err := get(ctx)
			if err != nil {
				return err
			}
			if err := pgxPoolReuse(ctx, p); err != nil {
				return err
			}
			p.Close()
			return nil
		}},
	}
	return checks
}

// pgxPoolReuse: 100 goroutines, 2,000 queries over the pool's 20
// connections; each answer is the goroutine's own.
func pgxPoolReuse(ctx context.Context, p *pgxpool.Pool) error {
	var wg sync.WaitGroup
	errs := make(chan error, 100)
	for g := 0; g < 100; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			for i := 0; i < 20; i++ {
				var got string
				want := fmt.Sprintf("%d-%d", g, i)
				if err := p.QueryRow(ctx, "SELECT $1::text", want).Scan(&got); err != nil || got != want {
					errs <- fmt.Errorf("goroutine %d: want %s, got %s, %v", g, want, got, err)
					return
				}
			}
		}(g)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		return err
	}
	if st := p.Stat(); st.TotalConns() > 20 {
		return fmt.Errorf("the pool grew to %d connections", st.TotalConns())
	}
	return nil
}

// sqlCompat runs the common checks through database/sql with the driver
// registered as driver ("pgx": pgx/stdlib, with cancel requests on, as an
// application that cancels must configure it; "postgres": lib/pq).
type sqlCompat struct {
	env    compatEnv
	driver string
}

func (c sqlCompat) open() (*sql.DB, error) {
	if c.driver == "pgx" {
		cfg, err := pgx.ParseConfig(c.env.url())
		if err != nil {
			return nil, err
		}
		withCancelRequests(cfg)
		return stdlib.OpenDB(*cfg), nil
	}
	return sql.Open(c.driver, c.env.url())
}

// array adapts a slice for the driver (lib/pq needs pq.Array); scan is
// the same for a destination (pgx/stdlib scans arrays through pgx's types).
func (c sqlCompat) array(v any) any {
	if c.driver == "postgres" {
		return pq.Array(v)
	}
	return v
}

func (c sqlCompat) scanArray(v any) any {
	if c.driver == "postgres" {
		return pq.Array(v)
	}
	return pgtype.NewMap().SQLScanner(v)
}

func (c sqlCompat) with(ctx context.Context, f func(*sql.DB) error) error {
	db, err := c.open()
	if err != nil {
		return err
	}
	defer db.Close()
	db.SetMaxOpenConns(60)
	return f(db)
}

func (c sqlCompat) checks() []goCheck {
	p := c.env.prefix
	return []goCheck{
		{"types", func(ctx context.Context) error {
			return c.with(ctx, func(db *sql.DB) error { return c.types(ctx, db, p) })
		}},
		{"tx_own_write", func(ctx context.Context) error {
			return c.with(ctx, func(db *sql.DB) error { return checkTxOwnWrite(ctx, sqlDB{db}, p) })
		}},
		{"ryw_same_conn", func(ctx context.Context) error {
			return c.with(ctx, func(db *sql.DB) error {
				conn, err := db.Conn(ctx)
				if err != nil {
					return err
				}
				defer conn.Close()
				return checkRYW(ctx, sqlDB{conn}, sqlDB{conn}, p+"ryw1")
			})
		}},
		{"ryw_other_conn", func(ctx context.Context) error {
			return c.with(ctx, func(db *sql.DB) error {
				w, err := db.Conn(ctx)
				if err != nil {
					return err
				}
				defer w.Close()
				r, err := db.Conn(ctx)
				if err != nil {
					return err
				}
				defer r.Close()
				return checkRYW(ctx, sqlDB{w}, sqlDB{r}, p+"ryw2")
			})
		}},
		{"error_rollback", func(ctx context.Context) error {
			return c.with(ctx, func(db *sql.DB) error { return checkErrorRollback(ctx, sqlDB{db}, p) })
		}},
		{"cancel", func(ctx context.Context) error {
			return c.with(ctx, func(db *sql.DB) error { return sqlCancel(ctx, db, c.driver == "postgres") })
		}},
		{"large_result", func(ctx context.Context) error {
			return c.with(ctx, func(db *sql.DB) error { return checkLargeResult(ctx, sqlDB{db}) })
		}},
		{"large_value", func(ctx context.Context) error {
			return c.with(ctx, func(db *sql.DB) error { return checkLargeValue(ctx, sqlDB{db}, p) })
		}},
		{"listen_notify", func(ctx context.Context) error {
			return c.with(ctx, func(db *sql.DB) error { return c.listenNotify(ctx, db, p+"chan") })
		}},
		{"concurrency", func(ctx context.Context) error {
			return c.with(ctx, func(db *sql.DB) error {
				return checkConcurrency(ctx, p+"conc", func(_ context.Context, f func(dbq) error) error { return f(sqlDB{db}) })
			})
		}},
	}
}

func (c sqlCompat) types(ctx context.Context, db *sql.DB, p string) error {
	want := newCompatTypes()
	j, _ := json.Marshal(want.J)
	jb, _ := json.Marshal(want.JB)
	args := []any{want.I, want.B, want.N, want.T, want.By, want.TS, string(j), string(jb), want.U,
		c.array(want.IA), c.array(want.TA), want.Nul}
	scan := func(row *sql.Row) (compatTypes, error) {
		var r compatTypes
		var js, jbs string
		var ia []int64
		err := row.Scan(&r.I, &r.B, &r.N, &r.T, &r.By, &r.TS, &js, &jbs, &r.U, c.scanArray(&ia), c.scanArray(&r.TA), &r.Nul)
		if err != nil {
			return r, err
		}
		for _, v := range ia {
			r.IA = append(r.IA, int32(v))
		}
		if err := json.Unmarshal([]byte(js), &r.J); err != nil {
			return r, err
		}
		return r, json.Unmarshal([]byte(jbs), &r.JB)
	}
	got, err := scan(db.QueryRowContext(ctx, compatTypesEcho, args...))
	if err != nil {
		return fmt.Errorf("echo: %w", err)
	}
	if err := want.equal(got); err != nil {
		return fmt.Errorf("echo: %w", err)
	}
	stmt, err := db.PrepareContext(ctx, compatTypesEcho)
	if err != nil {
		return fmt.Errorf("prepare: %w", err)
	}
	defer stmt.Close()
	for i := 0; i < 3; i++ {
		got, err := scan(stmt.QueryRowContext(ctx, args...))
		if err != nil {
			return fmt.Errorf("prepared echo: %w", err)
		}
		if err := want.equal(got); err != nil {
			return fmt.Errorf("prepared echo: %w", err)
		}
	}
	tbl := p + "types"
	for _, s := range []string{"DROP TABLE IF EXISTS " + tbl, "CREATE TABLE " + tbl + " (id int PRIMARY KEY, " + compatTypesCols + ")"} {
		if _, err := db.ExecContext(ctx, s); err != nil {
			return err
		}
	}
	if _, err := db.ExecContext(ctx, "INSERT INTO "+tbl+" VALUES (1, $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)", args...); err != nil {
		return fmt.Errorf("insert: %w", err)
	}
	got, err = scan(db.QueryRowContext(ctx, "SELECT i, b, n::text, t, by, ts, j, jb, u::text, ia, ta, nul FROM "+tbl+" WHERE id = $1", 1))
	if err != nil {
		return fmt.Errorf("read back: %w", err)
	}
	return want.equal(got)
}

// sqlState of a database/sql error from either driver.
func sqlErrState(err error) string {
	var pqe *pq.Error
	if errors.As(err, &pqe) {
		return string(pqe.Code)
	}
	return sqlState(err)
}

func sqlCancel(ctx context.Context, db *sql.DB, lpq bool) error {
	conn, err := db.Conn(ctx)
	if err != nil {
		return err
	}
	defer conn.Close()
	cctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
	defer cancel()
	began := time.Now()
	_, err = conn.ExecContext(cctx, "SELECT pg_sleep(30)")
	if sqlErrState(err) != "57014" && !errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("want SQLSTATE 57014 (or the context's error), got %v", err)
	}
	if took := time.Since(began); took > 10*time.Second {
		return fmt.Errorf("the cancel took %v", took)
	}
	var one int
	err = conn.QueryRowContext(ctx, "SELECT 1").Scan(&one)
	if errors.Is(err, driver.ErrBadConn) && lpq {
		// lib/pq gives up a connection whose statement was cancelled
		// through its context (straight to PostgreSQL too): the next
		// statement runs on another pooled connection.
		err = db.QueryRowContext(ctx, "SELECT 1").Scan(&one)
	}
	if err != nil || one != 1 {
		return fmt.Errorf("next statement: %d, %v", one, err)
	}
	return nil
}

// listenNotify: lib/pq through its Listener; pgx/stdlib through the
// driver connection under database/sql.
func (c sqlCompat) listenNotify(ctx context.Context, db *sql.DB, channel string) error {
	notify := func() error {
		_, err := db.ExecContext(ctx, "SELECT pg_notify($1, $2)", channel, "payload-1")
		return err
	}
	if c.driver == "postgres" {
		problems := make(chan error, 4)
		l := pq.NewListener(c.env.url(), 100*time.Millisecond, time.Second, func(ev pq.ListenerEventType, err error) {
			if err != nil {
				problems <- err
			}
		})
		defer l.Close()
		if err := l.Listen(channel); err != nil {
			return err
		}
		if err := notify(); err != nil {
			return err
		}
		select {
		case n := <-l.Notify:
			if n == nil || n.Channel != channel || n.Extra != "payload-1" {
				return fmt.Errorf("want %s/payload-1, got %+v", channel, n)
			}
			return nil
		case err := <-problems:
			return fmt.Errorf("listener: %w", err)
		case <-time.After(10 * time.Second):
			return errors.New("no notification within 10s")
		}
	}
	conn, err := db.Conn(ctx)
	if err != nil {
		return err
	}
	defer conn.Close()
	return conn.Raw(func(dc any) error {
		pc := dc.(*stdlib.Conn).Conn()
		if _, err := pc.Exec(ctx, "LISTEN "+channel); err != nil {
			return err
		}
		if err := notify(); err != nil {
			return err
		}
		wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		n, err := pc.WaitForNotification(wctx)
		if err != nil {
			return fmt.Errorf("no notification within 10s: %w", err)
		}
		if n.Channel != channel || n.Payload != "payload-1" {
			return fmt.Errorf("want %s/payload-1, got %s/%s", channel, n.Channel, n.Payload)
		}
		_, err = pc.Exec(ctx, "UNLISTEN "+channel)
		return err
	})
}
