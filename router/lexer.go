package router

import "strings"

// This file is a small SQL tokenizer for the fast path. It follows
// PostgreSQL's lexer (scan.l) closely enough to tell code from literals and
// comments; whatever it does not understand it reports as tokBad, and the
// caller then leaves the statement to the real parser. It assumes
// standard_conforming_strings = on, as the parser does.

type tokKind uint8

const (
	tokEOF    tokKind = iota
	tokIdent          // bare identifier or keyword, as written (not folded)
	tokQIdent         // "quoted identifier", quotes included
	tokString         // any string literal: '…', E'…', B'…', X'…', N'…', $tag$…$tag$
	tokNumber
	tokParam // $1
	tokPunct // one character: ( ) [ ] , ; : . or an operator character
	tokBad   // unterminated literal or comment, or something unexpected
)

type token struct {
	kind       tokKind
	start, end int // sql[start:end] is the token's text
}

type lexer struct {
	s   string
	pos int
}

func isSpace(c byte) bool {
	return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'
}

func isIdentStart(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c == '_' || c >= 0x80
}

func isIdentCont(c byte) bool {
	return isIdentStart(c) || c >= '0' && c <= '9' || c == '$'
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }

// isOpChar reports PostgreSQL's operator characters.
func isOpChar(c byte) bool {
	switch c {
	case '+', '-', '*', '/', '<', '>', '=', '~', '!', '@', '#', '%', '^', '&', '|', '`', '?':
		return true
	}
	return false
}

// skipComment skips one comment starting at i, if there is one, and returns
// the position after it. ok is false for an unterminated block comment.
// Block comments nest, as in PostgreSQL.
func skipComment(s string, i int) (next int, isComment, ok bool) {
	if i+1 >= len(s) {
		return i, false, true
	}
	if s[i] == '-' && s[i+1] == '-' {
		for i += 2; i < len(s) && s[i] != '\n' && s[i] != '\r'; i++ {
		}
		return i, true, true
	}
	if s[i] == '/' && s[i+1] == '*' {
		depth := 1
		for i += 2; i+1 < len(s); {
			switch {
			case s[i] == '/' && s[i+1] == '*':
				depth++
				i += 2
			case s[i] == '*' && s[i+1] == '/':
				depth--
				i += 2
				if depth == 0 {
					return i, true, true
				}
			default:
				i++
			}
		}
		return len(s), true, false
	}
	return i, false, true
}

// skipSpace moves past whitespace and comments. It returns false for an
// unterminated block comment.
func (l *lexer) skipSpace() bool {
	for l.pos < len(l.s) {
		if isSpace(l.s[l.pos]) {
			l.pos++
			continue
		}
		next, isComment, ok := skipComment(l.s, l.pos)
		if !ok {
			l.pos = len(l.s)
			return false
		}
		if !isComment {
			return true
		}
		l.pos = next
	}
	return true
}

// next returns the next token. tokBad consumes the rest of the input, so
// the caller should stop there; after it, and after tokEOF, next returns
// tokEOF.
func (l *lexer) next() token {
	if !l.skipSpace() {
		return token{kind: tokBad, start: l.pos, end: l.pos}
	}
	s, i := l.s, l.pos
	if i >= len(s) {
		return token{kind: tokEOF, start: i, end: i}
	}
	kind, end := scanToken(s, i)
	if kind == tokBad {
		l.pos = len(s)
		return token{kind: tokBad, start: i, end: len(s)}
	}
	l.pos = end
	return token{kind: kind, start: i, end: end}
}

// scanToken scans the token that starts at s[i], which is not whitespace or
// a comment.
func scanToken(s string, i int) (tokKind, int) {
	c := s[i]
	switch {
	case isIdentStart(c):
		j := i + 1
		for j < len(s) && isIdentCont(s[j]) {
			j++
		}
		if j-i == 1 && j < len(s) {
			switch {
			case (c == 'e' || c == 'E') && s[j] == '\'':
				return scanEString(s, j)
			case (c == 'u' || c == 'U') && s[j] == '&' && j+1 < len(s) && (s[j+1] == '\'' || s[j+1] == '"'):
				// U&'…' and U&"…" may spell any name with escapes.
				return tokBad, len(s)
			}
			// B'…', X'…' and N'…' quote like a standard string, which the
			// next token will be; no need to join them.
		}
		return tokIdent, j
	case c == '"':
		for j := i + 1; j < len(s); j++ {
			if s[j] == '"' {
				if j+1 < len(s) && s[j+1] == '"' {
					j++
					continue
				}
				if j == i+1 {
					return tokBad, len(s) // zero-length delimited identifier
				}
				return tokQIdent, j + 1
			}
		}
		return tokBad, len(s)
	case c == '\'':
		return scanString(s, i)
	case c == '$':
		return scanDollar(s, i)
	case isDigit(c) || c == '.' && i+1 < len(s) && isDigit(s[i+1]):
		return scanNumber(s, i)
	}
	switch c {
	case '(', ')', '[', ']', ',', ';', ':', '.':
		return tokPunct, i + 1
	}
	if isOpChar(c) {
		return tokPunct, i + 1
	}
	return tokBad, len(s)
}

