package test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/pgsplit/pgsplit/config"
	"github.com/pgsplit/pgsplit/internal/pgcluster"
	"github.com/pgsplit/pgsplit/internal/testcert"
)

// tlsBed is one test's certificates, in a folder of its own: a CA, a
// server certificate it signed for 127.0.0.1 and localhost (ca.crt,
// server.crt, server.key), and client certificates on demand.
type tlsBed struct {
	dir string
	testcert.Files
}

func newTLSBed(t *testing.T) *tlsBed {
	t.Helper()
	dir := t.TempDir()
	f, err := testcert.WriteServer(dir, "pgsplit test CA "+t.Name(), "127.0.0.1", "localhost")
	if err != nil {
		t.Fatal(err)
	}
	return &tlsBed{dir: dir, Files: f}
}

// clientCert writes a client certificate with subject CN cn, signed by the
// bed's CA, and returns its files.
func (b *tlsBed) clientCert(t *testing.T, cn string) (cert, key string) {
	t.Helper()
	pair, err := b.CA.Client(cn)
	if err == nil {
		cert, key, err = pair.Write(b.dir, "client-"+cn)
	}
	if err != nil {
		t.Fatal(err)
	}
	return cert, key
}

// tls is the bed's certificate as pgsplit's tls section with mode.
func (b *tlsBed) tls(mode string) config.TLS {
	return config.TLS{Mode: mode, CertFile: b.CertFile, KeyFile: b.KeyFile}
}

// verifyFull are the connection settings of a client that checks pgsplit's
// certificate against the bed's CA.
func (b *tlsBed) verifyFull(extra ...string) []string {
	return append([]string{"sslmode=verify-full", "sslrootcert=" + b.CAFile}, extra...)
}

// roots is the bed's CA as a pool, for a crypto/tls client.
func (b *tlsBed) roots() *x509.CertPool {
	p := x509.NewCertPool()
	p.AppendCertsFromPEM(b.CA.PEM)
	return p
}

// tlsProxy starts pgsplit with the bed's certificate under tls.mode mode
// and an admin user, then mutate.
func tlsProxy(t *testing.T, b *tlsBed, mode string, mutate func(*config.Config)) *testProxy {
	return startProxy(t, func(c *config.Config) {
		c.TLS = b.tls(mode)
		c.Admin.Users = []config.User{{Name: adminUser, Password: adminPassword}}
		if mutate != nil {
			mutate(c)
		}
	})
}

// connectErr opens a connection that is expected to fail and returns the
// error (closing the connection if it did not fail).
func connectErr(t *testing.T, dsn string) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	c, err := pgx.Connect(ctx, dsn)
	if err == nil {
		closeConn(c)
	}
	return err
}

// tlsColumn is the tls column of SHOW CLIENTS for the client with
// application_name app.
func tlsColumn(t *testing.T, p *testProxy, app string) string {
	t.Helper()
	admin := connect(t, p.adminDSN()+" sslmode=require")
	row := adminRow(t, admin, "SHOW CLIENTS", "application_name", app)
	if row == nil {
		t.Fatalf("SHOW CLIENTS: no client %q", app)
	}
	s, _ := row["tls"].(string)
	return s
}

