package test

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/pgsplit/pgsplit/config"
	"github.com/pgsplit/pgsplit/nodes"
)

// Hostile-client test: 1,000 connections to one pgsplit, 50 at a time,
// doing what a broken or hostile client does (garbage, truncated and
// absurd lengths, logins that never finish, half TLS handshakes, wrong
// cancel keys, Parse floods, oversized messages, COPY cut off), while 20
// honest pgx clients run transactions the whole time. Claims: no honest
// client sees an error; pgsplit's heap is back near its starting size;
// the app user never has more backends than the pool allows; pgsplit
// still serves a new client; the limits exercised are counted.

const (
	hostileConns       = 1000
	hostileConcurrency = 50
	honestClients      = 20
	hostilePoolSize    = 5
	hostilePoolExtra   = 5
)

// hostileKinds are the misbehaviours, taken in turn.
func hostileKinds() []string {
	return []string{"garbage", "truncated startup", "startup length 0", "startup length 3", "startup length 2^31-1",
		"startup never finishes", "half TLS handshake", "cancel with a wrong key",
		"Parse flood of new names", "Parse flood of one name", "Parse over max_message_size",
		"message length 2^31-1", "message length 3", "COPY cut off"}
}

// hostileRun is one hostile connection's outcome: whether pgsplit ended it
// (or answered and let it go) within the deadline.
type hostileRun struct {
	kind   string
	ended  bool
	detail string
}

func TestHostileClients(t *testing.T) {
	if testing.Short() {
		t.Skip("hostile-client load: not in -short")
	}
	p := startProxy(t, func(c *config.Config) {
		c.Metrics.Listen = "127.0.0.1:0"
		// md5, not SCRAM: 4096 PBKDF2 rounds per login, 50 at a time on 2
		// cores under -race, take longer than the 1 s startup_timeout
		// below, and the hostile clients that misbehave after logging in
		// would not get in.
		c.Auth.Method = config.AuthMD5
		c.Pool.PoolSize, c.Pool.MaxOverflow = hostilePoolSize, hostilePoolExtra
		c.Pool.PoolTimeout = 30 * time.Second
		c.Limits.StartupTimeout = time.Second
		c.Limits.MaxMessageSize = 1 << 20
		c.Limits.MaxClientStatements = 100
		c.Limits.MaxBatchBytes = 64 << 10
	})
	ctx := testCtx(t, 120*time.Second)
	su := superConn(t)
	baseline := appBackends(t, su)
	heapStart := heapInuse()
	began := time.Now()

	// Sample the heap and the app user's backends while it runs.
	var peakHeap atomic.Uint64
	var peakBackends atomic.Int64
	peakHeap.Store(heapStart)
	stopSampling := make(chan struct{})
	var sampling sync.WaitGroup
	sampling.Add(1)
	go func() {
		defer sampling.Done()
		for {
			select {
			case <-stopSampling:
				return
			case <-time.After(100 * time.Millisecond):
			}
			var ms runtime.MemStats
			runtime.ReadMemStats(&ms)
			if ms.HeapInuse > peakHeap.Load() {
				peakHeap.Store(ms.HeapInuse)
			}
			var n int64
			if err := su.QueryRow(ctx, "SELECT count(*) FROM pg_stat_activity WHERE usename = 'app' AND backend_type = 'client backend'").Scan(&n); err == nil && n > peakBackends.Load() {
				peakBackends.Store(n)
			}
		}
	}()

	// Honest clients, until the hostile ones are done.
	stopHonest := make(chan struct{})
	var honest sync.WaitGroup
	var txDone, readsDone atomic.Int64
	honestErrs := make(chan error, honestClients)
	for i := range honestClients {
		c := connect(t, p.appDSN(fmt.Sprintf("application_name=honest%d", i)))
		honest.Add(1)
		go func() {
			defer honest.Done()
			if err := honestLoop(ctx, c, i, stopHonest, &txDone, &readsDone); err != nil {
				honestErrs <- fmt.Errorf("honest client %d: %w", i, err)
			}
		}()
	}

	// The hostile connections.
	kinds := hostileKinds()
	runs := make(chan hostileRun, hostileConns)
	sem := make(chan struct{}, hostileConcurrency)
	var hostile sync.WaitGroup
	for i := range hostileConns {
		sem <- struct{}{}
		hostile.Add(1)
		go func() {
			defer hostile.Done()
			defer func() { <-sem }()
			kind := kinds[i%len(kinds)]
			runs <- hostileConn(t, p, kind, rand.New(rand.NewPCG(uint64(i), 11)))
		}()
	}
	hostile.Wait()
	hostileTime := time.Since(began)
	close(stopHonest)
	honest.Wait()
	close(stopSampling)
	sampling.Wait()
	close(runs)
	close(honestErrs)
	for err := range honestErrs {
		t.Error(err)
	}
	notEnded := map[string]int{}
	for r := range runs {
		if !r.ended {
			notEnded[r.kind]++
			if notEnded[r.kind] == 1 {
				t.Logf("%s: not ended by pgsplit: %s", r.kind, r.detail)
			}
		}
	}
	if len(notEnded) > 0 {
		t.Errorf("hostile connections pgsplit left open past their deadline, by kind: %v", notEnded)
	}

	// The process serves a new client, and gives everything back.
	checkProxyWorks(t, p, "after the hostile clients")
	waitFor(t, 15*time.Second, "every hostile connection's place given back", func() (bool, string) {
		n := p.srv.ClientConnections()
		return n <= honestClients, fmt.Sprintf("%d connections counted", n)
	})
	heapEnd := heapInuse()
	t.Logf("%d hostile connections in %s (%d at a time); honest: %d transactions, %d autocommit reads, 0 errors expected",
		hostileConns, hostileTime.Round(time.Millisecond), hostileConcurrency, txDone.Load(), readsDone.Load())
	t.Logf("heap in use: start %.1f MB, peak %.1f MB, end %.1f MB", mb(heapStart), mb(peakHeap.Load()), mb(heapEnd))
	t.Logf("app backends on the primary: %d before, at most %d during (pool allows %d, pgsplit's own %d)",
		baseline, peakBackends.Load(), hostilePoolSize+hostilePoolExtra, nodes.OwnConnections)
	if heapEnd > heapStart+32<<20 {
		t.Errorf("heap in use %.1f MB at the end, over start %.1f MB + 32 MB", mb(heapEnd), mb(heapStart))
	}
	// pgsplit's own connections (health checks, WAL positions) log in as
	// the first user, app, too.
	if extra := peakBackends.Load() - int64(baseline); extra > hostilePoolSize+hostilePoolExtra+nodes.OwnConnections {
		t.Errorf("app had %d backends over its %d before the test, more than pool_size + max_overflow + pgsplit's own %d = %d",
			extra, baseline, nodes.OwnConnections, hostilePoolSize+hostilePoolExtra+nodes.OwnConnections)
	}
	if txDone.Load() == 0 || readsDone.Load() == 0 {
		t.Errorf("honest clients did %d transactions and %d reads: the load did not run", txDone.Load(), readsDone.Load())
	}
	_, metricsText := scrape(t, p, "/metrics")
	for _, limit := range []string{"startup_timeout", "startup_packet_size", "max_message_size", "max_client_statements", "max_batch_bytes"} {
		n := metricSum(metricsText, "pgsplit_limit_hits_total", fmt.Sprintf("limit=%q", limit))
		t.Logf("pgsplit_limit_hits_total{limit=%q} %v", limit, n)
		if n == 0 {
			t.Errorf("limit %s was exercised but not counted", limit)
		}
	}
}

