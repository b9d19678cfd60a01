package pool

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/pgsplit/pgsplit/internal/wire"
)

// Conn is one authenticated upstream connection, taken raw from pgconn with
// Hijack. A Conn is owned by exactly one party at a time: the Pool while it
// is idle, the session that acquired it until it calls Release or Discard.
// The owner may hand reading to one goroutine and writing to another.
type Conn struct {
	Addr      string
	PID       uint32
	SecretKey []byte
	// Params holds the ParameterStatus values the server reported at
	// connect and since, as seen by Exec. The relay does not update it.
	Params map[string]string
	// State is the session state left on the connection; see State.
	State State
	// TLS describes the connection's encryption ("TLSv1.3/…"; "" for
	// plain text), for SHOW SERVERS.
	TLS string

	raw net.Conn
	// R frames messages from the server; W buffers messages to it.
	R *wire.Reader
	W *bufio.Writer

	// Pool bookkeeping, under the pool's lock.
	created   time.Time
	lastUsed  time.Time
	handedOut time.Time
	prepared  int
}

// Raw returns the network connection, for deadlines and closing.
func (c *Conn) Raw() net.Conn { return c.raw }

const bufSize = 32 << 10

// ConnConfig is the pgconn configuration of every connection pgsplit opens
// to a server (pooled, health checks, catalog, probes): one host, TLS as t
// says (pgconn's own sslmode handling: allow and prefer keep the fallback
// attempt it builds for the same host), and nothing taken from pgsplit's
// own PG* environment.
func ConnConfig(host string, port int, t TLS, user, password, database string, timeout time.Duration) (*pgconn.Config, error) {
	cfg, err := pgconn.ParseConfig(fmt.Sprintf("host=%s port=%d %s", connQuote(host), port, t.connString()))
	if err != nil {
		return nil, fmt.Errorf("upstream config: %w", err)
	}
	cfg.User, cfg.Password, cfg.Database, cfg.ConnectTimeout = user, password, database, timeout
	cfg.RuntimeParams = map[string]string{}
	return cfg, nil
}

func dial(ctx context.Context, o *Options) (*Conn, error) {
	cfg, err := LoginConfig(o.Host, o.Port, o.TLS, o.User, o.Password, o.Database, o.ConnectTimeout, o.Keys)
	if err != nil {
		return nil, err
	}
	pc, err := pgconn.ConnectConfig(ctx, cfg)
	if err != nil {
		return nil, err
	}
	// pgconn may still have a background reader blocked in Read on the
	// socket (it starts one when a write during the login is slow, e.g.
	// under load). Hijacking without stopping it lets that goroutine swallow
	// the answer to our first statement, which then waits forever. SyncConn
	// stops it and drains pgconn's buffers, as pgconn's Hijack doc asks.
	if err := pc.SyncConn(ctx); err != nil {
		_ = pc.Close(ctx)
		return nil, fmt.Errorf("upstream sync before hijack: %w", err)
	}
	hj, err := pc.Hijack()
	if err != nil {
		_ = pc.Close(ctx)
		return nil, fmt.Errorf("upstream hijack: %w", err)
	}
	now := time.Now()
	return &Conn{
		Addr:      o.Addr(),
		PID:       hj.PID,
		SecretKey: hj.SecretKey,
		Params:    hj.ParameterStatuses,
		raw:       hj.Conn,
		R:         wire.NewReader(bufio.NewReaderSize(hj.Conn, bufSize), 0),
		W:         bufio.NewWriterSize(hj.Conn, bufSize),
		State:     newState(),
		TLS:       describeTLS(hj.Conn),
		created:   now,
		lastUsed:  now,
	}, nil
}

// ServerError is an ErrorResponse the server sent to a statement pgsplit ran
// itself (reset, ping, SET).
type ServerError struct{ Msg pgproto3.ErrorResponse }

func (e *ServerError) Error() string {
	return fmt.Sprintf("server error %s: %s", e.Msg.Code, e.Msg.Message)
}

// Exec runs sql with the simple query protocol and waits for ReadyForQuery.
// It returns the transaction status and the first ErrorResponse as
// *ServerError. ParameterStatus messages update c.Params; notices and
// notifications are dropped. The connection must be idle (no reader running).
func (c *Conn) Exec(ctx context.Context, sql string) (txStatus byte, err error) {
	buf, err := (&pgproto3.Query{String: sql}).Encode(nil)
	if err != nil {
		return 0, err
	}
	return c.roundTrip(ctx, buf, nil)
}

