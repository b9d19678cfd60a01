// Package pgmsg names the PostgreSQL protocol's message types and encodes
// the few messages pgsplit writes itself (its own answers, errors and the
// admin console's rows); everything it relays passes through as raw frames
// (internal/wire) and is decoded with pgproto3 where a decision needs it.
//
// Frontend and backend types share byte values ('C' is Close from a client
// and CommandComplete from a server), so the constants carry the message's
// name, never the letter: compare typ == pgmsg.Sync, not typ == 'S'.
package pgmsg

// Frontend (client → server) message types.
const (
	Bind            = 'B'
	Close           = 'C'
	CopyData        = 'd'
	CopyDone        = 'c'
	CopyFail        = 'f'
	Describe        = 'D'
	Execute         = 'E'
	Flush           = 'H'
	FunctionCall    = 'F'
	Parse           = 'P'
	PasswordMessage = 'p' // also SASLInitialResponse and SASLResponse
	Query           = 'Q'
	Sync            = 'S'
	Terminate       = 'X'
)

// Backend (server → client) message types.
const (
	Authentication       = 'R'
	BackendKeyData       = 'K'
	BindComplete         = '2'
	CloseComplete        = '3'
	CommandComplete      = 'C'
	CopyInResponse       = 'G'
	CopyOutResponse      = 'H'
	CopyBothResponse     = 'W'
	DataRow              = 'D'
	EmptyQueryResponse   = 'I'
	ErrorResponse        = 'E'
	FunctionCallResponse = 'V'
	NoData               = 'n'
	NoticeResponse       = 'N'
	NotificationResponse = 'A'
	ParameterDescription = 't'
	ParameterStatus      = 'S'
	ParseComplete        = '1'
	PortalSuspended      = 's'
	ReadyForQuery        = 'Z'
	RowDescription       = 'T'
)

// Transaction status in ReadyForQuery.
const (
	TxIdle   = 'I' // not in a transaction block
	TxActive = 'T' // in a transaction block
	TxFailed = 'E' // in a failed transaction block
)

// What Describe and Close name.
const (
	TargetStatement = 'S'
	TargetPortal    = 'P'
)

// Answers to SSLRequest and GSSENCRequest.
const (
	SSLAccept = 'S'
	SSLRefuse = 'N'
)

// Ends reports whether a server message of type typ ends a statement's
// answer in the query log's sense: its completion, an error, an empty
// query, a suspended portal, or ReadyForQuery.
func Ends(typ byte) bool {
	switch typ {
	case CommandComplete, ErrorResponse, EmptyQueryResponse, PortalSuspended, ReadyForQuery:
		return true
	}
	return false
}

// Step reports whether a client message of type typ is a step of an
// extended-protocol batch: Parse, Bind, Describe, Execute or Close (the
// messages that Sync or Flush sends on their way).
func Step(typ byte) bool {
	switch typ {
	case Parse, Bind, Describe, Execute, Close:
		return true
	}
	return false
}

// Extended reports whether a client message of type typ belongs to the
// extended query protocol: a Step, Flush or Sync.
func Extended(typ byte) bool { return Step(typ) || typ == Flush || typ == Sync }
