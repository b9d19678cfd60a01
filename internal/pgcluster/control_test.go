package pgcluster

import (
	"context"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestNodeControl crashes and restarts a standby, then fails the primary
// over: stop it, promote one standby, make the other follow it, and check
// that a write on the new primary reaches the standby that follows.
func TestNodeControl(t *testing.T) {
	if _, err := FindBinDir(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c, err := Start(ctx, Options{Replicas: 2, Log: testLog{t}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := c.Stop(); err != nil {
			t.Error(err)
		}
	})
	primary, r1, r2 := c.Primary, c.Replicas[0], c.Replicas[1]
	query := func(n Node, sql string) string {
		t.Helper()
		out, err := c.Psql(ctx, n, "", sql)
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	answers := func(n Node) bool {
		conn, err := net.DialTimeout("tcp", net.JoinHostPort(n.Host, strconv.Itoa(n.Port)), time.Second)
		if err == nil {
			conn.Close()
		}
		return err == nil
	}

	if err := c.StopNode(ctx, r1, "slow"); err == nil || !strings.Contains(err.Error(), "mode") {
		t.Errorf("StopNode with mode slow: %v, want an error about the mode", err)
	}

	// A crashed standby comes back as a standby and streams again.
	if err := c.StopNode(ctx, r1, "immediate"); err != nil {
		t.Fatal(err)
	}
	if answers(r1) {
		t.Fatalf("%s still answers on port %d after StopNode", r1.Name, r1.Port)
	}
	if err := c.StopNode(ctx, r1, "fast"); err == nil {
		t.Error("StopNode of a stopped node succeeded")
	}
	if err := c.StartNode(ctx, r1); err != nil {
		t.Fatal(err)
	}
	if err := c.StartNode(ctx, r1); err == nil {
		t.Error("StartNode of a running node succeeded")
	}
	if got := query(r1, "SELECT pg_is_in_recovery()"); got != "t" {
		t.Fatalf("%s after restart: pg_is_in_recovery() = %q", r1.Name, got)
	}
	if err := c.waitStreaming(ctx); err != nil {
		t.Fatal(err)
	}

	// Failover: a clean stop of the primary leaves both standbys with all
	// of its WAL, so either can follow the other once promoted.
	query(primary, "CREATE TABLE before_failover (x int); INSERT INTO before_failover VALUES (1)")
	if err := c.StopNode(ctx, primary, "fast"); err != nil {
		t.Fatal(err)
	}
	began := time.Now()
	if err := c.Promote(ctx, r1); err != nil {
		t.Fatal(err)
	}
	t.Logf("Promote took %v", time.Since(began))
	if got := query(r1, "SELECT pg_is_in_recovery()"); got != "f" {
		t.Fatalf("%s after Promote: pg_is_in_recovery() = %q", r1.Name, got)
	}
	began = time.Now()
	if err := c.Follow(ctx, r2, r1); err != nil {
		t.Fatal(err)
	}
	t.Logf("Follow took %v", time.Since(began))
	if got := query(r1, "SELECT count(*) FROM pg_stat_replication WHERE application_name = "+quoteLiteral(r2.Name)+" AND state = 'streaming'"); got != "1" {
		t.Fatalf("%s does not list %s as streaming: %q", r1.Name, r2.Name, got)
	}
	query(r1, "INSERT INTO before_failover VALUES (2)")
	deadline := time.Now().Add(10 * time.Second)
	for {
		got, err := c.Psql(ctx, r2, "", "SELECT coalesce(sum(x), 0) FROM before_failover")
		if err == nil && got == "3" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("a write on the new primary is not on the standby following it after 10s: %q, %v", got, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if got := query(r2, "SELECT pg_is_in_recovery()"); got != "t" {
		t.Fatalf("%s after Follow: pg_is_in_recovery() = %q", r2.Name, got)
	}
	if err := c.Follow(ctx, r2, r2); err == nil {
		t.Error("Follow of a node to itself succeeded")
	}
}
