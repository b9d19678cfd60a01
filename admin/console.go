// Package admin is pgsplit's admin console: a client that logs in to
// database "pgsplit" as one of admin.users talks to pgsplit itself. The
// console answers SHOW commands with ordinary row sets (simple and extended
// protocol, text and binary results, so psql, pgx and any driver can read
// them) and runs RELOAD, PAUSE, RESUME, SHUTDOWN and RESET STATS. Nothing is
// sent to a server.
//
// The console reads and runs everything through a Source (proxy.Server
// implements it), which hands out copies: it never sees a session or a pool
// of the proxy, and takes none of their locks. It reads and writes the
// client through a Client, which the proxy's session keeps owning.
package admin

import (
	"bytes"
	"fmt"
	"sync/atomic"

	"github.com/jackc/pgx/v5/pgproto3"
	"go.uber.org/zap"

	"github.com/pgsplit/pgsplit/internal/pgmsg"
)

// Client is the console's side of a client connection. The caller keeps
// owning the connection (its reader, writer and closing); Session uses the
// Client only from the goroutine that runs Serve.
type Client interface {
	// Next reads the client's next message: its type and its body, which
	// is valid only until the next call. An error ends the session, and
	// its text says why.
	Next() (typ byte, body []byte, err error)
	// Send writes out (whole messages, perhaps none) and flushes.
	Send(out []byte) error
	// Fatal tells the client e and closes the connection.
	Fatal(e *pgmsg.Error)
	// Gone reports whether the client has closed its connection; what it
	// has sent stays to be read.
	Gone() bool
}

// Session is one admin console connection, from its greeting (which the
// caller sends) to its end.
//
// Ownership: Serve runs on the goroutine that owns the client connection
// and alone touches the statements and portals; Cancel may be called from
// any goroutine.
type Session struct {
	src       Source
	client    Client
	log       *zap.Logger
	stmts     map[string]string // prepared statement name → command text
	portals   map[string]portal
	cancelled atomic.Bool
	shutdown  bool // SHUTDOWN ran: request it once the answer is out
}

type portal struct {
	cmd     string
	formats []int16 // result formats as Bind gave them
	// An Execute with a row limit leaves the rest of the result here for
	// the next Execute (PortalSuspended in between).
	rest *resultSet
}

// NewSession prepares a console session that reads and runs through src,
// talks to its client through c and logs the commands it runs to log.
func NewSession(src Source, c Client, log *zap.Logger) *Session {
	if log == nil {
		log = zap.NewNop()
	}
	return &Session{src: src, client: c, log: log, stmts: map[string]string{}, portals: map[string]portal{}}
}

// Cancel ends a PAUSE wait of the session (a cancel request: Ctrl-C in
// psql); it does nothing otherwise. Any goroutine may call it.
func (s *Session) Cancel() { s.cancelled.Store(true) }

// Serve answers the client's messages until it leaves, and returns why the
// session ended.
func (s *Session) Serve() string {
	skip := false // an extended-protocol error: ignore messages until Sync
	for {
		typ, body, err := s.client.Next()
		if err != nil {
			return err.Error()
		}
		s.cancelled.Store(false)
		var out []byte
		switch {
		case typ == pgmsg.Terminate:
			return "client terminated"
		case typ == pgmsg.Sync:
			skip = false
			out = pgmsg.AppendReadyForQuery(nil, pgmsg.TxIdle)
		case typ == pgmsg.Flush:
		case skip && (typ == pgmsg.Query || pgmsg.Step(typ)):
			// After an error everything up to Sync is ignored.
		case typ == pgmsg.Query:
			out = s.query(cstring(body))
			out = pgmsg.AppendReadyForQuery(out, pgmsg.TxIdle)
		case pgmsg.Step(typ):
			var pe *pgmsg.Error
			out, pe = s.extended(typ, body)
			if pe != nil {
				out = pe.Append(out)
				skip = true
			}
		default:
			s.client.Fatal(pgmsg.Fatal(pgmsg.CodeProtocolViolation, fmt.Sprintf("unexpected message type %q on the admin console", typ)))
			return "protocol violation"
		}
		if err := s.client.Send(out); err != nil {
			return "write to client: " + err.Error()
		}
		if s.shutdown {
			s.shutdown = false
			s.log.Info("SHUTDOWN requested from the admin console")
			s.src.RequestShutdown()
		}
	}
}

// cstring is the text of b up to its first NUL ("" without one: a Query
// must end in NUL).
func cstring(b []byte) string {
	if i := bytes.IndexByte(b, 0); i >= 0 {
		return string(b[:i])
	}
	return ""
}

// query answers a simple-protocol Query: each ';'-separated command in
// turn, stopping at the first error.
func (s *Session) query(sql string) []byte {
	var out []byte
	cmds := splitCommands(sql)
	if len(cmds) == 0 {
		return pgmsg.AppendEmpty(out, pgmsg.EmptyQueryResponse)
	}
	for _, cmd := range cmds {
		res, pe := s.runCommand(cmd)
		if pe != nil {
			return pe.Append(out)
		}
		if res.cols != nil {
			out = res.rowDescription(out, nil)
		}
		out = res.dataRows(out, nil)
		out = pgmsg.AppendCommandComplete(out, res.tag)
	}
	return out
}

// extended answers one extended-protocol message (a pgmsg.Step).
func (s *Session) extended(typ byte, body []byte) ([]byte, *pgmsg.Error) {
	switch typ {
	case pgmsg.Parse:
		return s.parse(body)
	case pgmsg.Bind:
		return s.bind(body)
	case pgmsg.Describe:
		return s.describe(body)
	case pgmsg.Execute:
		return s.execute(body)
	case pgmsg.Close:
		return s.close(body)
	}
	return nil, nil
}

