package proxy

import (
	"fmt"
	"slices"

	"github.com/pgsplit/pgsplit/internal/pgmsg"

	"github.com/jackc/pgx/v5/pgproto3"
	"go.uber.org/zap"

	"github.com/pgsplit/pgsplit/config"
	"github.com/pgsplit/pgsplit/router"
)

// decision is where one statement or batch goes, and why.
type decision struct {
	target router.Target
	reason string
	local  []pgproto3.BackendMessage // answered by pgsplit itself, not sent upstream
}

// decide routes a simple-protocol statement with the session's routing
// rules (router.Session), given where its transaction runs.
func (s *session) decide(st router.Statement, sql string) (decision, error) {
	follow := st.Target == router.Replica && !st.BySession
	tx, err := s.txTarget(follow)
	if err != nil {
		return decision{}, err
	}
	d := s.route.Route(st, tx)
	if d.Local {
		if st.Kind == router.KindMulti {
			// The other statements would be lost, or the server would
			// take pgsplit's setting as a custom one of its own.
			return decision{}, pgmsg.Err(pgmsg.CodeFeatureNotSupported, st.SetName+" must be set in a statement of its own, not in a multi-statement query")
		}
		return s.routeSettingStatement(st), nil
	}
	if st.Hint == router.Replica && d.Target == router.Primary && st.Target != router.Replica {
		s.log.Info("replica hint overridden: the statement needs the primary", zap.String("reason", st.Reason))
	}
	if d.Target == router.Replica && tx == router.HintNone && st.Hint != router.Replica && s.route.Override != router.Replica {
		// Read-your-writes. A READ ONLY transaction may read anything:
		// it must see every commit before it.
		begin := st.Kind == router.KindBegin || st.Kind == router.KindStartTransaction
		if !s.replicaReadable(s.ups[router.Replica], begin, readStmt{sql, st}) {
			return s.rywFallback()
		}
	}
	return decision{target: d.Target, reason: d.Reason}, nil
}

// decideBatch routes an extended-protocol batch whose statements need t.
func (s *session) decideBatch(t router.Target, reason string) (decision, error) {
	tx, err := s.txTarget(t == router.Replica)
	if err != nil {
		return decision{}, err
	}
	if tx != router.HintNone {
		return decision{target: tx, reason: router.InTxReason(tx)}, nil
	}
	d := s.route.Read(t, router.HintNone, reason)
	if d.Target == router.Replica && s.route.Override != router.Replica && !s.batchReadable(s.ups[router.Replica]) {
		return s.rywFallback()
	}
	return decision{target: d.Target, reason: d.Reason}, nil
}

// rywFallback is where a read goes that no replica could serve in time
// under read-your-writes: the primary, or with read_from: replicas_only
// nowhere (57P03: reads never go to the primary, and never go stale).
func (s *session) rywFallback() (decision, error) {
	if s.srv.cfg.Load().Routing.ReadFrom == config.ReadFromReplicasOnly {
		return decision{}, pgmsg.Err(pgmsg.CodeCannotConnectNow,
			"no replica has replayed the writes this read must see yet (routing.read_from: replicas_only, read_your_writes_wait "+
				s.srv.cfg.Load().Routing.ReadYourWritesWait.String()+")")
	}
	return decision{target: router.Primary, reason: reasonRYW}, nil
}

// batchReadable is replicaReadable for the statements of the batch: those
// its Executes run, and those it only parses or describes (a Parse or a
// Describe needs the relations it names to exist on the server: a
// describe-first driver's Parse/Describe/Sync of a table created a moment
// ago must not reach a replica that has not replayed the CREATE).
func (s *session) batchReadable(attached *upstream) bool {
	b := &s.batch
	if len(b.execs)+len(b.parsed)+len(b.referenced) == 0 || s.rywIdle() {
		return true
	}
	reads := make([]readStmt, 0, len(b.execs)+len(b.parsed)+len(b.referenced))
	var seen []*clientStmt // a batch holds a few statements: no map
	add := func(cs *clientStmt) {
		if cs != nil && !slices.Contains(seen, cs) {
			seen = append(seen, cs)
			reads = append(reads, readStmt{cs.sql, s.classOf(cs)})
		}
	}
	for _, x := range b.execs {
		add(x.stmt)
	}
	for _, cs := range b.parsed {
		add(cs)
	}
	for _, cs := range b.referenced {
		add(cs)
	}
	return s.replicaReadable(attached, false, reads...)
}

