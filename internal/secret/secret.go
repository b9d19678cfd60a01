// Package secret reads the forms a password takes in pgsplit's
// configuration and in pg_authid — plain text, an md5 hash, a SCRAM-SHA-256
// verifier — and does the SCRAM arithmetic pgsplit needs to log in to a
// server holding only a verifier (pass-through, as PgBouncer does): recover
// the ClientKey from a client's proof, and prove it to the server.
//
// Nothing here implements a cryptographic primitive: it composes
// crypto/hmac, crypto/sha256 and crypto/md5 as RFC 5802 (SCRAM) and
// PostgreSQL's md5 method prescribe. No value of this package is ever
// formatted with its secret bytes: ClientKey and Verifier print redacted.
package secret

import (
	"crypto/md5"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// Kind is the form of a configured or looked-up password.
type Kind int

const (
	// Plain is a password in plain text.
	Plain Kind = iota
	// MD5 is PostgreSQL's md5 hash: "md5" + hex(md5(password + user)).
	MD5
	// SCRAM is a SCRAM-SHA-256 verifier in pg_authid's format.
	SCRAM
)

func (k Kind) String() string {
	switch k {
	case MD5:
		return "md5 hash"
	case SCRAM:
		return "SCRAM-SHA-256 verifier"
	}
	return "plain-text password"
}

const scramPrefix = "SCRAM-SHA-256$"

// KindOf tells the form of s the way PostgreSQL does (get_password_type):
// "md5" and 32 lower-case hex digits is an md5 hash; a string starting
// "SCRAM-SHA-256$" is meant as a verifier (ParseVerifier says whether it
// is a well-formed one); anything else is plain text.
func KindOf(s string) Kind {
	switch {
	case IsMD5Hash(s):
		return MD5
	case strings.HasPrefix(s, scramPrefix):
		return SCRAM
	}
	return Plain
}

// IsMD5Hash reports whether s is "md5" followed by 32 lower-case hex digits.
func IsMD5Hash(s string) bool {
	if len(s) != 35 || !strings.HasPrefix(s, "md5") {
		return false
	}
	for _, c := range s[3:] {
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// MD5Hash is what pg_authid stores for password under the md5 method:
// "md5" + hex(md5(password + user)).
func MD5Hash(user, password string) string {
	sum := md5.Sum([]byte(password + user))
	return "md5" + hex.EncodeToString(sum[:])
}

// MD5Response is the answer to an AuthenticationMD5Password challenge
// with salt, computed from the md5 hash alone (no plain password needed):
// "md5" + hex(md5(hash-without-"md5" + salt)).
func MD5Response(hash string, salt [4]byte) string {
	sum := md5.Sum(append([]byte(strings.TrimPrefix(hash, "md5")), salt[:]...))
	return "md5" + hex.EncodeToString(sum[:])
}

// Verifier is a parsed SCRAM-SHA-256 verifier:
// SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>, salt and keys
// in base64. It is read-only once parsed.
type Verifier struct {
	Iterations int
	Salt       []byte
	StoredKey  []byte
	ServerKey  []byte
}

// String never shows the keys.
func (v *Verifier) String() string { return "SCRAM-SHA-256$****" }

// GoString never shows the keys, for %#v.
func (v *Verifier) GoString() string { return v.String() }

// ErrMalformedVerifier is returned for a string that starts like a verifier
// but is not one. Its text never includes the string.
var ErrMalformedVerifier = errors.New("malformed SCRAM-SHA-256 verifier: expected SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey> as in pg_authid.rolpassword")

// ParseVerifier reads s in pg_authid's format. Errors never echo s.
func ParseVerifier(s string) (*Verifier, error) {
	rest, ok := strings.CutPrefix(s, scramPrefix)
	if !ok {
		return nil, ErrMalformedVerifier
	}
	factors, keys, ok := strings.Cut(rest, "$")
	if !ok {
		return nil, ErrMalformedVerifier
	}
	iterText, saltText, ok1 := strings.Cut(factors, ":")
	storedText, serverText, ok2 := strings.Cut(keys, ":")
	if !ok1 || !ok2 {
		return nil, ErrMalformedVerifier
	}
	iters, err := strconv.Atoi(iterText)
	if err != nil || iters < 1 {
		return nil, fmt.Errorf("%w (the iteration count is not a positive number)", ErrMalformedVerifier)
	}
	dec := base64.StdEncoding.DecodeString
	salt, err1 := dec(saltText)
	stored, err2 := dec(storedText)
	server, err3 := dec(serverText)
	if err1 != nil || err2 != nil || err3 != nil || len(salt) == 0 {
		return nil, fmt.Errorf("%w (salt or keys are not base64)", ErrMalformedVerifier)
	}
	if len(stored) != keyLen || len(server) != keyLen {
		return nil, fmt.Errorf("%w (StoredKey and ServerKey must be %d bytes)", ErrMalformedVerifier, keyLen)
	}
	return &Verifier{Iterations: iters, Salt: salt, StoredKey: stored, ServerKey: server}, nil
}
