package test

import (
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/pgsplit/pgsplit/config"
	"github.com/pgsplit/pgsplit/router"
)

// TestSafetyNetRerunGetsTheResetAfterFunctions: a function listed
// in routing.read_functions that sets session state and then writes goes
// to a replica, which refuses the write (25006); the safety net runs it
// again on the primary. The primary ran the function too, so its
// connection needs the reset after functions before the next client gets
// it: the rerun path (relayQuery → rerunElsewhere → writeQuery) never
// calls afterStatement on the primary, so userCode stays false there.
func TestSafetyNetRerunGetsTheResetAfterFunctions(t *testing.T) {
	ctx := testCtx(t, 60*time.Second)
	su := superConn(t)
	for _, sql := range []string{
		`CREATE TABLE IF NOT EXISTS rv_writes (v text)`,
		`GRANT ALL ON rv_writes TO ` + appUser,
		`CREATE OR REPLACE FUNCTION rv_tenant_write(v text) RETURNS int LANGUAGE plpgsql VOLATILE AS
			$$BEGIN PERFORM set_config('app.tenant', v, false); INSERT INTO rv_writes VALUES (v); RETURN inet_server_port(); END$$`,
	} {
		if _, err := su.Exec(ctx, sql); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	closeConn(su)
	waitAllCaughtUp(t)
	p := routingProxy(t, func(c *config.Config) {
		c.Servers = c.Servers[:2]
		c.Pool.PoolSize, c.Pool.MaxOverflow = 1, 0
		c.Routing.ReadFunctions = []string{"rv_tenant_write"}
		c.Routing.ReadYourWrites = config.RYWOff
	})
	a := connect(t, p.appDSN(), func(cc *pgx.ConnConfig) { cc.DefaultQueryExecMode = pgx.QueryExecModeSimpleProtocol })
	before := p.srv.Misroutes()
	var port int
	if err := a.QueryRow(ctx, "SELECT rv_tenant_write('tenant-A')").Scan(&port); err != nil {
		t.Fatal(err)
	}
	if port != cluster.Primary.Port || p.srv.Misroutes()-before != 1 {
		t.Fatalf("ran on %d, misroutes %d: the safety net did not run", port, p.srv.Misroutes()-before)
	}
	var pidA int
	if err := a.QueryRow(ctx, "/* pgsplit:primary */ SELECT pg_backend_pid()").Scan(&pidA); err != nil {
		t.Fatal(err)
	}
	closeConn(a)
	b := connect(t, p.appDSN())
	defer closeConn(b)
	var got string
	var pidB int
	if err := b.QueryRow(ctx, "/* pgsplit:primary */ SELECT coalesce(current_setting('app.tenant', true), ''), pg_backend_pid()").Scan(&got, &pidB); err != nil {
		t.Fatal(err)
	}
	if pidB != pidA {
		t.Fatalf("A and B used primary backends %d and %d: with pool_size 1 they must share one", pidA, pidB)
	}
	if got != "" {
		t.Errorf("the next client on the primary sees app.tenant = %q, set by another client's function", got)
	}
}

// TestAuthQueryUnknownDatabasesLeaveNoPools: with databases empty
// and auth.auth_user set, a login of a user not in auth.users to a
// database that does not exist runs the lookup through a pool for
// (auth_user, that database): before any authentication, any name makes
// a pool that dropEmptyPools never sees (it runs only after a login).
func TestAuthQueryUnknownDatabasesLeaveNoPools(t *testing.T) {
	lookup, query := lookupSetup(t)
	cfg := secretsConfig(config.AuthSCRAM, config.User{Name: lookup.name, Password: lookup.password})
	cfg.Auth.AuthUser, cfg.Auth.AuthQuery = lookup.name, query
	cfg.Databases = nil
	p := startProxyWith(t, cfg)
	ctx := testCtx(t, 60*time.Second)
	mustSelectOne(t, connect(t, p.dsn(lookup.name, lookup.password)), "warm-up")
	pools := p.srv.PoolCount()
	var first string
	for i := range 30 {
		dsn := strings.Replace(p.dsn("rv_nobody", "x"), "dbname="+appDatabase, fmt.Sprintf("dbname=rv_nosuchdb_%d", i), 1)
		c, err := pgx.Connect(ctx, dsn)
		if err == nil {
			closeConn(c)
			t.Fatalf("logged in to rv_nosuchdb_%d", i)
		}
		if i == 0 {
			first = err.Error()
		}
	}
	t.Logf("an unauthenticated client of a missing database is told: %s", first)
	if strings.Contains(first, lookup.name) || strings.Contains(first, fmt.Sprint(cluster.Primary.Port)) {
		t.Errorf("an unauthenticated client is told auth_user's name or the primary's address: %s", first)
	}
	if got := p.srv.PoolCount(); got != pools {
		t.Errorf("%d pools after 30 unauthenticated logins to missing databases, %d before", got, pools)
	}
}

// TestChangedVerifierReachesThePools: after ALTER ROLE … PASSWORD
// and a RELOAD with the role's new verifier, the client logs in with the
// new password (checked against the new verifier, its ClientKey kept) but
// the pool made at the first login still holds the old verifier
// (poolLocked copies u.Password once; Reload only calls SetLimits), so
// every new server connection is dialed with the old verifier and its old
// ClientKey, which the server (new salt) refuses. README: "A changed
// verifier (after RELOAD, …) never finds the old key, so the next login
// of that user supplies a new one."
func TestChangedVerifierReachesThePools(t *testing.T) {
	r := createRole(t, "rv_rot", "scram-sha-256")
	cfg := secretsConfig(config.AuthSCRAM, config.User{Name: r.name, Password: r.stored})
	cfg.Routing = baseConfig().Routing // the primary only: one pool
	p := startProxyWith(t, cfg)
	ctx := testCtx(t, 60*time.Second)
	c1 := connect(t, p.dsn(r.name, r.password))
	mustSelectOne(t, c1, "first login")
	closeConn(c1)

	su := superConn(t)
	defer closeConn(su)
	newPassword := "Pw2-" + randomSuffix()
	var v2 string
	for _, sql := range []string{"SET password_encryption = 'scram-sha-256'", fmt.Sprintf("ALTER ROLE %s PASSWORD '%s'", r.name, newPassword)} {
		if _, err := su.Exec(ctx, sql); err != nil {
			t.Fatal(err)
		}
	}
	if err := su.QueryRow(ctx, "SELECT rolpassword FROM pg_authid WHERE rolname = $1", r.name).Scan(&v2); err != nil {
		t.Fatal(err)
	}
	next := *cfg
	next.Auth.Users = []config.User{{Name: r.name, Password: v2}}
	if err := p.srv.Reload(&next); err != nil {
		t.Fatal(err)
	}
	// The pooled connections go: the next client needs a new one. Again
	// until none is left: one opened meanwhile (the catalog read that
	// follows a database's first login may be cut off and done again on a
	// new connection) still holds the old login.
	waitFor(t, 10*time.Second, "backends gone", func() (bool, string) {
		if _, err := su.Exec(ctx, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = $1", r.name); err != nil {
			t.Fatal(err)
		}
		n := backendsOf(t, r.name)
		return n == 0, fmt.Sprint(n)
	})
	c2, err := pgx.Connect(ctx, p.dsn(r.name, newPassword))
	if err != nil {
		t.Fatalf("login with the new password after RELOAD: %v", err)
	}
	defer closeConn(c2)
	var one int
	if err := c2.QueryRow(ctx, "SELECT 1").Scan(&one); err != nil {
		t.Fatalf("first statement after the password change and RELOAD: %v", err)
	}
}

// TestPrepareInsideDoDoesNotReachTheNextClient: a DO block that
// runs EXECUTE 'PREPARE …' leaves a prepared statement on the backend. The
// reset after functions keeps prepared statements on purpose (it is
// DISCARD ALL but DEALLOCATE ALL, so the pool keeps pgsplit's own), so the
// next client on the backend can EXECUTE the other client's statement.
// (A PREPARE named in a statement pins the session; inside DO no statement
// names it.)
func TestPrepareInsideDoDoesNotReachTheNextClient(t *testing.T) {
	p := startProxy(t, func(c *config.Config) { c.Pool.PoolSize, c.Pool.MaxOverflow = 1, 0 })
	ctx := testCtx(t, 30*time.Second)
	a := connect(t, p.appDSN(), func(cc *pgx.ConnConfig) { cc.DefaultQueryExecMode = pgx.QueryExecModeSimpleProtocol })
	if _, err := a.Exec(ctx, `DO $$BEGIN EXECUTE 'PREPARE rv_leak AS SELECT ''secret-of-A''::text'; END$$`); err != nil {
		t.Fatal(err)
	}
	pidA := upstreamPID(t, a)
	closeConn(a)
	b := connect(t, p.appDSN(), func(cc *pgx.ConnConfig) { cc.DefaultQueryExecMode = pgx.QueryExecModeSimpleProtocol })
	defer closeConn(b)
	if pidB := upstreamPID(t, b); pidB != pidA {
		t.Fatalf("A and B used backends %d and %d: with pool_size 1 they must share one", pidA, pidB)
	}
	var got string
	err := b.QueryRow(ctx, "EXECUTE rv_leak").Scan(&got)
	if err == nil {
		t.Fatalf("B executed the statement A prepared inside a DO block and read %q", got)
	}
	wantState(t, err, "26000", "EXECUTE of a statement B never prepared")
}

// TestUnparsedStatementGetsTheResetAfterFunctions: a statement over
// limits.max_parse_depth (1,500 terms: PostgreSQL runs it, the guard keeps
// it from libpg_query) that calls a function setting session state goes
// to the primary unparsed; nothing looks for the function in it, so the
// connection is not reset and the next client on the backend sees the
// state, as it would not for the same call without the terms. An
// advisory lock taken the same way stays held by the pooled backend.
func TestUnparsedStatementGetsTheResetAfterFunctions(t *testing.T) {
	leakSchema(t)
	p := startProxy(t, func(c *config.Config) { c.Pool.PoolSize, c.Pool.MaxOverflow = 1, 0 })
	ctx := testCtx(t, 30*time.Second)
	sql := "SELECT leak_set_tenant('77'), pg_advisory_lock(4343), 1" + strings.Repeat("+1", 1500)
	if !router.NewClassifier(router.Options{}).Classify(sql).Unparsed {
		t.Fatal("the statement is parsed: not the case under test")
	}
	a := connect(t, p.appDSN(), func(cc *pgx.ConnConfig) { cc.DefaultQueryExecMode = pgx.QueryExecModeSimpleProtocol })
	if _, err := a.Exec(ctx, sql); err != nil {
		t.Fatal(err)
	}
	pidA := upstreamPID(t, a)
	closeConn(a)
	b := connect(t, p.appDSN())
	defer closeConn(b)
	var tenant, locks string
	var pidB int
	if err := b.QueryRow(ctx, "SELECT coalesce(current_setting('app.tenant', true), ''), "+
		"(SELECT coalesce(string_agg(objid::text, ','), '') FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()), pg_backend_pid()").Scan(&tenant, &locks, &pidB); err != nil {
		t.Fatal(err)
	}
	if uint32(pidB) != pidA {
		t.Fatalf("A and B used backends %d and %d: with pool_size 1 they must share one", pidA, pidB)
	}
	if tenant != "" || locks != "" {
		t.Errorf("the next client sees app.tenant = %q and advisory locks %q left by another client's unparsed statement", tenant, locks)
	}
}

// scramSalt starts a SCRAM login as user and returns the salt the server
// sends in its first message (s=…), then hangs up.
func scramSalt(t *testing.T, p *testProxy, user string) string {
	t.Helper()
	conn, err := net.DialTimeout("tcp", fmt.Sprintf("%s:%d", p.host, p.port), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	fe := pgproto3.NewFrontend(conn, conn)
	fe.Send(&pgproto3.StartupMessage{ProtocolVersion: pgproto3.ProtocolVersionNumber, Parameters: map[string]string{"user": user, "database": appDatabase}})
	if err := fe.Flush(); err != nil {
		t.Fatal(err)
	}
	msg, err := fe.Receive()
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := msg.(*pgproto3.AuthenticationSASL); !ok {
		t.Fatalf("%s: got %T, want AuthenticationSASL", user, msg)
	}
	fe.Send(&pgproto3.SASLInitialResponse{AuthMechanism: "SCRAM-SHA-256", Data: []byte("n,,n=,r=rvnonce0123456789")})
	if err := fe.Flush(); err != nil {
		t.Fatal(err)
	}
	msg, err = fe.Receive()
	if err != nil {
		t.Fatal(err)
	}
	cont, ok := msg.(*pgproto3.AuthenticationSASLContinue)
	if !ok {
		t.Fatalf("%s: got %T, want AuthenticationSASLContinue", user, msg)
	}
	for _, f := range strings.Split(string(cont.Data), ",") {
		if strings.HasPrefix(f, "s=") {
			return f[2:]
		}
	}
	t.Fatalf("no salt in %q", cont.Data)
	return ""
}

// TestMockSaltSurvivesReload: with auth_query, a user that does not
// exist gets a mock SCRAM exchange whose salt "stays the same per name"
// (README), while a real role's salt is its pg_authid salt. The mock key
// is drawn anew by every newAuthenticator, i.e. at every RELOAD/SIGHUP
// (the certificate rotation the README prescribes), so across a reload
// a made-up name's salt changes and a real role's does not: which names
// exist can be told apart. (PostgreSQL's mock salt comes from the
// cluster's mock_auth_nonce, fixed for the cluster's life.)
func TestMockSaltSurvivesReload(t *testing.T) {
	lookup, query := lookupSetup(t)
	cfg := secretsConfig(config.AuthSCRAM, config.User{Name: lookup.name, Password: lookup.password})
	cfg.Auth.AuthUser, cfg.Auth.AuthQuery = lookup.name, query
	p := startProxyWith(t, cfg)
	real := createRole(t, "rv_real", "scram-sha-256")
	fake := "rv_fake_" + randomSuffix()
	realBefore, fakeBefore := scramSalt(t, p, real.name), scramSalt(t, p, fake)
	if again := scramSalt(t, p, fake); again != fakeBefore {
		t.Fatalf("the mock salt changes from one login to the next: %q, %q", fakeBefore, again)
	}
	next := *cfg
	if err := p.srv.Reload(&next); err != nil {
		t.Fatal(err)
	}
	realAfter, fakeAfter := scramSalt(t, p, real.name), scramSalt(t, p, fake)
	if realAfter != realBefore {
		t.Fatalf("the real role's salt changed: not the case under test")
	}
	if fakeAfter != fakeBefore {
		t.Errorf("after a RELOAD the made-up name's salt changed (%q → %q) and the real role's did not: the mock exchange tells them apart", fakeBefore, fakeAfter)
	}
}
