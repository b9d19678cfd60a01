package test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgsplit/pgsplit/internal/pgcluster"
)

// upgradeBed is pgsplit run from a binary of its own in a folder of its
// own (so the binary can be replaced), configured by config.yaml there,
// with every process of the upgrade chain writing to one log pipe.
type upgradeBed struct {
	dir, bin, cfgPath string
	logs              *logBuffer
	first             *exec.Cmd
	logsDone          chan struct{}
	mu                sync.Mutex
	pid               int // the process serving now
	addr, metrics     string
}

// upgradeConfig is a configuration a DBA following the guide would write:
// SCRAM, replicas for reads with read-your-writes, transaction pooling with
// the staging profile's pools, and the metrics endpoint (handed over too).
func upgradeConfig(extra string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "listen: 127.0.0.1:0\nmax_client_conn: 1000\nshutdown_timeout: 5s\nservers:\n")
	fmt.Fprintf(&b, "  - { host: %s, port: %d, role: primary }\n", cluster.Primary.Host, cluster.Primary.Port)
	for _, r := range cluster.Replicas {
		fmt.Fprintf(&b, "  - { host: %s, port: %d, role: replica, weight: 1 }\n", r.Host, r.Port)
	}
	fmt.Fprintf(&b, "auth:\n  method: scram-sha-256\n  users:\n    - { name: %s, password: %s }\n", appUser, appPassword)
	b.WriteString("pool:\n  mode: transaction\n  pool_size: 10\n  max_overflow: 10\n  pool_timeout: 10s\n")
	b.WriteString("routing:\n  read_from: replicas\n  read_your_writes: table\n  transactions: split\n")
	b.WriteString("metrics:\n  listen: 127.0.0.1:0\n")
	b.WriteString(extra)
	return b.String()
}

// startUpgradeBed copies the pgsplit binary into a folder and runs it.
func startUpgradeBed(t *testing.T, cfg string) *upgradeBed {
	t.Helper()
	dir := t.TempDir()
	b := &upgradeBed{dir: dir, bin: filepath.Join(dir, "pgsplit"), cfgPath: filepath.Join(dir, "config.yaml"), logs: &logBuffer{}, logsDone: make(chan struct{})}
	b.replaceBinary(t)
	if err := os.WriteFile(b.cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(b.bin, "serve", "--config", b.cfgPath)
	cmd.Dir = dir
	cmd.Env = cleanEnv()
	cmd.Stdout, cmd.Stderr = io.Discard, w
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	_ = w.Close() // the processes hold the write end
	b.first, b.pid = cmd, cmd.Process.Pid
	go func() { _ = cmd.Wait() }() // reaps the first; later ones are not this process's children
	go func() {
		defer close(b.logsDone)
		sc := bufio.NewScanner(r)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			_, _ = b.logs.Write(append(append([]byte(nil), sc.Bytes()...), '\n'))
		}
	}()
	t.Cleanup(func() {
		b.stop(t)
		if t.Failed() {
			t.Logf("pgsplit log:\n%s", b.logs.tail(0, 80))
		}
	})
	e := b.logs.waitEntry(t, 0, 20*time.Second, "pgsplit listening", func(e logEntry) bool { return e.str("msg") == "listening" })
	b.addr = e.str("addr")
	m := b.logs.waitEntry(t, 0, 5*time.Second, "metrics listening", func(e logEntry) bool { return e.str("msg") == "metrics listening" })
	b.metrics = m.str("addr")
	return b
}

// replaceBinary puts a fresh copy of the pgsplit binary at b.bin, by
// rename, as a package manager does: a new file (inode) at the same path.
func (b *upgradeBed) replaceBinary(t *testing.T) uint64 {
	t.Helper()
	src, err := os.ReadFile(pgsplitBinary(t))
	if err != nil {
		t.Fatal(err)
	}
	tmp := b.bin + ".new"
	if err := os.WriteFile(tmp, src, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, b.bin); err != nil {
		t.Fatal(err)
	}
	var st syscall.Stat_t
	if err := syscall.Stat(b.bin, &st); err != nil {
		t.Fatal(err)
	}
	return st.Ino
}

