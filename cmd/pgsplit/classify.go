package main

import (
	"bufio"
	"context"
	"os"
	"time"

	"fmt"
	"io"
	"strings"

	"github.com/pgsplit/pgsplit/config"
	"github.com/pgsplit/pgsplit/nodes"
	"github.com/pgsplit/pgsplit/router"
)

// classify reads statements from in, one per line (\n, \t and \\ stand for
// newline, tab and backslash), and prints where each would go and why.
// Without session, each line is the first statement of a fresh session;
// with it, the lines are one session's statements in order, so transactions
// and pins apply. Function volatility comes from the built-in lists and
// routing.read_functions / write_functions, and from pg_proc of database on
// the configured primary when --config points at a reachable server.
func classify(cfgPath, database string, session bool, in io.Reader, out, stderr io.Writer) error {
	routing := config.DefaultRouting()
	offload := true
	var volatile map[string]bool
	if cfgPath != "" {
		cfg, err := config.Load(cfgPath, os.Environ())
		if err != nil {
			return err
		}
		routing = cfg.Routing
		offload = cfg.Routing.ReadFrom != config.ReadFromPrimary
		volatile = catalogFor(cfg, database, stderr)
	}
	opts := router.Options{WriteFunctions: routing.WriteFunctions, ReadFunctions: routing.ReadFunctions}
	if volatile != nil {
		opts.Volatile = func(name string) (bool, bool) { v, ok := volatile[name]; return v, ok }
	}
	c := router.NewClassifier(opts)
	s := router.NewSession(offload)
	tx := router.HintNone // where this session's open transaction runs
	sc := bufio.NewScanner(in)
	sc.Buffer(make([]byte, 64<<10), 16<<20)
	w := bufio.NewWriter(out)
	defer w.Flush()
	for sc.Scan() {
		line := sc.Text()
		if strings.TrimSpace(line) == "" {
			fmt.Fprintln(w)
			continue
		}
		if !session {
			s, tx = router.NewSession(offload), router.HintNone
		}
		st := c.Classify(unescapeLine(line))
		d := s.Route(st, tx)
		target := d.Target.String()
		if d.Local {
			target = "pgsplit"
			if _, err := s.ApplySetting(st); err != nil {
				d.Reason = err.Error()
			}
		} else {
			s.Observe(st)
		}
		switch st.Kind {
		case router.KindBegin, router.KindStartTransaction:
			if tx == router.HintNone {
				tx = d.Target
			}
		case router.KindCommit, router.KindRollback, router.KindPrepareTransaction:
			tx = router.HintNone
		}
		fmt.Fprintf(w, "%s\t%s\n", target, d.Reason)
	}
	return sc.Err()
}

// catalogFor reads function volatility from the configured primary, or
// says on stderr why it could not and returns nil (built-in lists only).
func catalogFor(cfg *config.Config, database string, stderr io.Writer) map[string]bool {
	primary, ok := cfg.Primary()
	if !ok || len(cfg.Auth.Users) == 0 {
		return nil
	}
	u := cfg.Auth.ServiceUser()
	if database == "" {
		database = u.Name
	}
	ctx, cancel := context.WithTimeout(context.Background(), cfg.Pool.ConnectTimeout+5*time.Second)
	defer cancel()
	m, err := nodes.ReadVolatility(ctx, primary, u, database, cfg.Pool.ConnectTimeout, cfg.ServerTLS)
	if err != nil {
		fmt.Fprintf(stderr, "pgsplit classify: no catalog (%v); using the built-in function lists\n", err)
		return nil
	}
	return m
}

// unescapeLine turns \n, \t and \\ into newline, tab and backslash; any
// other backslash stays as it is.
func unescapeLine(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+1 < len(s) {
			switch s[i+1] {
			case 'n':
				b.WriteByte('\n')
				i++
				continue
			case 't':
				b.WriteByte('\t')
				i++
				continue
			case '\\':
				b.WriteByte('\\')
				i++
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
