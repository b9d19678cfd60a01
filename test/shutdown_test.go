package test

import (
	"bufio"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// Building the binary once per package run; runMain removes binDir.
var (
	buildOnce sync.Once
	binDir    string
	binPath   string
	buildErr  error
)

// pgsplitBinary builds cmd/pgsplit into a temporary folder (once) and
// returns its path.
func pgsplitBinary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		_, file, _, ok := runtime.Caller(0)
		if !ok {
			buildErr = errors.New("cannot find the source folder")
			return
		}
		root := filepath.Dir(filepath.Dir(file))
		dir, err := os.MkdirTemp("", "pgsplit-bin-")
		if err != nil {
			buildErr = err
			return
		}
		binDir, binPath = dir, filepath.Join(dir, "pgsplit")
		cmd := exec.Command("go", "build", "-o", binPath, "./cmd/pgsplit")
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build ./cmd/pgsplit: %w\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}

// pgsplitProcess is pgsplit running as a subprocess.
type pgsplitProcess struct {
	cmd    *exec.Cmd
	addr   string
	logs   *logBuffer
	exited chan struct{}
	err    error // Wait's result, valid after exited is closed
}

// startProcess runs the pgsplit binary configured only by environment
// variables, in an empty folder (so no config.yaml is picked up), and waits
// until it listens.
func startProcess(t *testing.T, shutdownTimeout string) *pgsplitProcess {
	t.Helper()
	return startProcessIn(t, t.TempDir(), nil,
		"PGSPLIT_LISTEN=127.0.0.1:0",
		fmt.Sprintf("PGSPLIT_SERVERS=%s:%d/primary", cluster.Primary.Host, cluster.Primary.Port),
		"PGSPLIT_AUTH_USERS="+appUser+":"+appPassword,
		"PGSPLIT_SHUTDOWN_TIMEOUT="+shutdownTimeout,
		"PGSPLIT_POOL_POOL_TIMEOUT=5s",
	)
}

// startProcessIn runs the pgsplit binary in dir with args and the
// environment variables env, and waits until it listens.
func startProcessIn(t *testing.T, dir string, args []string, env ...string) *pgsplitProcess {
	t.Helper()
	bin := pgsplitBinary(t)
	cmd := exec.Command(bin, args...)
	cmd.Dir = dir
	cmd.Env = append(cleanEnv(), env...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout = io.Discard
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &pgsplitProcess{cmd: cmd, logs: &logBuffer{}, exited: make(chan struct{})}
	listening := make(chan string, 1)
	scanned := make(chan struct{})
	go func() {
		defer close(scanned)
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			line := sc.Bytes()
			_, _ = p.logs.Write(append(append([]byte(nil), line...), '\n'))
			var e logEntry
			if json.Unmarshal(line, &e) == nil && e.str("msg") == "listening" {
				select {
				case listening <- e.str("addr"):
				default:
				}
			}
		}
	}()
	go func() {
		<-scanned // Wait closes the pipe: read it all first
		p.err = cmd.Wait()
		close(p.exited)
	}()
	t.Cleanup(func() {
		select {
		case <-p.exited:
		default:
			_ = cmd.Process.Kill() // by PID: only the process this test started
			<-p.exited
		}
		if t.Failed() {
			t.Logf("pgsplit process log:\n%s", p.logs.tail(0, 60))
		}
	})
	select {
	case p.addr = <-listening:
	case <-p.exited:
		t.Fatalf("pgsplit exited at start: %v\n%s", p.err, p.logs.String())
	case <-time.After(15 * time.Second):
		t.Fatalf("pgsplit did not log \"listening\" within 15s:\n%s", p.logs.String())
	}
	return p
}

func (p *pgsplitProcess) dsn() string {
	host, port, _ := net.SplitHostPort(p.addr)
	return fmt.Sprintf("host=%s port=%s user=%s password=%s dbname=%s sslmode=disable connect_timeout=5",
		host, port, appUser, appPassword, appDatabase)
}

