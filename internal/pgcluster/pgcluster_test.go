package pgcluster

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// testLog forwards progress lines to t.Log.
type testLog struct{ t *testing.T }

func (w testLog) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func TestFreePort(t *testing.T) {
	p, err := FreePort()
	if err != nil {
		t.Fatal(err)
	}
	if p <= 0 || p > 65535 {
		t.Fatalf("FreePort() = %d", p)
	}
	l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(p)))
	if err != nil {
		t.Fatalf("port %d from FreePort is not usable: %v", p, err)
	}
	l.Close()
}

func TestDSNs(t *testing.T) {
	opts, err := withDefaults(Options{})
	if err != nil {
		t.Fatal(err)
	}
	c := &Cluster{opts: opts}
	n := Node{Name: "primary", Host: "127.0.0.1", Port: 5433}
	if got, want := c.SuperuserDSN(n, ""), "postgres://postgres@127.0.0.1:5433/postgres?sslmode=disable"; got != want {
		t.Errorf("SuperuserDSN = %q, want %q", got, want)
	}
	if got, want := c.SuperuserDSN(n, "app"), "postgres://postgres@127.0.0.1:5433/app?sslmode=disable"; got != want {
		t.Errorf("SuperuserDSN(app) = %q, want %q", got, want)
	}
	if got, want := c.AppDSN(n), "postgres://app:app@127.0.0.1:5433/app?sslmode=disable"; got != want {
		t.Errorf("AppDSN = %q, want %q", got, want)
	}
	c.opts.AppUser, c.opts.AppPassword = "bob", "p@ss:w/rd"
	if got, want := c.AppDSN(n), "postgres://bob:p%40ss%3Aw%2Frd@127.0.0.1:5433/bob?sslmode=disable"; got != want {
		t.Errorf("AppDSN with special password = %q, want %q", got, want)
	}
}

func TestOptionsValidation(t *testing.T) {
	for _, o := range []Options{
		{Replicas: -1},
		{AppAuth: "password"},
		{AppUser: "postgres"},
		{AppUser: `a"b`},
		{MaxConnections: 2},
	} {
		if _, err := Start(context.Background(), o); err == nil {
			t.Errorf("Start(%+v) succeeded, want a validation error", o)
		}
	}
}

func TestQuoting(t *testing.T) {
	if got := quoteIdent(`a"b`); got != `"a""b"` {
		t.Errorf("quoteIdent = %s", got)
	}
	if got := quoteLiteral(`it's`); got != `'it''s'` {
		t.Errorf("quoteLiteral = %s", got)
	}
	if got := connQuote(`a'b\c`); got != `'a\'b\\c'` {
		t.Errorf("connQuote = %s", got)
	}
}

