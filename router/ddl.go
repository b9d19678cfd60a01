package router

import (
	"strings"

	pg_query "github.com/pganalyze/pg_query_go/v6"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// classifyDDL handles every statement type not named in classifyNode: all
// of them change the catalog (or otherwise need the primary). Function
// bodies, defaults and view queries are not executed, so their functions
// are listed but not judged.
func (c *Classifier) classifyDDL(n *pg_query.Node) Statement {
	m := nodeMessage(n)
	if m == nil {
		return primary(KindOther, "unknown statement")
	}
	tag := commandTag(m)
	kind := KindDDL
	switch m.Interface().(type) {
	case *pg_query.ReturnStmt, *pg_query.PLAssignStmt:
		kind = KindOther
	}
	w := c.walkChildren(m.Interface(), false)
	st := primary(kind, "DDL: "+tag)
	if kind == KindOther {
		st.Reason = "not known to be read-only: " + tag
	}
	st.Funcs = w.funcs
	switch x := m.Interface().(type) {
	case *pg_query.DropdbStmt:
		st.FreesDatabase = x.Dbname
	case *pg_query.RenameStmt:
		if x.RenameType == pg_query.ObjectType_OBJECT_DATABASE {
			st.FreesDatabase = x.Subname
		}
	case *pg_query.CreatedbStmt:
		for _, o := range x.Options {
			if d := o.GetDefElem(); d != nil && d.Defname == "template" {
				st.FreesDatabase = defElemName(d)
			}
		}
	case *pg_query.CreateStmt:
		if isTemp(x.Relation) {
			st.Pins = []string{PinTempTable}
		}
	case *pg_query.ViewStmt:
		if isTemp(x.View) {
			st.Pins = []string{PinTempTable}
		}
	case *pg_query.CreateSeqStmt:
		if isTemp(x.Sequence) {
			st.Pins = []string{PinTempSequence}
		}
	case *pg_query.CreateFunctionStmt:
		if len(x.Funcname) > 1 && x.Funcname[0].GetString_().GetSval() == "pg_temp" {
			st.Pins = []string{PinTempFunction}
		}
	}
	return st
}

// nodeMessage returns the statement inside a Node.
func nodeMessage(n *pg_query.Node) protoreflect.Message {
	m := n.ProtoReflect()
	fd := m.WhichOneof(m.Descriptor().Oneofs().Get(0))
	if fd == nil {
		return nil
	}
	return m.Get(fd).Message()
}

// commandTag names a utility statement for a reason: "CREATE TABLE",
// "DROP INDEX", "GRANT" …
func commandTag(m protoreflect.Message) string {
	switch x := m.Interface().(type) {
	case *pg_query.CreateStmt:
		return "CREATE TABLE"
	case *pg_query.DropStmt:
		return "DROP " + objectName(x.RemoveType)
	case *pg_query.AlterTableStmt:
		return "ALTER " + objectName(x.Objtype)
	case *pg_query.RenameStmt:
		return "ALTER " + objectName(x.RenameType) + " … RENAME"
	case *pg_query.AlterObjectSchemaStmt:
		return "ALTER " + objectName(x.ObjectType) + " … SET SCHEMA"
	case *pg_query.AlterOwnerStmt:
		return "ALTER " + objectName(x.ObjectType) + " … OWNER TO"
	case *pg_query.DefineStmt:
		return "CREATE " + objectName(x.Kind)
	case *pg_query.CommentStmt:
		return "COMMENT"
	case *pg_query.GrantStmt:
		if x.IsGrant {
			return "GRANT"
		}
		return "REVOKE"
	case *pg_query.GrantRoleStmt:
		if x.IsGrant {
			return "GRANT role"
		}
		return "REVOKE role"
	case *pg_query.CreateFunctionStmt:
		if x.IsProcedure {
			return "CREATE PROCEDURE"
		}
		return "CREATE FUNCTION"
	case *pg_query.IndexStmt:
		return "CREATE INDEX"
	case *pg_query.ViewStmt:
		return "CREATE VIEW"
	case *pg_query.CreateSeqStmt:
		return "CREATE SEQUENCE"
	case *pg_query.AlterSeqStmt:
		return "ALTER SEQUENCE"
	case *pg_query.CreatedbStmt:
		return "CREATE DATABASE"
	case *pg_query.DropdbStmt:
		return "DROP DATABASE"
	case *pg_query.CreateTrigStmt:
		return "CREATE TRIGGER"
	case *pg_query.CreateEventTrigStmt:
		return "CREATE EVENT TRIGGER"
	case *pg_query.CreatePLangStmt:
		return "CREATE LANGUAGE"
	case *pg_query.CreateRoleStmt:
		return "CREATE ROLE"
	case *pg_query.CreateStatsStmt:
		return "CREATE STATISTICS"
	case *pg_query.AlterStatsStmt:
		return "ALTER STATISTICS"
	case *pg_query.SecLabelStmt:
		return "SECURITY LABEL"
	case *pg_query.AlterSystemStmt:
		return "ALTER SYSTEM"
	case *pg_query.RuleStmt:
		return "CREATE RULE"
	case *pg_query.CompositeTypeStmt, *pg_query.CreateEnumStmt, *pg_query.CreateRangeStmt:
		return "CREATE TYPE"
	}
	return camelToTag(string(m.Descriptor().Name()))
}

// objectName turns OBJECT_MATVIEW into "MATERIALIZED VIEW" and the like.
func objectName(t pg_query.ObjectType) string {
	switch t {
	case pg_query.ObjectType_OBJECT_MATVIEW:
		return "MATERIALIZED VIEW"
	case pg_query.ObjectType_OBJECT_FDW:
		return "FOREIGN DATA WRAPPER"
	case pg_query.ObjectType_OBJECT_FOREIGN_SERVER:
		return "SERVER"
	case pg_query.ObjectType_OBJECT_TSCONFIGURATION:
		return "TEXT SEARCH CONFIGURATION"
	case pg_query.ObjectType_OBJECT_TSDICTIONARY:
		return "TEXT SEARCH DICTIONARY"
	case pg_query.ObjectType_OBJECT_STATISTIC_EXT:
		return "STATISTICS"
	case pg_query.ObjectType_OBJECT_OPCLASS:
		return "OPERATOR CLASS"
	case pg_query.ObjectType_OBJECT_OPFAMILY:
		return "OPERATOR FAMILY"
	case pg_query.ObjectType_OBJECT_TABCONSTRAINT:
		return "CONSTRAINT"
	}
	s := strings.TrimPrefix(t.String(), "OBJECT_")
	return strings.ReplaceAll(s, "_", " ")
}

// camelToTag turns "CreateExtensionStmt" into "CREATE EXTENSION".
func camelToTag(name string) string {
	name = strings.TrimSuffix(name, "Stmt")
	var b strings.Builder
	for i, r := range name {
		if i > 0 && r >= 'A' && r <= 'Z' {
			b.WriteByte(' ')
		}
		b.WriteRune(r)
	}
	return strings.ToUpper(b.String())
}

// defElemName is the name a DefElem gives (CREATE DATABASE … TEMPLATE x):
// a String or a type name.
func defElemName(d *pg_query.DefElem) string {
	if sv := d.GetArg().GetString_(); sv != nil {
		return sv.GetSval()
	}
	if tn := d.GetArg().GetTypeName(); tn != nil && len(tn.Names) > 0 {
		return tn.Names[len(tn.Names)-1].GetString_().GetSval()
	}
	return ""
}
