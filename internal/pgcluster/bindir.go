package pgcluster

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"
)

// requiredBinaries returns the server programs Start needs in the bin dir.
func requiredBinaries() []string {
	return []string{"initdb", "pg_ctl", "postgres", "pg_basebackup"}
}

// errBinariesNotFound is the message returned by FindBinDir when nothing is found.
const errBinariesNotFound = "PostgreSQL server binaries (initdb, pg_ctl, postgres, pg_basebackup) not found in PATH, " +
	"pg_config --bindir or /usr/lib/postgresql/*/bin: install them with `apt-get install postgresql` " +
	"(Debian/Ubuntu) or set PGSPLIT_PG_BINDIR"

// FindBinDir locates the PostgreSQL server binaries (initdb, pg_ctl, postgres,
// pg_basebackup). It tries, in order: $PGSPLIT_PG_BINDIR if set, a directory
// on PATH holding initdb and pg_ctl, `pg_config --bindir` (only if initdb is
// there), then the newest /usr/lib/postgresql/*/bin. Every candidate must hold
// all four binaries. On failure the error says what to install.
func FindBinDir() (string, error) {
	if dir := os.Getenv("PGSPLIT_PG_BINDIR"); dir != "" {
		if missing := missingBinaries(dir); len(missing) > 0 {
			return "", fmt.Errorf("PGSPLIT_PG_BINDIR=%s does not contain %s: point it at the folder holding the PostgreSQL server binaries (initdb, pg_ctl, postgres, pg_basebackup)",
				dir, strings.Join(missing, ", "))
		}
		return absOr(dir), nil
	}

	for _, dir := range filepath.SplitList(os.Getenv("PATH")) {
		if dir == "" {
			continue
		}
		if len(missingBinaries(dir)) == 0 {
			return absOr(dir), nil
		}
	}

	if pgConfig, err := exec.LookPath("pg_config"); err == nil {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		out, err := exec.CommandContext(ctx, pgConfig, "--bindir").Output()
		cancel()
		if err == nil {
			dir := strings.TrimSpace(string(out))
			if dir != "" && len(missingBinaries(dir)) == 0 {
				return absOr(dir), nil
			}
		}
	}

	if dir := newestDebianBinDir("/usr/lib/postgresql"); dir != "" {
		return dir, nil
	}
	return "", errors.New(errBinariesNotFound)
}

// newestDebianBinDir returns the bin folder of the highest PostgreSQL version
// under root (Debian layout root/<version>/bin) that holds all required
// binaries, or "".
func newestDebianBinDir(root string) string {
	entries, err := os.ReadDir(root)
	if err != nil {
		return ""
	}
	type cand struct {
		dir string
		ver []int
	}
	var cands []cand
	for _, e := range entries {
		dir := filepath.Join(root, e.Name(), "bin")
		if len(missingBinaries(dir)) != 0 {
			continue
		}
		cands = append(cands, cand{dir: dir, ver: parseVersion(e.Name())})
	}
	if len(cands) == 0 {
		return ""
	}
	sort.Slice(cands, func(i, j int) bool { return versionLess(cands[j].ver, cands[i].ver) })
	return cands[0].dir
}

// parseVersion turns "9.6" or "15" into comparable numeric parts; unparsable
// parts count as -1.
func parseVersion(s string) []int {
	parts := strings.Split(s, ".")
	v := make([]int, len(parts))
	for i, p := range parts {
		n, err := strconv.Atoi(p)
		if err != nil {
			n = -1
		}
		v[i] = n
	}
	return v
}

// versionLess reports whether version a sorts before version b.
func versionLess(a, b []int) bool {
	for i := 0; i < len(a) && i < len(b); i++ {
		if a[i] != b[i] {
			return a[i] < b[i]
		}
	}
	return len(a) < len(b)
}

// missingBinaries lists the required binaries that are not executable files in dir.
func missingBinaries(dir string) []string {
	var missing []string
	for _, name := range requiredBinaries() {
		if !isExecutable(filepath.Join(dir, name)) {
			missing = append(missing, name)
		}
	}
	return missing
}

// isExecutable reports whether path is a regular file with an execute bit set.
func isExecutable(path string) bool {
	fi, err := os.Stat(path)
	if err != nil || !fi.Mode().IsRegular() {
		return false
	}
	return fi.Mode().Perm()&0o111 != 0
}

func absOr(dir string) string {
	if abs, err := filepath.Abs(dir); err == nil {
		return abs
	}
	return dir
}
