package test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgsplit/pgsplit/config"
)

// The compatibility matrix: every driver's cell (test/compat/README.md says
// what a cell is and how an external one reports) runs straight against the
// primary, through pgsplit in transaction mode with routing on, and through
// pgsplit in session mode (the smaller pass). A failure names the driver,
// the target and the check.

// The matrix's own login and database, so that its tables and its
// createdb/dropdb stay apart from the other tests'.
const (
	compatUser     = "compat"
	compatPassword = "compat-Pw-81"
	compatDatabase = "compat"
)

// The checks every cell runs (or reports skipped with the reason).
var compatCommonChecks = []string{
	"types", "tx_own_write", "ryw_same_conn", "ryw_other_conn", "error_rollback",
	"cancel", "large_result", "large_value", "listen_notify", "concurrency",
}

// compatSessionSkip are the checks the session-mode pass leaves out: that
// pass is about what session pooling changes, not about size.
var compatSessionSkip = []string{"large_result", "large_value", "concurrency"}

// compatTarget is one way a cell reaches PostgreSQL.
type compatTarget struct {
	name string // direct | transaction | session
	host string
	port int
	skip []string
}

// compatEnv is what a cell is given: where to connect, as whom, and the
// prefix its tables take.
type compatEnv struct {
	target   string
	host     string
	port     int
	user     string
	password string
	database string
	prefix   string
	skip     map[string]bool
}

// url is the target as a libpq-style URL.
func (e compatEnv) url() string {
	return fmt.Sprintf("postgres://%s:%s@%s/%s?sslmode=disable",
		e.user, e.password, net.JoinHostPort(e.host, strconv.Itoa(e.port)), e.database)
}

// environ is the environment an external cell runs with.
func (e compatEnv) environ() []string {
	skip := make([]string, 0, len(e.skip))
	for k := range e.skip {
		skip = append(skip, k)
	}
	sort.Strings(skip)
	return append(cleanEnv(),
		"COMPAT_TARGET="+e.target,
		"COMPAT_HOST="+e.host,
		"COMPAT_PORT="+strconv.Itoa(e.port),
		"COMPAT_USER="+e.user,
		"COMPAT_PASSWORD="+e.password,
		"COMPAT_DB="+e.database,
		"COMPAT_DSN="+e.url(),
		"COMPAT_PREFIX="+e.prefix,
		"COMPAT_SKIP="+strings.Join(skip, ","),
	)
}

// versionCheck is the pseudo-check a cell's {"version": …} line becomes:
// the driver's version for the report, not a check.
const versionCheck = "version"

// compatResult is one check's outcome, as a cell reports it.
type compatResult struct {
	Check  string  `json:"check"`
	OK     bool    `json:"ok"`
	Skip   string  `json:"skip,omitempty"` // not applicable: why
	Detail string  `json:"detail,omitempty"`
	MS     float64 `json:"ms,omitempty"`
}

// compatCell is one driver (or tool) in one configuration.
type compatCell struct {
	driver string
	// extra are the driver's own checks beyond the common ones.
	extra []string
	// tool: a command-line tool, whose cell runs only its extra checks
	// (the common ones are about drivers).
	tool bool
	// version is the driver's, for the report (an external cell may
	// report its own instead).
	version string
	// run runs the cell and returns every check's result; a cell that
	// cannot run at all fails t itself.
	run func(t *testing.T, env compatEnv) []compatResult
}

// compatCells is every cell of the matrix, in the order of the README's
// table; each driver family lists its own in compat_<family>_test.go.
func compatCells() []compatCell {
	var cells []compatCell
	for _, family := range [][]compatCell{
		compatGoCells(), compatPythonCells(), compatNodeCells(), compatJavaCells(), compatToolCells(),
	} {
		cells = append(cells, family...)
	}
	return cells
}

// TestCompatMatrix runs every cell against every target.
func TestCompatMatrix(t *testing.T) {
	compatSetup(t)
	tx := startProxyWith(t, compatConfig(config.ModeTransaction))
	sess := startProxyWith(t, compatConfig(config.ModeSession))
	targets := []compatTarget{
		{name: "direct", host: cluster.Primary.Host, port: cluster.Primary.Port},
		{name: "transaction", host: tx.host, port: tx.port},
		{name: "session", host: sess.host, port: sess.port, skip: compatSessionSkip},
	}
	report := &compatReport{}
	for _, cell := range compatCells() {
		for _, tg := range targets {
			t.Run(cell.driver+"/"+tg.name, func(t *testing.T) {
				env := compatEnv{
					target: tg.name, host: tg.host, port: tg.port,
					user: compatUser, password: compatPassword, database: compatDatabase,
					prefix: compatPrefix(cell.driver, tg.name), skip: map[string]bool{},
				}
				for _, s := range tg.skip {
					env.skip[s] = true
				}
				began := time.Now()
				results := cell.run(t, env)
				report.add(cell, tg.name, checkCompatResults(t, cell, env, results), time.Since(began))
			})
		}
	}
	if path := os.Getenv("PGSPLIT_COMPAT_REPORT"); path != "" {
		if err := os.WriteFile(path, []byte(report.markdown()), 0o644); err != nil {
			t.Errorf("write the compatibility report: %v", err)
		}
	}
	t.Logf("compatibility matrix:\n%s", report.markdown())
}

