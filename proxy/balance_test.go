package proxy

import (
	"context"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/pgsplit/pgsplit/config"
	"github.com/pgsplit/pgsplit/nodes"
	"github.com/pgsplit/pgsplit/pool"
)

// weightedPick must hand out replicas in proportion to their weight.
func TestWeightedPick(t *testing.T) {
	rs := []config.Server{{Host: "a", Port: 1, Weight: 1}, {Host: "b", Port: 2, Weight: 3}}
	got := map[string]int{}
	for n := uint64(0); n < 400; n++ {
		got[weightedPick(rs, n).Host]++
	}
	if got["a"] != 100 || got["b"] != 300 {
		t.Fatalf("want 100/300, got %v", got)
	}
}

// least_conn picks the replica with the fewest open connections per unit of
// weight; weight 0 takes a replica out of rotation; read_from: any adds
// the primary.
func TestPickReplica(t *testing.T) {
	primary := config.Server{Host: "p", Port: 5432, Role: config.RolePrimary}
	replicas := []config.Server{
		{Host: "r1", Port: 1, Role: config.RoleReplica, Weight: 1},
		{Host: "r2", Port: 2, Role: config.RoleReplica, Weight: 2},
		{Host: "r3", Port: 3, Role: config.RoleReplica, Weight: 0},
	}
	cfg := &config.Config{Routing: config.DefaultRouting(), Servers: append([]config.Server{primary}, replicas...)}
	s := &Server{pools: map[poolKey]*pool.Pool{}, downUntil: map[endpoint]time.Time{}, log: zap.NewNop()}
	s.cfg.Store(cfg)
	setRoles(t, s) // the configured primary; the rest replicas
	if got := s.pickReplicaLocked("app", "app", 0); got.Host != "r2" {
		t.Fatalf("empty pools: want the heaviest replica r2, got %s", got.Host)
	}
	seen := map[string]bool{}
	cfg.Routing.LoadBalance = config.BalanceRoundRobin
	for i := 0; i < 30; i++ {
		seen[s.pickReplicaLocked("app", "app", 0).Host] = true
	}
	if !seen["r1"] || !seen["r2"] || seen["r3"] || seen["p"] {
		t.Fatalf("round robin visited %v", seen)
	}
	cfg.Routing.ReadFrom = config.ReadFromAny
	seen = map[string]bool{}
	for i := 0; i < 30; i++ {
		seen[s.pickReplicaLocked("app", "app", 0).Host] = true
	}
	if !seen["p"] {
		t.Fatalf("read_from any never picked the primary: %v", seen)
	}
	cfg.Routing.ReadFrom = config.ReadFromReplicas
	cfg.Routing.LoadBalance = config.BalanceLeastConn
	s.markDown(replicas[1])
	if got := s.pickReplicaLocked("app", "app", 0); got.Host != "r1" {
		t.Fatalf("r2 is down: want r1, got %s", got.Host)
	}
	s.markDown(replicas[0])
	if got := s.pickReplicaLocked("app", "app", 0); got.Host != "p" {
		t.Fatalf("every replica down: want the primary, got %s", got.Host)
	}
	cfg.Servers = []config.Server{primary, replicas[2]} // only the weight-0 one
	setRoles(t, s)
	cfg.Routing.ReadFrom = config.ReadFromReplicas
	if s.hasReplicas() {
		t.Fatal("a weight-0 replica counts as usable")
	}
}

// setRoles gives s a nodes.Monitor whose roles are s's configuration's:
// the server configured primary, every other one a replica (no I/O).
func setRoles(t *testing.T, s *Server) {
	t.Helper()
	s.nodes = nodes.New(nodes.Options{Host: nodesHost{s}})
	if _, err := s.nodes.FindPrimary(context.Background()); err != nil {
		t.Fatal(err)
	}
}