// upgrade replaces the binary, sends SIGUSR2 to the serving process and
// waits until the new one serves and the old one has exited. It returns
// the new process's pid.
func (b *upgradeBed) upgrade(t *testing.T, timeout time.Duration) int {
	t.Helper()
	ino := b.replaceBinary(t)
	old := b.pid
	_, pid := b.sigUpgrade(t)
	var st syscall.Stat_t
	if err := syscall.Stat(fmt.Sprintf("/proc/%d/exe", pid), &st); err != nil || st.Ino != ino {
		t.Fatalf("the new process (pid %d) does not run the replaced binary (inode %d, want %d): %v", pid, st.Ino, ino, err)
	}
	b.mu.Lock()
	b.pid = pid
	b.mu.Unlock()
	waitFor(t, timeout, fmt.Sprintf("old pgsplit (pid %d) to exit after handing over", old), func() (bool, string) {
		return processGone(old), "still running"
	})
	return pid
}

// sigUpgrade sends SIGUSR2 to the serving process and waits until it has
// started the new one: it returns the log mark before the signal and the
// new process's pid.
func (b *upgradeBed) sigUpgrade(t *testing.T) (mark, pid int) {
	t.Helper()
	mark = b.logs.mark()
	if err := syscall.Kill(b.pid, syscall.SIGUSR2); err != nil { // by PID: a process this test started
		t.Fatal(err)
	}
	e := b.logs.waitEntry(t, mark, 30*time.Second, "upgrade: new process started", func(e logEntry) bool { return e.str("msg") == "upgrade: new process started" })
	f, _ := e["pid"].(float64)
	if pid = int(f); pid <= 0 || pid == b.pid {
		t.Fatalf("new process pid %v", e["pid"])
	}
	return mark, pid
}

// processGone reports whether pid has exited (a zombie counts: its parent
// may be gone, and nobody reaps it in a container).
func processGone(pid int) bool {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true
	}
	s := string(stat)
	i := strings.LastIndexByte(s, ')')
	return i < 0 || i+2 >= len(s) || s[i+2] == 'Z' || s[i+2] == 'X'
}

// stop ends the serving process with SIGTERM (by PID) and waits for it.
func (b *upgradeBed) stop(t *testing.T) {
	b.mu.Lock()
	pid := b.pid
	b.mu.Unlock()
	if pid == 0 || processGone(pid) {
		return
	}
	_ = syscall.Kill(pid, syscall.SIGTERM)
	deadline := time.Now().Add(15 * time.Second)
	for !processGone(pid) && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	if !processGone(pid) {
		_ = syscall.Kill(pid, syscall.SIGKILL)
		t.Errorf("pgsplit (pid %d) did not exit within 15s of SIGTERM", pid)
	}
	select {
	case <-b.logsDone:
	case <-time.After(5 * time.Second):
	}
}

func (b *upgradeBed) dsn() string {
	host, port, _ := strings.Cut(b.addr, ":")
	return fmt.Sprintf("host=%s port=%s user=%s password=%s dbname=%s sslmode=disable", host, port, appUser, appPassword, appDatabase)
}

// pgbenchScript is a chat-like mix: a write transaction that reads its row
// back, then an autocommit read (a replica's, under read-your-writes).
const pgbenchScript = `\set aid random(1, 1000)
\set delta random(-500, 500)
BEGIN;
UPDATE upg_accounts SET abalance = abalance + :delta WHERE aid = :aid;
SELECT abalance FROM upg_accounts WHERE aid = :aid;
END;
SELECT abalance FROM upg_accounts WHERE aid = :aid;
`

// pgbenchRun is one pgbench process and what it printed.
type pgbenchRun struct {
	mode string
	cmd  *exec.Cmd
	out  strings.Builder
	err  error
	done chan struct{}
}

func startPgbench(t *testing.T, b *upgradeBed, mode, script string, clients int, d time.Duration) *pgbenchRun {
	t.Helper()
	bin, err := pgcluster.FindBinDir()
	if err != nil {
		t.Fatal(err)
	}
	host, port, _ := strings.Cut(b.addr, ":")
	run := &pgbenchRun{mode: mode, done: make(chan struct{})}
	run.cmd = exec.Command(filepath.Join(bin, "pgbench"), "-n", "-h", host, "-p", port, "-U", appUser, "-M", mode,
		"-c", strconv.Itoa(clients), "-j", "2", "-T", strconv.Itoa(int(d.Seconds())), "-f", script, appDatabase)
	run.cmd.Env = append(cleanEnv(), "PGPASSWORD="+appPassword, "PGSSLMODE=disable")
	run.cmd.Stdout, run.cmd.Stderr = &run.out, &run.out
	if err := run.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { run.err = run.cmd.Wait(); close(run.done) }()
	t.Cleanup(func() {
		select {
		case <-run.done:
		default:
			_ = run.cmd.Process.Kill()
			<-run.done
		}
	})
	return run
}

