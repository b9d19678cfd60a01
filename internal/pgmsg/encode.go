package pgmsg

import (
	"encoding/binary"
	"iter"
	"math"
)

// Begin appends the header of a message of type typ with its length left
// to Finish, and returns the buffer and where the message starts.
func Begin(buf []byte, typ byte) ([]byte, int) {
	return append(buf, typ, 0, 0, 0, 0), len(buf)
}

// Finish sets the length of the message Begin started at start, which now
// runs to the end of buf.
func Finish(buf []byte, start int) []byte {
	binary.BigEndian.PutUint32(buf[start+1:], uint32(len(buf)-start-1))
	return buf
}

// AppendEmpty appends a message of type typ with no body (ParseComplete,
// BindComplete, CloseComplete, NoData, EmptyQueryResponse, PortalSuspended).
func AppendEmpty(buf []byte, typ byte) []byte {
	return append(buf, typ, 0, 0, 0, 4)
}

// AppendReadyForQuery appends ReadyForQuery with transaction status status.
func AppendReadyForQuery(buf []byte, status byte) []byte {
	return append(buf, ReadyForQuery, 0, 0, 0, 5, status)
}

// AppendCommandComplete appends CommandComplete with tag.
func AppendCommandComplete(buf []byte, tag string) []byte {
	buf, start := Begin(buf, CommandComplete)
	return Finish(append(append(buf, tag...), 0), start)
}

// AppendQuery appends a simple-protocol Query of sql.
func AppendQuery(buf []byte, sql string) []byte {
	buf, start := Begin(buf, Query)
	return Finish(append(append(buf, sql...), 0), start)
}

// AppendClose appends a Close of the prepared statement or portal name
// (target is TargetStatement or TargetPortal).
func AppendClose(buf []byte, target byte, name string) []byte {
	buf, start := Begin(buf, Close)
	return Finish(append(append(append(buf, target), name...), 0), start)
}

// AppendNoParameters appends a ParameterDescription of no parameters.
func AppendNoParameters(buf []byte) []byte {
	return append(buf, ParameterDescription, 0, 0, 0, 6, 0, 0)
}

// Frames yields the type and body of each whole message in buf (a batch
// collected by the caller); a trailing partial message is not yielded.
func Frames(buf []byte) iter.Seq2[byte, []byte] {
	return func(yield func(byte, []byte) bool) {
		for len(buf) >= 5 {
			n := binary.BigEndian.Uint32(buf[1:5])
			if n < 4 || uint64(len(buf)) < 1+uint64(n) {
				return
			}
			end := 1 + int(n)
			if !yield(buf[0], buf[5:end]) {
				return
			}
			buf = buf[end:]
		}
	}
}

// Field is one column of a RowDescription.
type Field struct {
	Name    string
	TypeOID uint32
	// TypeSize is the type's pg_type.typlen: -1 for a variable length.
	TypeSize int16
	Format   int16 // 0: text, 1: binary
}

// AppendRowDescription appends a RowDescription of fields. pgsplit's own
// rows come from no table and carry no type modifier.
func AppendRowDescription(buf []byte, fields []Field) []byte {
	buf, start := Begin(buf, RowDescription)
	buf = binary.BigEndian.AppendUint16(buf, uint16(len(fields)))
	for _, f := range fields {
		buf = append(append(buf, f.Name...), 0)
		buf = binary.BigEndian.AppendUint32(buf, 0) // table OID
		buf = binary.BigEndian.AppendUint16(buf, 0) // column number
		buf = binary.BigEndian.AppendUint32(buf, f.TypeOID)
		buf = binary.BigEndian.AppendUint16(buf, uint16(f.TypeSize))
		buf = binary.BigEndian.AppendUint32(buf, math.MaxUint32) // type modifier -1
		buf = binary.BigEndian.AppendUint16(buf, uint16(f.Format))
	}
	return Finish(buf, start)
}

// AppendDataRow appends a DataRow of values, each already in its column's
// format; a nil value is NULL (an empty one is not).
func AppendDataRow(buf []byte, values [][]byte) []byte {
	buf, start := Begin(buf, DataRow)
	buf = binary.BigEndian.AppendUint16(buf, uint16(len(values)))
	for _, v := range values {
		if v == nil {
			buf = binary.BigEndian.AppendUint32(buf, math.MaxUint32) // length -1
			continue
		}
		buf = binary.BigEndian.AppendUint32(buf, uint32(len(v)))
		buf = append(buf, v...)
	}
	return Finish(buf, start)
}
