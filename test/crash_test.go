package test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgsplit/pgsplit/config"
	"github.com/pgsplit/pgsplit/proxy"
)

// TestDeepStatementsDoNotCrashTheProcess: statements that crashed the whole
// process in libpg_query (SIGSEGV during cgo execution, in the parse and
// in the query log's normalize) get the server's own answer, under
// log.queries: all (every statement normalized) and from the parser;
// another client's session goes on, the statements are counted in
// /metrics, and the query log shows them without their text.
func TestDeepStatementsDoNotCrashTheProcess(t *testing.T) {
	p := startProxy(t, func(c *config.Config) {
		c.Log.Queries = config.QueriesAll
		c.Metrics.Listen = "127.0.0.1:0"
	})
	ctx := testCtx(t, 60*time.Second)
	other := connect(t, p.appDSN())
	mustSelectOne(t, other, "a client before the deep statements")
	deep := map[string]string{
		"100,000 terms":     "SELECT 1" + strings.Repeat("+1", 100000),
		"30,000 terms":      "SELECT 1" + strings.Repeat("+1", 30000),
		"5,000 parentheses": "SELECT " + strings.Repeat("(", 5000) + "1" + strings.Repeat(")", 5000),
		"3,000-deep ARRAY":  "SELECT (ARRAY" + strings.Repeat("[", 3000) + "1" + strings.Repeat("]", 3000) + ")::text",
	}
	for _, mode := range []pgx.QueryExecMode{pgx.QueryExecModeSimpleProtocol, pgx.QueryExecModeCacheStatement} {
		c := connect(t, p.appDSN(), func(cc *pgx.ConnConfig) { cc.DefaultQueryExecMode = mode })
		for name, sql := range deep {
			_, err := c.Exec(ctx, sql)
			if err != nil {
				// PostgreSQL itself may refuse (stack depth limit exceeded,
				// 54001): an answer from the server is what we want.
				if s := sqlState(err); s != "54001" && s != "54000" {
					t.Errorf("%s (%s): %v", name, mode, err)
				}
			}
			mustSelectOne(t, c, name+": the same client afterwards")
			mustSelectOne(t, other, name+": another client afterwards")
		}
		closeConn(c)
	}
	_, text := scrape(t, p, "/metrics")
	if n := metricSum(text, "pgsplit_unparsed_statements_total"); n < float64(len(deep)) {
		t.Errorf("pgsplit_unparsed_statements_total = %v, want ≥ %d", n, len(deep))
	}
	if n := metricSum(text, "pgsplit_limit_hits_total", `limit="max_parse_depth"`); n < float64(len(deep)) {
		t.Errorf(`pgsplit_limit_hits_total{limit="max_parse_depth"} = %v, want ≥ %d`, n, len(deep))
	}
	if !strings.Contains(p.logs.String(), `"limit":"max_parse_depth"`) {
		t.Error("the parser guard's hits are not logged")
	}
	if strings.Contains(p.logs.String(), "+1+1+1+1") {
		t.Error("the query log holds the text of a statement it could not normalize")
	}
}

// TestPanicInOneSessionEndsOnlyThatClient: a Go panic in a client's
// session (or in the reader of its server connection) ends that client
// with FATAL XX000 and leaves every other client and the process running;
// the server connection it held is closed, not given to the next client.
func TestPanicInOneSessionEndsOnlyThatClient(t *testing.T) {
	cfg := baseConfig()
	cfg.Pool.PoolSize, cfg.Pool.MaxOverflow = 2, 0
	cfg.Metrics.Listen = "127.0.0.1:0"
	const sessionPanic, pumpPanicLen = "SELECT 'pgsplit-test: panic in the session'", 7777
	srvKnobs := proxy.Knobs{
		OnQuery: func(sql string) {
			if sql == sessionPanic {
				panic("test: panic in the session")
			}
		},
		OnServerMessage: func(typ byte, n int) {
			if typ == 'D' && n == 2+4+pumpPanicLen {
				panic("test: panic in the pump")
			}
		},
	}
	p := startProxyWithKnobs(t, cfg, srvKnobs)
	ctx := testCtx(t, 60*time.Second)
	other := connect(t, p.appDSN())
	inTx, err := other.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := inTx.Exec(ctx, "SELECT 1"); err != nil {
		t.Fatal(err)
	}
	for _, q := range []string{sessionPanic, "SELECT repeat('x', 7777)"} {
		victim := connect(t, p.appDSN(), func(cc *pgx.ConnConfig) { cc.DefaultQueryExecMode = pgx.QueryExecModeSimpleProtocol })
		_, err := victim.Exec(ctx, q)
		var pe *pgconn.PgError
		if err == nil {
			t.Fatalf("%s: no error", q)
		}
		if !errors.As(err, &pe) || pe.Code != "XX000" {
			t.Errorf("%s: %v, want FATAL XX000", q, err)
		}
		closeConn(victim)
		// The other client's transaction is untouched, and new clients
		// get served.
		if _, err := inTx.Exec(ctx, "SELECT 2"); err != nil {
			t.Fatalf("after %s, the other client's transaction: %v", q, err)
		}
		fresh := connect(t, p.appDSN())
		mustSelectOne(t, fresh, "a new client after a panic")
		closeConn(fresh)
	}
	if err := inTx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if got := p.srv.Panics(); got != 2 {
		t.Errorf("Panics() = %d, want 2", got)
	}
	_, text := scrape(t, p, "/metrics")
	if n := metricSum(text, "pgsplit_internal_errors_total"); n != 2 {
		t.Errorf("pgsplit_internal_errors_total = %v, want 2", n)
	}
	if !strings.Contains(p.logs.String(), "only this client is disconnected") {
		t.Error("the panic is not in the log")
	}
	_ = context.Background
}