var (
	pgbenchProcessedRe = regexp.MustCompile(`number of transactions actually processed: (\d+)`)
	pgbenchFailedRe    = regexp.MustCompile(`number of failed transactions: (\d+)`)
)

// result waits for the run and returns transactions processed and failed.
func (r *pgbenchRun) result(t *testing.T) (processed, failed int) {
	t.Helper()
	select {
	case <-r.done:
	case <-time.After(2 * time.Minute):
		t.Fatalf("pgbench -M %s still running", r.mode)
	}
	out := r.out.String()
	if r.err != nil {
		t.Fatalf("pgbench -M %s: %v\n%s", r.mode, r.err, out)
	}
	m := pgbenchProcessedRe.FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("pgbench -M %s printed no transaction count:\n%s", r.mode, out)
	}
	processed, _ = strconv.Atoi(m[1])
	if f := pgbenchFailedRe.FindStringSubmatch(out); f != nil {
		failed, _ = strconv.Atoi(f[1])
	}
	if strings.Contains(out, "aborted") || strings.Contains(out, "error") {
		t.Errorf("pgbench -M %s reported errors:\n%s", r.mode, out)
	}
	return processed, failed
}

// idleClient is a connection opened before the upgrades, with session
// state pgsplit must carry: a setting and a prepared statement.
type idleClient struct {
	c       *pgx.Conn
	local   string
	timeout string
}

// TestUpgradeUnderPgbenchFailsNoTransactionAndKeepsIdleClients replaces
// pgsplit's binary three times (SIGUSR2) while pgbench runs 50 clients in
// simple and 50 in prepared mode through it: no transaction fails, and 100
// connections opened before the first upgrade still answer afterwards, on
// the same TCP connections, with their settings and prepared statements;
// a cancel request reaches a client whose statement ran across an
// upgrade. A plain restart (the feature off) ends the same idle clients.
func TestUpgradeUnderPgbenchFailsNoTransactionAndKeepsIdleClients(t *testing.T) {
	setup := superConn(t)
	ctx := testCtx(t, 4*time.Minute)
	for _, q := range []string{
		`DROP TABLE IF EXISTS upg_accounts`,
		`CREATE TABLE upg_accounts (aid int PRIMARY KEY, abalance int NOT NULL DEFAULT 0)`,
		`INSERT INTO upg_accounts (aid) SELECT g FROM generate_series(1, 1000) g`,
		`GRANT ALL ON upg_accounts TO ` + appUser,
	} {
		if _, err := setup.Exec(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() { _, _ = superConn(t).Exec(context.Background(), `DROP TABLE IF EXISTS upg_accounts`) })
	waitAllCaughtUp(t)

	b := startUpgradeBed(t, upgradeConfig(""))
	idle := make([]*idleClient, 100)
	for i := range idle {
		c := connect(t, b.dsn())
		ic := &idleClient{c: c, local: c.PgConn().Conn().LocalAddr().String(), timeout: fmt.Sprintf("%dms", 60001+i)}
		if _, err := c.Exec(ctx, "SET statement_timeout = '"+ic.timeout+"'"); err != nil {
			t.Fatal(err)
		}
		if _, err := c.Prepare(ctx, "upg_read", "SELECT abalance + $1::int FROM upg_accounts WHERE aid = 1"); err != nil {
			t.Fatal(err)
		}
		idle[i] = ic
	}
	script := filepath.Join(b.dir, "chat.sql")
	if err := os.WriteFile(script, []byte(pgbenchScript), 0o644); err != nil {
		t.Fatal(err)
	}
	const runFor = 24 * time.Second
	simple := startPgbench(t, b, "simple", script, 50, runFor)
	prepared := startPgbench(t, b, "prepared", script, 50, runFor)

	// A statement that runs across the first upgrade: its client stays on
	// the old process until it ends; its cancel request goes to the new
	// process, which passes it on.
	sleeper := connect(t, b.dsn(), withCancelRequests)
	sleepErr := make(chan error, 1)
	go func() {
		_, err := sleeper.Exec(context.Background(), "SELECT pg_sleep(30)")
		sleepErr <- err
	}()
	time.Sleep(4 * time.Second)
	pids := []int{b.pid}
	for i := range 3 {
		mark := b.logs.mark()
		if i == 0 {
			// Cancel once the new process serves (the old one no longer
			// accepts).
			go func() {
				for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
					if strings.Contains(b.logs.since(mark), "upgrade: the new process serves; moving idle clients to it") {
						break
					}
				}
				cctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				defer cancel()
				_ = sleeper.PgConn().CancelRequest(cctx)
			}()
		}
		began := time.Now()
		pids = append(pids, b.upgrade(t, 30*time.Second))
		moved := 0
		for _, e := range b.logs.entries(mark) {
			if e.str("msg") == "client taken over from the previous pgsplit process" {
				moved++
			}
		}
		t.Logf("upgrade %d: pid %d → %d in %s, %d clients moved", i+1, pids[i], pids[i+1], time.Since(began).Round(time.Millisecond), moved)
		if moved < len(idle) {
			t.Errorf("upgrade %d moved %d clients, want at least the %d idle ones", i+1, moved, len(idle))
		}
		if i == 0 {
			select {
			case err := <-sleepErr:
				wantState(t, err, "57014", "the statement cancelled during the upgrade")
			case <-time.After(10 * time.Second):
				t.Fatal("the cancel request passed on to the old process did not stop pg_sleep(30)")
			}
		}
		time.Sleep(3 * time.Second)
	}
	sp, sf := simple.result(t)
	pp, pf := prepared.result(t)
	t.Logf("pgbench through 3 upgrades: simple %d transactions, %d failed; prepared %d transactions, %d failed", sp, sf, pp, pf)
	if sf != 0 || pf != 0 || sp == 0 || pp == 0 {
		t.Errorf("pgbench: simple %d processed %d failed, prepared %d processed %d failed: want 0 failed", sp, sf, pp, pf)
	}
	for i, ic := range idle {
		if got := ic.c.PgConn().Conn().LocalAddr().String(); got != ic.local {
			t.Fatalf("idle client %d: connection changed from %s to %s", i, ic.local, got)
		}
		var timeout string
		if err := ic.c.QueryRow(ctx, "SHOW statement_timeout").Scan(&timeout); err != nil {
			t.Fatalf("idle client %d after 3 upgrades: %v", i, err)
		}
		if timeout != ic.timeout {
			t.Errorf("idle client %d: statement_timeout %s after the upgrades, want %s", i, timeout, ic.timeout)
		}
		var n int
		if err := ic.c.QueryRow(ctx, "upg_read", 1).Scan(&n); err != nil {
			t.Fatalf("idle client %d: prepared statement after 3 upgrades: %v", i, err)
		}
	}
	t.Logf("100 idle clients answered after 3 upgrades on their own TCP connections, settings and prepared statements intact")

	// The feature off: a restart (SIGTERM, then a new process) ends them.
	b.stop(t)
	ended := 0
	for _, ic := range idle {
		if err := ic.c.Ping(ctx); err != nil {
			ended++
		}
	}
	if ended != len(idle) {
		t.Errorf("after SIGTERM %d of %d idle clients ended, want all (the contrast the upgrade avoids)", ended, len(idle))
	}
	t.Logf("a plain stop ends %d of %d idle clients", ended, len(idle))
}

