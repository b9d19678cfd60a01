package nodes

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/pgsplit/pgsplit/config"
)

// The guide's formula: users × databases × (pool_size + max_overflow) +
// pgsplit's own connections, against max_connections less the reserved
// slots; a server that could not be asked is never held against the
// configuration.
func TestServerLimitNeedsUsersTimesDatabasesTimesPoolsPlusOwn(t *testing.T) {
	base := ServerLimit{Server: srvP, Role: config.RolePrimary, MaxConnections: 100, SuperuserReserved: 3, Reserved: 2,
		Users: 2, Databases: 2, DatabasesFrom: "databases key", PoolSize: 10, MaxOverflow: 10, Own: OwnConnections}
	over := base
	over.Users = 3
	unknown := base
	unknown.Err = errors.New("connection refused")
	for _, tc := range []struct {
		name      string
		l         ServerLimit
		needed    int
		available int
		exceeds   bool
		formula   string
	}{
		{"fits", base, 82, 95, false, "2 user(s) × 2 database(s) (databases key) × (pool_size 10 + max_overflow 10) + 2 pgsplit = 82; " +
			"the server allows max_connections 100 − superuser_reserved_connections 3 − reserved_connections 2 = 95: 13 remain for other clients"},
		{"exceeds", over, 122, 95, true, "= 122; the server allows max_connections 100 − superuser_reserved_connections 3 − reserved_connections 2 = 95: exceeds the server's limit by 27"},
		{"not asked", unknown, 82, 95, false, "server p:1 (primary): could not read its limits: connection refused"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := tc.l
			if l.Needed() != tc.needed || l.Available() != tc.available || l.Exceeds() != tc.exceeds {
				t.Errorf("needed %d, available %d, exceeds %v; want %d, %d, %v", l.Needed(), l.Available(), l.Exceeds(), tc.needed, tc.available, tc.exceeds)
			}
			if f := l.Formula(); !strings.Contains(f, tc.formula) {
				t.Errorf("Formula() = %q; want it to contain %q", f, tc.formula)
			}
		})
	}
	err := (&LimitError{Limits: []ServerLimit{base, over, unknown}}).Error()
	if strings.Count(err, "server p:1") != 1 || !strings.Contains(err, "exceeds the server's limit by 27") {
		t.Errorf("LimitError lists more or less than the server exceeded: %s", err)
	}
}

// CheckLimits asks only the servers that get pools: a replica of weight 0
// (or every replica, under read_from: primary) gets none. Roles follow the
// primary named. Servers that cannot be asked are reported in Err, not as
// an error.
func TestCheckLimitsSkipsReplicasWithoutPools(t *testing.T) {
	closed := func(host string, port int, role string, weight int) config.Server {
		return config.Server{Host: host, Port: port, Role: role, Weight: weight}
	}
	p, r, idle := closed("127.0.0.1", 1, config.RoleAuto, 1), closed("127.0.0.1", 2, config.RoleAuto, 1), closed("127.0.0.1", 3, config.RoleAuto, 0)
	for _, tc := range []struct {
		name     string
		readFrom string
		want     []string // server: role
	}{
		{"replicas take reads", config.ReadFromReplicas, []string{"127.0.0.1:1 primary", "127.0.0.1:2 replica"}},
		{"read_from primary", config.ReadFromPrimary, []string{"127.0.0.1:1 primary"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := &config.Config{Servers: []config.Server{p, r, idle}, Routing: config.Routing{ReadFrom: tc.readFrom},
				Auth: config.Auth{Users: []config.User{{Name: "app"}}}, Pool: config.Pool{ConnectTimeout: time.Second}}
			limits, err := CheckLimits(context.Background(), cfg, p.Addr())
			if err != nil {
				t.Fatalf("servers that cannot be asked made an error: %v", err)
			}
			var got []string
			for _, l := range limits {
				if l.Err == nil {
					t.Errorf("%s: asked a closed port without an error", l.Server.Addr())
				}
				got = append(got, l.Server.Addr()+" "+l.Role)
			}
			if strings.Join(got, ", ") != strings.Join(tc.want, ", ") {
				t.Errorf("checked %v; want %v", got, tc.want)
			}
		})
	}
}
