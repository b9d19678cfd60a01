package router

import (
	"strings"
	"testing"
)

// FuzzFastPathNeverUnsafe: for any input, the fast path never answers
// Replica when the full parser says the statement needs the primary, and
// nothing panics.
//
// A string the parser rejects is the one exception: the server rejects it
// the same way on a replica, and nothing runs (PostgreSQL parses a whole
// simple-query string before executing any of it).
func FuzzFastPathNeverUnsafe(f *testing.F) {
	for _, gc := range readGolden(f) {
		f.Add(gc.sql)
	}
	for _, s := range []string{
		"SELECT E'\\\\'; DELETE FROM t; --'",
		"SELECT E'a'\n'\\' , $$'; DELETE FROM t; -- $$",
		"SELECT $a$ $b$ $a$; DELETE FROM t",
		"SELECT 1 /* /* */ , 2 */; DELETE FROM t",
		"SELECT U&\"\\006Eextval\"('s')",
		"SELECT x FROM t WHERE y = 'a' -- '\r; DELETE FROM t",
		"SELECT nextval\f('s')",
		"SELECT f(1) FILTER (WHERE nextval('s') > 0)",
		"SELECT (1) nextval('s')",
		"SELECT a AS nextval('s')",
		"SHOW transaction_read_only",
		"SELECT 1e1nextval('s')",
		"VALUES (pg_catalog . nextval ('s'))",
	} {
		f.Add(s)
	}
	c := NewClassifier(goldenOptions())
	f.Fuzz(func(t *testing.T, sql string) {
		st := c.Classify(sql)
		hint, start := leadingHint(sql)
		fast, ok := c.fastPath(sql, start, hint)
		if !ok {
			return
		}
		if st.Target != Replica || fast.Target != Replica {
			t.Fatalf("fast path answered %s for %q", fast.Target, sql)
		}
		parsed := c.parse(sql, hint)
		if parsed.Target == Primary && !strings.HasPrefix(parsed.Reason, "parse error") {
			t.Fatalf("fast path says replica, parser says primary (%s): %q", parsed.Reason, sql)
		}
	})
}