// honestLoop runs transactions (an INSERT and a SELECT that reads it) and
// autocommit reads on c until stop closes.
func honestLoop(ctx context.Context, c *pgx.Conn, id int, stop <-chan struct{}, txDone, readsDone *atomic.Int64) error {
	for n := 0; ; n++ {
		select {
		case <-stop:
			return nil
		default:
		}
		key := fmt.Sprintf("honest-%d-%d-%d", id, n, time.Now().UnixNano())
		tx, err := c.Begin(ctx)
		if err != nil {
			return fmt.Errorf("BEGIN: %w", err)
		}
		if _, err := tx.Exec(ctx, "INSERT INTO kv VALUES ($1, $2)", key, n); err != nil {
			_ = tx.Rollback(ctx)
			return fmt.Errorf("INSERT: %w", err)
		}
		var v int
		if err := tx.QueryRow(ctx, "SELECT v FROM kv WHERE k = $1", key).Scan(&v); err != nil || v != n {
			_ = tx.Rollback(ctx)
			return fmt.Errorf("SELECT in the transaction: %d, %v", v, err)
		}
		if err := tx.Commit(ctx); err != nil {
			return fmt.Errorf("COMMIT: %w", err)
		}
		txDone.Add(1)
		var found int
		if err := c.QueryRow(ctx, "SELECT count(*) FROM kv WHERE k = $1", key).Scan(&found); err != nil || found != 1 {
			return fmt.Errorf("autocommit read of the committed row: %d, %v", found, err)
		}
		readsDone.Add(1)
	}
}