// TestUpgradeThatCannotStartLeavesTheOldProcessServing breaks the
// configuration before SIGUSR2: the new process exits at start, the old
// one says why and goes on serving its clients and new ones.
func TestUpgradeThatCannotStartLeavesTheOldProcessServing(t *testing.T) {
	b := startUpgradeBed(t, upgradeConfig(""))
	ctx := testCtx(t, time.Minute)
	c := connect(t, b.dsn())
	mustSelectOne(t, c, "before the upgrade")
	if err := os.WriteFile(b.cfgPath, []byte(upgradeConfig("pool_sizee: 3\n")), 0o600); err != nil {
		t.Fatal(err)
	}
	mark := b.logs.mark()
	if err := syscall.Kill(b.pid, syscall.SIGUSR2); err != nil {
		t.Fatal(err)
	}
	e := b.logs.waitEntry(t, mark, 30*time.Second, "upgrade failed", func(e logEntry) bool { return e.str("msg") == "upgrade failed; this process goes on serving" })
	if !strings.Contains(e.str("error"), "exited before it served") {
		t.Errorf("upgrade failure reason %q", e.str("error"))
	}
	if !strings.Contains(b.logs.since(mark), "pool_sizee") {
		t.Errorf("the new process's log does not name the bad key:\n%s", b.logs.since(mark))
	}
	mustSelectOne(t, c, "after the failed upgrade, same connection")
	c2 := connect(t, b.dsn())
	mustSelectOne(t, c2, "a new client after the failed upgrade")
	var pe *pgconn.PgError
	if _, err := c.Exec(ctx, "SELECT 1/0"); !errors.As(err, &pe) || pe.Code != "22012" {
		t.Errorf("errors still reach the client: %v", err)
	}
}

