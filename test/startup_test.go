package test

import (
	"context"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgproto3"
)

// Startup-phase request codes (PostgreSQL's pqcomm.h).
const (
	sslRequestCode    = 80877103
	gssencRequestCode = 80877104
	protocol30        = 3 << 16
)

// TestStartupGarbage sends what is not a valid start of a PostgreSQL
// session. pgsplit must answer with an ErrorResponse carrying the right
// SQLSTATE (or, where the table allows it, just close), never hang or
// crash, and serve the next normal client.
func TestStartupGarbage(t *testing.T) {
	mark := shared.watchLogs(t)
	rng := rand.New(rand.NewPCG(42, 7))
	randomBytes := func(n int) []byte {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(rng.UintN(256))
		}
		return b
	}
	msg := func(typ byte, body []byte) []byte {
		return append(binary.BigEndian.AppendUint32([]byte{typ}, uint32(len(body)+4)), body...)
	}
	startup := startupPacket(protocol30, "user", appUser, "database", appDatabase)
	unterminated := startupPacket(protocol30, "user", appUser)
	unterminated = unterminated[:len(unterminated)-1] // …without the final NUL, length adjusted
	binary.BigEndian.PutUint32(unterminated, uint32(len(unterminated)))

	cases := []struct {
		name       string
		sslFirst   bool   // send an SSLRequest and read its 'N' first
		send       []byte // then this
		closeWrite bool   // then half-close
		code       string // SQLSTATE of the ErrorResponse expected last
		mayClose   bool   // closing without an ErrorResponse is fine too
	}{
		{name: "HTTP request", send: []byte("GET / HTTP/1.1\r\nHost: pgsplit\r\n\r\n"), code: "08P01"},
		{name: "TLS ClientHello", send: []byte{0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03}, code: "08P01"},
		{name: "length 0xFFFFFFFF", send: []byte{0xff, 0xff, 0xff, 0xff, 0, 3, 0, 0}, code: "08P01"},
		{name: "length 0", send: []byte{0, 0, 0, 0}, code: "08P01"},
		{name: "length 7", send: []byte{0, 0, 0, 7, 0, 3, 0}, code: "08P01"},
		{name: "random bytes", send: randomBytes(256), closeWrite: true, code: "08P01", mayClose: true},
		{name: "truncated startup packet", send: []byte{0, 0, 0, 100, 0, 3, 0, 0, 'u'}, closeWrite: true, mayClose: true},
		{name: "protocol 2.0", send: startupPacket(2<<16, "user", appUser), code: "0A000"},
		{name: "protocol 4.0", send: startupPacket(4<<16, "user", appUser), code: "0A000"},
		{name: "no user", send: startupPacket(protocol30, "database", appDatabase), code: "28000"},
		{name: "missing terminator", send: unterminated, code: "08P01"},
		{name: "replication connection", send: startupPacket(protocol30, "user", appUser, "replication", "database"), code: "0A000"},
		{name: "CancelRequest too short", send: []byte{0, 0, 0, 12, 0x04, 0xd2, 0x16, 0x2e, 0, 0, 0, 1}, code: "08P01"},
		{name: "SSLRequest twice", sslFirst: true, send: requestPacket(sslRequestCode), code: "08P01"},
		{name: "data pipelined after SSLRequest", send: append(requestPacket(sslRequestCode), startup...), code: "08P01"},
		{name: "not a password message", send: append(clone(startup), msg('Q', []byte("SELECT 1\x00"))...), code: "08P01"},
		{name: "password message too long", send: append(clone(startup), msg('p', make([]byte, 20000))...), code: "08P01"},
		{name: "bad length after startup", send: append(clone(startup), 'p', 0xff, 0xff, 0xff, 0xff), code: "08P01"},
		{name: "bad SASL initial response", send: append(clone(startup), msg('p', []byte("garbage"))...), code: "08P01"},
		{name: "client leaves during SCRAM", send: startup, closeWrite: true, mayClose: true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			nc := rawDial(t, shared)
			_ = nc.SetDeadline(time.Now().Add(5 * time.Second))
			if tc.sslFirst {
				if _, err := nc.Write(requestPacket(sslRequestCode)); err != nil {
					t.Fatal(err)
				}
				var n [1]byte
				if _, err := nc.Read(n[:]); err != nil || n[0] != 'N' {
					t.Fatalf("SSLRequest answered %q, %v; want 'N'", n[0], err)
				}
			}
			if _, err := nc.Write(tc.send); err != nil {
				t.Fatal(err)
			}
			if tc.closeWrite {
				_ = nc.(*net.TCPConn).CloseWrite()
			}
			got, err := readUntilClose(nc, 5*time.Second)
			if err != nil {
				t.Fatalf("pgsplit neither answered nor closed the connection: %v (got %q)", err, truncate(got, 60))
			}
			msgs, err := splitMessages(got)
			if err != nil {
				t.Fatal(err)
			}
			if len(msgs) == 0 || msgs[len(msgs)-1].typ != 'E' {
				if tc.mayClose && onlyAuthRequests(msgs) {
					return
				}
				t.Fatalf("want an ErrorResponse with SQLSTATE %s last, got %q", tc.code, truncate(got, 80))
			}
			for _, m := range msgs[:len(msgs)-1] {
				if m.typ != 'R' {
					t.Fatalf("unexpected message %q before the ErrorResponse", m.typ)
				}
			}
			var er pgproto3.ErrorResponse
			if err := er.Decode(msgs[len(msgs)-1].body); err != nil {
				t.Fatal(err)
			}
			if er.Code != tc.code || er.Severity != "FATAL" {
				t.Fatalf("ErrorResponse %s %s %q, want FATAL with SQLSTATE %s", er.Severity, er.Code, er.Message, tc.code)
			}
		})
		checkProxyWorks(t, shared, "after "+tc.name)
	}

	t.Run("200 random packets", func(t *testing.T) {
		for i := range 200 {
			nc := rawDial(t, shared)
			b := randomBytes(1 + rng.IntN(300))
			if i%2 == 0 && len(b) >= 8 { // a plausible length, then noise
				binary.BigEndian.PutUint32(b, uint32(8+rng.IntN(len(b))))
				binary.BigEndian.PutUint32(b[4:], protocol30)
			}
			_, _ = nc.Write(b)
			_ = nc.(*net.TCPConn).CloseWrite()
			got, err := readUntilClose(nc, 5*time.Second)
			if err != nil {
				t.Fatalf("packet %d %x: pgsplit neither answered nor closed: %v", i, truncate(b, 16), err)
			}
			if len(got) > 0 && got[0] != 'E' && got[0] != 'R' {
				t.Fatalf("packet %d %x: answered %q", i, truncate(b, 16), truncate(got, 40))
			}
			_ = nc.Close()
		}
		checkProxyWorks(t, shared, "after the random packets")
	})

	for _, e := range shared.logs.entries(mark) {
		if e["raw"] != nil || e.str("level") == "error" || e.str("level") == "dpanic" || strings.Contains(e.str("msg"), "panic") {
			t.Errorf("unexpected log line: %v", e)
		}
	}
}