// Query is Exec that also returns the rows, as text (NULL as nil).
func (c *Conn) Query(ctx context.Context, sql string) ([][][]byte, error) {
	buf, err := (&pgproto3.Query{String: sql}).Encode(nil)
	if err != nil {
		return nil, err
	}
	return c.collect(ctx, buf)
}

// QueryParams runs sql with the extended protocol, as the unnamed statement
// and portal, with parameters as a client's Bind carries them: oids as in
// Parse (0 or missing: the server infers the type), one format code for
// all or one per value (none: text), NULL as nil. The rows come back as
// text. Like Query, it waits for ReadyForQuery, and the connection must be
// idle. It replaces the connection's unnamed statement.
func (c *Conn) QueryParams(ctx context.Context, sql string, oids []uint32, formats []int16, values [][]byte) ([][][]byte, error) {
	buf, err := (&pgproto3.Parse{Query: sql, ParameterOIDs: oids}).Encode(nil)
	if err == nil {
		buf, err = (&pgproto3.Bind{ParameterFormatCodes: formats, Parameters: values}).Encode(buf)
	}
	if err == nil {
		buf, err = (&pgproto3.Execute{}).Encode(buf)
	}
	if err == nil {
		buf, err = (&pgproto3.Sync{}).Encode(buf)
	}
	if err != nil {
		return nil, err
	}
	return c.collect(ctx, buf)
}

// collect sends msgs and returns the rows they produce, copied.
func (c *Conn) collect(ctx context.Context, msgs []byte) ([][][]byte, error) {
	var rows [][][]byte
	_, err := c.roundTrip(ctx, msgs, func(values [][]byte) {
		row := make([][]byte, len(values))
		for i, v := range values {
			if v != nil {
				row[i] = append([]byte{}, v...)
			}
		}
		rows = append(rows, row)
	})
	if err != nil {
		return nil, err
	}
	return rows, nil
}

// roundTrip sends msgs (a simple Query, or extended-protocol messages up to
// one Sync) and reads up to the ReadyForQuery that ends them, handing each
// DataRow's values (valid only during the call) to onRow if not nil.
func (c *Conn) roundTrip(ctx context.Context, msgs []byte, onRow func([][]byte)) (byte, error) {
	if dl, ok := ctx.Deadline(); ok {
		_ = c.raw.SetDeadline(dl)
		defer func() { _ = c.raw.SetDeadline(time.Time{}) }()
	}
	if _, err := c.W.Write(msgs); err != nil {
		return 0, err
	}
	if err := c.W.Flush(); err != nil {
		return 0, err
	}
	c.State.Unnamed = nil // a simple Query destroys the unnamed statement; a Parse replaces it
	var serr *ServerError
	for {
		typ, _, err := c.R.Next()
		if err != nil {
			return 0, err
		}
		if typ != 'Z' && typ != 'E' && typ != 'S' && (typ != 'D' || onRow == nil) {
			continue
		}
		b, err := c.R.Body()
		if err != nil {
			return 0, err
		}
		switch typ {
		case 'Z':
			if len(b) != 1 {
				return 0, fmt.Errorf("ReadyForQuery of %d bytes", len(b))
			}
			if serr != nil {
				return b[0], serr
			}
			return b[0], nil
		case 'E':
			var m pgproto3.ErrorResponse
			if err := m.Decode(b); err != nil {
				return 0, err
			}
			if serr == nil {
				serr = &ServerError{Msg: m}
			}
		case 'S':
			var m pgproto3.ParameterStatus
			if err := m.Decode(b); err == nil {
				c.Params[m.Name] = m.Value
			}
		case 'D':
			var m pgproto3.DataRow
			if err := m.Decode(b); err != nil {
				return 0, err
			}
			onRow(m.Values)
		}
	}
}

// Reset brings the connection back to a clean session state: it rolls back
// an open transaction (txStatus 'T' or 'E') and runs DISCARD ALL.
func (c *Conn) Reset(ctx context.Context, txStatus byte) error {
	if err := c.Rollback(ctx, txStatus); err != nil {
		return fmt.Errorf("reset: %w", err)
	}
	st, err := c.Exec(ctx, "DISCARD ALL")
	if err != nil {
		return fmt.Errorf("reset discard all: %w", err)
	}
	if st != 'I' {
		return fmt.Errorf("reset discard all: transaction status %q", st)
	}
	c.State.Clear()
	return nil
}

