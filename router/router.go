// Package router decides where each statement runs. It does no I/O: it sees
// the session's state and the statement, and returns a Target.
//
// Today pgsplit runs in session mode against the primary only, so every
// decision is Primary; classification by a real SQL parse (reads to
// replicas, writes to the primary) is the next step and will extend Route.
package router

// Target is where a statement (or a whole session) is sent.
type Target int

const (
	// Primary is the read-write server.
	Primary Target = iota
	// Replica is any streaming replica in rotation.
	Replica
)

func (t Target) String() string {
	switch t {
	case Primary:
		return "primary"
	case Replica:
		return "replica"
	}
	return "unknown"
}

// SessionTarget is where a session-mode client is attached for its whole
// session. Writes are always possible in a session, so it is the primary.
func SessionTarget() Target { return Primary }
