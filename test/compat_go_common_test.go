package test

import (
	"bytes"
	"context"
	"database/sql"
	"fmt"
	"sync"

	"github.com/jackc/pgx/v5"
)

// The Go cells' common checks, written once over dbq, which pgx (a
// connection, a pool, a transaction) and database/sql (a DB, a Conn, a Tx)
// both provide through the adapters below.

// dbq is what a check needs of a connection or a pool.
type dbq interface {
	exec(ctx context.Context, sql string, args ...any) error
	row(ctx context.Context, sql string, args ...any) interface{ Scan(...any) error }
	rows(ctx context.Context, sql string, args ...any) (rowIter, error)
	begin(ctx context.Context) (dbtx, error)
}

// rowIter is a result being read.
type rowIter interface {
	Next() bool
	Scan(dest ...any) error
	Err() error
	Close()
}

// dbtx is an open transaction.
type dbtx interface {
	dbq
	commit(ctx context.Context) error
	rollback(ctx context.Context) error
}

// runAll runs statements in order.
func runAll(ctx context.Context, q dbq, stmts ...string) error {
	for _, s := range stmts {
		if err := q.exec(ctx, s); err != nil {
			return fmt.Errorf("%s: %w", s, err)
		}
	}
	return nil
}

// pgxDB is a dbq over anything with pgx's query methods.
type pgxDB struct{ q pgxQuerier }

func (p pgxDB) exec(ctx context.Context, sql string, args ...any) error {
	_, err := p.q.Exec(ctx, sql, args...)
	return err
}

func (p pgxDB) row(ctx context.Context, sql string, args ...any) interface{ Scan(...any) error } {
	return p.q.QueryRow(ctx, sql, args...)
}

func (p pgxDB) rows(ctx context.Context, sql string, args ...any) (rowIter, error) {
	return p.q.Query(ctx, sql, args...)
}

func (p pgxDB) begin(ctx context.Context) (dbtx, error) {
	tx, err := p.q.Begin(ctx)
	if err != nil {
		return nil, err
	}
	return pgxTxQ{pgxDB{tx}, tx}, nil
}

type pgxTxQ struct {
	pgxDB
	tx pgx.Tx
}

func (t pgxTxQ) commit(ctx context.Context) error   { return t.tx.Commit(ctx) }
func (t pgxTxQ) rollback(ctx context.Context) error { return t.tx.Rollback(ctx) }

// sqlDB is a dbq over database/sql's *DB, *Conn or *Tx (begin only on the
// first two).
type sqlDB struct {
	q interface {
		ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
		QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
		QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
	}
}

func (d sqlDB) exec(ctx context.Context, q string, args ...any) error {
	_, err := d.q.ExecContext(ctx, q, args...)
	return err
}

func (d sqlDB) row(ctx context.Context, q string, args ...any) interface{ Scan(...any) error } {
	return d.q.QueryRowContext(ctx, q, args...)
}

func (d sqlDB) rows(ctx context.Context, q string, args ...any) (rowIter, error) {
	r, err := d.q.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, err
	}
	return sqlRows{r}, nil
}

func (d sqlDB) begin(ctx context.Context) (dbtx, error) {
	b, ok := d.q.(interface {
		BeginTx(ctx context.Context, opts *sql.TxOptions) (*sql.Tx, error)
	})
	if !ok {
		return nil, fmt.Errorf("%T cannot begin a transaction", d.q)
	}
	tx, err := b.BeginTx(ctx, nil)
	if err != nil {
		return nil, err
	}
	return sqlTxQ{sqlDB{tx}, tx}, nil
}

type sqlTxQ struct {
	sqlDB
	tx *sql.Tx
}

func (t sqlTxQ) commit(context.Context) error   { return t.tx.Commit() }
func (t sqlTxQ) rollback(context.Context) error { return t.tx.Rollback() }

type sqlRows struct{ *sql.Rows }

func (r sqlRows) Close() { _ = r.Rows.Close() }

