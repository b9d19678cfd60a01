package test

import (
	"context"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgsplit/pgsplit/config"
	"github.com/pgsplit/pgsplit/internal/handoff"
	"github.com/pgsplit/pgsplit/proxy"
)

// TestReadOnTheNewProcessSeesACommitMadeThroughTheOldOne runs an upgrade's
// two processes as two Servers in this test binary, with both replicas
// delayed 2 s: a client inside a transaction stays on the old process and
// commits there after a reader moved to the new one; the reader's next
// read must see the row (the new process's own marks do not know that
// commit: reads take barriers while both processes run). With the
// barriers off the same read is stale.
func TestReadOnTheNewProcessSeesACommitMadeThroughTheOldOne(t *testing.T) {
	rywTable(t, "upg_ryw")
	for _, r := range cluster.Replicas {
		delayReplica(t, r, "2s")
	}
	for _, c := range []struct {
		name string
		off  bool
	}{{"barriers", false}, {"barriers off", true}} {
		t.Run(c.name, func(t *testing.T) {
			knobs := proxy.Knobs{NoUpgradeBarrier: c.off}
			ctx := testCtx(t, time.Minute)
			_, nw, holder, reader, id := upgradeWithOpenWrite(t, ctx, "upg_ryw", knobs, nil)
			if _, err := holder.Exec(ctx, "COMMIT"); err != nil {
				t.Fatal(err)
			}
			committed := time.Now()
			read := func(when string) {
				var v string
				err := reader.QueryRow(ctx, "SELECT v FROM upg_ryw WHERE id = $1", id).Scan(&v)
				stale := errors.Is(err, pgx.ErrNoRows)
				if err != nil && !stale {
					t.Fatal(err)
				}
				t.Logf("%s: read on the new process %s, %s after the commit through the old one: stale=%v",
					c.name, when, time.Since(committed).Round(time.Millisecond), stale)
				if stale != c.off {
					t.Errorf("%s: %s: stale read = %v, want %v", c.name, when, stale, c.off)
				}
			}
			read("while both run")
			// The holder moves too, the old process ends: the new one's
			// marks must cover what the old one committed.
			nw.logs.waitEntry(t, 0, 5*time.Second, "upgrade complete", func(e logEntry) bool {
				return e.str("msg") == "upgrade complete: the previous process has ended"
			})
			if time.Since(committed) > 1500*time.Millisecond {
				t.Fatalf("the upgrade took %s to complete: the replicas' 2 s delay no longer shows a stale read", time.Since(committed))
			}
			read("after the old one ended")
		})
	}
}

// TestReadOnTheNewProcessSeesACommitOfAnOldProcessStoppedMidUpgrade stops
// the old process (Shutdown, as SIGTERM does) while a client of its is
// inside a transaction: the control link closes before the old process
// said which databases it wrote, and it commits that transaction while
// draining. The new process keeps its barriers until the old one has
// exited, then marks every database as written: a read on it after the
// commit is fresh, with both replicas 2 s behind. With the barriers off
// the same read is stale.
func TestReadOnTheNewProcessSeesACommitOfAnOldProcessStoppedMidUpgrade(t *testing.T) {
	rywTable(t, "upg_ryw_stop")
	for _, r := range cluster.Replicas {
		delayReplica(t, r, "2s")
	}
	for _, c := range []struct {
		name string
		off  bool
	}{{"barriers", false}, {"barriers off", true}} {
		t.Run(c.name, func(t *testing.T) {
			knobs := proxy.Knobs{NoUpgradeBarrier: c.off}
			ctx := testCtx(t, time.Minute)
			oldGone := make(chan struct{})
			old, nw, holder, reader, id := upgradeWithOpenWrite(t, ctx, "upg_ryw_stop", knobs, oldGone)
			stopped := make(chan struct{})
			go func() {
				old.srv.Shutdown(context.Background()) // the holder's transaction may finish
				close(stopped)
			}()
			nw.logs.waitEntry(t, 0, 5*time.Second, "the link to close early", func(e logEntry) bool {
				return strings.HasPrefix(e.str("msg"), "upgrade: the previous process closed the control link before it was done")
			})
			if _, err := holder.Exec(ctx, "COMMIT"); err != nil {
				t.Fatal(err)
			}
			committed := time.Now()
			<-stopped
			close(oldGone) // as the new process sees its parent exit
			nw.logs.waitEntry(t, 0, 5*time.Second, "the barriers to end", func(e logEntry) bool {
				return strings.HasPrefix(e.str("msg"), "upgrade: the previous process has exited")
			})
			if time.Since(committed) > 1500*time.Millisecond {
				t.Fatalf("the old process took %s to stop: the replicas' 2 s delay no longer shows a stale read", time.Since(committed))
			}
			var v string
			err := reader.QueryRow(ctx, "SELECT v FROM upg_ryw_stop WHERE id = $1", id).Scan(&v)
			stale := errors.Is(err, pgx.ErrNoRows)
			if err != nil && !stale {
				t.Fatal(err)
			}
			t.Logf("%s: read on the new process %s after a commit through the stopped old one: stale=%v", c.name, time.Since(committed).Round(time.Millisecond), stale)
			if stale != c.off {
				t.Errorf("%s: stale read = %v, want %v", c.name, stale, c.off)
			}
		})
	}
}

