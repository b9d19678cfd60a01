package test

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/pgsplit/pgsplit/internal/pgcluster"
)

// `pgsplit version`, SHOW VERSION and the pgsplit_build_info metric of the
// same binary name the same build: the version, the commit, Go, pg_query_go
// and pgx — the versions go.mod pins for the two libraries.
func TestVersionIsTheSameInTheCLIShowVersionAndMetrics(t *testing.T) {
	out, err := exec.Command(pgsplitBinary(t), "version").CombinedOutput()
	if err != nil {
		t.Fatalf("pgsplit version: %v\n%s", err, out)
	}
	line := strings.TrimSpace(string(out))
	re := regexp.MustCompile(`^pgsplit (\S+) \(commit (\S+), (go1\.\S+), pg_query_go (v6\.\S+), pgx (v5\.\S+)\)$`)
	m := re.FindStringSubmatch(line)
	if m == nil {
		t.Fatalf("pgsplit version printed %q", line)
	}
	pgQuery, pgx := m[4], m[5]
	mod := goModVersions(t)
	if mod["github.com/pganalyze/pg_query_go/v6"] != pgQuery || mod["github.com/jackc/pgx/v5"] != pgx {
		t.Errorf("pgsplit version says pg_query_go %s, pgx %s; go.mod pins %v", pgQuery, pgx, mod)
	}

	// The same binary serving: its admin console and its metrics.
	metricsPort, err := pgcluster.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	proc := startProcessIn(t, t.TempDir(), nil,
		"PGSPLIT_LISTEN=127.0.0.1:0",
		fmt.Sprintf("PGSPLIT_SERVERS=%s:%d/primary", cluster.Primary.Host, cluster.Primary.Port),
		"PGSPLIT_AUTH_USERS="+appUser+":"+appPassword,
		"PGSPLIT_ADMIN_USERS="+adminUser+":"+adminPassword,
		fmt.Sprintf("PGSPLIT_METRICS_LISTEN=127.0.0.1:%d", metricsPort),
	)
	host, port, _ := net.SplitHostPort(proc.addr)
	admin := connect(t, fmt.Sprintf("host=%s port=%s user=%s password='%s' dbname=pgsplit sslmode=disable connect_timeout=10",
		host, port, adminUser, adminPassword))
	var show string
	if err := admin.QueryRow(testCtx(t, 10*time.Second), "SHOW VERSION").Scan(&show); err != nil {
		t.Fatal(err)
	}
	if show != line {
		t.Errorf("SHOW VERSION: %q, pgsplit version: %q", show, line)
	}
	resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/metrics", metricsPort))
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	want := fmt.Sprintf(`pgsplit_build_info{commit="%s",go="%s",pg_query="%s",pgx="%s",version="%s"} 1`, m[2], m[3], pgQuery, pgx, m[1])
	if body := string(b); !strings.Contains(body, want) {
		t.Errorf("/metrics has no %s:\n%s", want, grepLines(body, "pgsplit_build_info"))
	}
}

// goModVersions asks the go command for the versions the module requires
// of pg_query_go and pgx.
func goModVersions(t *testing.T) map[string]string {
	t.Helper()
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Path}} {{.Version}}", "github.com/pganalyze/pg_query_go/v6", "github.com/jackc/pgx/v5").Output()
	if err != nil {
		t.Fatalf("go list -m: %v", err)
	}
	v := map[string]string{}
	for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		if f := strings.Fields(l); len(f) == 2 {
			v[f[0]] = f[1]
		}
	}
	return v
}

func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
