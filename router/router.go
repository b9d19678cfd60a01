// Package router decides where each statement runs. It does no I/O: it sees
// the statement (and, later, the session's state) and returns a Target.
//
// Classification is conservative: a statement goes to a replica only when the
// router can prove it reads and nothing else. A write that reaches a replica is
// a correctness bug; a read that stays on the primary is only a missed offload.
//
// A Classifier answers in three steps, cheapest first:
//
//  1. a pure-Go fast path (fastpath.go) that settles the common single
//     SELECT/VALUES/TABLE/SHOW from tokens alone and only ever answers Replica;
//  2. a bounded cache of earlier full classifications, keyed by the exact text;
//  3. the real PostgreSQL parser (pg_query_go), whose whole tree is walked
//     (parse.go, walk.go, funcs.go).
//
// Statements whose route depends on the session — transaction control, SET,
// cursors, prepared statements — are classified (Kind, Tx, Pins, SetName…) but
// their Target is left to the session logic; see Statement.BySession.
package router

import "strings"

// Target is where a statement (or a whole session) is sent.
//
// The zero value is Primary, so a Target that was never set is the safe one.
type Target int

const (
	// Primary is the read-write server.
	Primary Target = iota
	// Replica is any streaming replica in rotation.
	Replica
)

// HintNone is Statement.Hint when the statement carries no routing hint.
const HintNone Target = -1

func (t Target) String() string {
	switch t {
	case Primary:
		return "primary"
	case Replica:
		return "replica"
	case HintNone:
		return "none"
	}
	return "unknown"
}

// TxOptions are the transaction characteristics named by BEGIN, START
// TRANSACTION, SET TRANSACTION or SET SESSION CHARACTERISTICS. A nil pointer
// or empty string means "not specified" (the session default applies).
type TxOptions struct {
	ReadOnly   *bool
	Isolation  string // "read uncommitted", "read committed", "repeatable read", "serializable" or ""
	Deferrable *bool
}

