package proxy

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"time"

	"go.uber.org/zap"

	"github.com/pgsplit/pgsplit/pool"
	"github.com/pgsplit/pgsplit/router"
)

// explainer runs EXPLAIN (FORMAT JSON) of slow reads on a replica, in the
// background and at most once per explainEvery, and logs a short plan
// summary: what a DBA looks for first (sequential scans of large tables,
// the plan's estimated cost and rows). Without ANALYZE the statement is not
// run again, so row-estimate misses and sort spills (which need actual
// figures) are not reported.
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
	// largeTable is the estimated row count from which a sequential scan
	// is flagged.
	largeTable = 10000
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
			e.last = time.Now()
			e.explain(j)
		}
	}()
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

// offer queues a slow read for EXPLAIN; it never blocks.
func (e *explainer) offer(r *queryRecord, fingerprint string) {
	if r.execute || r.kind != router.KindSelect {
		// An Execute's parameters are not kept; only plain SELECTs are
		// explained (EXPLAIN of other statements means little here).
		return
	}
	select {
	case e.jobs <- explainJob{r, fingerprint}:
	default:
	}
}

// planNode is the part of EXPLAIN (FORMAT JSON) the summary reads.
type planNode struct {
	NodeType  string     `json:"Node Type"`
	Relation  string     `json:"Relation Name"`
	Schema    string     `json:"Schema"`
	PlanRows  float64    `json:"Plan Rows"`
	TotalCost float64    `json:"Total Cost"`
	Plans     []planNode `json:"Plans"`
}

func (e *explainer) explain(j explainJob) {
	r, s := j.r, j.r.client
	ctx, cancel := context.WithTimeout(context.Background(), explainTimeout)
	defer cancel()
	var root planNode
	var flags []string
	srv, err := e.srv.withPooledConn(ctx, router.Replica, s.user, s.database, func(c *pool.Conn) (err error) {
		root, flags, err = explainOn(ctx, c, r.sql)
		return err
	})
	if err != nil {
		e.srv.log.Info("EXPLAIN of a slow read failed", zap.Error(err))
		return
	}
	sort.Strings(flags)
	e.srv.qlog.out.Warn("slow query plan",
		zap.String("fingerprint", j.fingerprint),
		zap.String("server", srv.Addr()),
		zap.String("top_node", root.NodeType),
		zap.Float64("estimated_cost", root.TotalCost),
		zap.Float64("estimated_rows", root.PlanRows),
		zap.Strings("flags", flags),
	)
}

// explainOn runs EXPLAIN (FORMAT JSON, VERBOSE) of sql on c and flags the
// sequential scans of tables with at least largeTable rows (pg_class's
// estimate).
func explainOn(ctx context.Context, c *pool.Conn, sql string) (planNode, []string, error) {
	rows, err := c.Query(ctx, "EXPLAIN (FORMAT JSON, VERBOSE) "+sql)
	if err != nil {
		return planNode{}, nil, err
	}
	if len(rows) != 1 || len(rows[0]) != 1 {
		return planNode{}, nil, fmt.Errorf("EXPLAIN returned %d rows", len(rows))
	}
	var plans []struct {
		Plan planNode `json:"Plan"`
	}
	if err := json.Unmarshal(rows[0][0], &plans); err != nil || len(plans) != 1 {
		return planNode{}, nil, fmt.Errorf("EXPLAIN output: %v", err)
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
		for _, c := range n.Plans {
			if err := walk(c); err != nil {
				return err
			}
		}
		return nil
	}
	return plans[0].Plan, flags, walk(plans[0].Plan)
}
