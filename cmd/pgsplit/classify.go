package main

import (
	"bufio"
	"fmt"
	"io"
	"strings"

	"github.com/pgsplit/pgsplit/config"
	"github.com/pgsplit/pgsplit/router"
)

// classify reads statements from in, one per line (\n, \t and \\ stand for
// newline, tab and backslash), and prints where each would go and why.
// Without session, each line is the first statement of a fresh session;
// with it, the lines are one session's statements in order, so transactions
// and pins apply. Function volatility comes from the built-in lists and
// routing.read_functions / write_functions (no server is asked).
func classify(cfgPath string, session bool, in io.Reader, out io.Writer) error {
	routing := config.DefaultRouting()
	offload := true
	if cfgPath != "" {
		cfg, err := config.Load(cfgPath, nil)
		if err != nil {
			return err
		}
		routing = cfg.Routing
		offload = cfg.Routing.ReadFrom != config.ReadFromPrimary
	}
	c := router.NewClassifier(router.Options{WriteFunctions: routing.WriteFunctions, ReadFunctions: routing.ReadFunctions})
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
