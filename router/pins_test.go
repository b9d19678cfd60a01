package router

import "testing"

// TestBindsConnection: the pins a pooler must not carry across backends
// are the ones the classifier produces for those statements; settings it
// can replay are not.
func TestBindsConnection(t *testing.T) {
	c := NewClassifier(Options{})
	for sql, want := range map[string]bool{
		"LISTEN chan":                             true,
		"SELECT pg_advisory_lock(1)":              true,
		"CREATE TEMP TABLE t (x int)":             true,
		"DECLARE c CURSOR WITH HOLD FOR SELECT 1": true,
		"PREPARE p AS SELECT 1":                   true,
		"SELECT set_config('a.b', 'c', false)":    true,
		"SET ROLE auditor":                        true,
		"SELECT nextval('s')":                     false,
		"SET search_path = app":                   false,
	} {
		st := c.Classify(sql)
		if len(st.Pins) == 0 {
			t.Errorf("%s: no pins", sql)
			continue
		}
		got := false
		for _, p := range st.Pins {
			got = got || BindsConnection(p)
		}
		if got != want {
			t.Errorf("%s: pins %v bind the connection: %v, want %v", sql, st.Pins, got, want)
		}
	}
}