// waitExit waits up to d for the process to exit and returns its exit code.
func (p *pgsplitProcess) waitExit(t *testing.T, d time.Duration) int {
	t.Helper()
	select {
	case <-p.exited:
	case <-time.After(d):
		t.Fatalf("pgsplit still running %s after SIGTERM", d)
	}
	var ee *exec.ExitError
	if errors.As(p.err, &ee) {
		return ee.ExitCode()
	}
	if p.err != nil {
		t.Fatalf("wait for pgsplit: %v", p.err)
	}
	return 0
}

// waitDisconnected waits up to d for the server to end c's session and
// returns the error the session ended with.
func waitDisconnected(t *testing.T, c *pgx.Conn, d time.Duration) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	err := c.PgConn().WaitForNotification(ctx)
	if err == nil {
		t.Fatal("got a notification while waiting for the server to disconnect")
	}
	if ctx.Err() != nil {
		t.Fatalf("still connected after %s: %v", d, err)
	}
	return err
}

// wantAdminShutdown fails unless err is 57P01, or the connection simply
// closed (which is what a client may see if the FATAL message raced with
// the close).
func wantAdminShutdown(t *testing.T, err error, what string) {
	t.Helper()
	if code := sqlState(err); code != "57P01" {
		if code != "" || !(errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || isConnReset(err)) {
			t.Fatalf("%s: want SQLSTATE 57P01 (admin_shutdown) or a closed connection, got %v", what, err)
		}
		t.Logf("%s: connection closed without the 57P01 message: %v", what, err)
	}
}

