package proxy

import (
	"fmt"
	"strings"

	"github.com/pgsplit/pgsplit/pool"
)

// startupSettings turns the client's startup parameters (other than user
// and database) and its "options" into the statements that apply them on an
// upstream connection, as the server would have at login: lower-case name →
// set_config statement.
func startupSettings(params map[string]string) (map[string]string, error) {
	set := map[string]string{}
	for k, v := range params {
		switch k {
		case "user", "database":
		case "options":
			opts, err := parseOptions(v)
			if err != nil {
				return nil, err
			}
			for ok, ov := range opts {
				set[ok] = ov
			}
		default:
			set[k] = v
		}
	}
	out := make(map[string]string, len(set))
	for k, v := range set {
		k = strings.ToLower(k)
		out[k] = fmt.Sprintf("SELECT pg_catalog.set_config(%s, %s, false)", pool.QuoteLiteral(k), pool.QuoteLiteral(v))
	}
	return out, nil
}

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
			return nil, fatal(codeFeatureNotSupported, fmt.Sprintf("startup option %q is not supported by pgsplit: use -c name=value", w))
		}
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return nil, fatal(codeProtocolViolation, fmt.Sprintf("invalid startup option %q: expected name=value", kv))
		}
		out[strings.ReplaceAll(k, "-", "_")] = v
	}
	return out, nil
}
