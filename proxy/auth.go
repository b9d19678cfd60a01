package proxy

import (
	"bufio"
	"crypto/md5"
	"crypto/rand"
	"crypto/subtle"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/xdg-go/scram"

	"github.com/pgsplit/pgsplit/config"
	"github.com/pgsplit/pgsplit/internal/wire"
)

// authenticator checks client logins against auth.users. It is built once
// per configuration (SCRAM keys are derived once per user, not per login)
// and is read-only afterwards, so sessions share it without locking.
type authenticator struct {
	list   string // the configuration key of the users, for errors
	method string
	users  map[string]config.User
	scram  map[string]scram.StoredCredentials
}

const scramIterations = 4096

func newAuthenticator(method string, users []config.User, list string) (*authenticator, error) {
	au := &authenticator{list: list, method: method, users: map[string]config.User{}, scram: map[string]scram.StoredCredentials{}}
	for _, u := range users {
		au.users[u.Name] = u
		if method != config.AuthSCRAM {
			continue
		}
		salt := make([]byte, 16)
		if _, err := rand.Read(salt); err != nil {
			return nil, err
		}
		cl, err := scram.SHA256.NewClient(u.Name, u.Password, "")
		if err != nil {
			return nil, fmt.Errorf("%s %s: password cannot be used with SCRAM: %w", list, u.Name, err)
		}
		creds, err := cl.GetStoredCredentialsWithError(scram.KeyFactors{Salt: string(salt), Iters: scramIterations})
		if err != nil {
			return nil, fmt.Errorf("%s %s: deriving SCRAM keys: %w", list, u.Name, err)
		}
		au.scram[u.Name] = creds
	}
	return au, nil
}

// authenticate runs the client side of the login for user and returns the
// matching configured user; cs is the client connection's TLS (nil for
// plain text), whose verified certificate method cert checks. Errors are
// *pgError with 28000 or 28P01.
func (au *authenticator) authenticate(r *wire.Reader, w *bufio.Writer, user string, cs *tls.ConnectionState) (config.User, error) {
	u, ok := au.users[user]
	if !ok {
		return config.User{}, fatal(codeInvalidAuthSpec, fmt.Sprintf("no such user: %q is not in pgsplit's %s", user, au.list))
	}
	failed := fatal(codeInvalidPassword, fmt.Sprintf("password authentication failed for user %q", user))
	switch au.method {
	case config.AuthTrust:
		return u, nil
	case config.AuthMD5:
		var salt [4]byte
		if _, err := rand.Read(salt[:]); err != nil {
			return u, err
		}
		if err := send(w, &pgproto3.AuthenticationMD5Password{Salt: salt}); err != nil {
			return u, err
		}
		body, err := readAuthMsg(r)
		if err != nil {
			return u, err
		}
		var pm pgproto3.PasswordMessage
		if err := pm.Decode(body); err != nil {
			return u, fatal(codeProtocolViolation, "invalid password packet")
		}
		if subtle.ConstantTimeCompare([]byte(pm.Password), []byte(md5Password(u.Name, u.Password, salt))) != 1 {
			return u, failed
		}
		return u, nil
	case config.AuthSCRAM:
		return u, au.scramExchange(r, w, u, failed)
	case config.AuthCert:
		// As PostgreSQL's cert method: the CN of a certificate verified
		// against tls.client_ca_file must be the user name. The client is
		// not told which CN it showed; the log is.
		switch cn := certUser(cs); {
		case cn == "":
			return u, fatal(codeInvalidAuthSpec, "connection requires a valid client certificate")
		case cn != user:
			return u, &pgError{severity: "FATAL", code: codeInvalidAuthSpec, msg: fmt.Sprintf("certificate authentication failed for user %q", user),
				logDetail: fmt.Sprintf("the client certificate's CN is %q", cn)}
		}
		return u, nil
	}
	return u, fatal(codeInternalError, "unknown auth.method")
}

func (au *authenticator) scramExchange(r *wire.Reader, w *bufio.Writer, u config.User, failed *pgError) error {
	creds := au.scram[u.Name]
	// PostgreSQL clients leave the SCRAM user name empty: the startup
	// packet's user is the one that counts, so the lookup ignores it.
	srv, err := scram.SHA256.NewServer(func(string) (scram.StoredCredentials, error) { return creds, nil })
	if err != nil {
		return err
	}
	conv := srv.NewConversation()
	if err := send(w, &pgproto3.AuthenticationSASL{AuthMechanisms: []string{"SCRAM-SHA-256"}}); err != nil {
		return err
	}
	body, err := readAuthMsg(r)
	if err != nil {
		return err
	}
	var init pgproto3.SASLInitialResponse
	if err := init.Decode(body); err != nil {
		return fatal(codeProtocolViolation, "invalid SASL initial response")
	}
	if init.AuthMechanism != "SCRAM-SHA-256" {
		return fatal(codeProtocolViolation, fmt.Sprintf("client selected an invalid SASL authentication mechanism %q", init.AuthMechanism))
	}
	first, err := conv.Step(string(init.Data))
	if err != nil {
		return fatal(codeProtocolViolation, "malformed SCRAM message: "+err.Error())
	}
	if err := send(w, &pgproto3.AuthenticationSASLContinue{Data: []byte(first)}); err != nil {
		return err
	}
	body, err = readAuthMsg(r)
	if err != nil {
		return err
	}
	var resp pgproto3.SASLResponse
	if err := resp.Decode(body); err != nil {
		return fatal(codeProtocolViolation, "invalid SASL response")
	}
	final, err := conv.Step(string(resp.Data))
	if err != nil || !conv.Valid() {
		return failed
	}
	return send(w, &pgproto3.AuthenticationSASLFinal{Data: []byte(final)})
}

// md5Password is what a client sends for md5 authentication:
// "md5" + md5hex(md5hex(password + user) + salt).
func md5Password(user, password string, salt [4]byte) string {
	inner := md5.Sum([]byte(password + user))
	h := hex.EncodeToString(inner[:])
	outer := md5.Sum(append([]byte(h), salt[:]...))
	return "md5" + hex.EncodeToString(outer[:])
}

// readAuthMsg reads the client's next message, which must be a 'p'
// (password, SASL initial response or SASL response) of sane size.
func readAuthMsg(r *wire.Reader) ([]byte, error) {
	typ, n, err := r.Next()
	if err != nil {
		// A bad header is the client's protocol violation (08P01), not an
		// internal error: say so, as readStartup does for the startup packet.
		var fe *wire.FrameError
		if errors.As(err, &fe) {
			return nil, fatal(codeProtocolViolation, fe.Error())
		}
		return nil, err
	}
	if typ != 'p' {
		return nil, fatal(codeProtocolViolation, fmt.Sprintf("expected password response, got message type %q", typ))
	}
	if n > 8192 {
		return nil, fatal(codeProtocolViolation, "password packet too long")
	}
	return r.Body()
}

func send(w *bufio.Writer, msgs ...pgproto3.BackendMessage) error {
	if err := writeMsgs(w, msgs...); err != nil {
		return err
	}
	return w.Flush()
}
