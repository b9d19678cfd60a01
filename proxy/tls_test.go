package proxy

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"github.com/pgsplit/pgsplit/internal/pgmsg"

	"go.uber.org/goleak"

	"github.com/pgsplit/pgsplit/config"
	"github.com/pgsplit/pgsplit/internal/testcert"
	"github.com/pgsplit/pgsplit/internal/wire"
)

// testFront builds the client-side TLS of mode with a fresh CA's server
// certificate, and returns the pool a client verifies it with.
func testFront(t *testing.T, mode string) (*frontTLS, *x509.CertPool) {
	t.Helper()
	f, err := testcert.WriteServer(t.TempDir(), "proxy test CA", "127.0.0.1", "localhost")
	if err != nil {
		t.Fatal(err)
	}
	front, err := newFrontTLS(config.TLS{Mode: mode, CertFile: f.CertFile, KeyFile: f.KeyFile})
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(f.CA.PEM)
	return front, roots
}

// startupOver runs readStartup on one end of a pipe while client drives the
// other; it returns readStartup's result and the client's error.
func startupOver(t *testing.T, front *frontTLS, client func(net.Conn) error) (*startup, *clientLink, error, error) {
	t.Helper()
	c, s := net.Pipe()
	_ = s.SetDeadline(time.Now().Add(10 * time.Second))
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	done := make(chan error, 1)
	go func() {
		defer c.Close()
		done <- client(c)
	}()
	l := pipeLink(s)
	st, err := readStartup(l, front)
	s.Close()
	return st, l, err, <-done
}

var sslRequest = binary.BigEndian.AppendUint32(binary.BigEndian.AppendUint32(nil, 8), codeSSLRequest)

// negotiate sends an SSLRequest and returns the one-byte answer.
func negotiate(c net.Conn) (byte, error) {
	if _, err := c.Write(sslRequest); err != nil {
		return 0, err
	}
	var b [1]byte
	_, err := io.ReadFull(c, b[:])
	return b[0], err
}

// Each tls.mode's answer to each way of starting a connection: SSLRequest
// then a StartupMessage inside TLS, a plaintext StartupMessage, direct TLS
// with and without ALPN postgresql, and a plaintext CancelRequest.
func TestReadStartupTLSModes(t *testing.T) {
	defer goleak.VerifyNone(t)
	startup := startupPacket(3<<16, "user", "app")
	cancel := binary.BigEndian.AppendUint32(binary.BigEndian.AppendUint32(binary.BigEndian.AppendUint32(
		binary.BigEndian.AppendUint32(nil, 16), codeCancelRequest), 7), 9)
	for _, mode := range []string{config.TLSDisable, config.TLSAllow, config.TLSRequire} {
		front, roots := testFront(t, mode)
		if mode == config.TLSDisable {
			front = &frontTLS{mode: mode}
		}
		clientTLS := func(alpn ...string) *tls.Config {
			return &tls.Config{RootCAs: roots, ServerName: "localhost", NextProtos: alpn, MinVersion: tls.VersionTLS12}
		}
		t.Run(mode+"/SSLRequest", func(t *testing.T) {
			st, l, err, cerr := startupOver(t, front, func(c net.Conn) error {
				answer, err := negotiate(c)
				if err != nil || answer == 'N' {
					_, err = c.Write(startup) // go on in plain text, as sslmode=prefer
					return err
				}
				tc := tls.Client(c, clientTLS())
				if err := tc.Handshake(); err != nil {
					return err
				}
				_, err = tc.Write(startup)
				return err
			})
			if cerr != nil || err != nil || st.params["user"] != "app" {
				t.Fatalf("client %v, server %v", cerr, err)
			}
			if (l.tls != nil) != (mode != config.TLSDisable) {
				t.Fatalf("TLS %q under mode %s", l.describe(), mode)
			}
		})
		t.Run(mode+"/plaintext", func(t *testing.T) {
			_, _, err, _ := startupOver(t, front, func(c net.Conn) error { _, err := c.Write(startup); return err })
			var pe *pgmsg.Error
			if mode == config.TLSRequire {
				if !errors.As(err, &pe) || pe.Code != pgmsg.CodeInvalidAuthSpec || pe.Severity != pgmsg.SeverityFatal {
					t.Fatalf("want FATAL 28000, got %v", err)
				}
			} else if err != nil {
				t.Fatal(err)
			}
		})
		t.Run(mode+"/plaintext cancel", func(t *testing.T) {
			st, _, err, _ := startupOver(t, front, func(c net.Conn) error { _, err := c.Write(cancel); return err })
			if err != nil || st.cancel == nil || st.cancel.ProcessID != 7 {
				t.Fatalf("%+v %v", st, err)
			}
		})
		for _, alpn := range [][]string{{alpnPostgres}, nil} {
			t.Run(mode+"/direct TLS, ALPN "+alpnName(alpn), func(t *testing.T) {
				st, l, err, cerr := startupOver(t, front, func(c net.Conn) error {
					tc := tls.Client(c, clientTLS(alpn...))
					if err := tc.Handshake(); err != nil {
						return err
					}
					_, err := tc.Write(startup)
					return err
				})
				var he *handshakeError
				var pe *pgmsg.Error
				switch {
				case mode == config.TLSDisable:
					// Read as a startup packet, as before TLS: 08P01
					// (a framing error, which failStartup answers so).
					var fe *wire.FrameError
					if !(errors.As(err, &pe) && pe.Code == pgmsg.CodeProtocolViolation || errors.As(err, &fe)) || cerr == nil {
						t.Fatalf("want 08P01, got client %v, server %v", cerr, err)
					}
				case alpn != nil && (err != nil || cerr != nil || st.params["user"] != "app" || l.tls.NegotiatedProtocol != alpnPostgres):
					t.Fatalf("client %v, server %v", cerr, err)
				case alpn == nil && (!errors.As(err, &he) || !errors.Is(err, errNoALPN) || cerr == nil):
					t.Fatalf("want the handshake refused for want of ALPN, got client %v, server %v", cerr, err)
				}
			})
		}
	}
}

func alpnName(alpn []string) string {
	if alpn == nil {
		return "none"
	}
	return alpn[0]
}

// A certificate pair that does not load is refused with the key's name.
func TestNewFrontTLSNamesTheKey(t *testing.T) {
	_, err := newFrontTLS(config.TLS{Mode: config.TLSRequire, CertFile: "/nonexistent/c.pem", KeyFile: "/nonexistent/k.pem"})
	if err == nil || err.Error() != `tls.cert_file: "/nonexistent/c.pem" does not exist` {
		t.Fatalf("got %v", err)
	}
}
