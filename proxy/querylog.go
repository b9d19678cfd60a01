package proxy

import (
	"encoding/hex"
	"errors"
	"fmt"
	"hash/fnv"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	pg_query "github.com/pganalyze/pg_query_go/v6"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"gopkg.in/natefinch/lumberjack.v2"

	"github.com/pgsplit/pgsplit/config"
	"github.com/pgsplit/pgsplit/internal/pgmsg"
	"github.com/pgsplit/pgsplit/nodes"
	"github.com/pgsplit/pgsplit/router"
)

// queryRecord is one statement's timing record (a simple Query, or an
// Execute of the extended protocol with its Parse text), filled as the
// statement runs: the session goroutine creates it when it sends the
// statement, the pump completes it when the statement's answer is relayed.
type queryRecord struct {
	start    time.Time
	wait     time.Duration // waiting for a server connection
	sql      string
	kind     router.Kind
	execute  bool        // extended protocol (else a simple Query)
	params   *bindParams // an Execute's parameters, for EXPLAIN only (log.explain_slow)
	role     router.Target
	server   string
	reason   string
	inTx     bool
	seq      int64     // the ReadyForQuery (count on its upstream) that ends its batch
	who      *clientID // who ran it
	rows     int64
	sqlstate string
	end      time.Time
}

// QueryLogStats counts what the query log did.
type QueryLogStats struct {
	Logged, Dropped int64
}

// queryLog writes query-log records without ever blocking the relay:
// records go through a buffered channel to one writer goroutine, and are
// counted as dropped when it is full. The writer normalizes and
// fingerprints statements with the PostgreSQL parser (cached per text).
//
// Ownership: the Server owns it; start and stop run on the Server's
// goroutines; record is called by pumps.
type queryLog struct {
	cfg     atomic.Pointer[config.Log]
	ch      chan *queryRecord
	out     *zap.Logger
	closer  func() error
	logged  atomic.Int64
	dropped atomic.Int64
	explain *explainer // slow reads to EXPLAIN (log.explain_slow)
	wg      sync.WaitGroup

	// writer goroutine only:
	cache map[string]normalized
	rng   *rand.Rand
}

type normalized struct{ text, fingerprint string }

// errUnparsable stands for the parser's error when the guard kept a
// statement from it.
var errUnparsable = errors.New("kept from the parser")

const queryLogBuffer = 8192

// newQueryLog builds the query log: to cfg.File (rotated) when set, else
// through process.
func newQueryLog(cfg config.Log, process *zap.Logger) *queryLog {
	q := &queryLog{ch: make(chan *queryRecord, queryLogBuffer), cache: map[string]normalized{},
		rng: rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 7)), out: process, closer: func() error { return nil }}
	q.cfg.Store(&cfg)
	if cfg.File != "" {
		lj := &lumberjack.Logger{Filename: cfg.File, MaxSize: cfg.FileMaxSizeMB, MaxBackups: cfg.FileMaxBackups}
		ec := zap.NewProductionEncoderConfig()
		ec.TimeKey = "ts"
		ec.EncodeTime = zapcore.ISO8601TimeEncoder
		q.out = zap.New(zapcore.NewCore(zapcore.NewJSONEncoder(ec), zapcore.AddSync(lj), zapcore.InfoLevel))
		q.closer = lj.Close
	}
	return q
}

func (q *queryLog) start() {
	q.wg.Add(1)
	go func() {
		defer q.wg.Done()
		for r := range q.ch {
			q.writeSafely(r)
		}
	}()
}

// writeSafely is write that survives a panic: one record whose text breaks
// a library loses its line, not the process.
func (q *queryLog) writeSafely(r *queryRecord) {
	defer func() {
		if p := recover(); p != nil {
			q.dropped.Add(1)
			q.out.Error("query-log record dropped after an internal error", zap.String("panic", fmt.Sprint(p)), zap.Stack("stack"))
		}
	}()
	q.write(r)
}

// stop writes what is queued and closes the file. No record may be sent
// afterwards (every session has ended).
func (q *queryLog) stop() {
	close(q.ch)
	q.wg.Wait()
	_ = q.out.Sync()
	_ = q.closer()
}

// record hands a finished statement to the writer if the settings want it
// logged; it never blocks.
func (q *queryLog) record(r *queryRecord) {
	cfg := q.cfg.Load()
	if cfg.Queries == config.QueriesOff {
		return
	}
	if r.end.Sub(r.start) < cfg.SlowQueryThreshold {
		r.params = nil // only slow reads are explained: free the copy now
		if cfg.Queries == config.QueriesSlow {
			return
		}
	}
	select {
	case q.ch <- r:
	default:
		q.dropped.Add(1)
	}
}