// TestRedactedLogsQuoteNoTextOfUnparsableStatements: with log.redact on,
// an unparsable statement's literals and the token the parser stopped at
// reach no log line (the reason used to quote the token; the end-of-run
// scan of every log checks the literals too).
func TestRedactedLogsQuoteNoTextOfUnparsableStatements(t *testing.T) {
	const literal, token = "Tr0ub4dor-literal", "hunter2token"
	registerSecret(literal, "a literal of an unparsable statement")
	registerSecret(token, "the token an unparsable statement stopped at")
	p := startProxy(t, func(c *config.Config) { c.Log.Queries = config.QueriesAll })
	ctx := testCtx(t, 30*time.Second)
	mark := p.logs.mark()
	for _, mode := range []pgx.QueryExecMode{pgx.QueryExecModeSimpleProtocol, pgx.QueryExecModeCacheStatement} {
		c := connect(t, p.appDSN(), func(cc *pgx.ConnConfig) { cc.DefaultQueryExecMode = mode })
		for _, sql := range []string{
			"SELECT '" + literal + "' " + token + " " + token,
			"UPDATE t SET pw = '" + literal + "' WHERE " + token + " " + token,
			"/* pgsplit:replica */ SELECT '" + literal + "' FROM (" + token + " " + token,
		} {
			if _, err := c.Exec(ctx, sql); sqlState(err) != "42601" {
				t.Errorf("%s: %v, want a syntax error", sql, err)
			}
		}
		closeConn(c)
	}
	logged := p.logs.since(mark)
	if !strings.Contains(logged, "(unparsable)") {
		t.Errorf("the query log has no record of the unparsable statements:\n%s", logged)
	}
	for _, s := range []string{literal, token} {
		if strings.Contains(logged, s) {
			t.Errorf("the log quotes %q", s)
		}
	}
}

// TestRedactedLogsQuoteNoValueOfAFailedReplayedSet: a SET that pgsplit
// replays on another server connection (a replica's) and that fails there is logged
// with its SQLSTATE only while log.redact is on; the server's message
// quotes the value (before: logged in full).
func TestRedactedLogsQuoteNoValueOfAFailedReplayedSet(t *testing.T) {
	const cfgName = "pgsplit_secret_tsconfig"
	registerSecret(cfgName, "the value of a replayed SET")
	ctx := testCtx(t, 30*time.Second)
	su := superConn(t)
	defer closeConn(su)
	for _, sql := range []string{"DROP TEXT SEARCH CONFIGURATION IF EXISTS public." + cfgName,
		"CREATE TEXT SEARCH CONFIGURATION public." + cfgName + " (COPY = english)"} {
		if _, err := su.Exec(ctx, sql); err != nil {
			t.Fatal(err)
		}
	}
	// A's SET runs on the primary; its next read goes to a replica
	// connection, where pgsplit replays the SET after the value stopped
	// being valid.
	p := routingProxy(t, func(c *config.Config) { c.Routing.ReadYourWrites = config.RYWOff })
	mark := p.logs.mark()
	a := connect(t, p.appDSN())
	if _, err := a.Exec(ctx, "SET default_text_search_config = 'public."+cfgName+"'"); err != nil {
		t.Fatal(err)
	}
	if _, err := su.Exec(ctx, "DROP TEXT SEARCH CONFIGURATION public."+cfgName); err != nil {
		t.Fatal(err)
	}
	waitAllCaughtUp(t)
	_, _ = a.Exec(ctx, "SELECT 1") // the replayed SET fails on the replica connection
	logged := p.logs.since(mark)
	if !strings.Contains(logged, "a statement pgsplit sent on the client's behalf failed") {
		t.Fatalf("no failed replayed SET was logged, so the test proves nothing:\n%s", p.logs.tail(mark, 20))
	}
	if strings.Contains(logged, cfgName) {
		t.Errorf("the log quotes the SET's value:\n%s", logged)
	}
}
