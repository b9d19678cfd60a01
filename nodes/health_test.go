package nodes

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgsplit/pgsplit/config"
)

func TestLoginRefusedOnlyForAuthAndDatabaseErrors(t *testing.T) {
	for code, want := range map[string]bool{"28P01": true, "28000": true, "3D000": true, "42501": true, "57P03": false, "53300": false} {
		err := fmt.Errorf("connect: %w", &pgconn.PgError{Code: code})
		if got := loginRefused(err); got != want {
			t.Errorf("loginRefused(%s) = %v", code, got)
		}
	}
	if loginRefused(errors.New("dial tcp: connection refused")) {
		t.Error("a network error is not a refused login")
	}
}

// A replica leaves read rotation over either limit and comes back only
// under half of each, so that it does not flap around the limit; unknown
// figures change nothing.
func TestLagLimitTakesOutOverTheLimitAndLetsBackUnderHalf(t *testing.T) {
	secs := config.Routing{MaxReplicaLag: 10 * time.Second}
	bytes := config.Routing{MaxReplicaLagBytes: 1000}
	both := config.Routing{MaxReplicaLag: 10 * time.Second, MaxReplicaLagBytes: 1000}
	for _, tc := range []struct {
		name     string
		rc       config.Routing
		secs     float64
		bytes    int64
		out      string // "" or a part of the reason
		wantBack bool
	}{
		{"no limits: always back", config.Routing{}, 500, 1 << 40, "", true},
		{"seconds over the limit", secs, 10.5, 0, "lag 10.5s over max_replica_lag 10s", false},
		{"seconds at the limit: not over", secs, 10, 0, "", false},
		{"seconds between half and the limit: no change", secs, 6, 0, "", false},
		{"seconds at half: back", secs, 5, 0, "", true},
		{"caught up: back", secs, 0, 0, "", true},
		{"seconds unknown: no change", secs, -1, 0, "", false},
		{"bytes over the limit", bytes, 0, 1001, "lag 1001 bytes over max_replica_lag_bytes 1000", false},
		{"bytes between half and the limit: no change", bytes, 0, 501, "", false},
		{"bytes at half: back", bytes, 0, 500, "", true},
		{"bytes unknown: no change", bytes, 0, -1, "", false},
		{"seconds over wins over bytes under", both, 11, 0, "max_replica_lag 10s", false},
		{"bytes over with seconds under", both, 1, 2000, "max_replica_lag_bytes 1000", false},
		{"back only under half of both", both, 1, 600, "", false},
		{"under half of both: back", both, 1, 400, "", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, back := lagLimit(tc.rc, tc.secs, tc.bytes)
			if (tc.out == "") != (out == "") || !strings.Contains(out, tc.out) || back != tc.wantBack {
				t.Errorf("lagLimit(%v s, %d bytes) = %q, %v; want %q, %v", tc.secs, tc.bytes, out, back, tc.out, tc.wantBack)
			}
		})
	}
}

// Status lists the primary first, gives every server the role it has now
// (not the one it had when checked), and shows servers not checked yet
// with a zero Checked time and unknown lag.
func TestStatusListsPrimaryFirstWithTheRolesOfNow(t *testing.T) {
	m, _ := newTestMonitor(t)
	roles := func() string {
		var b strings.Builder
		for _, n := range m.Status() {
			fmt.Fprintf(&b, "%s=%s ", n.Server.Host, n.Role)
		}
		return strings.TrimSpace(b.String())
	}
	if got := roles(); got != "p=primary r1=replica r2=replica" {
		t.Fatalf("before any check: %s", got)
	}
	for _, n := range m.Status() {
		if !n.Checked.IsZero() || n.LagBytes != -1 || n.LagSeconds != -1 {
			t.Fatalf("an unchecked server shows %+v", n)
		}
	}
	m.store(&NodeStatus{Server: srvR1, Role: "replica", Checked: time.Now(), Healthy: true, LagBytes: 7})
	m.setPrimary(srvR1, "test")
	if got := roles(); got != "r1=primary p=replica r2=replica" {
		t.Fatalf("after r1 became primary: %s", got)
	}
	if n := m.Status()[0]; n.Checked.IsZero() || !n.Healthy || n.LagBytes != 7 {
		t.Fatalf("r1's last check is not shown: %+v", n)
	}
}
