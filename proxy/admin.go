package proxy

import (
	"encoding/binary"
	"fmt"
	"math"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/pgsplit/pgsplit/internal/pgmsg"

	"github.com/jackc/pgx/v5/pgproto3"
	"go.uber.org/zap"

	"github.com/pgsplit/pgsplit/config"
)

// The admin console: a client that logs in to database "pgsplit" as one of
// admin.users talks to pgsplit itself. It answers SHOW commands with
// ordinary row sets (simple and extended protocol, text and binary
// results, so psql, pgx and any driver can read them) and runs RELOAD,
// PAUSE, RESUME, SHUTDOWN and RESET STATS. Nothing is sent to a server.

// maxAdminConns bounds the admin console's connections; they do not count
// against max_client_conn, so an admin gets in when clients fill it.
const maxAdminConns = 50

// adminSession is the admin console's state of a session.
//
// Ownership: the session's goroutine; cancelled is set by cancel requests.
type adminSession struct {
	stmts     map[string]string // prepared statement name → command text
	portals   map[string]adminPortal
	cancelled atomic.Bool
	shutdown  bool // SHUTDOWN ran: request it once the answer is out
}

type adminPortal struct {
	cmd     string
	formats []int16 // result formats as Bind gave them
	// An Execute with a row limit leaves the rest of the result here for
	// the next Execute (PortalSuspended in between).
	rest *resultSet
}

// serveAdmin runs an admin console session of u, who has logged in, to its
// end.
func (s *session) serveAdmin(u config.User) {
	if n := s.srv.adminConns.Add(1); n > maxAdminConns {
		s.srv.adminConns.Add(-1)
		s.failStartup(pgmsg.Fatal(pgmsg.CodeTooManyConnections, fmt.Sprintf("sorry, too many admin console connections already (%d)", maxAdminConns)), u.Name, config.AdminDatabase)
		return
	}
	defer s.srv.adminConns.Add(-1)
	s.user, s.database = u, config.AdminDatabase
	s.admin = &adminSession{stmts: map[string]string{}, portals: map[string]adminPortal{}}
	if err := s.greet(map[string]string{
		"server_version": "15.0 (pgsplit admin console)", "server_encoding": "UTF8", "client_encoding": "UTF8",
		"DateStyle": "ISO, MDY", "TimeZone": "UTC", "integer_datetimes": "on", "standard_conforming_strings": "on",
		"IntervalStyle": "postgres", "is_superuser": "off", "session_authorization": u.Name,
		"application_name": s.appName,
	}); err != nil {
		return
	}
	_ = s.conn.SetDeadline(time.Time{})
	s.log.Info("admin console connected")
	s.ready.Store(true)
	if s.draining.Load() {
		s.drain()
	}
	reason := s.adminLoop()
	s.ready.Store(false)
	s.log.Info("admin console disconnected", zap.String("reason", reason))
}

// adminLoop reads the admin client's messages until it leaves.
func (s *session) adminLoop() string {
	a := s.admin
	skip := false // an extended-protocol error: ignore messages until Sync
	for {
		typ, err := s.nextMessage()
		if err != nil {
			return err.Error()
		}
		body, err := s.cr.Body()
		if err != nil {
			return "client connection closed"
		}
		s.lastRequest.Store(time.Now().UnixNano())
		a.cancelled.Store(false)
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
			out = s.adminQuery(cstring(body))
			out = pgmsg.AppendReadyForQuery(out, pgmsg.TxIdle)
		case pgmsg.Step(typ):
			var pe *pgmsg.Error
			out, pe = s.adminExtended(typ, body)
			if pe != nil {
				out = pe.Append(out)
				skip = true
			}
		default:
			s.out.fatal(pgmsg.Fatal(pgmsg.CodeProtocolViolation, fmt.Sprintf("unexpected message type %q on the admin console", typ)))
			return "protocol violation"
		}
		if err := s.adminWrite(out); err != nil {
			return "write to client: " + err.Error()
		}
		if a.shutdown {
			a.shutdown = false
			s.log.Info("SHUTDOWN requested from the admin console")
			s.srv.shutdownOnce.Do(func() { close(s.srv.shutdownReq) })
		}
	}
}

