package router

import "strings"

// Shape returns a 64-bit hash of sql's tokens with every literal and
// parameter replaced by one placeholder and keywords and bare identifiers
// case-folded, ignoring whitespace and comments: statements that differ
// only in their values (or formatting) share a shape. It is a cheap
// grouping key for per-statement statistics, computed on the relay path;
// the canonical identity is the PostgreSQL parser's fingerprint, which the
// caller computes once per shape. Text the lexer does not understand is
// hashed as written.
func Shape(sql string) uint64 {
	const (
		offset = 14695981039346656037
		prime  = 1099511628211
	)
	h := uint64(offset)
	mix := func(b byte) { h = (h ^ uint64(b)) * prime }
	l := lexer{s: sql}
	for {
		t := l.next()
		switch t.kind {
		case tokEOF:
			return h
		case tokBad:
			mix(byte(tokBad))
			for i := t.start; i < t.end; i++ {
				mix(sql[i])
			}
			return h
		case tokString, tokNumber, tokParam:
			mix('?')
		case tokIdent:
			mix(byte(tokIdent))
			for i := t.start; i < t.end; i++ {
				c := sql[i]
				if c >= 'A' && c <= 'Z' {
					c += 'a' - 'A'
				}
				mix(c)
			}
		default:
			mix(byte(t.kind))
			for i := t.start; i < t.end; i++ {
				mix(sql[i])
			}
		}
	}
}

// shapeKey appends to dst the tokens of a statement that begins (at start,
// after any leading hint) with INSERT, UPDATE or DELETE, as Shape hashes
// them (every literal and parameter one placeholder, bare identifiers and
// keywords case-folded, whitespace and comments dropped), each token its
// kind byte, its text and a NUL: unlike Shape's hash, two statements with
// the same key differ in nothing but values and formatting. It returns
// nil for any other statement (only those can be cached by shape, see
// shapeCacheable), for text the lexer does not understand, and for text
// that holds a NUL.
func shapeKey(sql string, start int, dst []byte) []byte {
	if strings.IndexByte(sql, 0) >= 0 {
		return nil
	}
	l := lexer{s: sql, pos: start}
	if t := l.next(); t.kind != tokIdent || !writeWord(sql[t.start:t.end]) {
		return nil
	}
	l.pos = start
	for {
		t := l.next()
		switch t.kind {
		case tokEOF:
			return dst
		case tokBad:
			return nil
		case tokString, tokNumber, tokParam:
			dst = append(dst, '?', 0)
		case tokIdent:
			dst = append(dst, byte(tokIdent))
			for i := t.start; i < t.end; i++ {
				c := sql[i]
				if c >= 'A' && c <= 'Z' {
					c += 'a' - 'A'
				}
				dst = append(dst, c)
			}
			dst = append(dst, 0)
		default:
			dst = append(dst, byte(t.kind))
			dst = append(dst, sql[t.start:t.end]...)
			dst = append(dst, 0)
		}
	}
}

func writeWord(w string) bool {
	return equalFold(w, "insert") || equalFold(w, "update") || equalFold(w, "delete")
}
