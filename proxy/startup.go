package proxy

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"strings"

	"github.com/pgsplit/pgsplit/internal/pgmsg"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/pgsplit/pgsplit/config"
	"github.com/pgsplit/pgsplit/internal/wire"
)

// Request codes of the startup phase (see PostgreSQL's pqcomm.h).
const (
	codeCancelRequest = 80877102
	codeSSLRequest    = 80877103
	codeGSSENCRequest = 80877104
)

// startup is what a client asked for in its first packets.
type startup struct {
	cancel  *pgproto3.CancelRequest // set for a CancelRequest connection
	minor   uint32                  // protocol minor version requested
	params  map[string]string       // StartupMessage parameters
	unknown []string                // _pq_.* protocol options, which pgsplit does not support
}

// parseStartup decodes one startup-phase packet body (without its length).
// It is a pure function of the bytes so it can be fuzzed.
func parseStartup(body []byte) (code uint32, st *startup, err error) {
	if len(body) < 4 {
		return 0, nil, pgmsg.Fatal(pgmsg.CodeProtocolViolation, "invalid startup packet layout: too short")
	}
	code = binary.BigEndian.Uint32(body)
	switch code {
	case codeSSLRequest, codeGSSENCRequest:
		if len(body) != 4 {
			return code, nil, pgmsg.Fatal(pgmsg.CodeProtocolViolation, "invalid length of startup packet")
		}
		return code, nil, nil
	case codeCancelRequest:
		var cr pgproto3.CancelRequest
		if err := cr.Decode(body); err != nil || len(body) < 12 {
			return code, nil, pgmsg.Fatal(pgmsg.CodeProtocolViolation, "invalid length of cancel request packet")
		}
		return code, &startup{cancel: &cr}, nil
	}
	major, minor := code>>16, code&0xffff
	if major != 3 {
		return code, nil, pgmsg.Fatal(pgmsg.CodeFeatureNotSupported,
			fmt.Sprintf("unsupported frontend protocol %d.%d: server supports 3.0 to 3.0", major, minor))
	}
	st = &startup{minor: minor, params: map[string]string{}}
	rest := body[4:]
	for {
		if len(rest) == 0 {
			return code, nil, pgmsg.Fatal(pgmsg.CodeProtocolViolation, "invalid startup packet layout: expected terminator as last byte")
		}
		if rest[0] == 0 {
			if len(rest) != 1 {
				return code, nil, pgmsg.Fatal(pgmsg.CodeProtocolViolation, "invalid startup packet layout: expected terminator as last byte")
			}
			break
		}
		i := bytes.IndexByte(rest, 0)
		if i < 0 {
			return code, nil, pgmsg.Fatal(pgmsg.CodeProtocolViolation, "invalid startup packet layout: unterminated parameter name")
		}
		name := string(rest[:i])
		rest = rest[i+1:]
		j := bytes.IndexByte(rest, 0)
		if j < 0 {
			return code, nil, pgmsg.Fatal(pgmsg.CodeProtocolViolation, "invalid startup packet layout: unterminated parameter value")
		}
		val := string(rest[:j])
		rest = rest[j+1:]
		if strings.HasPrefix(name, "_pq_.") {
			st.unknown = append(st.unknown, name)
			continue
		}
		st.params[name] = val
	}
	if st.params["user"] == "" {
		return code, nil, pgmsg.Fatal(pgmsg.CodeInvalidAuthSpec, "no PostgreSQL user name specified in startup packet")
	}
	if st.params["database"] == "" {
		st.params["database"] = st.params["user"]
	}
	if r := st.params["replication"]; r != "" && r != "false" && r != "off" && r != "no" && r != "0" {
		return code, nil, pgmsg.Fatal(pgmsg.CodeFeatureNotSupported, "pgsplit does not proxy replication connections; connect to the server directly")
	}
	delete(st.params, "replication")
	return code, st, nil
}

// readStartup runs the startup phase up to the StartupMessage or
// CancelRequest, each encryption request at most once: an SSLRequest is
// answered 'S' and TLS begins when front offers TLS, else 'N';
// GSSENCRequest is answered 'N'. A connection that opens with a TLS
// ClientHello is PostgreSQL 17's direct TLS (unless tls.mode is disable).
// Under tls.mode require a
// plaintext StartupMessage is refused (28000); a plaintext CancelRequest is
// not, as PostgreSQL does not refuse it.
func readStartup(l *clientLink, front *frontTLS) (*startup, error) {
	var sawSSL, sawGSS bool
	// Under tls.mode disable a ClientHello is read as a startup packet, and
	// refused as one (08P01), as before pgsplit offered TLS.
	if first, err := l.br.Peek(1); err == nil && first[0] == tlsRecordHandshake && front.direct != nil {
		if err := l.startTLS(front.direct); err != nil {
			return nil, err
		}
		sawSSL = true
	}
	for {
		body, err := wire.ReadStartup(l.br)
		if err != nil {
			return nil, err // a *wire.FrameError becomes 08P01 in failStartup
		}
		code, st, err := parseStartup(body)
		if err != nil {
			return nil, err
		}
		switch code {
		case codeSSLRequest, codeGSSENCRequest:
			if (code == codeSSLRequest && sawSSL) || (code == codeGSSENCRequest && sawGSS) {
				return nil, pgmsg.Fatal(pgmsg.CodeProtocolViolation, "encryption requested twice in startup")
			}
			sawSSL = sawSSL || code == codeSSLRequest
			sawGSS = sawGSS || code == codeGSSENCRequest
			// Bytes sent before our answer could be an injection attempt
			// (CVE-2021-23222): refuse them as PostgreSQL does.
			if l.br.Buffered() > 0 {
				return nil, pgmsg.Fatal(pgmsg.CodeProtocolViolation, "received unencrypted data after encryption request")
			}
			answer := byte(pgmsg.SSLRefuse)
			if code == codeSSLRequest && front.negotiated != nil {
				answer = pgmsg.SSLAccept
			}
			if _, err := l.dst.Write([]byte{answer}); err != nil {
				return nil, err
			}
			if answer == pgmsg.SSLAccept {
				if err := l.startTLS(front.negotiated); err != nil {
					return nil, err
				}
			}
			continue
		}
		if st.cancel == nil && l.tls == nil && front.mode == config.TLSRequire {
			return nil, requireTLSError()
		}
		return st, nil
	}
}
