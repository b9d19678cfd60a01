package router

import "strings"

// This file says which relations a statement may read or write, for
// read-your-writes (routing.read_your_writes: table). Both answers are over-
// approximations that are cheap to compute: every identifier in the text
// counts as a relation name (a column or an alias that shares a table's name
// only makes a read wait for that table too), and whatever the text cannot
// show — a user function, DO, CALL, DDL, a trigger, a rule, a view — counts
// as every relation (the proxy adds what the catalog knows: triggers, rules,
// cascading foreign keys, views).

// Relations appends to dst every name sql may use for a relation: each
// identifier token, folded as PostgreSQL folds it (unquoted names
// lower-cased, quoted ones as written), each part of a qualified name on its
// own, each once. ok is false when the text cannot be tokenised or holds an
// identifier the folding does not handle (over 63 bytes, U&"…"): the caller
// then assumes the statement touches every relation.
func Relations(sql string, dst []string) (names []string, ok bool) {
	_, start := leadingHint(sql)
	l := lexer{s: sql, pos: start}
	afterDot := false
	for {
		t := l.next()
		dot := afterDot
		afterDot = t.kind == tokPunct && sql[t.start] == '.'
		switch t.kind {
		case tokEOF:
			return dst, true
		case tokBad:
			return dst, false
		case tokIdent, tokQIdent:
			if t.kind == tokIdent && t.end-t.start == 1 && (sql[t.start] == 'u' || sql[t.start] == 'U') &&
				t.end < len(sql) && sql[t.end] == '&' {
				return dst, false // U&"…" identifiers with escapes
			}
			name, fok := foldRelation(sql, t)
			if !fok {
				return dst, false
			}
			if t.kind == tokIdent && !dot && reservedKeyword(name) {
				continue
			}
			dup := false
			for _, n := range dst {
				if n == name {
					dup = true
					break
				}
			}
			if !dup {
				dst = append(dst, name)
			}
		}
	}
}

// reservedKeyword reports the commonest fully reserved words, which cannot
// be an unquoted relation name unless qualified (s.select is one), so they
// need not be looked up.
func reservedKeyword(w string) bool {
	switch w {
	case "select", "from", "where", "and", "or", "not", "in", "null", "as", "on",
		"order", "group", "having", "limit", "offset", "union", "all", "distinct", "case",
		"when", "then", "else", "end", "into", "true", "false", "with", "asc", "desc", "any", "some":
		return true
	}
	return false
}

// WritesNamedOnly reports whether every relation st may write is named in
// its text: plain INSERT/UPDATE/DELETE/MERGE/TRUNCATE/COPY FROM, a
// writable CTE or SELECT … FOR UPDATE, calling only built-in functions that
// write nothing. Anything else (DDL, DO, CALL, user or writing functions
// such as nextval, an unparsable or unknown statement) may write any
// relation. Triggers, rules and cascading foreign keys are the caller's to
// add.
func (c *Classifier) WritesNamedOnly(st Statement) bool {
	switch st.Kind {
	case KindInsert, KindUpdate, KindDelete, KindMerge, KindTruncate, KindCopyFrom, KindSelect:
	case KindMulti:
		for _, k := range st.Kinds {
			switch k {
			case KindInsert, KindUpdate, KindDelete, KindMerge, KindTruncate, KindCopyFrom, KindSelect,
				KindBegin, KindStartTransaction, KindCommit, KindRollback, KindEmpty:
			default:
				return false
			}
		}
	default:
		return false
	}
	return c.onlyBuiltinReads(st.Funcs)
}

// ReadsNamedOnly reports whether every relation st may read is named in its
// text: it calls no user function (one could read any table). Views are the
// caller's to add.
func (c *Classifier) ReadsNamedOnly(st Statement) bool {
	return c.onlyBuiltinReads(st.Funcs)
}

// onlyBuiltinReads reports whether every function is a built-in that
// neither writes nor reads relations by a name the text does not show.
func (c *Classifier) onlyBuiltinReads(funcs []string) bool {
	for _, f := range funcs {
		name := f
		if len(name) > len("pg_catalog.") && name[:len("pg_catalog.")] == "pg_catalog." {
			name = name[len("pg_catalog."):]
		}
		if _, ok := c.safeFuncs[name]; !ok {
			return false
		}
	}
	return true
}

// foldRelation folds an identifier token as PostgreSQL does: a quoted one
// as written ("" for a quote), a bare one lower-cased. ok is false for a
// name over 63 bytes (PostgreSQL truncates it).
func foldRelation(sql string, t token) (string, bool) {
	text := sql[t.start:t.end]
	if t.kind == tokQIdent {
		text = text[1 : len(text)-1]
		if strings.Contains(text, `""`) {
			text = strings.ReplaceAll(text, `""`, `"`)
		}
		return text, len(text) <= maxIdentLen
	}
	if len(text) > maxIdentLen {
		return "", false
	}
	for i := 0; i < len(text); i++ {
		if c := text[i]; c >= 'A' && c <= 'Z' {
			return asciiLower(text), true
		}
	}
	return text, true
}

// RunsUserCode reports whether st may run code the router cannot see into,
// code that may change the session's state without a statement saying so
// (set_config(…, false), LISTEN, an advisory lock, a temporary table inside
// plpgsql): a DO block, a CALL, or a function that is neither a built-in
// known to be safe nor one the catalog says is not VOLATILE. A function
// listed in routing.read_functions still counts: reading only is not the
// same as leaving the session as it was. A statement kept from the parser
// (Unparsed) counts too. The proxy resets a connection that
// ran such a statement before another client gets it.
func (c *Classifier) RunsUserCode(st Statement) bool {
	if st.Unparsed {
		// Kept from the parser: what it calls, locks or sets is unknown.
		return true
	}
	if st.Kind == KindDo || st.Kind == KindCall {
		return true
	}
	for _, k := range st.Kinds {
		if k == KindDo || k == KindCall {
			return true
		}
	}
	for _, f := range st.Funcs {
		if c.userCode(f) {
			return true
		}
	}
	return false
}

// userCode judges one name of Statement.Funcs for RunsUserCode.
func (c *Classifier) userCode(full string) bool {
	last, builtin := full, true
	if i := strings.LastIndexByte(full, '.'); i >= 0 {
		last, builtin = full[i+1:], full[:i] == "pg_catalog"
	}
	if builtin {
		if _, ok := c.safeFuncs[last]; ok {
			return false
		}
		// Built-ins whose effects the router knows: writers (routed to the
		// primary), session-level set_config and advisory locks (pins).
		lower := asciiLower(last)
		if pin, unpin := funcPins(lower); pin != "" || unpin != "" || builtinWriter(lower) {
			return false
		}
		switch lower {
		case "set_config", "current_setting", "pg_is_in_recovery":
			return false
		}
	}
	if c.volatile != nil {
		if v, known := c.volatile(full); known && !v {
			return false
		}
	}
	return true
}
