package admin

import (
	"bytes"
	"encoding/binary"
	"math"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"
)

// Bind's result format codes: none means text for all, one applies to
// every column, more are per column (and text past their end).
func TestFormatCodesApplyAsBindGivesThem(t *testing.T) {
	for _, tc := range []struct {
		formats []int16
		col     int
		want    int16
	}{
		{nil, 3, formatText},
		{[]int16{formatBinary}, 0, formatBinary},
		{[]int16{formatBinary}, 7, formatBinary},
		{[]int16{formatText, formatBinary}, 1, formatBinary},
		{[]int16{formatText, formatBinary}, 0, formatText},
		{[]int16{formatBinary, formatBinary}, 2, formatText},
	} {
		if got := format(tc.formats, tc.col); got != tc.want {
			t.Errorf("format(%v, %d) = %d, want %d", tc.formats, tc.col, got, tc.want)
		}
	}
}

// Each value type in PostgreSQL's text and binary formats: int8, float8,
// bool, timestamptz (microseconds since 2000-01-01 UTC), text; nil and the
// zero time are NULL, the empty string is not.
func TestValuesEncodeAsPostgreSQLDoes(t *testing.T) {
	at := time.Date(2000, 1, 1, 0, 0, 1, 2000, time.FixedZone("x", 3600))
	u64 := func(v uint64) []byte { return binary.BigEndian.AppendUint64(nil, v) }
	i64 := func(v int64) []byte { return u64(uint64(v)) }
	for _, tc := range []struct {
		v         any
		text, bin []byte
	}{
		{int64(-42), []byte("-42"), i64(-42)},
		{1.5, []byte("1.5"), u64(math.Float64bits(1.5))},
		{true, []byte("t"), []byte{1}},
		{false, []byte("f"), []byte{0}},
		{"x", []byte("x"), []byte("x")},
		{"", []byte{}, []byte{}},
		{at, []byte("1999-12-31 23:00:01.000002+00"), i64(1e6 + 2 - 3600e6)},
		{time.Time{}, nil, nil},
		{nil, nil, nil},
	} {
		for _, bin := range []bool{false, true} {
			want := tc.text
			if bin {
				want = tc.bin
			}
			got := encodeValue(tc.v, bin)
			if !bytes.Equal(got, want) || (got == nil) != (want == nil) {
				t.Errorf("encodeValue(%#v, binary %v) = %q (nil %v), want %q (nil %v)", tc.v, bin, got, got == nil, want, want == nil)
			}
		}
	}
}

// The row description gives each column its type's OID and size and the
// format Bind asked for.
func TestRowDescriptionCarriesTypesAndFormats(t *testing.T) {
	r := &resultSet{cols: []column{textCol("a"), intCol("b"), floatCol("c"), boolCol("d"), timeCol("e")}}
	buf := r.rowDescription(nil, []int16{formatText, formatBinary, formatText, formatBinary, formatText})
	m, err := pgproto3.NewFrontend(bytes.NewReader(buf), nil).Receive()
	if err != nil {
		t.Fatal(err)
	}
	want := []struct {
		oid    uint32
		size   int16
		format int16
	}{{oidText, -1, 0}, {oidInt8, 8, 1}, {oidFloat8, 8, 0}, {oidBool, 1, 1}, {oidTimestamptz, 8, 0}}
	for i, f := range m.(*pgproto3.RowDescription).Fields {
		if f.DataTypeOID != want[i].oid || f.DataTypeSize != want[i].size || f.Format != want[i].format {
			t.Errorf("column %s: oid %d size %d format %d, want %+v", f.Name, f.DataTypeOID, f.DataTypeSize, f.Format, want[i])
		}
	}
}
