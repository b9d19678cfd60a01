package pgcluster

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// run executes a command (as the server OS user if asServer) and returns its
// trimmed combined output; the error includes the command line and output.
func (c *Cluster) run(ctx context.Context, asServer bool, bin string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Dir = "/"
	var su *serverUser
	if asServer {
		su = c.su
	}
	if su != nil {
		su.apply(cmd)
	}
	cmd.Env = childEnv(su)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	// pg_ctl start leaves a daemon behind; it does not hold our pipe (its
	// output goes to the -l log), but never hang on it if it did.
	cmd.WaitDelay = 10 * time.Second
	err := cmd.Run()
	text := strings.TrimSpace(out.String())
	if err != nil {
		msg := fmt.Sprintf("%s %s", filepath.Base(bin), strings.Join(args, " "))
		if text != "" {
			return text, fmt.Errorf("%s: %w\n%s", msg, err, text)
		}
		return text, fmt.Errorf("%s: %w", msg, err)
	}
	return text, nil
}

// childEnv is the environment for child processes: ours without PG*
// variables (PGPORT, PGDATA, PGPASSWORD… would interfere), and with HOME,
// USER and LOGNAME of su if set.
func childEnv(su *serverUser) []string {
	var env []string
	for _, kv := range os.Environ() {
		key, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(key, "PG") {
			continue
		}
		if su != nil && (key == "HOME" || key == "USER" || key == "LOGNAME") {
			continue
		}
		env = append(env, kv)
	}
	if su != nil {
		env = append(env, "HOME="+su.home, "USER="+su.name, "LOGNAME="+su.name)
	}
	return env
}

func (c *Cluster) bin(name string) string { return filepath.Join(c.BinDir, name) }

func (c *Cluster) logPath(n Node) string { return filepath.Join(c.Dir, n.Name+".log") }

func (c *Cluster) logf(format string, args ...any) {
	fmt.Fprintf(c.log, format+"\n", args...)
}

// freePort returns a free port not yet handed out to this cluster.
func (c *Cluster) freePort() (int, error) {
	for range 20 {
		p, err := FreePort()
		if err != nil {
			return 0, err
		}
		if !c.usedPorts[p] {
			c.usedPorts[p] = true
			return p, nil
		}
	}
	return 0, errors.New("find free port: kept getting ports already in use by this cluster")
}

// chown gives path to the server OS user (no-op when not root).
func (c *Cluster) chown(path string) error {
	if c.su == nil {
		return nil
	}
	if err := os.Chown(path, c.su.uid, c.su.gid); err != nil {
		return fmt.Errorf("chown %s to %s: %w", path, c.su.name, err)
	}
	return nil
}

// mkdirOwned creates dir with mode 0700 owned by the server OS user.
func (c *Cluster) mkdirOwned(dir string) error {
	if err := os.Mkdir(dir, 0o700); err != nil && !errors.Is(err, os.ErrExist) {
		return fmt.Errorf("create %s: %w", dir, err)
	}
	return c.chown(dir)
}

// appendLines appends lines to the file at path (a config file: the last
// setting wins).
func appendLines(path string, lines []string) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		return fmt.Errorf("open %s: %w", path, err)
	}
	if _, err := f.WriteString(strings.Join(lines, "\n") + "\n"); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

// addressInUse reports whether a server log says the port was taken.
func addressInUse(log string) bool {
	for _, s := range []string{"Address already in use", "could not create any TCP/IP sockets", "another postmaster already running on port"} {
		if strings.Contains(log, s) {
			return true
		}
	}
	return false
}

// logTail returns the last lines (at most ~4 KB, 30 lines) of a log file.
func logTail(path string) string {
	const maxBytes, maxLines = 4096, 30
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return ""
	}
	off := fi.Size() - maxBytes
	if off < 0 {
		off = 0
	}
	buf := make([]byte, fi.Size()-off)
	n, _ := f.ReadAt(buf, off)
	text := strings.TrimRight(string(buf[:n]), "\n")
	lines := strings.Split(text, "\n")
	if off > 0 && len(lines) > 1 {
		lines = lines[1:] // drop the partial first line
	}
	if len(lines) > maxLines {
		lines = lines[len(lines)-maxLines:]
	}
	return strings.Join(lines, "\n")
}

// tailSection formats a log tail for an error message.
func tailSection(path, tail string) string {
	if tail == "" {
		return fmt.Sprintf("\n--- %s is empty or missing ---", path)
	}
	return fmt.Sprintf("\n--- tail of %s ---\n%s", path, tail)
}

func fileExists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

// quoteIdent quotes a SQL identifier.
func quoteIdent(s string) string {
	return `"` + strings.ReplaceAll(s, `"`, `""`) + `"`
}

// quoteLiteral quotes a SQL string literal (standard_conforming_strings is on
// by default, so backslashes need no escaping).
func quoteLiteral(s string) string {
	return "'" + strings.ReplaceAll(s, "'", "''") + "'"
}

// confQuote quotes a postgresql.conf string value.
func confQuote(s string) string {
	s = strings.ReplaceAll(s, `\`, `\\`)
	return "'" + strings.ReplaceAll(s, "'", "''") + "'"
}

// connQuote quotes a libpq key=value connection string value.
func connQuote(s string) string {
	s = strings.ReplaceAll(s, `\`, `\\`)
	return "'" + strings.ReplaceAll(s, "'", `\'`) + "'"
}
