package proxy

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5/pgproto3"

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
		return 0, nil, fatal(codeProtocolViolation, "invalid startup packet layout: too short")
	}
	code = binary.BigEndian.Uint32(body)
	switch code {
	case codeSSLRequest, codeGSSENCRequest:
		if len(body) != 4 {
			return code, nil, fatal(codeProtocolViolation, "invalid length of startup packet")
		}
		return code, nil, nil
	case codeCancelRequest:
		var cr pgproto3.CancelRequest
		if err := cr.Decode(body); err != nil || len(body) < 12 {
			return code, nil, fatal(codeProtocolViolation, "invalid length of cancel request packet")
		}
		return code, &startup{cancel: &cr}, nil
	}
	major, minor := code>>16, code&0xffff
	if major != 3 {
		return code, nil, fatal(codeFeatureNotSupported,
			fmt.Sprintf("unsupported frontend protocol %d.%d: server supports 3.0 to 3.0", major, minor))
	}
	st = &startup{minor: minor, params: map[string]string{}}
	rest := body[4:]
	for {
		if len(rest) == 0 {
			return code, nil, fatal(codeProtocolViolation, "invalid startup packet layout: expected terminator as last byte")
		}
		if rest[0] == 0 {
			if len(rest) != 1 {
				return code, nil, fatal(codeProtocolViolation, "invalid startup packet layout: expected terminator as last byte")
			}
			break
		}
		i := bytes.IndexByte(rest, 0)
		if i < 0 {
			return code, nil, fatal(codeProtocolViolation, "invalid startup packet layout: unterminated parameter name")
		}
		name := string(rest[:i])
		rest = rest[i+1:]
		j := bytes.IndexByte(rest, 0)
		if j < 0 {
			return code, nil, fatal(codeProtocolViolation, "invalid startup packet layout: unterminated parameter value")
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
		return code, nil, fatal(codeInvalidAuthSpec, "no PostgreSQL user name specified in startup packet")
	}
	if st.params["database"] == "" {
		st.params["database"] = st.params["user"]
	}
	if r := st.params["replication"]; r != "" && r != "false" && r != "off" && r != "no" && r != "0" {
		return code, nil, fatal(codeFeatureNotSupported, "pgsplit does not proxy replication connections; connect to the server directly")
	}
	delete(st.params, "replication")
	return code, st, nil
}

// readStartup runs the startup phase up to the StartupMessage or
// CancelRequest: SSLRequest and GSSENCRequest are answered 'N' (pgsplit does
// not offer TLS yet), at most once each.
func readStartup(br *bufio.Reader, bw *bufio.Writer) (*startup, error) {
	var sawSSL, sawGSS bool
	for {
		body, err := wire.ReadStartup(br)
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
				return nil, fatal(codeProtocolViolation, "encryption requested twice in startup")
			}
			sawSSL = sawSSL || code == codeSSLRequest
			sawGSS = sawGSS || code == codeGSSENCRequest
			// Bytes sent before our answer could be an injection attempt
			// (CVE-2021-23222): refuse them as PostgreSQL does.
			if br.Buffered() > 0 {
				return nil, fatal(codeProtocolViolation, "received unencrypted data after encryption request")
			}
			if err := bw.WriteByte('N'); err != nil {
				return nil, err
			}
			if err := bw.Flush(); err != nil {
				return nil, err
			}
			continue
		}
		return st, nil
	}
}
