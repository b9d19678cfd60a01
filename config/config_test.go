package config

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pgsplit/pgsplit/internal/testcert"
)

func writeFile(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "c.yaml")
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// The shipped config.yaml must load as is.
func TestShippedConfigLoads(t *testing.T) {
	cfg, err := Load("../config.yaml", nil)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Listen != "127.0.0.1:6432" || cfg.Pool.PoolSize != 20 || cfg.Pool.MaxOverflow != 40 ||
		cfg.Pool.PoolTimeout != 30*time.Second || cfg.Pool.PoolRecycle != time.Hour || !cfg.Pool.PoolPrePing ||
		cfg.ShutdownTimeout != 30*time.Second || cfg.Auth.Method != AuthSCRAM || len(cfg.Servers) != 2 {
		t.Fatalf("unexpected values: %+v", cfg)
	}
	if p, ok := cfg.Primary(); !ok || p.Port != 5432 {
		t.Fatalf("primary: %+v", p)
	}
}

const minimal = `
servers: [{ host: 127.0.0.1, port: 5432, role: primary }]
auth: { users: [{ name: app, password: app }] }
`

func TestEnvOverrides(t *testing.T) {
	env := []string{
		"PGSPLIT_POOL_POOL_SIZE=7",
		"PGSPLIT_POOL_POOL_TIMEOUT=2.5", // plain number = seconds, as in SQLAlchemy
		"PGSPLIT_POOL_POOL_PRE_PING=off",
		"PGSPLIT_LOG_FORMAT=console",
		"PGSPLIT_SERVERS=10.0.0.1:5432/primary,10.0.0.2:5433/replica/3",
		"PGSPLIT_AUTH_USERS=a:pw1,b:pw:2",
		"OTHER=ignored",
	}
	cfg, err := Load(writeFile(t, minimal), env)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Pool.PoolSize != 7 || cfg.Pool.PoolTimeout != 2500*time.Millisecond || cfg.Pool.PoolPrePing || cfg.Log.Format != "console" {
		t.Fatalf("env not applied: %+v", cfg.Pool)
	}
	if len(cfg.Servers) != 2 || cfg.Servers[1].Weight != 3 || cfg.Servers[1].Role != RoleReplica || cfg.Servers[0].Host != "10.0.0.1" {
		t.Fatalf("servers: %+v", cfg.Servers)
	}
	if len(cfg.Auth.Users) != 2 || cfg.Auth.Users[1].Password != "pw:2" {
		t.Fatalf("users: %+v", cfg.Auth.Users)
	}
}

// Every problem is reported at once, one line each, naming key and value.
func TestBadConfigListsEveryProblem(t *testing.T) {
	body := `
listen: "nowhere"
servers:
  - { host: 127.0.0.1, port: 70000, role: primray }
auth:
  method: scram
  users: [{ name: app, password: app }]
pool:
  pool_sise: 3
  max_overflow: -1
  pool_timeout: soon
  overflow_idle_timeout: -5s
log: { level: verbose }
`
	_, err := Load(writeFile(t, body), []string{"PGSPLIT_POOL_POOLSIZE=3"})
	var ce *Error
	if !errors.As(err, &ce) {
		t.Fatalf("want *Error, got %v", err)
	}
	want := []string{
		`listen: "nowhere"`,
		`servers[0].port: 70000`,
		`servers[0].role: "primray"`,
		`auth.method: "scram"`,
		`pool.pool_sise: unknown key`,
		`pool.max_overflow: -1`,
		`pool.pool_timeout`,
		`pool.overflow_idle_timeout: -5s`,
		`log.level: "verbose"`,
		`PGSPLIT_POOL_POOLSIZE: unknown environment variable`,
	}
	text := err.Error()
	for _, w := range want {
		if !strings.Contains(text, w) {
			t.Errorf("missing %q in:\n%s", w, text)
		}
	}
	if strings.Count(text, "\n") < len(want) {
		t.Errorf("want one line per problem, got:\n%s", text)
	}
}

func TestSecretsNotEchoed(t *testing.T) {
	_, err := Load(writeFile(t, minimal), []string{"PGSPLIT_AUTH_USERS=topsecretwithoutcolon"})
	if err == nil || strings.Contains(err.Error(), "topsecret") {
		t.Fatalf("want an error that does not echo the value, got %v", err)
	}
	if s := (User{Name: "u", Password: "p4ss"}).String(); strings.Contains(s, "p4ss") {
		t.Fatal("User.String leaks the password")
	}
}

