package proxy

import (
	"testing"

	"github.com/pgsplit/pgsplit/config"
)

// TestMovedSessionSurvivesEncoding guards the Session frame's body: what
// the old process sends is what the new one reads.
func TestMovedSessionSurvivesEncoding(t *testing.T) {
	m := &movedSession{PID: 42, Secret: []byte{1, 2, 3, 4}, User: config.User{Name: "app"}, Database: "app",
		Startup: map[string]string{"timezone": "SET timezone TO 'UTC'"}, Settings: map[string]string{"work_mem": "SET work_mem TO '8MB'"},
		Stmts: []movedStmt{{Name: "s1", SQL: "SELECT $1", Server: "pgsplit_ab", Parse: []byte("P..."), Confirmed: true}, {Name: "", SQL: "SELECT 1", Parse: []byte("P")}},
		Route: 2, MinLSN: 0x3000060, ReportLSN: true}
	b, err := encodeMoved(m)
	if err != nil {
		t.Fatal(err)
	}
	got, err := decodeMoved(b)
	if err != nil {
		t.Fatal(err)
	}
	if got.PID != 42 || string(got.Secret) != "\x01\x02\x03\x04" || got.Settings["work_mem"] != m.Settings["work_mem"] ||
		len(got.Stmts) != 2 || got.Stmts[0].Server != "pgsplit_ab" || string(got.Stmts[0].Parse) != "P..." || !got.Stmts[0].Confirmed || !got.ReportLSN || got.MinLSN != m.MinLSN || got.Route != 2 {
		t.Fatalf("decoded %+v, want %+v", got, m)
	}
	for _, bad := range []string{`{}`, `{"pid":1,"secret":"AQID","user":{"Name":"a"},"database":"d"}`, `{"pid":1,"secret":"AQIDBA==","user":{"Name":""},"database":"d"}`,
		`{"pid":1,"secret":"AQIDBA==","user":{"Name":"a"},"database":"d","statements":[{"name":"x","server":"s"}]}`, `[`} {
		if _, err := decodeMoved([]byte(bad)); err == nil {
			t.Errorf("decodeMoved(%s) accepted", bad)
		}
	}
}

func FuzzDecodeMoved(f *testing.F) {
	f.Add([]byte(`{"pid":1,"secret":"AQIDBA==","user":{"Name":"a"},"database":"d"}`))
	f.Add([]byte(`{"pid":1,"statements":[{"name":"x","server":"s","parse":"UA=="}]}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := decodeMoved(b)
		if err == nil && (m.PID == 0 || len(m.Secret) != 4) {
			t.Fatalf("accepted a session without a cancel key: %+v", m)
		}
	})
}
