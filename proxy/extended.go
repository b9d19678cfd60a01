package proxy

import (
	"encoding/binary"

	"go.uber.org/zap"

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
	buf     []byte            // raw messages
	parses  []string          // statement names parsed in the batch, in order
	refs    []string          // statement names used by Bind or Describe
	closes  []string          // statement names closed by the client
	portals map[string]string // portal → statement name, from Bind
	execs   []string          // statement names run by Execute
	reason  string
	primary bool // something in the batch needs the primary
	large   bool // over maxBatch or incomplete: streaming to the primary
}

func (b *batch) reset() {
	b.buf = b.buf[:0]
	b.parses = b.parses[:0]
	b.refs = b.refs[:0]
	b.closes = b.closes[:0]
	b.execs = b.execs[:0]
	clear(b.portals)
	b.primary, b.large = false, false
	b.reason = ""
	if cap(b.buf) > 4*maxBatch {
		b.buf = nil
	}
}

// relayExtended collects an extended-protocol batch until Sync or Flush,
// then routes it as a whole: to a replica only if every statement in it is
// read-only.
func (s *session) relayExtended(typ byte) error {
	b := &s.batch
	if b.large {
		// Streaming the rest of a large or incomplete batch to where its
		// start went (the primary).
		return s.streamExtended(typ)
	}
	body, err := s.cr.Body()
	if err != nil {
		return err
	}
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
	switch {
	case b.primary:
		t = router.Primary
	case len(b.parses) == 0 && len(b.refs) == 0:
		// A lone Sync, Flush or Close: nothing to offload.
		t = router.Primary
		if s.active != nil {
			t = s.active.target
		}
	case typ == 'H' && !s.readOnlyReplicaTx():
		// After a Flush the client may go on with the same unfinished
		// batch, which then cannot leave this server: only a read-only
		// transaction may keep it on a replica.
		t, b.reason = router.Primary, "batch ended by Flush"
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
	} else if d, err = s.decideBatch(t, b.reason); err != nil {
		b.reset()
		return err
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
	if ce := s.log.Check(zap.DebugLevel, "route batch"); ce != nil { // no field allocation when off
		ce.Write(zap.Stringer("to", u.target), zap.String("reason", d.reason))
	}
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
	for _, name := range b.execs {
		// Pins, SETs to replay, DISCARD/DEALLOCATE: as for a Query.
		if cs, ok := s.stmts[name]; ok {
			s.afterStatement(u, s.cls.Classify(cs.sql))
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
		s.batch.reset() // the streamed batch is over
	} else {
		u.unsynced.Store(true)
	}
	if typ != 'P' && typ != 'C' && typ != 'B' && typ != 'D' {
		if err := s.cr.Forward(u.conn.W); err != nil {
			return err
		}
		return s.flushIfIdle(u)
	}
	// Keep the statement registry right, and prepare here a statement the
	// client prepared on the other server, even when streaming.
	body, err := s.cr.Body()
	if err != nil {
		return err
	}
	b := &s.batch
	if err := s.noteExtended(typ, body, append([]byte{typ, 0, 0, 0, 0}, body...)); err != nil {
		return err
	}
	for _, name := range b.closes {
		delete(u.prepared, name)
	}
	if err := s.injectStatements(u, b); err != nil {
		return err
	}
	for _, name := range b.parses {
		u.prepared[name] = s.stmts[name].sql
	}
	// This message is handled: only the streaming flag outlives it.
	b.parses, b.refs, b.closes, b.primary = b.parses[:0], b.refs[:0], b.closes[:0], false
	if err := s.cr.WriteBodyAfterHeader(u.conn.W, body); err != nil {
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
		portal, rest, ok := cut(body)
		name, _, ok2 := cut(rest)
		if !ok || !ok2 {
			return fatal(codeProtocolViolation, "invalid Bind message")
		}
		s.noteRef(name)
		if b.portals == nil {
			b.portals = map[string]string{}
		}
		b.portals[portal] = name
	case 'E':
		if name, ok := b.portals[cstring(body)]; ok {
			b.execs = append(b.execs, name)
		}
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
	var closes, parses []string
	for _, name := range b.parses {
		if _, stale := u.prepared[name]; stale && name != "" {
			// The client closed this name on another server and parses it
			// again: close u's old copy first (closing is never an error).
			closes = append(closes, name)
		}
	}
	for _, name := range b.refs {
		if cs, ok := s.stmts[name]; ok {
			if have, ok := u.prepared[name]; !ok || have != cs.sql {
				parses = append(parses, name)
			}
		}
	}
	if len(closes)+len(parses) == 0 {
		return nil
	}
	if u.pending.Load() > 0 && !u.unsynced.Load() {
		// The drop counters count per connection: let earlier batches'
		// answers through first so ours are the ones dropped.
		if err := s.waitAnswered(u); err != nil {
			return err
		}
	}
	for _, name := range closes {
		if err := s.injectClose(u, name); err != nil {
			return err
		}
	}
	for _, name := range parses {
		cs := s.stmts[name]
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
