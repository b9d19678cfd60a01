package pgmsg

import "github.com/jackc/pgx/v5/pgproto3"

// SQLSTATE codes pgsplit sends itself.
const (
	CodeProtocolViolation               = "08P01"
	CodeConnectionFailure               = "08006"
	CodeCannotConnect                   = "08001"
	CodeInvalidAuthSpec                 = "28000"
	CodeInvalidPassword                 = "28P01"
	CodeFeatureNotSupported             = "0A000"
	CodeTooManyConnections              = "53300"
	CodeAdminShutdown                   = "57P01"
	CodeReadOnlyTransaction             = "25006"
	CodeInternalError                   = "XX000"
	CodeInvalidCatalogName              = "3D000"
	CodeDuplicatePreparedStatement      = "42P05"
	CodeCannotConnectNow                = "57P03"
	CodeInvalidStatementName            = "26000"
	CodeInvalidCursorName               = "34000"
	CodeSyntaxError                     = "42601"
	CodeQueryCanceled                   = "57014"
	CodeInvalidParameterValue           = "22023"
	CodeProgramLimitExceeded            = "54000"
	CodeIdleSessionTimeout              = "57P05"
	CodeObjectNotInPrerequisiteState    = "55000"
	CodeIdleInTransactionSessionTimeout = "25P03"
)

// Severities of an Error.
const (
	SeverityError = "ERROR" // the statement fails, the session goes on
	SeverityFatal = "FATAL" // the session ends
)

// Error is an error that reaches the client as an ErrorResponse.
type Error struct {
	Severity string // SeverityError or SeverityFatal
	Code     string // SQLSTATE
	Message  string
	Detail   string
	// LogDetail goes to pgsplit's log only, never to the client (as
	// PostgreSQL's errdetail_log).
	LogDetail string
}

func (e *Error) Error() string { return e.Code + ": " + e.Message }

// Fatal is an Error that ends the session.
func Fatal(code, msg string) *Error { return &Error{Severity: SeverityFatal, Code: code, Message: msg} }

// Err is an ERROR: the statement fails, the session goes on.
func Err(code, msg string) *Error { return &Error{Severity: SeverityError, Code: code, Message: msg} }

// IsFatal reports whether e ends the session.
func (e *Error) IsFatal() bool { return e.Severity == SeverityFatal }

// Response is e as pgproto3's ErrorResponse.
func (e *Error) Response() *pgproto3.ErrorResponse {
	return &pgproto3.ErrorResponse{
		Severity:            e.Severity,
		SeverityUnlocalized: e.Severity,
		Code:                e.Code,
		Message:             e.Message,
		Detail:              e.Detail,
	}
}

// Append appends e as an ErrorResponse.
func (e *Error) Append(buf []byte) []byte {
	out, err := e.Response().Encode(buf)
	if err != nil { // only for absurd field sizes; fall back to a bare message
		out, _ = (&pgproto3.ErrorResponse{Severity: e.Severity, SeverityUnlocalized: e.Severity, Code: e.Code, Message: "error"}).Encode(buf)
	}
	return out
}