// checkTxOwnWrite: inside a transaction an INSERT is seen by the next
// SELECT; after COMMIT it is there.
func checkTxOwnWrite(ctx context.Context, q dbq, p string) error {
	tbl := p + "tx"
	if err := runAll(ctx, q, "DROP TABLE IF EXISTS "+tbl, "CREATE TABLE "+tbl+" (id int PRIMARY KEY, v text)"); err != nil {
		return err
	}
	tx, err := q.begin(ctx)
	if err != nil {
		return err
	}
	defer tx.rollback(context.Background())
	if err := tx.exec(ctx, "INSERT INTO "+tbl+" VALUES ($1, $2)", 7, "seven"); err != nil {
		return err
	}
	var v string
	if err := tx.row(ctx, "SELECT v FROM "+tbl+" WHERE id = $1", 7).Scan(&v); err != nil || v != "seven" {
		return fmt.Errorf("inside the transaction: want \"seven\", got %q, %v", v, err)
	}
	if err := tx.commit(ctx); err != nil {
		return err
	}
	if err := q.row(ctx, "SELECT v FROM "+tbl+" WHERE id = $1", 7).Scan(&v); err != nil || v != "seven" {
		return fmt.Errorf("after commit: want \"seven\", got %q, %v", v, err)
	}
	return nil
}

// checkRYW writes on w and reads on r, 20 times: every read sees the write
// just committed.
func checkRYW(ctx context.Context, w, r dbq, tbl string) error {
	if err := runAll(ctx, w, "DROP TABLE IF EXISTS "+tbl, "CREATE TABLE "+tbl+" (id int PRIMARY KEY, v int)", "INSERT INTO "+tbl+" VALUES (1, 0)"); err != nil {
		return err
	}
	for i := 1; i <= 20; i++ {
		if err := w.exec(ctx, "INSERT INTO "+tbl+" VALUES ($1, $1)", i+1); err != nil {
			return err
		}
		if err := w.exec(ctx, "UPDATE "+tbl+" SET v = $1 WHERE id = 1", i); err != nil {
			return err
		}
		var v, n int
		if err := r.row(ctx, "SELECT v, (SELECT count(*) FROM "+tbl+") FROM "+tbl+" WHERE id = 1").Scan(&v, &n); err != nil {
			return fmt.Errorf("round %d: %w", i, err)
		}
		if v != i || n != i+1 {
			return fmt.Errorf("round %d: stale read: want v=%d and %d rows, got v=%d and %d rows", i, i, i+1, v, n)
		}
	}
	return nil
}

// checkErrorRollback: a unique violation mid-transaction is 23505, the
// transaction is aborted (25P02), and after ROLLBACK the row written
// before the error is gone and the connection works.
func checkErrorRollback(ctx context.Context, q dbq, p string) error {
	tbl := p + "err"
	if err := runAll(ctx, q, "DROP TABLE IF EXISTS "+tbl, "CREATE TABLE "+tbl+" (id int PRIMARY KEY)", "INSERT INTO "+tbl+" VALUES (1)"); err != nil {
		return err
	}
	tx, err := q.begin(ctx)
	if err != nil {
		return err
	}
	if err := tx.exec(ctx, "INSERT INTO "+tbl+" VALUES ($1)", 2); err != nil {
		return err
	}
	if err := tx.exec(ctx, "INSERT INTO "+tbl+" VALUES ($1)", 1); sqlErrState(err) != "23505" {
		return fmt.Errorf("duplicate key: want SQLSTATE 23505, got %v", err)
	}
	if err := tx.exec(ctx, "SELECT 1"); sqlErrState(err) != "25P02" {
		return fmt.Errorf("after the error inside the transaction: want SQLSTATE 25P02, got %v", err)
	}
	if err := tx.rollback(ctx); err != nil {
		return fmt.Errorf("rollback: %w", err)
	}
	var n int
	if err := q.row(ctx, "SELECT count(*) FROM "+tbl).Scan(&n); err != nil || n != 1 {
		return fmt.Errorf("after rollback: want 1 row, got %d, %v", n, err)
	}
	return nil
}

