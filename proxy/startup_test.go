package proxy

import (
	"encoding/binary"
	"errors"
	"net"
	"strings"
	"testing"

	"github.com/pgsplit/pgsplit/internal/pgmsg"
	"github.com/pgsplit/pgsplit/internal/wire"

	"go.uber.org/goleak"

	"github.com/pgsplit/pgsplit/config"
	"github.com/pgsplit/pgsplit/internal/secret"
)

// pipeLink is the startup link over one end of a net.Pipe.
func pipeLink(c net.Conn) *clientLink {
	bufs := new(wire.BufPool)
	return &clientLink{conn: c, br: wire.NewConnReader(c, bufs), dst: c, bufs: bufs}
}

func startupPacket(version uint32, kv ...string) []byte {
	body := binary.BigEndian.AppendUint32(nil, version)
	for _, s := range kv {
		body = append(append(body, s...), 0)
	}
	body = append(body, 0)
	return append(binary.BigEndian.AppendUint32(nil, uint32(len(body)+4)), body...)
}

func TestParseStartup(t *testing.T) {
	for _, tc := range []struct {
		name     string
		pkt      []byte
		wantCode string // SQLSTATE expected, "" for success
		check    func(*startup) string
	}{
		{"3.0 with params", startupPacket(3<<16, "user", "app", "database", "db", "application_name", "x"), "",
			func(s *startup) string {
				if s.params["user"] != "app" || s.params["database"] != "db" || s.params["application_name"] != "x" {
					return "params wrong"
				}
				return ""
			}},
		{"database defaults to user", startupPacket(3<<16, "user", "app"), "",
			func(s *startup) string {
				if s.params["database"] != "app" {
					return "database not defaulted"
				}
				return ""
			}},
		{"3.2 negotiated down", startupPacket(3<<16|2, "user", "app", "_pq_.foo", "1"), "",
			func(s *startup) string {
				if s.minor != 2 || len(s.unknown) != 1 || s.unknown[0] != "_pq_.foo" {
					return "minor/unknown options not recorded"
				}
				return ""
			}},
		{"protocol 2.0", startupPacket(2<<16, "user", "app"), pgmsg.CodeFeatureNotSupported, nil},
		{"no user", startupPacket(3<<16, "database", "db"), pgmsg.CodeInvalidAuthSpec, nil},
		{"replication", startupPacket(3<<16, "user", "app", "replication", "database"), pgmsg.CodeFeatureNotSupported, nil},
		{"missing terminator", startupPacket(3<<16, "user", "app")[:20], pgmsg.CodeProtocolViolation, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, st, err := parseStartup(tc.pkt[4:])
			if tc.wantCode == "" {
				if err != nil {
					t.Fatal(err)
				}
				if msg := tc.check(st); msg != "" {
					t.Fatal(msg)
				}
				return
			}
			var pe *pgmsg.Error
			if !errors.As(err, &pe) || pe.Code != tc.wantCode {
				t.Fatalf("want SQLSTATE %s, got %v", tc.wantCode, err)
			}
		})
	}
}

// TestReadStartupOverPipe: SSLRequest is answered 'N' and the StartupMessage
// that follows on the same connection is read; bytes pipelined after an
// SSLRequest are refused (CVE-2021-23222).
func TestReadStartupOverPipe(t *testing.T) {
	defer goleak.VerifyNone(t)
	ssl := binary.BigEndian.AppendUint32(binary.BigEndian.AppendUint32(nil, 8), codeSSLRequest)

	client, server := net.Pipe()
	done := make(chan error, 1)
	go func() {
		defer client.Close()
		if _, err := client.Write(ssl); err != nil {
			done <- err
			return
		}
		var b [1]byte
		if _, err := client.Read(b[:]); err != nil || b[0] != 'N' {
			done <- errors.New("no N answer")
			return
		}
		_, err := client.Write(startupPacket(3<<16, "user", "app"))
		done <- err
	}()
	st, err := readStartup(pipeLink(server), &frontTLS{mode: config.TLSDisable})
	if err != nil || st.params["user"] != "app" {
		t.Fatalf("%v %v", st, err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	server.Close()

	client, server = net.Pipe()
	go func() {
		defer client.Close()
		_, _ = client.Write(append(ssl, startupPacket(3<<16, "user", "app")...))
	}()
	_, err = readStartup(pipeLink(server), &frontTLS{mode: config.TLSDisable})
	var pe *pgmsg.Error
	if !errors.As(err, &pe) || pe.Code != pgmsg.CodeProtocolViolation {
		t.Fatalf("pipelined data after SSLRequest: want 08P01, got %v", err)
	}
	server.Close()
}

func TestParseOptions(t *testing.T) {
	got, err := parseOptions(`-c search_path=a\ b --work-mem=8MB -cstatement_timeout=5s`)
	if err != nil {
		t.Fatal(err)
	}
	if got["search_path"] != "a b" || got["work_mem"] != "8MB" || got["statement_timeout"] != "5s" {
		t.Fatalf("%v", got)
	}
	for _, bad := range []string{"-x", "-c novalue", "--=1"} {
		if _, err := parseOptions(bad); err == nil {
			t.Errorf("%q: want error", bad)
		}
	}
}

func TestStartupSettingsQuoting(t *testing.T) {
	set, _, err := startupSettings(map[string]string{"user": "u", "database": "d", "Application_Name": `it's \ x`})
	if err != nil {
		t.Fatal(err)
	}
	if want := `SELECT pg_catalog.set_config(E'application_name', E'it''s \\ x', false)`; len(set) != 1 || set["application_name"] != want {
		t.Fatalf("got  %v\nwant application_name: %s", set, want)
	}
	if set, _, _ := startupSettings(map[string]string{"user": "u"}); len(set) != 0 {
		t.Fatalf("nothing to set, got %q", set)
	}
}

// The md5 answer must match PostgreSQL's construction; the expected value was
// computed independently with Python's hashlib:
// "md5" + md5(md5("secret"+"bob").hexdigest() + b"\x01\x02\x03\x04").
func TestMD5Password(t *testing.T) {
	if got, want := secret.MD5Response(secret.MD5Hash("bob", "secret"), [4]byte{1, 2, 3, 4}), "md5f21dfe33ff3a9e03dbc3e008251fe5cc"; got != want {
		t.Fatalf("got %s want %s", got, want)
	}
}

// FuzzParseStartup claims only: no panic, and an error is always a pgError
// the client can be told.
func FuzzParseStartup(f *testing.F) {
	f.Add(startupPacket(3<<16, "user", "app")[4:])
	f.Add(binary.BigEndian.AppendUint32(nil, codeSSLRequest))
	f.Add(binary.BigEndian.AppendUint32(binary.BigEndian.AppendUint32(binary.BigEndian.AppendUint32(nil, codeCancelRequest), 1), 2))
	f.Add([]byte("GET / HTTP/1.1\r\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		_, _, err := parseStartup(b)
		if err != nil {
			var pe *pgmsg.Error
			if !errors.As(err, &pe) {
				t.Fatalf("non-pgError %T: %v", err, err)
			}
		}
	})
}

// A startup parameter wins over the same setting in "options", as in
// PostgreSQL, every time.
func TestStartupSettingsPrecedence(t *testing.T) {
	for range 20 {
		set, _, err := startupSettings(map[string]string{"options": "-c search_path=from_options -c work_mem=8MB", "search_path": "from_packet"})
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(set["search_path"], "from_packet") || !strings.Contains(set["work_mem"], "8MB") {
			t.Fatalf("got %v", set)
		}
	}
}
