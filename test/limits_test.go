package test

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgsplit/pgsplit/config"
	"github.com/pgsplit/pgsplit/nodes"
)

// The test cluster runs with max_connections 500 and 3 superuser-reserved
// slots: 497 for everyone else.

// TestLimitsRefused: pools that may open more than a server allows are
// refused at start and on reload, with the formula and its numbers; the
// same configuration with smaller pools is accepted.
func TestLimitsRefused(t *testing.T) {
	cfg := baseConfig()
	cfg.Routing = config.DefaultRouting() // replicas take reads, so they have pools to count
	cfg.Databases = []string{appDatabase, "postgres"}
	cfg.Pool.PoolSize, cfg.Pool.MaxOverflow = 100, 25 // 2 users × 2 databases × 125 + 2 = 502 > 497
	_, err := launchProxy(cfg)
	var le *nodes.LimitError
	if !errors.As(err, &le) {
		t.Fatalf("want a limits error, got %v", err)
	}
	msg := err.Error()
	for _, want := range []string{
		fmt.Sprintf("server %s:%d (primary): 2 user(s) × 2 database(s) (databases key) × (pool_size 100 + max_overflow 25) + 2 pgsplit = 502", cluster.Primary.Host, cluster.Primary.Port),
		"max_connections 500 − superuser_reserved_connections 3 − reserved_connections 0 = 497: exceeds the server's limit by 5",
		fmt.Sprintf("server %s:%d (replica)", cluster.Replicas[0].Host, cluster.Replicas[0].Port),
	} {
		if !strings.Contains(msg, want) {
			t.Errorf("refusal lacks %q:\n%s", want, msg)
		}
	}
	t.Logf("refused: %s", msg)

	// A little less per pool fits: the check is not a blanket no.
	p := startProxy(t, func(c *config.Config) {
		c.Routing = config.DefaultRouting()
		c.Databases = []string{appDatabase, "postgres"}
		c.Pool.PoolSize, c.Pool.MaxOverflow = 100, 23 // 2 × 2 × 123 + 2 = 494 ≤ 497
	})
	checkProxyWorks(t, p, "pools just under the limit")

	// Reload: refused whole, the running pools keep their limits.
	big := *p.cfg
	big.Pool.MaxOverflow = 30
	if err := p.srv.Reload(&big); !errors.As(err, &le) {
		t.Fatalf("reload with pools over the limit: want a limits error, got %v", err)
	}
	small := *p.cfg
	small.Pool.MaxOverflow = 10
	if err := p.srv.Reload(&small); err != nil {
		t.Fatalf("reload within the limits: %v", err)
	}

	// A replica that takes no reads has no pool and is not counted: with
	// reads kept on the primary, the same pools pass on the replicas'
	// account (their line is gone from the refusal).
	cfg.Routing.ReadFrom = config.ReadFromPrimary
	if _, err := launchProxy(cfg); !errors.As(err, &le) || strings.Contains(err.Error(), "(replica)") {
		t.Fatalf("read_from primary: want a refusal naming only the primary, got %v", err)
	}

	// A database not listed in databases is refused at login.
	_, err = pgx.Connect(testCtx(t, 10*time.Second), p.dbDSN("template1"))
	wantState(t, err, "3D000", "database not in databases")
}

// TestCheckCommand runs `pgsplit check` against the cluster: it prints
// each server's numbers and what remains for others, and fails with the
// formula when the pools can exceed a server's limit.
func TestCheckCommand(t *testing.T) {
	bin := pgsplitBinary(t)
	write := func(poolSize, overflow int) string {
		var servers strings.Builder
		fmt.Fprintf(&servers, "  - { host: %s, port: %d, role: primary }\n", cluster.Primary.Host, cluster.Primary.Port)
		for _, r := range cluster.Replicas {
			fmt.Fprintf(&servers, "  - { host: %s, port: %d, role: replica }\n", r.Host, r.Port)
		}
		body := fmt.Sprintf("servers:\n%sdatabases: [app]\nauth:\n  users: [{ name: app, password: app }]\npool: { pool_size: %d, max_overflow: %d }\n",
			servers.String(), poolSize, overflow)
		path := filepath.Join(t.TempDir(), "check.yaml")
		if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	ok := runCmd(t, nil, bin, "check", "--config", write(20, 40))
	if ok.exitCode != 0 {
		t.Fatalf("pgsplit check exited %d:\n%s%s", ok.exitCode, ok.stdout, ok.stderr)
	}
	for _, n := range append(cluster.Replicas, cluster.Primary) {
		want := fmt.Sprintf("server %s:%d", n.Host, n.Port)
		if !strings.Contains(ok.stdout, want) {
			t.Errorf("output lacks %q", want)
		}
	}
	for _, want := range []string{
		"1 user(s) × 1 database(s) (databases key) × (pool_size 20 + max_overflow 40) + 2 pgsplit = 62",
		"= 497: 435 remain for other clients", "connection limits: ok",
	} {
		if !strings.Contains(ok.stdout, want) {
			t.Errorf("output lacks %q:\n%s", want, ok.stdout)
		}
	}
	t.Logf("pgsplit check:\n%s", ok.stdout)

	bad := runCmd(t, nil, bin, "check", "--config", write(400, 100))
	if bad.exitCode == 0 || !strings.Contains(bad.stderr, "exceeds the server's limit by 5") ||
		!strings.Contains(bad.stderr, "(pool_size 400 + max_overflow 100) + 2 pgsplit = 502") {
		t.Fatalf("pgsplit check with pools over the limit: exit %d\n%s%s", bad.exitCode, bad.stdout, bad.stderr)
	}
}
