package proxy

import (
	"fmt"
	"time"

	"github.com/pgsplit/pgsplit/config"
	"github.com/pgsplit/pgsplit/internal/pgmsg"
	"github.com/pgsplit/pgsplit/router"
)

// defaultMaxBatch is how much of an extended-protocol batch pgsplit holds
// back to route it as a whole when limits.max_batch_bytes is not set (a
// session built in a unit test). A larger batch (big Bind parameters, say),
// or one whose end has not arrived when the client stops sending, is sent
// to the primary without waiting for its end.
const defaultMaxBatch = 1 << 20

// batchKeep is the largest batch buffer kept between batches.
const batchKeep = 4 << 20

// batch is an extended-protocol batch being collected until Sync or Flush.
type batch struct {
	buf    []byte   // raw messages
	parses []string // statement names parsed in the batch, in order
	// The client's statements as each message saw them (a later Parse may
	// reuse a name), and the server names parsed or used so far: a Parse
	// must not reuse one of those (42P05, or a statement the batch needs).
	parsed     []*clientStmt
	referenced []*clientStmt
	seen       map[string]bool
	// unnamedGone: the batch uses the unnamed statement, which the client
	// has not prepared (injectStatements closes the server's first).
	unnamedGone bool
	renamed     int                    // the last suffix a Parse was renamed with (see appendExtended)
	books       int                    // bytes of seen's names and of portals (limits.max_batch_bytes)
	refs        []string               // statement names used by Bind or Describe
	portals     map[string]boundPortal // portal → what Bind bound to it
	execs       []execution            // what the batch's Executes run
	reason      string
	primary     bool // something in the batch needs the primary
	large       bool // over the batch limit or incomplete: streaming to the primary
}

// empty reports whether no message of a batch is being collected.
func (b *batch) empty() bool { return len(b.buf) == 0 && len(b.execs) == 0 }

func (b *batch) reset() {
	b.buf = b.buf[:0]
	b.parses = b.parses[:0]
	b.parsed, b.referenced = b.parsed[:0], b.referenced[:0]
	clear(b.seen)
	b.renamed, b.books = 0, 0
	b.refs = b.refs[:0]
	b.execs = b.execs[:0]
	clear(b.portals)
	b.primary, b.large, b.unnamedGone = false, false, false
	b.reason = ""
	if cap(b.buf) > batchKeep {
		b.buf = nil
	}
	if len(b.seen) > 1024 {
		b.seen = nil // a map does not shrink: do not keep a flood's
	}
	if len(b.portals) > 1024 {
		b.portals = nil
	}
}

// sent forgets the messages of a streaming batch already sent: only the
// streaming flag, the portals (a later streamed Execute runs what a Bind
// sent earlier bound, and is logged and registered as a write by it) and
// the names seen outlive them, to the Sync.
func (b *batch) sent() {
	b.buf, b.parses, b.refs, b.primary = b.buf[:0], b.parses[:0], b.refs[:0], false
	b.parsed, b.referenced = b.parsed[:0], b.referenced[:0]
	b.execs = b.execs[:0]
}

// boundPortal is what a Bind bound to a portal: the client's statement
// (nil: unknown) and, under log.explain_slow, its parameters.
type boundPortal struct {
	stmt   *clientStmt
	params *bindParams
}

// execution is an Execute of the batch: the statement its portal was bound
// to, its parameters if kept, and when it arrived.
type execution struct {
	stmt   *clientStmt
	params *bindParams
	at     time.Time
}

