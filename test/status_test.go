package test

import (
	"fmt"
	"image/png"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/pgsplit/pgsplit/config"
)

// chromium is Debian's Chromium (scripts/deps/browser.sh installs it).
const chromium = "/usr/bin/chromium"

// TestStatusPageInChromiumMatchesTheConsole: the status page on the
// metrics listener, loaded in headless Chromium, renders (a screenshot with
// the histogram's bars in it) and shows what the admin console shows: the
// nodes with their roles and rotation, the pools with their connections,
// and the statements with their calls.
func TestStatusPageInChromiumMatchesTheConsole(t *testing.T) {
	if _, err := os.Stat(chromium); err != nil {
		t.Fatalf("%s is needed for the status page test: run scripts/ensure-test-deps.sh as root (apt-get install chromium)", chromium)
	}
	p := routingProxy(t, func(c *config.Config) {
		c.Metrics.Listen = "127.0.0.1:0"
		c.Routing.HealthCheckInterval = 100 * time.Millisecond
		c.Admin.Users = []config.User{{Name: adminUser, Password: adminPassword}}
	})
	c := connect(t, p.appDSN())
	const calls = 17
	for range calls {
		if _, err := c.Exec(testCtx(t, 10*time.Second), "SELECT 1 AS status_page_probe"); err != nil {
			t.Fatal(err)
		}
	}
	admin := connect(t, p.adminDSN())
	// Let a health check report every replica's lag before the snapshot.
	waitFor(t, 10*time.Second, "every node checked", func() (bool, string) {
		for _, n := range adminRows(t, admin, "SHOW NODES") {
			if n["last_check"] == nil {
				return false, fmt.Sprintf("%v not checked yet", n["port"])
			}
		}
		return true, ""
	})
	url := "http://" + p.srv.MetricsAddr().String() + "/"
	dir := t.TempDir()
	browse := func(args ...string) string {
		t.Helper()
		base := []string{"--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
			"--disable-background-networking", "--disable-component-update", "--disable-sync",
			"--user-data-dir=" + filepath.Join(dir, "profile"), "--window-size=1280,1600"}
		cmd := exec.Command(chromium, append(append(base, args...), url)...)
		cmd.Dir = dir
		var stderr strings.Builder
		cmd.Stderr = &stderr
		timer := time.AfterFunc(60*time.Second, func() { _ = cmd.Process.Kill() })
		defer timer.Stop()
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("chromium %s: %v\n%s", strings.Join(args, " "), err, stderr.String())
		}
		return string(out)
	}
	dom := browse("--dump-dom")
	nodes := adminRows(t, admin, "SHOW NODES")
	pools := adminRows(t, admin, "SHOW POOLS")
	queries := adminRows(t, admin, "SHOW QUERIES")

	shot := filepath.Join(dir, "status.png")
	browse("--screenshot=" + shot)
	checkScreenshot(t, shot)

	cell := func(rowAttr, key string) string {
		re := regexp.MustCompile(regexp.QuoteMeta(rowAttr) + `">(?s:.*?)data-k="` + key + `">([^<]*(?:<span[^>]*>[^<]*</span>)?[^<]*)<`)
		m := re.FindStringSubmatch(dom)
		if m == nil {
			t.Fatalf("the page has no %s cell in the row %s:\n%s", key, rowAttr, dom)
		}
		return regexp.MustCompile(`<[^>]+>`).ReplaceAllString(m[1], "")
	}
	for _, n := range nodes {
		row := fmt.Sprintf(`data-server="%s:%v`, n["host"], n["port"])
		if got := cell(row, "role"); got != n["role"] {
			t.Errorf("node %s:%v: the page says role %q, SHOW NODES %q", n["host"], n["port"], got, n["role"])
		}
		rot := cell(row, "rotation")
		if inRot := n["in_rotation"] == true; inRot != (rot == "in rotation") {
			t.Errorf("node %s:%v: the page says %q, SHOW NODES in_rotation %v", n["host"], n["port"], rot, n["in_rotation"])
		}
		if health := cell(row, "health"); (n["healthy"] == true) != strings.HasPrefix(health, "up") {
			t.Errorf("node %s:%v: the page says %q, SHOW NODES healthy %v", n["host"], n["port"], health, n["healthy"])
		}
	}
	if len(pools) == 0 {
		t.Fatal("SHOW POOLS lists no pool after the workload")
	}
	for _, pl := range pools {
		row := fmt.Sprintf(`data-pool="%s/%s/%s`, pl["database"], pl["user"], pl["server"])
		if got, want := cell(row, "idle"), fmt.Sprint(pl["sv_idle"]); got != want {
			t.Errorf("pool %s: the page says %s idle, SHOW POOLS sv_idle %s", row, got, want)
		}
		open := fmt.Sprint(pl["sv_active"].(int64) + pl["sv_idle"].(int64) + pl["sv_login"].(int64))
		if got := cell(row, "open"); got != open {
			t.Errorf("pool %s: the page says %s open, SHOW POOLS %s (sv_active + sv_idle + sv_login)", row, got, open)
		}
	}
	var found bool
	for _, q := range queries {
		if !strings.Contains(fmt.Sprint(q["query"]), "status_page_probe") {
			continue
		}
		found = true
		row := fmt.Sprintf(`data-fingerprint="%s`, q["fingerprint"])
		if got := cell(row, "calls"); got != fmt.Sprint(q["calls"]) || got != fmt.Sprint(calls) {
			t.Errorf("the page says %s calls of the test's statement, SHOW QUERIES %v, the test ran %d", got, q["calls"], calls)
		}
	}
	if !found {
		t.Errorf("SHOW QUERIES has no row for the test's statement: %v", queries)
	}
	if !strings.Contains(dom, `id="latency-total"`) {
		t.Error("the page has no latency histogram")
	}
}

// checkScreenshot decodes the PNG Chromium wrote and checks that the page
// was drawn: the window's size, and the histogram bars' colour (#3d7bd9)
// among its pixels.
func checkScreenshot(t *testing.T, path string) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatalf("no screenshot: %v", err)
	}
	defer f.Close()
	img, err := png.Decode(f)
	if err != nil {
		t.Fatalf("screenshot %s: %v", path, err)
	}
	if b := img.Bounds(); b.Dx() != 1280 || b.Dy() < 600 {
		t.Errorf("screenshot is %v, want 1280 wide", b)
	}
	bars := 0
	colours := map[uint32]bool{}
	b := img.Bounds()
	for y := b.Min.Y; y < b.Max.Y; y += 2 {
		for x := b.Min.X; x < b.Max.X; x += 2 {
			r, g, bl, _ := img.At(x, y).RGBA()
			colours[r>>8<<16|g>>8<<8|bl>>8] = true
			if r>>8 == 0x3d && g>>8 == 0x7b && bl>>8 == 0xd9 {
				bars++
			}
		}
	}
	if bars == 0 || len(colours) < 4 {
		t.Errorf("screenshot %s: %d pixels of the bars' colour, %d colours: the page was not drawn", path, bars, len(colours))
	}
	t.Logf("screenshot %v: %d colours, %d bar pixels (every other pixel sampled)", b, len(colours), bars)
}
