package nodes

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/pgsplit/pgsplit/config"
	"github.com/pgsplit/pgsplit/internal/pgmsg"
)

// What one round of checks makes the primary: the one server not in
// recovery and not configured replica; none (writes wait) when no server
// or two servers qualify; the current one kept when its check could not
// log in.
func TestDecideRolesPicksTheOneServerNotInRecovery(t *testing.T) {
	primaryOK := &NodeStatus{Healthy: true}
	standby := &NodeStatus{Healthy: true, InRecovery: true}
	down := &NodeStatus{Error: "connection refused"}
	refused := &NodeStatus{Error: "password authentication failed", loginRefused: true}
	servers := []config.Server{srvP, srvR1, srvR2}
	for _, tc := range []struct {
		name   string
		cur    config.Server
		nodes  []*NodeStatus
		want   roleVerdict
		claims []string
	}{
		{"the primary stays primary", srvP, []*NodeStatus{primaryOK, standby, standby},
			roleVerdict{primary: srvP, why: "the only server not in recovery"}, nil},
		{"a promoted replica takes over from a primary that is down", srvP, []*NodeStatus{down, primaryOK, standby},
			roleVerdict{primary: srvR1, why: "the only server not in recovery"}, nil},
		{"a promoted replica takes over even while the primary refuses the check's login", srvP, []*NodeStatus{refused, primaryOK, standby},
			roleVerdict{primary: srvR1, why: "the only server not in recovery"}, nil},
		{"two servers not in recovery: none (split brain)", srvP, []*NodeStatus{primaryOK, primaryOK, standby},
			roleVerdict{why: "more than one server is not in recovery"}, []string{"p:1", "r1:2"}},
		{"a server configured replica never takes writes", srvP, []*NodeStatus{standby, standby, primaryOK},
			roleVerdict{why: "no server configured primary or auto reports pg_is_in_recovery() = false"}, nil},
		{"a server configured primary that is in recovery gets no writes", srvP, []*NodeStatus{standby, standby, standby},
			roleVerdict{why: "no server configured primary or auto reports pg_is_in_recovery() = false"}, nil},
		{"the primary down and no other: none", srvP, []*NodeStatus{down, standby, down},
			roleVerdict{why: "no server configured primary or auto reports pg_is_in_recovery() = false"}, nil},
		{"the primary's check cannot log in: it stays primary", srvP, []*NodeStatus{refused, standby, standby},
			roleVerdict{keep: true}, nil},
		{"a refused login on a server that is not primary says nothing", srvR1, []*NodeStatus{refused, standby, standby},
			roleVerdict{why: "no server configured primary or auto reports pg_is_in_recovery() = false"}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := decideRoles(servers, tc.nodes, tc.cur)
			if got.keep != tc.want.keep || got.primary != tc.want.primary || got.why != tc.want.why || !slices.Equal(got.claims, tc.claims) {
				t.Errorf("decideRoles = %+v; want %+v with claims %v", got, tc.want, tc.claims)
			}
		})
	}
}

// A change of primary closes the old primary's idle pooled connections
// (they must not carry writes), counts once, and makes the new replica
// list; the first primary found closes nothing.
func TestSetPrimaryClosesTheOldPrimarysIdleConnections(t *testing.T) {
	m, h := newTestMonitor(t)
	m.setPrimary(srvP, "same")
	if m.Changes() != 0 || len(h.calls) != 0 {
		t.Fatalf("setting the same primary again: %d changes, calls %v", m.Changes(), h.calls)
	}
	m.setPrimary(config.Server{}, "none")
	if p := m.Primary(); p.Host != "" || h.count("CloseIdle p:1") != 1 {
		t.Fatalf("no primary: primary %v, calls %v", p, h.calls)
	}
	m.setPrimary(srvR1, "promoted")
	p, replicas := m.Roles()
	if p != srvR1 || !slices.Equal(replicas, []config.Server{srvP, srvR2}) || m.Changes() != 2 || len(h.calls) != 1 {
		t.Fatalf("after promotion: %v %v, %d changes, calls %v", p, replicas, m.Changes(), h.calls)
	}
	m.setPrimary(srvP, "failed back")
	if h.count("CloseIdle r1:2") != 1 || m.Changes() != 3 {
		t.Fatalf("after failing back: calls %v", h.calls)
	}
}

