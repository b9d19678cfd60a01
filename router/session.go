package router

import (
	"strconv"
	"strings"

	pg_query "github.com/pganalyze/pg_query_go/v6"
)

// This file classifies the statements whose route the session decides:
// transaction control, SET/RESET and DISCARD. Their Target is the Primary
// placeholder with BySession set; what matters is Kind, Tx, the Set* fields
// and Pins/Unpins.

func classifyTransaction(s *pg_query.TransactionStmt) Statement {
	switch s.Kind {
	case pg_query.TransactionStmtKind_TRANS_STMT_BEGIN, pg_query.TransactionStmtKind_TRANS_STMT_START:
		kind := KindBegin
		if s.Kind == pg_query.TransactionStmtKind_TRANS_STMT_START {
			kind = KindStartTransaction
		}
		tx := txOptions(s.Options)
		st := bySession(kind, reasonTxControl, tx.standbyOK())
		st.Tx = tx
		return st
	case pg_query.TransactionStmtKind_TRANS_STMT_COMMIT:
		return bySession(KindCommit, reasonTxControl, true)
	case pg_query.TransactionStmtKind_TRANS_STMT_ROLLBACK:
		return bySession(KindRollback, reasonTxControl, true)
	case pg_query.TransactionStmtKind_TRANS_STMT_SAVEPOINT:
		return bySession(KindSavepoint, reasonTxControl, true)
	case pg_query.TransactionStmtKind_TRANS_STMT_RELEASE:
		return bySession(KindRelease, reasonTxControl, true)
	case pg_query.TransactionStmtKind_TRANS_STMT_ROLLBACK_TO:
		return bySession(KindRollbackTo, reasonTxControl, true)
	case pg_query.TransactionStmtKind_TRANS_STMT_PREPARE:
		return primary(KindPrepareTransaction, "two-phase commit: PREPARE TRANSACTION")
	case pg_query.TransactionStmtKind_TRANS_STMT_COMMIT_PREPARED:
		return primary(KindCommitPrepared, "two-phase commit: COMMIT PREPARED")
	case pg_query.TransactionStmtKind_TRANS_STMT_ROLLBACK_PREPARED:
		return primary(KindRollbackPrepared, "two-phase commit: ROLLBACK PREPARED")
	}
	return primary(KindOther, "unknown transaction statement")
}

// txOptions reads BEGIN's or SET TRANSACTION's option list.
func txOptions(opts []*pg_query.Node) *TxOptions {
	tx := &TxOptions{}
	for _, o := range opts {
		d := o.GetDefElem()
		if d == nil {
			continue
		}
		switch d.Defname {
		case "transaction_isolation":
			if v, ok := constString(d.Arg); ok {
				tx.Isolation = strings.ToLower(v)
			}
		case "transaction_read_only":
			if v, ok := constBool(d.Arg); ok {
				tx.ReadOnly = &v
			}
		case "transaction_deferrable":
			if v, ok := constBool(d.Arg); ok {
				tx.Deferrable = &v
			}
		}
	}
	return tx
}

// standbyOK reports whether a hot standby accepts these options: it refuses
// READ WRITE and SERIALIZABLE.
func (tx *TxOptions) standbyOK() bool {
	return !(tx.ReadOnly != nil && !*tx.ReadOnly) && tx.Isolation != "serializable"
}

// pinningSettings are the settings whose session-level SET pins the session
// (see Statement.Pins); RESET ALL resets all but role and
// session_authorization.
func settingPin(name, value string) string {
	switch name {
	case "search_path", "role", "session_authorization", "default_transaction_read_only":
		return "set " + name
	case "default_transaction_isolation":
		// Only serializable matters: a hot standby refuses it.
		if value == "" || strings.EqualFold(value, "serializable") {
			return "set " + name
		}
	}
	return ""
}

func classifySet(s *pg_query.VariableSetStmt) Statement {
	name := strings.ToLower(s.Name)
	st := bySession(KindSet, reasonSetting, true)
	st.SetName, st.SetLocal = name, s.IsLocal
	if isPgsplitSetting(name) {
		st.Reason = reasonPgsplit
	}
	switch s.Kind {
	case pg_query.VariableSetKind_VAR_SET_MULTI:
		switch name {
		case "transaction":
			st.Kind = KindSetTransaction
			st.Tx = txOptions(s.Args)
			st.ReadOnly = st.Tx.standbyOK()
		case "session characteristics":
			st.Kind = KindSetSessionCharacteristics
			st.Tx = txOptions(s.Args)
			if st.Tx.ReadOnly != nil {
				st.Pins = append(st.Pins, "set default_transaction_read_only")
			}
			if st.Tx.Isolation == "serializable" {
				st.Pins = append(st.Pins, "set default_transaction_isolation")
			}
		case "transaction snapshot":
			st.Kind = KindSetTransaction
			st.SetValue, st.SetValueSQL = setValue(s.Args)
		}
		return st
	case pg_query.VariableSetKind_VAR_RESET_ALL:
		st.Kind, st.SetName = KindReset, "all"
		st.Unpins = []string{"set search_path", "set default_transaction_read_only", "set default_transaction_isolation"}
		return st
	case pg_query.VariableSetKind_VAR_RESET, pg_query.VariableSetKind_VAR_SET_DEFAULT:
		if s.Kind == pg_query.VariableSetKind_VAR_RESET {
			st.Kind = KindReset
		} else {
			st.SetDefault = true
		}
		if pin := settingPin(name, ""); pin != "" && !s.IsLocal {
			st.Unpins = []string{pin}
		}
		return st
	case pg_query.VariableSetKind_VAR_SET_CURRENT:
		// SET name FROM CURRENT: the value is the session's, unknown here.
		if pin := settingPin(name, ""); pin != "" && !s.IsLocal {
			st.Pins = []string{pin}
		}
		return st
	}

	st.SetValue, st.SetValueSQL = setValue(s.Args)
	switch name {
	case "transaction_read_only", "transaction_isolation", "transaction_deferrable":
		// The same as SET TRANSACTION.
		st.Kind = KindSetTransaction
		tx := &TxOptions{}
		switch name {
		case "transaction_isolation":
			tx.Isolation = strings.ToLower(st.SetValue)
		case "transaction_read_only":
			if len(s.Args) == 1 {
				if v, ok := constBool(s.Args[0]); ok {
					tx.ReadOnly = &v
				}
			}
		case "transaction_deferrable":
			if len(s.Args) == 1 {
				if v, ok := constBool(s.Args[0]); ok {
					tx.Deferrable = &v
				}
			}
		}
		st.Tx = tx
		st.ReadOnly = tx.standbyOK()
		return st
	}
	if s.IsLocal {
		return st
	}
	switch {
	case name == "role" && strings.EqualFold(st.SetValue, "none"):
		st.Unpins = []string{"set role"}
	default:
		if pin := settingPin(name, st.SetValue); pin != "" {
			st.Pins = []string{pin}
		}
	}
	return st
}

