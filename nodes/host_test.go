package nodes

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"

	"github.com/pgsplit/pgsplit/config"
	"github.com/pgsplit/pgsplit/pool"
)

// fakeHost is a Host with no PostgreSQL behind it: it records what nodes
// asks of the proxy. WithPrimaryConn fails (there is no pool).
type fakeHost struct {
	cfg *config.Config

	mu    sync.Mutex
	calls []string // "CloseIdle p:1", "WithPrimaryConn app" …
}

var errNoPool = errors.New("no pool in this test")

func (h *fakeHost) Config() *config.Config      { return h.cfg }
func (h *fakeHost) CloseIdle(srv config.Server) { h.record("CloseIdle " + srv.Addr()) }
func (h *fakeHost) MarkDown(srv config.Server)  { h.record("MarkDown " + srv.Addr()) }
func (h *fakeHost) MarkUp(srv config.Server)    { h.record("MarkUp " + srv.Addr()) }
func (h *fakeHost) SetLagOut(srv config.Server, reason string) {
	h.record(fmt.Sprintf("SetLagOut %s %q", srv.Addr(), reason))
}
func (h *fakeHost) SetReplayed(srv config.Server, lsn uint64) {
	h.record(fmt.Sprintf("SetReplayed %s %s", srv.Addr(), FormatLSN(lsn)))
}
func (h *fakeHost) WithPrimaryConn(_ context.Context, _ config.User, database string, _ func(*pool.Conn) error) error {
	h.record("WithPrimaryConn " + database)
	return errNoPool
}

func (h *fakeHost) record(call string) {
	h.mu.Lock()
	h.calls = append(h.calls, call)
	h.mu.Unlock()
}

// count is how many recorded calls are call.
func (h *fakeHost) count(call string) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	n := 0
	for _, c := range h.calls {
		if c == call {
			n++
		}
	}
	return n
}

// Three servers: p configured primary, r1 and r2 replicas.
var (
	srvP  = config.Server{Host: "p", Port: 1, Role: config.RolePrimary, Weight: 1}
	srvR1 = config.Server{Host: "r1", Port: 2, Role: config.RoleAuto, Weight: 1}
	srvR2 = config.Server{Host: "r2", Port: 3, Role: config.RoleReplica, Weight: 1}
)

// newTestMonitor is a Monitor over a fakeHost with p, r1 and r2, p its
// primary (found without I/O: it is configured primary).
func newTestMonitor(t *testing.T) (*Monitor, *fakeHost) {
	t.Helper()
	h := &fakeHost{cfg: &config.Config{Servers: []config.Server{srvP, srvR1, srvR2}, Routing: config.DefaultRouting(),
		Auth: config.Auth{Users: []config.User{{Name: "app"}}}}}
	m := New(Options{Host: h})
	if p, err := m.FindPrimary(context.Background()); err != nil || p != srvP {
		t.Fatalf("FindPrimary = %v, %v; want the configured primary", p, err)
	}
	return m, h
}
