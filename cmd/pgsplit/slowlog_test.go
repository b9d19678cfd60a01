package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// A generated query log: the ranking is by total time, not by count or by
// the slowest single statement.
func TestSlowlogRanking(t *testing.T) {
	var log strings.Builder
	line := func(ms float64, fp, q, role string) {
		fmt.Fprintf(&log, `{"level":"warn","ts":"2026-11-26T10:00:00Z","msg":"query","duration_ms":%g,"fingerprint":%q,"query":%q,"rows":1,"role":%q,"slow":true}`+"\n", ms, fp, q, role)
	}
	for range 50 {
		line(30, "many", "SELECT * FROM users WHERE id = $1", "replica") // 1500 ms in all
	}
	line(1200, "one", "SELECT pg_sleep($1)", "primary") // 1200 ms, the slowest single one
	for range 2 {
		line(900, "two", "UPDATE orders SET paid = $1", "primary") // 1800 ms
	}
	path := filepath.Join(t.TempDir(), "query.log")
	if err := os.WriteFile(path, []byte("some other line\n"+log.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	var out, errOut bytes.Buffer
	if err := slowlog([]string{"--format", "json", path}, nil, &out, &errOut); err != nil {
		t.Fatal(err)
	}
	var got struct {
		Lines, Statements int64
		Skipped           int64 `json:"skipped_lines"`
		Groups            []struct {
			Fingerprint string
			Count       int64
			TotalMS     float64 `json:"total_ms"`
			ReplicaPct  float64 `json:"replica_pct"`
		} `json:"fingerprints"`
	}
	if err := json.Unmarshal(out.Bytes(), &got); err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	order := []string{}
	for _, g := range got.Groups {
		order = append(order, g.Fingerprint)
	}
	if strings.Join(order, ",") != "two,many,one" || got.Statements != 53 || got.Skipped != 1 ||
		got.Groups[1].Count != 50 || got.Groups[1].TotalMS != 1500 || got.Groups[1].ReplicaPct != 100 {
		t.Fatalf("digest: %+v", got)
	}

	out.Reset()
	if err := slowlog([]string{"--top", "2", "--min-duration", "100ms"}, strings.NewReader(log.String()), &out, &errOut); err != nil {
		t.Fatal(err)
	}
	table := out.String()
	if !strings.Contains(table, "UPDATE orders SET paid = $1") || !strings.Contains(table, "SELECT pg_sleep($1)") ||
		strings.Contains(table, "FROM users") || !strings.Contains(table, "#1 two") || !strings.Contains(table, "#2 one") {
		t.Fatalf("table with --top 2 --min-duration 100ms:\n%s", table)
	}
	out.Reset()
	if err := slowlog([]string{"--format", "markdown", path}, nil, &out, &errOut); err != nil || !strings.HasPrefix(out.String(), "| rank | calls |") {
		t.Fatalf("markdown: %v\n%s", err, out.String())
	}
	for _, bad := range [][]string{{"--format", "xml"}, {"--since", "yesterday"}, {"/nonexistent/file"}} {
		if err := slowlog(bad, strings.NewReader(""), &out, &errOut); err == nil {
			t.Errorf("slowlog %v: want an error", bad)
		}
	}
}
