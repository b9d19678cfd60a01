package admin

import (
	"encoding/binary"
	"fmt"
	"math"
	"strconv"
	"time"

	"github.com/pgsplit/pgsplit/internal/pgmsg"
)

// A resultSet is a command's answer: columns, rows and the command tag.
type resultSet struct {
	cols []column
	rows [][]any // int64, float64, string, bool, time.Time or nil
	tag  string
}

type column struct {
	name string
	oid  uint32
}

// Column types the console answers with.
const (
	oidBool        = 16
	oidInt8        = 20
	oidText        = 25
	oidFloat8      = 701
	oidTimestamptz = 1184
)

// Result formats of Bind.
const (
	formatText   = 0
	formatBinary = 1
)

func textCol(name string) column  { return column{name, oidText} }
func intCol(name string) column   { return column{name, oidInt8} }
func floatCol(name string) column { return column{name, oidFloat8} }
func boolCol(name string) column  { return column{name, oidBool} }
func timeCol(name string) column  { return column{name, oidTimestamptz} }

// typeSize is pg_type.typlen of the column's type.
func (c column) typeSize() int16 {
	switch c.oid {
	case oidInt8, oidFloat8, oidTimestamptz:
		return 8
	case oidBool:
		return 1
	}
	return -1
}

// format returns the result format of column i from Bind's codes (none:
// text; one: all columns; else per column).
func format(formats []int16, i int) int16 {
	switch len(formats) {
	case 0:
		return formatText
	case 1:
		return formats[0]
	}
	if i < len(formats) {
		return formats[i]
	}
	return formatText
}

func (r *resultSet) rowDescription(out []byte, formats []int16) []byte {
	fields := make([]pgmsg.Field, len(r.cols))
	for i, c := range r.cols {
		fields[i] = pgmsg.Field{Name: c.name, TypeOID: c.oid, TypeSize: c.typeSize(), Format: format(formats, i)}
	}
	return pgmsg.AppendRowDescription(out, fields)
}

func (r *resultSet) dataRows(out []byte, formats []int16) []byte {
	for _, row := range r.rows {
		vals := make([][]byte, len(row))
		for i, v := range row {
			vals[i] = encodeValue(v, format(formats, i) == formatBinary)
		}
		out = pgmsg.AppendDataRow(out, vals)
	}
	return out
}

// pgEpoch is PostgreSQL's timestamp zero.
var pgEpoch = time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)

// encodeValue is v in the text or binary format of its type; nil (NULL)
// for nil and for a zero time.
func encodeValue(v any, bin bool) []byte {
	switch x := v.(type) {
	case nil:
		return nil
	case string:
		return []byte(x) // never nil: "" is not NULL
	case int64:
		if bin {
			return binary.BigEndian.AppendUint64(nil, uint64(x))
		}
		return strconv.AppendInt(nil, x, 10)
	case float64:
		if bin {
			return binary.BigEndian.AppendUint64(nil, math.Float64bits(x))
		}
		return strconv.AppendFloat(nil, x, 'f', -1, 64)
	case bool:
		switch {
		case bin && x:
			return []byte{1}
		case bin:
			return []byte{0}
		case x:
			return []byte("t")
		}
		return []byte("f")
	case time.Time:
		switch {
		case x.IsZero():
			return nil
		case bin:
			return binary.BigEndian.AppendUint64(nil, uint64(x.Sub(pgEpoch).Microseconds()))
		}
		return []byte(x.UTC().Format("2006-01-02 15:04:05.000000") + "+00")
	}
	return []byte(fmt.Sprint(v))
}
