package secret

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
)

// keyLen is the size of SCRAM-SHA-256's keys and proofs (a SHA-256 sum).
const keyLen = sha256.Size

// ClientKey is SCRAM's ClientKey = HMAC(SaltedPassword, "Client Key"):
// what a client proves it knows, and all pgsplit needs, with the verifier,
// to log in to a server as that client's user. It is a secret as good as
// the password for SCRAM logins: it prints redacted and is never logged.
type ClientKey struct{ b []byte }

// String never shows the key.
func (ClientKey) String() string { return "ClientKey(****)" }

// GoString never shows the key, for %#v.
func (k ClientKey) GoString() string { return k.String() }

// IsZero reports whether k holds no key.
func (k ClientKey) IsZero() bool { return len(k.b) == 0 }

// Matches reports whether k belongs to v: H(ClientKey) == StoredKey.
func (k ClientKey) Matches(v *Verifier) bool {
	sum := sha256.Sum256(k.b)
	return len(k.b) == keyLen && hmac.Equal(sum[:], v.StoredKey)
}

// hmacSHA256 is HMAC-SHA-256(key, msg).
func hmacSHA256(key []byte, msg string) []byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(msg))
	return m.Sum(nil)
}

func xor(a, b []byte) []byte {
	out := make([]byte, len(a))
	for i := range a {
		out[i] = a[i] ^ b[i]
	}
	return out
}

// AuthMessage is RFC 5802's client-first-message-bare + "," +
// server-first-message + "," + client-final-message-without-proof, read
// from a client's SCRAM messages as they crossed the wire: clientFirst
// (the SASLInitialResponse data, with its GS2 header), serverFirst, and
// clientFinal (the SASLResponse data, with its proof). It returns the
// AuthMessage and the client's proof.
func AuthMessage(clientFirst, serverFirst, clientFinal string) (authMsg string, proof []byte, err error) {
	// The GS2 header is "<flag>,[a=<authzid>],": the bare message starts
	// after its second comma.
	i := strings.IndexByte(clientFirst, ',')
	j := -1
	if i >= 0 {
		j = strings.IndexByte(clientFirst[i+1:], ',')
	}
	if j < 0 {
		return "", nil, errors.New("SCRAM client-first-message without a GS2 header")
	}
	bare := clientFirst[i+1+j+1:]
	k := strings.LastIndex(clientFinal, ",p=")
	if k < 0 {
		return "", nil, errors.New("SCRAM client-final-message without a proof")
	}
	proof, err = base64.StdEncoding.DecodeString(clientFinal[k+3:])
	if err != nil || len(proof) != keyLen {
		return "", nil, errors.New("SCRAM client proof is not a base64 SHA-256 value")
	}
	return bare + "," + serverFirst + "," + clientFinal[:k], proof, nil
}

// RecoverClientKey returns the ClientKey behind a client's proof for
// authMsg: ClientKey = ClientProof XOR HMAC(StoredKey, AuthMessage). It
// fails unless H(ClientKey) == StoredKey, i.e. unless the proof is right.
func RecoverClientKey(v *Verifier, authMsg string, proof []byte) (ClientKey, error) {
	if len(proof) != keyLen {
		return ClientKey{}, errors.New("SCRAM client proof of the wrong length")
	}
	k := ClientKey{b: xor(proof, hmacSHA256(v.StoredKey, authMsg))}
	if !k.Matches(v) {
		return ClientKey{}, errors.New("SCRAM client proof does not match the verifier")
	}
	return k, nil
}

// ClientProof is what a client sends to prove key for authMsg:
// ClientKey XOR HMAC(StoredKey, AuthMessage).
func ClientProof(v *Verifier, key ClientKey, authMsg string) []byte {
	return xor(key.b, hmacSHA256(v.StoredKey, authMsg))
}

// ServerSignature is what the server proves its knowledge of the verifier
// with: HMAC(ServerKey, AuthMessage).
func ServerSignature(v *Verifier, authMsg string) []byte {
	return hmacSHA256(v.ServerKey, authMsg)
}

// KeyRing keeps, in memory only, the ClientKey recovered from each
// verifier user's last successful login, keyed by the verifier's StoredKey
// (so a changed verifier, after a reload or an ALTER ROLE, finds no stale
// key). The proxy's Server owns one for its lifetime; it is safe for
// concurrent use and never forgets a key (a key stays right until the
// verifier changes, and then it is never found again).
type KeyRing struct {
	mu   sync.Mutex
	keys map[string]ClientKey
}

// NewKeyRing returns an empty ring.
func NewKeyRing() *KeyRing { return &KeyRing{keys: map[string]ClientKey{}} }