// appendExtended adds one client message to the batch, with statement
// names rewritten to the servers' names, and records what it means for
// routing and for the client's statement registry.
func (s *session) appendExtended(typ byte, body []byte) error {
	b := &s.batch
	var start int
	b.buf, start = pgmsg.Begin(b.buf, typ)
	switch typ {
	case pgmsg.Parse:
		name, rest, ok := cut(body)
		sql, _, ok2 := cut(rest)
		if !ok || !ok2 {
			return pgmsg.Fatal(pgmsg.CodeProtocolViolation, "invalid Parse message")
		}
		if err := s.roomForStatement(name, len(body)); err != nil {
			return err
		}
		if old := s.stmts[name]; name != "" && old != nil && old.confirmed.Load() {
			// PostgreSQL refuses a Parse of a name in use (whatever the
			// SQL); pgsplit's servers would not, as they know the
			// statement by another name.
			pe := pgmsg.Err(pgmsg.CodeDuplicatePreparedStatement, fmt.Sprintf("prepared statement %q already exists", name))
			if err := s.abortTransaction(pe); err != nil {
				return err
			}
			return pe
		}
		cs := &clientStmt{sql: sql, class: s.cls.Classify(sql), gen: s.cls.Generation()}
		if cs.class.Unparsed {
			s.noteUnparsed(cs.class, len(sql))
		}
		if router.SignalsBackend(cs.class) {
			return s.refuseBackendSignal()
		}
		if cs.class.FreesDatabase != "" {
			s.srv.freeDatabase(cs.class.FreesDatabase)
		}
		if name != "" {
			cs.server = serverStmtName(rest)
			for b.seen[cs.server] {
				// The batch parsed or uses that name already (the same
				// statement under two client names, or a name parsed
				// again after the client closed it): another name. The
				// suffix only grows within a batch, so a flood of one
				// name costs one hash per Parse.
				b.renamed++
				cs.server = serverStmtName(append(append([]byte(nil), rest...), fmt.Sprintf("\x00%d", b.renamed)...))
			}
			b.see(cs.server)
		}
		b.parsed = append(b.parsed, cs)
		b.buf = append(append(append(b.buf, cs.server...), 0), rest...)
		cs.parse = pgmsg.Finish(append([]byte(nil), b.buf[start:]...), 0)
		s.keepStatement(name, cs)
		b.parses = append(b.parses, name)
		s.noteClass(cs.class)
	case pgmsg.Bind:
		portal, rest, ok := cut(body)
		name, params, ok2 := cut(rest)
		if !ok || !ok2 {
			return pgmsg.Fatal(pgmsg.CodeProtocolViolation, "invalid Bind message")
		}
		cs := s.noteRef(name)
		if b.portals == nil {
			b.portals = map[string]boundPortal{}
		}
		if _, ok := b.portals[portal]; !ok {
			b.books += len(portal) + 64 // with the map entry
		}
		bp := boundPortal{stmt: cs}
		if qc := s.srv.qlog.cfg.Load(); qc.ExplainSlow && qc.Queries != config.QueriesOff && bp.stmt != nil && explainable(s.classOf(bp.stmt)) {
			// Should this Execute be slow, the explainer binds the same
			// values. Copied here (not at the Execute): the Bind may have
			// been streamed in an earlier message.
			bp.params = &bindParams{parse: bp.stmt.parse, bind: append([]byte(nil), body...)}
			b.books += len(body)
		}
		b.portals[portal] = bp
		b.buf = append(append(b.buf, portal...), 0)
		b.buf = append(append(b.buf, serverName(cs, name)...), 0)
		b.buf = append(b.buf, params...)
	case pgmsg.Describe:
		if len(body) > 0 && body[0] == pgmsg.TargetStatement {
			name, _, _ := cut(body[1:])
			cs := s.noteRef(name)
			b.buf = append(append(append(b.buf, pgmsg.TargetStatement), serverName(cs, name)...), 0)
			break
		}
		b.buf = append(b.buf, body...)
	case pgmsg.Execute:
		if bp := b.portals[cstring(body)]; bp.stmt != nil {
			b.execs = append(b.execs, execution{bp.stmt, bp.params, s.msgAt})
		}
		b.buf = append(b.buf, body...)
	case pgmsg.Close:
		if len(body) > 0 && body[0] == pgmsg.TargetStatement {
			// The servers keep the statement for other clients; the
			// client's name is unknown to them, so its Close is answered
			// CloseComplete with no effect.
			name, _, _ := cut(body[1:])
			delete(s.stmts, name)
		}
		b.buf = append(b.buf, body...)
	default:
		b.buf = append(b.buf, body...)
	}
	b.buf = pgmsg.Finish(b.buf, start)
	return nil
}

// see records a server statement name the batch parsed or uses.
func (b *batch) see(name string) {
	if b.seen == nil {
		b.seen = map[string]bool{}
	}
	if !b.seen[name] {
		b.seen[name] = true
		b.books += len(name) + 64 // with the map entry
	}
}

func (s *session) noteRef(name string) *clientStmt {
	cs := s.stmts[name]
	b := &s.batch
	for _, p := range b.parses {
		if p == name {
			return cs
		}
	}
	b.refs = append(b.refs, name)
	if cs != nil {
		b.referenced = append(b.referenced, cs)
		if cs.server != "" {
			b.see(cs.server)
		}
		s.noteClass(s.classOf(cs))
	} else {
		b.primary = true // unknown statement: let the primary report the error
		b.reason = "unknown prepared statement"
		// The server's unnamed statement may be another client's: it is
		// closed first, so the server answers 26000 as it would this
		// client alone.
		b.unnamedGone = b.unnamedGone || name == ""
	}
	return cs
}

func (s *session) noteClass(st router.Statement) {
	b := &s.batch
	if st.Target != router.Replica || st.Hint == router.Primary {
		if !b.primary {
			b.reason = st.Reason
			if st.Hint == router.Primary {
				b.reason = "hint pgsplit:primary"
			}
		}
		b.primary = true
		return
	}
	if b.reason == "" {
		b.reason = st.Reason
	}
}