// Statement is what the router knows about one SQL string, which may hold
// several statements separated by ';'.
//
// A Statement returned by Classify may share its slices with the classifier's
// cache and with other callers: treat it as read-only.
type Statement struct {
	// Kind is what the statement is; KindMulti when the string holds more
	// than one statement (Kinds then lists them in order).
	Kind Kind
	// Target is Replica only when the statement is proven read-only and its
	// route does not depend on the session; Primary otherwise.
	Target Target
	// Reason says in a few words why Target was chosen, for logs and for
	// `pgsplit classify`: "select without locking clause", "calls nextval()",
	// "writable CTE (INSERT)", "SELECT … FOR UPDATE", "DDL: CREATE TABLE",
	// "parse error: …".
	Reason string
	// Hint is the route asked for by a leading /* pgsplit:primary */ or
	// /* pgsplit:replica */ comment, HintNone without one. The classifier
	// reports it; the session decides whether to honour it (a replica hint on
	// a statement that needs the primary is overridden).
	Hint Target
	// ReadOnly is true when the statement changes no data and can run on a hot
	// standby without error (for example BEGIN, SAVEPOINT, FETCH, SET
	// statement_timeout, or any Replica statement). It matters for the
	// statements whose route the session decides.
	ReadOnly bool
	// BySession is true when Target is only a placeholder (Primary) because the
	// route depends on the session: transaction control, SET/RESET, DISCARD,
	// cursors, PREPARE/EXECUTE/DEALLOCATE, pgsplit's own settings.
	BySession bool
	// Tx holds the transaction options for KindBegin, KindStartTransaction,
	// KindSetTransaction and KindSetSessionCharacteristics; nil otherwise.
	Tx *TxOptions
	// Pins names the session state this statement creates that later
	// statements may depend on, so they must follow it to the same server:
	// "temp table", "temp sequence", "temp function", "listen",
	// "advisory lock" (session-level pg_advisory_lock*), "prepare" (SQL
	// PREPARE), "cursor with hold", "nextval" (for a later currval/lastval),
	// "set_config" (session-level set_config), and "set search_path",
	// "set role", "set session_authorization",
	// "set default_transaction_read_only", "set default_transaction_isolation"
	// (only when set to serializable, which a hot standby refuses).
	Pins []string
	// Unpins names the state this statement releases: "all" (DISCARD ALL),
	// "listen" (UNLISTEN *), "advisory lock" (pg_advisory_unlock_all()),
	// "prepare" (DEALLOCATE ALL), "cursor with hold" (CLOSE ALL),
	// "temp table" and "temp sequence" (DISCARD TEMP), "nextval" (DISCARD
	// SEQUENCES), and "set <name>" for RESET or SET … TO DEFAULT of a pinning
	// setting (RESET ALL releases the settings it resets).
	Unpins []string
	// SetName is the lower-case parameter name of a SET, RESET or SHOW
	// ("pgsplit.route" included; "all" for RESET ALL and SHOW ALL;
	// "transaction", "session characteristics" and "transaction snapshot" for
	// those forms of SET).
	SetName string
	// SetValue is the value of a SET as plain text, list elements joined by
	// ", " ("UTC", "public, app", "5s"); empty for RESET and SET … TO DEFAULT.
	SetValue string
	// SetValueSQL is the same value written as SQL (strings quoted), ready for
	// `SET name TO <SetValueSQL>` on another connection; empty when the value
	// has a form the router does not render (SET TIME ZONE INTERVAL …).
	SetValueSQL string
	// SetDefault is true for SET … TO DEFAULT, which acts as RESET.
	SetDefault bool
	// PreparedName is the statement a DEALLOCATE names (empty for
	// DEALLOCATE ALL).
	PreparedName string
	// SetLocal is true for SET LOCAL (and set_config(…, true) is not a SET).
	SetLocal bool
	// Funcs lists the functions named in the statement, as PostgreSQL folds
	// them (lower-case unless quoted), schema-qualified as written: "public.f"
	// or "f". Each appears once. A full parse also lists the functions that
	// syntax stands for (EXTRACT is pg_catalog.extract, AT TIME ZONE is
	// pg_catalog.timezone), which the fast path does not see.
	Funcs []string
	// Statements is the number of statements in the string (0 when it could
	// not be parsed).
	Statements int
	// Kinds lists each statement's Kind in order when Statements > 1.
	Kinds []Kind
	// Unparsed is true when the statement was kept from the parser as too
	// large or too deep (see Parsable): Reason says which.
	Unparsed bool
	// FreesDatabase names the database a statement needs no one else
	// connected to: DROP DATABASE, ALTER DATABASE … RENAME, and CREATE
	// DATABASE … TEMPLATE. A pooler must close its idle connections to it
	// first, or PostgreSQL refuses (55006 "being accessed by other users").
	FreesDatabase string
}

// Session state names in Statement.Pins and Unpins ("set <name>" for a
// pinning setting comes from the SET's name).
const (
	PinTempTable      = "temp table"
	PinTempSequence   = "temp sequence"
	PinTempFunction   = "temp function"
	PinListen         = "listen"
	PinAdvisoryLock   = "advisory lock"
	PinPrepare        = "prepare"
	PinCursorWithHold = "cursor with hold"
	PinNextval        = "nextval"
	PinSetConfig      = "set_config"
)

// BindsConnection reports whether a pin is state that lives in one server
// backend and cannot be carried to another: LISTEN, session advisory locks,
// temporary objects, WITH HOLD cursors, SQL-level PREPARE, session-level
// set_config, SET ROLE / SESSION AUTHORIZATION. The other pins
// (search_path, default_transaction_*, nextval) only keep reads on the
// primary: a pooler can replay those settings on any connection.
func BindsConnection(pin string) bool {
	switch pin {
	case PinListen, PinAdvisoryLock, PinTempTable, PinTempSequence, PinTempFunction,
		PinCursorWithHold, PinPrepare, PinSetConfig, "set role", "set session_authorization":
		return true
	}
	return false
}

// SignalsBackend reports whether st calls pg_cancel_backend or
// pg_terminate_backend. Through a pooler the backend pids a client sees
// (pg_backend_pid(), pg_stat_activity) belong to server connections that
// serve other clients too, on whichever server answered: such a call can
// stop another client's statement or session, so pgsplit refuses it.
func SignalsBackend(st Statement) bool {
	for _, f := range st.Funcs {
		switch strings.TrimPrefix(f, "pg_catalog.") {
		case "pg_cancel_backend", "pg_terminate_backend":
			return true
		}
	}
	return false
}