// adminWrite sends out under the session's write lock (drain and kill
// write from other goroutines).
func (s *session) adminWrite(out []byte) error {
	return s.out.send(out)
}

// adminQuery answers a simple-protocol Query: each ';'-separated command
// in turn, stopping at the first error.
func (s *session) adminQuery(sql string) []byte {
	var out []byte
	cmds := splitCommands(sql)
	if len(cmds) == 0 {
		return pgmsg.AppendEmpty(out, pgmsg.EmptyQueryResponse)
	}
	for _, cmd := range cmds {
		res, pe := s.runAdmin(cmd)
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

// adminExtended answers one extended-protocol message.
func (s *session) adminExtended(typ byte, body []byte) ([]byte, *pgmsg.Error) {
	a := s.admin
	var out []byte
	switch typ {
	case pgmsg.Parse:
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
			if _, ok := adminCommand(cmd); !ok {
				return nil, unknownAdminCommand(cmd)
			}
		}
		if _, ok := a.stmts[m.Name]; ok && m.Name != "" {
			return nil, pgmsg.Err(pgmsg.CodeDuplicatePreparedStatement, fmt.Sprintf("prepared statement %q already exists", m.Name))
		}
		a.stmts[m.Name] = cmd
		return pgmsg.AppendEmpty(out, pgmsg.ParseComplete), nil
	case pgmsg.Bind:
		var m pgproto3.Bind
		if err := m.Decode(body); err != nil {
			return nil, pgmsg.Err(pgmsg.CodeProtocolViolation, "invalid Bind message")
		}
		cmd, ok := a.stmts[m.PreparedStatement]
		if !ok {
			return nil, pgmsg.Err(pgmsg.CodeInvalidStatementName, fmt.Sprintf("prepared statement %q does not exist", m.PreparedStatement))
		}
		if len(m.Parameters) > 0 {
			return nil, pgmsg.Err(pgmsg.CodeProtocolViolation, "admin console commands take no parameters")
		}
		for _, f := range m.ResultFormatCodes {
			if f != 0 && f != 1 {
				return nil, pgmsg.Err(pgmsg.CodeProtocolViolation, fmt.Sprintf("unsupported format code: %d", f))
			}
		}
		a.portals[m.DestinationPortal] = adminPortal{cmd: cmd, formats: m.ResultFormatCodes}
		return pgmsg.AppendEmpty(out, pgmsg.BindComplete), nil
	case pgmsg.Describe:
		var m pgproto3.Describe
		if err := m.Decode(body); err != nil {
			return nil, pgmsg.Err(pgmsg.CodeProtocolViolation, "invalid Describe message")
		}
		var cmd string
		var formats []int16
		if m.ObjectType == pgmsg.TargetStatement {
			c, ok := a.stmts[m.Name]
			if !ok {
				return nil, pgmsg.Err(pgmsg.CodeInvalidStatementName, fmt.Sprintf("prepared statement %q does not exist", m.Name))
			}
			cmd = c
			out = pgmsg.AppendNoParameters(out)
		} else {
			p, ok := a.portals[m.Name]
			if !ok {
				return nil, pgmsg.Err(pgmsg.CodeInvalidCursorName, fmt.Sprintf("portal %q does not exist", m.Name))
			}
			cmd, formats = p.cmd, p.formats
		}
		cols := adminColumns(s, cmd)
		if cols == nil {
			return pgmsg.AppendEmpty(out, pgmsg.NoData), nil
		}
		return (&resultSet{cols: cols}).rowDescription(out, formats), nil
	case pgmsg.Execute:
		var m pgproto3.Execute
		if err := m.Decode(body); err != nil {
			return nil, pgmsg.Err(pgmsg.CodeProtocolViolation, "invalid Execute message")
		}
		p, ok := a.portals[m.Portal]
		if !ok {
			return nil, pgmsg.Err(pgmsg.CodeInvalidCursorName, fmt.Sprintf("portal %q does not exist", m.Portal))
		}
		if p.cmd == "" {
			return pgmsg.AppendEmpty(out, pgmsg.EmptyQueryResponse), nil
		}
		res := p.rest
		if res == nil {
			var pe *pgmsg.Error
			if res, pe = s.runAdmin(p.cmd); pe != nil {
				return nil, pe
			}
			if n := len(p.formats); n > 1 && n != len(res.cols) {
				return nil, pgmsg.Err(pgmsg.CodeProtocolViolation,
					fmt.Sprintf("bind message has %d result formats but query has %d columns", n, len(res.cols)))
			}
		}
		if m.MaxRows > 0 && len(res.rows) > int(m.MaxRows) {
			part := &resultSet{cols: res.cols, rows: res.rows[:m.MaxRows]}
			p.rest = &resultSet{cols: res.cols, rows: res.rows[m.MaxRows:], tag: res.tag}
			a.portals[m.Portal] = p
			out = part.dataRows(out, p.formats)
			return pgmsg.AppendEmpty(out, pgmsg.PortalSuspended), nil
		}
		p.rest = nil
		a.portals[m.Portal] = p
		out = res.dataRows(out, p.formats)
		return pgmsg.AppendCommandComplete(out, res.tag), nil
	case pgmsg.Close:
		var m pgproto3.Close
		if err := m.Decode(body); err != nil {
			return nil, pgmsg.Err(pgmsg.CodeProtocolViolation, "invalid Close message")
		}
		if m.ObjectType == pgmsg.TargetStatement {
			delete(a.stmts, m.Name)
		} else {
			delete(a.portals, m.Name)
		}
		return pgmsg.AppendEmpty(out, pgmsg.CloseComplete), nil
	}
	return nil, nil
}

// adminColumns are the columns cmd answers with; nil for a command without
// rows.
func adminColumns(s *session, cmd string) []column {
	c, ok := adminCommand(cmd)
	if !ok || c.show == nil {
		return nil
	}
	return c.show(s).cols
}

// splitCommands splits an admin query at semicolons (admin commands have no
// quoted text) and drops empty ones.
func splitCommands(sql string) []string {
	var out []string
	for _, part := range strings.Split(sql, ";") {
		if p := strings.Join(strings.Fields(part), " "); p != "" {
			out = append(out, p)
		}
	}
	return out
}

// adminCmd is one admin console command: show builds a row set; run does
// something and returns the command tag.
type adminCmd struct {
	show func(*session) *resultSet
	run  func(*session) (string, *pgmsg.Error)
}

// adminCommand looks cmd up (case-insensitive, single spaces).
func adminCommand(cmd string) (adminCmd, bool) {
	key := strings.ToUpper(cmd)
	if strings.HasPrefix(key, "SET ") {
		// Drivers send SETs at connect (JDBC: extra_float_digits,
		// application_name); they mean nothing here and are accepted.
		return adminCmd{run: func(*session) (string, *pgmsg.Error) { return "SET", nil }}, true
	}
	// Transaction control from drivers with autocommit off (JDBC) is
	// accepted too: the console has no transactions.
	for _, tx := range [][2]string{{"BEGIN", "BEGIN"}, {"START TRANSACTION", "BEGIN"}, {"COMMIT", "COMMIT"}, {"END", "COMMIT"}, {"ROLLBACK", "ROLLBACK"}} {
		if key == tx[0] {
			tag := tx[1]
			return adminCmd{run: func(*session) (string, *pgmsg.Error) { return tag, nil }}, true
		}
	}
	return adminCommandByName(key)
}

func unknownAdminCommand(cmd string) *pgmsg.Error {
	pe := pgmsg.Err(pgmsg.CodeSyntaxError, fmt.Sprintf("unknown admin console command: %q", cmd))
	pe.Detail = "The admin console takes SHOW HELP|POOLS|STATS|SERVERS|CLIENTS|DATABASES|CONFIG|NODES|QUERIES|VERSION, RELOAD, PAUSE, RESUME, SHUTDOWN, RESET STATS."
	return pe
}

// runAdmin runs one command.
func (s *session) runAdmin(cmd string) (*resultSet, *pgmsg.Error) {
	c, ok := adminCommand(cmd)
	if !ok {
		return nil, unknownAdminCommand(cmd)
	}
	if c.show != nil {
		res := c.show(s)
		res.tag = "SHOW"
		return res, nil
	}
	tag, pe := c.run(s)
	if pe != nil {
		return nil, pe
	}
	switch tag {
	case "SET", "BEGIN", "COMMIT", "ROLLBACK":
	default:
		s.log.Info("admin command", zap.String("command", strings.ToUpper(cmd)))
	}
	return &resultSet{tag: tag}, nil
}

// A resultSet is a command's answer: columns, rows and the command tag.
type resultSet struct {
	cols []column
	rows [][]any // int64, float64, string, bool, time.Time or nil
	tag  string
}

type column struct {
	name string
	oid  uint32
}

// Column types the console answers with.
const (
	oidBool        = 16
	oidInt8        = 20
	oidText        = 25
	oidFloat8      = 701
	oidTimestamptz = 1184
)

func textCol(name string) column  { return column{name, oidText} }
func intCol(name string) column   { return column{name, oidInt8} }
func floatCol(name string) column { return column{name, oidFloat8} }
func boolCol(name string) column  { return column{name, oidBool} }
func timeCol(name string) column  { return column{name, oidTimestamptz} }

// format returns the result format of column i from Bind's codes (none:
// text; one: all columns; else per column).
func format(formats []int16, i int) int16 {
	switch len(formats) {
	case 0:
		return 0
	case 1:
		return formats[0]
	}
	if i < len(formats) {
		return formats[i]
	}
	return 0
}

func (r *resultSet) rowDescription(out []byte, formats []int16) []byte {
	out, start := pgmsg.Begin(out, pgmsg.RowDescription)
	out = binary.BigEndian.AppendUint16(out, uint16(len(r.cols)))
	for i, c := range r.cols {
		out = append(out, c.name...)
		out = append(out, 0)
		out = binary.BigEndian.AppendUint32(out, 0) // table OID
		out = binary.BigEndian.AppendUint16(out, 0) // column number
		out = binary.BigEndian.AppendUint32(out, c.oid)
		size := int16(-1)
		switch c.oid {
		case oidInt8, oidFloat8, oidTimestamptz:
			size = 8
		case oidBool:
			size = 1
		}
		out = binary.BigEndian.AppendUint16(out, uint16(size))
		out = binary.BigEndian.AppendUint32(out, math.MaxUint32) // type modifier -1
		out = binary.BigEndian.AppendUint16(out, uint16(format(formats, i)))
	}
	return pgmsg.Finish(out, start)
}

// pgEpoch is PostgreSQL's timestamp zero.
var pgEpoch = time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)