// hostileConn runs one hostile connection of kind and reports whether
// pgsplit ended it within its deadline.
func hostileConn(t *testing.T, p *testProxy, kind string, rng *rand.Rand) hostileRun {
	run := hostileRun{kind: kind}
	var c net.Conn
	var err error
	switch kind {
	case "Parse flood of new names", "Parse flood of one name", "Parse over max_message_size",
		"message length 2^31-1", "message length 3", "COPY cut off":
		c, err = hostileLogin(p)
	default:
		c, err = net.DialTimeout("tcp", p.addr(), 10*time.Second)
	}
	if err != nil {
		run.detail = "connect: " + err.Error()
		return run
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(15 * time.Second))
	send := func(b []byte) { _, _ = c.Write(b) }
	startup := startupPacket(196608, "user", appUser, "database", appDatabase)
	switch kind {
	case "garbage":
		b := make([]byte, 1+rng.IntN(4096))
		for i := range b {
			b[i] = byte(rng.Uint32())
		}
		send(b)
	case "truncated startup":
		send(startup[:4+rng.IntN(len(startup)-5)])
		// then silence: startup_timeout ends it
	case "startup length 0":
		send([]byte{0, 0, 0, 0})
	case "startup length 3":
		send([]byte{0, 0, 0, 3, 1, 2, 3})
	case "startup length 2^31-1":
		send([]byte{0x7f, 0xff, 0xff, 0xff, 0, 3, 0, 0})
	case "startup never finishes":
		send([]byte{0, 0, 0x10, 0}) // 4096 bytes promised, none sent
	case "half TLS handshake":
		send(requestPacket(80877103))
		var b [1]byte
		if _, err := io.ReadFull(c, b[:]); err != nil {
			run.detail = "no answer to SSLRequest: " + err.Error()
			return run
		}
		// 'N' today, 'S' once pgsplit offers TLS: either way the start of
		// a ClientHello, then silence.
		send([]byte{0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03})
	case "cancel with a wrong key":
		send(cancelPacket(rng.Uint32()&0x7fffffff, []byte{byte(rng.Uint32()), 2, 3, 4}))
	case "Parse flood of new names":
		for i := range 300 {
			send(mustEncode(&pgproto3.Parse{Name: fmt.Sprintf("flood%d", i), Query: "SELECT 1"}))
		}
	case "Parse flood of one name":
		msg := mustEncode(&pgproto3.Parse{Name: "same", Query: "SELECT 1"})
		go func() {
			for range 8000 {
				if _, err := c.Write(msg); err != nil {
					return
				}
			}
		}()
	case "Parse over max_message_size":
		msg := mustEncode(&pgproto3.Parse{Name: "big", Query: "SELECT '" + strings.Repeat("x", 2<<20) + "'"})
		go func() { _, _ = c.Write(msg) }()
	case "message length 2^31-1":
		send([]byte{'P', 0x7f, 0xff, 0xff, 0xff, 's', 0})
	case "message length 3":
		send([]byte{'Q', 0, 0, 0, 3})
	case "COPY cut off":
		send(mustEncode(&pgproto3.Query{String: "COPY copy_rows (id, name) FROM STDIN"}))
		for i := range 20 {
			send(mustEncode(&pgproto3.CopyData{Data: []byte(fmt.Sprintf("%d\thostile\n", 1_000_000+rng.IntN(1_000_000)+i))}))
		}
		_ = c.(*net.TCPConn).SetLinger(0) // abrupt: a reset mid-COPY
		run.ended = true
		return run
	}
	// pgsplit answers (or not) and closes; read until it does.
	_, err = io.Copy(io.Discard, c)
	if err != nil && !isConnReset(err) {
		run.detail = err.Error()
		return run
	}
	run.ended = true
	return run
}

// hostileLogin logs in as app through p and hands over the raw connection.
// A login can take longer than the test's 1 s startup_timeout when 50
// connections compete for 2 cores under -race: it tries again, up to 5
// times.
func hostileLogin(p *testProxy) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var c *pgx.Conn
	var err error
	for range 5 {
		if c, err = pgx.Connect(ctx, p.appDSN("application_name=hostile")); err == nil {
			break
		}
	}
	if err != nil {
		return nil, err
	}
	hc, err := c.PgConn().Hijack()
	if err != nil {
		return nil, err
	}
	return hc.Conn, nil
}

func mustEncode(m pgproto3.FrontendMessage) []byte {
	b, err := m.Encode(nil)
	if err != nil {
		panic(err) // the test's own messages: a bug in the test
	}
	return b
}

// heapInuse is the process's heap in use after a full collection.
func heapInuse() uint64 {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapInuse
}

func mb(n uint64) float64 { return float64(n) / (1 << 20) }
