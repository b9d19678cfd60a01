package router

import (
	"reflect"
	"strings"

	pg_query "github.com/pganalyze/pg_query_go/v6"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// A walker visits every node below a statement — by reflection over the
// generated node structs, so that no node type can be forgotten — and
// records what needs the primary: data-modifying statements nested anywhere
// (writable CTEs), locking clauses, SELECT … INTO, and function calls. It
// also collects the functions named and the session state they pin.
type walker struct {
	c *Classifier
	// exec is false for trees that are not executed (plain EXPLAIN, PREPARE,
	// a view's or function's body): their functions are listed, not judged.
	exec bool

	funcs, pins, unpins []string

	// The strongest reason found so far for the primary.
	rank   int
	write  bool // the reason is (or may be) a write, not only a probe
	reason string
}

// Reasons rank by how sure they are to write; the strongest is reported.
const (
	rankNone = iota
	rankProbe
	rankUnknownFunc
	rankVolatileFunc
	rankWriteFunc
	rankLock
	rankInto
	rankNestedWrite
)

func (w *walker) need(rank int, write bool, reason string) {
	if rank > w.rank {
		w.rank, w.write, w.reason = rank, write, reason
	}
}

// walkChildren visits everything below m, but not m itself: the caller has
// judged the statement at the root.
func (c *Classifier) walkChildren(m protoreflect.ProtoMessage, exec bool) *walker {
	w := &walker{c: c, exec: exec}
	if m != nil {
		w.children(reflect.ValueOf(m))
	}
	return w
}

// A walkPlan lists the fields of one node type that can hold other nodes.
// The parse tree is made of generated protobuf structs, so plain reflection
// over their exported fields reaches every node, and is several times
// cheaper than protoreflect, which boxes every scalar on the way.
type walkPlan []walkField

type walkField struct {
	index int
	kind  uint8 // fieldMessage, fieldList or fieldOneof
}

const (
	fieldMessage = iota + 1 // *T
	fieldList               // []*T
	fieldOneof              // an interface holding a *Wrapper{Field *T}
)

// plan returns the walk plan of a node struct type, building it once per
// Classifier.
func (c *Classifier) plan(t reflect.Type) walkPlan {
	if p, ok := c.plans.Load(t); ok {
		return p.(walkPlan)
	}
	var p walkPlan
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		if !f.IsExported() {
			continue
		}
		switch ft := f.Type; {
		case ft.Kind() == reflect.Pointer && ft.Elem().Kind() == reflect.Struct:
			p = append(p, walkField{i, fieldMessage})
		case ft.Kind() == reflect.Slice && ft.Elem().Kind() == reflect.Pointer && ft.Elem().Elem().Kind() == reflect.Struct:
			p = append(p, walkField{i, fieldList})
		case ft.Kind() == reflect.Interface:
			p = append(p, walkField{i, fieldOneof})
		}
	}
	c.plans.Store(t, p)
	return p
}

// children visits the nodes held by the node v (a pointer to a struct).
func (w *walker) children(v reflect.Value) {
	if v.IsNil() {
		return
	}
	s := v.Elem()
	for _, f := range w.c.plan(s.Type()) {
		fv := s.Field(f.index)
		switch f.kind {
		case fieldMessage:
			if !fv.IsNil() {
				w.visit(fv)
			}
		case fieldList:
			for j := 0; j < fv.Len(); j++ {
				if e := fv.Index(j); !e.IsNil() {
					w.visit(e)
				}
			}
		case fieldOneof:
			// fv holds *Wrapper; the wrapper's only field is the node.
			if fv.IsNil() {
				continue
			}
			wrapper := fv.Elem()
			if wrapper.Kind() != reflect.Pointer || wrapper.IsNil() || wrapper.Elem().NumField() != 1 {
				continue
			}
			if inner := wrapper.Elem().Field(0); inner.Kind() == reflect.Pointer && !inner.IsNil() {
				w.visit(inner)
			}
		}
	}
}

func (w *walker) visit(v reflect.Value) {
	switch x := v.Interface().(type) {
	case *pg_query.FuncCall:
		w.funcCall(x)
	case *pg_query.CommonTableExpr:
		if verb := dmlVerb(x.Ctequery); verb != "" && w.exec {
			w.need(rankNestedWrite, true, "writable CTE ("+verb+")")
		}
	case *pg_query.InsertStmt:
		w.nestedWrite("INSERT")
	case *pg_query.UpdateStmt:
		w.nestedWrite("UPDATE")
	case *pg_query.DeleteStmt:
		w.nestedWrite("DELETE")
	case *pg_query.MergeStmt:
		w.nestedWrite("MERGE")
	case *pg_query.LockingClause:
		if w.exec {
			w.need(rankLock, true, lockReason(x.Strength))
		}
	case *pg_query.IntoClause:
		if w.exec {
			w.need(rankInto, true, "SELECT … INTO")
		}
	}
	w.children(v)
}

