package router

import (
	"errors"
	"sort"
	"strings"
)

// RouteSetting is the name of pgsplit's own session setting, answered by the
// proxy: SET pgsplit.route = primary | replica | auto.
const RouteSetting = "pgsplit.route"

// MinLSNSetting is pgsplit's session setting for a causal token: SET
// pgsplit.min_lsn = '0/3000060' sends the session's reads only to replicas
// that have replayed that WAL position. The proxy answers it too.
const MinLSNSetting = "pgsplit.min_lsn"

// PlainSetValue is SetValue without the quotes the fast path may leave
// around it.
func (st Statement) PlainSetValue() string { return strings.Trim(st.SetValue, `'" `) }

// IsOwnSetting reports whether name is one of pgsplit's session settings,
// answered by the proxy and never sent to a server.
func IsOwnSetting(name string) bool { return name == RouteSetting || name == MinLSNSetting }

// Session is one client's routing state: what pins it to the primary and
// its pgsplit.route override. It does no I/O; the proxy (or `pgsplit
// classify --session`) feeds it statements. Owned by one goroutine.
type Session struct {
	// OffloadReads is false when reads must stay on the primary
	// (routing.read_from: primary, or no replica configured).
	OffloadReads bool
	// Override is the session's SET pgsplit.route: Primary, Replica or
	// HintNone (auto).
	Override Target
	pins     map[string]bool
	gen      uint64 // changes whenever pins does
	// pinnedReason is the routing reason of a pinned session, built for
	// pinnedGen (not for every statement).
	pinnedReason string
	pinnedGen    uint64
}

// InTxReason is the routing reason of a statement that follows its open
// transaction to t.
func InTxReason(t Target) string {
	if t == Replica {
		return "inside a transaction on the replica"
	}
	return "inside a transaction on the primary"
}

// NewSession returns the state of a fresh session.
func NewSession(offloadReads bool) *Session {
	return &Session{OffloadReads: offloadReads, Override: HintNone, pins: map[string]bool{}}
}

// Decision is where one statement goes and why.
type Decision struct {
	Target Target
	Reason string
	// Local is set for statements about pgsplit's own setting, which the
	// proxy answers itself.
	Local bool
}

// Route decides where st runs. txOn is where the client's open transaction
// (or unfinished pipeline) runs, HintNone when there is none. The rules, by
// strength: pgsplit's own setting, an open transaction (it stays on its
// server), transaction starts, session-state statements, then Read.
func (s *Session) Route(st Statement, txOn Target) Decision {
	if IsOwnSetting(st.SetName) && st.BySession {
		return Decision{Target: Primary, Reason: "pgsplit setting (answered by the proxy)", Local: true}
	}
	if txOn != HintNone {
		return Decision{Target: txOn, Reason: InTxReason(txOn)}
	}
	switch st.Kind {
	case KindBegin, KindStartTransaction:
		if st.Tx != nil && st.Tx.ReadOnly != nil && *st.Tx.ReadOnly && len(s.pins) == 0 && s.offload() {
			if !st.ReadOnly {
				// READ ONLY but SERIALIZABLE (DEFERRABLE or not): a hot
				// standby refuses serializable transactions.
				return Decision{Target: Primary, Reason: "serializable transaction (a standby refuses it)"}
			}
			return Decision{Target: Replica, Reason: "read-only transaction"}
		}
		return Decision{Target: Primary, Reason: "read-write transaction"}
	}
	if st.BySession {
		return Decision{Target: Primary, Reason: st.Reason}
	}
	return s.Read(st.Target, st.Hint, st.Reason)
}

// Read applies pins, hints and the override to a statement (or a batch)
// the classifier judged t, outside any transaction.
func (s *Session) Read(t, hint Target, reason string) Decision {
	switch {
	case t != Replica && hint == Replica:
		return Decision{Target: Primary, Reason: "replica hint overridden: " + reason}
	case t != Replica:
		return Decision{Target: Primary, Reason: reason}
	case len(s.pins) > 0:
		if s.pinnedReason == "" || s.pinnedGen != s.gen {
			s.pinnedReason, s.pinnedGen = "session pinned to the primary ("+strings.Join(s.Pinned(), ", ")+")", s.gen
		}
		return Decision{Target: Primary, Reason: s.pinnedReason}
	case hint == Primary:
		return Decision{Target: Primary, Reason: "hint pgsplit:primary"}
	case hint == Replica && s.OffloadReads:
		return Decision{Target: Replica, Reason: "hint pgsplit:replica"}
	case s.Override == Primary:
		return Decision{Target: Primary, Reason: "SET pgsplit.route = primary"}
	case !s.offload():
		return Decision{Target: Primary, Reason: "reads stay on the primary (routing.read_from: primary, or no replica)"}
	}
	return Decision{Target: Replica, Reason: reason}
}

func (s *Session) offload() bool { return s.OffloadReads && s.Override != Primary }

// Observe records the session state st creates or releases once it was
// sent. It returns the pins st added, for the log.
func (s *Session) Observe(st Statement) (added []string) {
	for _, p := range st.Unpins {
		if p == "all" {
			if len(s.pins) > 0 {
				clear(s.pins)
				s.gen++
			}
			continue
		}
		if s.pins[p] {
			delete(s.pins, p)
			s.gen++
		}
	}
	for _, p := range st.Pins {
		if !s.pins[p] {
			added = append(added, p)
			s.pins[p] = true
			s.gen++
		}
	}
	return added
}

// Pin keeps the session on the primary for reason (e.g. a SET the proxy
// cannot replay elsewhere).
func (s *Session) Pin(reason string) {
	if !s.pins[reason] {
		s.pins[reason] = true
		s.gen++
	}
}

// Generation changes whenever the set of pins does, so that a caller can
// look at Pinned only then.
func (s *Session) Generation() uint64 { return s.gen }

// Pins is how many kinds of session state pin the session.
func (s *Session) Pins() int { return len(s.pins) }

// Pinned lists what pins the session, sorted.
func (s *Session) Pinned() []string {
	l := make([]string, 0, len(s.pins))
	for p := range s.pins {
		l = append(l, p)
	}
	sort.Strings(l)
	return l
}

// ErrRouteValue is returned for a pgsplit.route value other than primary,
// replica or auto.
var ErrRouteValue = errors.New(`invalid value for parameter "pgsplit.route": use primary, replica or auto`)

// ApplySetting applies SET/RESET pgsplit.route and returns the value SHOW
// reports.
func (s *Session) ApplySetting(st Statement) (string, error) {
	switch st.Kind {
	case KindReset:
		s.Override = HintNone
	case KindSet:
		switch strings.ToLower(st.PlainSetValue()) {
		case "primary":
			s.Override = Primary
		case "replica":
			s.Override = Replica
		case "auto", "default", "":
			s.Override = HintNone
		default:
			return "", ErrRouteValue
		}
	}
	switch s.Override {
	case Primary:
		return "primary", nil
	case Replica:
		return "replica", nil
	}
	return "auto", nil
}
