package test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// TestSimpleQueryProtocol sends Query messages (one or several statements
// per string) through pgsplit with pgconn, pgx's simple protocol mode and
// psql, and checks every result set.
func TestSimpleQueryProtocol(t *testing.T) {
	shared.watchLogs(t)
	c := connect(t, shared.appDSN(), func(cfg *pgx.ConnConfig) {
		cfg.DefaultQueryExecMode = pgx.QueryExecModeSimpleProtocol
	})
	ctx := testCtx(t, 30*time.Second)

	type result struct {
		tag  string
		rows string // rows joined by ";", columns by ","
	}
	cases := []struct {
		name string
		sql  string
		want []result
		code string // SQLSTATE of the error ending the string, if any
	}{
		{name: "one statement", sql: "SELECT 1, 'a'::text",
			want: []result{{"SELECT 1", "1,a"}}},
		{name: "three statements", sql: "SELECT 1; SELECT 2, 3; VALUES ('x'), ('y')",
			want: []result{{"SELECT 1", "1"}, {"SELECT 1", "2,3"}, {"SELECT 2", "x;y"}}},
		{name: "ddl and dml in one string",
			sql:  "CREATE TEMP TABLE sq(x int); INSERT INTO sq VALUES (1), (2), (3); SELECT sum(x) FROM sq; DROP TABLE sq",
			want: []result{{"CREATE TABLE", ""}, {"INSERT 0 3", ""}, {"SELECT 1", "6"}, {"DROP TABLE", ""}}},
		{name: "semicolons inside literals", sql: "SELECT 'a;b'; SELECT $$c;d$$",
			want: []result{{"SELECT 1", "a;b"}, {"SELECT 1", "c;d"}}},
		{name: "explicit transaction in one string", sql: "BEGIN; SELECT 7; COMMIT",
			want: []result{{"BEGIN", ""}, {"SELECT 1", "7"}, {"COMMIT", ""}}},
		{name: "error ends the string", sql: "SELECT 1; SELECT 1/0; SELECT 3",
			want: []result{{"SELECT 1", "1"}}, code: "22012"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			results, err := c.PgConn().Exec(ctx, tc.sql).ReadAll()
			if tc.code != "" {
				wantState(t, err, tc.code, tc.sql)
			} else if err != nil {
				t.Fatalf("%s: %v", tc.sql, err)
			}
			var got []result
			for _, r := range results {
				if r.Err != nil {
					continue
				}
				var rows []string
				for _, row := range r.Rows {
					var cols []string
					for _, col := range row {
						cols = append(cols, string(col))
					}
					rows = append(rows, strings.Join(cols, ","))
				}
				got = append(got, result{r.CommandTag.String(), strings.Join(rows, ";")})
			}
			if fmt.Sprint(got) != fmt.Sprint(tc.want) {
				t.Fatalf("%s:\n got  %v\n want %v", tc.sql, got, tc.want)
			}
			if st := c.PgConn().TxStatus(); st != 'I' {
				t.Fatalf("transaction status after %q: %q, want 'I'", tc.sql, st)
			}
		})
	}

	t.Run("implicit transaction of a failed string is rolled back", func(t *testing.T) {
		_, err := c.PgConn().Exec(ctx, "CREATE TEMP TABLE sq_rb(x int); INSERT INTO sq_rb VALUES (1); SELECT 1/0").ReadAll()
		wantState(t, err, "22012", "multi-statement string ending in an error")
		var exists bool
		if err := c.QueryRow(ctx, "SELECT to_regclass('sq_rb') IS NOT NULL").Scan(&exists); err != nil || exists {
			t.Fatalf("table created by the failed string: exists=%v err=%v, want rolled back", exists, err)
		}
	})

	t.Run("pgx simple protocol with arguments", func(t *testing.T) {
		var sum int
		var s string
		err := c.QueryRow(ctx, "SELECT $1::int + $2::int, $3::text", 40, 2, "O'Reilly; DROP TABLE kv --").Scan(&sum, &s)
		if err != nil || sum != 42 || s != "O'Reilly; DROP TABLE kv --" {
			t.Fatalf("got %d %q %v", sum, s, err)
		}
	})

	t.Run("psql", func(t *testing.T) {
		cases := []struct {
			name, stdin string
			args        []string
			want        string
			exit        int
			stderr      string
		}{
			{name: "-c with two statements", args: []string{"-c", "SELECT 1; SELECT 'two'"}, want: "1\ntwo\n"},
			{name: "script on stdin", stdin: "SELECT 'a' AS x;\nSELECT 40 + 2;\nBEGIN;\nSELECT 3;\nCOMMIT;\n", want: "a\n42\n3\n"},
			{name: "application_name from libpq", args: []string{"-c", "SELECT current_setting('application_name')"}, want: "psql\n"},
			{name: "error", args: []string{"-c", "SELECT 1/0"}, exit: 1, stderr: "division by zero"},
		}
		for _, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				res := runPsql(t, shared, appUser, appPassword, tc.stdin, nil, tc.args...)
				if res.exitCode != tc.exit || res.stdout != tc.want || !strings.Contains(res.stderr, tc.stderr) {
					t.Fatalf("psql %v: exit %d, stdout %q, stderr %q; want exit %d, stdout %q, stderr containing %q",
						tc.args, res.exitCode, res.stdout, res.stderr, tc.exit, tc.want, tc.stderr)
				}
			})
		}
	})
	mustSelectOne(t, c, "after the simple-protocol cases")
}