// TestUpgradeWhoseNewProcessDiesLeavesTheOldOneServing kills (SIGKILL) the
// new process right after it took over, while a client of the old one is
// inside a transaction (so the old process is still there): the old
// process accepts again on the same port, serves its metrics endpoint
// again, its client commits, and a later upgrade succeeds. Before this
// was handled, the old process had closed its listening socket, and the
// port was dead once the new process was (connection refused).
func TestUpgradeWhoseNewProcessDiesLeavesTheOldOneServing(t *testing.T) {
	b := startUpgradeBed(t, upgradeConfig(""))
	ctx := testCtx(t, 2*time.Minute)
	inTx := connect(t, b.dsn())
	tx, err := inTx.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var one int
	if err := tx.QueryRow(ctx, "SELECT 1").Scan(&one); err != nil {
		t.Fatal(err)
	}

	b.replaceBinary(t)
	old := b.pid
	mark, newPID := b.sigUpgrade(t)
	b.logs.waitEntry(t, mark, 30*time.Second, "the old process handing over", func(e logEntry) bool {
		return e.str("msg") == "upgrade: the new process serves; moving idle clients to it"
	})
	if err := syscall.Kill(newPID, syscall.SIGKILL); err != nil { // by PID: the process the upgrade under test started
		t.Fatal(err)
	}
	b.logs.waitEntry(t, mark, 10*time.Second, "the old process to serve again", func(e logEntry) bool {
		return strings.HasPrefix(e.str("msg"), "upgrade failed after the new process took over")
	})
	if processGone(old) {
		t.Fatalf("the old process (pid %d) exited", old)
	}

	// The port is served: a new client logs in (SCRAM) and reads.
	c := connect(t, b.dsn())
	mustSelectOne(t, c, "a new client after the new process died")
	// The metrics endpoint is served again.
	resp, err := http.Get("http://" + b.metrics + "/readyz")
	if err != nil {
		t.Fatalf("metrics endpoint after the new process died: %v", err)
	}
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("/readyz after the new process died: %s", resp.Status)
	}
	// The client inside its transaction was never disturbed.
	if err := tx.QueryRow(ctx, "SELECT 2").Scan(&one); err != nil || one != 2 {
		t.Fatalf("the client in a transaction after the new process died: %v", err)
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}

	// Once the dead process is reaped, the next upgrade works, and both
	// clients move with it.
	b.logs.waitEntry(t, mark, 10*time.Second, "barriers to end", func(e logEntry) bool {
		return strings.HasPrefix(e.str("msg"), "upgrade: the new process has exited")
	})
	b.upgrade(t, 30*time.Second)
	mustSelectOne(t, inTx, "the first client after the second upgrade")
	mustSelectOne(t, c, "the second client after the second upgrade")
}

// TestStopSignalWhileAnUpgradeStartsStopsPromptly makes the new binary
// slow to start (a wrapper that waits 20 s before it runs pgsplit) and
// sends SIGTERM to the serving process meanwhile: it stops the new
// process, which never served, and exits within its shutdown_timeout (5 s)
// instead of waiting for the start; until then it serves.
func TestStopSignalWhileAnUpgradeStartsStopsPromptly(t *testing.T) {
	b := startUpgradeBed(t, upgradeConfig(""))
	c := connect(t, b.dsn())
	fifo := filepath.Join(b.dir, "wait")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	// read -t on a FIFO opened read-write: a wait in the shell itself, no
	// child process left behind when the shell is killed.
	script := fmt.Sprintf("#!/bin/bash\nread -t 20 <>%q\nexec %q \"$@\"\n", fifo, pgsplitBinary(t))
	tmp := b.bin + ".new"
	if err := os.WriteFile(tmp, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, b.bin); err != nil {
		t.Fatal(err)
	}
	old := b.pid
	mark, starting := b.sigUpgrade(t)
	mustSelectOne(t, c, "while the new process starts")
	stopAt := time.Now()
	if err := syscall.Kill(old, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "the old process to exit after SIGTERM", func() (bool, string) {
		return processGone(old), "still running"
	})
	took := time.Since(stopAt)
	if !processGone(starting) {
		t.Errorf("the new process (pid %d) still runs after the old one stopped", starting)
	}
	if !strings.Contains(b.logs.since(mark), "upgrade abandoned: this process stops") {
		t.Errorf("the old process did not say it abandoned the upgrade:\n%s", b.logs.since(mark))
	}
	t.Logf("SIGTERM while the new process started: the old one exited %s later", took.Round(time.Millisecond))
}
