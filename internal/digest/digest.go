// Package digest summarises pgsplit's JSON query log by statement
// fingerprint, as pt-query-digest and pgBadger do for PostgreSQL's own
// logs: count, total/mean/p50/p95/max time, rows, share run on replicas,
// first and last seen, one normalized sample.
//
// Memory is bounded per fingerprint: counts, sums and extremes are exact;
// percentiles come from a fixed-size uniform sample (exact while a
// fingerprint has at most SampleSize entries).
package digest

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"sort"
	"time"
)

// SampleSize is how many durations per fingerprint are kept for
// percentiles.
const SampleSize = 2048

// Entry is one statement of the query log, as the digest reads it.
type Entry struct {
	TS          time.Time `json:"ts"`
	DurationMS  float64   `json:"duration_ms"`
	Fingerprint string    `json:"fingerprint"`
	Query       string    `json:"query"`
	Rows        int64     `json:"rows"`
	Role        string    `json:"role"`
}

// Filter selects entries; zero fields select everything.
type Filter struct {
	Since, Until time.Time
	MinDuration  time.Duration
}

func (f Filter) keep(e *Entry) bool {
	if !f.Since.IsZero() && e.TS.Before(f.Since) {
		return false
	}
	if !f.Until.IsZero() && !e.TS.Before(f.Until) {
		return false
	}
	return e.DurationMS >= float64(f.MinDuration)/float64(time.Millisecond)
}

// Group is one fingerprint's summary.
type Group struct {
	Fingerprint string    `json:"fingerprint"`
	Count       int64     `json:"count"`
	TotalMS     float64   `json:"total_ms"`
	MeanMS      float64   `json:"mean_ms"`
	P50MS       float64   `json:"p50_ms"`
	P95MS       float64   `json:"p95_ms"`
	MaxMS       float64   `json:"max_ms"`
	Rows        int64     `json:"rows"`
	ReplicaPct  float64   `json:"replica_pct"`
	First       time.Time `json:"first_seen"`
	Last        time.Time `json:"last_seen"`
	Sample      string    `json:"sample"`

	replica int64
	sample  []float64
}

// Digest accumulates entries. Not safe for concurrent use.
type Digest struct {
	Filter  Filter
	groups  map[string]*Group
	rng     *rand.Rand
	Lines   int64 // lines read
	Skipped int64 // lines that were not query records (other log lines, bad JSON)
	Kept    int64 // entries that passed the filter
}

// New returns an empty digest.
func New(f Filter) *Digest {
	return &Digest{Filter: f, groups: map[string]*Group{}, rng: rand.New(rand.NewPCG(1, 2))}
}

// Add counts one entry.
func (d *Digest) Add(e Entry) {
	if !d.Filter.keep(&e) {
		return
	}
	d.Kept++
	g := d.groups[e.Fingerprint]
	if g == nil {
		g = &Group{Fingerprint: e.Fingerprint, Sample: e.Query, First: e.TS, Last: e.TS}
		d.groups[e.Fingerprint] = g
	}
	g.Count++
	g.TotalMS += e.DurationMS
	g.Rows += e.Rows
	if e.DurationMS > g.MaxMS {
		g.MaxMS = e.DurationMS
	}
	if e.Role == "replica" {
		g.replica++
	}
	if e.TS.Before(g.First) {
		g.First = e.TS
	}
	if e.TS.After(g.Last) {
		g.Last = e.TS
	}
	// Reservoir sampling (algorithm R): every entry is kept with
	// probability SampleSize/Count.
	if len(g.sample) < SampleSize {
		g.sample = append(g.sample, e.DurationMS)
	} else if j := d.rng.Int64N(g.Count); j < SampleSize {
		g.sample[j] = e.DurationMS
	}
}

// Read adds every query record of a log stream (plain or gzip, detected by
// its first bytes). Lines that are not query records are counted in
// Skipped. progress, if not nil, is called with the bytes read so far
// about every 64 MB.
func (d *Digest) Read(r io.Reader, progress func(bytes int64)) error {
	br := bufio.NewReaderSize(r, 1<<20)
	if magic, err := br.Peek(2); err == nil && magic[0] == 0x1f && magic[1] == 0x8b {
		zr, err := gzip.NewReader(br)
		if err != nil {
			return fmt.Errorf("gzip: %w", err)
		}
		defer zr.Close()
		br = bufio.NewReaderSize(zr, 1<<20)
	}
	var read, next int64 = 0, 64 << 20
	for {
		line, err := br.ReadSlice('\n')
		if err == bufio.ErrBufferFull {
			// A line over 1 MB: not one of ours (query text is bounded);
			// skip the rest of it.
			for err == bufio.ErrBufferFull {
				read += int64(len(line))
				line, err = br.ReadSlice('\n')
			}
			d.Lines++
			d.Skipped++
			line = nil
		}
		read += int64(len(line))
		if len(bytes.TrimSpace(line)) > 0 {
			d.Lines++
			var e Entry
			if json.Unmarshal(line, &e) != nil || e.Fingerprint == "" {
				d.Skipped++
			} else {
				d.Add(e)
			}
		}
		if progress != nil && read >= next {
			progress(read)
			next += 64 << 20
		}
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

// Groups is the number of fingerprints seen.
func (d *Digest) Groups() int { return len(d.groups) }

// Top returns the n groups with the most total time (all if n <= 0), with
// their derived figures filled in.
func (d *Digest) Top(n int) []Group {
	out := make([]Group, 0, len(d.groups))
	for _, g := range d.groups {
		c := *g
		c.MeanMS = c.TotalMS / float64(c.Count)
		s := append([]float64(nil), g.sample...)
		sort.Float64s(s)
		c.P50MS, c.P95MS = percentile(s, 0.50), percentile(s, 0.95)
		c.ReplicaPct = 100 * float64(g.replica) / float64(g.Count)
		c.sample = nil
		out = append(out, c)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].TotalMS != out[j].TotalMS {
			return out[i].TotalMS > out[j].TotalMS
		}
		return out[i].Fingerprint < out[j].Fingerprint
	})
	if n > 0 && len(out) > n {
		out = out[:n]
	}
	return out
}

// percentile is the nearest-rank percentile of sorted values.
func percentile(sorted []float64, p float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	i := int(p*float64(len(sorted))+0.999999999) - 1
	if i < 0 {
		i = 0
	}
	if i >= len(sorted) {
		i = len(sorted) - 1
	}
	return sorted[i]
}
