package pool

import (
	"testing"
)

// ConnConfig takes its TLS settings from server_tls only: not from
// PGSSL* variables of pgsplit's environment.
func TestConnConfigIgnoresPGSSLEnvironment(t *testing.T) {
	t.Setenv("PGSSLMODE", "verify-full")
	t.Setenv("PGSSLROOTCERT", "/nonexistent/root.crt")
	t.Setenv("PGSSLCERT", "/nonexistent/client.crt")
	t.Setenv("PGSSLKEY", "/nonexistent/client.key")
	t.Setenv("PGSSLNEGOTIATION", "direct")
	for _, tc := range []struct {
		mode      string
		tlsFirst  bool // the first attempt is TLS
		fallbacks int
	}{{"disable", false, 0}, {"", true, 1}, {"prefer", true, 1}, {"allow", false, 1}, {"require", true, 0}} {
		cfg, err := ConnConfig("127.0.0.1", 5432, TLS{Mode: tc.mode}, "u", "p", "d", 0)
		if err != nil {
			t.Fatalf("mode %q: %v", tc.mode, err)
		}
		if (cfg.TLSConfig != nil) != tc.tlsFirst || len(cfg.Fallbacks) != tc.fallbacks || cfg.SSLNegotiation != "postgres" {
			t.Errorf("mode %q: TLS first %v, %d fallbacks, negotiation %q", tc.mode, cfg.TLSConfig != nil, len(cfg.Fallbacks), cfg.SSLNegotiation)
		}
		if cfg.TLSConfig != nil && (cfg.TLSConfig.RootCAs != nil || len(cfg.TLSConfig.Certificates) > 0 || !cfg.TLSConfig.InsecureSkipVerify) {
			t.Errorf("mode %q: TLS config from the environment: %+v", tc.mode, cfg.TLSConfig)
		}
	}
	if _, err := ConnConfig("127.0.0.1", 5432, TLS{Mode: "verify-full", CAFile: "/nonexistent/ca.crt"}, "u", "p", "d", 0); err == nil {
		t.Error("verify-full with a missing CA file: no error")
	}
}
