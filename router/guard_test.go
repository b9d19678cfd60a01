package router

import (
	"strings"
	"testing"
)

// deepStatements are statements libpg_query crashes on (SIGSEGV during cgo
// execution) or nearly so, from the reports and beyond.
func deepStatements() map[string]string {
	return map[string]string{
		"100,000 terms":          "SELECT 1" + strings.Repeat("+1", 100000),
		"30,000 terms":           "SELECT 1" + strings.Repeat("+1", 30000),
		"5,000 parentheses":      "SELECT " + strings.Repeat("(", 5000) + "1" + strings.Repeat(")", 5000),
		"3,000-deep ARRAY":       "SELECT ARRAY" + strings.Repeat("[", 3000) + "1" + strings.Repeat("]", 3000),
		"30,000 UNIONs":          "SELECT 1" + strings.Repeat(" UNION SELECT 1", 30000),
		"30,000 JOINs":           "SELECT * FROM t0" + strings.Repeat(" JOIN t USING (a)", 30000),
		"30,000 NOTs":            "SELECT " + strings.Repeat("NOT ", 30000) + "true",
		"30,000 casts":           "SELECT 1" + strings.Repeat("::int", 30000),
		"30,000 OPERATOR(+)":     "SELECT 1" + strings.Repeat(" OPERATOR(pg_catalog.+) 1", 30000),
		"30,000 CASEs":           "SELECT " + strings.Repeat("CASE WHEN true THEN ", 30000) + "1" + strings.Repeat(" END", 30000),
		"terms in a subquery":    "SELECT (SELECT 1" + strings.Repeat("-1", 30000) + ")",
		"after an unterminated":  "SELECT U&'x' " + strings.Repeat("(", 3000),
		"terms after a string":   "SELECT 'a;b' || 1" + strings.Repeat("*2", 30000),
		"second statement deep":  "SELECT 1; SELECT 1" + strings.Repeat("+1", 30000),
		"operators in a comment": "SELECT 1 /* " + strings.Repeat("+", 10) + " */" + strings.Repeat("+1", 30000),
	}
}

// TestParserGuardKeepsDeepStatementsFromTheParser: statements that would
// crash libpg_query (and with it the process: without the guard this test
// binary dies with SIGSEGV) go to the primary unparsed.
func TestParserGuardKeepsDeepStatementsFromTheParser(t *testing.T) {
	c := NewClassifier(Options{})
	for name, sql := range deepStatements() {
		_ = c.Classify(sql) // the fast path may take it; it must not crash either
		st := c.parse(sql, HintNone)
		if !st.Unparsed || st.Target != Primary || st.Reason != ReasonTooDeep {
			t.Errorf("%s: Classify = %+v, want unparsed, primary, %q", name, st, ReasonTooDeep)
		}
	}
}

// TestParserGuardLetsOrdinaryStatementsThrough: what people and ORMs write
// is parsed as before, long IN lists, VALUES lists and JSON literals
// included, however many commas or operator characters inside literals.
func TestParserGuardLetsOrdinaryStatementsThrough(t *testing.T) {
	ids := make([]string, 50000)
	for i := range ids {
		ids[i] = "1"
	}
	cases := map[string]string{
		"IN list of 50,000":     "SELECT * FROM t WHERE id IN (" + strings.Join(ids, ",") + ")",
		"VALUES of 20,000 rows": "INSERT INTO t VALUES " + strings.Repeat("(1, -2, 'a+b'),", 19999) + "(1, -2, 'x')",
		"operators in a string": "SELECT '" + strings.Repeat("+-*/", 20000) + "'",
		"100 parentheses":       "SELECT " + strings.Repeat("(", 100) + "1" + strings.Repeat(")", 100),
		"900 terms":             "SELECT 1" + strings.Repeat("+1", 900),
		"ANDs are flat":         "SELECT 1 WHERE true" + strings.Repeat(" AND a = 1", 5000),
	}
	c := NewClassifier(Options{})
	for name, sql := range cases {
		if st := c.parse(sql, HintNone); st.Unparsed {
			t.Errorf("%s: kept from the parser (%s)", name, st.Reason)
		}
	}
	if ok, why := Parsable(strings.Repeat("x", DefaultMaxParseBytes+1), 0, 0); ok || why != ReasonTooLarge {
		t.Errorf("a statement over the size limit: Parsable = %v, %q", ok, why)
	}
	if ok, _ := Parsable("SELECT 1"+strings.Repeat("+1", 50), 10, 0); ok {
		t.Error("a lower max_parse_depth is not honoured")
	}
}