// TestExtendedProtocol runs the same statements many times with different
// arguments on one connection in each of pgx's query modes (the default one
// prepares named statements once and caches them), then pipelined batches.
func TestExtendedProtocol(t *testing.T) {
	shared.watchLogs(t)
	ctx := testCtx(t, 60*time.Second)
	modes := []pgx.QueryExecMode{
		pgx.QueryExecModeCacheStatement,
		pgx.QueryExecModeCacheDescribe,
		pgx.QueryExecModeDescribeExec,
		pgx.QueryExecModeExec,
		pgx.QueryExecModeSimpleProtocol,
	}
	for _, mode := range modes {
		t.Run(mode.String(), func(t *testing.T) {
			c := connect(t, shared.appDSN(), func(cfg *pgx.ConnConfig) { cfg.DefaultQueryExecMode = mode })
			for i := range 300 {
				s := fmt.Sprintf("v%d-'\"\\", i)
				blob := []byte{byte(i), 0, byte(i >> 8), 0xff}
				var n int
				var gotS string
				var gotBlob []byte
				var isNull *int
				err := c.QueryRow(ctx, "SELECT $1::int * 2, $2::text || '!', $3::bytea, $4::int", i, s, blob, nil).
					Scan(&n, &gotS, &gotBlob, &isNull)
				if err != nil {
					t.Fatalf("iteration %d: %v", i, err)
				}
				if n != 2*i || gotS != s+"!" || string(gotBlob) != string(blob) || isNull != nil {
					t.Fatalf("iteration %d: got %d %q %x %v", i, n, gotS, gotBlob, isNull)
				}
				// A second statement in between, so the cache holds several.
				var sum int64
				if err := c.QueryRow(ctx, "SELECT sum(g) FROM generate_series(1, $1::int) g", i+1).Scan(&sum); err != nil || sum != int64((i+1)*(i+2)/2) {
					t.Fatalf("iteration %d: sum = %d, %v", i, sum, err)
				}
			}
			if mode == pgx.QueryExecModeCacheStatement {
				var prepared int
				if err := c.QueryRow(ctx, "SELECT count(*) FROM pg_prepared_statements", pgx.QueryExecModeSimpleProtocol).Scan(&prepared); err != nil {
					t.Fatal(err)
				}
				if prepared < 2 {
					t.Fatalf("pg_prepared_statements has %d statements: pgx's statement cache did not prepare on the server", prepared)
				}
			}
		})
	}

	t.Run("pipelined batch of 50", func(t *testing.T) {
		c := connect(t, shared.appDSN())
		if _, err := c.Exec(ctx, "CREATE TEMP TABLE batch_t (i int, s text)"); err != nil {
			t.Fatal(err)
		}
		b := &pgx.Batch{}
		for i := range 48 {
			if i%2 == 0 {
				b.Queue("SELECT $1::int + 1000, $2::text", i, strings.Repeat("x", i))
			} else {
				b.Queue("INSERT INTO batch_t VALUES ($1, $2)", i, fmt.Sprint("row", i))
			}
		}
		b.Queue("SELECT count(*), sum(i) FROM batch_t")
		b.Queue("SELECT string_agg(s, ',' ORDER BY i) FROM batch_t WHERE i < 6")
		if b.Len() != 50 {
			t.Fatalf("batch has %d queries", b.Len())
		}
		br := c.SendBatch(ctx, b)
		for i := range 48 {
			if i%2 == 0 {
				var n int
				var s string
				if err := br.QueryRow().Scan(&n, &s); err != nil || n != i+1000 || s != strings.Repeat("x", i) {
					t.Fatalf("batch query %d: %d %q %v", i, n, s, err)
				}
			} else {
				tag, err := br.Exec()
				if err != nil || tag.String() != "INSERT 0 1" {
					t.Fatalf("batch query %d: %q %v", i, tag, err)
				}
			}
		}
		var count, sum int
		if err := br.QueryRow().Scan(&count, &sum); err != nil || count != 24 || sum != 24*24 {
			t.Fatalf("count/sum: %d %d %v, want 24 576", count, sum, err)
		}
		var agg string
		if err := br.QueryRow().Scan(&agg); err != nil || agg != "row1,row3,row5" {
			t.Fatalf("string_agg: %q %v", agg, err)
		}
		if err := br.Close(); err != nil {
			t.Fatal(err)
		}
		mustSelectOne(t, c, "after the batch")
	})

	t.Run("batch with a failing query", func(t *testing.T) {
		c := connect(t, shared.appDSN())
		b := &pgx.Batch{}
		for i := range 10 {
			b.Queue("SELECT 10 / $1::int", 5-i) // query 5 divides by zero
		}
		br := c.SendBatch(ctx, b)
		for i := range 5 {
			var n int
			if err := br.QueryRow().Scan(&n); err != nil || n != 10/(5-i) {
				t.Fatalf("query %d: %d %v", i, n, err)
			}
		}
		var n int
		wantState(t, br.QueryRow().Scan(&n), "22012", "query 5 of the batch")
		_ = br.Close()
		if st := c.PgConn().TxStatus(); st != 'I' {
			t.Fatalf("transaction status after the failed batch: %q", st)
		}
		mustSelectOne(t, c, "after the failed batch")
	})
}