// write logs one record (writer goroutine).
func (q *queryLog) write(r *queryRecord) {
	cfg := q.cfg.Load()
	d := r.end.Sub(r.start)
	slow := d >= cfg.SlowQueryThreshold
	if !slow && cfg.SampleRate < 1 && q.rng.Float64() >= cfg.SampleRate {
		return
	}
	n := q.normalize(r.sql)
	text := n.text
	if !cfg.Redact {
		text = r.sql
	}
	who := r.who
	fields := []zap.Field{
		zap.Time("start", r.start),
		zap.Float64("duration_ms", float64(d.Microseconds())/1000),
		zap.Float64("wait_ms", float64(r.wait.Microseconds())/1000),
		zap.Bool("slow", slow),
		zap.String("server", r.server),
		zap.String("role", r.role.String()),
		zap.String("reason", r.reason),
		zap.String("client", who.addr),
		zap.String("user", who.user.Name),
		zap.String("database", who.database),
		zap.String("application_name", who.app),
		zap.Int64("rows", r.rows),
		zap.String("sqlstate", r.sqlstate),
		zap.Bool("in_transaction", r.inTx),
		zap.String("protocol", protocolName(r.execute)),
		zap.String("fingerprint", n.fingerprint),
		zap.String("query", text),
	}
	if slow {
		q.out.Warn("query", fields...)
		if cfg.ExplainSlow && q.explain != nil {
			q.explain.offer(r, n.fingerprint)
		}
	} else {
		q.out.Info("query", fields...)
	}
	q.logged.Add(1)
}

func protocolName(execute bool) string {
	if execute {
		return "extended"
	}
	return "simple"
}

// normalize returns the statement with its literals replaced by $n and its
// fingerprint (stable across literal values and formatting), cached per
// text. A statement the parser rejects is logged as "(unparsable)" with a
// hash of its text, so no literal reaches the log.
func (q *queryLog) normalize(sql string) normalized {
	if n, ok := q.cache[sql]; ok {
		return n
	}
	n := normalizeSQL(sql)
	if len(q.cache) >= 10000 {
		clear(q.cache)
	}
	q.cache[sql] = n
	return n
}

// normalizeSQL is normalize without the cache.
// A statement the parser guard refuses (router.Parsable) never reaches
// libpg_query, whose normalize and fingerprint recurse without a stack
// check and would crash the process on a deep enough statement.
func normalizeSQL(sql string) normalized {
	var n normalized
	var text, fp string
	err := errUnparsable
	var err2 error
	if ok, _ := router.Parsable(sql, 0, 0); ok {
		text, err = pg_query.Normalize(sql)
		fp, err2 = pg_query.Fingerprint(sql)
	}
	if err != nil || err2 != nil {
		h := fnv.New64a()
		_, _ = h.Write([]byte(sql))
		n = normalized{text: "(unparsable)", fingerprint: "x" + hex.EncodeToString(h.Sum(nil))}
	} else {
		n = normalized{text: text, fingerprint: fp}
	}
	return n
}

// expectReady counts a client statement sent to u whose ReadyForQuery the
// client will get, and returns its number.
func (u *upstream) expectReady() int64 {
	u.sent++
	return u.sent
}

// startRecord queues the query-log record of a statement about to be sent
// to u: a simple Query (params nil), or an Execute (with its parameters
// when they were kept); seq is the ReadyForQuery that ends its batch.
// Records feed the query log, the metrics and the admin console's
// statistics.
func (s *session) startRecord(u *upstream, sql string, kind router.Kind, execute bool, params *bindParams, reason string, start time.Time, seq int64) *queryRecord {
	r := &queryRecord{start: start, wait: s.waited, sql: sql, kind: kind, execute: execute, params: params, role: u.target, server: u.conn.Addr,
		reason: reason, inTx: byte(s.txStatus.Load()) != pgmsg.TxIdle || s.split != nil, seq: seq, who: s.id}
	u.recMu.Lock()
	u.recs = append(u.recs, r)
	u.recMu.Unlock()
	return r
}

// dropRecord takes back the record of a statement whose answer will not be
// relayed from u (the safety net runs it again elsewhere).
func (u *upstream) dropRecord(r *queryRecord) {
	u.sent--
	if r == nil {
		return
	}
	u.recMu.Lock()
	for i, x := range u.recs {
		if x == r {
			u.recs = append(u.recs[:i], u.recs[i+1:]...)
			break
		}
	}
	u.recMu.Unlock()
}

