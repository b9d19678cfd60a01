package pool

import (
	"crypto/tls"
	"fmt"
	"net"
	"strings"
)

// TLS says how pgsplit secures a connection to a server, in libpq's terms:
// Mode is an sslmode (disable, allow, prefer, require, verify-ca,
// verify-full; "" means prefer, libpq's default), CAFile is sslrootcert,
// CertFile and KeyFile are sslcert and sslkey. pgconn reads the files at
// every connect, so a certificate replaced on disk is used from the next
// connection on.
type TLS struct {
	Mode, CAFile, CertFile, KeyFile string
}

// connString is t as keyword/value settings for pgconn.ParseConfig. Every
// TLS setting is given, empty when unset, so that nothing comes from
// pgsplit's own environment (PGSSLMODE, PGSSLCERT …) or from the files
// libpq would look for in ~/.postgresql.
func (t TLS) connString() string {
	mode := t.Mode
	if mode == "" {
		mode = "prefer"
	}
	var b strings.Builder
	for _, kv := range []struct{ k, v string }{{"sslmode", mode}, {"sslrootcert", t.CAFile}, {"sslcert", t.CertFile}, {"sslkey", t.KeyFile},
		{"sslpassword", ""}, {"sslcertmode", "allow"}, {"sslnegotiation", "postgres"}, {"sslsni", "1"}} {
		fmt.Fprintf(&b, " %s=%s", kv.k, connQuote(kv.v))
	}
	return b.String()
}

// connQuote quotes a value of a keyword/value connection string.
func connQuote(v string) string {
	return "'" + strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(v) + "'"
}

// describeTLS says how nc is encrypted, as PgBouncer's SHOW SERVERS and
// SHOW CLIENTS do ("TLSv1.3/TLS_AES_128_GCM_SHA256"), or "" for a plain
// connection.
func describeTLS(nc net.Conn) string {
	tc, ok := nc.(*tls.Conn)
	if !ok {
		return ""
	}
	return DescribeTLS(tc.ConnectionState())
}

// DescribeTLS formats a TLS connection's version and cipher suite, with
// OpenSSL's version names as PgBouncer shows them ("TLSv1.3").
func DescribeTLS(cs tls.ConnectionState) string {
	return fmt.Sprintf("%s/%s", strings.Replace(tls.VersionName(cs.Version), "TLS ", "TLSv", 1), tls.CipherSuiteName(cs.CipherSuite))
}

// plainConn is the socket under a TLS connection (nc itself otherwise), for
// the idle check, which looks at the socket without reading through TLS.
func plainConn(nc net.Conn) net.Conn {
	if tc, ok := nc.(*tls.Conn); ok {
		return tc.NetConn()
	}
	return nc
}
