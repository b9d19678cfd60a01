package proxy

import "testing"

var serverParams = map[string]string{
	"server_version": "15.8", "client_encoding": "UTF8", "DateStyle": "ISO, MDY",
	"TimeZone": "UTC", "application_name": "someone-else", "integer_datetimes": "on",
}

// A login is answered from cached values only when none of its startup
// parameters needs a server to check it, and reports the client's own
// application_name, never the cached login's.
func TestCachedGreetingOnlyWhenNothingNeedsAServer(t *testing.T) {
	for _, tc := range []struct {
		name    string
		startup map[string]string
		ok      bool
		appName string
	}{
		{"pgx: user and database", map[string]string{"user": "app", "database": "app"}, true, ""},
		{"libpq with application_name", map[string]string{"user": "app", "database": "app", "application_name": "pgbench"}, true, "pgbench"},
		{"client_encoding as reported", map[string]string{"user": "app", "database": "app", "client_encoding": "utf8"}, true, ""},
		{"client_encoding UNICODE", map[string]string{"user": "app", "database": "app", "client_encoding": "UNICODE"}, true, ""},
		{"DateStyle as reported, any case", map[string]string{"user": "app", "database": "app", "datestyle": "ISO, MDY"}, true, ""},
		{"another client_encoding", map[string]string{"user": "app", "database": "app", "client_encoding": "LATIN1"}, false, ""},
		{"another TimeZone", map[string]string{"user": "app", "database": "app", "TimeZone": "Europe/Paris"}, false, ""},
		{"options", map[string]string{"user": "app", "database": "app", "options": "-c search_path=x"}, false, ""},
		{"a setting servers do not report", map[string]string{"user": "app", "database": "app", "extra_float_digits": "3"}, false, ""},
		{"a setting that may not exist", map[string]string{"user": "app", "database": "app", "no_such_setting": "1"}, false, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := cachedGreeting(serverParams, tc.startup)
			if ok != tc.ok {
				t.Fatalf("answered from cache: %v, want %v", ok, tc.ok)
			}
			if !ok {
				return
			}
			if got["application_name"] != tc.appName {
				t.Errorf("application_name %q, want %q", got["application_name"], tc.appName)
			}
			if got["server_version"] != "15.8" {
				t.Errorf("server_version %q: the cached values must be reported", got["server_version"])
			}
		})
	}
	if serverParams["application_name"] != "someone-else" {
		t.Fatal("cachedGreeting changed the cached map")
	}
}

// Cached values are used while their primary is the primary, or while no
// primary is known (clients log in to read during a failover), and are
// forgotten by drop.
func TestLoginCacheFollowsThePrimary(t *testing.T) {
	var c loginCache
	if _, ok := c.get("app", "app", "p1:5432"); ok {
		t.Fatal("empty cache answered")
	}
	c.put("app", "app", "p1:5432", serverParams)
	if _, ok := c.get("app", "app", "p1:5432"); !ok {
		t.Fatal("same primary: want the cached values")
	}
	if _, ok := c.get("app", "app", "p2:5432"); ok {
		t.Fatal("after a failover to another primary the old values must not be used")
	}
	if _, ok := c.get("app", "app", ""); !ok {
		t.Fatal("no primary known: want the cached values")
	}
	if _, ok := c.get("other", "app", "p1:5432"); ok {
		t.Fatal("another database must not be answered from app's values")
	}
	c.drop("app", "app")
	if _, ok := c.get("app", "app", "p1:5432"); ok {
		t.Fatal("dropped values answered")
	}
}