// TestSIGTERMDrain runs the binary and sends it SIGTERM while client A is in
// a transaction and client B is idle: B is told 57P01 at once, new clients
// are refused, A finishes its transaction and is then disconnected, and the
// process exits 0.
func TestSIGTERMDrain(t *testing.T) {
	p := startProcess(t, "10s")
	ctx := testCtx(t, 60*time.Second)
	su := superConn(t)
	note := fmt.Sprintf("drain-%d", time.Now().UnixNano())

	a := connect(t, p.dsn())
	b := connect(t, p.dsn())
	mustSelectOne(t, b, "client B")
	// Two clients that have not logged in: one silent since connecting,
	// one stalled in the middle of SCRAM. They have no transaction to
	// finish and must not hold the shutdown up.
	silent, err := net.DialTimeout("tcp", p.addr, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	stalled, err := net.DialTimeout("tcp", p.addr, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer stalled.Close()
	if _, err := stalled.Write(startupPacket(protocol30, "user", appUser, "database", appDatabase)); err != nil {
		t.Fatal(err)
	}
	_ = stalled.SetReadDeadline(time.Now().Add(3 * time.Second))
	hdr := make([]byte, 5)
	if _, err := io.ReadFull(stalled, hdr); err != nil || hdr[0] != 'R' {
		t.Fatalf("no authentication request for the stalled client: %q %v", hdr, err)
	}
	if _, err := io.ReadFull(stalled, make([]byte, binary.BigEndian.Uint32(hdr[1:])-4)); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Exec(ctx, "BEGIN"); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Exec(ctx, "INSERT INTO shutdown_rows (note) VALUES ($1)", note+"-before"); err != nil {
		t.Fatal(err)
	}

	sent := time.Now()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	wantAdminShutdown(t, waitDisconnected(t, b, 3*time.Second), "idle client B")
	if _, err := b.Exec(ctx, "SELECT 1"); err == nil {
		t.Fatal("client B can still run a statement after being disconnected")
	}

	nc, err := net.DialTimeout("tcp", p.addr, 2*time.Second)
	if err == nil {
		nc.Close()
		t.Fatal("a new connection was accepted during shutdown")
	}
	if !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("new connection during shutdown: %v, want connection refused", err)
	}

	if _, err := a.Exec(ctx, "INSERT INTO shutdown_rows (note) VALUES ($1)", note+"-after"); err != nil {
		t.Fatalf("client A's statement during shutdown: %v", err)
	}
	if _, err := a.Exec(ctx, "COMMIT"); err != nil {
		t.Fatalf("client A's COMMIT during shutdown: %v", err)
	}
	wantAdminShutdown(t, waitDisconnected(t, a, 3*time.Second), "client A after COMMIT")
	if code := p.waitExit(t, 5*time.Second); code != 0 {
		t.Fatalf("pgsplit exit code %d, want 0", code)
	}
	if took := time.Since(sent); took > 3*time.Second {
		t.Fatalf("shutdown took %s although the only transaction ended at once", took)
	}
	for name, nc := range map[string]net.Conn{"silent": silent, "stalled in SCRAM": stalled} {
		got, err := readUntilClose(nc, time.Second)
		if err != nil {
			t.Fatalf("%s client: %v", name, err)
		}
		er, err := onlyError(got)
		if err != nil {
			t.Fatalf("%s client: %v", name, err)
		}
		if er.Code != "57P01" {
			t.Fatalf("%s client was told %s %q, want 57P01", name, er.Code, er.Message)
		}
	}
	var n int
	if err := su.QueryRow(ctx, "SELECT count(*) FROM shutdown_rows WHERE note IN ($1, $2)", note+"-before", note+"-after").Scan(&n); err != nil || n != 2 {
		t.Fatalf("rows committed during shutdown on the primary: %d %v, want 2", n, err)
	}
	p.logs.waitEntry(t, 0, time.Second, "shutdown complete", func(e logEntry) bool { return e.str("msg") == "shutdown complete" })
}

// TestSIGTERMTimeout: with shutdown_timeout 1s, a transaction that stays
// open (and a statement that keeps running) is cut off with 57P01 after
// about a second, the transaction is rolled back, and the process exits 0.
func TestSIGTERMTimeout(t *testing.T) {
	p := startProcess(t, "1s")
	ctx := testCtx(t, 60*time.Second)
	su := superConn(t)
	note := fmt.Sprintf("timeout-%d", time.Now().UnixNano())

	a := connect(t, p.dsn())
	aBackend := upstreamPID(t, a)
	if _, err := a.Exec(ctx, "BEGIN"); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Exec(ctx, "INSERT INTO shutdown_rows (note) VALUES ($1)", note); err != nil {
		t.Fatal(err)
	}
	s := connect(t, p.dsn())
	sleeper := upstreamPID(t, s)
	sleepDone := goExec(t, s, "SELECT pg_sleep(30)")
	waitSleeping(t, su, sleeper)

	sent := time.Now()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	wantAdminShutdown(t, waitDisconnected(t, a, 5*time.Second), "client A in a transaction")
	if took := time.Since(sent); took < 800*time.Millisecond || took > 3*time.Second {
		t.Fatalf("client A was disconnected %s after SIGTERM, want about shutdown_timeout (1s)", took)
	}
	select {
	case err := <-sleepDone:
		wantAdminShutdown(t, err, "client running pg_sleep(30)")
	case <-time.After(3 * time.Second):
		t.Fatal("the running pg_sleep(30) was not cut off")
	}
	if code := p.waitExit(t, 5*time.Second); code != 0 {
		t.Fatalf("pgsplit exit code %d, want 0", code)
	}
	waitFor(t, 3*time.Second, "upstream backends of the cut-off clients gone", func() (bool, string) {
		sa, ss := backendState(t, su, aBackend), backendState(t, su, sleeper)
		return sa == "" && ss == "", fmt.Sprintf("client A's backend %q, the sleeper's %q", sa, ss)
	})
	var n int
	if err := su.QueryRow(ctx, "SELECT count(*) FROM shutdown_rows WHERE note = $1", note).Scan(&n); err != nil || n != 0 {
		t.Fatalf("the cut-off transaction's row is on the primary (%d, %v): it must be rolled back", n, err)
	}
}
