package test

// Raw protocol helpers, for what pgx will not send.

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"
)

// rawDial opens a plain TCP connection to the proxy.
func rawDial(t *testing.T, p *testProxy) net.Conn {
	t.Helper()
	c, err := net.DialTimeout("tcp", p.addr(), 5*time.Second)
	if err != nil {
		t.Fatalf("dial %s: %v", p.addr(), err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// startupPacket encodes a StartupMessage with the given protocol version
// code and name/value pairs.
func startupPacket(version uint32, kv ...string) []byte {
	body := binary.BigEndian.AppendUint32(nil, version)
	for _, s := range kv {
		body = append(body, s...)
		body = append(body, 0)
	}
	body = append(body, 0)
	return append(binary.BigEndian.AppendUint32(nil, uint32(len(body)+4)), body...)
}

// requestPacket encodes a startup-phase request with only a code
// (SSLRequest 80877103, GSSENCRequest 80877104).
func requestPacket(code uint32) []byte {
	return binary.BigEndian.AppendUint32(binary.BigEndian.AppendUint32(nil, 8), code)
}

// cancelPacket encodes a CancelRequest: length 16, code 80877102, pid, secret.
func cancelPacket(pid uint32, secret []byte) []byte {
	b := binary.BigEndian.AppendUint32(nil, 16)
	b = binary.BigEndian.AppendUint32(b, 80877102)
	b = binary.BigEndian.AppendUint32(b, pid)
	return append(b, secret...)
}

// readUntilClose reads what the server sends until it closes the
// connection or d passes.
func readUntilClose(c net.Conn, d time.Duration) ([]byte, error) {
	_ = c.SetReadDeadline(time.Now().Add(d))
	b, err := io.ReadAll(c)
	if errors.Is(err, net.ErrClosed) || isConnReset(err) {
		err = nil
	}
	return b, err
}

func isConnReset(err error) bool {
	return err != nil && (strings.Contains(err.Error(), "connection reset") || strings.Contains(err.Error(), "broken pipe"))
}

func truncate(b []byte, n int) []byte {
	if len(b) > n {
		return b[:n]
	}
	return b
}

func clone(b []byte) []byte { return append([]byte(nil), b...) }

// onlyAuthRequests reports whether msgs are all Authentication messages:
// what a client that leaves in the middle of its login may have received.
func onlyAuthRequests(msgs []message) bool {
	for _, m := range msgs {
		if m.typ != 'R' {
			return false
		}
	}
	return true
}

// message is one framed backend message.
type message struct {
	typ  byte
	body []byte
}

// splitMessages frames b into backend messages; it fails on a partial one.
func splitMessages(b []byte) ([]message, error) {
	var out []message
	for len(b) > 0 {
		if len(b) < 5 {
			return out, fmt.Errorf("%d stray bytes %q after %d messages", len(b), b, len(out))
		}
		n := int(binary.BigEndian.Uint32(b[1:5]))
		if n < 4 || 1+n > len(b) {
			return out, fmt.Errorf("message %q with length %d, but %d bytes left (%q)", b[0], n, len(b)-1, truncate(b, 40))
		}
		out = append(out, message{typ: b[0], body: b[5 : 1+n]})
		b = b[1+n:]
	}
	return out, nil
}

// onlyError decodes b as exactly one ErrorResponse.
func onlyError(b []byte) (*pgproto3.ErrorResponse, error) {
	msgs, err := splitMessages(b)
	if err != nil {
		return nil, err
	}
	if len(msgs) != 1 || msgs[0].typ != 'E' {
		return nil, fmt.Errorf("want one ErrorResponse, got %q", truncate(b, 80))
	}
	var er pgproto3.ErrorResponse
	if err := er.Decode(msgs[0].body); err != nil {
		return nil, fmt.Errorf("decode ErrorResponse: %w", err)
	}
	return &er, nil
}
