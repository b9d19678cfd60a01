package test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgsplit/pgsplit/config"
)

// TestAuthentication logs in with right and wrong passwords and unknown
// users for each auth.method: a wrong password gets 28P01, an unknown user
// 28000; each refusal is logged with the client's address, user and
// database; and no password ever appears in pgsplit's log.
func TestAuthentication(t *testing.T) {
	proxies := map[string]*testProxy{
		config.AuthSCRAM: shared,
		config.AuthMD5:   startProxy(t, func(c *config.Config) { c.Auth.Method = config.AuthMD5 }),
		config.AuthTrust: startProxy(t, func(c *config.Config) { c.Auth.Method = config.AuthTrust }),
	}
	marks := map[string]int{}
	for m, p := range proxies {
		marks[m] = p.watchLogs(t)
	}
	var rnd [6]byte
	_, _ = rand.Read(rnd[:])
	wrong := "Wr0ng-pw-" + hex.EncodeToString(rnd[:])

	cases := []struct {
		method, user, password string
		code                   string // "" = login works
	}{
		{config.AuthSCRAM, appUser, wrong, "28P01"},
		{config.AuthSCRAM, "nobody", wrong, "28000"},
		{config.AuthSCRAM, auditorUser, auditorPassword, ""},
		{config.AuthSCRAM, appUser, "", "28P01"},
		{config.AuthMD5, appUser, wrong, "28P01"},
		{config.AuthMD5, "nobody", wrong, "28000"},
		{config.AuthMD5, auditorUser, auditorPassword, ""},
		{config.AuthTrust, appUser, wrong, ""}, // trust: any password
		{config.AuthTrust, "nobody", wrong, "28000"},
	}
	for _, tc := range cases {
		name := tc.method + "/" + tc.user + "/"
		switch {
		case tc.code == "":
			name += "accepted"
		case tc.user == "nobody":
			name += "unknown user"
		case tc.password == "":
			name += "empty password"
		default:
			name += "wrong password"
		}
		t.Run(name, func(t *testing.T) {
			p := proxies[tc.method]
			mark := p.logs.mark()
			var mu sync.Mutex
			var local string
			cfg := connectConfig(t, p.dsn(tc.user, tc.password), func(cfg *pgx.ConnConfig) {
				dial := cfg.DialFunc
				cfg.DialFunc = func(ctx context.Context, network, addr string) (net.Conn, error) {
					nc, err := dial(ctx, network, addr)
					if err == nil {
						mu.Lock()
						local = nc.LocalAddr().String()
						mu.Unlock()
					}
					return nc, err
				}
			})
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			c, err := pgx.ConnectConfig(ctx, cfg)
			if tc.code == "" {
				if err != nil {
					t.Fatalf("login refused: %v", err)
				}
				defer closeConn(c)
				var user string
				if err := c.QueryRow(ctx, "SELECT current_user").Scan(&user); err != nil || user != tc.user {
					t.Fatalf("current_user = %q, %v; want %q", user, err, tc.user)
				}
				return
			}
			if err == nil {
				closeConn(c)
				t.Fatalf("login as %q with a wrong password was accepted", tc.user)
			}
			wantState(t, err, tc.code, "login")
			mu.Lock()
			client := local
			mu.Unlock()
			p.logs.waitEntry(t, mark, 3*time.Second, "authentication failed for "+client, func(e logEntry) bool {
				return e.str("msg") == "authentication failed" && e.str("client") == client
			})
			for _, e := range p.logs.entries(mark) {
				if e.str("msg") != "authentication failed" || e.str("client") != client {
					continue
				}
				if e.str("user") != tc.user || e.str("database") != appDatabase || e.str("sqlstate") != tc.code || e.str("level") != "warn" {
					t.Fatalf("auth failure log line %v: want level warn, user %q, database %q, sqlstate %s", e, tc.user, appDatabase, tc.code)
				}
			}
		})
	}

	t.Run("psql wrong password", func(t *testing.T) {
		res := runPsql(t, shared, appUser, wrong, "", nil, "-c", "SELECT 1")
		if res.exitCode != 2 || !strings.Contains(res.stderr, `password authentication failed for user "app"`) {
			t.Fatalf("psql: exit %d, stderr %q; want exit 2 and the password failure", res.exitCode, res.stderr)
		}
	})
	t.Run("psql right password", func(t *testing.T) {
		res := runPsql(t, shared, auditorUser, auditorPassword, "", nil, "-c", "SELECT current_user")
		if res.exitCode != 0 || res.stdout != auditorUser+"\n" {
			t.Fatalf("psql: exit %d, stdout %q, stderr %q", res.exitCode, res.stdout, res.stderr)
		}
	})

	for m, p := range proxies {
		log := p.logs.since(marks[m])
		for _, secret := range []string{wrong, auditorPassword} {
			if strings.Contains(log, secret) {
				t.Errorf("%s proxy: a password (%q) appears in the log:\n%s", m, secret, log)
			}
		}
	}
}
