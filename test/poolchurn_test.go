package test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgsplit/pgsplit/config"
	"github.com/pgsplit/pgsplit/internal/pgcluster"
)

// serverSessions reads, on every server of the cluster by port, how many
// sessions of db were ever opened (pg_stat_database.sessions) and how many
// are open now. It waits first, settle, for the backends' statistics to be
// flushed: an idle backend flushes at once, unless it flushed less than a
// second before (or could not take the lock at once), when PostgreSQL 15
// defers it by PGSTAT_IDLE_INTERVAL, 10 s. Until then a session it counts
// as open may be missing from sessions.
func serverSessions(t *testing.T, ctx context.Context, db string, settle time.Duration) (opened, open map[int]int64) {
	t.Helper()
	time.Sleep(settle)
	opened, open = map[int]int64{}, map[int]int64{}
	for _, n := range append([]pgcluster.Node{cluster.Primary}, cluster.Replicas...) {
		c, err := pgx.Connect(ctx, cluster.SuperuserDSN(n, "postgres"))
		if err != nil {
			t.Fatal(err)
		}
		var s, o int64
		err = c.QueryRow(ctx, `SELECT sessions, (SELECT count(*) FROM pg_stat_activity WHERE datname = $1)
			FROM pg_stat_database WHERE datname = $1`, db).Scan(&s, &o)
		closeConn(c)
		if err != nil {
			t.Fatalf("sessions of %s on port %d: %v", db, n.Port, err)
		}
		opened[n.Port], open[n.Port] = s, o
	}
	return opened, open
}

// dropDatabaseAtEnd drops db when the test ends (after its proxy stopped):
// later tests' limits checks count every connectable database.
func dropDatabaseAtEnd(t *testing.T, db string) {
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		su, err := pgx.Connect(ctx, cluster.SuperuserDSN(cluster.Primary, "postgres"))
		if err != nil {
			t.Error(err)
			return
		}
		defer closeConn(su)
		if _, err := su.Exec(ctx, fmt.Sprintf("DROP DATABASE IF EXISTS %s WITH (FORCE)", db)); err != nil {
			t.Error(err)
		}
	})
}

// hoverLoad runs 16 clients on conns for d: short reads with a little think
// time and every tenth statement a write, so a pool's demand hovers around
// a few connections with peaks above.
func hoverLoad(ctx context.Context, conns []*pgx.Conn, d time.Duration) error {
	deadline := time.Now().Add(d)
	var wg sync.WaitGroup
	errs := make(chan error, len(conns))
	for i, c := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := 0; time.Now().Before(deadline); n++ {
				var err error
				if n%10 == 0 {
					_, err = c.Exec(ctx, "INSERT INTO kv (k, v) VALUES ($1, 1) ON CONFLICT (k) DO UPDATE SET v = kv.v + 1", fmt.Sprintf("c%d", i))
				} else {
					_, err = c.Exec(ctx, "SELECT count(*) FROM kv")
				}
				if err != nil {
					errs <- fmt.Errorf("client %d: %w", i, err)
					return
				}
				time.Sleep(time.Duration(rand.IntN(2000)) * time.Microsecond)
			}
		}()
	}
	wg.Wait()
	close(errs)
	return <-errs
}

// TestPoolHoveringAroundPoolSizeOpensNoNewServerSessions: 16 clients, reads
// spread over two replicas and writes on the primary, through pools of
// pool_size 4 + max_overflow 12, so each pool's demand hovers around
// pool_size. With overflow_idle_timeout at its default (60s), once warmed up
// the load closes no server connection, so every server session it opens
// (pg_stat_database.sessions) is one the pool grew by to meet a new peak,
// still open at the end; with 0 (overflow connections closed as they come
// back, SQLAlchemy's QueuePool) the same load keeps forking backends, which
// is what the timeout is for.
func TestPoolHoveringAroundPoolSizeOpensNoNewServerSessions(t *testing.T) {
	for _, tc := range []struct {
		timeout time.Duration
		churns  bool
	}{{time.Minute, false}, {0, true}} {
		t.Run(fmt.Sprintf("overflow_idle_timeout=%s", tc.timeout), func(t *testing.T) {
			db := "pool_hover"
			createDatabase(t, db)
			dropDatabaseAtEnd(t, db)
			p := routingProxy(t, func(c *config.Config) {
				c.Pool.PoolSize, c.Pool.MaxOverflow, c.Pool.OverflowIdleTimeout = 4, 12, tc.timeout
			})
			ctx := testCtx(t, time.Minute)
			conns := make([]*pgx.Conn, 16)
			for i := range conns {
				conns[i] = connect(t, p.dbDSN(db))
			}
			if err := hoverLoad(ctx, conns, 2*time.Second); err != nil { // warm-up
				t.Fatal(err)
			}
			// Exact counts where none may churn; the churning case needs
			// only a lower bound (closed backends flush as they exit).
			settle := 10500 * time.Millisecond
			if tc.churns {
				settle = 1500 * time.Millisecond
			}
			opened0, open0 := serverSessions(t, ctx, db, settle)
			if err := hoverLoad(ctx, conns, 3*time.Second); err != nil {
				t.Fatal(err)
			}
			opened1, open1 := serverSessions(t, ctx, db, settle)
			churned, total := map[int]int64{}, int64(0)
			for port := range opened1 {
				// Sessions opened minus the growth of open ones: those
				// opened and closed again within the run.
				churned[port] = (opened1[port] - opened0[port]) - (open1[port] - open0[port])
				total += churned[port]
			}
			t.Logf("in 3 s of steady load, by port: sessions opened and closed %v; open before %v, after %v", churned, open0, open1)
			if !tc.churns && total != 0 {
				t.Errorf("a load hovering around pool_size opened and closed %d server sessions in steady state (%v), want 0", total, churned)
			}
			if tc.churns && total < 10 {
				t.Errorf("with overflow_idle_timeout 0 the load churned only %d server sessions (%v): the test would not show churn", total, churned)
			}
		})
	}
}
