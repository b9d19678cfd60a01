package proxy

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/tls"
	"errors"
	"fmt"

	"github.com/pgsplit/pgsplit/internal/pgmsg"

	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/xdg-go/scram"

	"github.com/pgsplit/pgsplit/config"
	"github.com/pgsplit/pgsplit/internal/secret"
	"github.com/pgsplit/pgsplit/internal/wire"
)

// authenticator checks client logins against auth.users (or admin.users)
// and, when auth.auth_user is set, against the users lookup finds. It is
// built once per configuration (SCRAM keys are derived once per user, not
// per login) and is read-only afterwards, so sessions share it without
// locking; keys and lookup are the Server's, shared across reloads.
type authenticator struct {
	list   string // the configuration key of the users, for errors
	method string
	users  map[string]config.User
	scram  map[string]scram.StoredCredentials
	// verifiers holds the parsed verifier of each user configured with one:
	// a SCRAM login of such a user leaves its ClientKey in keys.
	verifiers map[string]*secret.Verifier
	keys      *secret.KeyRing
	// lookup finds users not in users (auth.auth_query); nil: none.
	lookup userLookup
	// mockKey salts the SCRAM exchange run for a user that does not exist,
	// so that its salt is stable per name, as PostgreSQL's mock salt is:
	// the Server's, drawn once, so a RELOAD does not change it.
	mockKey []byte
}

// userLookup finds the stored password (verifier or md5 hash) of a user
// that is not configured; found is false for no such user.
type userLookup interface {
	find(user, database string) (password string, found bool, err error)
}

const scramIterations = 4096

// newAuthenticator prepares the logins of users under method. keys (may
// be nil for admin users, who never log in upstream) receives ClientKeys.
func newAuthenticator(method string, users []config.User, list string, keys *secret.KeyRing, lookup userLookup, mockKey []byte) (*authenticator, error) {
	au := &authenticator{list: list, method: method, users: map[string]config.User{}, scram: map[string]scram.StoredCredentials{},
		verifiers: map[string]*secret.Verifier{}, keys: keys, lookup: lookup, mockKey: mockKey}
	for _, u := range users {
		au.users[u.Name] = u
		if method == config.AuthTrust {
			continue
		}
		creds, v, err := scramCredentials(u, method)
		if err != nil {
			return nil, fmt.Errorf("%s %s: %w", list, u.Name, err)
		}
		if v != nil {
			au.verifiers[u.Name] = v
		}
		if creds != nil {
			au.scram[u.Name] = *creds
		}
	}
	return au, nil
}

// scramCredentials returns what a SCRAM login of u checks: the verifier's
// keys, or keys derived from a plain password (under auth.method
// scram-sha-256 only: md5 logins need none). An md5 hash has none.
func scramCredentials(u config.User, method string) (*scram.StoredCredentials, *secret.Verifier, error) {
	switch secret.KindOf(u.Password) {
	case secret.SCRAM:
		v, err := secret.ParseVerifier(u.Password)
		if err != nil {
			return nil, nil, err
		}
		return &scram.StoredCredentials{KeyFactors: scram.KeyFactors{Salt: string(v.Salt), Iters: v.Iterations}, StoredKey: v.StoredKey, ServerKey: v.ServerKey}, v, nil
	case secret.MD5:
		return nil, nil, nil
	}
	if method != config.AuthSCRAM {
		return nil, nil, nil
	}
	salt := make([]byte, 16)
	if _, err := rand.Read(salt); err != nil {
		return nil, nil, err
	}
	cl, err := scram.SHA256.NewClient(u.Name, u.Password, "")
	if err != nil {
		return nil, nil, fmt.Errorf("password cannot be used with SCRAM: %w", err)
	}
	creds, err := cl.GetStoredCredentialsWithError(scram.KeyFactors{Salt: string(salt), Iters: scramIterations})
	if err != nil {
		return nil, nil, fmt.Errorf("deriving SCRAM keys: %w", err)
	}
	return &creds, nil, nil
}

