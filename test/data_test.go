package test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// copyRow is one row of the COPY tests' tables (see copy_rows in
// setupSchema).
type copyRow struct {
	id      int32
	name    string
	note    *string // NULL when nil
	amount  string  // numeric, in its canonical text form
	payload []byte
}

// copyRows returns n deterministic rows with the characters COPY's text
// format must escape (tab, newline, carriage return, backslash), non-ASCII
// text and NULLs.
func copyRows(n int) []copyRow {
	rng := rand.New(rand.NewPCG(1, 2))
	rows := make([]copyRow, n)
	for i := range rows {
		r := copyRow{id: int32(i + 1), name: fmt.Sprintf("name-%d", i), amount: fmt.Sprintf("%d.%02d", rng.IntN(1e6), rng.IntN(100))}
		switch i % 7 {
		case 0:
			r.name += "\twith tab\nand newline\r\\backslash"
		case 1:
			r.name += " ünïcødé ☃ 日本"
		case 2:
			r.name = ""
		}
		if i%5 != 0 {
			note := strings.Repeat("n", i%13)
			r.note = &note
		}
		r.payload = make([]byte, rng.IntN(40))
		for j := range r.payload {
			r.payload[j] = byte(rng.UintN(256))
		}
		rows[i] = r
	}
	return rows
}

