package proxy

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"go.uber.org/zap"

	"github.com/pgsplit/pgsplit/internal/wire"
	"github.com/pgsplit/pgsplit/router"
)

// maxBatch is how much of an extended-protocol batch pgsplit holds back to
// route it as a whole. A larger batch (big Bind parameters, say), or one
// whose end has not arrived when the client stops sending, is sent to the
// primary without waiting for its end.
const maxBatch = 1 << 20

// clientStmt is a named (or the unnamed) prepared statement as the client
// created it with Parse.
type clientStmt struct {
	sql   string
	parse []byte           // the whole Parse message, to prepare it on another server
	class router.Statement // as classified at Parse time; see noteRef
}

// batch is an extended-protocol batch being collected until Sync or Flush.
type batch struct {
	buf     []byte   // raw messages
	parses  []string // statement names parsed in the batch, in order
	refs    []string // statement names used by Bind or Describe
	closes  []string // statement names closed by the client
	target  router.Target
	reason  string
	primary bool // something in the batch needs the primary
	started bool
	large   bool // over maxBatch: streaming to the primary
}

func (b *batch) reset() {
	b.buf = b.buf[:0]
	b.parses = b.parses[:0]
	b.refs = b.refs[:0]
	b.closes = b.closes[:0]
	b.primary, b.started, b.large = false, false, false
	b.reason = ""
	if cap(b.buf) > 4*maxBatch {
		b.buf = nil
	}
}

// relayClient reads the client's messages, routes each statement or batch
// to the primary or a replica, and forwards it, until the client leaves or
// the session is closed. It says why it stopped.
func (s *session) relayClient() string {
	for {
		typ, _, err := s.cr.Next()
		if err != nil {
			var fe *wire.FrameError
			if errors.As(err, &fe) {
				s.sendFatal(fatal(codeProtocolViolation, fe.Error()))
				return "protocol violation: " + fe.Error()
			}
			return "client connection closed"
		}
		switch typ {
		case 'X':
			return "client terminated"
		case 'Q':
			err = s.relayQuery()
		case 'P', 'B', 'D', 'E', 'C', 'H', 'S':
			err = s.relayExtended(typ)
		case 'F':
			// FunctionCall: a server function by OID, nothing to classify.
			err = s.forwardCurrent(router.Primary, "function call", typ)
		default:
			// COPY data and anything else belong to the statement running
			// on the active connection.
			err = s.forwardCurrent(s.activeTarget(), "", typ)
		}
		if err != nil {
			var pe *pgError
			if errors.As(err, &pe) && pe.severity == "FATAL" {
				s.sendFatal(pe)
			}
			return "relay client→server: " + err.Error()
		}
	}
}

func (s *session) activeTarget() router.Target {
	if s.active != nil {
		return s.active.target
	}
	return router.Primary
}

// relayQuery routes and forwards one simple-protocol Query.
func (s *session) relayQuery() error {
	body, err := s.cr.Body()
	if err != nil {
		return err
	}
	sql := string(bytes.TrimRight(body, "\x00"))
	st := s.cls.Classify(sql)
	s.settleSplit()
	d := s.decide(st)
	if d.local != nil {
		return s.answerLocally(d.local)
	}
	if s.split != nil || s.maySplit(st) {
		return s.relaySplit(body, sql, st)
	}
	u, err := s.switchTo(d.target)
	if err != nil {
		return err
	}
	s.log.Debug("route", zap.Stringer("to", u.target), zap.String("reason", d.reason))
	// Safety net: an autocommit statement on a replica that the replica
	// refuses as a write (25006) before answering anything else is run
	// again on the primary. Only when the client waits for this answer
	// (nothing pipelined behind it), so answers stay in order.
	watch := u.target == router.Replica && s.txTarget() == router.HintNone && s.cr.Buffered() == 0 &&
		st.Kind != router.KindBegin && st.Kind != router.KindStartTransaction
	if watch {
		u.watch.Store(watchWaiting)
	}
	u.pending.Add(1)
	delete(u.prepared, "") // a simple Query destroys the unnamed statement
	if err := s.cr.WriteBodyAfterHeader(u.conn.W, body); err != nil {
		return err
	}
	s.afterStatement(u, st)
	if err := s.flushIfIdle(u); err != nil || !watch {
		return err
	}
	if !s.awaitVerdict(u) {
		return nil
	}
	s.srv.misroutes.Add(1)
	s.log.Warn("misroute: a replica refused the statement as a write (25006); running it on the primary",
		zap.String("reason", d.reason))
	p, err := s.switchTo(router.Primary)
	if err != nil {
		return err
	}
	p.pending.Add(1)
	if err := s.cr.WriteBodyAfterHeader(p.conn.W, body); err != nil {
		return err
	}
	return p.conn.W.Flush()
}

