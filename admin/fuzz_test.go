package admin

import (
	"testing"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/pgsplit/pgsplit/internal/pgmsg"
)

// FuzzAdminExtended feeds arbitrary extended-protocol messages to the admin
// console: no panic, and every answer is whole backend messages.
func FuzzAdminExtended(f *testing.F) {
	parse := (&pgproto3.Parse{Name: "s", Query: "SHOW POOLS"}).Encode
	bind := (&pgproto3.Bind{PreparedStatement: "s", ResultFormatCodes: []int16{1}}).Encode
	for _, enc := range []func([]byte) ([]byte, error){parse, bind} {
		b, _ := enc(nil)
		f.Add(b[0], b[5:])
	}
	f.Add(byte(pgmsg.Execute), []byte{0, 0, 0, 0, 0})
	f.Add(byte(pgmsg.Describe), []byte{pgmsg.TargetStatement, 's', 0})
	src := newFakeSource()
	f.Fuzz(func(t *testing.T, typ byte, body []byte) {
		s := NewSession(src, &fakeClient{}, nil)
		s.stmts["s"] = "SHOW STATS"
		s.portals[""] = portal{cmd: "SHOW CONFIG"}
		for _, ty := range []byte{typ, pgmsg.Parse, pgmsg.Bind, pgmsg.Describe, pgmsg.Execute, pgmsg.Close} {
			out, _ := s.extended(ty, body)
			whole := 0
			for _, b := range pgmsg.Frames(out) {
				whole += 5 + len(b)
			}
			if whole != len(out) {
				t.Fatalf("message %q: %d bytes sent, of which %d in whole messages", ty, len(out), whole)
			}
		}
	})
}
