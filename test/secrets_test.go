package test

import (
	"context"
	"crypto/hmac"
	"crypto/pbkdf2"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"go.uber.org/zap/zapcore"

	"github.com/pgsplit/pgsplit/config"
	"github.com/pgsplit/pgsplit/internal/pgcluster"
)

// secretRole is a login role a secrets test creates on the primary, with
// what pg_authid stores for it.
type secretRole struct {
	name, password string
	stored         string // pg_authid.rolpassword: a SCRAM verifier or an md5 hash
}

func randomSuffix() string {
	var b [5]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// createRole creates a LOGIN role with a random password, stored as
// encryption ("scram-sha-256" or "md5") says, waits until the replicas
// have it, and drops it when the test ends.
func createRole(t *testing.T, prefix, encryption string) secretRole {
	t.Helper()
	ctx := testCtx(t, 30*time.Second)
	su := superConn(t)
	r := secretRole{name: prefix + "_" + randomSuffix(), password: "Pw-" + randomSuffix() + "-" + randomSuffix()}
	if _, err := su.Exec(ctx, "SET password_encryption = '"+encryption+"'"); err != nil {
		t.Fatal(err)
	}
	if _, err := su.Exec(ctx, fmt.Sprintf("CREATE ROLE %s LOGIN PASSWORD '%s'", r.name, r.password)); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		c, err := pgx.Connect(ctx, cluster.SuperuserDSN(cluster.Primary, appDatabase))
		if err != nil {
			t.Error(err)
			return
		}
		defer c.Close(ctx)
		// Sessions of the role may still be ending.
		_, _ = c.Exec(ctx, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = $1", r.name)
		if _, err := c.Exec(ctx, "DROP ROLE IF EXISTS "+r.name); err != nil {
			t.Logf("drop role %s: %v", r.name, err)
		}
	})
	if err := su.QueryRow(ctx, "SELECT rolpassword FROM pg_authid WHERE rolname = $1", r.name).Scan(&r.stored); err != nil {
		t.Fatal(err)
	}
	if err := waitReplicated(ctx); err != nil {
		t.Fatal(err)
	}
	return r
}

// secretsConfig is the base configuration with users and reads offloaded
// by turns to the replicas (transactions on the primary), so one client
// reaches all three servers.
func secretsConfig(method string, users ...config.User) *config.Config {
	cfg := baseConfig()
	cfg.Auth = config.Auth{Method: method, Users: users, AuthQuery: config.DefaultAuthQuery}
	cfg.Routing = config.Routing{ReadFrom: config.ReadFromReplicas, Transactions: config.TxPrimary, LoadBalance: config.BalanceRoundRobin}
	return cfg
}

// serverPorts logs in as user and returns the ports of the servers its
// reads (autocommit) and its transaction ran on, and checks current_user.
func serverPorts(t *testing.T, p *testProxy, user, password string) map[int]bool {
	t.Helper()
	ctx := testCtx(t, 30*time.Second)
	c := connect(t, p.dsn(user, password))
	defer closeConn(c)
	ports := map[int]bool{}
	for range 6 {
		var port int
		var who string
		if err := c.QueryRow(ctx, "SELECT inet_server_port(), current_user").Scan(&port, &who); err != nil {
			t.Fatalf("read as %s: %v", user, err)
		}
		if who != user {
			t.Fatalf("current_user = %q, want %q", who, user)
		}
		ports[port] = true
	}
	tx, err := c.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var port int
	var standby bool
	if err := tx.QueryRow(ctx, "SELECT inet_server_port(), pg_is_in_recovery()").Scan(&port, &standby); err != nil {
		t.Fatalf("transaction as %s: %v", user, err)
	}
	if standby {
		t.Fatalf("transaction ran on a standby (port %d)", port)
	}
	ports[port] = true
	_ = tx.Rollback(ctx)
	return ports
}

func wantAllServers(t *testing.T, ports map[int]bool) {
	t.Helper()
	for _, n := range append([]pgcluster.Node{cluster.Primary}, cluster.Replicas...) {
		if !ports[n.Port] {
			t.Fatalf("no statement ran on %s (port %d); ran on %v", n.Name, n.Port, ports)
		}
	}
}