// copyText is rows in the exact bytes COPY … TO STDOUT (text format)
// produces, which are also valid COPY … FROM STDIN input.
func copyText(rows []copyRow) []byte {
	esc := strings.NewReplacer(`\`, `\\`, "\t", `\t`, "\n", `\n`, "\r", `\r`)
	var b bytes.Buffer
	for _, r := range rows {
		note := `\N`
		if r.note != nil {
			note = esc.Replace(*r.note)
		}
		fmt.Fprintf(&b, "%d\t%s\t%s\t%s\t\\\\x%s\n", r.id, esc.Replace(r.name), note, r.amount, hex.EncodeToString(r.payload))
	}
	return b.Bytes()
}

// TestCopy moves 10 000 rows in and out with COPY through pgsplit — pgx's
// binary CopyFrom, pgconn's text CopyFrom and CopyTo, and psql's \copy — and
// checks that what comes back is byte for byte what went in, through the
// proxy and straight from the primary.
func TestCopy(t *testing.T) {
	shared.watchLogs(t)
	ctx := testCtx(t, 60*time.Second)
	c := connect(t, shared.appDSN())
	su := superConn(t)
	rows := copyRows(10000)
	want := copyText(rows)

	newTable := func(t *testing.T, name string) {
		t.Helper()
		if _, err := c.Exec(ctx, fmt.Sprintf("CREATE TABLE %s (LIKE copy_rows INCLUDING ALL)", name)); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _, _ = c.Exec(context.Background(), "DROP TABLE IF EXISTS "+name) })
	}
	copyOut := func(t *testing.T, conn *pgconn.PgConn, table string) []byte {
		t.Helper()
		var out bytes.Buffer
		tag, err := conn.CopyTo(ctx, &out, fmt.Sprintf("COPY (SELECT * FROM %s ORDER BY id) TO STDOUT", table))
		if err != nil {
			t.Fatalf("COPY TO STDOUT: %v", err)
		}
		if tag.RowsAffected() != int64(len(rows)) {
			t.Fatalf("COPY TO STDOUT: %q, want %d rows", tag, len(rows))
		}
		return out.Bytes()
	}
	checkSame := func(t *testing.T, what string, got []byte) {
		t.Helper()
		if !bytes.Equal(got, want) {
			i := 0
			for i < len(got) && i < len(want) && got[i] == want[i] {
				i++
			}
			t.Fatalf("%s: %d bytes differ from the %d sent, first difference at byte %d: got %q…, want %q…",
				what, len(got), len(want), i, truncate(got[i:], 60), truncate(want[i:], 60))
		}
	}
	load := map[string]func(t *testing.T, table string){
		"pgx CopyFrom (binary)": func(t *testing.T, table string) {
			n, err := c.CopyFrom(ctx, pgx.Identifier{table}, []string{"id", "name", "note", "amount", "payload"},
				pgx.CopyFromSlice(len(rows), func(i int) ([]any, error) {
					r := rows[i]
					return []any{r.id, r.name, r.note, r.amount, r.payload}, nil
				}))
			if err != nil || n != int64(len(rows)) {
				t.Fatalf("CopyFrom: %d rows, %v", n, err)
			}
		},
		"pgconn CopyFrom (text)": func(t *testing.T, table string) {
			tag, err := c.PgConn().CopyFrom(ctx, bytes.NewReader(want), fmt.Sprintf("COPY %s FROM STDIN", table))
			if err != nil || tag.RowsAffected() != int64(len(rows)) {
				t.Fatalf("COPY FROM STDIN: %q, %v", tag, err)
			}
		},
		"psql \\copy from stdin": func(t *testing.T, table string) {
			res := runPsql(t, shared, appUser, appPassword, string(want), nil, "-c", fmt.Sprintf(`\copy %s FROM STDIN`, table))
			if res.exitCode != 0 {
				t.Fatalf("psql \\copy: exit %d: %s", res.exitCode, res.stderr)
			}
		},
	}
	for _, name := range []string{"pgx CopyFrom (binary)", "pgconn CopyFrom (text)", "psql \\copy from stdin"} {
		t.Run(name, func(t *testing.T) {
			table := strings.NewReplacer(" ", "_", "(", "", ")", "", "\\", "").Replace(strings.ToLower("copy " + name))
			newTable(t, table)
			load[name](t, table)
			checkSame(t, "COPY TO STDOUT through pgsplit", copyOut(t, c.PgConn(), table))
			checkSame(t, "COPY TO STDOUT on the primary", copyOut(t, su.PgConn(), table))
			res := runPsql(t, shared, appUser, appPassword, "", nil, "-c", fmt.Sprintf(`\copy (SELECT * FROM %s ORDER BY id) TO STDOUT`, table))
			if res.exitCode != 0 {
				t.Fatalf("psql \\copy to stdout: exit %d: %s", res.exitCode, res.stderr)
			}
			checkSame(t, "psql \\copy TO STDOUT through pgsplit", []byte(res.stdout))
		})
	}

	t.Run("bad row fails the COPY, session goes on", func(t *testing.T) {
		newTable(t, "copy_bad")
		lines := bytes.SplitAfter(want, []byte("\n"))
		in := append(bytes.Join(lines[:999], nil), "notanumber\tx\t\\N\t1\t\\\\x00\n"...)
		_, err := c.PgConn().CopyFrom(ctx, bytes.NewReader(in), "COPY copy_bad FROM STDIN")
		wantState(t, err, "22P02", "COPY with a non-integer id")
		var n int
		if err := c.QueryRow(ctx, "SELECT count(*) FROM copy_bad").Scan(&n); err != nil || n != 0 {
			t.Fatalf("rows after the failed COPY: %d %v", n, err)
		}
	})

	t.Run("client aborts the COPY (CopyFail)", func(t *testing.T) {
		newTable(t, "copy_abort")
		r := io.MultiReader(bytes.NewReader(want[:len(want)/2]), errReader{errors.New("client gave up")})
		_, err := c.PgConn().CopyFrom(ctx, r, "COPY copy_abort FROM STDIN")
		wantState(t, err, "57014", "COPY ended with CopyFail")
		var n int
		if err := c.QueryRow(ctx, "SELECT count(*) FROM copy_abort").Scan(&n); err != nil || n != 0 {
			t.Fatalf("rows after the aborted COPY: %d %v", n, err)
		}
	})
	mustSelectOne(t, c, "after the COPY cases")
}

type errReader struct{ err error }

func (r errReader) Read([]byte) (int, error) { return 0, r.err }

// TestListenNotify has client A LISTEN through pgsplit and client B NOTIFY
// through pgsplit (on another upstream connection); A receives each
// notification with its payload, and one sent inside B's transaction only
// after COMMIT.
func TestListenNotify(t *testing.T) {
	shared.watchLogs(t)
	ctx := testCtx(t, 30*time.Second)
	a := connect(t, shared.appDSN())
	b := connect(t, shared.appDSN())
	if _, err := a.Exec(ctx, `LISTEN "pgsplit chan"`); err != nil {
		t.Fatal(err)
	}
	wait := func(t *testing.T, d time.Duration) (*pgconn.Notification, error) {
		wctx, cancel := context.WithTimeout(ctx, d)
		defer cancel()
		return a.WaitForNotification(wctx)
	}
	expect := func(t *testing.T, payload string) {
		t.Helper()
		n, err := wait(t, 5*time.Second)
		if err != nil {
			t.Fatalf("waiting for notification %.40q: %v", payload, err)
		}
		if n.Channel != "pgsplit chan" || n.Payload != payload {
			t.Fatalf("notification on %q with payload %.40q, want %q with %.40q", n.Channel, n.Payload, "pgsplit chan", payload)
		}
	}

	if _, err := b.Exec(ctx, `NOTIFY "pgsplit chan", 'hello'`); err != nil {
		t.Fatal(err)
	}
	expect(t, "hello")

	long := strings.Repeat("ü'\"\\", 1000) // 7000 bytes, under NOTIFY's 8000
	if _, err := b.Exec(ctx, "SELECT pg_notify('pgsplit chan', $1)", long); err != nil {
		t.Fatal(err)
	}
	expect(t, long)

	tx, err := b.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, `NOTIFY "pgsplit chan", 'after commit'`); err != nil {
		t.Fatal(err)
	}
	if n, err := wait(t, 300*time.Millisecond); err == nil {
		t.Fatalf("notification %q arrived before COMMIT", n.Payload)
	} else if !errors.Is(err, context.DeadlineExceeded) && !pgconn.Timeout(err) {
		t.Fatalf("waiting for a notification that must not come yet: %v", err)
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	expect(t, "after commit")

	// A notification that arrives while A runs a query is kept by pgx and
	// handed out afterwards.
	if _, err := b.Exec(ctx, `NOTIFY "pgsplit chan", 'during query'`); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Exec(ctx, "SELECT pg_sleep(0.2)"); err != nil {
		t.Fatal(err)
	}
	expect(t, "during query")
	mustSelectOne(t, a, "listener after the notifications")
}

// TestLargeRow sends a bytea of over 100 MB as a parameter through pgsplit,
// checks on the server what arrived, and reads it back.
func TestLargeRow(t *testing.T) {
	shared.watchLogs(t)
	ctx := testCtx(t, 120*time.Second)
	const size = 100<<20 + 12345
	data := make([]byte, size)
	rng := rand.NewChaCha8([32]byte{7})
	_, _ = rng.Read(data)
	sum := sha256.Sum256(data)
	wantHash := hex.EncodeToString(sum[:])

	c := connect(t, shared.appDSN())
	// EXTERNAL: no attempt to compress random bytes.
	if _, err := c.Exec(ctx, "CREATE TEMP TABLE big (id int, b bytea); ALTER TABLE big ALTER b SET STORAGE EXTERNAL"); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if _, err := c.Exec(ctx, "INSERT INTO big VALUES (1, $1)", data); err != nil {
		t.Fatalf("insert %d bytes: %v", size, err)
	}
	var n int64
	var serverHash string
	if err := c.QueryRow(ctx, "SELECT length(b), encode(sha256(b), 'hex') FROM big").Scan(&n, &serverHash); err != nil {
		t.Fatal(err)
	}
	if n != size || serverHash != wantHash {
		t.Fatalf("server received %d bytes with sha256 %s, want %d bytes with %s", n, serverHash, size, wantHash)
	}
	var back []byte
	if err := c.QueryRow(ctx, "SELECT b FROM big WHERE id = 1").Scan(&back); err != nil {
		t.Fatalf("read back: %v", err)
	}
	backSum := sha256.Sum256(back)
	if len(back) != size || hex.EncodeToString(backSum[:]) != wantHash {
		t.Fatalf("read back %d bytes with sha256 %x, want %d bytes with %s", len(back), backSum, size, wantHash)
	}
	t.Logf("100 MB bytea round trip in %s", time.Since(start).Round(time.Millisecond))
	mustSelectOne(t, c, "after the large row")
}
