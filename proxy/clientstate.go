package proxy

import "maps"

// clientState is the session state a client set that pgsplit carries to
// every server connection it uses: its settings (from the startup packet
// and SET/RESET), and, for changes whose outcome is not known yet, what
// the state was before them (see tentative). It is pure bookkeeping: no
// I/O, no locks; the session goroutine owns it and tells it what was sent
// and how the connections answered.
type clientState struct {
	startup  map[string]string // the startup parameters: name → statement applying it
	settings map[string]string // every server connection must have these: name → statement
	tents    []*tentative      // changes not settled yet, one per connection
}

func newClientState() *clientState {
	return &clientState{startup: map[string]string{}, settings: map[string]string{}}
}

// login sets the startup parameters (name → statement), which are also
// the first settings.
func (c *clientState) login(startup map[string]string) {
	c.startup = startup
	c.resetAll()
}

// set records SET name TO value (valueSQL as the client wrote it).
func (c *clientState) set(name, valueSQL string) {
	c.settings[name] = "SET " + quoteIdent(name) + " TO " + valueSQL
}

// reset records RESET name: the startup value again, or the server's
// default.
func (c *clientState) reset(name string) {
	if v, ok := c.startup[name]; ok {
		c.settings[name] = v
	} else {
		delete(c.settings, name)
	}
}

// resetAll takes the settings back to the startup parameters (RESET ALL,
// DISCARD ALL).
func (c *clientState) resetAll() {
	clear(c.settings)
	maps.Copy(c.settings, c.startup)
}

// setting returns the statement of a setting, if the client has one.
func (c *clientState) setting(name string) (string, bool) {
	v, ok := c.settings[name]
	return v, ok
}

// differs reports whether have (a server connection's settings, see
// pool.State) differs from the client's.
func (c *clientState) differs(have map[string]string) bool {
	if len(have) != len(c.settings) {
		return true
	}
	for name, stmt := range c.settings {
		if have[name] != stmt {
			return true
		}
	}
	return false
}

// diff returns the statements that turn the settings in have into the
// client's, and records them in have.
func (c *clientState) diff(have map[string]string) []string {
	var q []string
	for name, stmt := range c.settings {
		if have[name] != stmt {
			q = append(q, stmt)
			have[name] = stmt
		}
	}
	for name := range have {
		if _, ok := c.settings[name]; !ok {
			q = append(q, "RESET "+quoteIdent(name))
			delete(have, name)
		}
	}
	return q
}

// tentative is the client's state as it was before changes whose outcome
// is not known yet: a SET the server may refuse, or one inside a
// transaction that may roll back. settle restores it if they failed.
type tentative struct {
	u         *upstream // the connection the changes went to (a key only)
	settings  map[string]string
	stmts     map[string]*clientStmt // nil unless the statements changed
	errs      int64                  // the connection's error count when the first change was sent
	rollbacks int64                  // and its rollback count
	inTx      bool
	undo      bool // a savepoint was rolled back to: undo whatever the end
}

// connMarks are a connection's error and rollback counts (upstream.errs,
// upstream.rollbacks) at some moment.
type connMarks struct{ errs, rollbacks int64 }

// open keeps the state before a change sent to u, unless an earlier
// unsettled change there already did: at marks (u's counts before the
// statement was sent), inside a transaction or not. stmts, when not nil,
// are the client's prepared statements, which the change drops too.
func (c *clientState) open(u *upstream, marks connMarks, inTx bool, stmts map[string]*clientStmt) {
	var t *tentative
	for _, x := range c.tents {
		if x.u == u {
			t = x
		}
	}
	if t == nil {
		t = &tentative{u: u, settings: maps.Clone(c.settings), errs: marks.errs, rollbacks: marks.rollbacks, inTx: inTx}
		c.tents = append(c.tents, t)
	}
	if stmts != nil && t.stmts == nil {
		t.stmts = maps.Clone(stmts)
	}
}

// rolledBackToSavepoint marks the changes on u as undone: pgsplit does not
// follow savepoints, so a ROLLBACK TO counts as undoing all of the
// transaction's changes (the connection's record says unknown already, so
// each is set explicitly later).
func (c *clientState) rolledBackToSavepoint(u *upstream) {
	for _, t := range c.tents {
		if t.u == u {
			t.undo = true
		}
	}
}

// connOutcome is what settle needs to know of a connection now: whether it
// still owes answers or has a transaction open, and its counts.
type connOutcome struct {
	busy bool
	connMarks
}

// settle decides the open changes whose connection has answered everything
// with no transaction open: kept if no error (outside a transaction) and no
// rollback (inside one) followed; otherwise the settings go back to what
// they were. It returns the prepared statements to restore (nil: keep the
// current ones) and whether anything was undone.
func (c *clientState) settle(outcome func(*upstream) connOutcome) (stmts map[string]*clientStmt, undone bool) {
	kept := c.tents[:0]
	for _, t := range c.tents {
		o := outcome(t.u)
		if o.busy {
			kept = append(kept, t)
			continue
		}
		if t.undo || o.rollbacks > t.rollbacks || (!t.inTx && o.errs > t.errs) {
			c.settings = t.settings
			if t.stmts != nil {
				stmts = t.stmts
			}
			undone = true
		}
	}
	clear(c.tents[len(kept):])
	c.tents = kept
	return stmts, undone
}

// pending reports whether a change is still unsettled.
func (c *clientState) pending() bool { return len(c.tents) > 0 }
