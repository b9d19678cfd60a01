package secret

import (
	"crypto/md5"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/xdg-go/scram"
)

// RFC 7677's SCRAM-SHA-256 example exchange (user "user", password "pencil").
const (
	rfcPassword    = "pencil"
	rfcClientNonce = "rOprNGfwEbeRWgbNEkqO"
	rfcClientFirst = "n,,n=user,r=rOprNGfwEbeRWgbNEkqO"
	rfcServerFirst = "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
	rfcClientFinal = "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
	rfcServerFinal = "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="
)

// verifierFor builds, with xdg-go/scram (an independent implementation),
// the pg_authid verifier of password with salt and iterations.
func verifierFor(t *testing.T, password string, salt []byte, iters int) string {
	t.Helper()
	cl, err := scram.SHA256.NewClient("", password, "")
	if err != nil {
		t.Fatal(err)
	}
	c := cl.GetStoredCredentials(scram.KeyFactors{Salt: string(salt), Iters: iters})
	b := base64.StdEncoding.EncodeToString
	return fmt.Sprintf("SCRAM-SHA-256$%d:%s$%s:%s", iters, b(salt), b(c.StoredKey), b(c.ServerKey))
}

func rfcVerifier(t *testing.T) *Verifier {
	salt, _ := base64.StdEncoding.DecodeString("W22ZaJ0SNY7soEsUEjb6gQ==")
	v, err := ParseVerifier(verifierFor(t, rfcPassword, salt, 4096))
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func TestKindOfTellsPlainMD5AndSCRAMApart(t *testing.T) {
	cases := map[string]Kind{
		"app":                             Plain,
		"md5" + strings.Repeat("a", 32):   MD5,
		"md5" + strings.Repeat("A", 32):   Plain, // PostgreSQL: lower-case hex only
		"md5" + strings.Repeat("a", 31):   Plain,
		"SCRAM-SHA-256$4096:c2FsdA==$x:y": SCRAM, // malformed, but meant as one
		"scram-sha-256$4096:c2FsdA==$x:y": Plain,
		MD5Hash("app", "app"):             MD5,
		"SCRAM-SHA-256":                   Plain,
		"":                                Plain,
	}
	for s, want := range cases {
		if got := KindOf(s); got != want {
			t.Errorf("KindOf(%q) = %v, want %v", s, got, want)
		}
	}
}

func TestParseVerifierReadsPgAuthidFormat(t *testing.T) {
	v := rfcVerifier(t)
	if v.Iterations != 4096 || len(v.Salt) != 16 || len(v.StoredKey) != 32 || len(v.ServerKey) != 32 {
		t.Fatalf("parsed %d iterations, salt %d bytes, keys %d/%d bytes", v.Iterations, len(v.Salt), len(v.StoredKey), len(v.ServerKey))
	}
	if s := fmt.Sprintf("%v %+v %#v %s", v, v, v, v); strings.Contains(s, base64.StdEncoding.EncodeToString(v.StoredKey)) || strings.Count(s, "****") != 4 {
		t.Fatalf("a Verifier formats its keys: %s", s)
	}
}

func TestParseVerifierRefusesMalformedWithoutEchoing(t *testing.T) {
	good := verifierFor(t, "Secr3t-Value", []byte("0123456789abcdef"), 4096)
	_, rest, _ := strings.Cut(strings.TrimPrefix(good, "SCRAM-SHA-256$"), ":")
	bad := []string{
		"SCRAM-SHA-256$",
		"SCRAM-SHA-256$4096:" + rest[:10],
		"SCRAM-SHA-256$0:" + rest,
		"SCRAM-SHA-256$x:" + rest,
		good + "=", // ServerKey no longer base64
		strings.TrimSuffix(good, "=") + "!!",
		"SCRAM-SHA-256$4096:$" + strings.SplitN(good, "$", 3)[2],
		strings.Replace(good, ":", "", 1),
	}
	for _, s := range bad {
		_, err := ParseVerifier(s)
		if !errors.Is(err, ErrMalformedVerifier) {
			t.Errorf("ParseVerifier(%q) = %v, want ErrMalformedVerifier", s, err)
			continue
		}
		if len(s) > 20 && strings.Contains(err.Error(), s[14:]) {
			t.Errorf("the error echoes the verifier: %v", err)
		}
	}
}

func TestRecoverClientKeyFromRFC7677Proof(t *testing.T) {
	v := rfcVerifier(t)
	authMsg, proof, err := AuthMessage(rfcClientFirst, rfcServerFirst, rfcClientFinal)
	if err != nil {
		t.Fatal(err)
	}
	wantMsg := "n=user,r=" + rfcClientNonce + "," + rfcServerFirst + ",c=biws,r=" + strings.TrimPrefix(strings.Split(rfcServerFirst, ",")[0], "r=")
	if authMsg != wantMsg {
		t.Fatalf("AuthMessage = %q, want %q", authMsg, wantMsg)
	}
	key, err := RecoverClientKey(v, authMsg, proof)
	if err != nil {
		t.Fatal(err)
	}
	if !key.Matches(v) {
		t.Fatal("recovered key does not hash to StoredKey")
	}
	// The same key proves itself again exactly as the RFC's client did.
	l := &Login{v: v, key: key, nonce: rfcClientNonce, bare: "n=user,r=" + rfcClientNonce}
	final, err := l.Final(rfcServerFirst)
	if err != nil || final != rfcClientFinal {
		t.Fatalf("Final = %q, %v; want %q", final, err, rfcClientFinal)
	}
	if err := l.Verify(rfcServerFinal); err != nil {
		t.Fatalf("Verify(RFC server signature): %v", err)
	}
	if err := l.Verify("v=" + base64.StdEncoding.EncodeToString(make([]byte, 32))); err == nil {
		t.Fatal("Verify accepted a wrong server signature")
	}
	if s := fmt.Sprintf("%v %+v %#v %s", key, key, key, key); strings.Contains(s, base64.StdEncoding.EncodeToString(key.b)) || strings.Contains(s, fmt.Sprint(key.b)) {
		t.Fatalf("a ClientKey formats its bytes: %s", s)
	}
}

func TestRecoverClientKeyRefusesWrongProof(t *testing.T) {
	v := rfcVerifier(t)
	authMsg, proof, err := AuthMessage(rfcClientFirst, rfcServerFirst, rfcClientFinal)
	if err != nil {
		t.Fatal(err)
	}
	proof[0] ^= 1
	if _, err := RecoverClientKey(v, authMsg, proof); err == nil {
		t.Fatal("a wrong proof gave a key")
	}
	if _, err := RecoverClientKey(v, authMsg+"x", proof); err == nil {
		t.Fatal("a proof for another AuthMessage gave a key")
	}
	if _, _, err := AuthMessage("n=user,r=x", rfcServerFirst, rfcClientFinal); err == nil {
		t.Fatal("AuthMessage accepted a client-first-message without GS2 header")
	}
	if _, _, err := AuthMessage(rfcClientFirst, rfcServerFirst, "c=biws,r=x"); err == nil {
		t.Fatal("AuthMessage accepted a client-final-message without proof")
	}
}

// TestPassThroughAgainstIndependentServer: a key recovered from one
// xdg-go client's login logs in to a fresh xdg-go server conversation,
// with another nonce, and the server's signature checks out.
func TestPassThroughAgainstIndependentServer(t *testing.T) {
	v, err := ParseVerifier(verifierFor(t, "Pass-Thr0ugh", []byte("salt-of-sixteen!"), 4096))
	if err != nil {
		t.Fatal(err)
	}
	creds := scram.StoredCredentials{KeyFactors: scram.KeyFactors{Salt: string(v.Salt), Iters: v.Iterations}, StoredKey: v.StoredKey, ServerKey: v.ServerKey}
	srv, err := scram.SHA256.NewServer(func(string) (scram.StoredCredentials, error) { return creds, nil })
	if err != nil {
		t.Fatal(err)
	}
	// A client with the password logs in; pgsplit sees the messages.
	cl, _ := scram.SHA256.NewClient("", "Pass-Thr0ugh", "")
	cc, sc := cl.NewConversation(), srv.NewConversation()
	c1, _ := cc.Step("")
	s1, _ := sc.Step(c1)
	c2, _ := cc.Step(s1)
	if _, err := sc.Step(c2); err != nil || !sc.Valid() {
		t.Fatalf("xdg-go login: %v", err)
	}
	authMsg, proof, err := AuthMessage(c1, s1, c2)
	if err != nil {
		t.Fatal(err)
	}
	key, err := RecoverClientKey(v, authMsg, proof)
	if err != nil {
		t.Fatal(err)
	}
	// pgsplit logs in with the key alone.
	l, err := NewLogin(v, key)
	if err != nil {
		t.Fatal(err)
	}
	sc = srv.NewConversation()
	s1, err = sc.Step(l.First())
	if err != nil {
		t.Fatal(err)
	}
	final, err := l.Final(s1)
	if err != nil {
		t.Fatal(err)
	}
	s2, err := sc.Step(final)
	if err != nil || !sc.Valid() {
		t.Fatalf("server refused the pass-through proof: %v", err)
	}
	if err := l.Verify(s2); err != nil {
		t.Fatal(err)
	}
}

func TestLoginRefusesOtherSaltOrIterations(t *testing.T) {
	v := rfcVerifier(t)
	for _, s1 := range []string{
		"r=" + rfcClientNonce + "xyz,s=c2FsdHNhbHRzYWx0c2FsdA==,i=4096",
		"r=" + rfcClientNonce + "xyz,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=8192",
	} {
		l := &Login{v: v, nonce: rfcClientNonce, bare: "n=,r=" + rfcClientNonce}
		if _, err := l.Final(s1); !errors.Is(err, ErrFactorsDiffer) {
			t.Errorf("Final(%q) = %v, want ErrFactorsDiffer", s1, err)
		}
	}
	l := &Login{v: v, nonce: rfcClientNonce, bare: "n=,r=" + rfcClientNonce}
	if _, err := l.Final("r=other,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"); err == nil {
		t.Error("Final accepted a nonce that does not extend the client's")
	}
}

func TestKeyRingKeepsOnlyMatchingKeys(t *testing.T) {
	v := rfcVerifier(t)
	authMsg, proof, _ := AuthMessage(rfcClientFirst, rfcServerFirst, rfcClientFinal)
	key, err := RecoverClientKey(v, authMsg, proof)
	if err != nil {
		t.Fatal(err)
	}
	r := NewKeyRing()
	if _, ok := r.Get(v); ok {
		t.Fatal("empty ring has a key")
	}
	other, _ := ParseVerifier(verifierFor(t, "other", []byte("0123456789abcdef"), 4096))
	r.Put(other, key) // not other's key
	if _, ok := r.Get(other); ok {
		t.Fatal("ring kept a key for a verifier it does not belong to")
	}
	r.Put(v, key)
	if got, ok := r.Get(v); !ok || !got.Matches(v) {
		t.Fatal("ring lost the key")
	}
	if _, ok := r.Get(other); ok {
		t.Fatal("a changed verifier finds the old key")
	}
}

func TestMD5ResponseFromHashEqualsFromPassword(t *testing.T) {
	salt := [4]byte{1, 2, 3, 250}
	hexMD5 := func(s string) string { h := md5.Sum([]byte(s)); return hex.EncodeToString(h[:]) }
	// libpq's formula, from the plain password.
	want := "md5" + hexMD5(hexMD5("s3cret"+"alice")+string(salt[:]))
	if h := MD5Hash("alice", "s3cret"); h != "md5"+hexMD5("s3cretalice") {
		t.Fatalf("MD5Hash = %s", h)
	}
	if got := MD5Response(MD5Hash("alice", "s3cret"), salt); got != want {
		t.Fatalf("MD5Response = %s, want %s", got, want)
	}
}
