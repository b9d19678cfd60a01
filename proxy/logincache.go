package proxy

import (
	"strings"
	"sync"
)

// loginCache remembers, per (database, user), the ParameterStatus values
// that a login checked on a server reported, so that under transaction
// pooling the next login with nothing to check is answered without a
// server connection (as PgBouncer answers logins from a pool's cached
// values): connection-per-request applications do not pay for a server
// connection per login, a login does not wait behind a busy pool, and with
// the primary down clients still log in to read. The Server owns it; it is
// safe for concurrent use; stored maps are never changed afterwards.
type loginCache struct {
	mu sync.Mutex
	m  map[loginKey]cachedLogin
}

type loginKey struct{ database, user string }

// cachedLogin is what a checked login reported, and the primary at the
// time ("" if none was known).
type cachedLogin struct {
	primary string
	params  map[string]string
}

// get returns the cached values of (database, user) if they came from the
// current primary, or whatever they came from while no primary is known.
func (c *loginCache) get(database, user, primary string) (map[string]string, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.m[loginKey{database, user}]
	if !ok || (primary != "" && e.primary != primary) {
		return nil, false
	}
	return e.params, true
}

// put remembers params (copied) for (database, user).
func (c *loginCache) put(database, user, primary string, params map[string]string) {
	cp := make(map[string]string, len(params))
	for k, v := range params {
		cp[k] = v
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil {
		c.m = map[loginKey]cachedLogin{}
	}
	c.m[loginKey{database, user}] = cachedLogin{primary, cp}
}

// drop forgets (database, user): its login failed on a server.
func (c *loginCache) drop(database, user string) {
	c.mu.Lock()
	delete(c.m, loginKey{database, user})
	c.mu.Unlock()
}

// cachedGreeting returns the ParameterStatus values for a login with the
// startup parameters startup (user, database and the client's others),
// from a checked login's values cached, or false when a startup parameter
// needs a server to check it: anything but application_name (any text is
// valid) and a parameter the client sets to the value the server reports
// already (client_encoding UTF8, DateStyle…; names and encodings compared
// as PostgreSQL does, without case).
func cachedGreeting(cached, startup map[string]string) (map[string]string, bool) {
	out := make(map[string]string, len(cached)+1)
	for k, v := range cached {
		out[k] = v
	}
	out["application_name"] = ""
	for k, v := range startup {
		switch lk := strings.ToLower(k); {
		case lk == "user" || lk == "database":
		case lk == "application_name":
			out["application_name"] = v
		default:
			name, reported := reportedName(cached, lk)
			if !reported || !sameSetting(lk, cached[name], v) {
				return nil, false
			}
		}
	}
	return out, true
}

// reportedName finds the ParameterStatus name (servers report DateStyle,
// TimeZone, IntervalStyle in mixed case) of the setting lk.
func reportedName(cached map[string]string, lk string) (string, bool) {
	for k := range cached {
		if strings.ToLower(k) == lk {
			return k, true
		}
	}
	return "", false
}

// sameSetting reports whether setting name to v leaves it at have.
func sameSetting(name, have, v string) bool {
	if name == "client_encoding" {
		norm := func(s string) string {
			s = strings.ToUpper(strings.NewReplacer("-", "", "_", "").Replace(s))
			if s == "UNICODE" {
				return "UTF8"
			}
			return s
		}
		return norm(have) == norm(v)
	}
	return have == v
}

// quickLogin returns the ParameterStatus values to greet the client with
// when its login needs no server: under transaction pooling, with values a
// checked login of the same (database, user) cached (see loginCache) and
// startup parameters that need no check (see cachedGreeting).
func (s *session) quickLogin(startup map[string]string, primary string) (map[string]string, bool) {
	if !s.txPooling || s.admin != nil {
		return nil, false
	}
	cached, ok := s.srv.logins.get(s.database, s.user.Name, primary)
	if !ok {
		return nil, false
	}
	return cachedGreeting(cached, startup)
}

// plainStartup reports whether a login's startup parameters set nothing
// but application_name: its server's values are what any such login
// would see, so they may be cached for the next.
func plainStartup(startup map[string]string) bool {
	for k := range startup {
		switch strings.ToLower(k) {
		case "user", "database", "application_name":
		default:
			return false
		}
	}
	return true
}