// TestErrorInTransaction checks that an error inside a transaction reaches
// the client with its SQLSTATE, that the transaction is then aborted
// (25P02) until ROLLBACK, and that the session works afterwards.
func TestErrorInTransaction(t *testing.T) {
	shared.watchLogs(t)
	ctx := testCtx(t, 30*time.Second)
	cases := []struct {
		name string
		sql  string
		args []any
		code string
	}{
		{name: "undefined table", sql: "SELECT * FROM no_such_table", code: "42P01"},
		{name: "division by zero", sql: "SELECT 1/0", code: "22012"},
		{name: "division by zero, extended protocol", sql: "SELECT $1::int / $2::int", args: []any{1, 0}, code: "22012"},
		{name: "unique violation", sql: "INSERT INTO kv VALUES ('dup', 1), ('dup', 2)", code: "23505"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := connect(t, shared.appDSN())
			if _, err := c.Exec(ctx, "CREATE TEMP TABLE etx (x int)"); err != nil {
				t.Fatal(err)
			}
			tx, err := c.Begin(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := tx.Exec(ctx, "INSERT INTO etx VALUES ($1)", 1); err != nil {
				t.Fatal(err)
			}
			_, err = tx.Exec(ctx, tc.sql, tc.args...)
			wantState(t, err, tc.code, tc.sql)
			if st := c.PgConn().TxStatus(); st != 'E' {
				t.Fatalf("transaction status after the error: %q, want 'E'", st)
			}
			var one int
			wantState(t, tx.QueryRow(ctx, "SELECT 1").Scan(&one), "25P02", "statement after the error")
			if err := tx.Rollback(ctx); err != nil {
				t.Fatalf("ROLLBACK: %v", err)
			}
			if st := c.PgConn().TxStatus(); st != 'I' {
				t.Fatalf("transaction status after ROLLBACK: %q, want 'I'", st)
			}
			var n int
			if err := c.QueryRow(ctx, "SELECT count(*) FROM etx").Scan(&n); err != nil || n != 0 {
				t.Fatalf("rows left by the rolled back transaction: %d %v", n, err)
			}
			mustSelectOne(t, c, "after ROLLBACK")
		})
	}

	t.Run("savepoint recovers", func(t *testing.T) {
		c := connect(t, shared.appDSN())
		key := fmt.Sprintf("sp-%d", time.Now().UnixNano())
		t.Cleanup(func() { _, _ = c.Exec(context.Background(), "DELETE FROM kv WHERE k = $1", key) })
		tx, err := c.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		steps := []string{"INSERT INTO kv VALUES ('" + key + "', 1)", "SAVEPOINT a"}
		for _, s := range steps {
			if _, err := tx.Exec(ctx, s); err != nil {
				t.Fatalf("%s: %v", s, err)
			}
		}
		_, err = tx.Exec(ctx, "SELECT * FROM no_such_table")
		wantState(t, err, "42P01", "inside the savepoint")
		if _, err := tx.Exec(ctx, "ROLLBACK TO SAVEPOINT a"); err != nil {
			t.Fatal(err)
		}
		if _, err := tx.Exec(ctx, "UPDATE kv SET v = 2 WHERE k = $1", key); err != nil {
			t.Fatal(err)
		}
		if err := tx.Commit(ctx); err != nil {
			t.Fatal(err)
		}
		var v int
		su := superConn(t)
		if err := su.QueryRow(ctx, "SELECT v FROM kv WHERE k = $1", key).Scan(&v); err != nil || v != 2 {
			t.Fatalf("committed row on the primary: v=%d %v", v, err)
		}
	})
}