// TestEncryptionRequestThenStartup sends SSLRequest and GSSENCRequest
// before the StartupMessage on the same socket: each is answered 'N' and
// the login (SCRAM) then works on that socket. psql, whose default sslmode
// is prefer, does the same; with sslmode=require it is refused cleanly.
func TestEncryptionRequestThenStartup(t *testing.T) {
	shared.watchLogs(t)
	cases := []struct {
		name  string
		codes []uint32
	}{
		{"SSLRequest", []uint32{sslRequestCode}},
		{"GSSENCRequest", []uint32{gssencRequestCode}},
		{"GSSENCRequest then SSLRequest", []uint32{gssencRequestCode, sslRequestCode}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := connect(t, shared.appDSN(), func(cfg *pgx.ConnConfig) {
				cfg.DialFunc = func(ctx context.Context, network, addr string) (net.Conn, error) {
					var d net.Dialer
					nc, err := d.DialContext(ctx, network, addr)
					if err != nil {
						return nil, err
					}
					for _, code := range tc.codes {
						if _, err := nc.Write(requestPacket(code)); err != nil {
							nc.Close()
							return nil, err
						}
						var answer [1]byte
						if _, err := nc.Read(answer[:]); err != nil || answer[0] != 'N' {
							nc.Close()
							return nil, fmt.Errorf("request %d answered %q, %v; want 'N'", code, answer[0], err)
						}
					}
					return nc, nil
				}
			})
			mustSelectOne(t, c, "after "+tc.name)
		})
	}
	t.Run("psql sslmode=prefer", func(t *testing.T) {
		res := runPsql(t, shared, appUser, appPassword, "", []string{"PGSSLMODE=prefer"}, "-c", "SELECT 'plain'")
		if res.exitCode != 0 || res.stdout != "plain\n" {
			t.Fatalf("psql: exit %d, stdout %q, stderr %q", res.exitCode, res.stdout, res.stderr)
		}
	})
	t.Run("psql sslmode=require", func(t *testing.T) {
		res := runPsql(t, shared, appUser, appPassword, "", []string{"PGSSLMODE=require"}, "-c", "SELECT 1")
		if res.exitCode != 2 || !strings.Contains(res.stderr, "does not support SSL") {
			t.Fatalf("psql: exit %d, stderr %q; want exit 2, server does not support SSL", res.exitCode, res.stderr)
		}
	})
	checkProxyWorks(t, shared, "after the encryption requests")
}