// checkCompatResults fails t for every failed check and for every check
// the cell should have reported and did not; it returns the results with
// the missing ones added as failures.
func checkCompatResults(t *testing.T, cell compatCell, env compatEnv, results []compatResult) []compatResult {
	t.Helper()
	seen := map[string]bool{}
	for _, r := range results {
		seen[r.Check] = true
		switch {
		case r.Check == versionCheck:
		case r.Skip != "":
		case !r.OK:
			t.Errorf("%s / %s / %s: %s", cell.driver, env.target, r.Check, r.Detail)
		}
	}
	want := cell.extra
	if !cell.tool {
		want = append(append([]string{}, compatCommonChecks...), cell.extra...)
	}
	for _, c := range want {
		if !seen[c] && !env.skip[c] {
			t.Errorf("%s / %s / %s: the cell did not report this check", cell.driver, env.target, c)
			results = append(results, compatResult{Check: c, Detail: "not reported"})
		}
	}
	return results
}

// compatPrefix names a cell's tables: c_<driver>_<target>_, lower case,
// letters and digits only.
func compatPrefix(driver, target string) string {
	var b strings.Builder
	b.WriteString("c_")
	for _, r := range strings.ToLower(driver + "_" + target) {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9':
			b.WriteRune(r)
		default:
			b.WriteByte('_')
		}
	}
	b.WriteByte('_')
	return b.String()
}

// compatConfig is what a DBA following the team guide writes: the primary
// and both replicas, SCRAM, reads routed with read-your-writes (the
// defaults), and the guide's development pool (5 + 10), small on purpose:
// the cells' 50 concurrent clients share it.
func compatConfig(mode string) *config.Config {
	cfg := baseConfig()
	// One login, so the connection-limits check counts one user's pools.
	cfg.Auth.Users = []config.User{{Name: compatUser, Password: compatPassword}}
	cfg.Routing = config.DefaultRouting()
	cfg.Pool.Mode = mode
	cfg.Pool.PoolSize, cfg.Pool.MaxOverflow = 5, 10
	cfg.Pool.PoolTimeout = 30 * time.Second
	if mode == config.ModeSession {
		// A session holds its server connections: the guide's production
		// pool, so the pass's clients all fit.
		cfg.Pool.PoolSize, cfg.Pool.MaxOverflow = 20, 40
	}
	return cfg
}

// compatSetup creates the matrix's role and database on the primary (once
// per test binary) and waits until the replicas have them.
func compatSetup(t *testing.T) {
	t.Helper()
	ctx := testCtx(t, time.Minute)
	su := connect(t, cluster.SuperuserDSN(cluster.Primary, "postgres"))
	var exists bool
	if err := su.QueryRow(ctx, "SELECT EXISTS (SELECT FROM pg_roles WHERE rolname = $1)", compatUser).Scan(&exists); err != nil {
		t.Fatal(err)
	}
	if !exists {
		for _, s := range []string{
			fmt.Sprintf("CREATE ROLE %s LOGIN CREATEDB PASSWORD '%s'", compatUser, compatPassword),
			fmt.Sprintf("CREATE DATABASE %s OWNER %s", compatDatabase, compatUser),
		} {
			if _, err := su.Exec(ctx, s); err != nil {
				t.Fatalf("%s: %v", s, err)
			}
		}
	}
	if err := waitReplicated(ctx); err != nil {
		t.Fatal(err)
	}
}

// externalCell is a cell run as a program: argv gives the command (or
// fails t saying what to install), which reports one JSON line per check
// on stdout (test/compat/README.md).
func externalCell(driver string, extra []string, argv func(t *testing.T) []string) compatCell {
	return compatCell{driver: driver, extra: extra, run: externalRun(driver, argv)}
}

// externalRun runs argv as a cell's program and collects its report.
func externalRun(driver string, argv func(t *testing.T) []string) func(t *testing.T, env compatEnv) []compatResult {
	return func(t *testing.T, env compatEnv) []compatResult {
		t.Helper()
		args := argv(t)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, args[0], args[1:]...)
		cmd.Env = env.environ()
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		err := cmd.Run()
		results, done, perr := parseCompatLines(stdout.Bytes())
		if err != nil || perr != nil || !done {
			t.Errorf("%s / %s: %s: exit %v, parse %v, finished %v\nstderr (tail):\n%s\nstdout (tail):\n%s",
				driver, env.target, strings.Join(args, " "), err, perr, done, tail(stderr.String(), 40), tail(stdout.String(), 20))
		}
		return results
	}
}

