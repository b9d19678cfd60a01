package proxy

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.uber.org/zap"

	"github.com/pgsplit/pgsplit/admin"
	"github.com/pgsplit/pgsplit/internal/version"
	"github.com/pgsplit/pgsplit/router"
)

// metrics holds pgsplit's Prometheus metrics, on a registry of its own (no
// package-level state). Query metrics are fed from the query records as
// statements finish; pool, client and misroute figures are read from the
// Server when scraped.
type metrics struct {
	reg      *prometheus.Registry
	queries  *prometheus.CounterVec
	duration *prometheus.HistogramVec
	slow     prometheus.Counter
	errors   *prometheus.CounterVec
	wait     prometheus.Histogram
	// limitHits counts the limits section's hits (see clientlimits.go).
	limitHits *prometheus.CounterVec
	// byServer caches the labelled metrics of each (role, server):
	// serverKey → *serverMetrics. A label lookup costs more than all the
	// rest of a statement's bookkeeping, so it is done once per server and
	// kind, not per statement.
	byServer sync.Map

	// The endpoint. runMu orders serve, stop (from Shutdown and, in an
	// upgrade's old process, from HandOver: the new process serves the
	// endpoint) and resume (the upgrade failed). srv is nil when not
	// serving; ln stays the last listener served.
	runMu sync.Mutex
	srv   *http.Server
	ln    net.Listener
	done  chan error
	// handler is the endpoint's mux, made by the first serve.
	handler http.Handler
	shut    bool // stop was called: no resume
}