// dropBatchRecords takes back the records of the batch just sent to u
// (ended by ReadyForQuery number u.sent), whose answer will not be relayed.
func (u *upstream) dropBatchRecords() {
	seq := u.sent
	u.sent--
	u.recMu.Lock()
	n := 0
	for _, x := range u.recs {
		if x.seq != seq {
			u.recs[n] = x
			n++
		}
	}
	clear(u.recs[n:])
	u.recs = u.recs[:n]
	u.recMu.Unlock()
}

// noteAnswer completes query-log records from an answer the pump relayed:
// CommandComplete (rows), ErrorResponse (SQLSTATE), EmptyQueryResponse and
// PortalSuspended end an Execute; ReadyForQuery ends a simple Query and
// drops the Executes its batch skipped after an error. body is the
// message's body for C and E.
func (s *session) noteAnswer(u *upstream, typ byte, body []byte) {
	if typ == pgmsg.ReadyForQuery {
		u.zSeen++
	} else if typ == pgmsg.ErrorResponse {
		u.answerErr = true
	}
	u.recMu.Lock()
	if typ == pgmsg.ReadyForQuery {
		u.confirmParsed(u.zSeen) // done before the relay, but for a Z the safety net relayed
	}
	if len(u.recs) == 0 && typ != pgmsg.ReadyForQuery {
		u.recMu.Unlock()
		return
	}
	now := time.Now()
	var doneBuf [4]*queryRecord // a batch's usual few, without an allocation
	done := doneBuf[:0]
	switch typ {
	case pgmsg.CommandComplete, pgmsg.ErrorResponse, pgmsg.EmptyQueryResponse, pgmsg.PortalSuspended:
		r := u.recs[0]
		switch typ {
		case pgmsg.CommandComplete:
			r.rows += tagRows(body)
		case pgmsg.ErrorResponse:
			if r.sqlstate == "" {
				r.sqlstate = errorCode(body)
			}
		}
		if r.execute {
			r.end = now
			done = append(done, r)
			u.recs = u.recs[1:]
		}
	case pgmsg.ReadyForQuery:
		i := 0
		for ; i < len(u.recs) && u.recs[i].seq <= u.zSeen; i++ {
			if r := u.recs[i]; !r.execute {
				r.end = now
				done = append(done, r)
			}
		}
		u.recs = u.recs[i:]
	}
	// Transactions for SHOW STATS: one begins with the first statement
	// answered after the client's status was I, and ends at the next
	// ReadyForQuery I (every Sync of a pipeline is one).
	for _, r := range done {
		if u.batchStart.IsZero() || r.start.Before(u.batchStart) {
			u.batchStart = r.start
		}
	}
	var began int64
	if typ == pgmsg.ReadyForQuery {
		if !u.batchStart.IsZero() {
			s.txBegan.CompareAndSwap(0, u.batchStart.UnixNano())
			u.batchStart = time.Time{}
		}
		if len(body) == 1 && body[0] == pgmsg.TxIdle {
			began = s.txBegan.Swap(0)
		}
	}
	u.recMu.Unlock()
	if began != 0 {
		s.endTransaction(began, now)
	}
	if len(done) > 0 {
		s.srv.finished(done)
	}
}

// finished hands the records of finished statements to the one sink that
// fans them out: metrics, the SHOW STATS / SHOW QUERIES statistics, and the
// query log (which passes slow reads on to EXPLAIN). From here a record is
// the sink's: nobody changes it, and it points at no live session (who is
// fixed at login).
func (srv *Server) finished(done []*queryRecord) {
	threshold := srv.qlog.cfg.Load().SlowQueryThreshold
	for _, r := range done {
		slow := r.end.Sub(r.start) >= threshold
		srv.metrics.observe(r, slow)
		srv.stats.observe(r, slow)
		srv.qlog.record(r)
	}
}

// clientID is who ran a statement, as its query record says: set at
// login, read-only after, shared by the session's records.
type clientID struct {
	addr     string
	user     config.User
	database string
	app      string
	stats    *dbStats       // the database's counters (nil: none)
	cls      *nodes.Catalog // the database's classifier (EXPLAIN of slow reads)
}

// tagRows reads the row count at the end of a CommandComplete tag
// ("SELECT 5", "INSERT 0 5", "UPDATE 3"); 0 for tags without one.
func tagRows(body []byte) int64 {
	end := len(body)
	if end > 0 && body[end-1] == 0 {
		end--
	}
	start := end
	for start > 0 && body[start-1] >= '0' && body[start-1] <= '9' {
		start--
	}
	if start == end || start == 0 || body[start-1] != ' ' {
		return 0
	}
	var n int64
	for _, c := range body[start:end] {
		n = n*10 + int64(c-'0')
	}
	return n
}