// upgradeWithOpenWrite starts an old Server (transaction pooling,
// table-mode read-your-writes) with a holder client inside a transaction
// that inserted row id into table and an idle reader, then upgrades to a
// new Server in this process and waits until the reader has moved.
func upgradeWithOpenWrite(t *testing.T, ctx context.Context, table string, knobs proxy.Knobs, oldGone <-chan struct{}) (old, nw *testProxy, holder, reader *pgx.Conn, id int64) {
	t.Helper()
	cfg := baseConfig()
	cfg.Pool.Mode = config.ModeTransaction
	cfg.Pool.PoolSize, cfg.Pool.MaxOverflow = 5, 5
	cfg.Routing = config.DefaultRouting()
	cfg.Routing.ReadYourWrites = config.RYWTable
	old = startProxyAt(t, cfg, 0, knobs)
	holder = connect(t, old.appDSN())
	reader = connect(t, old.appDSN())
	id = rywIDs(1)
	if _, err := holder.Exec(ctx, "BEGIN"); err != nil {
		t.Fatal(err)
	}
	if _, err := holder.Exec(ctx, "INSERT INTO "+table+" (id, v) VALUES ($1, 'x')", id); err != nil {
		t.Fatal(err)
	}
	mustSelectOne(t, reader, "reader before the upgrade")
	nw = takeOverInProcess(t, old, knobs, oldGone)
	waitFor(t, 10*time.Second, "the idle reader to move", func() (bool, string) {
		return strings.Contains(nw.logs.String(), "client taken over from the previous pgsplit process"), "not moved"
	})
	return old, nw, holder, reader, id
}

// takeOverInProcess starts a second Server on old's listening socket and
// runs an upgrade from old to it over a socket pair, as SIGUSR2 does
// between processes. The new Server is shut down when the test ends.
func takeOverInProcess(t *testing.T, old *testProxy, knobs proxy.Knobs, oldGone <-chan struct{}) *testProxy {
	t.Helper()
	lnF, mF, err := old.srv.ListenerFiles()
	if err != nil {
		t.Fatal(err)
	}
	if mF != nil {
		_ = mF.Close()
	}
	ln, err := net.FileListener(lnF)
	_ = lnF.Close()
	if err != nil {
		t.Fatal(err)
	}
	logs := &logBuffer{}
	keepLog(logs)
	srv, err := proxy.New(old.cfg, newLoggerAt(logs, 0))
	if err != nil {
		t.Fatal(err)
	}
	srv.SetKnobs(knobs)
	srv.UseListeners(ln, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := srv.Listen(ctx); err != nil {
		t.Fatal(err)
	}
	nw := &testProxy{srv: srv, cfg: old.cfg, host: old.host, port: old.port, logs: logs, served: make(chan error, 1)}
	go func() { nw.served <- srv.Serve() }()
	t.Cleanup(func() {
		if err := nw.shutdown(old.cfg.ShutdownTimeout + 10*time.Second); err != nil {
			t.Error(err)
		}
		if t.Failed() {
			t.Logf("new process log:\n%s", logs.tail(0, 40))
		}
	})
	oldLink, f, err := handoff.Pair()
	if err != nil {
		t.Fatal(err)
	}
	newLink, err := handoff.FromFile(f)
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.TakeOver(newLink, oldGone); err != nil {
		t.Fatal(err)
	}
	if typ, _, _, err := oldLink.Recv(); err != nil || typ != handoff.Ready {
		t.Fatalf("Ready from the new server: %q %v", typ, err)
	}
	old.srv.HandOver(oldLink, nil)
	return nw
}
