package proxy

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/pgsplit/pgsplit/internal/pgmsg"

	"go.uber.org/zap"

	"github.com/pgsplit/pgsplit/config"
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

// clientStmt is a named (or the unnamed) prepared statement as the client
// created it with Parse. A named statement lives on the servers under a
// name pgsplit derives from its text and parameter types (server), so one
// server connection can hold it for every client that prepares the same
// statement, and a client can use it on whichever connection serves it.
type clientStmt struct {
	// confirmed: the batch that parsed it ended without an error, so the
	// client's server has it (set by a pump; see parsedBatch).
	confirmed atomic.Bool
	sql       string
	server    string           // the statement's name on the servers; "" for the unnamed one
	parse     []byte           // the Parse message as sent to a server (named server)
	class     router.Statement // see classOf
	gen       uint64           // the classifier's Generation when class was made
}

// classOf is cs's class, classified again only when the classifier was
// reset since (the catalog was reloaded): once per Parse, not per Bind or
// Execute, even for statements too long for the classifier's cache.
func (s *session) classOf(cs *clientStmt) router.Statement {
	if g := s.cls.Generation(); g != cs.gen {
		cs.class, cs.gen = s.cls.Classify(cs.sql), g
	}
	return cs.class
}

// serverStmtName is the name a statement with this Parse body after the
// client's name (query text, parameter types) has on the servers: a hash,
// so that equal statements share a name and different ones never do.
func serverStmtName(rest []byte) string {
	h := sha256.Sum256(rest)
	return "pgsplit_" + hex.EncodeToString(h[:15])
}

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
	if err := s.appendExtended(typ, body); err != nil {
		return err
	}
	complete := typ == pgmsg.Sync || typ == pgmsg.Flush
	if !complete && len(b.buf) <= s.maxBatch() && s.cr.Buffered() > 0 {
		return nil // more of the batch is already here
	}
	if typ == pgmsg.Sync && s.parseOnly() {
		err := s.answerParseOnly()
		b.reset()
		return err
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
		} else if onlySyncFlush(b.buf) {
			// No server connection is attached, so none owes anything:
			// answer the Syncs, nothing to flush.
			err := s.answerParseOnly()
			b.reset()
			return err
		}
	case typ == pgmsg.Flush && !s.readOnlyReplicaTx():
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
	// The safety net, as for a simple Query: a read batch on a replica,
	// outside a transaction, the client waiting for it, is watched for a
	// 25006 refusal or the replica going away before its first answer.
	watch := typ == pgmsg.Sync && complete && !b.large && u.target == router.Replica && s.split == nil &&
		!s.inTx() && s.cr.Buffered() == 0 && len(b.execs) > 0
	if watch {
		u.watch.Store(watchWaiting)
	}
	if err := s.sendBatch(u, typ, d.reason); err != nil && !watch {
		return err
	}
	if watch {
		ferr := u.conn.W.Flush()
		if ferr != nil {
			_ = u.conn.Raw().SetReadDeadline(time.Now()) // its pump says lost at once
		}
		if !s.awaitVerdict(u) {
			b.reset()
			return ferr
		}
		u.dropBatchRecords()
		if u, err = s.rerunElsewhere(u); err != nil {
			b.reset()
			return err
		}
		if err := s.sendBatch(u, typ, "re-run elsewhere"); err != nil {
			return err
		}
	}
	if ce := s.log.Check(zap.DebugLevel, "route batch"); ce != nil { // no field allocation when off
		ce.Write(zap.Stringer("to", u.target), zap.String("reason", d.reason))
	}
	if b.large {
		b.sent() // the rest streams: its Executes need the portals bound so far
	} else {
		b.reset()
	}
	return s.flushIfIdle(u)
}