// verdictWait bounds how long the safety net holds the session for the
// first answer of a statement on a replica: a replica refuses a write as
// soon as it starts it, while a long read must not stop pgsplit from
// reading the client (a Terminate, a client gone).
const verdictWait = 2 * time.Second

// awaitVerdict waits for the pump's look at the first answer from u, and
// reports whether the statement must run again on the primary.
func (s *session) awaitVerdict(u *upstream) bool {
	t := time.NewTimer(verdictWait)
	defer t.Stop()
	select {
	case retry := <-u.verdict:
		return retry
	case <-u.exited:
	case <-s.gone:
	case <-t.C:
	}
	if u.watch.CompareAndSwap(watchWaiting, watchAbandoned) {
		return false
	}
	// The pump decided meanwhile: take its verdict.
	select {
	case retry := <-u.verdict:
		return retry
	case <-u.exited:
		return false
	}
}

// forwardCurrent forwards the current message unchanged to the active
// connection (or to t when nothing is running).
func (s *session) forwardCurrent(t router.Target, reason string, typ byte) error {
	u := s.active
	if u == nil || !u.owesAnswers() {
		var err error
		if u, err = s.switchTo(t); err != nil {
			return err
		}
	}
	if typ == 'F' {
		u.pending.Add(1)
	}
	if err := s.cr.Forward(u.conn.W); err != nil {
		return err
	}
	return s.flushIfIdle(u)
}

func (s *session) flushIfIdle(u *upstream) error {
	if s.cr.Buffered() == 0 {
		return u.conn.W.Flush()
	}
	return nil
}

// relayExtended collects an extended-protocol batch until Sync or Flush,
// then routes it as a whole: to a replica only if every statement in it is
// read-only.
func (s *session) relayExtended(typ byte) error {
	b := &s.batch
	if b.large || (s.active != nil && s.active.unsynced.Load() && !b.started) {
		// Streaming a large batch, or continuing one the server is already
		// working on (after a Flush): it stays where it is.
		return s.streamExtended(typ)
	}
	body, err := s.cr.Body()
	if err != nil {
		return err
	}
	b.started = true
	start := len(b.buf)
	b.buf = append(b.buf, typ, 0, 0, 0, 0)
	binary.BigEndian.PutUint32(b.buf[start+1:], uint32(len(body)+4))
	b.buf = append(b.buf, body...)
	if err := s.noteExtended(typ, body, b.buf[start:]); err != nil {
		return err
	}
	complete := typ == 'S' || typ == 'H'
	if !complete && len(b.buf) <= maxBatch && s.cr.Buffered() > 0 {
		return nil // more of the batch is already here
	}
	if local, mixed := s.batchIsLocal(); local || mixed {
		err := s.answerBatchLocally(mixed)
		b.reset()
		return err
	}
	t := router.Replica
	if b.primary {
		t = router.Primary
	}
	if !complete {
		// The client sent part of a batch and may be waiting for answers
		// (PostgreSQL executes messages as they come), or the batch is
		// too large to hold: what follows is unknown and could be a
		// write, so the rest streams to the primary.
		b.large = true
		t, b.reason = router.Primary, "incomplete or large batch"
	}
	s.settleSplit()
	var d decision
	if s.split != nil {
		tt, err := s.splitBatch(t)
		if err != nil {
			b.reset()
			return err
		}
		d = decision{target: tt, reason: "split transaction"}
	} else {
		d = s.decideBatch(t, b.reason)
	}
	u, err := s.switchTo(d.target)
	if err != nil {
		b.reset()
		return err
	}
	if err := s.injectStatements(u, b); err != nil {
		return err
	}
	if _, err := u.conn.W.Write(b.buf); err != nil {
		return err
	}
	s.log.Debug("route batch", zap.Stringer("to", u.target), zap.String("reason", d.reason))
	if typ == 'S' {
		u.pending.Add(1)
		u.unsynced.Store(false)
	} else {
		u.unsynced.Store(true)
	}
	for _, name := range b.closes {
		delete(u.prepared, name)
	}
	for _, name := range b.parses {
		if cs, ok := s.stmts[name]; ok {
			u.prepared[name] = cs.sql
		}
	}
	large := b.large
	b.reset()
	b.large = large
	return s.flushIfIdle(u)
}