func (s *Session) parse(body []byte) ([]byte, *pgmsg.Error) {
	var m pgproto3.Parse
	if err := m.Decode(body); err != nil {
		return nil, pgmsg.Err(pgmsg.CodeProtocolViolation, "invalid Parse message")
	}
	cmds := splitCommands(m.Query)
	if len(cmds) > 1 {
		return nil, pgmsg.Err(pgmsg.CodeSyntaxError, "cannot insert multiple commands into a prepared statement")
	}
	cmd := ""
	if len(cmds) == 1 {
		cmd = cmds[0]
		if _, ok := lookup(cmd); !ok {
			return nil, unknownCommand(cmd)
		}
	}
	if _, ok := s.stmts[m.Name]; ok && m.Name != "" {
		return nil, pgmsg.Err(pgmsg.CodeDuplicatePreparedStatement, fmt.Sprintf("prepared statement %q already exists", m.Name))
	}
	s.stmts[m.Name] = cmd
	return pgmsg.AppendEmpty(nil, pgmsg.ParseComplete), nil
}

func (s *Session) bind(body []byte) ([]byte, *pgmsg.Error) {
	var m pgproto3.Bind
	if err := m.Decode(body); err != nil {
		return nil, pgmsg.Err(pgmsg.CodeProtocolViolation, "invalid Bind message")
	}
	cmd, ok := s.stmts[m.PreparedStatement]
	if !ok {
		return nil, pgmsg.Err(pgmsg.CodeInvalidStatementName, fmt.Sprintf("prepared statement %q does not exist", m.PreparedStatement))
	}
	if len(m.Parameters) > 0 {
		return nil, pgmsg.Err(pgmsg.CodeProtocolViolation, "admin console commands take no parameters")
	}
	for _, f := range m.ResultFormatCodes {
		if f != formatText && f != formatBinary {
			return nil, pgmsg.Err(pgmsg.CodeProtocolViolation, fmt.Sprintf("unsupported format code: %d", f))
		}
	}
	s.portals[m.DestinationPortal] = portal{cmd: cmd, formats: m.ResultFormatCodes}
	return pgmsg.AppendEmpty(nil, pgmsg.BindComplete), nil
}

func (s *Session) describe(body []byte) ([]byte, *pgmsg.Error) {
	var m pgproto3.Describe
	if err := m.Decode(body); err != nil {
		return nil, pgmsg.Err(pgmsg.CodeProtocolViolation, "invalid Describe message")
	}
	var out []byte
	var cmd string
	var formats []int16
	if m.ObjectType == pgmsg.TargetStatement {
		c, ok := s.stmts[m.Name]
		if !ok {
			return nil, pgmsg.Err(pgmsg.CodeInvalidStatementName, fmt.Sprintf("prepared statement %q does not exist", m.Name))
		}
		cmd = c
		out = pgmsg.AppendNoParameters(out)
	} else {
		p, ok := s.portals[m.Name]
		if !ok {
			return nil, pgmsg.Err(pgmsg.CodeInvalidCursorName, fmt.Sprintf("portal %q does not exist", m.Name))
		}
		cmd, formats = p.cmd, p.formats
	}
	cols := s.columns(cmd)
	if cols == nil {
		return pgmsg.AppendEmpty(out, pgmsg.NoData), nil
	}
	return (&resultSet{cols: cols}).rowDescription(out, formats), nil
}

func (s *Session) execute(body []byte) ([]byte, *pgmsg.Error) {
	var m pgproto3.Execute
	if err := m.Decode(body); err != nil {
		return nil, pgmsg.Err(pgmsg.CodeProtocolViolation, "invalid Execute message")
	}
	p, ok := s.portals[m.Portal]
	if !ok {
		return nil, pgmsg.Err(pgmsg.CodeInvalidCursorName, fmt.Sprintf("portal %q does not exist", m.Portal))
	}
	if p.cmd == "" {
		return pgmsg.AppendEmpty(nil, pgmsg.EmptyQueryResponse), nil
	}
	res := p.rest
	if res == nil {
		var pe *pgmsg.Error
		if res, pe = s.runCommand(p.cmd); pe != nil {
			return nil, pe
		}
		if n := len(p.formats); n > 1 && n != len(res.cols) {
			return nil, pgmsg.Err(pgmsg.CodeProtocolViolation,
				fmt.Sprintf("bind message has %d result formats but query has %d columns", n, len(res.cols)))
		}
	}
	var out []byte
	if m.MaxRows > 0 && len(res.rows) > int(m.MaxRows) {
		part := &resultSet{cols: res.cols, rows: res.rows[:m.MaxRows]}
		p.rest = &resultSet{cols: res.cols, rows: res.rows[m.MaxRows:], tag: res.tag}
		s.portals[m.Portal] = p
		out = part.dataRows(out, p.formats)
		return pgmsg.AppendEmpty(out, pgmsg.PortalSuspended), nil
	}
	p.rest = nil
	s.portals[m.Portal] = p
	out = res.dataRows(out, p.formats)
	return pgmsg.AppendCommandComplete(out, res.tag), nil
}

func (s *Session) close(body []byte) ([]byte, *pgmsg.Error) {
	var m pgproto3.Close
	if err := m.Decode(body); err != nil {
		return nil, pgmsg.Err(pgmsg.CodeProtocolViolation, "invalid Close message")
	}
	if m.ObjectType == pgmsg.TargetStatement {
		delete(s.stmts, m.Name)
	} else {
		delete(s.portals, m.Name)
	}
	return pgmsg.AppendEmpty(nil, pgmsg.CloseComplete), nil
}
