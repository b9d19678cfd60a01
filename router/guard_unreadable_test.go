package router

import (
	"os"
	"os/exec"
	"strings"
	"testing"
)

// guardBypasses are statements under limits.max_parse_bytes that
// libpg_query cannot survive (SIGSEGV in cgo, seen on the test machine at
// 40,000 joins) but whose nesting Depth does not see: text the lexer
// cannot read (U&'…', or an E'…' string continued on the next line) makes
// Depth fall back to rawDepth, which counts operator characters and
// brackets but none of the keyword chains (JOIN, UNION, NOT) Depth itself
// counts.
func guardBypasses() map[string]string {
	return map[string]string{
		"U& then 40,000 CROSS JOINs":      "SELECT U&'x' FROM t0" + strings.Repeat(" CROSS JOIN t", 40000),
		"U& then 69,000 UNIONs":           "SELECT U&'x'" + strings.Repeat(" UNION SELECT 1", 69000),
		"E'' continued then 40,000 JOINs": "SELECT E'a'\n'b' FROM t0" + strings.Repeat(" CROSS JOIN t", 40000),
	}
}

// TestParserGuardSeesKeywordChainsAfterUnreadableText: Parsable must keep
// these from libpg_query.
func TestParserGuardSeesKeywordChainsAfterUnreadableText(t *testing.T) {
	for name, sql := range guardBypasses() {
		if len(sql) > DefaultMaxParseBytes {
			t.Fatalf("%s: %d bytes, over max_parse_bytes: not a bypass", name, len(sql))
		}
		if ok, _ := Parsable(sql, 0, 0); ok {
			t.Errorf("%s (%d bytes): Parsable = true, Depth = %d: it reaches libpg_query", name, len(sql), Depth(sql, 0))
		}
	}
}

// TestClassifyOfGuardBypassDoesNotCrash runs Classify on each statement
// in a child process (a SIGSEGV in cgo cannot be recovered and would end
// this test binary): the child must exit normally.
func TestClassifyOfGuardBypassDoesNotCrash(t *testing.T) {
	if name := os.Getenv("PGSPLIT_GUARD_BYPASS_CHILD"); name != "" {
		st := NewClassifier(Options{}).Classify(guardBypasses()[name])
		t.Logf("classified: unparsed=%v reason=%q", st.Unparsed, st.Reason)
		return
	}
	if testing.Short() {
		t.Skip("runs child processes")
	}
	for name := range guardBypasses() {
		cmd := exec.Command(os.Args[0], "-test.run=^TestClassifyOfGuardBypassDoesNotCrash$")
		cmd.Env = append(os.Environ(), "PGSPLIT_GUARD_BYPASS_CHILD="+name)
		out, err := cmd.CombinedOutput()
		if err != nil {
			first := string(out)
			if i := strings.Index(first, "\n\n"); i > 0 {
				first = first[:i]
			}
			t.Errorf("%s: Classify in a child process: %v\n%s", name, err, first)
		}
	}
}

// TestDepthCountsUnaryOperatorsApart: "- - - x" is three nested A_Exprs
// (prefix operators), but Depth counts a run of operator tokens as one
// operator even when whitespace separates them, so 9,000 of them estimate
// as depth 1. (The grammar's stack stops right-recursive chains near
// 10,000, which libpg_query survived here, so this is an underestimate the
// fuzz target's name promises against rather than a crash.)
func TestDepthCountsUnaryOperatorsApart(t *testing.T) {
	for _, op := range []string{"- ", "~ ", "+ "} {
		sql := "SELECT " + strings.Repeat(op, 3000) + "x"
		if d := Depth(sql, 0); d < 3000 {
			t.Errorf("%q × 3000: Depth = %d, want ≥ 3000", op, d)
		}
	}
}

// TestRunsUserCodeOfUnparsedStatement: a statement the guard keeps from
// the parser (over max_parse_depth, here 1,500 terms that PostgreSQL runs
// without trouble) is never looked into, so RunsUserCode cannot see the
// function it calls: the connection goes back to the pool without the
// reset after functions, and the function's session state reaches the
// next client (test/review_test.go shows it end to end). The pins a
// statement names (pg_advisory_lock, set_config(…, false)) are missed the
// same way.
func TestRunsUserCodeOfUnparsedStatement(t *testing.T) {
	c := NewClassifier(Options{})
	for _, sql := range []string{
		"SELECT leak_set_tenant('77'), 1" + strings.Repeat("+1", 1500),
		"SELECT pg_advisory_lock(42), 1" + strings.Repeat("+1", 1500),
		"SELECT set_config('app.tenant', '77', false), 1" + strings.Repeat("+1", 1500),
	} {
		st := c.Classify(sql)
		if !st.Unparsed {
			t.Fatalf("%.40s…: not kept from the parser", sql)
		}
		if !c.RunsUserCode(st) {
			t.Errorf("%.40s… (unparsed, %s): RunsUserCode = false: no reset after it", sql, st.Reason)
		}
	}
}