// backendsOf counts the primary's and replicas' backends of user.
func backendsOf(t *testing.T, user string) int {
	t.Helper()
	ctx := testCtx(t, 10*time.Second)
	total := 0
	for _, n := range append([]pgcluster.Node{cluster.Primary}, cluster.Replicas...) {
		c := connect(t, cluster.SuperuserDSN(n, "postgres"))
		var k int
		err := c.QueryRow(ctx, "SELECT count(*) FROM pg_stat_activity WHERE usename = $1", user).Scan(&k)
		closeConn(c)
		if err != nil {
			t.Fatal(err)
		}
		total += k
	}
	return total
}

// TestSecretsVerifierOnlyConfigPassesThroughToEveryServer: auth.users holds
// only the role's SCRAM verifier (pg_authid.rolpassword); pgx and psql log
// in with the password, pgsplit logs in to the primary and both replicas
// with the ClientKey from their proofs, opens no server connection for the
// role before a client logged in, and refuses a wrong password with 28P01.
func TestSecretsVerifierOnlyConfigPassesThroughToEveryServer(t *testing.T) {
	r := createRole(t, "sec_scram", "scram-sha-256")
	if !strings.HasPrefix(r.stored, "SCRAM-SHA-256$") {
		t.Fatalf("pg_authid holds %.14s…, want a SCRAM verifier", r.stored)
	}
	p := startProxyWith(t, secretsConfig(config.AuthSCRAM, config.User{Name: r.name, Password: r.stored}))
	mark := p.watchLogs(t)
	if n := backendsOf(t, r.name); n != 0 {
		t.Fatalf("%d server connections of %s before any client logged in", n, r.name)
	}

	c, err := pgx.Connect(testCtx(t, 10*time.Second), p.dsn(r.name, "wrong-"+r.password))
	if err == nil {
		closeConn(c)
		t.Fatal("a wrong password was accepted")
	}
	wantState(t, err, "28P01", "wrong password")
	if n := backendsOf(t, r.name); n != 0 {
		t.Fatalf("%d server connections of %s after a failed login", n, r.name)
	}

	wantAllServers(t, serverPorts(t, p, r.name, r.password))
	res := runPsql(t, p, r.name, r.password, "", nil, "-c", "SELECT current_user")
	if res.exitCode != 0 || res.stdout != r.name+"\n" {
		t.Fatalf("psql: exit %d, stdout %q, stderr %q", res.exitCode, res.stdout, res.stderr)
	}
	res = runPsql(t, p, r.name, "nope", "", nil, "-c", "SELECT 1")
	if res.exitCode != 2 || !strings.Contains(res.stderr, "password authentication failed") {
		t.Fatalf("psql wrong password: exit %d, stderr %q", res.exitCode, res.stderr)
	}
	assertNoSecrets(t, p.logs.since(mark), r)
}

// editHBA puts line first in every node's pg_hba.conf and reloads them;
// the test's end takes it out again.
func editHBA(t *testing.T, line string) {
	t.Helper()
	nodes := append([]pgcluster.Node{cluster.Primary}, cluster.Replicas...)
	reload := func() {
		for _, n := range nodes {
			c, err := pgx.Connect(context.Background(), cluster.SuperuserDSN(n, "postgres"))
			if err != nil {
				t.Error(err)
				continue
			}
			if _, err := c.Exec(context.Background(), "SELECT pg_reload_conf()"); err != nil {
				t.Error(err)
			}
			_ = c.Close(context.Background())
		}
	}
	for _, n := range nodes {
		path := filepath.Join(n.DataDir, "pg_hba.conf")
		old, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, append([]byte(line+"\n"), old...), 0o600); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			if err := os.WriteFile(path, old, 0o600); err != nil {
				t.Error(err)
			}
		})
	}
	t.Cleanup(reload)
	reload()
	time.Sleep(200 * time.Millisecond) // the postmaster re-reads on SIGHUP, asynchronously
}

