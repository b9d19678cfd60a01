package proxy

import (
	"slices"
	"testing"
)

// A server connection gets exactly the statements that turn its settings
// into the client's: SETs for what differs, RESETs for what the client does
// not have (another client's, under transaction pooling), nothing when
// they agree.
func TestClientStateDiffTurnsConnectionSettingsIntoTheClients(t *testing.T) {
	startup := map[string]string{"datestyle": "SET datestyle TO 'ISO'"}
	cases := []struct {
		name  string
		steps func(c *clientState)
		have  map[string]string
		want  []string
	}{
		{"fresh connection gets the startup value", func(c *clientState) {}, map[string]string{},
			[]string{"SET datestyle TO 'ISO'"}},
		{"nothing to do when they agree", func(c *clientState) {}, map[string]string{"datestyle": "SET datestyle TO 'ISO'"},
			nil},
		{"a SET is replayed", func(c *clientState) { c.set("search_path", "app, public") },
			map[string]string{"datestyle": "SET datestyle TO 'ISO'"},
			[]string{`SET "search_path" TO app, public`}},
		{"another client's setting is reset", func(c *clientState) {},
			map[string]string{"datestyle": "SET datestyle TO 'ISO'", "work_mem": "SET work_mem TO '1GB'"},
			[]string{`RESET "work_mem"`}},
		{"RESET goes back to the startup value", func(c *clientState) {
			c.set("datestyle", "'German'")
			c.reset("datestyle")
		}, map[string]string{"datestyle": `SET "datestyle" TO 'German'`},
			[]string{"SET datestyle TO 'ISO'"}},
		{"RESET of a setting not in the startup packet is the server default", func(c *clientState) {
			c.set("work_mem", "'64MB'")
			c.reset("work_mem")
		}, map[string]string{"datestyle": "SET datestyle TO 'ISO'", "work_mem": `SET "work_mem" TO '64MB'`},
			[]string{`RESET "work_mem"`}},
		{"RESET ALL keeps only the startup parameters", func(c *clientState) {
			c.set("work_mem", "'64MB'")
			c.set("datestyle", "'German'")
			c.resetAll()
		}, map[string]string{},
			[]string{"SET datestyle TO 'ISO'"}},
		{"an unknown value is set again", func(c *clientState) {},
			map[string]string{"datestyle": unknownSetting},
			[]string{"SET datestyle TO 'ISO'"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := newClientState()
			c.login(startup)
			tc.steps(c)
			if got, want := c.differs(tc.have), len(tc.want) > 0; got != want {
				t.Fatalf("differs = %v, want %v", got, want)
			}
			got := c.diff(tc.have)
			slices.Sort(got)
			if !slices.Equal(got, tc.want) {
				t.Fatalf("diff = %q, want %q", got, tc.want)
			}
			if c.differs(tc.have) {
				t.Fatalf("after diff the connection still differs: %v", tc.have)
			}
		})
	}
}

// A change whose outcome is unknown is kept or undone by what its
// connection reports once it has answered everything: an error outside a
// transaction or a rollback inside one undoes it, a ROLLBACK TO SAVEPOINT
// too; an error inside a transaction that commits does not; nothing is
// decided while the connection still owes answers.
func TestClientStateTentativeChangeKeptOrUndoneByOutcome(t *testing.T) {
	before := connMarks{errs: 3, rollbacks: 1}
	cases := []struct {
		name      string
		inTx      bool
		savepoint bool
		after     connOutcome
		kept      bool // the SET is in the settings after settle
		open      bool // still unsettled
	}{
		{"autocommit SET that succeeded", false, false, connOutcome{connMarks: before}, true, false},
		{"autocommit SET the server refused", false, false, connOutcome{connMarks: connMarks{errs: 4, rollbacks: 1}}, false, false},
		{"SET in a transaction that committed after an error elsewhere", true, false, connOutcome{connMarks: connMarks{errs: 4, rollbacks: 1}}, true, false},
		{"SET in a transaction that rolled back", true, false, connOutcome{connMarks: connMarks{errs: 3, rollbacks: 2}}, false, false},
		{"SET before a ROLLBACK TO SAVEPOINT", true, true, connOutcome{connMarks: before}, false, false},
		{"connection still busy", true, false, connOutcome{busy: true, connMarks: connMarks{errs: 9, rollbacks: 9}}, true, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := newClientState()
			c.login(map[string]string{})
			u := new(upstream)
			c.open(u, before, tc.inTx, nil)
			c.set("work_mem", "'64MB'")
			if tc.savepoint {
				c.rolledBackToSavepoint(u)
			}
			stmts, undone := c.settle(func(got *upstream) connOutcome {
				if got != u {
					t.Fatalf("settle asked about another connection")
				}
				return tc.after
			})
			if stmts != nil {
				t.Fatalf("statements restored though none changed: %v", stmts)
			}
			_, kept := c.setting("work_mem")
			if kept != tc.kept || undone == tc.kept || c.pending() != tc.open {
				t.Fatalf("kept %v undone %v open %v, want kept %v open %v", kept, undone, c.pending(), tc.kept, tc.open)
			}
		})
	}
}

// Changes on two connections are settled apart, and the first snapshot of
// a connection is the one restored: a second SET there before the outcome
// is known does not move it. A failed DISCARD ALL gives the prepared
// statements back.
func TestClientStateSettlesEachConnectionFromItsFirstSnapshot(t *testing.T) {
	c := newClientState()
	c.login(map[string]string{})
	primary, replica := new(upstream), new(upstream)
	stmts := map[string]*clientStmt{"s1": {}}

	c.open(primary, connMarks{}, false, nil)
	c.set("a", "'1'")
	c.open(primary, connMarks{errs: 7}, false, stmts) // a later change on the same connection
	c.set("b", "'2'")
	c.open(replica, connMarks{}, false, nil)
	c.set("c", "'3'")

	outcome := map[*upstream]connOutcome{
		primary: {connMarks: connMarks{errs: 1}}, // failed, counted from the first snapshot
		replica: {busy: true},
	}
	restored, undone := c.settle(func(u *upstream) connOutcome { return outcome[u] })
	if !undone || restored["s1"] == nil {
		t.Fatalf("undone %v, statements restored %v: want both", undone, restored)
	}
	for _, name := range []string{"a", "b"} {
		if _, ok := c.setting(name); ok {
			t.Errorf("setting %s survived the primary's failure (its snapshot predates it)", name)
		}
	}
	if !c.pending() {
		t.Fatal("the busy replica's change was settled")
	}
	outcome[replica] = connOutcome{}
	if _, undone := c.settle(func(u *upstream) connOutcome { return outcome[u] }); undone || c.pending() {
		t.Fatalf("the replica's change: undone %v, pending %v; want kept and settled", undone, c.pending())
	}
}
