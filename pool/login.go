package pool

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/pgsplit/pgsplit/internal/secret"
)

// NoClientKeyError is returned, before any connection is opened, for a user
// pgsplit holds only a SCRAM verifier for while no client of that user has
// logged in yet: the ClientKey that pass-through needs comes from a
// client's proof.
type NoClientKeyError struct{ User string }

func (e *NoClientKeyError) Error() string {
	return fmt.Sprintf("cannot log in to the servers as %q yet: pgsplit holds only a SCRAM verifier for this user and learns the key it logs in with from a client's successful login", e.User)
}

// LoginConfig is ConnConfig for a user whose secret is a plain password,
// an md5 hash or a SCRAM verifier (see SetLogin).
func LoginConfig(host string, port int, tlsCfg TLS, user, secretText, database string, timeout time.Duration, keys *secret.KeyRing) (*pgconn.Config, error) {
	cfg, err := ConnConfig(host, port, tlsCfg, user, "", database, timeout)
	if err != nil {
		return nil, err
	}
	if err := SetLogin(cfg, secretText, keys); err != nil {
		return nil, err
	}
	return cfg, nil
}

// LoginError is pgsplit's own refusal to go on with a server's login: the
// server asks for a method the secret pgsplit holds cannot answer, or the
// server's SCRAM factors or signature do not match the verifier. Like a
// server's 28P01, it says nothing about whether the server is up.
type LoginError struct{ msg string }

func (e *LoginError) Error() string { return "upstream login: " + e.msg }

// IsLoginRefusal reports whether err is pgsplit's own refusal of a user's
// login to a server (*LoginError, *NoClientKeyError): the user's secret is
// the problem, not the server.
func IsLoginRefusal(err error) bool {
	var le *LoginError
	var nk *NoClientKeyError
	return errors.As(err, &le) || errors.As(err, &nk)
}

func loginErrorf(format string, args ...any) error {
	return &LoginError{msg: fmt.Sprintf(format, args...)}
}

// SetLogin makes cfg (from ConnConfig) log in as cfg.User with secretText,
// which is a plain password (pgconn's own login), an md5 hash (md5
// challenges answered from the hash) or a SCRAM-SHA-256 verifier (SCRAM
// pass-through with the ClientKey kept in keys for it). pgconn still dials,
// negotiates TLS and reads the rest of the startup: only the answers to
// the server's authentication requests come from here. Errors never
// include the secret.
func SetLogin(cfg *pgconn.Config, secretText string, keys *secret.KeyRing) error {
	cfg.Password = ""
	switch secret.KindOf(secretText) {
	case secret.Plain:
		cfg.Password = secretText
		return nil
	case secret.MD5:
		user := cfg.User
		cfg.BuildFrontend = authFrontend(func(code uint32, data []byte) ([]byte, error) {
			if code != authMD5 {
				return nil, loginErrorf("the server asks for %s but pgsplit holds only an md5 hash for user %q: it can answer md5 only (pg_hba.conf method md5 with an md5 password in pg_authid), or configure the plain password", authName(code), user)
			}
			if len(data) != 4 {
				return nil, errors.New("malformed AuthenticationMD5Password")
			}
			return (&pgproto3.PasswordMessage{Password: secret.MD5Response(secretText, [4]byte(data))}).Encode(nil)
		})
		return nil
	}
	v, err := secret.ParseVerifier(secretText)
	if err != nil {
		return fmt.Errorf("user %q: %w", cfg.User, err)
	}
	key, ok := keys.Get(v)
	if !ok {
		return &NoClientKeyError{User: cfg.User}
	}
	user := cfg.User
	var login *secret.Login
	cfg.BuildFrontend = authFrontend(func(code uint32, data []byte) ([]byte, error) {
		switch code {
		case authSASL:
			if !hasMechanism(data, "SCRAM-SHA-256") {
				return nil, loginErrorf("the server does not offer SCRAM-SHA-256 and pgsplit holds only a SCRAM verifier for user %q", user)
			}
			var err error
			if login, err = secret.NewLogin(v, key); err != nil {
				return nil, err
			}
			return (&pgproto3.SASLInitialResponse{AuthMechanism: "SCRAM-SHA-256", Data: []byte(login.First())}).Encode(nil)
		case authSASLContinue:
			if login == nil {
				return nil, errors.New("SASL continue before SASL start")
			}
			final, err := login.Final(string(data))
			if err != nil {
				return nil, loginErrorf("user %q: %v", user, err)
			}
			return (&pgproto3.SASLResponse{Data: []byte(final)}).Encode(nil)
		case authSASLFinal:
			if login == nil {
				return nil, errors.New("SASL final before SASL start")
			}
			return nil, login.Verify(string(data))
		}
		return nil, loginErrorf("the server asks for %s but pgsplit holds only a SCRAM verifier for user %q: the server must use scram-sha-256 (pg_hba.conf)", authName(code), user)
	})
	return nil
}

