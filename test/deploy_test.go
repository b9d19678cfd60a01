package test

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/pgsplit/pgsplit/config"
)

// k8scheck runs the manifest checker (test/k8scheck, a module of its own
// over the Kubernetes API types) on files and returns its output.
func k8scheck(t *testing.T, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command("go", append([]string{"run", "."}, args...)...)
	cmd.Dir = "k8scheck"
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// The example Kubernetes manifests decode strictly into the Kubernetes API
// types and fit together (selectors, probe and Service ports, references),
// and the same checker refuses a copy with one field misspelled. The
// ConfigMap's config.yaml is one pgsplit accepts.
func TestKubernetesManifestsValidateAgainstTheAPITypes(t *testing.T) {
	manifest, err := filepath.Abs("../deploy/kubernetes/pgsplit.yaml")
	if err != nil {
		t.Fatal(err)
	}
	dump := t.TempDir()
	out, err := k8scheck(t, "-external", "secret/pgsplit-auth", "-dump", dump, manifest)
	if err != nil || !strings.Contains(out, "4 objects valid") || !strings.Contains(out, "readiness /readyz on metrics") {
		t.Fatalf("k8scheck: %v\n%s", err, out)
	}
	cfg, err := config.Load(filepath.Join(dump, "pgsplit", "config.yaml"), []string{"PGSPLIT_AUTH_USERS=app:app-password"})
	if err != nil {
		t.Fatalf("the ConfigMap's config.yaml: %v", err)
	}
	if cfg.Metrics.Listen != "0.0.0.0:9930" || len(cfg.Servers) != 3 {
		t.Fatalf("the ConfigMap's config.yaml: metrics %q, %d servers", cfg.Metrics.Listen, len(cfg.Servers))
	}

	b, err := os.ReadFile(manifest)
	if err != nil {
		t.Fatal(err)
	}
	broken := filepath.Join(t.TempDir(), "broken.yaml")
	if err := os.WriteFile(broken, []byte(strings.Replace(string(b), "readinessProbe:", "readinesProbe:", 1)), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := k8scheck(t, "-external", "secret/pgsplit-auth", broken); err == nil || !strings.Contains(out, "unknown field") {
		t.Fatalf("k8scheck accepted a misspelled field: %v\n%s", err, out)
	}
	if out, err := k8scheck(t, manifest); err == nil || !strings.Contains(out, "pgsplit-auth") {
		t.Fatalf("k8scheck accepted a reference to a Secret it was not told about: %v\n%s", err, out)
	}
}

// Every metric the Grafana dashboard queries is one pgsplit exports (seen
// on /metrics of a proxy with replicas, after a statement, an error and
// health checks).
func TestGrafanaDashboardQueriesOnlyExportedMetrics(t *testing.T) {
	b, err := os.ReadFile("../deploy/grafana/pgsplit-dashboard.json")
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(b, &dash); err != nil {
		t.Fatalf("dashboard JSON: %v", err)
	}
	name := regexp.MustCompile(`\bpgsplit_[a-z0-9_]+`)
	used := map[string]string{} // metric → panel
	for _, p := range dash.Panels {
		for _, tg := range p.Targets {
			for _, m := range name.FindAllString(tg.Expr, -1) {
				used[m] = p.Title
			}
		}
	}
	if len(used) < 15 {
		t.Fatalf("the dashboard names only %d metrics", len(used))
	}

	p := routingProxy(t, func(c *config.Config) {
		c.Metrics.Listen = "127.0.0.1:0"
		c.Routing.HealthCheckInterval = 100 * time.Millisecond
	})
	c := connect(t, p.appDSN())
	mustSelectOne(t, c, "dashboard")
	_, err = c.Exec(testCtx(t, 10*time.Second), "SELECT 1/0")
	wantState(t, err, "22012", "division by zero")
	exported := map[string]bool{}
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, body := scrape(t, p, "/metrics")
		for _, l := range strings.Split(body, "\n") {
			if f := strings.Fields(l); len(f) >= 4 && f[0] == "#" && f[1] == "TYPE" {
				exported[f[2]] = true
				if f[3] == "histogram" {
					for _, s := range []string{"_bucket", "_sum", "_count"} {
						exported[f[2]+s] = true
					}
				}
			}
		}
		// Lag comes with the first health check, the error's counter once
		// its query record has gone through the sink: scrape until every
		// metric is there (or the deadline says which is not).
		all := true
		for m := range used {
			all = all && exported[m]
		}
		if all || time.Now().After(deadline) {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	for m, panel := range used {
		if !exported[m] {
			t.Errorf("panel %q queries %s, which pgsplit does not export", panel, m)
		}
	}
}
