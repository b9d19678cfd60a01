package router

import (
	"slices"
	"testing"
)

// TestRelationsNamesEveryTable: every relation a statement names is listed
// (folded as PostgreSQL folds it), whatever the syntax around it.
func TestRelationsNamesEveryTable(t *testing.T) {
	cases := []struct {
		sql  string
		want []string
	}{
		{"SELECT * FROM messages WHERE room_id = $1", []string{"messages", "room_id"}},
		{"select a.x from A, b join C on true", []string{"a", "x", "b", "c"}},
		{`SELECT 1 FROM "Mixed" m, public.select s`, []string{"Mixed", "m", "public", "select", "s"}},
		{"/* pgsplit:replica */ TABLE t", []string{"table", "t"}},
		{"SELECT (SELECT max(x) FROM inner_t) FROM outer_t WHERE y IN (SELECT z FROM t3)", []string{"max", "x", "inner_t", "outer_t", "y", "z", "t3"}},
		{"INSERT INTO t (a) VALUES ('from x')", []string{"insert", "t", "a", "values"}},
	}
	for _, c := range cases {
		got, ok := Relations(c.sql, nil)
		if !ok {
			t.Errorf("%q: not ok", c.sql)
			continue
		}
		for _, w := range c.want {
			if !slices.Contains(got, w) {
				t.Errorf("%q: %q missing from %q", c.sql, w, got)
			}
		}
		if slices.Contains(got, "from x") || slices.Contains(got, "x'") {
			t.Errorf("%q: a string literal's text was taken for a name: %q", c.sql, got)
		}
	}
	for _, bad := range []string{`SELECT * FROM U&"d\0061t"`, "SELECT 'unterminated", `SELECT * FROM "` + string(make([]byte, 70)) + `"`} {
		if _, ok := Relations(bad, nil); ok {
			t.Errorf("%q: want not ok (every relation assumed)", bad)
		}
	}
}

// TestWritesNamedOnly: only plain DML with built-in functions writes just
// what it names; DDL, DO, CALL, nextval and user functions may write
// anything.
func TestWritesNamedOnly(t *testing.T) {
	c := NewClassifier(Options{})
	for sql, want := range map[string]bool{
		"INSERT INTO t VALUES (1)":                              true,
		"UPDATE t SET x = now() WHERE id = 1":                   true,
		"WITH d AS (DELETE FROM a RETURNING *) SELECT * FROM d": true,
		"COPY t FROM STDIN":                                     true,
		"TRUNCATE a, b":                                         true,
		"INSERT INTO t VALUES (nextval('s'))":                   false,
		"INSERT INTO t VALUES (my_func(1))":                     false,
		"CREATE TABLE x (a int)":                                false,
		"DO $$BEGIN INSERT INTO a VALUES (1); END$$":            false,
		"CALL p()":            false,
		"SELECT app.touch(1)": false,
	} {
		if got := c.WritesNamedOnly(c.Classify(sql)); got != want {
			t.Errorf("WritesNamedOnly(%q) = %v, want %v", sql, got, want)
		}
	}
	if c.ReadsNamedOnly(c.Classify("SELECT my_stable_func(1)")) {
		t.Error("a read calling a user function must count as reading every relation")
	}
	if !c.ReadsNamedOnly(c.Classify("SELECT lower(name), count(*) FROM t GROUP BY 1")) {
		t.Error("built-in functions read nothing but what the text names")
	}
}