// Authentication request codes (the int32 after an 'R').
const (
	authOK           = 0
	authCleartext    = 3
	authMD5          = 5
	authSASL         = 10
	authSASLContinue = 11
	authSASLFinal    = 12
)

func authName(code uint32) string {
	switch code {
	case authCleartext:
		return "a clear-text password"
	case authMD5:
		return "md5"
	case authSASL:
		return "SCRAM (SASL)"
	}
	return fmt.Sprintf("authentication method %d", code)
}

// hasMechanism reports whether a SASL mechanism list (NUL-terminated names)
// offers name.
func hasMechanism(list []byte, name string) bool {
	var m pgproto3.AuthenticationSASL
	body := binary.BigEndian.AppendUint32(nil, authSASL)
	if m.Decode(append(body, list...)) != nil {
		return false
	}
	for _, x := range m.AuthMechanisms {
		if x == name {
			return true
		}
	}
	return false
}

// authAnswer answers one authentication request (code, data after the
// code) with an encoded frontend message to send, or nil to send nothing.
type authAnswer func(code uint32, data []byte) ([]byte, error)

// authFrontend is a pgconn BuildFrontend that puts an authFilter between
// pgconn's reader and its frontend.
func authFrontend(answer authAnswer) pgconn.BuildFrontendFunc {
	return func(r io.Reader, w io.Writer) *pgproto3.Frontend {
		return pgproto3.NewFrontend(&authFilter{r: r, w: w, answer: answer}, w)
	}
}

// maxAuthMessage bounds a message the filter reads during the login.
const maxAuthMessage = 64 << 10

// authFilter sits between pgconn's connection reader and its frontend
// during the login of one connection: it answers the server's
// authentication requests itself (writing to w, pgconn's connection) and
// hides them from pgconn, which sees the server's AuthenticationOk and the
// rest of the startup as if it had logged in. From AuthenticationOk on, it
// reads straight through and holds nothing: it reads messages one at a
// time, never ahead, so Hijack's connection has no bytes stranded here.
// It is used by the one goroutine pgconn connects on.
type authFilter struct {
	r       io.Reader
	w       io.Writer
	answer  authAnswer
	pending []byte // a message for pgconn, partly read
	through bool   // past AuthenticationOk
}

func (f *authFilter) Read(p []byte) (int, error) {
	for len(f.pending) == 0 && !f.through {
		msg, err := f.readMessage()
		if err != nil {
			return 0, err
		}
		if msg[0] != 'R' || len(msg) < 9 {
			f.pending = msg // ErrorResponse, NoticeResponse, NegotiateProtocolVersion: pgconn's
			break
		}
		code := binary.BigEndian.Uint32(msg[5:9])
		if code == authOK {
			f.pending, f.through = msg, true
			break
		}
		out, err := f.answer(code, msg[9:])
		if err != nil {
			var le *LoginError
			if !errors.As(err, &le) {
				err = &LoginError{msg: err.Error()}
			}
			return 0, err
		}
		if out != nil {
			if _, err := f.w.Write(out); err != nil {
				return 0, err
			}
		}
	}
	if len(f.pending) > 0 {
		n := copy(p, f.pending)
		f.pending = f.pending[n:]
		return n, nil
	}
	return f.r.Read(p)
}

// readMessage reads one whole message (type, length, body).
func (f *authFilter) readMessage() ([]byte, error) {
	hdr := make([]byte, 5)
	if _, err := io.ReadFull(f.r, hdr); err != nil {
		return nil, err
	}
	n := int(binary.BigEndian.Uint32(hdr[1:]))
	if n < 4 || n > maxAuthMessage {
		return nil, fmt.Errorf("upstream login: message %q of %d bytes", hdr[0], n)
	}
	msg := make([]byte, 1+n)
	copy(msg, hdr)
	if _, err := io.ReadFull(f.r, msg[5:]); err != nil {
		return nil, err
	}
	return msg, nil
}