func TestDefaultsNeedServersAndUsers(t *testing.T) {
	_, err := Load("", nil)
	if err == nil || !strings.Contains(err.Error(), "servers: empty") || !strings.Contains(err.Error(), "auth.users: empty") {
		t.Fatalf("got %v", err)
	}
}

// pool.profile fills pool_size and max_overflow with the guide's numbers;
// keys set in the file or the environment win; transaction pooling is the
// default.
func TestPoolProfile(t *testing.T) {
	for _, tc := range []struct {
		name, body     string
		env            []string
		size, overflow int
	}{
		{"default is production", minimal, nil, 20, 40},
		{"development", minimal + "pool: { profile: development }\n", nil, 5, 10},
		{"staging", minimal + "pool: { profile: staging }\n", nil, 10, 20},
		{"explicit pool_size wins", minimal + "pool: { profile: development, pool_size: 7 }\n", nil, 7, 10},
		{"environment wins", minimal + "pool: { profile: staging }\n", []string{"PGSPLIT_POOL_MAX_OVERFLOW=3"}, 10, 3},
		{"profile from the environment", minimal, []string{"PGSPLIT_POOL_PROFILE=development"}, 5, 10},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := Load(writeFile(t, tc.body), tc.env)
			if err != nil {
				t.Fatal(err)
			}
			if cfg.Pool.PoolSize != tc.size || cfg.Pool.MaxOverflow != tc.overflow {
				t.Fatalf("pool_size %d max_overflow %d, want %d %d", cfg.Pool.PoolSize, cfg.Pool.MaxOverflow, tc.size, tc.overflow)
			}
			if cfg.Pool.Mode != ModeTransaction || cfg.Pool.MaxPreparedStatements != 200 {
				t.Fatalf("defaults: mode %q max_prepared_statements %d", cfg.Pool.Mode, cfg.Pool.MaxPreparedStatements)
			}
		})
	}
	_, err := Load(writeFile(t, minimal+"pool: { profile: huge, mode: statement, max_prepared_statements: 0 }\ndatabases: [app, app]\n"), nil)
	var ce *Error
	if !errors.As(err, &ce) {
		t.Fatalf("want a config error, got %v", err)
	}
	for _, want := range []string{`pool.profile: "huge" is not allowed: must be development`, `pool.mode: "statement" is not allowed: must be transaction or session`,
		"pool.max_prepared_statements: 0 is not allowed", `databases[1]: "app" is not allowed`} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("missing %q in:\n%v", want, err)
		}
	}
}

func TestSettingsMaskPasswords(t *testing.T) {
	cfg, err := Load("", []string{"PGSPLIT_SERVERS=127.0.0.1:5432/primary", "PGSPLIT_AUTH_USERS=app:sekrit", "PGSPLIT_ADMIN_USERS=boss:hush"})
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]Setting{}
	for _, s := range cfg.Settings() {
		got[s.Key] = s
		if strings.Contains(s.Value, "sekrit") || strings.Contains(s.Value, "hush") {
			t.Errorf("%s shows a password: %q", s.Key, s.Value)
		}
	}
	if got["auth.users"].Value != "app:****" || got["admin.users"].Value != "boss:****" {
		t.Errorf("users: %+v %+v", got["auth.users"], got["admin.users"])
	}
	if s := got["pool.pool_timeout"]; s.Value != "30s" || s.Default != "30s" || !s.Changeable {
		t.Errorf("pool.pool_timeout: %+v", s)
	}
	if s := got["listen"]; s.Changeable {
		t.Errorf("listen should need a restart: %+v", s)
	}
	if len(got) != len(Keys()) {
		t.Errorf("%d settings, %d keys", len(got), len(Keys()))
	}
}

// A verifier or an md5 hash of the right form, built by hand (the config
// package only checks their shape; internal/secret tests their meaning).
const (
	testVerifier = "SCRAM-SHA-256$4096:c2FsdHNhbHRzYWx0c2FsdA==$" +
		"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=:BBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBA="
	testMD5 = "md5a3556571e93b0d20722ba62be61e8c2d"
)

