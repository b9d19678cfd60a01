package proxy

import (
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pgsplit/pgsplit/internal/pgmsg"

	"github.com/pgsplit/pgsplit/pool"
	"github.com/pgsplit/pgsplit/router"
)

// upstream is one server connection attached to a session, with the pump
// goroutine that relays its answers to the client.
//
// Ownership: the session goroutine owns the connection's writer and the
// fields marked "session goroutine"; the pump owns the reader. The atomic
// counters are shared between the two.
type upstream struct {
	target router.Target
	conn   *pool.Conn
	pool   *pool.Pool
	ep     endpoint // the server it is connected to

	// Read-your-writes (under recMu): what statements sent here may have
	// written, by the ReadyForQuery that ends each, and what the open
	// transaction wrote so far (see noteCommit).
	writes  []writeScope
	txWrote writeScope
	wrote   atomic.Bool // writes or txWrote are not empty (read without recMu)

	pending  atomic.Int32  // Query/Sync/FunctionCall sent, ReadyForQuery not yet seen
	txStatus atomic.Uint32 // status byte of this connection's last ReadyForQuery
	// Answers to statements pgsplit sent itself, which the client must not
	// see: everything up to and including dropZ ReadyForQuery messages, and
	// dropParse ParseComplete / dropClose CloseComplete messages.
	dropZ     atomic.Int32
	dropParse atomic.Int32
	dropClose atomic.Int32
	// expectErr counts the ErrorResponses among those dropped answers that
	// pgsplit provoked on purpose (see abortTransaction): not logged.
	expectErr atomic.Int32

	// Safety net: while watch is not watchOff, the pump looks at the first
	// answer to the statement just sent. If the session still waits
	// (watchWaiting) and the answer is a 25006 (read_only_sql_transaction)
	// refusal, the pump drops it and says so on verdict; if the session gave
	// up waiting (watchAbandoned), the answer goes to the client as it is.
	watch   atomic.Int32
	verdict chan bool
	// lost: the server ended the connection while it owed the client
	// nothing, and the session held it (it may have sent something since;
	// see idleEnded), or while the safety net waited for the first answer;
	// then rerun is set too and verdict says retry: nothing reached the
	// client, so the session runs the statement again elsewhere.
	lost, rerun atomic.Bool

	stopping atomic.Bool   // the session is stopping the pump on purpose
	exited   chan struct{} // closed when the pump has ended
	err      error         // the pump's result, set before exited is closed

	unsynced atomic.Bool // extended-protocol messages sent since the last Sync

	// resetOnRelease: the session was pinned to this connection and let go
	// of the state (UNLISTEN, DISCARD TEMP…); whether that worked is not
	// known here, so the connection is reset with DISCARD ALL before it
	// serves anyone else.
	resetOnRelease atomic.Bool
	// userCode: a statement sent here ran code pgsplit cannot see into (a
	// function, DO, CALL: router.Classifier.RunsUserCode), which may have
	// left session state no statement named; the connection gets
	// pool.Conn.SoftReset before it serves anyone else.
	userCode atomic.Bool

	// Query-log records of statements sent here whose answers are not all
	// relayed yet, in order (recMu: the session appends, the pump
	// completes). sent counts the ReadyForQuery messages the client will
	// get from here (session goroutine only); zSeen those relayed (pump).
	recMu sync.Mutex
	recs  []*queryRecord
	sent  int64
	zSeen int64
	// batchStart is the earliest start of the records answered since the
	// last ReadyForQuery (pump, under recMu).
	batchStart time.Time
	// parsedBatches: the named statements each batch sent here parsed, by
	// the ReadyForQuery that ends it (under recMu); a batch answered with
	// no ErrorResponse (answerErr, pump) confirms them: the server has
	// them, so a Parse of the same name again must fail (42P05).
	parsedBatches []parsedBatch
	parsing       atomic.Bool // parsedBatches is not empty (read without recMu)
	answerErr     bool

	// hold says who may use the connection; see the hold* constants. Under
	// transaction pooling the pump gives the connection back to the pool at
	// a ReadyForQuery that leaves it idle, unless the session is using it.
	hold atomic.Int32

	// errs counts the ErrorResponses relayed to the client, rollbacks the
	// transactions that ended rolled back (see tentative).
	errs      atomic.Int64
	rollbacks atomic.Int64
	// errsMark and rollbacksMark are errs and rollbacks just before the
	// session sent its latest statement (session goroutine only).
	errsMark, rollbacksMark int64
	// syncFailed: a statement pgsplit sent to replay settings failed, so
	// the connection's record of its settings cannot be trusted.
	syncFailed atomic.Bool

	// failed is set by the pump at every ErrorResponse: a statement
	// prepared since the last check may not exist (see settleStatements).
	failed atomic.Bool
	// unconfirmed lists the statements prepared on the connection whose
	// answers are not all in yet; used by whoever holds the connection
	// (the session while claimed, the pump while deciding to release).
	unconfirmed []string
}

// States of upstream.watch.
const (
	watchOff int32 = iota
	watchWaiting
	watchAbandoned
)

// States of upstream.hold. The session goroutine claims its connections
// (holdFree → holdSending) while it handles a client message and frees them
// afterwards; the pump, or the session itself when it frees one, may give an
// idle one back (holdFree → holdReleased). holdDeciding is the pump's short
// look at whether it may.
const (
	holdFree int32 = iota
	holdSending
	holdDeciding
	holdReleased
)

// errReleased ends a pump whose connection went back to the pool.
var errReleased = errors.New("connection returned to the pool")

func newUpstream(t router.Target, c *pool.Conn, p *pool.Pool, ep endpoint) *upstream {
	u := &upstream{target: t, conn: c, pool: p, ep: ep, exited: make(chan struct{}), verdict: make(chan bool, 1)}
	u.txStatus.Store(pgmsg.TxIdle)
	u.hold.Store(holdSending) // acquired by the session goroutine, which uses it now
	return u
}

// markSend notes the error and rollback counts before a client statement is
// written (see tentative).
func (u *upstream) markSend() { u.errsMark, u.rollbacksMark = u.errs.Load(), u.rollbacks.Load() }

// owesAnswers reports whether a statement or batch is still running here.
func (u *upstream) owesAnswers() bool { return u.pending.Load() > 0 || u.unsynced.Load() }

// quietIdle reports whether the connection is idle between transactions:
// nothing owed, nothing injected pending, no transaction open.
func (u *upstream) quietIdle() bool {
	return u.quiet() && byte(u.txStatus.Load()) == pgmsg.TxIdle && u.watch.Load() == watchOff
}

// quiet reports that u owes nothing: no answer to the client's messages,
// none to pgsplit's own statements.
func (u *upstream) quiet() bool { return !u.owesAnswers() && u.dropZ.Load() == 0 }

// lostOwing reports whether u's server went away after the session sent
// it something that is not re-run elsewhere: the client must be told.
func (u *upstream) lostOwing() bool {
	return u.lost.Load() && !u.rerun.Load() && u.owesAnswers() && u.watch.Load() != watchWaiting
}
