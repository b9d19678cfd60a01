package admin

import (
	"bytes"
	"fmt"
	"html/template"
	"math"
	"net/http"
	"time"
)

// The status page: plain HTML on the metrics listener's "/", rendered on
// each request from the same Source the console reads, refreshing itself
// every 5 s. Statements appear as SHOW QUERIES shows them: normalized, no
// literal values.

// LatencyBucket is one bucket of the statement-duration histogram: how
// many statements took at most UpTo (cumulative, as Prometheus counts
// them; UpTo < 0 is the +Inf bucket).
type LatencyBucket struct {
	UpTo  time.Duration
	Count uint64
}

// StatusPage serves the status page. latency gives the statement-duration
// histogram (nil: none), version names the build.
func StatusPage(src Source, latency func() []LatencyBucket, version string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		var buckets []LatencyBucket
		if latency != nil {
			buckets = latency()
		}
		page := statusData(src, buckets, version, time.Now())
		var b bytes.Buffer
		if err := statusTemplate.Execute(&b, page); err != nil {
			http.Error(w, "status page: "+err.Error(), http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Header().Set("Cache-Control", "no-store")
		w.Header().Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'")
		_, _ = w.Write(b.Bytes())
	})
}

// statusPage is what the template shows.
type statusPage struct {
	Version, Now, Since string
	Paused              bool
	Nodes               []NodeInfo
	Pools               []PoolInfo
	Top                 []QueryInfo
	Latency             []latencyBar
	Statements          uint64
}

// latencyBar is one histogram bucket as drawn: the statements in it (not
// cumulative) and its bar's width in pixels (400 for the fullest bucket).
type latencyBar struct {
	Label string
	Count uint64
	Width int
}

func statusData(src Source, buckets []LatencyBucket, version string, now time.Time) statusPage {
	p := statusPage{Version: version, Now: now.UTC().Format(time.RFC3339), Since: src.Stats().Since.UTC().Format(time.RFC3339),
		Paused: src.Paused(), Nodes: src.NodeHealth(), Pools: src.Pools(), Top: src.TopQueries(10)}
	var prev, most uint64
	lower := "0"
	for _, b := range buckets {
		n := b.Count - min(prev, b.Count)
		prev = b.Count
		label := "> " + lower
		if b.UpTo >= 0 {
			label = lower + "–" + shortDuration(b.UpTo)
			lower = shortDuration(b.UpTo)
		}
		p.Latency = append(p.Latency, latencyBar{Label: label, Count: n})
		most = max(most, n)
	}
	p.Statements = prev
	for i := range p.Latency {
		if most > 0 {
			p.Latency[i].Width = int(math.Round(400 * float64(p.Latency[i].Count) / float64(most)))
		}
	}
	return p
}

// shortDuration writes 500µs, 2.5ms, 1s.
func shortDuration(d time.Duration) string {
	switch {
	case d < time.Millisecond:
		return fmt.Sprintf("%gµs", float64(d)/float64(time.Microsecond))
	case d < time.Second:
		return fmt.Sprintf("%gms", float64(d)/float64(time.Millisecond))
	}
	return fmt.Sprintf("%gs", d.Seconds())
}

