package router

import (
	"slices"
	"testing"
)

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

// TestTempSchemaStatementsStayOnThePrimary: a statement naming pg_temp (or
// pg_temp_N) as a qualifier uses the session's own temporary objects,
// which exist only on the primary backend that made them; DDL there pins
// the session. Mentions in literals, comments or other names do not count.
func TestTempSchemaStatementsStayOnThePrimary(t *testing.T) {
	c := NewClassifier(Options{})
	for _, tc := range []struct {
		sql     string
		primary bool
		pin     bool
	}{
		{"CREATE TYPE pg_temp.pair AS (a int, b text)", true, true},
		{"CREATE DOMAIN pg_temp.pos AS int CHECK (VALUE > 0)", true, true},
		{"SELECT (('(7,x)')::pg_temp.pair).a", true, false},
		{"SELECT '(1,a)'::PG_TEMP.pair", true, false},
		{`SELECT * FROM "pg_temp".t`, true, false},
		{"SELECT * FROM pg_temp_3.t", true, false},
		{"SELECT x FROM t WHERE y = $1::pg_temp.pos", true, false},
		{"SELECT 'pg_temp.pair'", false, false},
		{"SELECT 1 -- pg_temp.pair", false, false},
		{"SELECT pg_temp_x.a FROM pg_temp_x", false, false},
		{`SELECT * FROM "PG_TEMP".t`, false, false},
		{"SELECT pg_my_temp_schema()", false, false},
	} {
		st := c.Classify(tc.sql)
		if got := st.Target == Primary; got != tc.primary {
			t.Errorf("%s: to %v (%s), want the primary: %v", tc.sql, st.Target, st.Reason, tc.primary)
		}
		if got := slices.Contains(st.Pins, PinTempTable); got != tc.pin {
			t.Errorf("%s: pins %v, want the temp pin: %v", tc.sql, st.Pins, tc.pin)
		}
	}
}

// TestStatementsThatNeedADatabaseToThemselves: DROP DATABASE, ALTER
// DATABASE … RENAME and CREATE DATABASE … TEMPLATE name the database the
// proxy must let go of first; other statements name none.
func TestStatementsThatNeedADatabaseToThemselves(t *testing.T) {
	c := NewClassifier(Options{})
	for sql, want := range map[string]string{
		"DROP DATABASE x": "x",
		`DROP DATABASE IF EXISTS "My Db" WITH (FORCE)`: "My Db",
		"ALTER DATABASE x RENAME TO y":                 "x",
		"CREATE DATABASE d TEMPLATE src":               "src",
		`CREATE DATABASE d WITH TEMPLATE = "Src"`:      "Src",
		"CREATE DATABASE d":                            "",
		"ALTER DATABASE x SET work_mem = '8MB'":        "",
		"DROP TABLE x":                                 "",
	} {
		if got := c.Classify(sql).FreesDatabase; got != want {
			t.Errorf("%s: FreesDatabase %q, want %q", sql, got, want)
		}
	}
}