// streamExtended forwards an extended-protocol message straight to the
// active connection.
func (s *session) streamExtended(typ byte) error {
	u := s.active
	if typ == 'S' {
		u.pending.Add(1)
		u.unsynced.Store(false)
		s.batch.large = false
	} else {
		u.unsynced.Store(true)
	}
	if typ == 'P' || typ == 'C' {
		// Keep the statement registry right even when streaming.
		body, err := s.cr.Body()
		if err != nil {
			return err
		}
		msg := append([]byte{typ, 0, 0, 0, 0}, body...)
		binary.BigEndian.PutUint32(msg[1:], uint32(len(body)+4))
		if err := s.noteExtended(typ, body, msg); err != nil {
			return err
		}
		name := cstring(body)
		if typ == 'P' {
			u.prepared[name] = s.stmts[name].sql
		} else if len(body) > 0 && body[0] == 'S' {
			delete(u.prepared, cstring(body[1:]))
		}
		if _, err := u.conn.W.Write(msg); err != nil {
			return err
		}
		return s.flushIfIdle(u)
	}
	if err := s.cr.Forward(u.conn.W); err != nil {
		return err
	}
	return s.flushIfIdle(u)
}

// noteExtended records what a batch message means for routing and for the
// client's statement registry. msg is the whole message (kept for Parse).
func (s *session) noteExtended(typ byte, body, msg []byte) error {
	b := &s.batch
	switch typ {
	case 'P':
		name, rest, ok := cut(body)
		sql, _, ok2 := cut(rest)
		if !ok || !ok2 {
			return fatal(codeProtocolViolation, "invalid Parse message")
		}
		st := s.cls.Classify(sql)
		s.stmts[name] = &clientStmt{sql: sql, parse: append([]byte(nil), msg...), class: st}
		b.parses = append(b.parses, name)
		s.noteClass(st)
	case 'B':
		_, rest, ok := cut(body) // portal
		name, _, ok2 := cut(rest)
		if !ok || !ok2 {
			return fatal(codeProtocolViolation, "invalid Bind message")
		}
		s.noteRef(name)
	case 'D':
		if len(body) > 0 && body[0] == 'S' {
			name, _, _ := cut(body[1:])
			s.noteRef(name)
		}
	case 'C':
		if len(body) > 0 && body[0] == 'S' {
			name, _, _ := cut(body[1:])
			delete(s.stmts, name)
			b.closes = append(b.closes, name)
		}
	}
	return nil
}