// TestTLSRequireServesPsqlAndVerifyingPgx: under tls.mode require, psql
// (sslmode=require) and pgx (sslmode=verify-full against the test CA) log
// in and query, pgsplit shows them as TLS in SHOW CLIENTS and its log, and
// a cancel over TLS (pgx encrypts its CancelRequest) reaches the server.
func TestTLSRequireServesPsqlAndVerifyingPgx(t *testing.T) {
	b := newTLSBed(t)
	p := tlsProxy(t, b, config.TLSRequire, func(c *config.Config) { c.Pool.Mode = config.ModeSession })
	mark := p.watchLogs(t)

	res := runPsql(t, p, appUser, appPassword, "", []string{"PGSSLMODE=require", "PGAPPNAME=tls-psql"}, "-c", "SELECT 40 + 2")
	if res.exitCode != 0 || res.stdout != "42\n" {
		t.Fatalf("psql sslmode=require: exit %d, stdout %q, stderr %q", res.exitCode, res.stdout, res.stderr)
	}
	e := p.logs.waitEntry(t, mark, 3*time.Second, "psql's client connected line", func(e logEntry) bool {
		return e.str("msg") == "client connected" && e.str("application_name") == "tls-psql"
	})
	if !strings.HasPrefix(e.str("tls"), "TLSv1.") {
		t.Fatalf("psql's login logged without its TLS: %v", e)
	}

	c := connect(t, p.appDSN(b.verifyFull("application_name=tls-pgx")...), withCancelRequests)
	mustSelectOne(t, c, "pgx verify-full")
	if got := tlsColumn(t, p, "tls-pgx"); !strings.HasPrefix(got, "TLSv1.3/") {
		t.Fatalf("SHOW CLIENTS tls = %q, want TLSv1.3/…", got)
	}
	cancelSleep(t, c, superConn(t))

	// The client did verify what pgsplit showed: another CA's root fails.
	other := newTLSBed(t)
	if err := connectErr(t, p.appDSN(other.verifyFull()...)); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("verify-full against another CA: want a certificate error, got %v", err)
	}
}

