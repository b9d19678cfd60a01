package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/pgsplit/pgsplit/internal/digest"
)

// slowlog digests pgsplit's JSON query log: statements grouped by
// fingerprint, ranked by total time.
//
//	pgsplit slowlog [--top N] [--since T] [--until T] [--min-duration D] [--format table|json|markdown] [FILE…]
//
// FILEs may be plain or gzip; none means standard input.
func slowlog(args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("pgsplit slowlog", flag.ContinueOnError)
	fs.SetOutput(stderr)
	top := fs.Int("top", 20, "show the N fingerprints with the most total time (0: all)")
	since := fs.String("since", "", "only statements that started at or after this time (RFC 3339, e.g. 2026-11-26T10:00:00Z)")
	until := fs.String("until", "", "only statements that started before this time (RFC 3339)")
	minDur := fs.Duration("min-duration", 0, "only statements that took at least this long (e.g. 100ms)")
	format := fs.String("format", "table", "table, json or markdown")
	if err := fs.Parse(args); err != nil {
		return err
	}
	var f digest.Filter
	for _, t := range []struct {
		flag, val string
		dst       *time.Time
	}{{"--since", *since, &f.Since}, {"--until", *until, &f.Until}} {
		if t.val == "" {
			continue
		}
		v, err := time.Parse(time.RFC3339Nano, t.val)
		if err != nil {
			return fmt.Errorf("%s %q: not an RFC 3339 time (e.g. 2026-11-26T10:00:00Z)", t.flag, t.val)
		}
		*t.dst = v
	}
	f.MinDuration = *minDur
	switch *format {
	case "table", "json", "markdown":
	default:
		return fmt.Errorf("--format %q: must be table, json or markdown", *format)
	}
	d := digest.New(f)
	progress := progressPrinter(stderr)
	files := fs.Args()
	if len(files) == 0 {
		if err := d.Read(stdin, progress("standard input")); err != nil {
			return fmt.Errorf("standard input: %w", err)
		}
	}
	for _, name := range files {
		fh, err := os.Open(name)
		if err != nil {
			return err
		}
		err = d.Read(fh, progress(name))
		fh.Close()
		if err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
	}
	groups := d.Top(*top)
	switch *format {
	case "json":
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(struct {
			Lines      int64          `json:"lines"`
			Skipped    int64          `json:"skipped_lines"`
			Statements int64          `json:"statements"`
			Groups     []digest.Group `json:"fingerprints"`
		}{d.Lines, d.Skipped, d.Kept, groups})
	case "markdown":
		fmt.Fprintln(stdout, "| rank | calls | total ms | mean ms | p50 ms | p95 ms | max ms | rows | on replicas | first seen | last seen | statement |")
		fmt.Fprintln(stdout, "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- | --- |")
		for i, g := range groups {
			fmt.Fprintf(stdout, "| %d | %d | %.1f | %.2f | %.2f | %.2f | %.2f | %d | %.0f%% | %s | %s | `%s` |\n",
				i+1, g.Count, g.TotalMS, g.MeanMS, g.P50MS, g.P95MS, g.MaxMS, g.Rows, g.ReplicaPct,
				g.First.Format(time.RFC3339), g.Last.Format(time.RFC3339), strings.ReplaceAll(oneLine(g.Sample, 120), "|", `\|`))
		}
	default:
		tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintln(tw, "rank\tcalls\ttotal ms\tmean ms\tp50 ms\tp95 ms\tmax ms\trows\treplica\tfingerprint\t")
		for i, g := range groups {
			fmt.Fprintf(tw, "%d\t%d\t%.1f\t%.2f\t%.2f\t%.2f\t%.2f\t%d\t%.0f%%\t%s\t\n",
				i+1, g.Count, g.TotalMS, g.MeanMS, g.P50MS, g.P95MS, g.MaxMS, g.Rows, g.ReplicaPct, g.Fingerprint)
		}
		if err := tw.Flush(); err != nil {
			return err
		}
		fmt.Fprintln(stdout)
		for i, g := range groups {
			fmt.Fprintf(stdout, "#%d %s  first %s  last %s\n    %s\n", i+1, g.Fingerprint,
				g.First.Format(time.RFC3339), g.Last.Format(time.RFC3339), oneLine(g.Sample, 200))
		}
	}
	fmt.Fprintf(stderr, "%d statements in %d fingerprints from %d lines (%d lines were not query records)\n",
		d.Kept, d.Groups(), d.Lines, d.Skipped)
	return nil
}

// oneLine folds whitespace and cuts s to at most n characters.
func oneLine(s string, n int) string {
	s = strings.Join(strings.Fields(s), " ")
	if r := []rune(s); len(r) > n {
		return string(r[:n-1]) + "…"
	}
	return s
}

// progressPrinter reports how far a large log has been read, on a terminal
// only.
func progressPrinter(w io.Writer) func(name string) func(int64) {
	f, ok := w.(*os.File)
	if !ok {
		return func(string) func(int64) { return nil }
	}
	if st, err := f.Stat(); err != nil || st.Mode()&os.ModeCharDevice == 0 {
		return func(string) func(int64) { return nil }
	}
	return func(name string) func(int64) {
		return func(n int64) { fmt.Fprintf(w, "\r%s: %d MB read", name, n>>20) }
	}
}
