package proxy

import (
	"fmt"
	"math/rand/v2"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/pgsplit/pgsplit/router"
)

// TestPercentile compares the histogram's p95 with the exact one on random
// durations spanning six orders of magnitude: within 7%.
func TestPercentile(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for round := 0; round < 20; round++ {
		var h [histBuckets]uint32
		var ds []time.Duration
		var maxd time.Duration
		n := 1 + rng.IntN(5000)
		for i := 0; i < n; i++ {
			d := time.Duration(float64(time.Microsecond) * float64(rng.IntN(1000)+1) * float64(int(1)<<rng.IntN(20)))
			ds = append(ds, d)
			h[histBucket(d)]++
			maxd = max(maxd, d)
		}
		sort.Slice(ds, func(i, j int) bool { return ds[i] < ds[j] })
		exact := ds[(95*n+99)/100-1]
		got := percentile(&h, int64(n), 0.95, maxd)
		if r := float64(got) / float64(exact); r < 0.93 || r > 1.07 {
			t.Errorf("round %d: p95 %s, exact %s (n=%d)", round, got, exact, n)
		}
	}
}

// TestQueryStatsTop: statements differing only in literals are one
// fingerprint; the ranking is by total time; shapes over maxShapes are
// counted together, not dropped.
func TestQueryStatsTop(t *testing.T) {
	q := newQueryStats()
	s := &clientID{}
	rec := func(sql string, d time.Duration, role router.Target) {
		q.observe(&queryRecord{sql: sql, role: role, who: s, rows: 1}, d, d >= time.Second)
	}
	for i := 0; i < 10; i++ {
		rec(fmt.Sprintf("SELECT * FROM t WHERE id = %d", i), time.Millisecond, router.Replica)
		rec(fmt.Sprintf("select *   from t where id=%d", i), time.Millisecond, router.Primary)
	}
	rec("UPDATE t SET x = 1", 2*time.Second, router.Primary)
	top := q.top(10, normalizeSQL)
	if len(top) != 2 {
		t.Fatalf("%d fingerprints, want 2: %+v", len(top), top)
	}
	if top[0].Query != "UPDATE t SET x = $1" || top[0].Slow != 1 || top[0].Calls != 1 {
		t.Errorf("first: %+v", top[0])
	}
	if top[1].Calls != 20 || top[1].Replica != 10 || top[1].Rows != 20 || top[1].Total != 20*time.Millisecond {
		t.Errorf("second: %+v", top[1])
	}
	long := "SELECT '" + strings.Repeat("x", maxSample) + "'"
	rec(long, 3*time.Second, router.Primary)
	if top := q.top(1, normalizeSQL); top[0].Query != "(statement over 8 KB, text not kept)" {
		t.Errorf("long statement: %+v", top[0])
	}
	for i := 0; i < maxShapes+10; i++ {
		rec(fmt.Sprintf("SELECT c%d FROM t", i), time.Microsecond, router.Primary)
	}
	var calls int64
	for _, st := range q.top(maxShapes+100, func(sql string) normalized { return normalized{sql, sql} }) {
		calls += st.Calls
	}
	if calls != 22+maxShapes+10 {
		t.Errorf("%d calls counted, want %d", calls, 22+maxShapes+10)
	}
}

func BenchmarkQueryStatsObserve(b *testing.B) {
	q := newQueryStats()
	r := &queryRecord{sql: "SELECT abalance FROM pgbench_accounts WHERE aid = 4242", role: router.Replica, who: &clientID{}}
	b.ReportAllocs()
	for b.Loop() {
		q.observe(r, time.Millisecond, false)
	}
}

// TestQueryLogNormalizeSurvivesDeepStatements: the query log's normalize
// and fingerprint (libpg_query, no stack check) never see a statement the
// parser guard refuses; before the guard, these ended the process with
// SIGSEGV during cgo execution.
func TestQueryLogNormalizeSurvivesDeepStatements(t *testing.T) {
	for _, sql := range []string{
		"SELECT 1" + strings.Repeat("+1", 100000),
		"SELECT " + strings.Repeat("(", 5000) + "1" + strings.Repeat(")", 5000),
		"SELECT ARRAY" + strings.Repeat("[", 3000) + "1" + strings.Repeat("]", 3000),
	} {
		n := normalizeSQL(sql)
		if n.text != "(unparsable)" || !strings.HasPrefix(n.fingerprint, "x") {
			t.Errorf("normalizeSQL of a %d-byte deep statement = %q, %q", len(sql), n.text, n.fingerprint)
		}
	}
	if n := normalizeSQL("SELECT 1" + strings.Repeat("+1", 500)); n.text == "(unparsable)" {
		t.Error("an ordinary statement is no longer normalized")
	}
}