func TestUsersEnvAcceptsVerifiersAndMD5Hashes(t *testing.T) {
	cfg, err := Load(writeFile(t, minimal), []string{"PGSPLIT_AUTH_METHOD=md5", "PGSPLIT_AUTH_USERS=a:" + testVerifier + ",b:" + testMD5 + ",c:plain:pw"})
	if err != nil {
		t.Fatal(err)
	}
	u := cfg.Auth.Users
	if len(u) != 3 || u[0].Password != testVerifier || u[1].Password != testMD5 || u[2].Password != "plain:pw" {
		t.Fatalf("users: %d, passwords not kept whole", len(u))
	}
	if cfg.Auth.ServiceUser().Name != "c" {
		t.Fatalf("service user %q, want the first one with a plain password", cfg.Auth.ServiceUser().Name)
	}
}

func TestPasswordFileAndEnvAreRead(t *testing.T) {
	dir := t.TempDir()
	f := filepath.Join(dir, "pw")
	if err := os.WriteFile(f, []byte(testVerifier+"\r\n"), 0o640); err != nil {
		t.Fatal(err)
	}
	body := `
servers: [{ host: 127.0.0.1, port: 5432, role: primary }]
auth:
  users:
    - { name: a, password_file: ` + f + ` }
    - { name: b, password_env: B_PW }
`
	cfg, err := Load(writeFile(t, body), []string{"B_PW=s3cret-b\n"})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Auth.Users[0].Password != testVerifier || cfg.Auth.Users[1].Password != "s3cret-b" {
		t.Fatal("password_file / password_env not read, or trailing newline kept")
	}
}

