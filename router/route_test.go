package router

import "testing"

// TestSessionRoute walks one session through the rules that depend on its
// state; each step shows a rule both firing and not firing.
func TestSessionRoute(t *testing.T) {
	c := NewClassifier(Options{})
	s := NewSession(true)
	steps := []struct {
		sql  string
		txOn Target
		want Target
	}{
		{"SELECT 1", HintNone, Replica},
		{"SELECT 1", Primary, Primary},         // inside a transaction on the primary
		{"SELECT 1", Replica, Replica},         // inside a read-only transaction
		{"BEGIN", HintNone, Primary},           // read-write transaction
		{"BEGIN READ ONLY", HintNone, Replica}, // read-only transaction
		{"START TRANSACTION ISOLATION LEVEL SERIALIZABLE, READ ONLY, DEFERRABLE", HintNone, Primary}, // a standby refuses serializable
		{"BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY", HintNone, Replica},
		{"/* pgsplit:primary */ SELECT 1", HintNone, Primary}, // hint
		{"/* pgsplit:replica */ DELETE FROM t", HintNone, Primary},
		{"CREATE TEMP TABLE tt (x int)", HintNone, Primary},
		{"SELECT 1", HintNone, Primary}, // pinned by the temp table
		{"BEGIN READ ONLY", HintNone, Primary},
		{"DISCARD ALL", HintNone, Primary},
		{"SELECT 1", HintNone, Replica}, // unpinned
	}
	for i, st := range steps {
		stmt := c.Classify(st.sql)
		d := s.Route(stmt, st.txOn)
		if d.Target != st.want {
			t.Errorf("step %d %q (tx on %v): got %v (%s), want %v", i, st.sql, st.txOn, d.Target, d.Reason, st.want)
		}
		s.Observe(stmt)
	}
}

func TestSessionOverride(t *testing.T) {
	c := NewClassifier(Options{})
	s := NewSession(true)
	set := c.Classify("SET pgsplit.route = primary")
	if d := s.Route(set, HintNone); !d.Local {
		t.Fatalf("SET pgsplit.route must be answered locally: %+v", d)
	}
	if v, err := s.ApplySetting(set); err != nil || v != "primary" {
		t.Fatalf("%q %v", v, err)
	}
	if d := s.Route(c.Classify("SELECT 1"), HintNone); d.Target != Primary {
		t.Fatalf("override primary: got %v", d.Target)
	}
	if _, err := s.ApplySetting(c.Classify("SET pgsplit.route = 'sideways'")); err == nil {
		t.Fatal("bad value accepted")
	}
	if v, _ := s.ApplySetting(c.Classify("RESET pgsplit.route")); v != "auto" {
		t.Fatalf("after RESET: %q", v)
	}
	if d := s.Route(c.Classify("SELECT 1"), HintNone); d.Target != Replica {
		t.Fatalf("auto: got %v", d.Target)
	}
	off := NewSession(false)
	if d := off.Route(c.Classify("SELECT 1"), HintNone); d.Target != Primary {
		t.Fatalf("offloading off: got %v", d.Target)
	}
}

// Generation moves exactly when the set of pins changes (the proxy
// recomputes its connection pins only then).
func TestSessionGeneration(t *testing.T) {
	s := NewSession(true)
	g := s.Generation()
	step := func(what string, changed bool, f func()) {
		t.Helper()
		f()
		if moved := s.Generation() != g; moved != changed {
			t.Fatalf("%s: generation moved %v, want %v", what, moved, changed)
		}
		g = s.Generation()
	}
	step("pin", true, func() { s.Observe(Statement{Pins: []string{"listen"}}) })
	step("same pin again", false, func() { s.Observe(Statement{Pins: []string{"listen"}}) })
	step("Pin", true, func() { s.Pin("x") })
	step("Pin again", false, func() { s.Pin("x") })
	step("unpin absent", false, func() { s.Observe(Statement{Unpins: []string{"temp table"}}) })
	step("unpin", true, func() { s.Observe(Statement{Unpins: []string{"listen"}}) })
	step("unpin all", true, func() { s.Observe(Statement{Unpins: []string{"all"}}) })
	step("unpin all when empty", false, func() { s.Observe(Statement{Unpins: []string{"all"}}) })
}
