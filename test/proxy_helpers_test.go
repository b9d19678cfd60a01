package test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/pgsplit/pgsplit/config"
	"github.com/pgsplit/pgsplit/proxy"
)

// baseConfig is the configuration of the shared proxy: the cluster's primary
// and both replicas, SCRAM logins for app and auditor, session pooling.
func baseConfig() *config.Config {
	servers := []config.Server{{Host: cluster.Primary.Host, Port: cluster.Primary.Port, Role: config.RolePrimary}}
	for _, r := range cluster.Replicas {
		servers = append(servers, config.Server{Host: r.Host, Port: r.Port, Role: config.RoleReplica, Weight: 1})
	}
	return &config.Config{
		Listen:        "127.0.0.1:0",
		MaxClientConn: 10000,
		Servers:       servers,
		Auth: config.Auth{
			Method: config.AuthSCRAM,
			Users: []config.User{
				{Name: appUser, Password: appPassword},
				{Name: auditorUser, Password: auditorPassword},
			},
		},
		Pool: config.Pool{
			Mode:                  config.ModeTransaction,
			PoolSize:              20,
			MaxOverflow:           20,
			PoolTimeout:           5 * time.Second,
			PoolRecycle:           time.Hour,
			PoolPrePing:           true,
			ConnectTimeout:        5 * time.Second,
			MaxPreparedStatements: 200,
			ResetAfterFunctions:   true,
		},
		// The foundation tests check behaviour on the primary's backends, so
		// reads stay there; routing_test.go turns offloading on.
		Routing:         config.Routing{ReadFrom: config.ReadFromPrimary, Transactions: config.TxPrimary, LoadBalance: config.BalanceLeastConn},
		Log:             config.DefaultLog(),
		Limits:          baseLimits(),
		ShutdownTimeout: 5 * time.Second,
	}
}

// baseLimits are the limits' defaults, with room for TestLargeRow's
// 100 MB parameter.
func baseLimits() config.Limits {
	l := config.DefaultLimits()
	l.MaxMessageSize = 128 << 20
	return l
}

// testProxy is a pgsplit server running in this process.
type testProxy struct {
	srv    *proxy.Server
	cfg    *config.Config
	host   string
	port   int
	logs   *logBuffer
	served chan error

	once        sync.Once
	shutdownErr error
}

// launchProxy starts pgsplit with cfg, logging at level info; shutdown
// stops it.
func launchProxy(cfg *config.Config, knobs ...proxy.Knobs) (*testProxy, error) {
	return launchProxyAt(cfg, zapcore.InfoLevel, knobs...)
}

// launchProxyAt is launchProxy logging at level.
func launchProxyAt(cfg *config.Config, level zapcore.Level, knobs ...proxy.Knobs) (*testProxy, error) {
	if problems := cfg.Validate(); len(problems) > 0 {
		return nil, fmt.Errorf("invalid test configuration: %s", strings.Join(problems, "; "))
	}
	logs := &logBuffer{}
	keepLog(logs)
	srv, err := proxy.New(cfg, newLoggerAt(logs, level))
	if err != nil {
		return nil, fmt.Errorf("proxy.New: %w", err)
	}
	for _, k := range knobs {
		srv.SetKnobs(k)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := srv.Listen(ctx); err != nil {
		return nil, fmt.Errorf("Listen: %w", err)
	}
	addr := srv.Addr().(*net.TCPAddr)
	p := &testProxy{srv: srv, cfg: cfg, host: addr.IP.String(), port: addr.Port, logs: logs, served: make(chan error, 1)}
	go func() { p.served <- srv.Serve() }()
	return p, nil
}

// startProxy starts a proxy for one test, with the base configuration
// changed by mutate, and shuts it down when the test ends.
func startProxy(t *testing.T, mutate func(*config.Config)) *testProxy {
	t.Helper()
	cfg := baseConfig()
	if mutate != nil {
		mutate(cfg)
	}
	return startProxyWith(t, cfg)
}

// startProxyWith starts pgsplit with cfg and shuts it down when the test
// ends (printing its log if the test failed).
func startProxyWith(t *testing.T, cfg *config.Config) *testProxy {
	t.Helper()
	return startProxyAt(t, cfg, zapcore.InfoLevel)
}

// startProxyWithKnobs is startProxyWith with test hooks installed.
func startProxyWithKnobs(t *testing.T, cfg *config.Config, knobs proxy.Knobs) *testProxy {
	t.Helper()
	return startProxyAt(t, cfg, zapcore.InfoLevel, knobs)
}

// startProxyAt is startProxyWith logging at level, with test hooks.
func startProxyAt(t *testing.T, cfg *config.Config, level zapcore.Level, knobs ...proxy.Knobs) *testProxy {
	t.Helper()
	p, err := launchProxyAt(cfg, level, knobs...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := p.shutdown(cfg.ShutdownTimeout + 10*time.Second); err != nil {
			t.Error(err)
		}
		if t.Failed() {
			t.Logf("pgsplit log of this test's proxy (last 80 lines):\n%s", p.logs.tail(0, 80))
			saveLog(t, p.logs.since(0))
		}
	})
	return p
}

