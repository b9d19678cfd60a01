package router

import "strings"

// The fast path settles the common read from tokens, without the parser. It
// answers only Replica, and only for one statement that starts with SELECT,
// VALUES, TABLE or SHOW and in which nothing can write: no WITH (a CTE may
// write), no INTO, no FOR (locking clause), no INSERT/UPDATE/DELETE/MERGE
// word, and every function call on the built-in safe list or known to be
// non-volatile. Anything else — including anything the tokenizer does not
// understand — is left to the parser (ok == false).
//
// A syntax error the fast path does not notice is harmless: the replica
// rejects the statement exactly as the primary would, and nothing runs.

const (
	reasonSelect = "select without locking clause"
	reasonShow   = "show"
)

// maxIdentLen is NAMEDATALEN-1: PostgreSQL truncates longer identifiers, so
// the fast path leaves them to the parser rather than reason about the cut.
const maxIdentLen = 63

func (c *Classifier) fastPath(sql string, start int, hint Target) (Statement, bool) {
	if strings.IndexByte(sql, 0) >= 0 {
		return Statement{}, false // the server would stop reading at the NUL
	}
	l := lexer{s: sql, pos: start}
	first := l.next()
	if first.kind != tokIdent {
		return Statement{}, false
	}
	word := sql[first.start:first.end]
	switch {
	case equalFold(word, "select"), equalFold(word, "values"), equalFold(word, "table"):
	case equalFold(word, "show"):
		return c.fastShow(&l, hint)
	default:
		return Statement{}, false
	}

	var funcs []string
	depth := 0 // parentheses: an unbalanced statement is left to the parser
	// The three tokens before the current one: p1 is the nearest.
	var p1, p2, p3 token
	for {
		t := l.next()
		switch t.kind {
		case tokEOF:
			if depth != 0 {
				return Statement{}, false
			}
			return Statement{
				Kind: KindSelect, Target: Replica, Reason: reasonSelect, Hint: hint,
				ReadOnly: true, Funcs: funcs, Statements: 1,
			}, true
		case tokBad:
			return Statement{}, false
		case tokIdent:
			if stopWord(sql[t.start:t.end]) || tempSchemaWord(sql[t.start:t.end]) {
				return Statement{}, false
			}
		case tokQIdent:
			if tempSchemaWord(sql[t.start+1 : t.end-1]) {
				return Statement{}, false
			}
		case tokPunct:
			switch sql[t.start] {
			case ';':
				if depth != 0 || !onlySemicolons(&l) {
					return Statement{}, false
				}
				continue // next is EOF
			case ')':
				if depth--; depth < 0 {
					return Statement{}, false
				}
			case '(':
				depth++
				if p1.kind == tokIdent || p1.kind == tokQIdent {
					name, call, ok := c.fastCall(sql, p1, p2, p3)
					if !ok {
						return Statement{}, false
					}
					if call {
						if funcs == nil {
							funcs = make([]string, 0, 4) // one allocation for the usual few
						}
						funcs = appendUnique(funcs, name)
					}
				}
			}
		}
		p3, p2, p1 = p2, p1, t
	}
}

// fastCall judges the identifier fn followed by '('. call is false when it is
// syntax rather than a function (a reserved word, an alias's column list);
// ok is false when the fast path cannot prove the call read-only.
func (c *Classifier) fastCall(sql string, fn, p2, p3 token) (name string, call, ok bool) {
	switch {
	case p2.kind == tokPunct && sql[p2.start] == ')':
		// ") name (" is never a call: FILTER (, OVER (, an alias with a
		// column list, TABLESAMPLE … REPEATABLE (.
		return "", false, true
	case p2.kind == tokIdent && equalFold(sql[p2.start:p2.end], "as"):
		// "AS name (" is an alias with a column list or a type with a
		// modifier, never a call.
		return "", false, true
	}
	name, quoted, ok := foldIdent(sql, fn)
	if !ok {
		return "", false, false
	}
	full := name
	if p2.kind == tokPunct && sql[p2.start] == '.' {
		// After a dot any word is a name, reserved or not (a.to() calls
		// a function "to"). Only pg_catalog.f is judged here; other
		// qualified names go to the parser, which sees the whole name.
		q, _, qok := foldIdent(sql, p3)
		if !qok || q != "pg_catalog" {
			return "", false, false
		}
		full = "pg_catalog." + name
	} else if !quoted && notAFunction(name) {
		return "", false, true
	}
	if c.funcClass(full, name, true) != funcSafe {
		return "", false, false
	}
	return full, true, true
}