// streamExtended forwards an extended-protocol message straight to the
// active connection.
func (s *session) streamExtended(typ byte) error {
	u := s.active
	if typ == pgmsg.Sync {
		u.expectReady()
		u.pending.Add(1)
		u.unsynced.Store(false)
		s.batch.reset() // the streamed batch is over
	} else {
		u.unsynced.Store(true)
	}
	if !pgmsg.Step(typ) {
		if err := s.cr.Forward(u.conn.W); err != nil {
			return err
		}
		return s.flushIfIdle(u)
	}
	// Keep the statement registry right, name statements as the servers
	// know them, and prepare here a statement the client prepared on
	// another connection, even when streaming.
	body, err := s.cr.Body()
	if err != nil {
		return err
	}
	b := &s.batch
	if err := s.appendExtended(typ, body); err != nil {
		return err
	}
	if err := s.checkBooks(); err != nil {
		return err
	}
	if err := s.sendBatch(u, typ, "incomplete or large batch"); err != nil {
		return err
	}
	b.sent()
	return s.flushIfIdle(u)
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

// abortTransaction makes the server's open transaction fail as an error
// pgsplit answers itself (pe) would have made it fail on one server: the
// client is told ReadyForQuery E (failed), and what it sends next gets 25P02 until
// it rolls back, as from PostgreSQL. Outside a transaction it does nothing.
func (s *session) abortTransaction(pe *pgmsg.Error) error {
	if byte(s.txStatus.Load()) != pgmsg.TxActive {
		return nil
	}
	u := s.active
	if tx := s.split; tx != nil {
		if tx.on == router.HintNone {
			// The BEGIN is still held: open the transaction on the
			// primary, to fail there.
			var err error
			if u, err = s.switchTo(router.Primary); err != nil {
				return err
			}
			if err := s.inject(u, tx.begin); err != nil {
				return err
			}
			tx.on = u.target
		} else {
			u = s.ups[tx.on]
		}
	}
	if u == nil {
		return nil
	}
	u.expectErr.Add(1)
	msg := "DO $pgsplit$BEGIN RAISE EXCEPTION USING ERRCODE = '" + pe.Code + "', MESSAGE = 'pgsplit: transaction aborted by an error pgsplit answered'; END$pgsplit$"
	if err := s.inject(u, msg); err != nil {
		return err
	}
	if err := u.conn.W.Flush(); err != nil {
		return err
	}
	s.txStatus.Store(pgmsg.TxFailed)
	return nil
}

// parsedBatch is the named statements a batch parsed and the number of
// the ReadyForQuery that ends it (upstream.sent numbering).
type parsedBatch struct {
	seq   int64
	stmts []*clientStmt
}

// noteParsed records the named statements of a batch being sent to u,
// confirmed by the pump once the batch is answered without an error.
func (u *upstream) noteParsed(parsed []*clientStmt) {
	var named []*clientStmt
	for _, cs := range parsed {
		if cs.server != "" {
			named = append(named, cs)
		}
	}
	if len(named) == 0 {
		return
	}
	u.recMu.Lock()
	u.parsedBatches = append(u.parsedBatches, parsedBatch{seq: u.sent + 1, stmts: named})
	u.parsing.Store(true)
	u.recMu.Unlock()
}

// confirmParsed is the pump's part at ReadyForQuery number z, before it
// is relayed: the statements of the batches it ends are confirmed if none
// of their answers was an error (with one, which Parse failed is not
// known: none is). The caller holds recMu.
func (u *upstream) confirmParsed(z int64) {
	n := 0
	for _, pb := range u.parsedBatches {
		if pb.seq > z {
			break
		}
		if !u.answerErr {
			for _, cs := range pb.stmts {
				cs.confirmed.Store(true)
			}
		}
		n++
	}
	if n > 0 {
		clear(u.parsedBatches[:n])
		u.parsedBatches = u.parsedBatches[n:]
		u.parsing.Store(len(u.parsedBatches) > 0)
	}
	u.answerErr = false
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

// sendBatch writes the collected messages to u, preceded by what u lacks
// for them (injectStatements), and keeps the books: a query record per
// Execute, the statements now prepared on u, and for each Execute what its
// statement does to the session (pins, SETs to replay, DISCARD/DEALLOCATE),
// as for a Query. last is the type of the batch's last message: a Sync
// makes u owe a ReadyForQuery, anything else leaves the batch unfinished.
func (s *session) sendBatch(u *upstream, last byte, reason string) error {
	b := &s.batch
	if err := s.injectStatements(u, b); err != nil {
		return err
	}
	u.markSend()
	if len(b.parsed) > 0 {
		u.noteParsed(b.parsed)
	}
	for _, x := range b.execs {
		s.startRecord(u, x.stmt.sql, x.stmt.class.Kind, true, x.params, reason, x.at, u.sent+1)
		s.noteWrite(u, u.sent+1, x.stmt.sql, s.classOf(x.stmt))
		s.noteUserCode(u, s.classOf(x.stmt))
	}
	if _, err := u.conn.W.Write(b.buf); err != nil {
		return err
	}
	if last == pgmsg.Sync {
		u.expectReady()
		u.pending.Add(1)
		u.unsynced.Store(false)
	} else {
		u.unsynced.Store(true)
	}
	s.noteParsed(u, b)
	for _, x := range b.execs {
		s.afterStatement(u, s.classOf(x.stmt))
	}
	return nil
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

// parseOnly reports whether the batch only prepares statements (Parse,
// Close of statements, Sync: libpq's PQprepare, pgbench -M prepared) while
// the client is outside a transaction: pgsplit answers it itself and
// prepares the statements on a server when they are first used. Under
// transaction pooling that keeps a client that prepares from waiting for a
// server connection (a client like pgbench prepares synchronously while
// its other connections hold theirs: waiting could deadlock them). A
// statement that is not valid SQL is sent to a server, for its error.
func (s *session) parseOnly() bool {
	b := &s.batch
	if len(b.parses) == 0 || len(b.refs) > 0 || len(b.execs) > 0 || b.large ||
		byte(s.txStatus.Load()) != pgmsg.TxIdle || s.openTxOn() != router.HintNone {
		return false
	}
	for _, u := range s.ups {
		if u != nil && u.owesAnswers() {
			return false // inside a batch the client continues, or behind one: the server's Sync must come
		}
	}
	for _, name := range b.parses {
		if cs := s.stmts[name]; cs == nil || cs.class.Statements == 0 || cs.class.SetName == router.RouteSetting {
			return false
		}
	}
	for typ, body := range pgmsg.Frames(b.buf) {
		switch typ {
		case pgmsg.Parse, pgmsg.Sync:
		case pgmsg.Close:
			if len(body) < 1 || body[0] != pgmsg.TargetStatement {
				return false
			}
		default:
			return false
		}
	}
	return true
}

// answerParseOnly answers a parseOnly batch as the server would.
func (s *session) answerParseOnly() error {
	if u := s.active; u != nil {
		if err := s.waitAnswered(u); err != nil {
			return err
		}
	}
	// Answered ParseComplete: to the client the statements exist.
	for _, cs := range s.batch.parsed {
		cs.confirmed.Store(true)
	}
	var out []byte
	for typ := range pgmsg.Frames(s.batch.buf) {
		switch typ {
		case pgmsg.Parse:
			out = pgmsg.AppendEmpty(out, pgmsg.ParseComplete)
		case pgmsg.Close:
			out = pgmsg.AppendEmpty(out, pgmsg.CloseComplete)
		case pgmsg.Sync:
			out = pgmsg.AppendReadyForQuery(out, byte(s.txStatus.Load()))
		}
	}
	return s.out.send(out)
}

// onlySyncFlush reports whether buf holds only Sync and Flush messages.
func onlySyncFlush(buf []byte) bool {
	for typ := range pgmsg.Frames(buf) {
		if typ != pgmsg.Sync && typ != pgmsg.Flush {
			return false
		}
	}
	return true
}

// serverName is the servers' name for the client's statement name: the
// derived one for a statement the client prepared, the name itself
// otherwise (the unnamed statement, one prepared with SQL PREPARE, or an
// unknown one, which the server reports).
func serverName(cs *clientStmt, name string) string {
	if cs != nil && cs.server != "" {
		return cs.server
	}
	return name
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

// injectStatements prepares on u, ahead of the batch, the statements the
// batch uses but u does not have, so a statement prepared on one server
// connection can be executed on another; closes the server's copy of each
// statement the batch parses (Parse of an existing name is an error, and
// pgsplit's registry may not know every statement a server still has);
// and closes the least recently used statements beyond
// pool.max_prepared_statements. The pump drops the answers.
func (s *session) injectStatements(u *upstream, b *batch) error {
	st := &u.conn.State
	u.settleStatements()
	var closes []string
	var parses []*clientStmt
	used := map[string]bool{}
	adding := 0 // used names the connection lacks
	for _, cs := range b.parsed {
		if cs.server == "" {
			continue
		}
		closes = append(closes, cs.server)
		if !used[cs.server] {
			used[cs.server] = true
			if !st.Prepared.Has(cs.server) {
				adding++
			}
		}
	}
	for _, cs := range b.referenced {
		switch {
		case cs.server == "":
			if !bytes.Equal(st.Unnamed, cs.parse) {
				parses = append(parses, cs)
			}
		case !used[cs.server]:
			used[cs.server] = true
			if !st.Prepared.Has(cs.server) {
				parses = append(parses, cs)
				adding++
			}
		}
	}
	victims := st.Prepared.Evict(st.Prepared.Len()+adding-s.maxPrepared, func(n string) bool { return used[n] })
	if b.unnamedGone {
		b.unnamedGone = false
		closes = append(closes, "")
	}
	if len(closes)+len(parses)+len(victims) == 0 {
		return nil
	}
	if u.pending.Load() > 0 {
		// The drop counters count per connection: let earlier batches'
		// answers through first so ours are the ones dropped. (Answers
		// of the unfinished batch itself, while streaming, are not
		// counted: see "Known limits".)
		if err := s.waitAnswered(u); err != nil {
			return err
		}
	}
	for _, name := range victims {
		if err := s.injectClose(u, name); err != nil {
			return err
		}
	}
	for _, name := range closes {
		if err := s.injectClose(u, name); err != nil {
			return err
		}
	}
	for _, cs := range parses {
		if cs.server != "" {
			if err := s.injectClose(u, cs.server); err != nil {
				return err
			}
		}
		u.dropParse.Add(1)
		if _, err := u.conn.W.Write(cs.parse); err != nil {
			return err
		}
		s.noteStatement(u, cs)
	}
	return nil
}

// noteParsed records on u the statements a batch just sent to it parses.
func (s *session) noteParsed(u *upstream, b *batch) {
	for _, cs := range b.parsed {
		s.noteStatement(u, cs)
	}
}

// noteStatement records cs as prepared on u, unconfirmed until u answers
// without an error.
func (s *session) noteStatement(u *upstream, cs *clientStmt) {
	if cs.server == "" {
		u.conn.State.Unnamed = cs.parse
		return
	}
	u.conn.State.Prepared.Add(cs.server)
	u.unconfirmed = append(u.unconfirmed, cs.server)
}

// settleStatements settles u's unconfirmed statements: after an error on u
// any of them may have failed to prepare, so they are forgotten (and
// prepared again, after a Close, when next used); once u has answered
// everything without one, they are known to exist. Called by whoever holds
// the connection.
func (u *upstream) settleStatements() {
	if u.syncFailed.Swap(false) {
		markUnknown(u.conn.State.Settings)
	}
	if u.owesAnswers() {
		// Answers still to come: a Parse sent after an error in the same
		// batch is skipped without an error of its own.
		return
	}
	if u.failed.Swap(false) {
		for _, name := range u.unconfirmed {
			u.conn.State.Prepared.Remove(name)
		}
		u.conn.State.Unnamed = nil
	}
	u.unconfirmed = u.unconfirmed[:0]
}

func (s *session) injectClose(u *upstream, name string) error {
	msg := pgmsg.AppendClose(make([]byte, 0, 7+len(name)), pgmsg.TargetStatement, name)
	u.dropClose.Add(1)
	u.conn.State.Prepared.Remove(name)
	if name == "" {
		u.conn.State.Unnamed = nil
	}
	_, err := u.conn.W.Write(msg)
	return err
}
