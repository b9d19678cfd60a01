package pool

import "container/list"

// State is the session state a server connection carries from one holder to
// the next: the settings applied on it beyond the server's defaults and the
// statements prepared on it. Whoever holds the Conn owns its State; the pool
// itself only clears it when the connection is reset or closed. Keeping it
// across Release is what lets transaction pooling reuse prepared statements
// and replay only the settings that differ.
type State struct {
	// Settings maps a setting's name to the statement that applied it (SET
	// … TO … or set_config); what is not here is at the server default.
	Settings map[string]string
	// Unnamed is the body of the Parse that created the unnamed statement
	// now on the connection; nil when unknown or destroyed.
	Unnamed []byte
	// Prepared lists the named statements prepared on the connection, least
	// recently used first.
	Prepared *Statements
}

func newState() State {
	return State{Settings: map[string]string{}, Prepared: NewStatements()}
}

// Clear forgets everything: the server was reset (DISCARD ALL).
func (s *State) Clear() {
	clear(s.Settings)
	s.Unnamed = nil
	s.Prepared.Clear()
}

// Statements is a set of statement names in least-recently-used order. It
// is not safe for concurrent use (its Conn's holder owns it).
type Statements struct {
	order *list.List // of string, least recently used at the front
	at    map[string]*list.Element
}

// NewStatements returns an empty set.
func NewStatements() *Statements {
	return &Statements{order: list.New(), at: map[string]*list.Element{}}
}

// Has reports whether name is prepared, and marks it used.
func (s *Statements) Has(name string) bool {
	e, ok := s.at[name]
	if ok {
		s.order.MoveToBack(e)
	}
	return ok
}

// Add records name as prepared (most recently used).
func (s *Statements) Add(name string) {
	if e, ok := s.at[name]; ok {
		s.order.MoveToBack(e)
		return
	}
	s.at[name] = s.order.PushBack(name)
}

// Remove forgets name.
func (s *Statements) Remove(name string) {
	if e, ok := s.at[name]; ok {
		s.order.Remove(e)
		delete(s.at, name)
	}
}

// Len is the number of statements.
func (s *Statements) Len() int { return len(s.at) }

// Clear forgets every statement.
func (s *Statements) Clear() {
	s.order.Init()
	clear(s.at)
}

// Evict removes and returns up to n least recently used names for which
// keep is false.
func (s *Statements) Evict(n int, keep func(string) bool) []string {
	var out []string
	for e := s.order.Front(); e != nil && len(out) < n; {
		next := e.Next()
		name := e.Value.(string)
		if !keep(name) {
			s.order.Remove(e)
			delete(s.at, name)
			out = append(out, name)
		}
		e = next
	}
	return out
}