// shutdown runs Server.Shutdown and waits for Serve to return; it fails if
// either hangs for longer than limit. Only the first call does anything.
func (p *testProxy) shutdown(limit time.Duration) error {
	p.once.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), limit)
		defer cancel()
		done := make(chan struct{})
		go func() {
			p.srv.Shutdown(ctx)
			close(done)
		}()
		select {
		case <-done:
		case <-time.After(limit + 5*time.Second):
			p.shutdownErr = fmt.Errorf("pgsplit Shutdown did not return within %s", limit+5*time.Second)
			return
		}
		select {
		case err := <-p.served:
			if err != nil {
				p.shutdownErr = fmt.Errorf("Serve returned %w", err)
			}
		case <-time.After(5 * time.Second):
			p.shutdownErr = errors.New("Serve did not return after Shutdown")
		}
	})
	return p.shutdownErr
}

// addr is host:port of the proxy.
func (p *testProxy) addr() string { return net.JoinHostPort(p.host, fmt.Sprint(p.port)) }

// dsn is a keyword/value connection string to the proxy; extra settings
// ("application_name=x") are appended.
func (p *testProxy) dsn(user, password string, extra ...string) string {
	s := fmt.Sprintf("host=%s port=%d user=%s password='%s' dbname=%s sslmode=disable connect_timeout=10",
		p.host, p.port, user, password, appDatabase)
	for _, e := range extra {
		s += " " + e
	}
	return s
}

// appDSN is the connection string of user app through the proxy.
func (p *testProxy) appDSN(extra ...string) string { return p.dsn(appUser, appPassword, extra...) }

// watchLogs makes the test print the proxy's log lines written during the
// test if it fails (for the shared proxy, whose log outlives tests), and
// returns the mark from which this test's lines start.
func (p *testProxy) watchLogs(t *testing.T) int {
	mark := p.logs.mark()
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("pgsplit log during this test (last 60 lines):\n%s", p.logs.tail(mark, 60))
			saveLog(t, p.logs.since(mark))
		}
	})
	return mark
}

// saveLog writes a failed test's whole proxy log to $PGSPLIT_TEST_LOGDIR,
// when that is set.
func saveLog(t *testing.T, log string) {
	dir := os.Getenv("PGSPLIT_TEST_LOGDIR")
	if dir == "" {
		return
	}
	path := filepath.Join(dir, strings.NewReplacer("/", "_", " ", "_").Replace(t.Name())+".log")
	if err := os.WriteFile(path, []byte(log), 0o644); err != nil {
		t.Logf("save pgsplit log: %v", err)
		return
	}
	t.Logf("whole pgsplit log saved to %s", path)
}

// logBuffer collects the JSON log lines of one proxy.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) Sync() error { return nil }

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// mark is the current end of the log, for since and entries.
func (b *logBuffer) mark() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Len()
}

// since returns the log text written after mark.
func (b *logBuffer) since(mark int) string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return string(b.buf.Bytes()[mark:])
}

func (b *logBuffer) tail(mark, lines int) string {
	all := strings.Split(strings.TrimRight(b.since(mark), "\n"), "\n")
	if len(all) > lines {
		all = all[len(all)-lines:]
	}
	return strings.Join(all, "\n")
}

// logEntry is one decoded JSON log line.
type logEntry map[string]any

func (e logEntry) str(key string) string {
	v, ok := e[key]
	if !ok {
		return ""
	}
	if s, ok := v.(string); ok {
		return s
	}
	return fmt.Sprint(v)
}

// entries decodes the log lines written after mark. A line that is not
// JSON is returned with only "raw" set, so that tests notice it.
func (b *logBuffer) entries(mark int) []logEntry {
	var out []logEntry
	for _, line := range strings.Split(b.since(mark), "\n") {
		if strings.TrimSpace(line) == "" {
			continue
		}
		var e logEntry
		if err := json.Unmarshal([]byte(line), &e); err != nil {
			e = logEntry{"raw": line}
		}
		out = append(out, e)
	}
	return out
}

// waitEntry polls the log until an entry after mark satisfies match.
func (b *logBuffer) waitEntry(t *testing.T, mark int, timeout time.Duration, what string, match func(logEntry) bool) logEntry {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		for _, e := range b.entries(mark) {
			if match(e) {
				return e
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no log line %s within %s; log since the test began:\n%s", what, timeout, b.tail(mark, 40))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// newLoggerAt is the logger pgsplit's main builds (JSON), writing to w at
// level.
func newLoggerAt(w zapcore.WriteSyncer, level zapcore.Level) *zap.Logger {
	ec := zap.NewProductionEncoderConfig()
	ec.TimeKey = "ts"
	ec.EncodeTime = zapcore.ISO8601TimeEncoder
	return zap.New(zapcore.NewCore(zapcore.NewJSONEncoder(ec), w, level))
}