// checkLargeResult reads 100,000 rows and checks their count and sum.
func checkLargeResult(ctx context.Context, q dbq) error {
	rows, err := q.rows(ctx, "SELECT g, repeat('x', 20) FROM generate_series(1, $1::int) g", 100000)
	if err != nil {
		return err
	}
	defer rows.Close()
	var n, sum int64
	for rows.Next() {
		var g int64
		var s string
		if err := rows.Scan(&g, &s); err != nil {
			return err
		}
		n++
		sum += g
	}
	if err := rows.Err(); err != nil {
		return err
	}
	if n != 100000 || sum != 100000*100001/2 {
		return fmt.Errorf("want 100000 rows summing to %d, got %d rows summing to %d", 100000*100001/2, n, sum)
	}
	return nil
}

// checkLargeValue writes a 10 MB bytea as a parameter and reads it back.
func checkLargeValue(ctx context.Context, q dbq, p string) error {
	blob, err := compatBlob()
	if err != nil {
		return err
	}
	tbl := p + "blob"
	if err := runAll(ctx, q, "DROP TABLE IF EXISTS "+tbl, "CREATE TABLE "+tbl+" (id int PRIMARY KEY, b bytea)"); err != nil {
		return err
	}
	if err := q.exec(ctx, "INSERT INTO "+tbl+" VALUES (1, $1)", blob); err != nil {
		return err
	}
	var got []byte
	if err := q.row(ctx, "SELECT b FROM "+tbl+" WHERE id = 1").Scan(&got); err != nil {
		return err
	}
	if !bytes.Equal(got, blob) {
		return fmt.Errorf("10 MB bytea: sent %d bytes, got %d different ones", len(blob), len(got))
	}
	return nil
}

// checkConcurrency runs 50 clients at once (each given a dbq by with), 20
// transactions each that write and read back their own row.
func checkConcurrency(ctx context.Context, tbl string, with func(context.Context, func(dbq) error) error) error {
	const clients, rounds = 50, 20
	if err := with(ctx, func(q dbq) error {
		return runAll(ctx, q, "DROP TABLE IF EXISTS "+tbl, "CREATE TABLE "+tbl+" (id int PRIMARY KEY, v int)")
	}); err != nil {
		return err
	}
	var wg sync.WaitGroup
	errs := make(chan error, clients)
	start := make(chan struct{})
	for c := 0; c < clients; c++ {
		wg.Add(1)
		go func(c int) {
			defer wg.Done()
			errs <- with(ctx, func(q dbq) error {
				<-start
				for i := 0; i < rounds; i++ {
					if err := ownRowTx(ctx, q, tbl, c*rounds+i, c); err != nil {
						return fmt.Errorf("client %d: %w", c, err)
					}
				}
				return nil
			})
		}(c)
	}
	close(start)
	wg.Wait()
	close(errs)
	var all []error
	for err := range errs {
		if err != nil {
			all = append(all, err)
		}
	}
	if len(all) > 0 {
		return fmt.Errorf("%d of %d clients failed, first: %w", len(all), clients, all[0])
	}
	var n int
	if err := with(ctx, func(q dbq) error { return q.row(ctx, "SELECT count(*) FROM "+tbl).Scan(&n) }); err != nil {
		return err
	}
	if n != clients*rounds {
		return fmt.Errorf("want %d rows, got %d", clients*rounds, n)
	}
	return nil
}

// ownRowTx inserts row id with value v and reads it back, in one
// transaction.
func ownRowTx(ctx context.Context, q dbq, tbl string, id, v int) error {
	tx, err := q.begin(ctx)
	if err != nil {
		return err
	}
	defer tx.rollback(context.Background())
	if err := tx.exec(ctx, "INSERT INTO "+tbl+" VALUES ($1, $2)", id, v); err != nil {
		return err
	}
	var got int
	if err := tx.row(ctx, "SELECT v FROM "+tbl+" WHERE id = $1", id).Scan(&got); err != nil || got != v {
		return fmt.Errorf("own row %d: want %d, got %d, %v", id, v, got, err)
	}
	return tx.commit(ctx)
}