// setValue renders SET's arguments as plain text and as SQL. sql is empty
// when an argument has a form other than a constant.
func setValue(args []*pg_query.Node) (text, sql string) {
	var t, q strings.Builder
	for i, a := range args {
		if i > 0 {
			t.WriteString(", ")
			q.WriteString(", ")
		}
		c := a.GetAConst()
		if c == nil {
			return "", ""
		}
		switch v := c.Val.(type) {
		case *pg_query.A_Const_Sval:
			t.WriteString(v.Sval.GetSval())
			q.WriteString(quoteLiteral(v.Sval.GetSval()))
		case *pg_query.A_Const_Ival:
			n := strconv.Itoa(int(v.Ival.GetIval()))
			t.WriteString(n)
			q.WriteString(n)
		case *pg_query.A_Const_Fval:
			t.WriteString(v.Fval.GetFval())
			q.WriteString(v.Fval.GetFval())
		case *pg_query.A_Const_Boolval:
			b := strconv.FormatBool(v.Boolval.GetBoolval())
			t.WriteString(b)
			q.WriteString(b)
		default:
			return "", ""
		}
	}
	return t.String(), q.String()
}

// quoteLiteral quotes s as a standard SQL string (standard_conforming_strings
// on, the default since PostgreSQL 9.1).
func quoteLiteral(s string) string {
	return "'" + strings.ReplaceAll(s, "'", "''") + "'"
}

func classifyDiscard(s *pg_query.DiscardStmt) Statement {
	st := bySession(KindDiscard, "DISCARD (decided by session)", true)
	switch s.Target {
	case pg_query.DiscardMode_DISCARD_ALL:
		st.Unpins = []string{"all"}
	case pg_query.DiscardMode_DISCARD_TEMP:
		st.Unpins = []string{PinTempTable, PinTempSequence, PinTempFunction}
	case pg_query.DiscardMode_DISCARD_SEQUENCES:
		st.Unpins = []string{PinNextval}
	}
	return st
}

// pgsplitCommand recognises SET, RESET and SHOW of pgsplit's own settings
// from tokens, for the forms PostgreSQL's grammar rejects: in
// `SET pgsplit.route = primary`, PRIMARY is a reserved word. The proxy
// answers these itself, so they never reach a server.
func pgsplitCommand(sql string) (Statement, bool) {
	_, start := leadingHint(sql)
	l := lexer{s: sql, pos: start}
	word := func() (string, bool) {
		t := l.next()
		if t.kind != tokIdent {
			return "", false
		}
		return asciiLower(sql[t.start:t.end]), true
	}
	punct := func(t token, c byte) bool { return t.kind == tokPunct && sql[t.start] == c }
	verb, ok := word()
	if !ok || verb != "set" && verb != "reset" && verb != "show" {
		return Statement{}, false
	}
	st := bySession(KindSet, reasonPgsplit, true)
	first, ok := word()
	if ok && verb == "set" && (first == "session" || first == "local") {
		st.SetLocal = first == "local"
		first, ok = word()
	}
	if !ok || first != "pgsplit" || !punct(l.next(), '.') {
		return Statement{}, false
	}
	second, ok := word()
	if !ok {
		return Statement{}, false
	}
	st.SetName = "pgsplit." + second
	switch verb {
	case "reset":
		st.Kind = KindReset
	case "show":
		st.Kind = KindShow
	case "set":
		if t := l.next(); !punct(t, '=') && !(t.kind == tokIdent && equalFold(sql[t.start:t.end], "to")) {
			return Statement{}, false
		}
		switch t := l.next(); t.kind {
		case tokIdent, tokNumber:
			st.SetValue = asciiLower(sql[t.start:t.end])
		case tokString:
			text := sql[t.start:t.end]
			if text[0] != '\'' {
				return Statement{}, false // E'', $$ …: let the parser's error stand
			}
			st.SetValue = strings.ReplaceAll(text[1:len(text)-1], "''", "'")
		default:
			return Statement{}, false
		}
		st.SetValueSQL = quoteLiteral(st.SetValue)
	}
	if t := l.next(); punct(t, ';') {
		if !onlySemicolons(&l) {
			return Statement{}, false
		}
	} else if t.kind != tokEOF {
		return Statement{}, false
	}
	st.Statements = 1
	return st, true
}