// foldIdent returns the identifier t as PostgreSQL folds it (ASCII
// lower-case unless quoted); it allocates only when it has to lower-case.
// ok is false for names the fast path leaves to the parser: too long, or
// quoted with "" or upper-case letters inside (so that a folded name here
// is always lower-case, as the function lists are).
func foldIdent(sql string, t token) (name string, quoted, ok bool) {
	text := sql[t.start:t.end]
	switch t.kind {
	case tokQIdent:
		text = text[1 : len(text)-1]
		quoted = true
	case tokIdent:
	default:
		return "", false, false
	}
	if len(text) > maxIdentLen {
		return "", quoted, false
	}
	upper := false
	for i := 0; i < len(text); i++ {
		switch ch := text[i]; {
		case ch >= 'A' && ch <= 'Z':
			upper = true
		case ch == '"':
			return "", quoted, false
		}
	}
	if !upper {
		return text, quoted, true
	}
	if quoted {
		return "", quoted, false
	}
	return asciiLower(text), false, true
}

// fastShow settles SHOW name, one bare word, except the writability probes.
func (c *Classifier) fastShow(l *lexer, hint Target) (Statement, bool) {
	t := l.next()
	if t.kind != tokIdent {
		return Statement{}, false
	}
	name, _, ok := foldIdent(l.s, t)
	if !ok || writabilityProbeGUC(name) {
		return Statement{}, false
	}
	end := l.next()
	if end.kind == tokPunct && l.s[end.start] == ';' {
		if !onlySemicolons(l) {
			return Statement{}, false
		}
	} else if end.kind != tokEOF {
		return Statement{}, false
	}
	if isPgsplitSetting(name) {
		return Statement{}, false
	}
	return Statement{
		Kind: KindShow, Target: Replica, Reason: reasonShow, Hint: hint,
		ReadOnly: true, SetName: name, Statements: 1,
	}, true
}

// onlySemicolons reports whether the rest of the input is ';', whitespace
// and comments: a single statement with trailing semicolons.
func onlySemicolons(l *lexer) bool {
	for {
		t := l.next()
		switch {
		case t.kind == tokEOF:
			return true
		case t.kind == tokPunct && l.s[t.start] == ';':
		default:
			return false
		}
	}
}

// stopWord reports the words after which the fast path cannot prove a
// SELECT read-only: WITH (a CTE may write), INTO, FOR (locking clause), and
// the DML verbs, which never occur bare in a plain query.
func stopWord(w string) bool {
	switch len(w) {
	case 3:
		return equalFold(w, "for")
	case 4:
		return equalFold(w, "with") || equalFold(w, "into")
	case 5:
		return equalFold(w, "merge")
	case 6:
		return equalFold(w, "insert") || equalFold(w, "update") || equalFold(w, "delete")
	}
	return false
}

// equalFold compares w with lower, an ASCII lower-case word.
func equalFold(w, lower string) bool {
	if len(w) != len(lower) {
		return false
	}
	for i := 0; i < len(w); i++ {
		c := w[i]
		if c >= 'A' && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != lower[i] {
			return false
		}
	}
	return true
}

// asciiLower lower-cases ASCII letters only, as PostgreSQL folds identifiers;
// it returns s itself when there is nothing to change.
func asciiLower(s string) string {
	for i := 0; i < len(s); i++ {
		if s[i] >= 'A' && s[i] <= 'Z' {
			b := []byte(s)
			for j := i; j < len(b); j++ {
				if b[j] >= 'A' && b[j] <= 'Z' {
					b[j] += 'a' - 'A'
				}
			}
			return string(b)
		}
	}
	return s
}

func appendUnique(list []string, s string) []string {
	for _, x := range list {
		if x == s {
			return list
		}
	}
	return append(list, s)
}