// cancelSleep runs pg_sleep(30) on c and cancels it through pgsplit with
// PgConn.CancelRequest once su (on the server that runs it) sees it
// sleeping: it must end with 57014 well before the 30 s.
func cancelSleep(t *testing.T, c *pgx.Conn, su *pgx.Conn) {
	t.Helper()
	pid := upstreamPID(t, c)
	cancelled := make(chan error, 1)
	go func() {
		deadline := time.Now().Add(10 * time.Second)
		for time.Now().Before(deadline) && !isSleeping(su, pid) {
			time.Sleep(10 * time.Millisecond)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		cancelled <- c.PgConn().CancelRequest(ctx)
	}()
	began := time.Now()
	_, err := c.Exec(testCtx(t, 20*time.Second), "SELECT pg_sleep(30)")
	if cerr := <-cancelled; cerr != nil {
		t.Fatalf("CancelRequest: %v", cerr)
	}
	if sqlState(err) != "57014" || time.Since(began) > 15*time.Second {
		t.Fatalf("pg_sleep(30) cancelled through pgsplit: want 57014 at once, got %v after %s", err, time.Since(began))
	}
}

// TestTLSRequireRefusesPlaintextLogin: tls.mode require answers a
// plaintext login with FATAL 28000 saying TLS is required (pgx and psql
// with sslmode=disable), while allow lets the same client in.
func TestTLSRequireRefusesPlaintextLogin(t *testing.T) {
	b := newTLSBed(t)
	p := tlsProxy(t, b, config.TLSRequire, nil)
	p.watchLogs(t)
	err := connectErr(t, p.appDSN())
	if pe := wantState(t, err, "28000", "plaintext login under require"); !strings.Contains(pe.Message, "TLS is required") || pe.Severity != "FATAL" {
		t.Fatalf("want FATAL ... TLS is required, got %s %q", pe.Severity, pe.Message)
	}
	res := runPsql(t, p, appUser, appPassword, "", []string{"PGSSLMODE=disable"}, "-c", "SELECT 1")
	if res.exitCode != 2 || !strings.Contains(res.stderr, "TLS is required") {
		t.Fatalf("psql sslmode=disable: exit %d, stderr %q", res.exitCode, res.stderr)
	}

	allow := tlsProxy(t, b, config.TLSAllow, nil)
	mustSelectOne(t, connect(t, allow.appDSN()), "plaintext under allow")
	mustSelectOne(t, connect(t, allow.appDSN(b.verifyFull()...)), "verify-full under allow")
}

// TestTLSDirectNegotiationNeedsALPN: PostgreSQL 17's direct TLS (the client
// opens with a ClientHello, ALPN postgresql) works from a crypto/tls client
// speaking pgproto3 and from pgx's sslnegotiation=direct; a direct TLS
// client that does not offer ALPN postgresql is refused in the handshake.
func TestTLSDirectNegotiationNeedsALPN(t *testing.T) {
	b := newTLSBed(t)
	// trust: the hand-written client below needs no SCRAM.
	p := tlsProxy(t, b, config.TLSRequire, func(c *config.Config) { c.Auth.Method = config.AuthTrust })
	p.watchLogs(t)
	dial := func(alpn ...string) (*tls.Conn, error) {
		d := &tls.Dialer{NetDialer: &net.Dialer{Timeout: 5 * time.Second},
			Config: &tls.Config{RootCAs: b.roots(), ServerName: "localhost", NextProtos: alpn, MinVersion: tls.VersionTLS12}}
		nc, err := d.DialContext(testCtx(t, 10*time.Second), "tcp", p.addr())
		if err != nil {
			return nil, err
		}
		return nc.(*tls.Conn), nil
	}

	t.Run("crypto/tls with ALPN postgresql", func(t *testing.T) {
		tc, err := dial("postgresql")
		if err != nil {
			t.Fatalf("direct TLS handshake: %v", err)
		}
		defer tc.Close()
		_ = tc.SetDeadline(time.Now().Add(10 * time.Second))
		if got := tc.ConnectionState().NegotiatedProtocol; got != "postgresql" {
			t.Fatalf("ALPN %q", got)
		}
		fe := pgproto3.NewFrontend(tc, tc)
		fe.Send(&pgproto3.StartupMessage{ProtocolVersion: pgproto3.ProtocolVersionNumber,
			Parameters: map[string]string{"user": appUser, "database": appDatabase}})
		fe.Send(&pgproto3.Query{String: "SELECT 'direct'"})
		if err := fe.Flush(); err != nil {
			t.Fatal(err)
		}
		var authOK bool
		var rows []string
		for ready := 0; ready < 2; {
			msg, err := fe.Receive()
			if err != nil {
				t.Fatalf("receive: %v", err)
			}
			switch m := msg.(type) {
			case *pgproto3.AuthenticationOk:
				authOK = true
			case *pgproto3.DataRow:
				rows = append(rows, string(m.Values[0]))
			case *pgproto3.ErrorResponse:
				t.Fatalf("server error: %s %s", m.Code, m.Message)
			case *pgproto3.ReadyForQuery:
				ready++
			}
		}
		if !authOK || len(rows) != 1 || rows[0] != "direct" {
			t.Fatalf("auth ok %v, rows %q", authOK, rows)
		}
	})
	t.Run("pgx sslnegotiation=direct", func(t *testing.T) {
		mustSelectOne(t, connect(t, p.appDSN(b.verifyFull("sslnegotiation=direct")...)), "pgx direct TLS")
	})
	for _, alpn := range [][]string{nil, {"http/1.1"}} {
		t.Run(fmt.Sprintf("crypto/tls with ALPN %q refused", alpn), func(t *testing.T) {
			tc, err := dial(alpn...)
			if err == nil {
				// TLS 1.3: a client may see the server's alert only on
				// its first read.
				_ = tc.SetDeadline(time.Now().Add(5 * time.Second))
				_, err = tc.Read(make([]byte, 1))
				tc.Close()
			}
			if err == nil || !strings.Contains(err.Error(), "tls") {
				t.Fatalf("want a TLS alert, got %v", err)
			}
		})
	}
}

// TestTLSClientCertificateAuth: with auth.method cert and
// tls.client_ca_file, a certificate whose CN is the user logs in; one whose
// CN is another user, and no certificate at all, get FATAL 28000.
func TestTLSClientCertificateAuth(t *testing.T) {
	b := newTLSBed(t)
	p := tlsProxy(t, b, config.TLSRequire, func(c *config.Config) {
		c.Auth.Method = config.AuthCert
		c.TLS.ClientCAFile = b.CAFile
	})
	mark := p.watchLogs(t)
	appCert, appKey := b.clientCert(t, appUser)
	auditorCert, auditorKey := b.clientCert(t, auditorUser)

	// No password in these: the certificate is the proof.
	dsn := func(user string, extra ...string) string {
		return fmt.Sprintf("host=%s port=%d user=%s dbname=%s connect_timeout=10 %s", p.host, p.port, user, appDatabase,
			strings.Join(append(b.verifyFull(), extra...), " "))
	}
	c := connect(t, dsn(appUser, "sslcert="+appCert, "sslkey="+appKey))
	var who string
	if err := c.QueryRow(testCtx(t, 10*time.Second), "SELECT current_user").Scan(&who); err != nil || who != appUser {
		t.Fatalf("current_user %q, %v", who, err)
	}

	err := connectErr(t, dsn(appUser, "sslcert="+auditorCert, "sslkey="+auditorKey))
	if pe := wantState(t, err, "28000", "another user's certificate"); !strings.Contains(pe.Message, `certificate authentication failed for user "app"`) {
		t.Fatalf("message %q", pe.Message)
	}
	p.logs.waitEntry(t, mark, 3*time.Second, "the CN in the log", func(e logEntry) bool {
		return e.str("msg") == "authentication failed" && strings.Contains(e.str("detail"), `"auditor"`)
	})

	err = connectErr(t, dsn(appUser))
	if pe := wantState(t, err, "28000", "no certificate"); pe.Message != "connection requires a valid client certificate" {
		t.Fatalf("message %q", pe.Message)
	}
}

// TestTLSReloadSwapsCertificate: after the certificate files are replaced
// by one from a second CA and Reload runs, new connections verify against
// the second CA (and not the first); a reload with a broken certificate
// file is refused naming the key, and the running certificate stays.
func TestTLSReloadSwapsCertificate(t *testing.T) {
	first := newTLSBed(t)
	p := tlsProxy(t, first, config.TLSRequire, nil)
	p.watchLogs(t)
	mustSelectOne(t, connect(t, p.appDSN(first.verifyFull()...)), "first CA before the reload")

	second := newTLSBed(t)
	for src, dst := range map[string]string{second.CertFile: first.CertFile, second.KeyFile: first.KeyFile} {
		body, err := os.ReadFile(src)
		if err == nil {
			err = os.WriteFile(dst, body, 0o600)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	reload := func() error {
		cfg := *p.cfg
		return p.srv.Reload(&cfg)
	}
	if err := reload(); err != nil {
		t.Fatalf("Reload: %v", err)
	}
	mustSelectOne(t, connect(t, p.appDSN(second.verifyFull()...)), "second CA after the reload")
	if err := connectErr(t, p.appDSN(first.verifyFull()...)); err == nil {
		t.Fatal("the first CA still verifies pgsplit's certificate after the reload")
	}

	if err := os.WriteFile(first.CertFile, []byte("not a certificate\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := reload(); err == nil || !strings.Contains(err.Error(), "tls.cert_file") {
		t.Fatalf("reload with a broken certificate: want an error naming tls.cert_file, got %v", err)
	}
	mustSelectOne(t, connect(t, p.appDSN(second.verifyFull()...)), "second CA after the refused reload")
}

// TestServerTLS runs pgsplit against a server of its own that has ssl on
// and accepts the app user only over TLS (hostssl): server_tls.mode require,
// verify-full (with the CA) and the default (prefer) log in, and the
// server's pg_stat_ssl shows pgsplit's backends encrypted; disable is
// refused by the server; verify-full against another CA is refused by
// pgsplit; a cancel reaches the server (plaintext CancelRequest).
func TestServerTLS(t *testing.T) {
	b := newTLSBed(t)
	pair, err := b.CA.Server("127.0.0.1", "localhost")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	sc, err := pgcluster.Start(ctx, pgcluster.Options{TLS: &pgcluster.TLS{CertPEM: pair.CertPEM, KeyPEM: pair.KeyPEM}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := sc.Stop(); err != nil {
			t.Error(err)
		}
	})
	su := connect(t, sc.SuperuserDSN(sc.Primary, "app"))
	// The server's hba really refuses a plaintext app login.
	if err := connectErr(t, sc.AppDSN(sc.Primary)); sqlState(err) != "28000" {
		t.Fatalf("plaintext app login straight to the server: want 28000, got %v", err)
	}

	// proxyFor starts pgsplit in front of the server with st; the cases
	// that must fail have no health checks, which would take the primary
	// out (57P03) before the login shows the real refusal.
	proxyFor := func(t *testing.T, st config.ServerTLS, healthChecks bool) *testProxy {
		cfg := baseConfig()
		cfg.Servers = []config.Server{{Host: sc.Primary.Host, Port: sc.Primary.Port, Role: config.RolePrimary}}
		cfg.Auth.Users = []config.User{{Name: "app", Password: "app"}}
		cfg.Pool.Mode = config.ModeSession
		cfg.Admin.Users = []config.User{{Name: adminUser, Password: adminPassword}}
		if healthChecks {
			cfg.Routing.HealthCheckInterval = 200 * time.Millisecond // its connection uses server_tls too
		}
		cfg.ServerTLS = st
		return startProxyWith(t, cfg)
	}
	// encrypted checks that every app backend on the server (pooled and
	// the health check's) is on TLS.
	encrypted := func(t *testing.T) {
		var all bool
		var n, health int
		err := su.QueryRow(testCtx(t, 10*time.Second), `SELECT coalesce(bool_and(s.ssl), false), count(*),
			count(*) FILTER (WHERE a.application_name = 'pgsplit health check')
			FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid) WHERE a.usename = 'app'`).Scan(&all, &n, &health)
		if err != nil || !all || n < 2 || health == 0 {
			t.Fatalf("pg_stat_ssl of pgsplit's backends: all ssl %v, %d backends (%d health check), %v", all, n, health, err)
		}
	}
	for _, tc := range []struct {
		name string
		st   config.ServerTLS
	}{
		{"require", config.ServerTLS{Mode: config.SSLRequire}},
		{"verify-full", config.ServerTLS{Mode: config.SSLVerifyFull, CAFile: b.CAFile}},
		{"default (prefer)", config.ServerTLS{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := proxyFor(t, tc.st, true)
			p.watchLogs(t)
			c := connect(t, p.appDSN())
			mustSelectOne(t, c, "through pgsplit over server TLS")
			encrypted(t)
			servers := adminRows(t, connect(t, p.adminDSN()), "SHOW SERVERS")
			for _, r := range servers {
				if tls, _ := r["tls"].(string); !strings.HasPrefix(tls, "TLSv1.") {
					t.Fatalf("SHOW SERVERS row without its TLS: %v", r)
				}
			}
			if len(servers) == 0 {
				t.Fatal("SHOW SERVERS: no server connection")
			}
			if tc.st.Mode == config.SSLVerifyFull {
				cancelSleep(t, c, su)
			}
		})
	}
	t.Run("disable is refused by the server", func(t *testing.T) {
		p := proxyFor(t, config.ServerTLS{Mode: config.SSLDisable}, false)
		p.watchLogs(t)
		err := connectErr(t, p.appDSN())
		if pe := wantState(t, err, "28000", "login with server_tls.mode disable"); !strings.Contains(pe.Message, "no encryption") {
			t.Fatalf("want the server's hba refusal (no encryption), got %q", pe.Message)
		}
	})
	t.Run("verify-full against another CA is refused", func(t *testing.T) {
		other := newTLSBed(t)
		p := proxyFor(t, config.ServerTLS{Mode: config.SSLVerifyFull, CAFile: other.CAFile}, false)
		p.watchLogs(t)
		if err := connectErr(t, p.appDSN()); err == nil || !strings.Contains(err.Error(), "certificate") {
			t.Fatalf("want a certificate error, got %v", err)
		}
	})
}
