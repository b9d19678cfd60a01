package proxy

import (
	"fmt"
	"math"
	"math/bits"
	"net"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pgsplit/pgsplit/router"
)

// This file keeps the statistics the admin console shows: traffic and
// statement counts per database (SHOW STATS) and statement timings per
// fingerprint (SHOW QUERIES). Everything is fed from the query records as
// statements finish, on the pumps' goroutines, with atomics and short
// sharded locks; nothing here blocks the relay on I/O.

// countingConn counts the bytes a client connection carries: in the
// server's totals (for metrics, never reset) and, once the session knows
// its database, in that database's SHOW STATS counters.
type countingConn struct {
	net.Conn
	s *session
}

func (c countingConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	c.s.srv.bytesIn.Add(int64(n))
	if d := c.s.stats.Load(); d != nil {
		d.received.Add(int64(n))
	}
	return n, err
}

func (c countingConn) Write(b []byte) (int, error) {
	n, err := c.Conn.Write(b)
	c.s.srv.bytesOut.Add(int64(n))
	if d := c.s.stats.Load(); d != nil {
		d.sent.Add(int64(n))
	}
	return n, err
}

// dbStats are one database's counters (PgBouncer's SHOW STATS columns).
// Times are in microseconds.
type dbStats struct {
	xacts, queries            atomic.Int64
	xactTime, queryTime, wait atomic.Int64
	received, sent            atomic.Int64 // client traffic, bytes
}

func (d *dbStats) zero() {
	for _, c := range []*atomic.Int64{&d.xacts, &d.queries, &d.xactTime, &d.queryTime, &d.wait, &d.received, &d.sent} {
		c.Store(0)
	}
}

// statsBook holds the statistics since start or RESET STATS.
//
// Ownership: the Server owns it; any goroutine may use it.
type statsBook struct {
	mu    sync.Mutex
	since time.Time
	dbs   map[string]*dbStats
	// queries are the per-fingerprint timings; swapped whole by reset.
	queries atomic.Pointer[queryStats]
}

func newStatsBook() *statsBook {
	b := &statsBook{since: time.Now(), dbs: map[string]*dbStats{}}
	b.queries.Store(newQueryStats())
	return b
}

// db returns the counters of database, creating them.
func (b *statsBook) db(database string) *dbStats {
	b.mu.Lock()
	defer b.mu.Unlock()
	d, ok := b.dbs[database]
	if !ok {
		d = &dbStats{}
		b.dbs[database] = d
	}
	return d
}

// reset starts every counter again from zero (RESET STATS). Sessions keep
// their pointers to the (zeroed) per-database counters.
func (b *statsBook) reset() {
	b.mu.Lock()
	b.since = time.Now()
	for _, d := range b.dbs {
		d.zero()
	}
	b.mu.Unlock()
	b.queries.Store(newQueryStats())
}

// snapshot returns the per-database counters and the start of the period.
func (b *statsBook) snapshot() (map[string]*dbStats, time.Time) {
	b.mu.Lock()
	defer b.mu.Unlock()
	out := make(map[string]*dbStats, len(b.dbs))
	for k, v := range b.dbs {
		out[k] = v
	}
	return out, b.since
}

// observe books a finished statement.
func (b *statsBook) observe(r *queryRecord, slow bool) {
	d := r.end.Sub(r.start)
	if db := r.who.stats; db != nil {
		db.queries.Add(1)
		db.queryTime.Add(d.Microseconds())
		db.wait.Add(r.wait.Microseconds())
	}
	b.queries.Load().observe(r, d, slow)
}

// endTransaction books a transaction (or autocommit statement) of s that
// began at began (unix nanoseconds) and ended at end.
func (s *session) endTransaction(began int64, end time.Time) {
	if db := s.stats.Load(); db != nil {
		db.xacts.Add(1)
		db.xactTime.Add((end.UnixNano() - began) / 1000)
	}
}

// Per-fingerprint statistics. Statements are grouped on the relay path by
// router.Shape (a cheap hash of the tokens with literals replaced); the
// admin console merges shapes by the PostgreSQL parser's fingerprint when
// it shows them, normalizing each shape's sample once.

const (
	queryShards = 16
	// maxShapes bounds the memory of SHOW QUERIES (each shape keeps a
	// histogram of about 1 KB); later shapes are counted together.
	maxShapes = 5000
	// histogram: 8 buckets per power of two of microseconds, so a
	// percentile is within about 5% of the real value.
	histSub     = 8
	histBuckets = 40 * histSub
	// maxSample is the longest statement kept as a shape's sample; longer
	// ones are listed by shape only (memory stays bounded).
	maxSample = 8 << 10
)

type queryStats struct {
	shards [queryShards]queryShard
	shapes atomic.Int64
	other  queryShard // statements over maxShapes (one entry)

	// norms caches each shape's normalized sample, filled by top outside
	// the shard locks (the parser is slow next to the relay).
	normMu sync.Mutex
	norms  map[uint64]normalized
}

type queryShard struct {
	mu sync.Mutex
	m  map[uint64]*shapeStats
}

// shapeStats is one shape's numbers. sample is the first statement seen
// with that shape, literals included: it stays in memory (normalized
// before anyone sees it) and is never logged.
type shapeStats struct {
	sample                  string
	calls, rows, slow, errs int64
	replica                 int64 // calls that ran on a replica
	total, wait, maxd       time.Duration
	hist                    [histBuckets]uint32
}