// authenticate runs the client side of the login for user (to database)
// and returns the matching user, configured or looked up; cs is the client
// connection's TLS (nil for plain text), whose verified certificate method
// cert checks. Errors are *pgmsg.Error: 28000 or 28P01 for a refused login; a
// user auth_query does not find gets the very answer a wrong password
// gets.
func (au *authenticator) authenticate(r *wire.Reader, out *clientWriter, user, database string, cs *tls.ConnectionState) (config.User, error) {
	failed := pgmsg.Fatal(pgmsg.CodeInvalidPassword, fmt.Sprintf("password authentication failed for user %q", user))
	u, ok := au.users[user]
	creds, hasCreds := au.scram[user]
	v := au.verifiers[user]
	if !ok {
		if au.lookup == nil {
			return config.User{}, pgmsg.Fatal(pgmsg.CodeInvalidAuthSpec, fmt.Sprintf("no such user: %q is not in pgsplit's %s", user, au.list))
		}
		pw, found, err := au.lookup.find(user, database)
		if err != nil {
			// The reason (auth_user, the primary's address) is in the
			// log, not for a client that has not proved anything.
			return config.User{}, pgmsg.Fatal(pgmsg.CodeCannotConnect, "pgsplit could not look up the login (auth.auth_query); the reason is in pgsplit's log")
		}
		// What config.Validate refuses for auth.users is refused here too;
		// an empty password serves no login.
		if !found || pw == "" || config.SecretProblem(pw, au.method, true) != "" {
			return config.User{}, au.mockExchange(r, out, user, failed)
		}
		u = config.User{Name: user, Password: pw}
		c, lv, err := scramCredentials(u, au.method)
		if err != nil {
			return config.User{}, au.mockExchange(r, out, user, failed)
		}
		if c != nil {
			creds, hasCreds = *c, true
		}
		v = lv
	}
	switch au.method {
	case config.AuthTrust:
		return u, nil
	case config.AuthMD5:
		if v != nil {
			// As PostgreSQL does for an md5 line and a SCRAM secret: the
			// login is SCRAM.
			return u, au.scramExchange(r, out, creds, v, failed)
		}
		return u, md5Exchange(r, out, u, failed)
	case config.AuthSCRAM:
		if !hasCreds {
			return u, au.mockExchange(r, out, user, failed)
		}
		return u, au.scramExchange(r, out, creds, v, failed)
	case config.AuthCert:
		// As PostgreSQL's cert method: the CN of a certificate verified
		// against tls.client_ca_file must be the user name. The client is
		// not told which CN it showed; the log is.
		switch cn := certUser(cs); {
		case cn == "":
			return u, pgmsg.Fatal(pgmsg.CodeInvalidAuthSpec, "connection requires a valid client certificate")
		case cn != user:
			return u, &pgmsg.Error{Severity: pgmsg.SeverityFatal, Code: pgmsg.CodeInvalidAuthSpec, Message: fmt.Sprintf("certificate authentication failed for user %q", user),
				LogDetail: fmt.Sprintf("the client certificate's CN is %q", cn)}
		}
		return u, nil
	}
	return u, pgmsg.Fatal(pgmsg.CodeInternalError, "unknown auth.method")
}

// md5Exchange runs an md5 login of u, whose password is plain or an md5 hash.
func md5Exchange(r *wire.Reader, out *clientWriter, u config.User, failed *pgmsg.Error) error {
	var salt [4]byte
	if _, err := rand.Read(salt[:]); err != nil {
		return err
	}
	if err := out.sendMsgs(&pgproto3.AuthenticationMD5Password{Salt: salt}); err != nil {
		return err
	}
	body, err := readAuthMsg(r)
	if err != nil {
		return err
	}
	var pm pgproto3.PasswordMessage
	if err := pm.Decode(body); err != nil {
		return pgmsg.Fatal(pgmsg.CodeProtocolViolation, "invalid password packet")
	}
	hash := u.Password
	if secret.KindOf(hash) != secret.MD5 {
		hash = secret.MD5Hash(u.Name, u.Password)
	}
	if subtle.ConstantTimeCompare([]byte(pm.Password), []byte(secret.MD5Response(hash, salt))) != 1 {
		return failed
	}
	return nil
}

