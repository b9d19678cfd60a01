package proxy

import (
	"bytes"
	"encoding/binary"
	"testing"

	"go.uber.org/zap"

	"github.com/pgsplit/pgsplit/config"
	"github.com/pgsplit/pgsplit/nodes"
)

func newTestSession() *session {
	return &session{
		srv:   &Server{qlog: newQueryLog(config.Log{}, zap.NewNop())},
		cls:   nodes.NewCatalog(&config.Config{}),
		stmts: map[string]*clientStmt{},
		state: newClientState(),
	}
}

// FuzzAppendExtended feeds arbitrary bodies of the extended-protocol
// messages pgsplit rewrites (Parse, Bind, Describe, Close, Execute) to
// appendExtended. Claims: no panic; a message it accepts is framed right
// (the batch is a sequence of whole messages whose lengths add up); a
// named Parse is renamed to the server name, and Bind/Describe of it carry
// that name; a Bind's kept parameters decode without panic.
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
		s.srv.qlog.cfg.Store(&config.Log{ExplainSlow: true}) // Bind keeps its parameters
		// A statement the client prepared, so Bind/Describe have one to rename.
		if err := s.appendExtended('P', []byte("s1\x00SELECT 1\x00\x00\x00")); err != nil {
			t.Fatal(err)
		}
		if err := s.appendExtended(typ, body); err != nil {
			return // refused (08P01): nothing more to check
		}
		checkFramed(t, s.batch.buf)
		for _, bp := range s.batch.portals {
			if bp.params != nil {
				_, _, _, _ = bp.params.decode() // kept parameters: decoding may fail, not panic
			}
		}
		if cs := s.stmts["s1"]; cs != nil && cs.server != "" && len(cs.parse) > 0 {
			if got := cstring(cs.parse[5:]); got != cs.server {
				t.Fatalf("Parse sent as %q, want the server name %q", got, cs.server)
			}
		}
	})
}

// checkFramed fails unless buf is whole protocol messages.
func checkFramed(t *testing.T, buf []byte) {
	t.Helper()
	for len(buf) > 0 {
		if len(buf) < 5 {
			t.Fatalf("trailing %d bytes", len(buf))
		}
		n := int(binary.BigEndian.Uint32(buf[1:5]))
		if n < 4 || n+1 > len(buf) {
			t.Fatalf("message %q claims length %d of %d bytes", buf[0], n, len(buf))
		}
		buf = buf[1+n:]
	}
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

// Under log.explain_slow an Execute of a read keeps its portal's Bind
// parameters (a copy: the client reader's buffer is reused) and its
// statement's parameter types; writes keep none; with the setting off
// nothing is kept and Bind + Execute allocate no more than before
// parameters were kept (one allocation: the statement name's string).
func TestBindParamsKept(t *testing.T) {
	// Bind of s1: formats binary, text; values int4 42, "abc"; no result formats.
	bind := []byte("\x00s1\x00\x00\x02\x00\x01\x00\x00\x00\x02\x00\x00\x00\x04\x00\x00\x00\x2a\x00\x00\x00\x03abc\x00\x00")
	execute := []byte("\x00\x00\x00\x00\x00")
	run := func(explain bool, sql string) (*session, []execution) {
		s := newTestSession()
		s.srv.qlog.cfg.Store(&config.Log{ExplainSlow: explain})
		// Parse declares $1 int4 and leaves $2 to the server.
		if err := s.appendExtended('P', []byte("s1\x00"+sql+"\x00\x00\x01\x00\x00\x00\x17")); err != nil {
			t.Fatal(err)
		}
		for _, m := range []struct {
			typ  byte
			body []byte
		}{{'B', bind}, {'E', execute}} {
			buf := bytes.Clone(m.body)
			if err := s.appendExtended(m.typ, buf); err != nil {
				t.Fatal(err)
			}
			clear(buf) // the reader's buffer holds the next message
		}
		return s, s.batch.execs
	}

	_, execs := run(true, "SELECT $1, $2")
	if len(execs) != 1 || execs[0].params == nil {
		t.Fatalf("read under explain_slow: executions %+v, want one with parameters", execs)
	}
	oids, formats, values, err := execs[0].params.decode()
	if err != nil {
		t.Fatal(err)
	}
	if len(oids) != 1 || oids[0] != 23 || len(formats) != 2 || formats[0] != 1 || formats[1] != 0 ||
		len(values) != 2 || !bytes.Equal(values[0], []byte{0, 0, 0, 42}) || string(values[1]) != "abc" {
		t.Fatalf("decoded oids %v formats %v values %q", oids, formats, values)
	}

	if _, execs := run(true, "INSERT INTO t VALUES ($1, $2)"); len(execs) != 1 || execs[0].params != nil {
		t.Fatalf("write under explain_slow: executions %+v, want one without parameters", execs)
	}
	s, execs := run(false, "SELECT $1, $2")
	if len(execs) != 1 || execs[0].params != nil {
		t.Fatalf("explain_slow off: executions %+v, want one without parameters", execs)
	}
	allocs := func() float64 {
		return testing.AllocsPerRun(100, func() {
			_ = s.appendExtended('B', bind)
			_ = s.appendExtended('E', execute)
			s.batch.reset()
		})
	}
	if n := allocs(); n > 1 {
		t.Fatalf("Bind + Execute with explain_slow off: %v allocations, want at most 1", n)
	}
	s.srv.qlog.cfg.Store(&config.Log{ExplainSlow: true})
	if n := allocs(); n < 2 {
		t.Fatalf("Bind + Execute with explain_slow on: %v allocations; the measure cannot tell copying from not", n)
	}
}