func (r *resultSet) dataRows(out []byte, formats []int16) []byte {
	for _, row := range r.rows {
		var start int
		out, start = pgmsg.Begin(out, pgmsg.DataRow)
		out = binary.BigEndian.AppendUint16(out, uint16(len(row)))
		for i, v := range row {
			bin := format(formats, i) == 1
			var val []byte
			isNull := false
			switch x := v.(type) {
			case nil:
				isNull = true
			case string:
				val = []byte(x)
			case int64:
				if bin {
					val = binary.BigEndian.AppendUint64(nil, uint64(x))
				} else {
					val = strconv.AppendInt(nil, x, 10)
				}
			case float64:
				if bin {
					val = binary.BigEndian.AppendUint64(nil, math.Float64bits(x))
				} else {
					val = strconv.AppendFloat(nil, x, 'f', -1, 64)
				}
			case bool:
				switch {
				case bin && x:
					val = []byte{1}
				case bin:
					val = []byte{0}
				case x:
					val = []byte("t")
				default:
					val = []byte("f")
				}
			case time.Time:
				if x.IsZero() {
					isNull = true
				} else if bin {
					val = binary.BigEndian.AppendUint64(nil, uint64(x.Sub(pgEpoch).Microseconds()))
				} else {
					val = []byte(x.UTC().Format("2006-01-02 15:04:05.000000") + "+00")
				}
			default:
				val = []byte(fmt.Sprint(x))
			}
			if isNull {
				out = binary.BigEndian.AppendUint32(out, math.MaxUint32)
				continue
			}
			out = binary.BigEndian.AppendUint32(out, uint32(len(val)))
			out = append(out, val...)
		}
		out = pgmsg.Finish(out, start)
	}
	return out
}