func newQueryStats() *queryStats {
	q := &queryStats{}
	for i := range q.shards {
		q.shards[i].m = map[uint64]*shapeStats{}
	}
	q.other.m = map[uint64]*shapeStats{}
	q.norms = map[uint64]normalized{}
	return q
}

func (q *queryStats) observe(r *queryRecord, d time.Duration, slow bool) {
	shape := router.Shape(r.sql)
	sh := &q.shards[shape%queryShards]
	sh.mu.Lock()
	e, ok := sh.m[shape]
	if !ok {
		if q.shapes.Load() >= maxShapes {
			sh.mu.Unlock()
			sh = &q.other
			shape = 0
			sh.mu.Lock()
			if e = sh.m[0]; e == nil {
				e = &shapeStats{sample: ""}
				sh.m[0] = e
			}
		} else {
			q.shapes.Add(1)
			e = &shapeStats{}
			if len(r.sql) <= maxSample {
				e.sample = r.sql
			}
			sh.m[shape] = e
		}
	}
	e.calls++
	e.rows += r.rows
	if slow {
		e.slow++
	}
	if r.sqlstate != "" {
		e.errs++
	}
	if r.role == router.Replica {
		e.replica++
	}
	e.total += d
	e.wait += r.wait
	e.maxd = max(e.maxd, d)
	e.hist[histBucket(d)]++
	sh.mu.Unlock()
}

func histBucket(d time.Duration) int {
	us := uint64(max(d.Microseconds(), 1))
	oct := bits.Len64(us) - 1 // us in [2^oct, 2^(oct+1))
	var sub uint64
	if oct >= 3 {
		sub = (us >> (oct - 3)) & (histSub - 1)
	} else {
		sub = (us << (3 - oct)) & (histSub - 1)
	}
	return min(oct*histSub+int(sub), histBuckets-1)
}

// histValue is the middle of bucket i, in microseconds.
func histValue(i int) float64 {
	oct, sub := i/histSub, i%histSub
	lo := math.Ldexp(1+float64(sub)/histSub, oct)
	return lo * (1 + 0.5/histSub)
}

// QueryStat is one fingerprint's numbers for SHOW QUERIES.
type QueryStat struct {
	Fingerprint, Query      string
	Calls, Rows, Slow, Errs int64
	Replica                 int64
	Total, Wait, Max, P95   time.Duration
	hist                    [histBuckets]uint32
}

// top merges the shapes by fingerprint (normalizing samples with norm, once
// per shape) and returns the n with the most total time.
func (q *queryStats) top(n int, norm func(string) normalized) []QueryStat {
	by := map[string]*QueryStat{}
	add := func(e *shapeStats, nm normalized) {
		st := by[nm.fingerprint]
		if st == nil {
			st = &QueryStat{Fingerprint: nm.fingerprint, Query: nm.text}
			by[nm.fingerprint] = st
		}
		st.Calls += e.calls
		st.Rows += e.rows
		st.Slow += e.slow
		st.Errs += e.errs
		st.Replica += e.replica
		st.Total += e.total
		st.Wait += e.wait
		st.Max = max(st.Max, e.maxd)
		for i, c := range e.hist {
			st.hist[i] += c
		}
	}
	// Copy each shard's numbers under its lock, then normalize without.
	type copied struct {
		shape uint64
		e     shapeStats
	}
	var all []copied
	for i := range q.shards {
		sh := &q.shards[i]
		sh.mu.Lock()
		for shape, e := range sh.m {
			all = append(all, copied{shape, *e})
		}
		sh.mu.Unlock()
	}
	for i := range all {
		c := &all[i]
		if c.e.sample == "" {
			add(&c.e, normalized{text: "(statement over 8 KB, text not kept)", fingerprint: fmt.Sprintf("s%016x", c.shape)})
			continue
		}
		q.normMu.Lock()
		nm, ok := q.norms[c.shape]
		q.normMu.Unlock()
		if !ok {
			nm = norm(c.e.sample)
			q.normMu.Lock()
			q.norms[c.shape] = nm
			q.normMu.Unlock()
		}
		add(&c.e, nm)
	}
	q.other.mu.Lock()
	if e := q.other.m[0]; e != nil {
		add(e, normalized{text: "(other statements: over 5000 distinct shapes)", fingerprint: "other"})
	}
	q.other.mu.Unlock()
	out := make([]QueryStat, 0, len(by))
	for _, st := range by {
		st.P95 = percentile(&st.hist, st.Calls, 0.95, st.Max)
		out = append(out, *st)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Total != out[j].Total {
			return out[i].Total > out[j].Total
		}
		return out[i].Fingerprint < out[j].Fingerprint
	})
	if len(out) > n {
		out = out[:n]
	}
	return out
}

// percentile reads the p-th percentile from a histogram of calls values,
// capped at the largest value seen.
func percentile(h *[histBuckets]uint32, calls int64, p float64, maxd time.Duration) time.Duration {
	if calls == 0 {
		return 0
	}
	rank := int64(math.Ceil(p * float64(calls)))
	var seen int64
	for i, c := range h {
		seen += int64(c)
		if seen >= rank {
			return min(time.Duration(histValue(i)*float64(time.Microsecond)), maxd)
		}
	}
	return maxd
}