// dmlVerb returns INSERT, UPDATE, DELETE or MERGE when n is that statement.
func dmlVerb(n *pg_query.Node) string {
	switch n.GetNode().(type) {
	case *pg_query.Node_InsertStmt:
		return "INSERT"
	case *pg_query.Node_UpdateStmt:
		return "UPDATE"
	case *pg_query.Node_DeleteStmt:
		return "DELETE"
	case *pg_query.Node_MergeStmt:
		return "MERGE"
	}
	return ""
}

func (w *walker) nestedWrite(verb string) {
	if w.exec {
		w.need(rankNestedWrite, true, "data-modifying "+verb+" inside the statement")
	}
}

func lockReason(s pg_query.LockClauseStrength) string {
	switch s {
	case pg_query.LockClauseStrength_LCS_FORKEYSHARE:
		return "SELECT … FOR KEY SHARE"
	case pg_query.LockClauseStrength_LCS_FORSHARE:
		return "SELECT … FOR SHARE"
	case pg_query.LockClauseStrength_LCS_FORNOKEYUPDATE:
		return "SELECT … FOR NO KEY UPDATE"
	}
	return "SELECT … FOR UPDATE"
}

func (w *walker) funcCall(x *pg_query.FuncCall) {
	parts := make([]string, 0, len(x.Funcname))
	for _, n := range x.Funcname {
		if s := n.GetString_(); s != nil {
			parts = append(parts, s.Sval)
		}
	}
	if len(parts) == 0 {
		return
	}
	full := strings.Join(parts, ".")
	w.funcs = appendUnique(w.funcs, full)
	if !w.exec {
		return
	}
	last := parts[len(parts)-1]
	lower := asciiLower(last)
	builtin := len(parts) == 1 || len(parts) == 2 && parts[0] == "pg_catalog"
	switch w.c.funcClass(full, last, builtin) {
	case funcSafe:
	case funcWrite:
		w.need(rankWriteFunc, true, "calls "+full+"()")
	case funcVolatile:
		w.need(rankVolatileFunc, true, "calls volatile function "+full+"()")
	case funcUnknown:
		w.need(rankUnknownFunc, true, "calls "+full+"(), not known to be read-only")
	case funcProbe:
		w.need(rankProbe, false, "writability probe: "+full+"()")
	case funcArgs:
		w.argsFunc(lower, full, x.Args)
	}
	if pin, unpin := funcPins(lower); pin != "" {
		w.pins = appendUnique(w.pins, pin)
	} else if unpin != "" {
		w.unpins = appendUnique(w.unpins, unpin)
	}
}

// argsFunc judges the built-ins whose effect depends on their arguments.
func (w *walker) argsFunc(lower, full string, args []*pg_query.Node) {
	switch lower {
	case "set_config":
		// set_config(name, value, true) is SET LOCAL: it ends with the
		// transaction. Anything else sets the session's value on whichever
		// server runs it.
		if len(args) == 3 {
			if b, ok := constBool(args[2]); ok && b {
				return
			}
		}
		w.need(rankWriteFunc, true, "calls "+full+"() at session level")
		w.pins = appendUnique(w.pins, PinSetConfig)
		if len(args) > 0 {
			if name, ok := constString(args[0]); ok {
				if pin := settingPin(strings.ToLower(name), ""); pin != "" {
					w.pins = appendUnique(w.pins, pin)
				}
			}
		}
	case "current_setting":
		if len(args) > 0 {
			if name, ok := constString(args[0]); ok && writabilityProbeGUC(name) {
				w.need(rankProbe, false, "writability probe: "+full+"('"+strings.ToLower(name)+"')")
			}
		}
	}
}

// constString returns the value of a string constant: an A_Const, or the
// bare String node that option lists (EXPLAIN (…), DefElem) carry.
func constString(n *pg_query.Node) (string, bool) {
	if s := n.GetString_(); s != nil {
		return s.Sval, true
	}
	if c := n.GetAConst(); c != nil && !c.Isnull {
		if s := c.GetSval(); s != nil {
			return s.Sval, true
		}
	}
	return "", false
}

// constBool returns the value of a constant written as a boolean: TRUE,
// 'on', 1 …; ok is false for anything else, including expressions.
func constBool(n *pg_query.Node) (v, ok bool) {
	var s string
	switch {
	case n.GetBoolean() != nil:
		return n.GetBoolean().Boolval, true
	case n.GetInteger() != nil:
		return intBool(int64(n.GetInteger().Ival))
	case n.GetString_() != nil:
		s = n.GetString_().Sval
	case n.GetAConst() != nil && !n.GetAConst().Isnull:
		switch val := n.GetAConst().Val.(type) {
		case *pg_query.A_Const_Boolval:
			return val.Boolval.GetBoolval(), true
		case *pg_query.A_Const_Ival:
			return intBool(int64(val.Ival.GetIval()))
		case *pg_query.A_Const_Sval:
			s = val.Sval.GetSval()
		default:
			return false, false
		}
	default:
		return false, false
	}
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "true", "t", "on", "yes", "y", "1":
		return true, true
	case "false", "f", "off", "no", "n", "0":
		return false, true
	}
	return false, false
}

func intBool(i int64) (v, ok bool) {
	switch i {
	case 0:
		return false, true
	case 1:
		return true, true
	}
	return false, false
}
