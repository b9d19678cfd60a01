package config

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
)

// LoadKeyPair reads a certificate and its private key from the files named
// by the keys certKey and keyKey (e.g. "tls.cert_file", "tls.key_file").
// The error names the key at fault and its path, never the key's contents:
// validation and the proxy's reload report it as is.
func LoadKeyPair(certKey, certFile, keyKey, keyFile string) (tls.Certificate, error) {
	for _, f := range []struct{ key, path string }{{certKey, certFile}, {keyKey, keyFile}} {
		if err := readable(f.path); err != nil {
			return tls.Certificate{}, fmt.Errorf("%s: %q %v", f.key, f.path, err)
		}
	}
	pair, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		// crypto/tls says which half is wrong ("… in key input", "private
		// key does not match public key") without quoting the files.
		return tls.Certificate{}, fmt.Errorf("%s, %s: %q and %q are not a certificate and its private key (PEM): %v", certKey, keyKey, certFile, keyFile, err)
	}
	return pair, nil
}

// LoadCAPool reads the PEM certificates of the file named by key (e.g.
// "tls.client_ca_file") into a pool.
func LoadCAPool(key, file string) (*x509.CertPool, error) {
	if err := readable(file); err != nil {
		return nil, fmt.Errorf("%s: %q %v", key, file, err)
	}
	body, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("%s: %q cannot be read: %v", key, file, err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(body) {
		return nil, fmt.Errorf("%s: %q holds no PEM certificate", key, file)
	}
	return pool, nil
}

// readable says, as the end of a sentence, why path cannot be opened for
// reading (nil if it can).
func readable(path string) error {
	f, err := os.Open(path)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return errors.New("does not exist")
	case errors.Is(err, os.ErrPermission):
		return errors.New("cannot be read (permission denied)")
	case err != nil:
		return fmt.Errorf("cannot be read: %v", err)
	}
	defer f.Close()
	if st, err := f.Stat(); err == nil && st.IsDir() {
		return errors.New("is a folder, not a file")
	}
	return nil
}
