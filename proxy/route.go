package proxy

import (
	"strings"

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

// routeSetting is the name of pgsplit's own session setting:
// SET pgsplit.route = primary | replica | auto.
const routeSetting = "pgsplit.route"

// decide routes a simple-protocol statement. The order of the rules is the
// order of their strength: pgsplit's own setting, an open transaction (it
// stays on its server), pins, hints, the session override, then the
// statement's own classification. Whatever cannot be proven read-only goes to
// the primary.
func (s *session) decide(st router.Statement) decision {
	if st.SetName == routeSetting && (st.Kind == router.KindSet || st.Kind == router.KindReset || st.Kind == router.KindShow) {
		return s.routeSettingStatement(st)
	}
	if u := s.stickyUpstream(); u != nil {
		return decision{target: u.target, reason: "inside a transaction or pipeline on the " + u.target.String()}
	}
	switch st.Kind {
	case router.KindBegin, router.KindStartTransaction:
		if st.Tx != nil && st.Tx.ReadOnly != nil && *st.Tx.ReadOnly && s.readsOffloaded() && len(st.Pins) == 0 {
			return decision{target: router.Replica, reason: "read-only transaction"}
		}
		return decision{target: router.Primary, reason: "read-write transaction"}
	}
	if st.BySession {
		return decision{target: router.Primary, reason: st.Kind.String() + " (session state lives on the primary)"}
	}
	return s.decideRead(st.Target, st.Hint, st.Reason)
}

// decideBatch routes an extended-protocol batch whose statements need t.
func (s *session) decideBatch(t router.Target, reason string) decision {
	if u := s.stickyUpstream(); u != nil {
		return decision{target: u.target, reason: "inside a transaction or pipeline on the " + u.target.String()}
	}
	return s.decideRead(t, router.HintNone, reason)
}

// decideRead applies pins, hints, the session override and routing.read_from
// to a statement the classifier judged t.
func (s *session) decideRead(t router.Target, hint router.Target, reason string) decision {
	if t != router.Replica {
		if hint == router.Replica {
			s.log.Info("replica hint overridden: the statement needs the primary", zap.String("reason", reason))
		}
		return decision{target: router.Primary, reason: reason}
	}
	if len(s.pins) > 0 {
		return decision{target: router.Primary, reason: "session pinned to the primary (" + s.pinList() + ")"}
	}
	switch {
	case hint == router.Primary:
		return decision{target: router.Primary, reason: "hint pgsplit:primary"}
	case hint == router.Replica && s.srv.hasReplicas():
		return decision{target: router.Replica, reason: "hint pgsplit:replica"}
	case s.override == router.Primary:
		return decision{target: router.Primary, reason: "SET pgsplit.route = primary"}
	}
	if !s.readsOffloaded() {
		return decision{target: router.Primary, reason: reason + "; reads stay on the primary"}
	}
	return decision{target: router.Replica, reason: reason}
}

// readsOffloaded reports whether reads may go to replicas at all.
func (s *session) readsOffloaded() bool {
	if s.override == router.Replica {
		return s.srv.hasReplicas()
	}
	return s.srv.cfg.Load().Routing.ReadFrom != config.ReadFromPrimary && s.srv.hasReplicas()
}

// stickyUpstream returns the connection the next statement must go to
// whatever it is: the one holding the client's open transaction, or the
// active one while it still owes answers (a pipelining client: its
// transaction state is not known yet, and answers must stay in order).
func (s *session) stickyUpstream() *upstream {
	if s.active != nil && s.active.owesAnswers() {
		return s.active
	}
	for _, u := range s.ups {
		if u != nil && byte(u.txStatus.Load()) != 'I' {
			return u
		}
	}
	return nil
}

// afterStatement updates the session's routing state for a statement just
// sent to u: pins, harmless settings to replay elsewhere, prepared
// statements that a DISCARD or DEALLOCATE removes.
func (s *session) afterStatement(u *upstream, st router.Statement) {
	for _, p := range st.Unpins {
		if p == "all" {
			clear(s.pins)
			continue
		}
		delete(s.pins, p)
	}
	for _, p := range st.Pins {
		if !s.pins[p] {
			s.log.Debug("session pinned to the primary", zap.String("state", p))
		}
		s.pins[p] = true
	}
	switch st.Kind {
	case router.KindSet:
		if st.SetLocal || st.SetName == "" || len(st.Pins) > 0 {
			break
		}
		if st.SetValueSQL == "" {
			s.pins["set "+st.SetName] = true
			break
		}
		s.settings[st.SetName] = st.SetValueSQL
		u.settings[st.SetName] = st.SetValueSQL
	case router.KindReset:
		if st.SetName == "all" {
			clear(s.settings)
			clear(u.settings)
		} else {
			delete(s.settings, st.SetName)
			delete(u.settings, st.SetName)
		}
	case router.KindDiscard, router.KindDeallocate:
		// The server dropped prepared statements (maybe all): prepare
		// again before the next use rather than trust the registry.
		clear(u.prepared)
		if containsAll(st.Unpins) {
			clear(s.settings)
			clear(u.settings)
		}
	}
}

func containsAll(l []string) bool {
	for _, x := range l {
		if x == "all" {
			return true
		}
	}
	return false
}

func (s *session) pinList() string {
	var l []string
	for p := range s.pins {
		l = append(l, p)
	}
	return strings.Join(l, ", ")
}

// routeSettingStatement answers SET/RESET/SHOW pgsplit.route locally.
func (s *session) routeSettingStatement(st router.Statement) decision {
	switch st.Kind {
	case router.KindShow:
		v := "auto"
		switch s.override {
		case router.Primary:
			v = "primary"
		case router.Replica:
			v = "replica"
		}
		return decision{local: []pgproto3.BackendMessage{
			&pgproto3.RowDescription{Fields: []pgproto3.FieldDescription{{Name: []byte(routeSetting), DataTypeOID: 25, DataTypeSize: -1, TypeModifier: -1}}},
			&pgproto3.DataRow{Values: [][]byte{[]byte(v)}},
			&pgproto3.CommandComplete{CommandTag: []byte("SHOW")},
		}}
	case router.KindReset:
		s.override = router.HintNone
		return decision{local: []pgproto3.BackendMessage{&pgproto3.CommandComplete{CommandTag: []byte("RESET")}}}
	}
	switch strings.ToLower(strings.Trim(st.SetValue, `'" `)) {
	case "primary":
		s.override = router.Primary
	case "replica":
		s.override = router.Replica
	case "auto", "default", "":
		s.override = router.HintNone
	default:
		return decision{local: []pgproto3.BackendMessage{&pgproto3.ErrorResponse{
			Severity: "ERROR", SeverityUnlocalized: "ERROR", Code: "22023",
			Message: "invalid value for parameter \"pgsplit.route\": \"" + st.SetValue + "\"",
			Hint:    "Available values: primary, replica, auto.",
		}}}
	}
	return decision{local: []pgproto3.BackendMessage{&pgproto3.CommandComplete{CommandTag: []byte("SET")}}}
}

// answerLocally sends pgsplit's own answer and a ReadyForQuery with the
// status the client last saw.
func (s *session) answerLocally(msgs []pgproto3.BackendMessage) error {
	if u := s.active; u != nil {
		if err := s.waitQuiet(u); err != nil {
			return err
		}
	}
	s.wmu.Lock()
	defer s.wmu.Unlock()
	if err := writeMsgs(s.cw, msgs...); err != nil {
		return err
	}
	if _, err := s.cw.Write(readyForQuery(byte(s.txStatus.Load()))); err != nil {
		return err
	}
	return s.cw.Flush()
}