// softResetSQL is DISCARD ALL without DISCARD PLANS and with a DEALLOCATE
// of every statement but pgsplit's own: it ends every kind of session
// state a function, DO block or procedure can leave behind (settings,
// role, cursors, LISTEN, advisory locks, temporary objects, sequence
// state, statements an EXECUTE 'PREPARE …' made) and keeps the prepared
// statements pgsplit named (pgsplit_<hash>, see proxy's serverStmtName),
// which State tracks. Every part is allowed on a hot standby.
const softResetSQL = "SET SESSION AUTHORIZATION DEFAULT; RESET ALL; CLOSE ALL; UNLISTEN *; " +
	"SELECT pg_advisory_unlock_all(); DISCARD TEMP; DISCARD SEQUENCES; " +
	"DO $pgsplit$DECLARE n text; BEGIN FOR n IN SELECT name FROM pg_prepared_statements " +
	"WHERE name !~ '^pgsplit_[0-9a-f]{30}$' LOOP EXECUTE format('DEALLOCATE %I', n); END LOOP; END$pgsplit$"

// SoftReset brings an idle connection back to a clean session state but for
// its prepared statements: for a connection that ran code pgsplit cannot
// see into (router.Classifier.RunsUserCode). Its settings are then at the
// server defaults, so State.Settings is cleared.
func (c *Conn) SoftReset(ctx context.Context) error {
	st, err := c.Exec(ctx, softResetSQL)
	if err != nil {
		return fmt.Errorf("reset after user code: %w", err)
	}
	if st != 'I' {
		return fmt.Errorf("reset after user code: transaction status %q", st)
	}
	clear(c.State.Settings)
	return nil
}

// ResetSettings puts the connection's settings back to the server defaults
// if a client left any (State.Settings), so that pgsplit's own statements
// (catalog reads, EXPLAIN) run as on a fresh connection; the next client's
// settings are then replayed from scratch.
func (c *Conn) ResetSettings(ctx context.Context) error {
	if len(c.State.Settings) == 0 {
		return nil
	}
	if _, err := c.Exec(ctx, "RESET ALL"); err != nil {
		return err
	}
	clear(c.State.Settings)
	return nil
}

// Rollback ends an open transaction (txStatus 'T' or 'E') and leaves the
// rest of the session state as it is.
func (c *Conn) Rollback(ctx context.Context, txStatus byte) error {
	if txStatus == 'I' {
		return nil
	}
	st, err := c.Exec(ctx, "ROLLBACK")
	if err != nil {
		return fmt.Errorf("rollback: %w", err)
	}
	if st != 'I' {
		return fmt.Errorf("rollback: transaction status %q", st)
	}
	return nil
}

// errUnexpectedData is what checkIdle reports for bytes sent by the server
// on a connection nobody asked anything.
var errUnexpectedData = errors.New("server sent data on an idle connection")

// checkIdle reports, without a round trip and without blocking, whether an
// idle connection was ended (or written to) by the server.
func (c *Conn) checkIdle() error {
	if c.R.Buffered() > 0 {
		return errUnexpectedData
	}
	if err := socketCheck(plainConn(c.raw)); err != nil {
		return fmt.Errorf("idle check: %w", err)
	}
	return nil
}

// Ping sends an empty query and waits for its ReadyForQuery.
func (c *Conn) Ping(ctx context.Context) error {
	st, err := c.Exec(ctx, "")
	if err == nil && st != 'I' {
		err = fmt.Errorf("ping: transaction status %q", st)
	}
	return err
}

// Cancel asks the server, on a new connection, to cancel whatever this
// connection is running. Like PostgreSQL's own cancel, success means only
// that the request was delivered.
func (c *Conn) Cancel(ctx context.Context) error {
	var d net.Dialer
	nc, err := d.DialContext(ctx, "tcp", c.Addr)
	if err != nil {
		return fmt.Errorf("cancel: %w", err)
	}
	defer nc.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = nc.SetDeadline(dl)
	}
	buf, err := (&pgproto3.CancelRequest{ProcessID: c.PID, SecretKey: c.SecretKey}).Encode(nil)
	if err != nil {
		return fmt.Errorf("cancel: %w", err)
	}
	if _, err := nc.Write(buf); err != nil {
		return fmt.Errorf("cancel: %w", err)
	}
	// The server closes the connection once it has read the request.
	var one [1]byte
	_, _ = nc.Read(one[:])
	return nil
}

// QuoteLiteral quotes s as an escape string literal (E'…'), correct whatever
// standard_conforming_strings is set to.
func QuoteLiteral(s string) string {
	s = strings.ReplaceAll(s, `\`, `\\`)
	s = strings.ReplaceAll(s, `'`, `''`)
	return "E'" + s + "'"
}

// IsServerError reports whether err carries an ErrorResponse from the server.
func IsServerError(err error) (*ServerError, bool) {
	var se *ServerError
	ok := errors.As(err, &se)
	return se, ok
}