// txTarget is where the next statement must go whatever it is (HintNone if
// it is free): the server holding the client's open transaction. While the
// active connection still owes answers (a pipelining client), its
// transaction state is not known yet: the primary keeps the statement (it
// can run anything, and answers stay in order); a replica keeps it only if
// it is a read (follow) or the server is inside an unfinished batch;
// otherwise pgsplit first waits for the replica's answers.
func (s *session) txTarget(follow bool) (router.Target, error) {
	if a := s.active; a != nil && a.owesAnswers() {
		switch {
		case a.target == router.Primary, a.unsynced.Load(), follow:
			return a.target, nil
		}
		if err := s.waitQuiet(a); err != nil {
			return router.HintNone, err
		}
	}
	return s.openTxOn(), nil
}

// openTxOn is the server whose last ReadyForQuery said the client is inside
// a transaction, HintNone if none.
func (s *session) openTxOn() router.Target {
	for _, u := range s.ups {
		if u != nil && byte(u.txStatus.Load()) != pgmsg.TxIdle {
			return u.target
		}
	}
	return router.HintNone
}

// inTx reports, without waiting, whether the client may be inside a
// transaction or a pipeline (for the safety net and split decisions).
func (s *session) inTx() bool {
	// pgsplit's own injected statements (dropZ) do not count.
	a := s.active
	return (a != nil && (a.pending.Load()-a.dropZ.Load() > 0 || a.unsynced.Load())) || s.openTxOn() != router.HintNone
}

// afterStatement updates the session's routing state for a statement just
// sent to u: pins, harmless settings to replay elsewhere, prepared
// statements that a DISCARD or DEALLOCATE removes.
func (s *session) afterStatement(u *upstream, st router.Statement) {
	before := s.route.Pins()
	for _, p := range s.route.Observe(st) {
		s.log.Debug("session pinned to the primary", zap.String("state", p))
	}
	if before > 0 && s.route.Pins() == 0 {
		s.log.Debug("session state released: reads may leave the primary again", zap.Strings("released", st.Unpins))
	}
	s.observeSessionState(u, st)
}

// noteUserCode marks u for the reset after functions when st runs code
// pgsplit cannot see into. It is called where a statement is written to a
// server (writeQuery, sendBatch), so every path that sends one — the
// safety net's rerun on the primary included — marks the connection it
// ran on.
func (s *session) noteUserCode(u *upstream, st router.Statement) {
	if !s.resetUserCode || u.userCode.Load() {
		return // off, or marked already: no need to judge the statement
	}
	if s.cls.RunsUserCode(st) {
		u.userCode.Store(true)
	}
}

// observeSessionState records what a statement just sent to u does to the
// client's session settings and prepared statements. The change is taken
// as done at once but kept tentative (see tentative) until u shows whether
// the statement, or its transaction, failed; the server connection's own
// record marks each setting touched as unknown, so the next client that
// uses it sets or resets it explicitly.
func (s *session) observeSessionState(u *upstream, st router.Statement) {
	have := u.conn.State.Settings
	kind := st.Kind
	if kind == router.KindSet && st.SetDefault {
		kind = router.KindReset
	}
	switch kind {
	case router.KindSet:
		if st.SetLocal || st.SetName == "" || st.SetName == "role" || st.SetName == "session_authorization" ||
			router.IsOwnSetting(st.SetName) {
			return // role and session_authorization pin (connPin)
		}
		if st.SetValueSQL == "" {
			s.route.Pin(pinUnreplayable + st.SetName)
			return
		}
		s.openTentative(u, st, false)
		s.state.set(st.SetName, st.SetValueSQL)
		have[st.SetName] = unknownSetting
	case router.KindReset:
		s.openTentative(u, st, false)
		if st.SetName == "all" {
			s.state.resetAll()
			markUnknown(have)
			return
		}
		have[st.SetName] = unknownSetting
		s.state.reset(st.SetName) // the startup value again, applied before the next statement
	case router.KindDiscard:
		if slices.Contains(st.Unpins, "all") {
			// The server dropped every statement and setting (unless it
			// refused, inside a transaction: then pgsplit prepares again
			// and sets again, which is harmless).
			s.openTentative(u, st, true)
			markUnknown(have)
			u.conn.State.Prepared.Clear()
			u.conn.State.Unnamed = nil
			u.unconfirmed = u.unconfirmed[:0]
			s.state.resetAll()
			clear(s.stmts)
		}
	case router.KindDeallocate:
		if st.PreparedName == "" {
			// DEALLOCATE ALL: the server dropped every statement, the
			// client's and (under transaction pooling) other clients'.
			s.openTentative(u, st, true)
			u.conn.State.Prepared.Clear()
			u.conn.State.Unnamed = nil
			u.unconfirmed = u.unconfirmed[:0]
			clear(s.stmts)
		}
	case router.KindRollbackTo:
		s.state.rolledBackToSavepoint(u)
	case router.KindSetSessionCharacteristics:
		s.route.Pin(pinUnreplayable + "session characteristics")
	case router.KindMulti:
		for _, k := range st.Kinds {
			switch k {
			case router.KindSet, router.KindReset, router.KindDiscard, router.KindDeallocate, router.KindSetSessionCharacteristics:
				// Which part did what, and whether it ran, pgsplit cannot
				// follow: keep the client on its connections.
				s.route.Pin(pinUnreplayable + "in a multi-statement string")
				return
			}
		}
	}
}

