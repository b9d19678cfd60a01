package router

import (
	"fmt"
	"slices"
	"testing"
	"time"
)

const (
	benchSelect = "SELECT id, name FROM users WHERE id = $1"
	benchCTE    = `WITH recent AS (
    SELECT o.user_id, count(*) AS n, max(o.created_at) AS last_order
    FROM orders o
    WHERE o.created_at > now() - interval '30 days'
    GROUP BY o.user_id
)
SELECT u.id, u.name, r.n, r.last_order
FROM users u JOIN recent r ON r.user_id = u.id
WHERE u.active AND r.n > $1
ORDER BY r.n DESC
LIMIT 50`
)

// benchMedian runs op b.N times in batches and reports the median time per
// call as p50-ns/op, next to the mean that the testing package reports.
func benchMedian(b *testing.B, op func()) {
	b.Helper()
	const batch = 64
	var samples []float64
	b.ReportAllocs()
	b.ResetTimer()
	for done := 0; done < b.N; {
		n := min(batch, b.N-done)
		t0 := time.Now()
		for i := 0; i < n; i++ {
			op()
		}
		samples = append(samples, float64(time.Since(t0).Nanoseconds())/float64(n))
		done += n
	}
	b.StopTimer()
	slices.Sort(samples)
	b.ReportMetric(samples[len(samples)/2], "p50-ns/op")
}

func BenchmarkClassifyFastPath(b *testing.B) {
	c := NewClassifier(Options{})
	if st := c.Classify(benchSelect); st.Target != Replica {
		b.Fatal(st.Reason)
	}
	benchMedian(b, func() { c.Classify(benchSelect) })
}

func BenchmarkClassifyCachedHit(b *testing.B) {
	c := NewClassifier(Options{})
	c.Classify(benchCTE)
	if _, ok := c.cache.get(benchCTE); !ok {
		b.Fatal("not cached")
	}
	benchMedian(b, func() { c.Classify(benchCTE) })
}

func BenchmarkClassifyCachedHitParallel(b *testing.B) {
	c := NewClassifier(Options{})
	c.Classify(benchCTE)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			c.Classify(benchCTE)
		}
	})
}

func BenchmarkFullParseCTE(b *testing.B) {
	c := NewClassifier(Options{})
	if st := c.parse(benchCTE, HintNone); st.Target != Replica {
		b.Fatal(st.Reason)
	}
	benchMedian(b, func() { c.parse(benchCTE, HintNone) })
}

func BenchmarkFullParseSelect(b *testing.B) {
	c := NewClassifier(Options{})
	benchMedian(b, func() { c.parse(benchSelect, HintNone) })
}

// TestHotPathAllocations holds the allocation budget that the benchmarks
// report: none for the fast path and for a cache hit.
func TestHotPathAllocations(t *testing.T) {
	c := NewClassifier(Options{})
	c.Classify(benchCTE)
	for name, sql := range map[string]string{"fast path": benchSelect, "cache hit": benchCTE,
		"fast path with functions": "SELECT count(*), max(id) FROM users WHERE lower(name) = $1"} {
		if n := testing.AllocsPerRun(100, func() { c.Classify(sql) }); n != 0 && name != "fast path with functions" {
			t.Errorf("%s: %v allocations per call", name, n)
		} else if name == "fast path with functions" && n > 1 {
			t.Errorf("%s: %v allocations per call (want at most the Funcs slice)", name, n)
		}
	}
}

// BenchmarkClassifyWriteWithValues: a simple-protocol UPDATE whose values
// change every time (pgbench -M simple's tpcb-like): answered from the
// shape cache instead of a parse.
func BenchmarkClassifyWriteWithValues(b *testing.B) {
	c := NewClassifier(Options{})
	sqls := make([]string, 1024)
	for i := range sqls {
		sqls[i] = fmt.Sprintf("UPDATE pgbench_accounts SET abalance = abalance + %d WHERE aid = %d;", i%5000+1, i*977)
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		c.Classify(sqls[i%len(sqls)])
		i++
	}
}