// TestSecretProblemsNameTheKeyAndHideTheValue: each misuse of a secret is
// refused with the key named and without the secret in the message.
func TestSecretProblemsNameTheKeyAndHideTheValue(t *testing.T) {
	dir := t.TempDir()
	loose := filepath.Join(dir, "loose")
	if err := os.WriteFile(loose, []byte("Loose-s3cret"), 0o604); err != nil {
		t.Fatal(err)
	}
	empty := filepath.Join(dir, "empty")
	if err := os.WriteFile(empty, []byte("\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	secrets := []string{"Loose-s3cret", "Both-s3cret", testVerifier[15:], testMD5[3:], "SCRAM-SHA-256$4096:bad"}
	cases := []struct {
		name, method, user, extra, key, says string
	}{
		{"missing file", "", "{ name: a, password_file: " + filepath.Join(dir, "absent") + " }", "", "auth.users[0].password_file", "no such file"},
		{"world-readable file", "", "{ name: a, password_file: " + loose + " }", "", "auth.users[0].password_file", "accessible to every user"},
		{"empty file", "", "{ name: a, password_file: " + empty + " }", "", "auth.users[0].password_file", "is empty"},
		{"unset env", "", "{ name: a, password_env: NOPE_PW }", "", "auth.users[0].password_env", `"NOPE_PW" is not set`},
		{"two sources", "", "{ name: a, password: Both-s3cret, password_env: A_PW }", "", "auth.users[0].password_env", "only one of"},
		{"malformed verifier", "", "{ name: a, password: 'SCRAM-SHA-256$4096:bad' }", "", "auth.users[0].password", "malformed SCRAM-SHA-256 verifier"},
		{"md5 hash under scram", "scram-sha-256", "{ name: a, password: " + testMD5 + " }", "", "auth.users[0].password", "md5 hash cannot check SCRAM"},
		{"verifier under trust", "trust", "{ name: a, password: '" + testVerifier + "' }", "", "auth.users[0].password", "not allowed with auth.method trust"},
		{"md5 admin under trust", "trust", "{ name: a, password: pw }", "admin: { users: [{ name: adm, password: " + testMD5 + " }] }", "admin.users[0].password", "md5 hash cannot check SCRAM"},
		{"md5 admin under cert", "cert", "{ name: a, password: pw }", "admin: { users: [{ name: adm, password: " + testMD5 + " }] }", "admin.users[0].password", "md5 hash cannot check SCRAM"},
		{"auth_user not listed", "", "{ name: a, password: pw }", "", "auth.auth_user", "must be one of auth.users"},
		{"auth_user with verifier", "", "{ name: look, password: '" + testVerifier + "' }", "", "auth.auth_user", "only a SCRAM verifier"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			method := tc.method
			if method == "" {
				method = "scram-sha-256"
			}
			authUser := ""
			if strings.HasPrefix(tc.key, "auth.auth_user") {
				authUser = ", auth_user: look"
			}
			body := "servers: [{ host: 127.0.0.1, port: 5432, role: primary }]\nauth: { method: " + method + authUser + ", users: [" + tc.user + "] }\n" + tc.extra + "\n"
			_, err := Load(writeFile(t, body), []string{"A_PW=x"})
			if err == nil {
				t.Fatal("loaded")
			}
			if !strings.Contains(err.Error(), tc.key+": ") || !strings.Contains(err.Error(), tc.says) {
				t.Fatalf("error %q: want key %s and %q", err, tc.key, tc.says)
			}
			for _, s := range secrets {
				if strings.Contains(err.Error(), s) {
					t.Fatalf("error shows a secret: %v", err)
				}
			}
		})
	}
}

func TestAuthQueryDefaultsAndNeedsParameter(t *testing.T) {
	cfg, err := Load(writeFile(t, minimal), nil)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Auth.AuthQuery != DefaultAuthQuery || cfg.Auth.AuthUser != "" {
		t.Fatalf("auth_query %q, auth_user %q", cfg.Auth.AuthQuery, cfg.Auth.AuthUser)
	}
	_, err = Load(writeFile(t, minimal), []string{"PGSPLIT_AUTH_AUTH_USER=app", "PGSPLIT_AUTH_AUTH_QUERY=SELECT usename, passwd FROM pg_shadow WHERE usename = 'app'"})
	if err == nil || !strings.Contains(err.Error(), "auth.auth_query: must take the user name as $1") {
		t.Fatalf("auth_query without $1: %v", err)
	}
	cfg, err = Load(writeFile(t, minimal), []string{"PGSPLIT_AUTH_AUTH_USER=app"})
	if err != nil || cfg.Auth.ServiceUser().Name != "app" {
		t.Fatalf("auth_user app: %v", err)
	}
}

// TestLimitsDefaults: the limits section's defaults as documented in
// config.yaml, the same from Load and from DefaultLimits, and every key
// settable from the environment.
func TestLimitsDefaults(t *testing.T) {
	cfg, err := Load(writeFile(t, minimal), nil)
	if err != nil {
		t.Fatal(err)
	}
	want := Limits{MaxMessageSize: 64 << 20, MaxClientStatements: 1000, MaxClientStatementBytes: 16 << 20,
		MaxBatchBytes: 1 << 20, StartupTimeout: 15 * time.Second, MaxParseDepth: 1000, MaxParseBytes: 1 << 20}
	if cfg.Limits != want || DefaultLimits() != want {
		t.Fatalf("limits defaults: got %+v, DefaultLimits %+v, want %+v", cfg.Limits, DefaultLimits(), want)
	}
	shipped, err := Load("../config.yaml", nil)
	if err != nil {
		t.Fatal(err)
	}
	if shipped.Limits != want {
		t.Fatalf("config.yaml's limits differ from the defaults: %+v", shipped.Limits)
	}
	env := []string{
		"PGSPLIT_LIMITS_MAX_MESSAGE_SIZE=1048576", "PGSPLIT_LIMITS_MAX_CLIENT_STATEMENTS=5",
		"PGSPLIT_LIMITS_MAX_CLIENT_STATEMENT_BYTES=65536", "PGSPLIT_LIMITS_MAX_BATCH_BYTES=65536",
		"PGSPLIT_LIMITS_STARTUP_TIMEOUT=2", "PGSPLIT_LIMITS_CLIENT_IDLE_TIMEOUT=1h",
		"PGSPLIT_LIMITS_IDLE_IN_TRANSACTION_TIMEOUT=30s", "PGSPLIT_LIMITS_MAX_CONNECTIONS_PER_IP=7",
	}
	cfg, err = Load(writeFile(t, minimal), env)
	if err != nil {
		t.Fatal(err)
	}
	want = Limits{MaxMessageSize: 1 << 20, MaxClientStatements: 5, MaxClientStatementBytes: 65536, MaxBatchBytes: 65536,
		StartupTimeout: 2 * time.Second, ClientIdleTimeout: time.Hour, IdleInTransactionTimeout: 30 * time.Second, MaxConnectionsPerIP: 7,
		MaxParseDepth: 1000, MaxParseBytes: 1 << 20}
	if cfg.Limits != want {
		t.Fatalf("limits from the environment: got %+v, want %+v", cfg.Limits, want)
	}
}

// TestLimitsRefused: each bad limits value is refused with its key and
// value.
func TestLimitsRefused(t *testing.T) {
	body := minimal + `
limits:
  max_message_size: 2000000000
  max_client_statements: 0
  max_client_statement_bytes: 10
  max_batch_bytes: 100
  startup_timeout: 0s
  client_idle_timeout: -1s
  idle_in_transaction_timeout: -5s
  max_connections_per_ip: -1
`
	_, err := Load(writeFile(t, body), nil)
	var ce *Error
	if !errors.As(err, &ce) {
		t.Fatalf("want *Error, got %v", err)
	}
	text := err.Error()
	for _, w := range []string{
		"limits.max_message_size: 2000000000 is not allowed: must be 65536 (64 kB) to 1073741824 (1 GB",
		"limits.max_client_statements: 0 is not allowed",
		"limits.max_client_statement_bytes: 10 is not allowed",
		"limits.max_batch_bytes: 100 is not allowed",
		"limits.startup_timeout: 0s is not allowed: must be a positive duration",
		"limits.client_idle_timeout: -1s is not allowed",
		"limits.idle_in_transaction_timeout: -5s is not allowed",
		"limits.max_connections_per_ip: -1 is not allowed",
	} {
		if !strings.Contains(text, w) {
			t.Errorf("missing %q in:\n%s", w, text)
		}
	}
	if strings.Count(text, "\n") != 8 {
		t.Errorf("want one line per problem (8), got:\n%s", text)
	}
}

// tlsFiles writes a CA, a server certificate and key signed by it, and a
// second key that does not match the certificate, into a temporary folder.
func tlsFiles(t *testing.T) (ca, cert, key, otherKey string) {
	t.Helper()
	dir := t.TempDir()
	f, err := testcert.WriteServer(dir, "config test CA", "127.0.0.1", "localhost")
	if err != nil {
		t.Fatal(err)
	}
	other, err := f.CA.Server("127.0.0.1")
	if err == nil {
		_, otherKey, err = other.Write(dir, "other")
	}
	if err != nil {
		t.Fatal(err)
	}
	return f.CAFile, f.CertFile, f.KeyFile, otherKey
}

// The tls and server_tls sections: defaults (no client TLS, libpq's prefer
// towards the servers), files that load, and a refusal naming the key and
// the value for each kind of mistake, without the key's contents.
func TestTLSSections(t *testing.T) {
	ca, cert, key, otherKey := tlsFiles(t)
	cfg, err := Load(writeFile(t, minimal), nil)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.TLS.Mode != TLSDisable || cfg.ServerTLS.Mode != SSLPrefer || cfg.TLS.CertFile != "" {
		t.Fatalf("defaults: %+v %+v", cfg.TLS, cfg.ServerTLS)
	}

	good := minimal + fmt.Sprintf("tls: { mode: require, cert_file: %q, key_file: %q, client_ca_file: %q }\n", cert, key, ca) +
		fmt.Sprintf("server_tls: { mode: verify-full, ca_file: %q, cert_file: %q, key_file: %q }\n", ca, cert, key)
	cfg, err = Load(writeFile(t, good), []string{"PGSPLIT_AUTH_METHOD=cert"})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.TLS.Mode != TLSRequire || cfg.TLS.ClientCAFile != ca || cfg.ServerTLS.Mode != SSLVerifyFull || cfg.Auth.Method != AuthCert {
		t.Fatalf("not applied: %+v %+v", cfg.TLS, cfg.ServerTLS)
	}
	if _, err := Load(writeFile(t, minimal), []string{"PGSPLIT_TLS_MODE=allow", "PGSPLIT_TLS_CERT_FILE=" + cert, "PGSPLIT_TLS_KEY_FILE=" + key,
		"PGSPLIT_SERVER_TLS_MODE=disable"}); err != nil {
		t.Fatalf("from the environment: %v", err)
	}

	for _, tc := range []struct {
		name, body string
		env        []string
		want       []string
	}{
		{"bad modes", minimal + "tls: { mode: prefer }\nserver_tls: { mode: verify }\n", nil,
			[]string{`tls.mode: "prefer" is not allowed: must be disable, allow or require`, `server_tls.mode: "verify" is not allowed: must be disable, allow, prefer, require, verify-ca or verify-full`}},
		{"require without a certificate", minimal + "tls: { mode: require }\n", nil,
			[]string{"tls.cert_file: empty is not allowed with tls.mode require", "tls.key_file: empty is not allowed with tls.mode require"}},
		{"missing files", minimal + "tls: { mode: allow, cert_file: /nonexistent/c.pem, key_file: " + key + ", client_ca_file: /nonexistent/ca.pem }\n", nil,
			[]string{`tls.cert_file: "/nonexistent/c.pem" does not exist`, `tls.client_ca_file: "/nonexistent/ca.pem" does not exist`}},
		{"key of another certificate", minimal + fmt.Sprintf("tls: { mode: allow, cert_file: %q, key_file: %q }\n", cert, otherKey), nil,
			[]string{"tls.cert_file, tls.key_file: ", "private key does not match public key"}},
		{"a key as the CA", minimal + fmt.Sprintf("server_tls: { ca_file: %q }\ntls: { client_ca_file: %q }\n", key, key), nil,
			[]string{`server_tls.ca_file: "` + key + `" holds no PEM certificate`, `tls.client_ca_file: "` + key + `" holds no PEM certificate`}},
		{"verify without a CA, half a pair", minimal + fmt.Sprintf("server_tls: { mode: verify-ca, cert_file: %q }\n", cert), nil,
			[]string{"server_tls.ca_file: empty is not allowed with server_tls.mode verify-ca", "server_tls.cert_file, server_tls.key_file: set both"}},
		{"cert auth without client CAs", minimal + fmt.Sprintf("tls: { mode: require, cert_file: %q, key_file: %q }\n", cert, key), []string{"PGSPLIT_AUTH_METHOD=cert"},
			[]string{`auth.method: "cert" is not allowed: needs tls.mode allow or require and tls.client_ca_file`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Load(writeFile(t, tc.body), tc.env)
			var ce *Error
			if !errors.As(err, &ce) {
				t.Fatalf("want a config error, got %v", err)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("missing %q in:\n%v", w, err)
				}
			}
			keyPEM, _ := os.ReadFile(key)
			if strings.Contains(err.Error(), "PRIVATE KEY") || strings.Contains(err.Error(), string(keyPEM[30:60])) {
				t.Errorf("the error shows key contents:\n%v", err)
			}
		})
	}
}

