package router

// This file is the guard in front of PostgreSQL's parser. libpg_query
// checks its stack while it parses, but what it does with the tree
// afterwards (turning it into protobuf for Go, normalizing, fingerprinting)
// recurses without a check: SELECT 1+1+…+1 with 30,000 terms ends the whole
// process with SIGSEGV during cgo execution (upstream pg_query issue #339),
// and no recover() can catch that. So a statement the guard cannot prove
// shallow and small never reaches libpg_query: it goes to the primary
// unparsed, which is always a correct route.

// Parser limits used when Options leave them 0.
const (
	// DefaultMaxParseDepth is the nesting a statement may have, as
	// estimated by Depth. libpg_query parses 3,000-deep expressions and
	// crashes on 30,000; 1,000 leaves room for any statement a person or
	// an ORM writes.
	DefaultMaxParseDepth = 1000
	// DefaultMaxParseBytes is the longest statement parsed (1 MiB); a
	// longer one is mostly a bulk write, which needs the primary anyway.
	DefaultMaxParseBytes = 1 << 20
)

// Reasons of the statements the guard keeps from the parser.
const (
	ReasonTooDeep  = "too deeply nested to parse"
	ReasonTooLarge = "too large to parse"
)

// Parsable reports whether sql may be handed to libpg_query under the
// limits (0 means the default); reason says why not.
func Parsable(sql string, maxDepth, maxBytes int) (ok bool, reason string) {
	if maxBytes <= 0 {
		maxBytes = DefaultMaxParseBytes
	}
	if maxDepth <= 0 {
		maxDepth = DefaultMaxParseDepth
	}
	if len(sql) > maxBytes {
		return false, ReasonTooLarge
	}
	if Depth(sql, maxDepth) > maxDepth {
		return false, ReasonTooDeep
	}
	return true, ""
}

// Depth estimates from the tokens how deep the parse tree of sql is, from
// above: every open parenthesis or bracket is a level, and within a level
// every operator since the last comma is one more (1+1+1 is a left-deep
// chain of operators, as are UNION, JOIN, NOT, casts, IS and LIKE chains,
// while commas make lists, which are flat). AND and OR separate like
// commas: PostgreSQL's grammar flattens their chains into one list. Text the lexer cannot read
// (an unterminated literal, U&'…', a string continued on the next line)
// counts from there on as if every parenthesis, bracket, operator character
// and word nested. It stops counting
// once past limit (limit ≤ 0: no stop) and returns a value above it.
func Depth(sql string, limit int) int {
	var levels []int // operators since the last comma, per open level
	ops := 0         // the same for the top level
	depth, max := 0, 0
	bump := func() {
		if d := depth + ops; d > max {
			max = d
		}
	}
	l := lexer{s: sql}
	prevOp := -1 // end of the previous token when it was an operator character
	for {
		if limit > 0 && max > limit {
			return max
		}
		t := l.next()
		switch t.kind {
		case tokEOF:
			return max
		case tokBad:
			return max + rawDepth(sql[t.start:], limit)
		case tokPunct:
			c := sql[t.start]
			isOp := isOpChar(c) || c == ':'
			switch c {
			case '(', '[':
				levels = append(levels, ops)
				depth += ops + 1
				ops = 0
				bump()
			case ')', ']':
				if n := len(levels); n > 0 {
					depth -= levels[n-1] + 1
					ops = levels[n-1]
					levels = levels[:n-1]
				}
			case ',':
				ops = 0
			case ';':
				if len(levels) == 0 { // a new statement; inside brackets, an error to come
					ops = 0
				}
			}
			if isOp && prevOp != t.start {
				// Adjacent operator characters are one operator (<=,
				// ->>); apart, each nests (- - - x).
				ops++
				bump()
			}
			prevOp = -1
			if isOp {
				prevOp = t.end
			}
			continue
		case tokIdent:
			w := sql[t.start:t.end]
			switch {
			case equalFold(w, "and") || equalFold(w, "or"):
				// The grammar makes one list of a chain of them, like a
				// comma; the list is one level.
				ops = 1
			case chainWord(w):
				ops++
				bump()
			}
		}
		prevOp = -1
	}
}

// chainWord reports the keywords that nest when repeated: set operations,
// joins, NOT, IS, LIKE-like tests, CASE, COLLATE, AT TIME ZONE, BETWEEN,
// IN, OPERATOR(…).
func chainWord(w string) bool {
	if len(w) < 2 || len(w) > 9 {
		return false
	}
	switch asciiLower(w) {
	case "union", "intersect", "except", "join", "not", "is", "like", "ilike",
		"similar", "case", "collate", "at", "between", "overlaps", "isnull", "notnull", "in", "operator":
		return true
	}
	return false
}

// rawDepth is Depth's worst case for text the lexer cannot read (it may
// be code or literal, so every bracket, operator character and word
// counts, as if each nested: a keyword chain such as JOIN … JOIN is words).
func rawDepth(s string, limit int) int {
	n := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '(' || c == '[' || isOpChar(c) || c == ':':
			n++
		case isIdentStart(c) && (i == 0 || !isIdentCont(s[i-1])):
			n++ // a word starts here
		default:
			continue
		}
		if limit > 0 && n > limit {
			return n
		}
	}
	return n
}