func newMetrics(s *Server) *metrics {
	m := &metrics{reg: prometheus.NewRegistry()}
	m.queries = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "pgsplit_queries_total", Help: "Statements relayed, by the role and server they ran on and their kind.",
	}, []string{"role", "server", "kind"})
	m.duration = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "pgsplit_query_duration_seconds", Help: "Statement duration, client message to CommandComplete/ErrorResponse relayed.",
		Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
	}, []string{"role"})
	m.slow = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "pgsplit_slow_queries_total", Help: "Statements over log.slow_query_threshold.",
	})
	m.errors = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "pgsplit_query_errors_total", Help: "Statements that failed, by SQLSTATE class (first two characters).",
	}, []string{"class"})
	m.wait = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name: "pgsplit_pool_wait_seconds", Help: "Time statements waited for a server connection.",
		Buckets: []float64{.0001, .001, .01, .1, .5, 1, 5, 30},
	})
	m.limitHits = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "pgsplit_limit_hits_total", Help: "Times a client hit one of the limits section's limits, by limit.",
	}, []string{"limit"})
	for _, l := range limitNames() {
		m.limitHits.WithLabelValues(l)
	}
	v := version.Get()
	build := prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "pgsplit_build_info", Help: "Always 1; the labels say which pgsplit this is (as `pgsplit version`).",
		ConstLabels: prometheus.Labels{"version": v.Version, "commit": v.Commit, "go": v.Go, "pg_query": v.PgQuery, "pgx": v.Pgx},
	})
	build.Set(1)
	m.reg.MustRegister(m.queries, m.duration, m.slow, m.errors, m.wait, m.limitHits, build,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "pgsplit_client_connections", Help: "Client connections (logged in or logging in)."},
			func() float64 { return float64(s.clients.Load()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "pgsplit_pinned_clients", Help: "Clients pinned to their server connections."},
			func() float64 { return float64(s.PinnedClients()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "pgsplit_misroutes_total", Help: "Statements a replica refused as writes (25006), run again on the primary."},
			func() float64 { return float64(s.Misroutes()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "pgsplit_internal_errors_total", Help: "Client sessions ended by an internal error (a recovered panic); the process went on."},
			func() float64 { return float64(s.panics.Load()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "pgsplit_unparsed_statements_total", Help: "Statements too large or too deeply nested to parse safely, sent to the primary unparsed (limits.max_parse_depth, limits.max_parse_bytes)."},
			func() float64 { return float64(s.unparsed.Load()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "pgsplit_query_log_dropped_total", Help: "Query-log records dropped because the writer fell behind."},
			func() float64 { return float64(s.qlog.dropped.Load()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "pgsplit_client_bytes_received_total", Help: "Bytes received from clients."},
			func() float64 { return float64(s.bytesIn.Load()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "pgsplit_client_bytes_sent_total", Help: "Bytes sent to clients."},
			func() float64 { return float64(s.bytesOut.Load()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "pgsplit_paused", Help: "1 while an admin has paused new transactions (PAUSE)."},
			func() float64 {
				if s.pause.paused() {
					return 1
				}
				return 0
			}),
		newPoolCollector(s),
		newNodeCollector(s),
	)
	return m
}

// serverKey names the labelled metrics of a server in one role.
type serverKey struct {
	role   router.Target
	server string
}

// serverMetrics are the metrics of one (role, server), resolved once.
type serverMetrics struct {
	duration prometheus.Observer
	queries  [maxCachedKind]atomic.Pointer[prometheus.Counter] // by router.Kind, filled as kinds appear
}

// maxCachedKind bounds the router.Kind values whose counters are cached
// (there are fewer kinds; a larger one is looked up each time).
const maxCachedKind = 64

func (m *metrics) forServer(role router.Target, server string) *serverMetrics {
	k := serverKey{role, server}
	if v, ok := m.byServer.Load(k); ok {
		return v.(*serverMetrics)
	}
	v, _ := m.byServer.LoadOrStore(k, &serverMetrics{duration: m.duration.WithLabelValues(role.String())})
	return v.(*serverMetrics)
}

func (m *metrics) queriesCounter(sm *serverMetrics, r *queryRecord) prometheus.Counter {
	k := int(r.kind)
	if k < 0 || k >= maxCachedKind {
		return m.queries.WithLabelValues(r.role.String(), r.server, r.kind.String())
	}
	if c := sm.queries[k].Load(); c != nil {
		return *c
	}
	c := m.queries.WithLabelValues(r.role.String(), r.server, r.kind.String())
	sm.queries[k].Store(&c)
	return c
}

// observe counts a finished statement.
func (m *metrics) observe(r *queryRecord, slow bool) {
	sm := m.forServer(r.role, r.server)
	m.queriesCounter(sm, r).Inc()
	sm.duration.Observe(r.end.Sub(r.start).Seconds())
	m.wait.Observe(r.wait.Seconds())
	if slow {
		m.slow.Inc()
	}
	if len(r.sqlstate) >= 2 {
		m.errors.WithLabelValues(r.sqlstate[:2]).Inc()
	}
}

// poolCollector reports each pool's counts when scraped.
type poolCollector struct {
	s                            *Server
	active, idle, waiting, limit *prometheus.Desc
}

func newPoolCollector(s *Server) *poolCollector {
	return &poolCollector{s: s,
		active:  prometheus.NewDesc("pgsplit_pool_connections_active", "Server connections handed out.", []string{"pool"}, nil),
		idle:    prometheus.NewDesc("pgsplit_pool_connections_idle", "Server connections idle in the pool.", []string{"pool"}, nil),
		waiting: prometheus.NewDesc("pgsplit_pool_clients_waiting", "Clients waiting for a server connection.", []string{"pool"}, nil),
		limit:   prometheus.NewDesc("pgsplit_pool_connections_max", "pool_size + max_overflow.", []string{"pool"}, nil),
	}
}

func (c *poolCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.active
	ch <- c.idle
	ch <- c.waiting
	ch <- c.limit
}

func (c *poolCollector) Collect(ch chan<- prometheus.Metric) {
	for _, e := range c.s.poolList() {
		st, k := e.pool.Stats(), e.key
		name := k.user + "@" + k.database + "/" + k.server.String()
		ch <- prometheus.MustNewConstMetric(c.active, prometheus.GaugeValue, float64(st.Open-st.Idle), name)
		ch <- prometheus.MustNewConstMetric(c.idle, prometheus.GaugeValue, float64(st.Idle), name)
		ch <- prometheus.MustNewConstMetric(c.waiting, prometheus.GaugeValue, float64(st.Waiting), name)
		ch <- prometheus.MustNewConstMetric(c.limit, prometheus.GaugeValue, float64(st.Max), name)
	}
}

// nodeCollector reports what the health checks found when scraped.
type nodeCollector struct {
	s                                            *Server
	up, lagBytes, lagSec, rotation               *prometheus.Desc
	rywWaits, rywPrimary, positions, retries, pc *prometheus.Desc
	polls                                        *prometheus.Desc
}

func newNodeCollector(s *Server) *nodeCollector {
	return &nodeCollector{s: s,
		up:       prometheus.NewDesc("pgsplit_server_up", "1 if the server passed its last health check.", []string{"server", "role"}, nil),
		lagBytes: prometheus.NewDesc("pgsplit_replica_lag_bytes", "WAL the replica has still to replay, as of its last health check.", []string{"server"}, nil),
		lagSec:   prometheus.NewDesc("pgsplit_replica_lag_seconds", "Age of the last transaction the replica replayed while it is behind (0 when caught up).", []string{"server"}, nil),
		rotation: prometheus.NewDesc("pgsplit_replica_in_rotation", "1 if reads may go to the replica; reason says why not.", []string{"server", "reason"}, nil),
		rywWaits: prometheus.NewDesc("pgsplit_read_your_writes_waits_total", "Reads that waited for a replica to replay a commit they must see.", nil, nil),
		rywPrimary: prometheus.NewDesc("pgsplit_read_your_writes_primary_total",
			"Reads sent to the primary because no replica had replayed what they must see within read_your_writes_wait.", nil, nil),
		positions: prometheus.NewDesc("pgsplit_wal_position_queries_total", "WAL position reads on the primary that resolved commits for read-your-writes.", nil, nil),
		retries:   prometheus.NewDesc("pgsplit_read_retries_total", "Autocommit reads run again on another server because their replica went away before answering.", nil, nil),
		polls:     prometheus.NewDesc("pgsplit_replica_position_polls_total", "Rounds of replica replay-position reads made while reads waited.", nil, nil),
		pc:        prometheus.NewDesc("pgsplit_primary_changes_total", "Times the server taking writes changed (failover), including to none.", nil, nil),
	}
}

func (c *nodeCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.up
	ch <- c.lagBytes
	ch <- c.lagSec
	ch <- c.rotation
	ch <- c.rywWaits
	ch <- c.rywPrimary
	ch <- c.positions
	ch <- c.retries
	ch <- c.pc
	ch <- c.polls
}

func (c *nodeCollector) Collect(ch chan<- prometheus.Metric) {
	t := c.s.lsn
	ch <- prometheus.MustNewConstMetric(c.rywWaits, prometheus.CounterValue, float64(t.readsWaited.Load()))
	ch <- prometheus.MustNewConstMetric(c.rywPrimary, prometheus.CounterValue, float64(t.readsToPrimary.Load()))
	ch <- prometheus.MustNewConstMetric(c.positions, prometheus.CounterValue, float64(t.positionQueries.Load()))
	ch <- prometheus.MustNewConstMetric(c.retries, prometheus.CounterValue, float64(c.s.readRetries.Load()))
	ch <- prometheus.MustNewConstMetric(c.polls, prometheus.CounterValue, float64(t.replicaPolls.Load()))
	ch <- prometheus.MustNewConstMetric(c.pc, prometheus.CounterValue, float64(c.s.nodes.Changes()))
	for _, n := range c.s.nodes.Status() {
		if n.Checked.IsZero() {
			continue
		}
		addr := n.Server.Addr()
		up := 0.0
		if n.Healthy {
			up = 1
		}
		ch <- prometheus.MustNewConstMetric(c.up, prometheus.GaugeValue, up, addr, n.Role)
		if n.Role != "replica" {
			continue
		}
		in, reason := 1.0, c.s.rotationReason(n.Server)
		if reason != "" {
			in = 0
		}
		ch <- prometheus.MustNewConstMetric(c.rotation, prometheus.GaugeValue, in, addr, reason)
		if n.LagBytes >= 0 {
			ch <- prometheus.MustNewConstMetric(c.lagBytes, prometheus.GaugeValue, float64(n.LagBytes), addr)
		}
		if n.LagSeconds >= 0 {
			ch <- prometheus.MustNewConstMetric(c.lagSec, prometheus.GaugeValue, n.LagSeconds, addr)
		}
	}
}

// latency is the statement-duration histogram over every role, for the
// status page.
func (m *metrics) latency() []admin.LatencyBucket {
	fams, err := m.reg.Gather()
	if err != nil {
		return nil
	}
	var out []admin.LatencyBucket
	for _, f := range fams {
		if f.GetName() != "pgsplit_query_duration_seconds" {
			continue
		}
		for _, mt := range f.GetMetric() {
			h := mt.GetHistogram()
			for i, b := range h.GetBucket() {
				if i == len(out) {
					out = append(out, admin.LatencyBucket{UpTo: time.Duration(b.GetUpperBound() * float64(time.Second))})
				}
				out[i].Count += b.GetCumulativeCount()
			}
			if n := len(h.GetBucket()); n == len(out) {
				out = append(out, admin.LatencyBucket{UpTo: -1})
			}
			out[len(out)-1].Count += h.GetSampleCount()
		}
	}
	return out
}

// serve starts the HTTP endpoint on ln (nil: it binds addr): / (the
// status page), /metrics, /healthz (the process is up), /readyz (the
// primary accepts TCP connections within a second).
func (m *metrics) serve(ctx context.Context, addr string, ln net.Listener, s *Server, log *zap.Logger) error {
	if ln == nil {
		var lc net.ListenConfig
		var err error
		if ln, err = lc.Listen(ctx, "tcp", addr); err != nil {
			return fmt.Errorf("metrics.listen %s: %w", addr, err)
		}
	}
	mux := http.NewServeMux()
	mux.Handle("GET /{$}", admin.StatusPage(s, m.latency, version.Get().String()))
	mux.Handle("/metrics", promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok\n")) })
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, r *http.Request) {
		d := net.Dialer{Timeout: time.Second}
		p := s.currentPrimary()
		if p.Host == "" {
			http.Error(w, "no primary known (failover in progress?)", http.StatusServiceUnavailable)
			return
		}
		c, err := d.DialContext(r.Context(), "tcp", p.Addr())
		if err != nil {
			http.Error(w, "primary "+p.Addr()+" unreachable: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
		_ = c.Close()
		_, _ = w.Write([]byte("ok\n"))
	})
	m.runMu.Lock()
	m.handler = mux
	m.startLocked(ln)
	m.runMu.Unlock()
	log.Info("metrics listening", zap.String("addr", ln.Addr().String()),
		zap.String("endpoints", strings.Join([]string{"/metrics", "/healthz", "/readyz"}, " ")))
	return nil
}

// startLocked serves the endpoint on ln; the caller holds runMu.
func (m *metrics) startLocked(ln net.Listener) {
	srv := &http.Server{Handler: m.handler, ReadHeaderTimeout: 5 * time.Second}
	done := make(chan error, 1)
	m.ln, m.srv, m.done = ln, srv, done
	go func() {
		err := srv.Serve(ln)
		if errors.Is(err, http.ErrServerClosed) {
			err = nil
		}
		done <- err
	}()
}

// listener is the endpoint's listening socket, nil when it does not serve.
func (m *metrics) listener() net.Listener {
	m.runMu.Lock()
	defer m.runMu.Unlock()
	if m.srv == nil {
		return nil
	}
	return m.ln
}

// addr is the endpoint's address, nil when off.
func (m *metrics) addr() net.Addr {
	m.runMu.Lock()
	defer m.runMu.Unlock()
	if m.ln == nil {
		return nil
	}
	return m.ln.Addr()
}

// stop shuts the HTTP endpoint down for good (Shutdown).
func (m *metrics) stop() {
	m.runMu.Lock()
	defer m.runMu.Unlock()
	m.shut = true
	m.stopLocked()
}

func (m *metrics) stopLocked() {
	if m.srv == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = m.srv.Shutdown(ctx)
	<-m.done
	m.srv = nil
}

// pause stops serving but keeps a duplicate of the listening socket, for
// resume (an upgrade's old process, while the new one serves the
// endpoint); nil when the endpoint is off.
func (m *metrics) pause() *os.File {
	m.runMu.Lock()
	defer m.runMu.Unlock()
	if m.srv == nil {
		return nil
	}
	var f *os.File
	if fl, ok := m.ln.(interface{ File() (*os.File, error) }); ok {
		f, _ = fl.File() // without it, resume cannot serve again
	}
	m.stopLocked()
	return f
}

// resume serves the endpoint again on the socket pause kept; it closes f.
func (m *metrics) resume(f *os.File) error {
	if f == nil {
		return nil
	}
	defer f.Close()
	ln, err := net.FileListener(f)
	if err != nil {
		return err
	}
	m.runMu.Lock()
	defer m.runMu.Unlock()
	if m.srv != nil || m.handler == nil || m.shut {
		_ = ln.Close()
		return nil
	}
	m.startLocked(ln)
	return nil
}