// mockExchange runs a login that cannot succeed, for a user that does not
// exist (or cannot log in with this method), so that the client learns
// nothing it would not learn from a wrong password: the same challenge
// type, a salt stable per name, and the same 28P01 at the end.
func (au *authenticator) mockExchange(r *wire.Reader, out *clientWriter, user string, failed *pgmsg.Error) error {
	if au.method == config.AuthMD5 {
		if err := md5Exchange(r, out, config.User{Name: user, Password: secret.MD5Hash(user, string(au.mockKey))}, failed); err != nil {
			return err
		}
		return failed // a client that guessed the random password still does not get in
	}
	m := hmac.New(sha256.New, au.mockKey)
	m.Write([]byte(user))
	sum := m.Sum(nil)
	keys := make([]byte, 64)
	if _, err := rand.Read(keys); err != nil {
		return err
	}
	creds := scram.StoredCredentials{KeyFactors: scram.KeyFactors{Salt: string(sum[:16]), Iters: scramIterations}, StoredKey: keys[:32], ServerKey: keys[32:]}
	if err := au.scramExchange(r, out, creds, nil, failed); err != nil {
		return err
	}
	return failed
}

// scramExchange runs a SCRAM-SHA-256 login against creds. With v (the
// user is configured or looked up with a verifier), a successful login
// leaves the ClientKey recovered from the client's proof in au.keys, for
// pgsplit's logins to the servers.
func (au *authenticator) scramExchange(r *wire.Reader, out *clientWriter, creds scram.StoredCredentials, v *secret.Verifier, failed *pgmsg.Error) error {
	// PostgreSQL clients leave the SCRAM user name empty: the startup
	// packet's user is the one that counts, so the lookup ignores it.
	srv, err := scram.SHA256.NewServer(func(string) (scram.StoredCredentials, error) { return creds, nil })
	if err != nil {
		return err
	}
	conv := srv.NewConversation()
	if err := out.sendMsgs(&pgproto3.AuthenticationSASL{AuthMechanisms: []string{"SCRAM-SHA-256"}}); err != nil {
		return err
	}
	body, err := readAuthMsg(r)
	if err != nil {
		return err
	}
	var init pgproto3.SASLInitialResponse
	if err := init.Decode(body); err != nil {
		return pgmsg.Fatal(pgmsg.CodeProtocolViolation, "invalid SASL initial response")
	}
	if init.AuthMechanism != "SCRAM-SHA-256" {
		return pgmsg.Fatal(pgmsg.CodeProtocolViolation, fmt.Sprintf("client selected an invalid SASL authentication mechanism %q", init.AuthMechanism))
	}
	clientFirst := string(init.Data)
	first, err := conv.Step(clientFirst)
	if err != nil {
		return pgmsg.Fatal(pgmsg.CodeProtocolViolation, "malformed SCRAM message: "+err.Error())
	}
	if err := out.sendMsgs(&pgproto3.AuthenticationSASLContinue{Data: []byte(first)}); err != nil {
		return err
	}
	body, err = readAuthMsg(r)
	if err != nil {
		return err
	}
	var resp pgproto3.SASLResponse
	if err := resp.Decode(body); err != nil {
		return pgmsg.Fatal(pgmsg.CodeProtocolViolation, "invalid SASL response")
	}
	clientFinal := string(resp.Data)
	final, err := conv.Step(clientFinal)
	if err != nil || !conv.Valid() {
		return failed
	}
	if v != nil && au.keys != nil {
		authMsg, proof, err := secret.AuthMessage(clientFirst, first, clientFinal)
		if err != nil {
			return failed
		}
		key, err := secret.RecoverClientKey(v, authMsg, proof)
		if err != nil {
			return failed
		}
		au.keys.Put(v, key)
	}
	return out.sendMsgs(&pgproto3.AuthenticationSASLFinal{Data: []byte(final)})
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
			return nil, pgmsg.Fatal(pgmsg.CodeProtocolViolation, fe.Error())
		}
		return nil, err
	}
	if typ != pgmsg.PasswordMessage {
		return nil, pgmsg.Fatal(pgmsg.CodeProtocolViolation, fmt.Sprintf("expected password response, got message type %q", typ))
	}
	if n > 8192 {
		return nil, pgmsg.Fatal(pgmsg.CodeProtocolViolation, "password packet too long")
	}
	return r.Body()
}
