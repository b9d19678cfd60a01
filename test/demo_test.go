package test

import (
	"bufio"
	"context"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestDemo runs `pgsplit demo` as a newcomer would: it must print a working
// DATABASE_URL, psql must run a query through it, and Ctrl-C (SIGINT) must
// stop everything and remove the demo's folder.
func TestDemo(t *testing.T) {
	bin := pgsplitBinary(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "demo")
	cmd.Dir = t.TempDir() // no config.yaml here
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	lines := make(chan string, 100)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	go func() { exited <- cmd.Wait() }()

	urlRE := regexp.MustCompile(`DATABASE_URL=(\S+)`)
	dirRE := regexp.MustCompile(`removes (\S+)\)`)
	var url, dir string
	deadline := time.After(90 * time.Second)
	for url == "" {
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatalf("demo ended before printing DATABASE_URL; stderr:\n%s", stderr.String())
			}
			if m := dirRE.FindStringSubmatch(l); m != nil {
				dir = m[1]
			}
			if m := urlRE.FindStringSubmatch(l); m != nil {
				url = m[1]
			}
		case <-deadline:
			_ = cmd.Process.Kill()
			t.Fatalf("no DATABASE_URL within 90 s; stderr:\n%s", stderr.String())
		}
	}
	if dir == "" {
		t.Fatal("demo did not say which folder it uses")
	}
	out, err := exec.CommandContext(ctx, "psql", "-X", "-A", "-t", url, "-c", "SELECT 'through-pgsplit', pg_is_in_recovery()").CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != "through-pgsplit|f" {
		_ = cmd.Process.Kill()
		t.Fatalf("psql via %s: %v\n%s", url, err, out)
	}

	if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		if err != nil {
			t.Fatalf("demo exit: %v\nstderr:\n%s", err, stderr.String())
		}
	case <-time.After(60 * time.Second):
		_ = cmd.Process.Kill()
		t.Fatal("demo did not stop within 60 s of SIGINT")
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Fatalf("demo folder %s still there after Ctrl-C (stat: %v)", dir, err)
	}
}
