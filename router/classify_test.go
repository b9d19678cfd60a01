package router

import (
	"bufio"
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"
)

// goldenOptions is the configuration the golden cases are written for.
func goldenOptions() Options {
	catalog := map[string]bool{
		"stable_fn": false, "public.stable_fn": false, "imm_fn": false,
		"vol_fn": true, "public.vol_fn": true, "vol_but_read": true,
		// The write lists win over a catalog that says otherwise.
		"audit_log": false, "nextval": false,
	}
	return Options{
		WriteFunctions: []string{"audit_log", "App.Touch"},
		ReadFunctions:  []string{"app.lookup", " my_read_fn ", "vol_but_read"},
		Volatile: func(name string) (bool, bool) {
			v, ok := catalog[name]
			return v, ok
		},
	}
}

type goldenCase struct {
	line                 int
	sql                  string
	target, kind, reason string
	extras               map[string]string
}

func unescapeSQL(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+1 < len(s) {
			i++
			switch s[i] {
			case 'n':
				b.WriteByte('\n')
			case 't':
				b.WriteByte('\t')
			case 'r':
				b.WriteByte('\r')
			default:
				b.WriteByte(s[i])
			}
			continue
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

func readGolden(t testing.TB) []goldenCase {
	t.Helper()
	f, err := os.Open("testdata/classify_cases.tsv")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var cases []goldenCase
	sc := bufio.NewScanner(f)
	for line := 1; sc.Scan(); line++ {
		text := sc.Text()
		if text == "" || strings.HasPrefix(text, "#") {
			continue
		}
		cols := strings.Split(text, "\t")
		if len(cols) < 4 || len(cols) > 5 {
			t.Fatalf("testdata/classify_cases.tsv:%d: want 4 or 5 tab-separated columns, got %d", line, len(cols))
		}
		gc := goldenCase{line: line, sql: unescapeSQL(cols[0]), target: cols[1], kind: cols[2], reason: cols[3], extras: map[string]string{}}
		if len(cols) == 5 {
			for _, kv := range strings.Split(cols[4], "; ") {
				k, v, ok := strings.Cut(kv, "=")
				if !ok {
					t.Fatalf("testdata/classify_cases.tsv:%d: extra %q is not key=value", line, kv)
				}
				gc.extras[k] = v
			}
		}
		cases = append(cases, gc)
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return cases
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

func ptrBool(p *bool) string {
	if p == nil {
		return "nil"
	}
	return fmt.Sprint(*p)
}

func txString(tx *TxOptions) string {
	if tx == nil {
		return ""
	}
	return fmt.Sprintf("ro=%s iso=%s def=%s", ptrBool(tx.ReadOnly), tx.Isolation, ptrBool(tx.Deferrable))
}

func kindsString(ks []Kind) string {
	var s []string
	for _, k := range ks {
		s = append(s, k.String())
	}
	return strings.Join(s, "|")
}

// check compares st with the case and returns the differences, one per line.
func (gc goldenCase) check(st Statement) []string {
	var diffs []string
	diff := func(what, got, want string) {
		diffs = append(diffs, fmt.Sprintf("%s: got %q, want %q", what, got, want))
	}
	if st.Target.String() != gc.target {
		diff("target", st.Target.String(), gc.target)
	}
	if st.Kind.String() != gc.kind {
		diff("kind", st.Kind.String(), gc.kind)
	}
	if !strings.Contains(st.Reason, gc.reason) {
		diff("reason", st.Reason, "…"+gc.reason+"…")
	}
	for k, want := range gc.extras {
		var got string
		switch k {
		case "fast":
			continue // checked by the caller
		case "hint":
			got = st.Hint.String()
			if st.Hint == HintNone {
				got = "none"
			}
		case "session":
			got = yesNo(st.BySession)
		case "readonly":
			got = yesNo(st.ReadOnly)
		case "local":
			got = yesNo(st.SetLocal)
		case "n":
			got = fmt.Sprint(st.Statements)
		case "kinds":
			got = kindsString(st.Kinds)
		case "pins":
			got = strings.Join(st.Pins, "|")
		case "unpins":
			got = strings.Join(st.Unpins, "|")
		case "funcs":
			got = strings.Join(st.Funcs, "|")
		case "set":
			got = st.SetName
		case "value":
			got = st.SetValue
		case "sqlvalue":
			got = st.SetValueSQL
		case "tx":
			got = txString(st.Tx)
		default:
			diffs = append(diffs, "unknown extra "+k)
			continue
		}
		if got != want {
			diff(k, got, want)
		}
	}
	slices.Sort(diffs)
	return diffs
}

func describe(st Statement) string {
	return fmt.Sprintf("%s %s %q hint=%s session=%v readonly=%v n=%d pins=%v unpins=%v funcs=%v set=%q value=%q tx=%s",
		st.Target, st.Kind, st.Reason, st.Hint, st.BySession, st.ReadOnly, st.Statements, st.Pins, st.Unpins, st.Funcs, st.SetName, st.SetValue, txString(st.Tx))
}

// TestGoldenCases checks every row of testdata/classify_cases.tsv through
// Classify, through the full parser alone, and through the fast path alone.
func TestGoldenCases(t *testing.T) {
	cases := readGolden(t)
	if len(cases) < 300 {
		t.Fatalf("only %d golden cases", len(cases))
	}
	c := NewClassifier(goldenOptions())
	for _, gc := range cases {
		where := fmt.Sprintf("testdata/classify_cases.tsv:%d: %q", gc.line, gc.sql)
		st := c.Classify(gc.sql)
		if d := gc.check(st); len(d) > 0 {
			t.Errorf("%s\n\tClassify: %s\n\t%s", where, describe(st), strings.Join(d, "\n\t"))
		}
		hint, start := leadingHint(gc.sql)
		parsed := c.parse(gc.sql, hint)
		if d := gc.check(parsed); len(d) > 0 {
			t.Errorf("%s\n\tfull parse: %s\n\t%s", where, describe(parsed), strings.Join(d, "\n\t"))
		}
		fast, ok := c.fastPath(gc.sql, start, hint)
		if want, set := gc.extras["fast"]; set && yesNo(ok) != want {
			t.Errorf("%s\n\tfast path answered: %s, want %s", where, yesNo(ok), want)
		}
		if ok {
			if d := agree(fast, parsed); d != "" {
				t.Errorf("%s\n\tfast path and parser disagree: %s\n\tfast:  %s\n\tparse: %s", where, d, describe(fast), describe(parsed))
			}
		}
	}
}

// agree compares a fast-path answer with the parser's. The parser may list
// more functions: it sees the ones syntax stands for (AT TIME ZONE is
// pg_catalog.timezone).
func agree(fast, parsed Statement) string {
	switch {
	case fast.Target != parsed.Target:
		return "target"
	case fast.Kind != parsed.Kind:
		return "kind"
	case fast.Reason != parsed.Reason:
		return "reason"
	case fast.ReadOnly != parsed.ReadOnly, fast.BySession != parsed.BySession:
		return "readonly/session"
	case fast.Hint != parsed.Hint:
		return "hint"
	case fast.SetName != parsed.SetName:
		return "set name"
	case fast.Statements != parsed.Statements:
		return "statements"
	}
	for _, f := range fast.Funcs {
		if !slices.Contains(parsed.Funcs, f) {
			return "function " + f + " unknown to the parser"
		}
	}
	return ""
}

// TestLargeStatements classifies generated statements of about 100 KB.
func TestLargeStatements(t *testing.T) {
	c := NewClassifier(goldenOptions())
	var in strings.Builder
	for i := 0; in.Len() < 100<<10; i++ {
		if i > 0 {
			in.WriteString(", ")
		}
		fmt.Fprintf(&in, "%d", i)
	}
	list := in.String()
	long := strings.Repeat("x", 100<<10)
	for _, tc := range []struct {
		name, sql string
		target    Target
		reason    string
		fast      bool
	}{
		{"IN list", "SELECT id, name FROM users WHERE id IN (" + list + ")", Replica, reasonSelect, true},
		{"IN list then nextval", "SELECT id FROM users WHERE id IN (" + list + ") AND nextval('s') > 0", Primary, "calls nextval()", false},
		{"IN list then FOR UPDATE", "SELECT id FROM users WHERE id IN (" + list + ") FOR UPDATE", Primary, "SELECT … FOR UPDATE", false},
		{"IN list then a second statement", "SELECT id FROM users WHERE id IN (" + list + "); DELETE FROM users", Primary, "with a write: DELETE", false},
		{"bulk INSERT", "INSERT INTO t (id) VALUES (" + strings.ReplaceAll(list, ", ", "), (") + ")", Primary, "INSERT", false},
		{"long literal hiding a write", "SELECT '" + long + "; DELETE FROM t'", Replica, reasonSelect, true},
		{"long comment", "/* pgsplit:primary */ SELECT 1 /* " + long + " */", Replica, reasonSelect, true},
		{"long dollar quote", "SELECT $q$" + long + "$$ FOR UPDATE $q$", Replica, reasonSelect, true},
	} {
		if len(tc.sql) < 100<<10 {
			t.Fatalf("%s: only %d bytes", tc.name, len(tc.sql))
		}
		st := c.Classify(tc.sql)
		if st.Target != tc.target || !strings.Contains(st.Reason, tc.reason) {
			t.Errorf("%s: got %s %q, want %s %q", tc.name, st.Target, st.Reason, tc.target, tc.reason)
		}
		hint, start := leadingHint(tc.sql)
		if _, ok := c.fastPath(tc.sql, start, hint); ok != tc.fast {
			t.Errorf("%s: fast path answered %v, want %v", tc.name, ok, tc.fast)
		}
		if p := c.parse(tc.sql, hint); p.Target != tc.target {
			t.Errorf("%s: full parse says %s (%s)", tc.name, p.Target, p.Reason)
		}
	}
	if n := c.CacheLen(); n != 0 {
		t.Errorf("statements over %d bytes were cached: %d entries", maxCachedLen, n)
	}
}

// TestWithoutCatalog: with no Options.Volatile, only the built-in safe list
// and read_functions reach a replica.
func TestWithoutCatalog(t *testing.T) {
	c := NewClassifier(Options{ReadFunctions: []string{"app.lookup"}})
	for sql, want := range map[string]Target{
		"SELECT stable_fn(1)":                        Primary,
		"SELECT public.stable_fn(1)":                 Primary,
		"SELECT app.lookup(1)":                       Replica,
		"SELECT lookup(1)":                           Primary,
		"SELECT lower('x'), count(*)":                Replica,
		"SELECT pg_catalog.date_trunc('day', now())": Replica,
		"SELECT myschema.lower('x')":                 Primary,
	} {
		if st := c.Classify(sql); st.Target != want {
			t.Errorf("%q: got %s (%s), want %s", sql, st.Target, st.Reason, want)
		}
	}
}

// TestWriteListsBeatCatalog: a catalog that calls a writer non-volatile, or
// a read list that names it, does not send it to a replica.
func TestWriteListsBeatCatalog(t *testing.T) {
	c := NewClassifier(Options{
		WriteFunctions: []string{"audit_log"},
		ReadFunctions:  []string{"nextval", "audit_log"},
		Volatile:       func(string) (bool, bool) { return false, true },
	})
	for _, sql := range []string{"SELECT nextval('s')", "SELECT audit_log()", "SELECT x.audit_log()", "SELECT pg_advisory_lock(1)", "SELECT pg_is_in_recovery()"} {
		if st := c.Classify(sql); st.Target != Primary {
			t.Errorf("%q: got %s (%s)", sql, st.Target, st.Reason)
		}
	}
	// And the catalog is what lets a user function through.
	if st := c.Classify("SELECT some_fn(1)"); st.Target != Replica {
		t.Errorf("non-volatile per catalog: got %s (%s)", st.Target, st.Reason)
	}
}

func TestNULByte(t *testing.T) {
	c := NewClassifier(Options{})
	for _, sql := range []string{"SELECT 1\x00; DELETE FROM t", "SELECT '\x00'", "\x00"} {
		if st := c.Classify(sql); st.Target != Primary {
			t.Errorf("%q: got %s (%s)", sql, st.Target, st.Reason)
		}
	}
}