// TestSecretsMD5HashUser: a user configured with its md5 hash logs in to
// pgsplit with md5; against servers whose pg_hba.conf says scram-sha-256
// the upstream login fails with a message that says why, and against an
// md5 line pgsplit logs in to every server from the hash alone.
func TestSecretsMD5HashUser(t *testing.T) {
	r := createRole(t, "sec_md5", "md5")
	if !strings.HasPrefix(r.stored, "md5") || len(r.stored) != 35 {
		t.Fatalf("pg_authid holds %.3s… (%d chars), want an md5 hash", r.stored, len(r.stored))
	}
	p := startProxyWith(t, secretsConfig(config.AuthMD5, config.User{Name: r.name, Password: r.stored}))
	mark := p.watchLogs(t)

	t.Run("scram hba: clear error", func(t *testing.T) {
		_, err := pgx.Connect(testCtx(t, 10*time.Second), p.dsn(r.name, r.password))
		pe := wantState(t, err, "08001", "md5 hash against scram-sha-256")
		if !strings.Contains(pe.Message, "asks for SCRAM") || !strings.Contains(pe.Message, "only an md5 hash") {
			t.Fatalf("message %q does not say the server wants SCRAM and pgsplit holds only an md5 hash", pe.Message)
		}
		// The user's secret is at fault, not the servers: no replica
		// leaves read rotation for it.
		if strings.Contains(p.logs.since(mark), "out of rotation") {
			t.Fatalf("a replica was taken out of rotation for a login pgsplit refused:\n%s", p.logs.tail(mark, 20))
		}
	})
	t.Run("md5 hba: logs in everywhere", func(t *testing.T) {
		editHBA(t, fmt.Sprintf("host all %s 127.0.0.1/32 md5", r.name))
		wantAllServers(t, serverPorts(t, p, r.name, r.password))
		_, err := pgx.Connect(testCtx(t, 10*time.Second), p.dsn(r.name, "wrong"))
		wantState(t, err, "28P01", "md5 wrong password")
	})
	assertNoSecrets(t, p.logs.since(mark), r)
}