// TestNotice checks that NoticeResponse messages (RAISE NOTICE, RAISE
// WARNING) reach the client, in order, around a normal result.
func TestNotice(t *testing.T) {
	shared.watchLogs(t)
	ctx := testCtx(t, 30*time.Second)
	notices := make(chan *pgconn.Notice, 10)
	c := connect(t, shared.appDSN(), func(cfg *pgx.ConnConfig) {
		cfg.OnNotice = func(_ *pgconn.PgConn, n *pgconn.Notice) { notices <- n }
	})
	_, err := c.Exec(ctx, `DO $$ BEGIN RAISE NOTICE 'pgsplit notice %', 42; RAISE WARNING 'pgsplit warning'; END $$`)
	if err != nil {
		t.Fatal(err)
	}
	want := []struct{ severity, msg string }{{"NOTICE", "pgsplit notice 42"}, {"WARNING", "pgsplit warning"}}
	for _, w := range want {
		select {
		case n := <-notices:
			if n.Severity != w.severity || n.Message != w.msg {
				t.Fatalf("notice: %s %q, want %s %q", n.Severity, n.Message, w.severity, w.msg)
			}
		default:
			t.Fatalf("notice %q did not arrive before the DO block's result", w.msg)
		}
	}
	mustSelectOne(t, c, "after the notices")
}