// SHOW CONFIG lists the TLS keys with their paths.
func TestSettingsShowTLSPaths(t *testing.T) {
	ca, cert, key, _ := tlsFiles(t)
	cfg, err := Load(writeFile(t, minimal), []string{"PGSPLIT_TLS_MODE=allow", "PGSPLIT_TLS_CERT_FILE=" + cert, "PGSPLIT_TLS_KEY_FILE=" + key,
		"PGSPLIT_SERVER_TLS_CA_FILE=" + ca})
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]Setting{}
	for _, s := range cfg.Settings() {
		got[s.Key] = s
	}
	if got["tls.mode"].Value != "allow" || got["tls.mode"].Default != "disable" || got["tls.key_file"].Value != key ||
		got["server_tls.mode"].Default != "prefer" || got["server_tls.ca_file"].Value != ca || !got["tls.cert_file"].Changeable {
		t.Fatalf("settings: %+v %+v %+v %+v", got["tls.mode"], got["tls.key_file"], got["server_tls.mode"], got["server_tls.ca_file"])
	}
	if got["server_tls.mode"].Changeable {
		t.Errorf("server_tls.mode should need a restart: %+v", got["server_tls.mode"])
	}
}

// TestLinearizableNeedsAWait: read_your_writes: linearizable with no wait
// would send every read to the primary after a position query; refused,
// naming the key; a mode that does not exist is refused too.
func TestLinearizableNeedsAWait(t *testing.T) {
	for body, want := range map[string]string{
		"routing: { read_your_writes: linearizable, read_your_writes_wait: 0s }\n": "routing.read_your_writes_wait: 0s is not allowed: must be above 0 with read_your_writes: linearizable",
		"routing: { read_your_writes: global }\n":                                  `routing.read_your_writes: "global" is not allowed: must be table, session, linearizable or off`,
	} {
		_, err := Load(writeFile(t, minimal+body), nil)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: got %v, want %q", strings.TrimSpace(body), err, want)
		}
	}
	if _, err := Load(writeFile(t, minimal+"routing: { read_your_writes: linearizable }\n"), nil); err != nil {
		t.Errorf("linearizable with the default wait: %v", err)
	}
}
