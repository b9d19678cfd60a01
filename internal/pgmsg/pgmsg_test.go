package pgmsg

import (
	"bytes"
	"testing"

	"github.com/jackc/pgx/v5/pgproto3"
)

// decodeBackend reads the messages in buf as a client would.
func decodeBackend(t *testing.T, buf []byte) []pgproto3.BackendMessage {
	t.Helper()
	f := pgproto3.NewFrontend(bytes.NewReader(buf), nil)
	var out []pgproto3.BackendMessage
	for range Frames(buf) {
		m, err := f.Receive()
		if err != nil {
			t.Fatalf("pgproto3 cannot read what pgmsg wrote: %v", err)
		}
		// Receive reuses its messages: keep a copy of what the test checks.
		switch x := m.(type) {
		case *pgproto3.CommandComplete:
			c := *x
			c.CommandTag = append([]byte(nil), x.CommandTag...)
			m = &c
		case *pgproto3.ReadyForQuery:
			c := *x
			m = &c
		case *pgproto3.ErrorResponse:
			c := *x
			m = &c
		default:
			m = x
		}
		out = append(out, m)
	}
	return out
}

// The messages pgsplit writes itself are what pgproto3 (any driver) reads:
// types, lengths and fields.
func TestEncodersWriteWhatDriversRead(t *testing.T) {
	var buf []byte
	buf = AppendEmpty(buf, ParseComplete)
	buf = AppendCommandComplete(buf, "DEALLOCATE")
	buf = (&Error{Severity: SeverityError, Code: CodeFeatureNotSupported, Message: "no", Detail: "why"}).Append(buf)
	buf = AppendNoParameters(buf)
	buf = AppendReadyForQuery(buf, TxActive)
	got := decodeBackend(t, buf)
	if len(got) != 5 {
		t.Fatalf("want 5 messages, got %d", len(got))
	}
	if _, ok := got[0].(*pgproto3.ParseComplete); !ok {
		t.Errorf("message 1: %T, want ParseComplete", got[0])
	}
	if c, ok := got[1].(*pgproto3.CommandComplete); !ok || string(c.CommandTag) != "DEALLOCATE" {
		t.Errorf("message 2: %#v, want CommandComplete DEALLOCATE", got[1])
	}
	if e, ok := got[2].(*pgproto3.ErrorResponse); !ok || e.Code != "0A000" || e.Severity != "ERROR" || e.Message != "no" || e.Detail != "why" {
		t.Errorf("message 3: %#v, want the ErrorResponse", got[2])
	}
	if p, ok := got[3].(*pgproto3.ParameterDescription); !ok || len(p.ParameterOIDs) != 0 {
		t.Errorf("message 4: %#v, want an empty ParameterDescription", got[3])
	}
	if z, ok := got[4].(*pgproto3.ReadyForQuery); !ok || z.TxStatus != 'T' {
		t.Errorf("message 5: %#v, want ReadyForQuery T", got[4])
	}
}

// Query and Close are what a server reads.
func TestFrontendEncodersWriteWhatServersRead(t *testing.T) {
	buf := AppendQuery(nil, "DISCARD ALL")
	buf = AppendClose(buf, TargetStatement, "s1")
	b := pgproto3.NewBackend(bytes.NewReader(buf), nil)
	m, err := b.Receive()
	if q, ok := m.(*pgproto3.Query); err != nil || !ok || q.String != "DISCARD ALL" {
		t.Fatalf("first: %#v %v, want Query DISCARD ALL", m, err)
	}
	m, err = b.Receive()
	if c, ok := m.(*pgproto3.Close); err != nil || !ok || c.ObjectType != 'S' || c.Name != "s1" {
		t.Fatalf("second: %#v %v, want Close S s1", m, err)
	}
}

