package proxy

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"sync/atomic"

	"github.com/pgsplit/pgsplit/internal/pgmsg"
	"github.com/pgsplit/pgsplit/router"
)

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