// A slice Roles handed out is never changed by a later change of primary.
func TestRolesReplicasAreNotChangedByALaterFailover(t *testing.T) {
	m, _ := newTestMonitor(t)
	_, before := m.Roles()
	m.setPrimary(srvR1, "promoted")
	if !slices.Equal(before, []config.Server{srvR1, srvR2}) {
		t.Fatalf("the replicas handed out before the failover changed: %v", before)
	}
}

// A failover reads every database's catalog again on the new primary.
func TestSetPrimaryRefreshesTheCatalogsOnTheNewPrimary(t *testing.T) {
	h := &fakeHost{cfg: &config.Config{Servers: []config.Server{srvP, srvR1}, Auth: config.Auth{Users: []config.User{{Name: "app"}}}}}
	cats := NewCatalogs(h, nil)
	m := New(Options{Host: h, Catalogs: cats})
	if _, err := m.FindPrimary(context.Background()); err != nil {
		t.Fatal(err)
	}
	cats.For("app", config.User{Name: "app"})
	cats.Wait()
	m.setPrimary(srvR1, "promoted")
	cats.Wait()
	if n := h.count("WithPrimaryConn app"); n != 2 {
		t.Fatalf("catalog of app read %d times, want 2 (first use, failover)", n)
	}
}

func TestAwaitPrimaryReturnsAKnownPrimaryAtOnce(t *testing.T) {
	m, _ := newTestMonitor(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel() // no wait allowed
	if p, err := m.AwaitPrimary(ctx, config.Server{}); p != srvP || err != nil {
		t.Fatalf("AwaitPrimary = %v, %v", p, err)
	}
}

// A write waiting for a primary is answered 57P03 when its wait ends,
// saying whether no server accepts writes or the primary cannot be reached.
func TestAwaitPrimaryFailsWith57P03WhenTheWaitEnds(t *testing.T) {
	for _, tc := range []struct {
		name    string
		primary config.Server
		failed  config.Server
		msg     string
	}{
		{"no primary known", config.Server{}, config.Server{}, "no primary available: no server reports that it accepts writes"},
		{"the primary failed", srvP, srvP, "no primary available: the primary p:1 cannot be reached"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m, _ := newTestMonitor(t)
			m.setPrimary(tc.primary, "test")
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
			defer cancel()
			_, err := m.AwaitPrimary(ctx, tc.failed)
			var pe *pgmsg.Error
			if !errors.As(err, &pe) || pe.Code != pgmsg.CodeCannotConnectNow || pe.Message != tc.msg {
				t.Fatalf("AwaitPrimary: %v; want 57P03 %q", err, tc.msg)
			}
		})
	}
}

// A write whose primary connection failed waits for a verdict: a new
// primary, or a round of checks that keeps the same one.
func TestAwaitPrimaryWakesOnANewPrimaryOrARoundOfChecks(t *testing.T) {
	for _, tc := range []struct {
		name string
		then func(*Monitor)
		want config.Server
	}{
		{"a replica promoted", func(m *Monitor) { m.setPrimary(srvR1, "promoted") }, srvR1},
		{"checked again, same primary", func(m *Monitor) { m.checked() }, srvP},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m, _ := newTestMonitor(t)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			type result struct {
				p   config.Server
				err error
			}
			got := make(chan result, 1)
			go func() {
				p, err := m.AwaitPrimary(ctx, srvP)
				got <- result{p, err}
			}()
			select {
			case r := <-got:
				t.Fatalf("AwaitPrimary returned before any verdict: %v, %v", r.p, r.err)
			case <-time.After(20 * time.Millisecond):
			}
			tc.then(m)
			if r := <-got; r.p != tc.want || r.err != nil {
				t.Fatalf("AwaitPrimary = %v, %v; want %v", r.p, r.err, tc.want)
			}
		})
	}
}

// Stop ends the checking goroutine (checks off here: no I/O) and may be
// called again; without Start it does nothing.
func TestStopEndsTheCheckerAndIsIdempotent(t *testing.T) {
	m, h := newTestMonitor(t)
	m.Stop() // not started
	h.cfg.Routing.HealthCheckInterval = 0
	m.Start()
	done := make(chan struct{})
	go func() { m.Stop(); m.Stop(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Stop did not return")
	}
	select {
	case <-m.done:
	default:
		t.Fatal("Stop returned before the checking goroutine ended")
	}
}
