package proxy

import (
	"encoding/binary"
	"testing"

	"github.com/pgsplit/pgsplit/router"
)

func newTestSession() *session {
	return &session{
		cls:      &dbClassifier{Classifier: router.NewClassifier(router.Options{})},
		stmts:    map[string]*clientStmt{},
		settings: map[string]string{},
	}
}

// FuzzAppendExtended feeds arbitrary bodies of the extended-protocol
// messages pgsplit rewrites (Parse, Bind, Describe, Close, Execute) to
// appendExtended. Claims: no panic; a message it accepts is framed right
// (the batch is a sequence of whole messages whose lengths add up); a
// named Parse is renamed to the server name, and Bind/Describe of it carry
// that name.
func FuzzAppendExtended(f *testing.F) {
	f.Add(byte('P'), []byte("s1\x00SELECT $1::int\x00\x00\x01\x00\x00\x00\x17"))
	f.Add(byte('B'), []byte("\x00s1\x00\x00\x00\x00\x01\x00\x00\x00\x011\x00\x00"))
	f.Add(byte('D'), []byte("Ss1\x00"))
	f.Add(byte('C'), []byte("Ss1\x00"))
	f.Add(byte('E'), []byte("\x00\x00\x00\x00\x00"))
	f.Add(byte('D'), []byte(""))
	f.Add(byte('B'), []byte("p"))
	f.Fuzz(func(t *testing.T, typ byte, body []byte) {
		switch typ {
		case 'P', 'B', 'D', 'C', 'E':
		default:
			typ = 'P'
		}
		s := newTestSession()
		// A statement the client prepared, so Bind/Describe have one to rename.
		if err := s.appendExtended('P', []byte("s1\x00SELECT 1\x00\x00\x00")); err != nil {
			t.Fatal(err)
		}
		if err := s.appendExtended(typ, body); err != nil {
			return // refused (08P01): nothing more to check
		}
		rest := s.batch.buf
		for len(rest) > 0 {
			if len(rest) < 5 {
				t.Fatalf("trailing %d bytes", len(rest))
			}
			n := int(binary.BigEndian.Uint32(rest[1:5]))
			if n < 4 || n+1 > len(rest) {
				t.Fatalf("message %q claims length %d of %d bytes", rest[0], n, len(rest))
			}
			rest = rest[1+n:]
		}
		if cs := s.stmts["s1"]; cs != nil && cs.server != "" && len(cs.parse) > 0 {
			if got := cstring(cs.parse[5:]); got != cs.server {
				t.Fatalf("Parse sent as %q, want the server name %q", got, cs.server)
			}
		}
	})
}

// The server name of a statement depends on its text and parameter types
// only, so clients preparing the same statement share it.
func TestServerStmtName(t *testing.T) {
	a := serverStmtName([]byte("SELECT 1\x00\x00\x00"))
	b := serverStmtName([]byte("SELECT 1\x00\x00\x01\x00\x00\x00\x17"))
	if a == b || a != serverStmtName([]byte("SELECT 1\x00\x00\x00")) || len(a) > 63 {
		t.Fatalf("names %q %q", a, b)
	}
	s := newTestSession()
	if err := s.appendExtended('P', []byte("mine\x00SELECT 1\x00\x00\x00")); err != nil {
		t.Fatal(err)
	}
	if err := s.appendExtended('B', []byte("\x00mine\x00\x00\x00\x00\x00\x00\x00")); err != nil {
		t.Fatal(err)
	}
	want := "B\x00\x00\x00\x00" + "\x00" + a + "\x00\x00\x00\x00\x00\x00\x00"
	bind := string(s.batch.buf[len(s.stmts["mine"].parse):])
	if bind[5:] != want[5:] {
		t.Fatalf("Bind sent as %q, want %q", bind, want)
	}
}
