package proxy

import (
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/pgsplit/pgsplit/config"
	"github.com/pgsplit/pgsplit/internal/pgmsg"

	"github.com/pgsplit/pgsplit/pool"
	"github.com/pgsplit/pgsplit/router"
)

// startupSettings turns the client's startup parameters (other than user
// and database) and its "options" into the statements that apply them on an
// upstream connection, as the server would have at login: lower-case name →
// set_config statement. pgsplit's own parameter (pgsplit.report_commit_lsn)
// is not for the server: it comes back in own (lower-case name → value).
// Other pgsplit.* names are the server's custom placeholders, except
// pgsplit.route and pgsplit.min_lsn, which pgsplit answers (after login).
func startupSettings(params map[string]string) (out, own map[string]string, err error) {
	out, own = map[string]string{}, map[string]string{}
	put := func(set map[string]string) {
		// In name order, so that names differing only in case settle the
		// same way every time.
		for _, k := range slices.Sorted(maps.Keys(set)) {
			lk := strings.ToLower(k)
			if lk == reportCommitLSN {
				own[lk] = set[k]
				continue
			}
			out[lk] = fmt.Sprintf("SELECT pg_catalog.set_config(%s, %s, false)", pool.QuoteLiteral(lk), pool.QuoteLiteral(set[k]))
		}
	}
	// As PostgreSQL does: the switches in "options" first, then the other
	// startup parameters, which win over them.
	if v, ok := params["options"]; ok {
		opts, err := parseOptions(v)
		if err != nil {
			return nil, nil, err
		}
		put(opts)
	}
	rest := make(map[string]string, len(params))
	for k, v := range params {
		if k != "user" && k != "database" && k != "options" {
			rest[k] = v
		}
	}
	put(rest)
	for _, k := range []string{router.RouteSetting, router.MinLSNSetting} {
		if _, ok := out[k]; ok {
			return nil, nil, pgmsg.Fatal(pgmsg.CodeFeatureNotSupported, fmt.Sprintf("startup parameter %q: pgsplit answers it, with SET after login (at login pgsplit takes %s)", k, reportCommitLSN))
		}
	}
	return out, own, nil
}

// ownStartup applies pgsplit's own startup parameters (from
// startupSettings) and takes them out of params, so that the login
// compares and caches only the server's: it reports whether the client
// asked for commit positions.
func ownStartup(own, params map[string]string) (reportLSN bool, err error) {
	for k := range params {
		if strings.ToLower(k) == reportCommitLSN {
			delete(params, k)
		}
	}
	v, ok := own[reportCommitLSN]
	if !ok {
		return false, nil
	}
	if b, ok := config.ParseBool(v); ok {
		return b, nil
	}
	return false, pgmsg.Fatal(pgmsg.CodeInvalidParameterValue, fmt.Sprintf("invalid value for startup parameter %q: %q (use on or off)", reportCommitLSN, v))
}

// reportCommitLSN is the startup parameter by which a client asks for its
// commits' WAL positions (ParameterStatus commitLSNStatus after each).
const reportCommitLSN = "pgsplit.report_commit_lsn"

// parseOptions reads libpq's "options" parameter: command-line switches
// "-c name=value" or "--name=value", separated by spaces, with backslash
// escaping a space.
func parseOptions(s string) (map[string]string, error) {
	var words []string
	var cur strings.Builder
	escaped, in := false, false
	for _, r := range s {
		switch {
		case escaped:
			cur.WriteRune(r)
			escaped, in = false, true
		case r == '\\':
			escaped = true
		case r == ' ' || r == '\t' || r == '\n':
			if in {
				words = append(words, cur.String())
				cur.Reset()
				in = false
			}
		default:
			cur.WriteRune(r)
			in = true
		}
	}
	if in {
		words = append(words, cur.String())
	}
	out := map[string]string{}
	for i := 0; i < len(words); i++ {
		w := words[i]
		var kv string
		switch {
		case w == "-c" && i+1 < len(words):
			i++
			kv = words[i]
		case strings.HasPrefix(w, "-c"):
			kv = w[2:]
		case strings.HasPrefix(w, "--"):
			kv = w[2:]
		default:
			return nil, pgmsg.Fatal(pgmsg.CodeFeatureNotSupported, fmt.Sprintf("startup option %q is not supported by pgsplit: use -c name=value", w))
		}
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return nil, pgmsg.Fatal(pgmsg.CodeProtocolViolation, fmt.Sprintf("invalid startup option %q: expected name=value", kv))
		}
		out[strings.ReplaceAll(k, "-", "_")] = v
	}
	return out, nil
}
