package digest

import (
	"bytes"
	"compress/gzip"
	"fmt"
	"strings"
	"testing"
	"time"
)

// logLines builds a query log: per fingerprint, n entries of the given
// durations (cycled), one per second from t0, some on replicas; plus lines
// that are not query records.
func logLines(t0 time.Time) string {
	var b strings.Builder
	b.WriteString(`{"level":"info","ts":"2026-11-26T10:00:00Z","msg":"listening","addr":"127.0.0.1:6432"}` + "\n")
	b.WriteString("not json at all\n")
	i := 0
	add := func(fp, q, role string, ms float64, rows int) {
		ts := t0.Add(time.Duration(i) * time.Second).Format(time.RFC3339Nano)
		fmt.Fprintf(&b, `{"level":"info","ts":%q,"msg":"query","duration_ms":%g,"fingerprint":%q,"query":%q,"rows":%d,"role":%q}`+"\n", ts, ms, fp, q, rows, role)
		i++
	}
	for k := range 100 { // many fast reads: total 100 × 1..100 ms
		add("aaaa", "SELECT * FROM t WHERE id = $1", "replica", float64(k+1), 1)
	}
	for range 3 { // few slow writes: total 3 × 2000 ms
		add("bbbb", "UPDATE t SET v = $1", "primary", 2000, 10)
	}
	add("cccc", "SELECT pg_sleep($1)", "primary", 1200, 1)
	return b.String()
}

func TestDigestRanking(t *testing.T) {
	t0 := time.Date(2026, 11, 26, 10, 0, 0, 0, time.UTC)
	d := New(Filter{})
	if err := d.Read(strings.NewReader(logLines(t0)), nil); err != nil {
		t.Fatal(err)
	}
	if d.Lines != 106 || d.Skipped != 2 || d.Kept != 104 {
		t.Fatalf("lines %d skipped %d kept %d", d.Lines, d.Skipped, d.Kept)
	}
	g := d.Top(0)
	if len(g) != 3 || g[0].Fingerprint != "bbbb" || g[1].Fingerprint != "aaaa" || g[2].Fingerprint != "cccc" {
		t.Fatalf("ranking by total time: %+v", g)
	}
	a := g[1]
	if a.Count != 100 || a.TotalMS != 5050 || a.MeanMS != 50.5 || a.P50MS != 50 || a.P95MS != 95 || a.MaxMS != 100 ||
		a.Rows != 100 || a.ReplicaPct != 100 || !a.First.Equal(t0) || !a.Last.Equal(t0.Add(99*time.Second)) {
		t.Fatalf("group aaaa: %+v", a)
	}
	if g[0].ReplicaPct != 0 || g[0].Rows != 30 || g[0].Sample != "UPDATE t SET v = $1" {
		t.Fatalf("group bbbb: %+v", g[0])
	}
	if top := d.Top(1); len(top) != 1 || top[0].Fingerprint != "bbbb" {
		t.Fatalf("top 1: %+v", top)
	}
}

func TestDigestFilters(t *testing.T) {
	t0 := time.Date(2026, 11, 26, 10, 0, 0, 0, time.UTC)
	d := New(Filter{MinDuration: time.Second})
	if err := d.Read(strings.NewReader(logLines(t0)), nil); err != nil {
		t.Fatal(err)
	}
	if g := d.Top(0); len(g) != 2 || d.Kept != 4 {
		t.Fatalf("min-duration 1s: kept %d, %+v", d.Kept, g)
	}
	// The reads are at seconds 0..99 after t0, the UPDATEs at 100..102,
	// pg_sleep at 103: [101s, 103s) holds two UPDATEs.
	d = New(Filter{Since: t0.Add(101 * time.Second), Until: t0.Add(103 * time.Second)})
	if err := d.Read(strings.NewReader(logLines(t0)), nil); err != nil {
		t.Fatal(err)
	}
	if g := d.Top(0); d.Kept != 2 || len(g) != 1 || g[0].Fingerprint != "bbbb" {
		t.Fatalf("since/until: kept %d, %+v", d.Kept, g)
	}
}

// A gzip log reads the same, and a fingerprint with more entries than
// SampleSize keeps exact counts and close percentiles in bounded memory.
func TestDigestGzipAndLargeGroups(t *testing.T) {
	var raw bytes.Buffer
	for i := range 3 * SampleSize {
		fmt.Fprintf(&raw, `{"ts":"2026-11-26T10:00:00Z","duration_ms":%d,"fingerprint":"ffff","query":"SELECT $1","role":"replica"}`+"\n", i%1000+1)
	}
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	if _, err := zw.Write(raw.Bytes()); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	d := New(Filter{})
	if err := d.Read(&gz, nil); err != nil {
		t.Fatal(err)
	}
	g := d.Top(0)
	if len(g) != 1 || g[0].Count != 3*SampleSize || g[0].MaxMS != 1000 || len(d.groups["ffff"].sample) != SampleSize {
		t.Fatalf("%+v", g)
	}
	if g[0].P50MS < 450 || g[0].P50MS > 550 || g[0].P95MS < 900 || g[0].P95MS > 990 {
		t.Fatalf("sampled percentiles off: p50 %.0f p95 %.0f", g[0].P50MS, g[0].P95MS)
	}
}