func TestCluster(t *testing.T) {
	if _, err := FindBinDir(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	began := time.Now()
	c, err := Start(ctx, Options{Replicas: 1, Log: testLog{t}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := c.Stop(); err != nil {
			t.Error(err)
		}
	})
	t.Logf("Start took %v", time.Since(began))

	if len(c.Replicas) != 1 {
		t.Fatalf("got %d replicas, want 1", len(c.Replicas))
	}
	primary, replica := c.Primary, c.Replicas[0]
	if primary.Name != "primary" || replica.Name != "replica1" {
		t.Errorf("node names = %q, %q", primary.Name, replica.Name)
	}
	if primary.Host != "127.0.0.1" || replica.Host != "127.0.0.1" || primary.Port == replica.Port {
		t.Errorf("bad addresses: %+v %+v", primary, replica)
	}

	check := func(n Node, sql, want string) {
		t.Helper()
		got, err := c.Psql(ctx, n, "", sql)
		if err != nil {
			t.Fatal(err)
		}
		if got != want {
			t.Fatalf("%s on %s = %q, want %q", sql, n.Name, got, want)
		}
	}
	check(primary, "SELECT pg_is_in_recovery()", "f")
	check(replica, "SELECT pg_is_in_recovery()", "t")
	check(primary, "SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'", "1")
	check(primary, "SHOW listen_addresses", "127.0.0.1")

	// The application role owns its database and can log in with its password
	// (scram-sha-256) on both nodes.
	for _, n := range []Node{primary, replica} {
		got, err := c.Psql(ctx, n, "app", "SELECT pg_catalog.pg_get_userbyid(datdba) FROM pg_database WHERE datname = current_database()")
		if err != nil || got != "app" {
			t.Fatalf("owner of database app on %s = %q, %v", n.Name, got, err)
		}
		out, err := c.run(ctx, false, c.psqlPath, "-X", "-A", "-t", "-c", "SELECT current_user", c.AppDSN(n))
		if err != nil || out != "app" {
			t.Fatalf("login with AppDSN on %s: %q, %v", n.Name, out, err)
		}
	}
	if _, err := c.run(ctx, false, c.psqlPath, "-X", "-w", "-c", "SELECT 1",
		"postgres://app:wrong@127.0.0.1:"+strconv.Itoa(primary.Port)+"/app?sslmode=disable"); err == nil {
		t.Fatal("login with a wrong password succeeded")
	}

	if _, err := c.Psql(ctx, primary, "app", "CREATE TABLE replicated (id int); INSERT INTO replicated VALUES (42)"); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		got, err := c.Psql(ctx, replica, "app", "SELECT coalesce(sum(id), 0) FROM replicated")
		if err == nil && got == "42" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("table created on the primary not visible on the replica after 10s: %q, %v", got, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if _, err := c.Psql(ctx, replica, "app", "CREATE TABLE nope (id int)"); err == nil {
		t.Fatal("write on the replica succeeded")
	}

	dir := c.Dir
	if err := c.Stop(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Stop left %s behind (stat: %v)", dir, err)
	}
	for _, n := range []Node{primary, replica} {
		conn, err := net.DialTimeout("tcp", net.JoinHostPort(n.Host, strconv.Itoa(n.Port)), time.Second)
		if err == nil {
			conn.Close()
			t.Errorf("%s still answers on port %d after Stop", n.Name, n.Port)
		}
	}
	if err := c.Stop(); err != nil {
		t.Errorf("second Stop: %v", err)
	}
}

// TestStartCancelled checks that a failed Start cleans up after itself.
func TestStartCancelled(t *testing.T) {
	if _, err := FindBinDir(); err != nil {
		t.Fatal(err)
	}
	// A caller-supplied Dir: when running as root the OS user postgres must
	// be able to reach it, so open up t.TempDir and its (private) parent.
	parent := t.TempDir()
	for _, d := range []string{parent, filepath.Dir(parent)} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	// Cancel once the primary is up: Start must fail and leave no server
	// behind.
	lw := &cancelOn{substr: "creating role", cancel: cancel}
	c, err := Start(ctx, Options{Dir: parent, Replicas: 1, Log: lw})
	if err == nil {
		c.Stop()
		t.Fatal("Start succeeded despite cancellation")
	}
	t.Logf("Start failed as expected: %v", err)
	if _, err := os.Stat(filepath.Join(parent, "primary", "PG_VERSION")); err != nil {
		t.Errorf("primary was never initialized, so the test proves nothing: %v", err)
	}
	if _, err := os.Stat(filepath.Join(parent, "primary", "postmaster.pid")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("primary seems to be still running after failed Start (stat postmaster.pid: %v)", err)
	}
}

// cancelOn cancels a context once a progress line contains substr.
type cancelOn struct {
	substr string
	cancel context.CancelFunc
}

func (w *cancelOn) Write(p []byte) (int, error) {
	if strings.Contains(string(p), w.substr) {
		w.cancel()
	}
	return len(p), nil
}

func TestFindBinDirEnv(t *testing.T) {
	fake := t.TempDir()
	t.Setenv("PGSPLIT_PG_BINDIR", fake)
	if _, err := FindBinDir(); err == nil || !strings.Contains(err.Error(), "PGSPLIT_PG_BINDIR") {
		t.Fatalf("FindBinDir with an empty PGSPLIT_PG_BINDIR: %v", err)
	}
	for _, name := range requiredBinaries() {
		if err := os.WriteFile(filepath.Join(fake, name), []byte("#!/bin/sh\n"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if got, err := FindBinDir(); err != nil || got != fake {
		t.Fatalf("FindBinDir = %q, %v; want %q", got, err, fake)
	}
}

func TestNewestDebianBinDir(t *testing.T) {
	root := t.TempDir()
	for _, v := range []string{"9.6", "15", "10", "16"} {
		dir := filepath.Join(root, v, "bin")
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		if v == "16" {
			continue // incomplete install: must be skipped
		}
		for _, name := range requiredBinaries() {
			if err := os.WriteFile(filepath.Join(dir, name), nil, 0o755); err != nil {
				t.Fatal(err)
			}
		}
	}
	if got, want := newestDebianBinDir(root), filepath.Join(root, "15", "bin"); got != want {
		t.Fatalf("newestDebianBinDir = %q, want %q", got, want)
	}
}