// Put keeps key for v; a key that does not belong to v is ignored.
func (r *KeyRing) Put(v *Verifier, key ClientKey) {
	if !key.Matches(v) {
		return
	}
	r.mu.Lock()
	r.keys[string(v.StoredKey)] = key
	r.mu.Unlock()
}

// Get returns the ClientKey kept for v, if a client logged in with it.
func (r *KeyRing) Get(v *Verifier) (ClientKey, bool) {
	if r == nil {
		return ClientKey{}, false
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	k, ok := r.keys[string(v.StoredKey)]
	return k, ok
}

// Login is the client side of one SCRAM-SHA-256 exchange with a server,
// proving a ClientKey instead of a password (no channel binding: GS2 flag
// "n"). Use it once: First, then Final with the server's first message,
// then Verify with the server's final message.
type Login struct {
	v       *Verifier
	key     ClientKey
	nonce   string
	bare    string
	authMsg string
}

// NewLogin prepares a login proving key for v.
func NewLogin(v *Verifier, key ClientKey) (*Login, error) {
	var raw [18]byte
	if _, err := rand.Read(raw[:]); err != nil {
		return nil, err
	}
	nonce := base64.RawStdEncoding.EncodeToString(raw[:])
	return &Login{v: v, key: key, nonce: nonce, bare: "n=,r=" + nonce}, nil
}

// First is the client-first-message (PostgreSQL takes the user from the
// startup packet: the SCRAM user name is empty, as libpq sends it).
func (l *Login) First() string { return "n,," + l.bare }

// ErrFactorsDiffer: the server's salt or iteration count is not the
// verifier's, so the verifier pgsplit holds is not the server's.
var ErrFactorsDiffer = errors.New("the server's SCRAM salt or iteration count differs from the verifier pgsplit holds: the configured verifier must be the server's pg_authid.rolpassword for this role")

// Final answers the server-first-message with the client-final-message.
func (l *Login) Final(serverFirst string) (string, error) {
	var nonce, salt, iters string
	for _, f := range strings.Split(serverFirst, ",") {
		switch {
		case strings.HasPrefix(f, "r="):
			nonce = f[2:]
		case strings.HasPrefix(f, "s="):
			salt = f[2:]
		case strings.HasPrefix(f, "i="):
			iters = f[2:]
		case strings.HasPrefix(f, "m="):
			return "", errors.New("SCRAM server-first-message asks for an unsupported extension")
		}
	}
	if !strings.HasPrefix(nonce, l.nonce) || len(nonce) == len(l.nonce) {
		return "", errors.New("SCRAM server nonce does not extend the client's")
	}
	rawSalt, err := base64.StdEncoding.DecodeString(salt)
	n, err2 := strconv.Atoi(iters)
	if err != nil || err2 != nil {
		return "", errors.New("malformed SCRAM server-first-message")
	}
	if n != l.v.Iterations || !hmac.Equal(rawSalt, l.v.Salt) {
		return "", ErrFactorsDiffer
	}
	withoutProof := "c=biws,r=" + nonce // biws: base64 of the GS2 header "n,,"
	l.authMsg = l.bare + "," + serverFirst + "," + withoutProof
	proof := ClientProof(l.v, l.key, l.authMsg)
	return withoutProof + ",p=" + base64.StdEncoding.EncodeToString(proof), nil
}

// Verify checks the server-final-message: the server must prove it holds
// the verifier too (v=ServerSignature), or it is not the server it claims.
func (l *Login) Verify(serverFinal string) error {
	if e, ok := strings.CutPrefix(serverFinal, "e="); ok {
		return fmt.Errorf("SCRAM: server refused the proof: %s", e)
	}
	sig, ok := strings.CutPrefix(serverFinal, "v=")
	if !ok || l.authMsg == "" {
		return errors.New("malformed SCRAM server-final-message")
	}
	got, err := base64.StdEncoding.DecodeString(sig)
	if err != nil || !hmac.Equal(got, ServerSignature(l.v, l.authMsg)) {
		return errors.New("SCRAM: the server's signature is wrong: it does not hold this user's verifier")
	}
	return nil
}

// Export returns the ring's keys, for the pgsplit process that takes over
// during an upgrade (see Import): the caller must send them only to it.
func (r *KeyRing) Export() [][]byte {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([][]byte, 0, len(r.keys))
	for _, k := range r.keys {
		out = append(out, append([]byte(nil), k.b...))
	}
	return out
}

// Import keeps keys from Export, each under the StoredKey it hashes to
// (so a key is found only for the verifier it belongs to). Malformed keys
// are ignored.
func (r *KeyRing) Import(keys [][]byte) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, b := range keys {
		if len(b) != keyLen {
			continue
		}
		sum := sha256.Sum256(b)
		r.keys[string(sum[:])] = ClientKey{b: append([]byte(nil), b...)}
	}
}
