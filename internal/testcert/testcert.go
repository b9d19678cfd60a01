// Package testcert makes throwaway X.509 certificates for tests and the
// demo: a certificate authority, and server and client certificates it
// signs. Everything is done by crypto/x509 and crypto/ecdsa, so no openssl
// is needed. Keys are ECDSA P-256, written as PKCS#8 PEM, which both Go and
// PostgreSQL (OpenSSL) read.
package testcert

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"
)

// validity is how long the certificates are valid: long enough for any
// test run, starting a little in the past against clock skew.
const validity = 24 * time.Hour

// CA is a self-signed certificate authority. It is read-only after NewCA.
type CA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	// PEM is the CA certificate, for a client's root or a server's
	// client-CA file.
	PEM []byte
}

// Pair is a certificate (PEM) and its private key (PKCS#8 PEM).
type Pair struct {
	CertPEM, KeyPEM []byte
}

// NewCA makes a CA whose subject CN is name.
func NewCA(name string) (*CA, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("testcert: CA key: %w", err)
	}
	tmpl := template(name)
	tmpl.IsCA, tmpl.BasicConstraintsValid = true, true
	tmpl.KeyUsage = x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("testcert: CA certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("testcert: CA certificate: %w", err)
	}
	return &CA{cert: cert, key: key, PEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}, nil
}

// Server makes a server certificate for hosts: each is an IP address or a
// DNS name, and goes into the subject alternative names.
func (ca *CA) Server(hosts ...string) (Pair, error) {
	tmpl := template(hosts[0])
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
	return ca.sign(tmpl)
}

// Client makes a client certificate whose subject CN is cn (PostgreSQL's
// cert authentication maps it to the user name).
func (ca *CA) Client(cn string) (Pair, error) {
	tmpl := template(cn)
	tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	return ca.sign(tmpl)
}

func (ca *CA) sign(tmpl *x509.Certificate) (Pair, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return Pair{}, fmt.Errorf("testcert: key: %w", err)
	}
	tmpl.KeyUsage = x509.KeyUsageDigitalSignature
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		return Pair{}, fmt.Errorf("testcert: certificate %q: %w", tmpl.Subject.CommonName, err)
	}
	pkcs8, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return Pair{}, fmt.Errorf("testcert: key: %w", err)
	}
	return Pair{
		CertPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		KeyPEM:  pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: pkcs8}),
	}, nil
}

func template(cn string) *x509.Certificate {
	serial, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	now := time.Now()
	return &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: cn},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(validity),
	}
}

// Write writes the pair to dir as name.crt and name.key (mode 0600, as
// PostgreSQL wants for a key) and returns both paths.
func (p Pair) Write(dir, name string) (certFile, keyFile string, err error) {
	certFile, keyFile = filepath.Join(dir, name+".crt"), filepath.Join(dir, name+".key")
	if err := os.WriteFile(certFile, p.CertPEM, 0o600); err != nil {
		return "", "", fmt.Errorf("testcert: %w", err)
	}
	if err := os.WriteFile(keyFile, p.KeyPEM, 0o600); err != nil {
		return "", "", fmt.Errorf("testcert: %w", err)
	}
	return certFile, keyFile, nil
}

// WriteCA writes the CA certificate to dir as name.crt and returns its path.
func (ca *CA) WriteCA(dir, name string) (string, error) {
	path := filepath.Join(dir, name+".crt")
	if err := os.WriteFile(path, ca.PEM, 0o600); err != nil {
		return "", fmt.Errorf("testcert: %w", err)
	}
	return path, nil
}

// Files are a new CA and a server certificate it signed, written to a
// folder as ca.crt, server.crt and server.key.
type Files struct {
	CA                        *CA
	CAFile, CertFile, KeyFile string
}

// WriteServer makes a CA named caName and a server certificate for hosts
// it signed, and writes them to dir.
func WriteServer(dir, caName string, hosts ...string) (Files, error) {
	ca, err := NewCA(caName)
	if err != nil {
		return Files{}, err
	}
	pair, err := ca.Server(hosts...)
	if err != nil {
		return Files{}, err
	}
	f := Files{CA: ca}
	if f.CertFile, f.KeyFile, err = pair.Write(dir, "server"); err != nil {
		return Files{}, err
	}
	if f.CAFile, err = ca.WriteCA(dir, "ca"); err != nil {
		return Files{}, err
	}
	return f, nil
}