// parseCompatLines reads a cell's report: JSON objects, one per line, the
// last {"done": true}. Other lines are the cell's own chatter and ignored.
func parseCompatLines(out []byte) (results []compatResult, done bool, err error) {
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := bytes.TrimSpace(sc.Bytes())
		if len(line) == 0 || line[0] != '{' {
			continue
		}
		var m map[string]json.RawMessage
		if err := json.Unmarshal(line, &m); err != nil {
			return results, done, fmt.Errorf("line %q: %w", line, err)
		}
		if _, ok := m["done"]; ok {
			done = true
			continue
		}
		if v, ok := m["version"]; ok {
			var version string
			if err := json.Unmarshal(v, &version); err != nil {
				return results, done, fmt.Errorf("line %q: %w", line, err)
			}
			results = append(results, compatResult{Check: versionCheck, Detail: version})
			continue
		}
		var r compatResult
		if err := json.Unmarshal(line, &r); err != nil {
			return results, done, fmt.Errorf("line %q: %w", line, err)
		}
		if r.Check == "" {
			return results, done, fmt.Errorf("line %q has no check", line)
		}
		results = append(results, r)
	}
	return results, done, sc.Err()
}

// tail is the last n lines of s.
func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// goCheck is one check of an in-process Go cell.
type goCheck struct {
	name string
	run  func(ctx context.Context) error
}

// runGoChecks runs checks in order (each with its own time limit) and
// reports them as an external cell would.
func runGoChecks(env compatEnv, checks []goCheck) []compatResult {
	var out []compatResult
	for _, c := range checks {
		if env.skip[c.name] {
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		began := time.Now()
		err := safeRun(ctx, c.run)
		cancel()
		r := compatResult{Check: c.name, OK: err == nil, MS: float64(time.Since(began).Microseconds()) / 1000}
		if err != nil {
			if s, ok := err.(skipError); ok {
				r.OK, r.Skip = true, string(s)
			} else {
				r.Detail = err.Error()
			}
		}
		out = append(out, r)
	}
	return out
}

// skipError marks a check that does not apply to a driver.
type skipError string

func (s skipError) Error() string { return "skipped: " + string(s) }

// safeRun runs f, turning a panic into an error.
func safeRun(ctx context.Context, f func(context.Context) error) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("panic: %v", r)
		}
	}()
	return f(ctx)
}

// compatReport collects the matrix's outcome for the README's table.
type compatReport struct {
	mu   sync.Mutex
	rows []compatRow
}

type compatRow struct {
	driver, target string
	version        string
	extra          []string
	pass, fail     int
	skipped        []string
	took           time.Duration
}

func (r *compatReport) add(cell compatCell, target string, results []compatResult, took time.Duration) {
	row := compatRow{driver: cell.driver, target: target, took: took, version: cell.version, extra: cell.extra}
	for _, res := range results {
		switch {
		case res.Check == versionCheck:
			row.version = res.Detail
		case res.Skip != "":
			row.skipped = append(row.skipped, res.Check+" ("+res.Skip+")")
		case res.OK:
			row.pass++
		default:
			row.fail++
		}
	}
	r.mu.Lock()
	r.rows = append(r.rows, row)
	r.mu.Unlock()
}

// markdown is the report as a table: one row per driver, one column per
// target, each cell "passed/run".
func (r *compatReport) markdown() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var drivers []string
	byKey := map[string]compatRow{}
	for _, row := range r.rows {
		if _, ok := byKey[row.driver+"/direct"]; !ok && !contains(drivers, row.driver) {
			drivers = append(drivers, row.driver)
		}
		byKey[row.driver+"/"+row.target] = row
	}
	var b strings.Builder
	b.WriteString("| driver | version | its own checks (besides the common ones) | direct | transaction | session | not applicable |\n|---|---|---|---|---|---|---|\n")
	for _, d := range drivers {
		first := byKey[d+"/direct"]
		for _, tg := range []string{"transaction", "session"} {
			if first.version == "" {
				first.version = byKey[d+"/"+tg].version
			}
		}
		fmt.Fprintf(&b, "| %s | %s | %s |", d, first.version, strings.Join(first.extra, ", "))
		var skipped []string
		for _, tg := range []string{"direct", "transaction", "session"} {
			row, ok := byKey[d+"/"+tg]
			if !ok {
				b.WriteString(" – |")
				continue
			}
			mark := "✅"
			if row.fail > 0 {
				mark = "❌"
			}
			fmt.Fprintf(&b, " %s %d/%d (%.1fs) |", mark, row.pass, row.pass+row.fail, row.took.Seconds())
			for _, s := range row.skipped {
				if !contains(skipped, s) {
					skipped = append(skipped, s)
				}
			}
		}
		fmt.Fprintf(&b, " %s |\n", strings.Join(skipped, "; "))
	}
	return b.String()
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// compatDB opens a pgx connection for env with cancel requests on.
func compatDB(ctx context.Context, env compatEnv, tweak func(*pgx.ConnConfig)) (*pgx.Conn, error) {
	cfg, err := pgx.ParseConfig(env.url())
	if err != nil {
		return nil, err
	}
	withCancelRequests(cfg)
	if tweak != nil {
		tweak(cfg)
	}
	return pgx.ConnectConfig(ctx, cfg)
}
