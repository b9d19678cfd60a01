package proxy

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"
	"go.uber.org/zap"

	"github.com/pgsplit/pgsplit/internal/pgmsg"
	"github.com/pgsplit/pgsplit/pool"
	"github.com/pgsplit/pgsplit/router"
)

// explainer runs EXPLAIN (FORMAT JSON) of slow reads on a replica, in the
// background and at most once per explainEvery, and logs a short plan
// summary: what a DBA looks for first (sequential scans of large tables,
// the plan's estimated cost and rows). A simple Query is explained with its
// text; an Execute through the extended protocol, with the parameters its
// Bind carried (kept for this only, never logged). Under
// log.explain_analyze the EXPLAIN has ANALYZE: the read runs again, and the
// summary adds its actual time, row-estimate misses and sorts that spilled
// to disk; without it the statement is not run again and those, which need
// actual figures, are not reported.
//
// Ownership: the Server owns it; jobs come from the query-log writer; one
// goroutine runs them.
type explainer struct {
	srv  *Server
	jobs chan explainJob
	last time.Time // explainer goroutine only
	done chan struct{}
}

const (
	explainEvery   = time.Second
	explainTimeout = 5 * time.Second
	// analyzeBudget bounds the statement run again by EXPLAIN ANALYZE
	// (statement_timeout, within explainTimeout); a statement that took
	// longer in the first place is explained without ANALYZE.
	analyzeBudget = 4 * time.Second
	// largeTable is the estimated row count from which a sequential scan
	// is flagged.
	largeTable = 10000
	// A node's row estimate is flagged as a miss when it is off by
	// missFactor or more, either way, and the larger of estimate and
	// actual count reaches missMinRows (below, misses are noise).
	missFactor  = 10
	missMinRows = 100
)

func newExplainer(s *Server) *explainer {
	return &explainer{srv: s, jobs: make(chan explainJob, 16), done: make(chan struct{})}
}

func (e *explainer) start() {
	go func() {
		defer close(e.done)
		for j := range e.jobs {
			if time.Since(e.last) < explainEvery {
				continue // rate limit: the plan of a statement that keeps being slow comes again
			}
			e.explainSafely(j)
			e.last = time.Now() // after the run: a gap between runs, however long they take
		}
	}()
}

// explainSafely is explain that survives a panic: that plan is lost, not
// the process.
func (e *explainer) explainSafely(j explainJob) {
	defer func() {
		if p := recover(); p != nil {
			e.srv.log.Error("EXPLAIN of a slow statement failed with an internal error", zap.String("panic", fmt.Sprint(p)), zap.Stack("stack"))
		}
	}()
	e.explain(j)
}

func (e *explainer) stop() {
	close(e.jobs)
	<-e.done
}

// explainJob is a slow read to explain, with its fingerprint.
type explainJob struct {
	r           *queryRecord
	fingerprint string
}

// explainable reports a statement the explainer may run again (ANALYZE
// executes it): a SELECT the classifier proved read-only, with no volatile
// or locking function (advisory locks, pg_terminate_backend…), whose route
// does not depend on the session.
func explainable(st router.Statement) bool {
	return st.Kind == router.KindSelect && st.Target == router.Replica
}

// offer queues a slow read for EXPLAIN; it never blocks. A statement that
// failed is not offered: it would fail again, and the server's message can
// quote a value.
func (e *explainer) offer(r *queryRecord, fingerprint string) {
	if r.kind != router.KindSelect || r.sqlstate != "" || (r.execute && r.params == nil) {
		// Only plain SELECTs are explained (EXPLAIN of other statements
		// means little here), and an Execute only with its parameters.
		return
	}
	select {
	case e.jobs <- explainJob{r, fingerprint}:
	default:
	}
}

// errText is err's text without a server's message (which can quote
// values): its SQLSTATE for a server error.
func errText(err error) string {
	if err == nil {
		return "no error"
	}
	if se, ok := pool.IsServerError(err); ok {
		return "server error " + se.Msg.Code
	}
	return err.Error()
}

// bindParams is what an EXPLAIN of an Execute needs besides the statement's
// text: the Bind's parameter values and format codes, and the parameter
// types the statement's Parse declared. Kept (only under log.explain_slow,
// only for reads) from Bind to the query-log record, for the explainer;
// never logged.
type bindParams struct {
	parse []byte // the statement's Parse message (clientStmt.parse, never modified)
	bind  []byte // the client's Bind body, copied: the buffers it came in are reused
}