// TestStartupParameters checks that parameters from the client's startup
// packet (application_name, options=-c …, others) are in effect through
// pgsplit, reported back as ParameterStatus where PostgreSQL reports them,
// and that a bad one is refused with PostgreSQL's SQLSTATE.
func TestStartupParameters(t *testing.T) {
	shared.watchLogs(t)
	cases := []struct {
		name     string
		extra    string            // added to the connection string
		settings map[string]string // current_setting(name) → value
		reported map[string]string // ParameterStatus name → value
		code     string            // SQLSTATE of a refused login
		message  string            // part of the refusal's message
	}{
		{name: "application_name", extra: "application_name=myapp",
			settings: map[string]string{"application_name": "myapp"}, reported: map[string]string{"application_name": "myapp"}},
		{name: "options -c search_path", extra: "options='-c search_path=x'",
			settings: map[string]string{"search_path": "x"}},
		{name: "two options", extra: "options='-c search_path=x -c statement_timeout=1234'",
			settings: map[string]string{"search_path": "x", "statement_timeout": "1234ms"}},
		{name: "--name=value with dashes", extra: "options='--search-path=y'",
			settings: map[string]string{"search_path": "y"}},
		{name: "-cname=value", extra: "options=-csearch_path=z",
			settings: map[string]string{"search_path": "z"}},
		{name: "escaped space", extra: `options='-c application_name=a\\ b'`,
			settings: map[string]string{"application_name": "a b"}},
		{name: "TimeZone", extra: "options='-c TimeZone=Asia/Tokyo'",
			settings: map[string]string{"TimeZone": "Asia/Tokyo"}, reported: map[string]string{"TimeZone": "Asia/Tokyo"}},
		{name: "plain startup parameter", extra: "search_path=w DateStyle='SQL, DMY'",
			settings: map[string]string{"search_path": "w", "DateStyle": "SQL, DMY"}, reported: map[string]string{"DateStyle": "SQL, DMY"}},
		{name: "custom placeholder", extra: "options='-c pgsplit.flag=on'",
			settings: map[string]string{"pgsplit.flag": "on"}},
		{name: "protocol 3.2 requested", extra: "max_protocol_version=3.2 application_name=proto",
			settings: map[string]string{"application_name": "proto"}},
		{name: "unknown parameter", extra: "options='-c nosuch_param=1'", code: "42704", message: "nosuch_param"},
		{name: "bad value", extra: "options='-c statement_timeout=abc'", code: "22023", message: "statement_timeout"},
		{name: "unsupported switch", extra: "options='-d 5'", code: "0A000", message: "-d"},
		{name: "option without value", extra: "options='-c search_path'", code: "08P01", message: "search_path"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			c, err := pgx.ConnectConfig(ctx, connectConfig(t, shared.appDSN(tc.extra)))
			if tc.code != "" {
				if err == nil {
					closeConn(c)
					t.Fatalf("login with %s was accepted", tc.extra)
				}
				pe := wantState(t, err, tc.code, "login with "+tc.extra)
				if !strings.Contains(pe.Message, tc.message) {
					t.Fatalf("refusal %q does not name %q", pe.Message, tc.message)
				}
				return
			}
			if err != nil {
				t.Fatalf("login with %s: %v", tc.extra, err)
			}
			defer closeConn(c)
			for name, want := range tc.settings {
				var got string
				if err := c.QueryRow(ctx, "SELECT current_setting($1)", name).Scan(&got); err != nil || got != want {
					t.Errorf("current_setting(%q) = %q, %v; want %q", name, got, err, want)
				}
			}
			for name, want := range tc.reported {
				if got := c.PgConn().ParameterStatus(name); got != want {
					t.Errorf("ParameterStatus %s = %q, want %q", name, got, want)
				}
			}
		})
	}
	checkProxyWorks(t, shared, "after the refused startup parameters")

	t.Run("psql PGOPTIONS and PGAPPNAME", func(t *testing.T) {
		res := runPsql(t, shared, appUser, appPassword, "", []string{"PGOPTIONS=-c search_path=psqlpath", "PGAPPNAME=psqlapp"},
			"-c", "SELECT current_setting('search_path') || '|' || current_setting('application_name')")
		if res.exitCode != 0 || res.stdout != "psqlpath|psqlapp\n" {
			t.Fatalf("psql: exit %d, stdout %q, stderr %q", res.exitCode, res.stdout, res.stderr)
		}
	})
}