// openTentative keeps the client's state before st's change on u (see
// tentative), and with stmts its prepared statements too.
func (s *session) openTentative(u *upstream, st router.Statement, stmts bool) {
	inTx := byte(u.txStatus.Load()) != pgmsg.TxIdle || s.split != nil || u.pending.Load()-u.dropZ.Load() > 1 || st.Statements > 1
	var keep map[string]*clientStmt
	if stmts {
		keep = s.stmts
	}
	s.state.open(u, connMarks{errs: u.errsMark, rollbacks: u.rollbacksMark}, inTx, keep)
}

// settleTentative decides the open tentative changes whose connections
// have answered everything (clientState.settle).
func (s *session) settleTentative() {
	if !s.state.pending() {
		return
	}
	stmts, undone := s.state.settle(func(u *upstream) connOutcome {
		return connOutcome{
			busy:      u.pending.Load() > 0 || u.unsynced.Load() || byte(u.txStatus.Load()) != pgmsg.TxIdle,
			connMarks: connMarks{errs: u.errs.Load(), rollbacks: u.rollbacks.Load()},
		}
	})
	if stmts != nil {
		s.stmts = stmts
	}
	if undone {
		s.log.Debug("session settings change undone: the statement failed or its transaction rolled back")
	}
}

func markUnknown(have map[string]string) {
	for k := range have {
		have[k] = unknownSetting
	}
}

// unknownSetting marks, in a connection's State.Settings, a setting whose
// value there is not known: syncSettings sets or resets it.
const unknownSetting = "\x00unknown"

// routeSettingStatement answers SET/RESET/SHOW of pgsplit's own settings
// (pgsplit.route, pgsplit.min_lsn) locally.
func (s *session) routeSettingStatement(st router.Statement) decision {
	var v string
	var err error
	if st.SetName == router.MinLSNSetting {
		v, err = s.applyMinLSN(st)
	} else {
		v, err = s.route.ApplySetting(st)
	}
	if err != nil {
		return decision{local: []pgproto3.BackendMessage{&pgproto3.ErrorResponse{
			Severity: pgmsg.SeverityError, SeverityUnlocalized: pgmsg.SeverityError, Code: pgmsg.CodeInvalidParameterValue,
			Message: err.Error() + ": got \"" + st.SetValue + "\"",
		}}}
	}
	switch st.Kind {
	case router.KindShow:
		return decision{local: []pgproto3.BackendMessage{
			&pgproto3.RowDescription{Fields: []pgproto3.FieldDescription{{Name: []byte(st.SetName), DataTypeOID: 25, DataTypeSize: -1, TypeModifier: -1}}},
			&pgproto3.DataRow{Values: [][]byte{[]byte(v)}},
			&pgproto3.CommandComplete{CommandTag: []byte("SHOW")},
		}}
	case router.KindReset:
		return decision{local: []pgproto3.BackendMessage{&pgproto3.CommandComplete{CommandTag: []byte("RESET")}}}
	}
	return decision{local: []pgproto3.BackendMessage{&pgproto3.CommandComplete{CommandTag: []byte("SET")}}}
}

// answerLocally sends pgsplit's own answer and a ReadyForQuery with the
// status the client last saw.
func (s *session) answerLocally(msgs []pgproto3.BackendMessage) error {
	if u := s.active; u != nil {
		if err := s.waitAnswered(u); err != nil {
			return err
		}
	}
	return s.out.answer(byte(s.txStatus.Load()), msgs...)
}

// clientName maps a statement name as the batch holds it (the servers'
// name) back to the client's.
func (s *session) clientName(wire string) string {
	if _, ok := s.stmts[wire]; ok {
		return wire
	}
	for name, cs := range s.stmts {
		if cs.server == wire {
			return name
		}
	}
	return wire
}

// batchIsLocal reports whether the batch uses pgsplit's own setting
// (SET/SHOW/RESET pgsplit.route), and whether it mixes it with statements
// for the servers, which pgsplit refuses.
func (s *session) batchIsLocal() (local, mixed bool) {
	b := &s.batch
	ours, theirs := 0, 0
	for _, names := range [][]string{b.parses, b.refs} {
		for _, n := range names {
			if cs, ok := s.stmts[n]; ok && s.answeredHere(cs) {
				ours++
			} else {
				theirs++
			}
		}
	}
	return ours > 0 && theirs == 0, ours > 0 && theirs > 0
}