// decode returns the parameter types, format codes and values (NULL as
// nil), valid as long as p.
func (p *bindParams) decode() (oids []uint32, formats []int16, values [][]byte, err error) {
	var parse pgproto3.Parse
	var bind pgproto3.Bind
	if len(p.parse) < 5 {
		return nil, nil, nil, fmt.Errorf("Parse message of %d bytes", len(p.parse))
	}
	if err := parse.Decode(p.parse[5:]); err != nil {
		return nil, nil, nil, err
	}
	if err := bind.Decode(p.bind); err != nil {
		return nil, nil, nil, err
	}
	return parse.ParameterOIDs, bind.ParameterFormatCodes, bind.Parameters, nil
}

// planNode is the part of EXPLAIN (FORMAT JSON) the summary reads. The
// Actual and Sort fields are there only with ANALYZE; Actual Rows is per
// loop, as Plan Rows.
type planNode struct {
	NodeType        string      `json:"Node Type"`
	Relation        string      `json:"Relation Name"`
	Schema          string      `json:"Schema"`
	PlanRows        float64     `json:"Plan Rows"`
	TotalCost       float64     `json:"Total Cost"`
	ActualRows      float64     `json:"Actual Rows"`
	ActualLoops     float64     `json:"Actual Loops"`
	ActualTotalTime float64     `json:"Actual Total Time"`
	sortSpace                   // the leader's sort (Sort nodes)
	Workers         []sortSpace `json:"Workers"` // parallel workers' sorts
	Plans           []planNode  `json:"Plans"`
}

// sortSpace is how a Sort node (or one parallel worker's part of it) sorted.
type sortSpace struct {
	SortMethod    string  `json:"Sort Method"`
	SortSpaceUsed float64 `json:"Sort Space Used"` // kB
	SortSpaceType string  `json:"Sort Space Type"` // "Memory" or "Disk"
}

func (e *explainer) explain(j explainJob) {
	r, who := j.r, j.r.who
	if !explainable(who.cls.Classify(r.sql)) {
		// e.g. SELECT pg_advisory_lock(…): ANALYZE would take the lock
		// on a pooled connection; even a plain EXPLAIN is not worth it.
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), explainTimeout)
	defer cancel()
	analyze := e.srv.qlog.cfg.Load().ExplainAnalyze && r.end.Sub(r.start) < analyzeBudget
	var root planNode
	var flags []string
	srv, err := e.srv.withPooledConn(ctx, router.Replica, who.user, who.database, func(c *pool.Conn) (err error) {
		if !analyze {
			root, flags, err = explainOn(ctx, c, r, false)
			return err
		}
		// The read runs again: in a read-only transaction whose
		// statement_timeout stops it on the server, rather than leave it
		// running there should the deadline drop the connection.
		_, err = c.Exec(ctx, fmt.Sprintf("BEGIN READ ONLY; SET LOCAL statement_timeout = %d", analyzeBudget.Milliseconds()))
		if err == nil {
			root, flags, err = explainOn(ctx, c, r, true)
		}
		// The ROLLBACK gets its own time even when ctx is over; if it
		// fails the error must not be a server error, so that the
		// connection is discarded rather than pooled mid-transaction.
		rctx, rcancel := context.WithTimeout(context.WithoutCancel(ctx), cleanupTimeout)
		status, rerr := c.Exec(rctx, "ROLLBACK")
		rcancel()
		if rerr != nil || status != pgmsg.TxIdle {
			return fmt.Errorf("EXPLAIN ANALYZE: its transaction could not be ended (status %q): %s", status, errText(rerr))
		}
		return err
	})
	if err != nil {
		// A server's message can quote a parameter value: only its
		// SQLSTATE is logged.
		if se, ok := pool.IsServerError(err); ok {
			e.srv.log.Info("EXPLAIN of a slow read failed", zap.String("fingerprint", j.fingerprint), zap.String("sqlstate", se.Msg.Code))
		} else {
			e.srv.log.Info("EXPLAIN of a slow read failed", zap.String("fingerprint", j.fingerprint), zap.Error(err))
		}
		return
	}
	sort.Strings(flags)
	fields := []zap.Field{
		zap.String("fingerprint", j.fingerprint),
		zap.String("server", srv.Addr()),
		zap.Bool("analyze", analyze),
		zap.String("top_node", root.NodeType),
		zap.Float64("estimated_cost", root.TotalCost),
		zap.Float64("estimated_rows", root.PlanRows),
	}
	if analyze {
		fields = append(fields,
			zap.Float64("actual_total_ms", root.ActualTotalTime),
			zap.Float64("actual_rows", root.ActualRows*root.ActualLoops))
	}
	e.srv.qlog.out.Warn("slow query plan", append(fields, zap.Strings("flags", flags))...)
}

