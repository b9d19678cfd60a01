package router

import (
	"fmt"
	"reflect"
	"regexp"
	"sync"
	"testing"
)

func TestCacheBounded(t *testing.T) {
	for _, size := range []int{1, 5, 100, 1000, 5000} {
		c := NewClassifier(Options{CacheSize: size})
		hot := "WITH hot AS (SELECT 1) SELECT * FROM hot"
		for i := 0; i < 3*size+100; i++ {
			c.Classify(fmt.Sprintf("WITH x AS (SELECT %d) SELECT * FROM x", i))
			if i%4 == 0 {
				c.Classify(hot) // keep it referenced
			}
		}
		shards := len(c.cache.shards)
		if n := c.CacheLen(); n > size+shards-1 || n == 0 {
			t.Errorf("size %d: %d entries in %d shards", size, n, shards)
		}
		if _, ok := c.cache.get(hot); !ok && size >= 100 {
			t.Errorf("size %d: a statement used all along was evicted", size)
		}
	}
}

func TestCacheOff(t *testing.T) {
	c := NewClassifier(Options{CacheSize: -1})
	c.Classify("WITH x AS (SELECT 1) SELECT * FROM x")
	if n := c.CacheLen(); n != 0 {
		t.Fatalf("CacheSize -1 cached %d statements", n)
	}
	c.Reset() // must not panic without a cache
}

// TestCacheHitEqualsParse: a small cache that keeps evicting gives, on a
// second pass over the golden statements, the answers of a classifier
// without a cache (a cache bug, such as an answer stored under the wrong
// key, shows here).
func TestCacheHitEqualsParse(t *testing.T) {
	opts := goldenOptions()
	opts.CacheSize = 8
	c := NewClassifier(opts)
	opts.CacheSize = -1
	ref := NewClassifier(opts)
	golden := readGolden(t)
	for pass := range 2 {
		for _, gc := range golden {
			got, want := c.Classify(gc.sql), ref.Classify(gc.sql)
			if !reflect.DeepEqual(got, want) {
				t.Errorf("pass %d, line %d %q: cached answer differs:\n\t%s\n\t%s", pass, gc.line, gc.sql, describe(got), describe(want))
			}
		}
	}
}

// TestReset: a catalog reload changes the answer only once the cache is
// dropped.
func TestReset(t *testing.T) {
	var mu sync.Mutex
	volatile := true
	c := NewClassifier(Options{Volatile: func(name string) (bool, bool) {
		mu.Lock()
		defer mu.Unlock()
		return volatile, name == "report"
	}})
	const sql = "WITH x AS (SELECT report(1)) SELECT * FROM x"
	if st := c.Classify(sql); st.Target != Primary {
		t.Fatalf("volatile function: got %s", st.Target)
	}
	mu.Lock()
	volatile = false
	mu.Unlock()
	if st := c.Classify(sql); st.Target != Primary {
		t.Fatalf("before Reset the cached answer stands: got %s", st.Target)
	}
	c.Reset()
	if n := c.CacheLen(); n != 0 {
		t.Fatalf("Reset left %d entries", n)
	}
	if st := c.Classify(sql); st.Target != Replica {
		t.Fatalf("after Reset: got %s (%s)", st.Target, st.Reason)
	}
}

// TestConcurrentClassify runs the golden cases from many goroutines on one
// small Classifier (so that eviction runs too) while another resets it; run
// with -race.
func TestConcurrentClassify(t *testing.T) {
	cases := readGolden(t)
	want := make([]Statement, len(cases))
	ref := NewClassifier(goldenOptions())
	for i, gc := range cases {
		want[i] = ref.Classify(gc.sql)
	}
	opts := goldenOptions()
	opts.CacheSize = 64
	c := NewClassifier(opts)
	var wg sync.WaitGroup
	done := make(chan struct{})
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			for round := 0; round < 3; round++ {
				for i := range cases {
					j := (i + g*37) % len(cases)
					if got := c.Classify(cases[j].sql); !reflect.DeepEqual(got, want[j]) {
						t.Errorf("line %d: concurrent answer differs:\n\t%s\n\t%s", cases[j].line, describe(got), describe(want[j]))
						return
					}
				}
			}
		}(g)
	}
	var resets sync.WaitGroup
	resets.Add(1)
	go func() {
		defer resets.Done()
		for {
			select {
			case <-done:
				return
			default:
				c.Reset()
			}
		}
	}()
	wg.Wait()
	close(done)
	resets.Wait()
}

// TestShapeCacheAnswersAsParseWhateverTheValues: every golden statement is
// classified, then again with its numbers and simple string literals
// changed; the second answer (from the shape cache when the first was an
// INSERT, UPDATE or DELETE it may hold) must be what a classifier without a
// cache says of the changed text. A shape cached whose values matter shows
// here.
func TestShapeCacheAnswersAsParseWhateverTheValues(t *testing.T) {
	opts := goldenOptions()
	c := NewClassifier(opts)
	opts.CacheSize = -1
	ref := NewClassifier(opts)
	numbers := regexp.MustCompile(`\b[0-9]+\b`)
	stringsRe := regexp.MustCompile(`'[a-zA-Z_ ]*'`)
	changed := 0
	for _, gc := range readGolden(t) {
		c.Classify(gc.sql)
		other := stringsRe.ReplaceAllString(numbers.ReplaceAllString(gc.sql, "42"), "'zz'")
		if other == gc.sql {
			continue
		}
		changed++
		if got, want := c.Classify(other), ref.Classify(other); !reflect.DeepEqual(got, want) {
			t.Errorf("line %d %q, then %q: shape-cached answer differs:\n\t%s\n\t%s", gc.line, gc.sql, other, describe(got), describe(want))
		}
	}
	if changed < 20 || c.shapes.len() == 0 {
		t.Fatalf("%d golden statements changed, %d shapes cached: the test covers too little", changed, c.shapes.len())
	}
}

// Plain writes that differ only in their values are one shape: classified
// once (not kept per text), while a write that calls a function is not
// cached by shape.
func TestShapeCacheHoldsPlainWritesOnly(t *testing.T) {
	c := NewClassifier(Options{})
	for i := range 50 {
		c.Classify(fmt.Sprintf("UPDATE pgbench_accounts SET abalance = abalance + %d WHERE aid = %d", i+1, i*7))
		c.Classify(fmt.Sprintf("insert into pgbench_history (tid, bid, aid, delta, mtime) values (%d, 1, %d, -5, CURRENT_TIMESTAMP)", i, i))
	}
	if n, m := c.shapes.len(), c.CacheLen(); n != 2 || m != 0 {
		t.Fatalf("100 plain writes of 2 shapes: %d shapes and %d texts cached, want 2 and 0", n, m)
	}
	c.Classify("UPDATE t SET a = nextval('s1')")
	st := c.Classify("UPDATE t SET a = nextval('s2')")
	if n := c.shapes.len(); n != 2 || len(st.Funcs) == 0 || len(st.Pins) == 0 {
		t.Fatalf("a write calling nextval: %d shapes cached (want 2), funcs %v, pins %v", n, st.Funcs, st.Pins)
	}
	if a, b := shapeKey(`UPDATE t SET a = 1`, 0, nil), shapeKey(`update T set A=2 -- x`, 0, nil); string(a) != string(b) {
		t.Fatalf("keys differ for statements that differ only in a value, case and a comment")
	}
	if a, b := shapeKey(`UPDATE t SET a = 1`, 0, nil), shapeKey(`UPDATE "T" SET a = 1`, 0, nil); string(a) == string(b) {
		t.Fatalf("a quoted identifier has the key of the bare one")
	}
}
