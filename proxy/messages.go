package proxy

import (
	"bufio"
	"encoding/binary"
	"iter"

	"github.com/jackc/pgx/v5/pgproto3"
)

// SQLSTATE codes pgsplit sends itself.
const (
	codeProtocolViolation   = "08P01"
	codeConnectionFailure   = "08006"
	codeCannotConnect       = "08001"
	codeInvalidAuthSpec     = "28000"
	codeInvalidPassword     = "28P01"
	codeFeatureNotSupported = "0A000"
	codeTooManyConnections  = "53300"
	codeAdminShutdown       = "57P01"
	codeReadOnlyTransaction = "25006"
	codeInternalError       = "XX000"
	codeInvalidCatalogName  = "3D000"

	codeDuplicatePreparedStatement = "42P05"
)

// pgError is an error that reaches the client as an ErrorResponse.
type pgError struct {
	severity string // ERROR or FATAL
	code     string
	msg      string
	detail   string
	// logDetail goes to pgsplit's log only, never to the client (as
	// PostgreSQL's errdetail_log).
	logDetail string
}

func (e *pgError) Error() string { return e.code + ": " + e.msg }

func fatal(code, msg string) *pgError { return &pgError{severity: "FATAL", code: code, msg: msg} }

// pgErr is an ERROR: the statement fails, the session goes on.
func pgErr(code, msg string) *pgError { return &pgError{severity: "ERROR", code: code, msg: msg} }

func (e *pgError) encode(buf []byte) []byte {
	m := pgproto3.ErrorResponse{
		Severity:            e.severity,
		SeverityUnlocalized: e.severity,
		Code:                e.code,
		Message:             e.msg,
		Detail:              e.detail,
	}
	out, err := m.Encode(buf)
	if err != nil { // only for absurd field sizes; fall back to a bare message
		out, _ = (&pgproto3.ErrorResponse{Severity: e.severity, SeverityUnlocalized: e.severity, Code: e.code, Message: "error"}).Encode(buf)
	}
	return out
}

// writeMsgs encodes msgs into w (not flushed).
func writeMsgs(w *bufio.Writer, msgs ...pgproto3.BackendMessage) error {
	var buf []byte
	for _, m := range msgs {
		var err error
		buf, err = m.Encode(buf[:0])
		if err != nil {
			return err
		}
		if _, err := w.Write(buf); err != nil {
			return err
		}
	}
	return nil
}

// readyForQuery is the 6-byte ReadyForQuery message with the given status.
// frames yields the type and body of each message in buf, which holds
// whole messages (a collected batch).
func frames(buf []byte) iter.Seq2[byte, []byte] {
	return func(yield func(byte, []byte) bool) {
		for len(buf) >= 5 {
			end := 1 + int(binary.BigEndian.Uint32(buf[1:5]))
			if !yield(buf[0], buf[5:end]) {
				return
			}
			buf = buf[end:]
		}
	}
}

func readyForQuery(status byte) []byte {
	return []byte{'Z', 0, 0, 0, 5, status}
}