// explainOn runs EXPLAIN (FORMAT JSON, VERBOSE) of r's statement on c, with
// ANALYZE and BUFFERS if analyze: an Execute through the extended protocol
// with its Bind's parameters, a simple Query with its text. It flags the
// sequential scans of tables with at least largeTable rows (pg_class's
// estimate) and, with ANALYZE, row-estimate misses and sorts that spilled
// to disk.
func explainOn(ctx context.Context, c *pool.Conn, r *queryRecord, analyze bool) (planNode, []string, error) {
	sql := "EXPLAIN (FORMAT JSON, VERBOSE) " + r.sql
	if analyze {
		sql = "EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON, VERBOSE) " + r.sql
	}
	var rows [][][]byte
	var err error
	if r.params != nil {
		oids, formats, values, derr := r.params.decode()
		if derr != nil {
			return planNode{}, nil, fmt.Errorf("kept Bind parameters: %w", derr)
		}
		rows, err = c.QueryParams(ctx, sql, oids, formats, values)
	} else {
		rows, err = c.Query(ctx, sql)
	}
	if err != nil {
		return planNode{}, nil, err
	}
	if len(rows) != 1 || len(rows[0]) != 1 {
		return planNode{}, nil, fmt.Errorf("EXPLAIN returned %d rows", len(rows))
	}
	var plans []struct {
		Plan planNode `json:"Plan"`
	}
	if err := json.Unmarshal(rows[0][0], &plans); err != nil {
		return planNode{}, nil, fmt.Errorf("EXPLAIN output: %w", err)
	}
	if len(plans) != 1 {
		return planNode{}, nil, fmt.Errorf("EXPLAIN output holds %d plans", len(plans))
	}
	var flags []string
	var walk func(n planNode) error
	walk = func(n planNode) error {
		if n.NodeType == "Seq Scan" && n.Relation != "" {
			size, err := c.Query(ctx, "SELECT c.reltuples::bigint FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = "+
				pool.QuoteLiteral(n.Schema)+" AND c.relname = "+pool.QuoteLiteral(n.Relation))
			if err != nil {
				return err
			}
			if len(size) == 1 && len(size[0]) == 1 {
				var tuples float64
				if _, err := fmt.Sscan(string(size[0][0]), &tuples); err == nil && tuples >= largeTable {
					flags = append(flags, fmt.Sprintf("sequential scan on %s.%s (about %.0f rows in the table, %.0f estimated to match)",
						n.Schema, n.Relation, tuples, n.PlanRows))
				}
			}
		}
		if analyze {
			flags = append(flags, analyzeFlags(n)...)
		}
		for _, c := range n.Plans {
			if err := walk(c); err != nil {
				return err
			}
		}
		return nil
	}
	return plans[0].Plan, flags, walk(plans[0].Plan)
}

// analyzeFlags flags, from n's actual figures (EXPLAIN ANALYZE), a row
// estimate off by missFactor or more and a sort that spilled to disk. Only
// node types, relation names and counts go into a flag: never a filter or
// sort key, which could carry the statement's values.
func analyzeFlags(n planNode) []string {
	var flags []string
	if n.ActualLoops > 0 { // 0: the node never ran
		est, act := n.PlanRows, n.ActualRows
		if hi, lo := max(est, act), max(min(est, act), 1); hi >= missMinRows && hi >= missFactor*lo {
			what := n.NodeType
			if n.Relation != "" {
				what += " " + n.Schema + "." + n.Relation
			}
			loops := ""
			if n.ActualLoops > 1 {
				loops = fmt.Sprintf(" per loop over %.0f loops", n.ActualLoops)
			}
			flags = append(flags, fmt.Sprintf("row estimate off on %s: estimated %.0f, actual %.0f%s", what, est, act, loops))
		}
	}
	spilled, diskKB, method := false, 0.0, ""
	for _, sp := range append([]sortSpace{n.sortSpace}, n.Workers...) {
		if sp.SortSpaceType == "Disk" {
			if !spilled {
				method = sp.SortMethod
			}
			spilled, diskKB = true, diskKB+sp.SortSpaceUsed
		}
	}
	if spilled {
		flags = append(flags, fmt.Sprintf("sort spilled to disk (%.0f kB, %s) sorting %.0f rows",
			diskKB, method, n.ActualRows*n.ActualLoops))
	}
	return flags
}