var statusTemplate = template.Must(template.New("status").Funcs(template.FuncMap{
	"ms": func(d time.Duration) string { return fmt.Sprintf("%.1f", float64(d)/float64(time.Millisecond)) },
	"mean": func(q QueryInfo) string {
		if q.Calls == 0 {
			return "0.0"
		}
		return fmt.Sprintf("%.2f", float64(q.Total)/float64(q.Calls)/float64(time.Millisecond))
	},
	"lag": func(v float64) string {
		if v < 0 {
			return "unknown"
		}
		return fmt.Sprintf("%.3f", v)
	},
	"count": func(v int64) string {
		if v < 0 {
			return "unknown"
		}
		return fmt.Sprint(v)
	},
}).Parse(`<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta http-equiv="refresh" content="5">
<title>pgsplit status</title>
<style>
body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#222}
h1{font-size:1.4em;margin:0 0 .2em}h2{font-size:1.1em;margin:1.4em 0 .4em}
table{border-collapse:collapse}th,td{padding:.25em .7em;border-bottom:1px solid #ddd;text-align:left}
td.n{text-align:right;font-variant-numeric:tabular-nums}
.ok{color:#176f2c}.bad{color:#b3261e;font-weight:600}.meta{color:#666}
.bar{background:#3d7bd9;height:.9em;display:inline-block}
code{font-size:.92em}
</style></head><body>
<h1>pgsplit</h1>
<p class="meta">{{.Version}} · at {{.Now}} · statistics since {{.Since}}{{if .Paused}} · <span class="bad" id="paused">PAUSED</span>{{end}}</p>

<h2>Nodes</h2>
<table id="nodes"><thead><tr><th>server</th><th>role</th><th>health</th><th>reads</th><th>lag s</th><th>lag bytes</th><th>replayed</th><th>active</th><th>idle</th></tr></thead><tbody>
{{range .Nodes}}<tr data-server="{{.Host}}:{{.Port}}">
<td>{{.Host}}:{{.Port}}</td><td data-k="role">{{.Role}}</td>
<td data-k="health">{{if .Healthy}}<span class="ok">up</span>{{else}}<span class="bad">down</span>{{if .Error}}: {{.Error}}{{end}}{{end}}</td>
<td data-k="rotation">{{if .InRotation}}in rotation{{else}}out{{if .Rotation}}: {{.Rotation}}{{end}}{{end}}</td>
<td class="n" data-k="lag_seconds">{{lag .LagSeconds}}</td><td class="n" data-k="lag_bytes">{{count .LagBytes}}</td>
<td data-k="replay_lsn">{{.ReplayLSN}}</td><td class="n" data-k="sv_active">{{.SvActive}}</td><td class="n" data-k="sv_idle">{{.SvIdle}}</td></tr>
{{end}}</tbody></table>

<h2>Pools</h2>
<table id="pools"><thead><tr><th>database</th><th>user</th><th>server</th><th>role</th><th>clients</th><th>open</th><th>idle</th><th>waiting</th><th>size + overflow</th></tr></thead><tbody>
{{range .Pools}}<tr data-pool="{{.Database}}/{{.User}}/{{.Server}}">
<td>{{.Database}}</td><td>{{.User}}</td><td>{{.Server}}</td><td data-k="role">{{.Role}}</td>
<td class="n" data-k="clients">{{.Clients}}</td><td class="n" data-k="open">{{.Open}}</td><td class="n" data-k="idle">{{.Idle}}</td>
<td class="n" data-k="waiting">{{.Waiting}}</td><td class="n">{{.Size}} + {{.MaxOverflow}}</td></tr>
{{end}}</tbody></table>

<h2>Top statements by total time</h2>
<table id="statements"><thead><tr><th>statement</th><th>calls</th><th>total ms</th><th>mean ms</th><th>p95 ms</th><th>slow</th><th>errors</th><th>on replicas</th></tr></thead><tbody>
{{range .Top}}<tr data-fingerprint="{{.Fingerprint}}">
<td><code>{{.Query}}</code></td><td class="n" data-k="calls">{{.Calls}}</td><td class="n" data-k="total_ms">{{ms .Total}}</td>
<td class="n">{{mean .}}</td><td class="n">{{ms .P95}}</td><td class="n" data-k="slow">{{.Slow}}</td><td class="n" data-k="errors">{{.Errors}}</td><td class="n" data-k="replica">{{.Replica}}</td></tr>
{{else}}<tr><td colspan="8" class="meta">no statements yet</td></tr>{{end}}</tbody></table>

<h2>Statement latency</h2>
<p class="meta" id="latency-total" data-statements="{{.Statements}}">{{.Statements}} statements</p>
<table id="latency"><tbody>
{{range .Latency}}<tr><td>{{.Label}}</td><td class="n" data-k="count">{{.Count}}</td><td><span class="bar" style="width: {{.Width}}px; min-width: 1px"></span></td></tr>
{{end}}</tbody></table>
</body></html>
`))