// TestSecretsPasswordFileAndEnv: config.Load reads one user's secret (its
// verifier) from password_file and another's (plain) from password_env,
// and both log in; a missing file, a file others can read and an unset
// variable are configuration errors that name the key and show no secret.
func TestSecretsPasswordFileAndEnv(t *testing.T) {
	fileRole := createRole(t, "sec_file", "scram-sha-256")
	envRole := createRole(t, "sec_env", "scram-sha-256")
	dir := t.TempDir()
	pwFile := filepath.Join(dir, "verifier")
	if err := os.WriteFile(pwFile, []byte(fileRole.stored+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	yaml := func(file, env string) string {
		path := filepath.Join(dir, "pgsplit-"+randomSuffix()+".yaml")
		var servers []string
		for _, n := range append([]pgcluster.Node{cluster.Primary}, cluster.Replicas...) {
			role := "replica"
			if n == cluster.Primary {
				role = "primary"
			}
			servers = append(servers, fmt.Sprintf("  - { host: %s, port: %d, role: %s }", n.Host, n.Port, role))
		}
		text := fmt.Sprintf(`listen: 127.0.0.1:0
servers:
%s
auth:
  method: scram-sha-256
  users:
    - { name: %s, password_file: %s }
    - { name: %s, password_env: %s }
routing: { read_from: replicas, transactions: primary, load_balance: round_robin, health_check_interval: 0 }
`, strings.Join(servers, "\n"), fileRole.name, file, envRole.name, env)
		if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	environ := []string{"SEC_ENV_PW=" + envRole.password + "\n"}

	cfg, err := config.Load(yaml(pwFile, "SEC_ENV_PW"), environ)
	if err != nil {
		t.Fatalf("load: %v", err)
	}
	if cfg.Auth.Users[0].Password != fileRole.stored || cfg.Auth.Users[1].Password != envRole.password {
		t.Fatal("password_file / password_env not read into the users (or newline not trimmed)")
	}
	p := startProxyWith(t, cfg)
	mark := p.watchLogs(t)
	wantAllServers(t, serverPorts(t, p, fileRole.name, fileRole.password))
	mustSelectOne(t, connect(t, p.dsn(envRole.name, envRole.password)), "password_env user")

	loose := filepath.Join(dir, "loose")
	if err := os.WriteFile(loose, []byte(fileRole.stored), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, file, env, key, says string
	}{
		{"missing file", filepath.Join(dir, "absent"), "SEC_ENV_PW", "auth.users[0].password_file", "no such file"},
		{"file others can read", loose, "SEC_ENV_PW", "auth.users[0].password_file", "accessible to every user"},
		{"unset variable", pwFile, "SEC_UNSET_PW", "auth.users[1].password_env", `"SEC_UNSET_PW" is not set`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := config.Load(yaml(tc.file, tc.env), environ)
			if err == nil {
				t.Fatal("loaded")
			}
			if !strings.Contains(err.Error(), tc.key+": ") || !strings.Contains(err.Error(), tc.says) {
				t.Fatalf("error %q: want %s and %q", err, tc.key, tc.says)
			}
			assertNoSecrets(t, err.Error(), fileRole, envRole)
		})
	}
	assertNoSecrets(t, p.logs.since(mark), fileRole, envRole)
}

// lookupSetup creates auth_user's role and a SECURITY DEFINER function
// over pg_shadow that only it may call (PgBouncer's recommended setup),
// and returns the role and an auth_query calling the function.
func lookupSetup(t *testing.T) (secretRole, string) {
	t.Helper()
	lookup := createRole(t, "sec_lookup", "scram-sha-256")
	fn := "public.sec_lookup_" + randomSuffix()
	ctx := testCtx(t, 10*time.Second)
	su := superConn(t)
	for _, s := range []string{
		"CREATE FUNCTION " + fn + "(text) RETURNS TABLE (usename name, passwd text) LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog AS 'SELECT usename, passwd FROM pg_shadow WHERE usename = $1'",
		"REVOKE ALL ON FUNCTION " + fn + "(text) FROM PUBLIC",
		"GRANT EXECUTE ON FUNCTION " + fn + "(text) TO " + lookup.name,
	} {
		if _, err := su.Exec(ctx, s); err != nil {
			t.Fatalf("%s: %v", s, err)
		}
	}
	t.Cleanup(func() {
		c, err := pgx.Connect(context.Background(), cluster.SuperuserDSN(cluster.Primary, appDatabase))
		if err == nil {
			_, _ = c.Exec(context.Background(), "DROP FUNCTION IF EXISTS "+fn+"(text)")
			_ = c.Close(context.Background())
		}
	})
	return lookup, "SELECT usename, passwd FROM " + fn + "($1)"
}

// TestSecretsAuthQueryAdmitsRoleCreatedAfterStart: with auth_user and
// auth_query, a role created after pgsplit started logs in (pgx and psql)
// and reaches every server by pass-through; a wrong password and an
// unknown user get the same 28P01 and message.
func TestSecretsAuthQueryAdmitsRoleCreatedAfterStart(t *testing.T) {
	lookup, query := lookupSetup(t)
	cfg := secretsConfig(config.AuthSCRAM, config.User{Name: lookup.name, Password: lookup.password})
	cfg.Auth.AuthUser, cfg.Auth.AuthQuery = lookup.name, query
	p := startProxyWith(t, cfg)
	mark := p.watchLogs(t)

	dyn := createRole(t, "sec_dyn", "scram-sha-256")
	wantAllServers(t, serverPorts(t, p, dyn.name, dyn.password))
	res := runPsql(t, p, dyn.name, dyn.password, "", nil, "-c", "SELECT current_user")
	if res.exitCode != 0 || res.stdout != dyn.name+"\n" {
		t.Fatalf("psql: exit %d, stdout %q, stderr %q", res.exitCode, res.stdout, res.stderr)
	}

	refusal := func(user, password string) *pgconn.PgError {
		t.Helper()
		c, err := pgx.Connect(testCtx(t, 10*time.Second), p.dsn(user, password))
		if err == nil {
			closeConn(c)
			t.Fatalf("login as %s accepted", user)
		}
		return wantState(t, err, "28P01", "login as "+user)
	}
	wrong := refusal(dyn.name, "wrong-"+dyn.password)
	nobody := "sec_nobody_" + randomSuffix()
	unknown := refusal(nobody, dyn.password)
	if strings.ReplaceAll(unknown.Message, nobody, "X") != strings.ReplaceAll(wrong.Message, dyn.name, "X") || unknown.Severity != wrong.Severity {
		t.Fatalf("unknown user answered %s %q, wrong password %s %q: they must not differ", unknown.Severity, unknown.Message, wrong.Severity, wrong.Message)
	}
	assertNoSecrets(t, p.logs.since(mark), lookup, dyn)
}

// clientKeyOf computes, from the password, the ClientKey of verifier v:
// HMAC(PBKDF2(password, salt, iterations), "Client Key").
func clientKeyOf(t *testing.T, password, v string) string {
	t.Helper()
	factors := strings.Split(strings.TrimPrefix(v, "SCRAM-SHA-256$"), "$")[0]
	iterText, saltText, _ := strings.Cut(factors, ":")
	iters, err := strconv.Atoi(iterText)
	if err != nil {
		t.Fatal(err)
	}
	salt, err := base64.StdEncoding.DecodeString(saltText)
	if err != nil {
		t.Fatal(err)
	}
	salted, err := pbkdf2.Key(sha256.New, password, salt, iters, sha256.Size)
	if err != nil {
		t.Fatal(err)
	}
	m := hmac.New(sha256.New, salted)
	m.Write([]byte("Client Key"))
	return base64.StdEncoding.EncodeToString(m.Sum(nil))
}

// secretStrings is every form of r's secret that must never be shown: the
// password, what pg_authid stores, its keys in base64, the ClientKey.
func secretStrings(t *testing.T, r secretRole) []string {
	var out []string
	for _, s := range []string{r.password, r.stored} {
		if s != "" {
			out = append(out, s)
		}
	}
	if strings.HasPrefix(r.stored, "SCRAM-SHA-256$") {
		keys := strings.Split(r.stored, "$")[2]
		stored, server, _ := strings.Cut(keys, ":")
		out = append(out, stored, server, clientKeyOf(t, r.password, r.stored))
	} else if len(r.stored) == 35 {
		out = append(out, r.stored[3:])
	}
	return out
}

func assertNoSecrets(t *testing.T, text string, roles ...secretRole) {
	t.Helper()
	for _, r := range roles {
		for _, s := range secretStrings(t, r) {
			if strings.Contains(text, s) {
				t.Errorf("a secret of %s (%.6s…, %d chars) appears in:\n%s", r.name, s, len(s), text)
			}
		}
	}
}

// TestSecretsNeverReachTheLog runs, with pgsplit logging at debug, the
// logins that touch every secret form — a verifier user logging in and
// failing, an auth_query user, an unknown user, a wrong password, an
// upstream login that fails — and the admin console's SHOW CONFIG; then
// it searches the whole log and SHOW CONFIG for the plain passwords, the
// verifiers, their StoredKey and ServerKey, the ClientKeys and the md5
// hashes, and finds none.
func TestSecretsNeverReachTheLog(t *testing.T) {
	lookup, query := lookupSetup(t)
	ver := createRole(t, "sec_log", "scram-sha-256")
	md5r := createRole(t, "sec_logmd5", "md5")
	admin := secretRole{name: "sec_admin", password: "Adm1n-" + randomSuffix()}
	cfg := secretsConfig(config.AuthMD5,
		config.User{Name: lookup.name, Password: lookup.password},
		config.User{Name: ver.name, Password: ver.stored},
		config.User{Name: md5r.name, Password: md5r.stored})
	cfg.Auth.AuthUser, cfg.Auth.AuthQuery = lookup.name, query
	cfg.Admin.Users = []config.User{{Name: admin.name, Password: admin.password}}
	cfg.Routing.HealthCheckInterval = 200 * time.Millisecond // health checks log their failures
	p := startProxyAt(t, cfg, zapcore.DebugLevel)

	dyn := createRole(t, "sec_logdyn", "scram-sha-256")
	wantAllServers(t, serverPorts(t, p, ver.name, ver.password)) // md5 method, verifier: SCRAM
	wantAllServers(t, serverPorts(t, p, dyn.name, dyn.password))
	for _, tc := range []struct{ user, password string }{
		{ver.name, "wrong"}, {dyn.name, "wrong"}, {"sec_nobody", dyn.password}, {md5r.name, md5r.password}, // md5 upstream under scram hba fails
	} {
		if c, err := pgx.Connect(testCtx(t, 10*time.Second), p.dsn(tc.user, tc.password)); err == nil {
			closeConn(c)
			t.Fatalf("login as %s accepted", tc.user)
		}
	}
	ac := connect(t, p.dsn(admin.name, admin.password)+" dbname=pgsplit")
	shown := fmt.Sprint(adminRows(t, ac, "SHOW CONFIG"))
	closeConn(ac)
	if !strings.Contains(shown, "auth.auth_query") || !strings.Contains(shown, ver.name+":****") {
		t.Fatalf("SHOW CONFIG does not list auth.auth_query and the masked users: %s", shown)
	}
	time.Sleep(500 * time.Millisecond) // a few health checks
	log := p.logs.since(0)
	if !strings.Contains(log, `"level":"debug"`) {
		t.Fatal("the log has no debug line: the test does not look at everything")
	}
	roles := []secretRole{lookup, ver, md5r, dyn, admin}
	assertNoSecrets(t, log, roles...)
	assertNoSecrets(t, shown, roles...)
}