// answeredHere reports whether pgsplit itself answers cs in an
// extended-protocol batch: a statement about pgsplit's own setting, or a
// DEALLOCATE of a statement the client prepared with Parse (it lives on the
// servers under pgsplit's name, shared with other clients, so the client's
// DEALLOCATE only forgets the client's name, as for a simple Query).
func (s *session) answeredHere(cs *clientStmt) bool {
	if router.IsOwnSetting(cs.class.SetName) && cs.class.BySession {
		return true
	}
	return s.deallocatesOurs(cs.class)
}

// deallocatesOurs reports whether st is a DEALLOCATE of one statement the
// client prepared with Parse.
func (s *session) deallocatesOurs(st router.Statement) bool {
	if st.Kind != router.KindDeallocate || st.Statements != 1 || st.PreparedName == "" {
		return false
	}
	cs, ok := s.stmts[st.PreparedName]
	return ok && cs.server != ""
}

// answerBatchLocally answers an extended-protocol batch about pgsplit's own
// setting message by message, as a server would.
func (s *session) answerBatchLocally(mixed bool) error {
	if u := s.active; u != nil {
		if err := s.waitAnswered(u); err != nil {
			return err
		}
	}
	var out []pgproto3.BackendMessage
	portals := map[string]string{}
	failed := false
	if mixed {
		out = append(out, &pgproto3.ErrorResponse{Severity: pgmsg.SeverityError, SeverityUnlocalized: pgmsg.SeverityError, Code: pgmsg.CodeFeatureNotSupported,
			Message: "pgsplit's own settings (pgsplit.route, pgsplit.min_lsn) cannot share an extended-protocol batch with other statements"})
		failed = true
	}
	for typ, body := range pgmsg.Frames(s.batch.buf) {
		if typ == pgmsg.Sync {
			out = append(out, &pgproto3.ReadyForQuery{TxStatus: byte(s.txStatus.Load())})
			failed = false
			continue
		}
		if failed {
			continue
		}
		switch typ {
		case pgmsg.Parse:
			out = append(out, &pgproto3.ParseComplete{})
		case pgmsg.Bind:
			portal, r, _ := cut(body)
			portals[portal] = s.clientName(cstring(r))
			out = append(out, &pgproto3.BindComplete{})
		case pgmsg.Describe:
			if len(body) < 2 {
				out = append(out, &pgproto3.ErrorResponse{Severity: pgmsg.SeverityError, SeverityUnlocalized: pgmsg.SeverityError, Code: pgmsg.CodeProtocolViolation, Message: "invalid Describe message"})
				failed = true
				continue
			}
			name := cstring(body[1:])
			if body[0] == pgmsg.TargetPortal {
				name = portals[name]
			} else {
				name = s.clientName(name)
				out = append(out, &pgproto3.ParameterDescription{})
			}
			if cs, ok := s.stmts[name]; ok && cs.class.Kind == router.KindShow {
				out = append(out, s.routeSettingStatement(cs.class).local[0])
			} else {
				out = append(out, &pgproto3.NoData{})
			}
		case pgmsg.Execute:
			cs := s.stmts[portals[cstring(body)]]
			if cs != nil && cs.class.Kind == router.KindDeallocate {
				if !s.deallocatesOurs(cs.class) {
					// Executed again after the statement is gone.
					out = append(out, &pgproto3.ErrorResponse{Severity: pgmsg.SeverityError, SeverityUnlocalized: pgmsg.SeverityError, Code: pgmsg.CodeInvalidStatementName,
						Message: fmt.Sprintf("prepared statement %q does not exist", cs.class.PreparedName)})
					failed = true
					continue
				}
				delete(s.stmts, cs.class.PreparedName)
				out = append(out, &pgproto3.CommandComplete{CommandTag: []byte("DEALLOCATE")})
				continue
			}
			if cs != nil && !router.IsOwnSetting(cs.class.SetName) {
				cs = nil
			}
			if cs == nil {
				out = append(out, &pgproto3.ErrorResponse{Severity: pgmsg.SeverityError, SeverityUnlocalized: pgmsg.SeverityError, Code: pgmsg.CodeInvalidCursorName, Message: "portal does not exist"})
				failed = true
				continue
			}
			msgs := s.routeSettingStatement(cs.class).local
			if cs.class.Kind == router.KindShow {
				msgs = msgs[1:] // Execute sends no RowDescription
			}
			for _, m := range msgs {
				if _, isErr := m.(*pgproto3.ErrorResponse); isErr {
					failed = true
				}
			}
			out = append(out, msgs...)
		case pgmsg.Close:
			out = append(out, &pgproto3.CloseComplete{})
		}
	}
	return s.out.sendMsgs(out...)
}
