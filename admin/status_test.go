package admin

import (
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// TestStatusPageShowsNodesPoolsStatementsAndLatency: the page renders the
// Source's nodes, pools and top statements (statement text escaped), and
// turns the cumulative histogram into per-bucket counts.
func TestStatusPageShowsNodesPoolsStatementsAndLatency(t *testing.T) {
	f := newFakeSource()
	f.queries[0].Query = "SELECT $1 WHERE '<b>' = $2"
	buckets := []LatencyBucket{{UpTo: time.Millisecond, Count: 3}, {UpTo: 10 * time.Millisecond, Count: 5}, {UpTo: -1, Count: 6}}
	rec := httptest.NewRecorder()
	StatusPage(f, func() []LatencyBucket { return buckets }, "pgsplit test").ServeHTTP(rec, httptest.NewRequest("GET", "/", nil))
	body := rec.Body.String()
	for _, want := range []string{
		`<tr data-server="127.0.0.1:5432">`, `data-k="lag_seconds">unknown<`,
		`<tr data-pool="db/app/127.0.0.1:5432">`, `data-k="open">4<`, `data-k="waiting">2<`,
		`data-k="calls">4<`, `data-k="total_ms">8.0<`, `&lt;b&gt;`,
		`data-statements="6"`, `<td>0–1ms</td><td class="n" data-k="count">3<`, `<td>1ms–10ms</td><td class="n" data-k="count">2<`, `<td>&gt; 10ms</td><td class="n" data-k="count">1<`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("the page lacks %q", want)
		}
	}
	if strings.Contains(body, "<b>") {
		t.Error("statement text reached the page unescaped")
	}
	if ct := rec.Header().Get("Content-Type"); ct != "text/html; charset=utf-8" {
		t.Errorf("Content-Type %q", ct)
	}
}