// TestParseErrorReasonQuotesNoStatementText: the reason of an unparsable
// statement is logged whatever log.redact says, so it must not carry the
// token the parser stopped at (a password, a name).
func TestParseErrorReasonQuotesNoStatementText(t *testing.T) {
	c := NewClassifier(Options{})
	for _, sql := range []string{
		"SELECT 1 FROM t WHERE pw = 'hunter2' hunter3",
		"ALTER ROLE app PASSWORD hunter2 hunter3",
		"SELECT \"hunter3\" \"hunter3\" \"hunter3\"",
	} {
		st := c.parse(sql, HintNone)
		if !strings.HasPrefix(st.Reason, "parse error") {
			t.Fatalf("%q: reason %q, want a parse error", sql, st.Reason)
		}
		if strings.Contains(st.Reason, "hunter") {
			t.Errorf("%q: reason %q quotes the statement", sql, st.Reason)
		}
	}
}

// TestRunsUserCode: DO, CALL and functions that are neither safe
// built-ins nor known non-volatile to the catalog run code that may leave
// session state behind.
func TestRunsUserCode(t *testing.T) {
	catalog := map[string]bool{"app.stable_f": false, "app.volatile_f": true}
	c := NewClassifier(Options{ReadFunctions: []string{"app.lookup"}, Volatile: func(name string) (bool, bool) {
		v, ok := catalog[name]
		return v, ok
	}})
	cases := map[string]bool{
		"DO $$BEGIN PERFORM set_config('app.tenant', '42', false); END$$": true,
		"CALL app.proc()":                      true,
		"SELECT app.unknown_f()":               true,
		"SELECT app.volatile_f()":              true,
		"SELECT app.lookup(1)":                 true, // read-only is not state-free
		"SELECT 1; DO $$BEGIN END$$":           true,
		"SELECT app.stable_f()":                false,
		"SELECT now(), lower('A')":             false,
		"SELECT nextval('s')":                  false, // pinned, not reset
		"SELECT pg_advisory_lock(1)":           false, // pinned
		"SELECT set_config('a.b', 'c', false)": false, // pinned
		"SELECT * FROM t WHERE id = $1":        false,
		"INSERT INTO t VALUES (1)":             false,
	}
	for sql, want := range cases {
		if got := c.RunsUserCode(c.Classify(sql)); got != want {
			t.Errorf("RunsUserCode(%q) = %v, want %v", sql, got, want)
		}
	}
}

// FuzzDepthNeverUnderestimatesNesting: Depth is at least the bracket
// nesting of what the lexer reads as code, and never panics.
func FuzzDepthNeverUnderestimatesNesting(f *testing.F) {
	f.Add("SELECT ((1+2)*[3])")
	f.Add("SELECT 'a(' || \"b(\" -- (\n")
	f.Add("SELECT U&'x' ((((")
	f.Fuzz(func(t *testing.T, sql string) {
		d := Depth(sql, 0)
		if d < 0 {
			t.Fatalf("Depth(%q) = %d", sql, d)
		}
		if !strings.ContainsAny(sql, "'\"$-/eEuU") { // no literals or comments: raw nesting counts
			open, max := 0, 0
			for i := 0; i < len(sql); i++ {
				switch sql[i] {
				case '(', '[':
					open++
					if open > max {
						max = open
					}
				case ')', ']':
					if open > 0 {
						open--
					}
				}
			}
			if d < max {
				t.Fatalf("Depth(%q) = %d < nesting %d", sql, d, max)
			}
		}
	})
}