// scanString scans a standard string starting at the quote s[i]; ” is a
// quote inside it.
func scanString(s string, i int) (tokKind, int) {
	for j := i + 1; j < len(s); j++ {
		if s[j] == '\'' {
			if j+1 < len(s) && s[j+1] == '\'' {
				j++
				continue
			}
			return tokString, j + 1
		}
	}
	return tokBad, len(s)
}

// scanEString scans an E'…' string whose quote is s[q]: a backslash escapes
// the next byte, ” is a quote.
func scanEString(s string, q int) (tokKind, int) {
	for j := q + 1; j < len(s); j++ {
		switch s[j] {
		case '\\':
			j++
		case '\'':
			if j+1 < len(s) && s[j+1] == '\'' {
				j++
				continue
			}
			if continuesString(s, j+1) {
				// 'a'<newline>'b' continues the literal, still with
				// backslash escapes; rare enough to leave to the parser.
				return tokBad, len(s)
			}
			return tokString, j + 1
		}
	}
	return tokBad, len(s)
}

// continuesString reports whether s[i:] is whitespace containing a newline
// (and maybe -- comments) followed by a quote: PostgreSQL's quotecontinue.
func continuesString(s string, i int) bool {
	newline := false
	for i < len(s) {
		switch c := s[i]; {
		case c == '\n' || c == '\r':
			newline = true
			i++
		case isSpace(c):
			i++
		case c == '-' && i+1 < len(s) && s[i+1] == '-' && newline:
			for i < len(s) && s[i] != '\n' && s[i] != '\r' {
				i++
			}
		case c == '\'':
			return newline
		default:
			return false
		}
	}
	return false
}

// scanDollar scans $1 (a parameter) or a dollar-quoted string $tag$…$tag$.
func scanDollar(s string, i int) (tokKind, int) {
	j := i + 1
	if j < len(s) && isDigit(s[j]) {
		for j < len(s) && isDigit(s[j]) {
			j++
		}
		if j < len(s) && isIdentCont(s[j]) {
			return tokBad, len(s) // trailing junk after parameter
		}
		return tokParam, j
	}
	if j < len(s) && isIdentStart(s[j]) {
		for j < len(s) && isIdentCont(s[j]) && s[j] != '$' {
			j++
		}
	}
	if j >= len(s) || s[j] != '$' {
		return tokBad, len(s)
	}
	delim := s[i : j+1]
	end := strings.Index(s[j+1:], delim)
	if end < 0 {
		return tokBad, len(s)
	}
	return tokString, j + 1 + end + len(delim)
}

// scanNumber scans 12, 1.5, .5, 1e-3, 1_000. A number running into letters
// (0x1F, 1abc) is left to the parser.
func scanNumber(s string, i int) (tokKind, int) {
	j := i
	digits := func() {
		for j < len(s) && (isDigit(s[j]) || s[j] == '_') {
			j++
		}
	}
	digits()
	if j < len(s) && s[j] == '.' && !(j+1 < len(s) && s[j+1] == '.') {
		j++
		digits()
	}
	if j < len(s) && (s[j] == 'e' || s[j] == 'E') {
		k := j + 1
		if k < len(s) && (s[k] == '+' || s[k] == '-') {
			k++
		}
		if k < len(s) && isDigit(s[k]) {
			j = k
			digits()
		}
	}
	if j < len(s) && (isIdentCont(s[j]) || s[j] == '.') {
		return tokBad, len(s)
	}
	return tokNumber, j
}

// leadingHint looks at the comments before the first token for a routing
// hint, /* pgsplit:primary */ or /* pgsplit:replica */ (or the same after
// --), and returns it with the position of the first token.
func leadingHint(s string) (hint Target, start int) {
	hint = HintNone
	i := 0
	for i < len(s) {
		if isSpace(s[i]) {
			i++
			continue
		}
		next, isComment, ok := skipComment(s, i)
		if !isComment {
			return hint, i
		}
		if ok && hint == HintNone {
			body := s[i+2 : next]
			if s[i] == '/' {
				body = s[i+2 : next-2]
			}
			hint = parseHint(body)
		}
		i = next
	}
	return hint, i
}

func parseHint(body string) Target {
	body = strings.TrimSpace(body)
	const prefix = "pgsplit:"
	if len(body) < len(prefix) || !strings.EqualFold(body[:len(prefix)], prefix) {
		return HintNone
	}
	switch v := strings.TrimSpace(body[len(prefix):]); {
	case strings.EqualFold(v, "primary"):
		return Primary
	case strings.EqualFold(v, "replica"):
		return Replica
	}
	return HintNone
}
