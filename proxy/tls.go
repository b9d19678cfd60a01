package proxy

import (
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"

	"github.com/pgsplit/pgsplit/internal/pgmsg"
	"github.com/pgsplit/pgsplit/internal/wire"

	"github.com/pgsplit/pgsplit/config"
	"github.com/pgsplit/pgsplit/pool"
)

// This file is TLS on both sides: what pgsplit offers its clients (the tls
// section: SSLRequest answered 'S', PostgreSQL 17's direct TLS, client
// certificates) and how it reaches the servers (server_tls, handed to
// pgconn as libpq's ssl* settings).

// alpnPostgres is the ALPN protocol of PostgreSQL 17's direct TLS.
const alpnPostgres = "postgresql"

// tlsRecordHandshake is the first byte of a TLS ClientHello; a startup
// packet's first byte is the high byte of its length, always 0.
const tlsRecordHandshake = 0x16

// frontTLS is the client-side TLS of one configuration. It is built at New
// and by every Reload (which reads the certificate files again) and is
// read-only afterwards; the Server swaps it through an atomic pointer, so a
// handshake uses the certificate current when it began and a reload never
// touches a handshake in flight.
type frontTLS struct {
	mode string
	// negotiated answers an SSLRequest; direct takes a connection that
	// opens with a ClientHello and refuses one without ALPN postgresql.
	// Both nil when mode is disable.
	negotiated, direct *tls.Config
	clientCAs          bool // a client certificate is asked for and verified
}

// newFrontTLS loads the files of the tls section. Its errors name the key
// at fault and never show a key's contents.
func newFrontTLS(c config.TLS) (*frontTLS, error) {
	f := &frontTLS{mode: c.TLSMode()}
	if f.mode == config.TLSDisable {
		return f, nil
	}
	pair, err := config.LoadKeyPair("tls.cert_file", c.CertFile, "tls.key_file", c.KeyFile)
	if err != nil {
		return nil, err
	}
	base := &tls.Config{
		MinVersion:   tls.VersionTLS12,
		Certificates: []tls.Certificate{pair},
		// An SSLRequest client may offer no ALPN (libpq before 17); one
		// that offers other protocols only is refused by crypto/tls, as
		// PostgreSQL refuses it.
		NextProtos: []string{alpnPostgres},
	}
	if c.ClientCAFile != "" {
		cas, err := config.LoadCAPool("tls.client_ca_file", c.ClientCAFile)
		if err != nil {
			return nil, err
		}
		// As PostgreSQL with ssl_ca_file: a certificate is asked for and
		// must verify if given; auth.method cert then requires one.
		base.ClientCAs, base.ClientAuth, f.clientCAs = cas, tls.VerifyClientCertIfGiven, true
	}
	f.negotiated = base
	f.direct = base.Clone()
	f.direct.GetConfigForClient = func(hello *tls.ClientHelloInfo) (*tls.Config, error) {
		if !slices.Contains(hello.SupportedProtos, alpnPostgres) {
			return nil, errNoALPN
		}
		return nil, nil
	}
	return f, nil
}

// errNoALPN refuses a direct TLS connection whose ClientHello does not offer
// ALPN postgresql: PostgreSQL 17 refuses it too, so that a TLS client of
// another protocol cannot be made to talk to the database.
var errNoALPN = errors.New("direct TLS connection without ALPN protocol \"postgresql\"")

// handshakeError is a failed TLS handshake with a client: the client gets no
// ErrorResponse (it speaks TLS, not the protocol yet), only the TLS alert
// crypto/tls sent, and the session logs why.
type handshakeError struct{ err error }

func (e *handshakeError) Error() string {
	return "TLS handshake with the client failed: " + e.err.Error()
}
func (e *handshakeError) Unwrap() error { return e.err }

// clientLink is the client's byte stream during the startup phase:
// plaintext at first, TLS once negotiated. serve's goroutine owns it until
// the session takes br and bw over.
type clientLink struct {
	conn net.Conn // the socket: deadlines and Close stay on it under TLS too
	br   *wire.ConnReader
	dst  io.Writer            // where the client's bytes go: conn, or TLS over it
	bufs *wire.BufPool        // br's large buffers
	tls  *tls.ConnectionState // set once the handshake is done
}

// startTLS runs the server side of the handshake over the link (whose
// reader may already hold the ClientHello, for direct TLS) and puts the
// link's reader and writer on top of the TLS connection.
func (l *clientLink) startTLS(cfg *tls.Config) error {
	tc := tls.Server(&prefixConn{Conn: l.conn, br: l.br}, cfg)
	if err := tc.Handshake(); err != nil {
		return &handshakeError{err: err}
	}
	cs := tc.ConnectionState()
	l.tls = &cs
	l.br = wire.NewConnReader(tc, l.bufs)
	l.dst = tc
	return nil
}

// prefixConn reads what the link's reader already holds before reading the
// connection itself: the TLS layer must see the bytes the startup phase
// peeked at (a direct TLS ClientHello).
type prefixConn struct {
	net.Conn
	br *wire.ConnReader // nil once drained; used by the TLS layer's reads only
}

func (c *prefixConn) Read(b []byte) (int, error) {
	if c.br != nil {
		if c.br.Buffered() > 0 {
			return c.br.Read(b)
		}
		c.br = nil
	}
	return c.Conn.Read(b)
}

// describe says how the client's connection is encrypted, for SHOW CLIENTS
// and the log ("" for plain text).
func (l *clientLink) describe() string {
	if l.tls == nil {
		return ""
	}
	return pool.DescribeTLS(*l.tls)
}

// certUser is the user a verified client certificate proves: its subject
// CN ("" without a verified certificate).
func certUser(cs *tls.ConnectionState) string {
	if cs == nil || len(cs.VerifiedChains) == 0 || len(cs.VerifiedChains[0]) == 0 {
		return ""
	}
	return cs.VerifiedChains[0][0].Subject.CommonName
}

// requireTLSError is the answer to a plaintext login under tls.mode require.
func requireTLSError() *pgmsg.Error {
	return pgmsg.Fatal(pgmsg.CodeInvalidAuthSpec, fmt.Sprintf("TLS is required: pgsplit's tls.mode is %s; connect with sslmode=require (or verify-ca, verify-full)", config.TLSRequire))
}
