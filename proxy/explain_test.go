package proxy

import (
	"encoding/json"
	"slices"
	"testing"
)

// analyzeFlags reads EXPLAIN (ANALYZE, FORMAT JSON) nodes as PostgreSQL
// writes them: misses both ways from missFactor and missMinRows on, none
// below either or for a node that never ran, per-loop figures, and sorts
// that spilled in the leader or only in a parallel worker.
func TestAnalyzeFlags(t *testing.T) {
	for _, c := range []struct {
		name, node string
		want       []string
	}{
		{"underestimate", `{"Node Type": "Seq Scan", "Relation Name": "t", "Schema": "public", "Plan Rows": 2, "Actual Rows": 200, "Actual Loops": 1}`,
			[]string{"row estimate off on Seq Scan public.t: estimated 2, actual 200"}},
		{"overestimate", `{"Node Type": "Hash Join", "Plan Rows": 5000, "Actual Rows": 0, "Actual Loops": 1}`,
			[]string{"row estimate off on Hash Join: estimated 5000, actual 0"}},
		{"under the noise floor", `{"Node Type": "Seq Scan", "Plan Rows": 1, "Actual Rows": 99, "Actual Loops": 1}`, nil},
		{"off by less than 10x", `{"Node Type": "Seq Scan", "Plan Rows": 100, "Actual Rows": 999, "Actual Loops": 1}`, nil},
		{"never executed", `{"Node Type": "Seq Scan", "Plan Rows": 5000, "Actual Rows": 0, "Actual Loops": 0}`, nil},
		{"per loop", `{"Node Type": "Index Scan", "Relation Name": "t", "Schema": "s", "Plan Rows": 1, "Actual Rows": 150, "Actual Loops": 40}`,
			[]string{"row estimate off on Index Scan s.t: estimated 1, actual 150 per loop over 40 loops"}},
		{"sort in memory", `{"Node Type": "Sort", "Plan Rows": 1000, "Actual Rows": 1000, "Actual Loops": 1,
			"Sort Method": "quicksort", "Sort Space Used": 80, "Sort Space Type": "Memory"}`, nil},
		{"sort spilled", `{"Node Type": "Sort", "Plan Rows": 300000, "Actual Rows": 300000, "Actual Loops": 1,
			"Sort Method": "external merge", "Sort Space Used": 3528, "Sort Space Type": "Disk"}`,
			[]string{"sort spilled to disk (3528 kB, external merge) sorting 300000 rows"}},
		{"sort spilled in workers", `{"Node Type": "Sort", "Plan Rows": 100000, "Actual Rows": 100000, "Actual Loops": 3,
			"Sort Method": "quicksort", "Sort Space Used": 3000, "Sort Space Type": "Memory",
			"Workers": [{"Worker Number": 0, "Sort Method": "external merge", "Sort Space Used": 1200, "Sort Space Type": "Disk"},
				{"Worker Number": 1, "Sort Method": "external merge", "Sort Space Used": 1300, "Sort Space Type": "Disk"}]}`,
			[]string{"sort spilled to disk (2500 kB, external merge) sorting 300000 rows"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			var n planNode
			if err := json.Unmarshal([]byte(c.node), &n); err != nil {
				t.Fatal(err)
			}
			if got := analyzeFlags(n); !slices.Equal(got, c.want) {
				t.Fatalf("flags %q, want %q", got, c.want)
			}
		})
	}
}