func (s *session) noteRef(name string) {
	b := &s.batch
	for _, p := range b.parses {
		if p == name {
			return
		}
	}
	b.refs = append(b.refs, name)
	if cs, ok := s.stmts[name]; ok {
		// Classified again at each use (a cache hit): the catalog or the
		// configuration may have changed since the Parse.
		s.noteClass(s.cls.Classify(cs.sql))
	} else {
		b.primary = true // unknown statement: let the primary report the error
		b.reason = "unknown prepared statement"
	}
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

// injectStatements prepares on u, ahead of the batch, the statements the
// batch uses but u does not have, so a statement prepared on one server can
// be executed on another. Their answers are dropped by the pump.
func (s *session) injectStatements(u *upstream, b *batch) error {
	for _, name := range b.parses {
		if _, stale := u.prepared[name]; stale && name != "" {
			// The client closed this name on another server and parses it
			// again: close u's old copy first (closing is never an error).
			if err := s.injectClose(u, name); err != nil {
				return err
			}
		}
	}
	for _, name := range b.refs {
		cs, ok := s.stmts[name]
		if !ok {
			continue
		}
		if have, ok := u.prepared[name]; ok && have == cs.sql {
			continue
		}
		if name != "" {
			if err := s.injectClose(u, name); err != nil {
				return err
			}
		}
		u.dropParse.Add(1)
		if _, err := u.conn.W.Write(cs.parse); err != nil {
			return err
		}
		u.prepared[name] = cs.sql
	}
	return nil
}

func (s *session) injectClose(u *upstream, name string) error {
	msg := make([]byte, 0, 7+len(name))
	msg = append(msg, 'C', 0, 0, 0, 0, 'S')
	msg = append(append(msg, name...), 0)
	binary.BigEndian.PutUint32(msg[1:], uint32(len(msg)-1))
	u.dropClose.Add(1)
	delete(u.prepared, name)
	_, err := u.conn.W.Write(msg)
	return err
}

// switchTo makes t's connection the active one: it waits until the current
// one owes the client nothing (answers must reach the client in order),
// attaches a connection for t if the session has none, and brings its
// session settings up to date. A replica that cannot be reached falls back
// to the primary.
func (s *session) switchTo(t router.Target) (*upstream, error) {
	if s.active != nil && s.active.target != t {
		if err := s.waitQuiet(s.active); err != nil {
			return nil, err
		}
	}
	u := s.ups[t]
	if u == nil {
		var err error
		u, err = s.acquire(t)
		if err != nil {
			if t == router.Primary {
				var pe *pgError
				if errors.As(err, &pe) {
					pe.severity = "FATAL"
				}
				return nil, err
			}
			s.log.Warn("no replica connection; reading from the primary", zap.Error(err))
			return s.switchTo(router.Primary)
		}
		s.startPump(u)
	}
	if err := s.syncSettings(u); err != nil {
		return nil, err
	}
	s.active = u
	return u, nil
}

// waitQuiet blocks until u has answered everything sent to it.
func (s *session) waitQuiet(u *upstream) error {
	if err := u.conn.W.Flush(); err != nil {
		return err
	}
	for u.owesAnswers() || u.dropZ.Load() > 0 {
		select {
		case <-s.zSignal:
		case <-u.exited:
			return errors.New("server connection ended")
		case <-s.gone:
			return errors.New("session closed")
		case <-time.After(time.Second):
			// A signal may have gone to an earlier wait; look again.
		}
	}
	return nil
}

// syncSettings replays the client's session settings (SET of harmless
// parameters) on u where they differ, as one injected statement.
func (s *session) syncSettings(u *upstream) error {
	var q bytes.Buffer
	for name, val := range s.settings {
		if u.settings[name] != val {
			fmt.Fprintf(&q, "SET %s TO %s;", quoteIdent(name), val)
			u.settings[name] = val
		}
	}
	for name := range u.settings {
		if _, ok := s.settings[name]; !ok {
			fmt.Fprintf(&q, "RESET %s;", quoteIdent(name))
			delete(u.settings, name)
		}
	}
	if q.Len() == 0 {
		return nil
	}
	return s.inject(u, q.String())
}

// inject sends sql to u as a simple Query whose answers the pump drops.
func (s *session) inject(u *upstream, sql string) error {
	msg := make([]byte, 5, 6+len(sql))
	msg[0] = 'Q'
	msg = append(append(msg, sql...), 0)
	binary.BigEndian.PutUint32(msg[1:], uint32(len(msg)-1))
	u.dropZ.Add(1)
	u.pending.Add(1)
	delete(u.prepared, "")
	_, err := u.conn.W.Write(msg)
	return err
}

// cut splits a NUL-terminated string off the front of b.
func cut(b []byte) (string, []byte, bool) {
	i := bytes.IndexByte(b, 0)
	if i < 0 {
		return "", nil, false
	}
	return string(b[:i]), b[i+1:], true
}

func cstring(b []byte) string {
	s, _, _ := cut(b)
	return s
}

func quoteIdent(s string) string {
	return `"` + string(bytes.ReplaceAll([]byte(s), []byte(`"`), []byte(`""`))) + `"`
}
