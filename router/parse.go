package router

import (
	"errors"
	"slices"
	"strconv"
	"strings"

	pg_query "github.com/pganalyze/pg_query_go/v6"
	"github.com/pganalyze/pg_query_go/v6/parser"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// Reasons shared by several statement kinds.
const (
	reasonTxControl = "transaction control (decided by session)"
	reasonSetting   = "session setting (decided by session)"
	reasonCursor    = "cursor (decided by session)"
	reasonPrepared  = "prepared statement (decided by session)"
	reasonPgsplit   = "pgsplit setting (answered by the proxy)"
)

// parse classifies sql with PostgreSQL's own parser.
func (c *Classifier) parse(sql string, hint Target) Statement {
	if strings.IndexByte(sql, 0) >= 0 {
		// The server reads a query up to its NUL; the parser would too,
		// but the text around it is not what the server will run.
		return Statement{Kind: KindOther, Target: Primary, Reason: "NUL byte in statement", Hint: hint}
	}
	if ok, why := Parsable(sql, c.maxDepth, c.maxBytes); !ok {
		return Statement{Kind: KindOther, Target: Primary, Reason: why, Hint: hint, Unparsed: true}
	}
	tree, err := pg_query.Parse(sql)
	if err != nil {
		if st, ok := pgsplitCommand(sql); ok {
			st.Hint = hint
			return st
		}
		// Let the server report the error, from the primary.
		return Statement{Kind: KindOther, Target: Primary, Reason: parseErrorReason(err), Hint: hint}
	}
	var st Statement
	switch len(tree.Stmts) {
	case 0:
		st = Statement{Kind: KindEmpty, Target: Replica, Reason: "empty query", ReadOnly: true}
	case 1:
		st = c.classifyNode(tree.Stmts[0].Stmt)
		st.Statements = 1
	default:
		parts := make([]Statement, len(tree.Stmts))
		for i, raw := range tree.Stmts {
			parts[i] = c.classifyNode(raw.Stmt)
		}
		st = combine(parts)
	}
	if namesTempSchema(sql) {
		st = tempSchemaStatement(st)
	}
	st.Hint = hint
	return st
}

// reasonTempSchema is the routing reason of a statement naming pg_temp.
const reasonTempSchema = "names pg_temp: the session's temporary objects exist on its primary connection only"

// tempSchemaStatement routes a statement that names the session's
// temporary schema (pg_temp, pg_temp_N) explicitly: its objects exist only
// in the backend that made them, on the primary (a hot standby has no
// temporary schema: 3F000 there), and DDL there (CREATE TYPE pg_temp.t …)
// pins the session to that connection, as a temporary table does.
func tempSchemaStatement(st Statement) Statement {
	if st.Target == Replica {
		st.Target, st.Reason = Primary, reasonTempSchema
	}
	ddl := st.Kind == KindDDL || (st.Kind == KindMulti && slices.Contains(st.Kinds, KindDDL))
	if ddl && !slices.ContainsFunc(st.Pins, func(p string) bool {
		return p == PinTempTable || p == PinTempSequence || p == PinTempFunction
	}) {
		st.Pins = appendUnique(st.Pins, PinTempTable)
	}
	return st
}

// namesTempSchema reports whether sql uses pg_temp (or pg_temp_N) as a
// qualifier: the identifier followed by a dot. Lexical, so a string or a
// comment that mentions it does not count; a statement the lexer cannot
// read counts (the caller only moves it to the primary).
func namesTempSchema(sql string) bool {
	if !strings.Contains(sql, "pg_temp") && !strings.Contains(strings.ToLower(sql), "pg_temp") {
		return false
	}
	l := lexer{s: sql}
	prevTemp := false
	for {
		t := l.next()
		switch t.kind {
		case tokEOF:
			return false
		case tokBad:
			return true
		case tokPunct:
			if prevTemp && sql[t.start] == '.' {
				return true
			}
		}
		switch t.kind {
		case tokIdent:
			prevTemp = tempSchemaWord(sql[t.start:t.end])
		case tokQIdent:
			w := sql[t.start+1 : t.end-1]
			prevTemp = strings.HasPrefix(w, "pg_temp") && tempSchemaWord(w)
		default:
			prevTemp = false
		}
	}
}

// tempSchemaWord reports pg_temp or pg_temp_<digits>, in any case.
func tempSchemaWord(w string) bool {
	if len(w) < 7 || !equalFold(w[:7], "pg_temp") {
		return false
	}
	if len(w) == 7 {
		return true
	}
	if w[7] != '_' || len(w) == 8 {
		return false
	}
	for i := 8; i < len(w); i++ {
		if !isDigit(w[i]) {
			return false
		}
	}
	return true
}

// parseErrorReason says where the parser stopped but not what it read
// there: its message quotes the offending token, which may be a literal
// (a password, a name), and reasons are logged whatever log.redact says.
func parseErrorReason(err error) string {
	msg := err.Error()
	if i := strings.IndexAny(msg, "\"'"); i >= 0 {
		msg = strings.TrimSpace(msg[:i]) // what follows the quote is the statement's text
	}
	reason := "parse error: " + msg
	var pe *parser.Error
	if errors.As(err, &pe) && pe.Cursorpos > 0 {
		reason += " (character " + strconv.Itoa(pe.Cursorpos) + ")"
	}
	return reason
}

// combine merges the statements of a multi-statement string. It goes to a
// replica only if every statement would; a statement that needs the primary
// decides for the whole string, then one whose route the session decides.
func combine(parts []Statement) Statement {
	st := Statement{Kind: KindMulti, Target: Replica, ReadOnly: true, Statements: len(parts),
		Reason: "multi-statement string, all reads"}
	hard, session := -1, -1
	for i, p := range parts {
		st.Kinds = append(st.Kinds, p.Kind)
		st.ReadOnly = st.ReadOnly && p.ReadOnly
		for _, f := range p.Funcs {
			st.Funcs = appendUnique(st.Funcs, f)
		}
		for _, pin := range p.Pins {
			st.Pins = appendUnique(st.Pins, pin)
		}
		for _, unpin := range p.Unpins {
			st.Unpins = appendUnique(st.Unpins, unpin)
		}
		if st.Tx == nil {
			st.Tx = p.Tx
		}
		if st.SetName == "" && (p.Kind == KindSet || p.Kind == KindReset || p.Kind == KindSetTransaction) {
			st.SetName, st.SetValue, st.SetValueSQL, st.SetLocal = p.SetName, p.SetValue, p.SetValueSQL, p.SetLocal
		}
		switch {
		case p.Target == Replica:
		case p.BySession:
			if session < 0 {
				session = i
			}
		default:
			if hard < 0 {
				hard = i
			}
		}
	}
	switch {
	case hard >= 0:
		st.Target = Primary
		if parts[hard].ReadOnly {
			st.Reason = "multi-statement string needing the primary: " + parts[hard].Reason
		} else {
			st.Reason = "multi-statement string with a write: " + parts[hard].Reason
		}
	case session >= 0:
		st.Target, st.BySession = Primary, true
		st.Reason = "multi-statement string with session statements (decided by session)"
	}
	return st
}

func primary(kind Kind, reason string) Statement {
	return Statement{Kind: kind, Target: Primary, Reason: reason}
}

func bySession(kind Kind, reason string, readOnly bool) Statement {
	return Statement{Kind: kind, Target: Primary, Reason: reason, BySession: true, ReadOnly: readOnly}
}

// classifyNode classifies one statement of the parse tree.
func (c *Classifier) classifyNode(n *pg_query.Node) Statement {
	switch x := n.GetNode().(type) {
	case *pg_query.Node_SelectStmt:
		return c.classifySelect(x.SelectStmt)
	case *pg_query.Node_InsertStmt:
		return c.write(KindInsert, "INSERT", x.InsertStmt)
	case *pg_query.Node_UpdateStmt:
		return c.write(KindUpdate, "UPDATE", x.UpdateStmt)
	case *pg_query.Node_DeleteStmt:
		return c.write(KindDelete, "DELETE", x.DeleteStmt)
	case *pg_query.Node_MergeStmt:
		return c.write(KindMerge, "MERGE", x.MergeStmt)
	case *pg_query.Node_VariableShowStmt:
		return classifyShow(x.VariableShowStmt)
	case *pg_query.Node_ExplainStmt:
		return c.classifyExplain(x.ExplainStmt)
	case *pg_query.Node_CopyStmt:
		return c.classifyCopy(x.CopyStmt)
	case *pg_query.Node_TransactionStmt:
		return classifyTransaction(x.TransactionStmt)
	case *pg_query.Node_VariableSetStmt:
		return classifySet(x.VariableSetStmt)
	case *pg_query.Node_ConstraintsSetStmt:
		return bySession(KindSetConstraints, "SET CONSTRAINTS (decided by session)", true)
	case *pg_query.Node_DiscardStmt:
		return classifyDiscard(x.DiscardStmt)
	case *pg_query.Node_ListenStmt:
		st := primary(KindListen, "LISTEN")
		st.Pins = []string{PinListen}
		return st
	case *pg_query.Node_UnlistenStmt:
		st := primary(KindUnlisten, "UNLISTEN")
		if x.UnlistenStmt.Conditionname == "" {
			st.Unpins = []string{PinListen}
		}
		return st
	case *pg_query.Node_NotifyStmt:
		return primary(KindNotify, "NOTIFY")
	case *pg_query.Node_PrepareStmt:
		w := c.walkChildren(x.PrepareStmt, false)
		st := bySession(KindPrepare, reasonPrepared, true)
		st.Funcs, st.Pins = w.funcs, []string{PinPrepare}
		return st
	case *pg_query.Node_ExecuteStmt:
		return c.withArgs(KindExecute, "EXECUTE of a prepared statement (decided by session)", false, x.ExecuteStmt)
	case *pg_query.Node_DeallocateStmt:
		st := bySession(KindDeallocate, reasonPrepared, true)
		if x.DeallocateStmt.Isall || x.DeallocateStmt.Name == "" {
			st.Unpins = []string{PinPrepare}
		} else {
			st.PreparedName = x.DeallocateStmt.Name
		}
		return st
	case *pg_query.Node_DeclareCursorStmt:
		st := c.withArgs(KindDeclare, reasonCursor, true, x.DeclareCursorStmt)
		if x.DeclareCursorStmt.Options&cursorOptHold != 0 {
			st.Pins = appendUnique(st.Pins, PinCursorWithHold)
		}
		return st
	case *pg_query.Node_FetchStmt:
		return bySession(KindFetch, reasonCursor, true)
	case *pg_query.Node_ClosePortalStmt:
		st := bySession(KindClose, reasonCursor, true)
		if x.ClosePortalStmt.Portalname == "" {
			st.Unpins = []string{PinCursorWithHold}
		}
		return st
	case *pg_query.Node_LockStmt:
		return primary(KindLock, "LOCK TABLE")
	case *pg_query.Node_CallStmt:
		return c.write(KindCall, "CALL", x.CallStmt)
	case *pg_query.Node_DoStmt:
		return primary(KindDo, "DO block")
	case *pg_query.Node_TruncateStmt:
		return primary(KindTruncate, "TRUNCATE")
	case *pg_query.Node_VacuumStmt:
		if x.VacuumStmt.IsVacuumcmd {
			return primary(KindMaintenance, "VACUUM")
		}
		return primary(KindMaintenance, "ANALYZE")
	case *pg_query.Node_ReindexStmt:
		return primary(KindMaintenance, "REINDEX")
	case *pg_query.Node_ClusterStmt:
		return primary(KindMaintenance, "CLUSTER")
	case *pg_query.Node_CheckPointStmt:
		return primary(KindMaintenance, "CHECKPOINT")
	case *pg_query.Node_RefreshMatViewStmt:
		return primary(KindMaintenance, "REFRESH MATERIALIZED VIEW")
	case *pg_query.Node_LoadStmt:
		return primary(KindOther, "LOAD")
	case *pg_query.Node_CreateTableAsStmt:
		return c.classifyCreateTableAs(x.CreateTableAsStmt)
	case nil:
		return primary(KindOther, "empty statement node")
	}
	return c.classifyDDL(n)
}

// cursorOptHold is CURSOR_OPT_HOLD in PostgreSQL's parsenodes.h.
const cursorOptHold = 0x0020

// write classifies a statement that writes (or may: CALL), walking it for
// the functions it names and the state they pin.
func (c *Classifier) write(kind Kind, reason string, m protoreflect.ProtoMessage) Statement {
	w := c.walkChildren(m, true)
	st := primary(kind, reason)
	st.Funcs, st.Pins, st.Unpins = w.funcs, w.pins, w.unpins
	return st
}

// withArgs classifies a statement whose route the session decides but
// which runs expressions of its own (EXECUTE's parameters, DECLARE's
// query): when those need the primary, so does the statement.
func (c *Classifier) withArgs(kind Kind, reason string, readOnly bool, m protoreflect.ProtoMessage) Statement {
	w := c.walkChildren(m, true)
	var st Statement
	if w.rank > rankNone {
		st = primary(kind, strings.ToUpper(kind.String())+" needs the primary: "+w.reason)
		st.ReadOnly = !w.write
	} else {
		st = bySession(kind, reason, readOnly)
	}
	st.Funcs, st.Pins, st.Unpins = w.funcs, w.pins, w.unpins
	return st
}

// classifySelect classifies SELECT, VALUES, TABLE and WITH … SELECT.
func (c *Classifier) classifySelect(s *pg_query.SelectStmt) Statement {
	w := c.walkChildren(s, true)
	var st Statement
	switch {
	case s.IntoClause != nil:
		st = primary(KindDDL, "SELECT … INTO")
		if isTemp(s.IntoClause.Rel) {
			st.Pins = []string{PinTempTable}
		}
	case w.rank > rankNone:
		st = primary(KindSelect, w.reason)
		st.ReadOnly = !w.write
	default:
		st = Statement{Kind: KindSelect, Target: Replica, Reason: reasonSelect, ReadOnly: true}
	}
	st.Funcs = w.funcs
	st.Pins = append(st.Pins, w.pins...)
	st.Unpins = w.unpins
	return st
}

func classifyShow(s *pg_query.VariableShowStmt) Statement {
	name := strings.ToLower(s.Name)
	var st Statement
	switch {
	case writabilityProbeGUC(name):
		st = primary(KindShow, "writability probe: SHOW "+name)
		st.ReadOnly = true
	case isPgsplitSetting(name):
		st = bySession(KindShow, reasonPgsplit, true)
	default:
		st = Statement{Kind: KindShow, Target: Replica, Reason: reasonShow, ReadOnly: true}
	}
	st.SetName = name
	return st
}

// classifyExplain: plain EXPLAIN only plans, which a replica does as well
// (the executor's read-only check is skipped for EXPLAIN-only); EXPLAIN
// ANALYZE runs the statement, so it goes where the statement would.
func (c *Classifier) classifyExplain(s *pg_query.ExplainStmt) Statement {
	if !explainAnalyze(s.Options) {
		if s.Query.GetExecuteStmt() != nil {
			return bySession(KindExplain, "EXPLAIN EXECUTE (decided by session)", true)
		}
		w := c.walkChildren(s, false)
		st := Statement{Kind: KindExplain, Target: Replica, Reason: "EXPLAIN without ANALYZE", ReadOnly: true}
		st.Funcs = w.funcs
		return st
	}
	inner := c.classifyNode(s.Query)
	st := Statement{Kind: KindExplain, Target: inner.Target, ReadOnly: inner.ReadOnly, BySession: inner.BySession,
		Funcs: inner.Funcs, Pins: inner.Pins, Unpins: inner.Unpins}
	switch {
	case inner.Target == Replica:
		st.Reason = "EXPLAIN ANALYZE of a read"
	case inner.BySession:
		st.Reason = "EXPLAIN ANALYZE " + inner.Reason
	case inner.ReadOnly:
		st.Reason = "EXPLAIN ANALYZE of a statement needing the primary: " + inner.Reason
	default:
		st.Reason = "EXPLAIN ANALYZE of a write: " + inner.Reason
	}
	return st
}

// explainAnalyze reports whether EXPLAIN's options turn ANALYZE on; an
// option value it cannot read counts as on.
func explainAnalyze(opts []*pg_query.Node) bool {
	on := false
	for _, o := range opts {
		d := o.GetDefElem()
		if d == nil || (d.Defname != "analyze" && d.Defname != "analyse") {
			continue
		}
		if d.Arg == nil {
			on = true
			continue
		}
		v, ok := constBool(d.Arg)
		on = v || !ok
	}
	return on
}

// classifyCopy: COPY … TO STDOUT reads; COPY … FROM writes; COPY … TO a
// file or a program acts on the server, which must be the primary.
func (c *Classifier) classifyCopy(s *pg_query.CopyStmt) Statement {
	if s.IsFrom {
		return c.write(KindCopyFrom, "COPY … FROM", s)
	}
	switch {
	case s.IsProgram:
		return c.write(KindCopyTo, "COPY … TO PROGRAM", s)
	case s.Filename != "":
		return c.write(KindCopyTo, "COPY … TO a server file", s)
	}
	w := c.walkChildren(s, true)
	var st Statement
	if w.rank > rankNone {
		st = primary(KindCopyTo, w.reason)
		st.ReadOnly = !w.write
	} else {
		st = Statement{Kind: KindCopyTo, Target: Replica, Reason: "COPY … TO STDOUT", ReadOnly: true}
	}
	st.Funcs, st.Pins, st.Unpins = w.funcs, w.pins, w.unpins
	return st
}

func (c *Classifier) classifyCreateTableAs(s *pg_query.CreateTableAsStmt) Statement {
	reason := "DDL: CREATE TABLE AS"
	switch {
	case s.Objtype == pg_query.ObjectType_OBJECT_MATVIEW:
		reason = "DDL: CREATE MATERIALIZED VIEW"
	case s.IsSelectInto:
		reason = "SELECT … INTO"
	}
	st := c.write(KindDDL, reason, s)
	if s.Into != nil && isTemp(s.Into.Rel) {
		st.Pins = appendUnique(st.Pins, PinTempTable)
	}
	return st
}

// isTemp reports a relation created as TEMP or in pg_temp.
func isTemp(rv *pg_query.RangeVar) bool {
	return rv != nil && (rv.Relpersistence == "t" || rv.Schemaname == "pg_temp")
}

func isPgsplitSetting(name string) bool {
	return strings.HasPrefix(name, "pgsplit.")
}