// Frames yields whole messages only: a truncated one or a length under 4
// ends the walk instead of reading past the buffer.
func TestFramesStopsAtAPartialOrBadMessage(t *testing.T) {
	whole := AppendReadyForQuery(AppendEmpty(nil, BindComplete), TxIdle)
	for _, tc := range []struct {
		name string
		buf  []byte
		want string
	}{
		{"whole", whole, "2Z"},
		{"truncated last", whole[:len(whole)-1], "2"},
		{"length under 4", append(append([]byte(nil), whole...), 'C', 0, 0, 0, 2), "2Z"},
		{"empty", nil, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var got []byte
			for typ := range Frames(tc.buf) {
				got = append(got, typ)
			}
			if string(got) != tc.want {
				t.Errorf("types %q, want %q", got, tc.want)
			}
		})
	}
}

func TestErrorSeverity(t *testing.T) {
	if !Fatal(CodeAdminShutdown, "bye").IsFatal() || Err(CodeInternalError, "oops").IsFatal() {
		t.Fatal("Fatal must be fatal and Err must not")
	}
	if got := Err(CodeProtocolViolation, "bad").Error(); got != "08P01: bad" {
		t.Fatalf("Error() = %q", got)
	}
}

// FuzzFrames: any bytes, no panic, and every body yielded lies within the
// buffer with the length its header gives.
func FuzzFrames(f *testing.F) {
	f.Add(AppendReadyForQuery(AppendCommandComplete(nil, "SELECT 1"), TxIdle))
	f.Add([]byte{'Z', 0xff, 0xff, 0xff, 0xff, 'I'})
	f.Add([]byte{'Z', 0, 0, 0, 0})
	f.Fuzz(func(t *testing.T, buf []byte) {
		seen := 0
		for _, body := range Frames(buf) {
			seen += 5 + len(body)
			if seen > len(buf) {
				t.Fatalf("frames past the buffer: %d > %d", seen, len(buf))
			}
		}
	})
}

// RowDescription and DataRow carry each field and value as a driver reads
// them: names, types, sizes, formats; NULL apart from the empty value.
func TestRowEncodersWriteWhatDriversRead(t *testing.T) {
	buf := AppendRowDescription(nil, []Field{
		{Name: "name", TypeOID: 25, TypeSize: -1},
		{Name: "n", TypeOID: 20, TypeSize: 8, Format: 1},
	})
	buf = AppendDataRow(buf, [][]byte{[]byte("x"), nil})
	buf = AppendDataRow(buf, [][]byte{{}, {0, 0, 0, 0, 0, 0, 0, 7}})
	f := pgproto3.NewFrontend(bytes.NewReader(buf), nil)
	m, err := f.Receive()
	rd, ok := m.(*pgproto3.RowDescription)
	if err != nil || !ok || len(rd.Fields) != 2 {
		t.Fatalf("first: %#v %v, want a RowDescription of 2 fields", m, err)
	}
	for i, want := range []pgproto3.FieldDescription{
		{Name: []byte("name"), DataTypeOID: 25, DataTypeSize: -1, TypeModifier: -1},
		{Name: []byte("n"), DataTypeOID: 20, DataTypeSize: 8, TypeModifier: -1, Format: 1},
	} {
		got := rd.Fields[i]
		if string(got.Name) != string(want.Name) || got.TableOID != 0 || got.TableAttributeNumber != 0 || got.DataTypeOID != want.DataTypeOID ||
			got.DataTypeSize != want.DataTypeSize || got.TypeModifier != want.TypeModifier || got.Format != want.Format {
			t.Errorf("field %d: %+v, want %+v", i, got, want)
		}
	}
	for i, want := range [][][]byte{{[]byte("x"), nil}, {{}, {0, 0, 0, 0, 0, 0, 0, 7}}} {
		m, err := f.Receive()
		dr, ok := m.(*pgproto3.DataRow)
		if err != nil || !ok || len(dr.Values) != len(want) {
			t.Fatalf("row %d: %#v %v", i, m, err)
		}
		for j, v := range dr.Values {
			if (v == nil) != (want[j] == nil) || !bytes.Equal(v, want[j]) {
				t.Errorf("row %d value %d: %q (nil %v), want %q (nil %v)", i, j, v, v == nil, want[j], want[j] == nil)
			}
		}
	}
}
