package config

import (
	"errors"
	"fmt"
	"net"
	"reflect"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/go-viper/mapstructure/v2"
	"github.com/spf13/viper"
)

// EnvPrefix starts every environment variable pgsplit reads.
const EnvPrefix = "PGSPLIT_"

// defaults are the values used when neither the file nor the environment
// sets a key. Every scalar key appears here: viper only maps an environment
// variable onto a key it knows.
func defaults() map[string]any {
	return map[string]any{
		"listen":                        "127.0.0.1:6432",
		"max_client_conn":               10000,
		"servers":                       []any{},
		"auth.method":                   AuthSCRAM,
		"auth.users":                    []any{},
		"auth.auth_user":                "",
		"auth.auth_query":               DefaultAuthQuery,
		"databases":                     []string{},
		"pool.mode":                     ModeTransaction,
		"pool.profile":                  ProfileProduction,
		"pool.pool_size":                20,
		"pool.max_overflow":             40,
		"pool.max_prepared_statements":  200,
		"pool.reset_after_functions":    true,
		"pool.pool_timeout":             "30s",
		"pool.pool_recycle":             "1h",
		"pool.overflow_idle_timeout":    "60s",
		"pool.pool_pre_ping":            true,
		"pool.connect_timeout":          "5s",
		"routing.read_from":             ReadFromReplicas,
		"routing.transactions":          TxSplit,
		"routing.load_balance":          BalanceLeastConn,
		"routing.write_functions":       []string{},
		"routing.read_functions":        []string{},
		"log.level":                     "info",
		"log.format":                    "json",
		"log.queries":                   QueriesSlow,
		"log.slow_query_threshold":      "1s",
		"log.sample_rate":               1.0,
		"log.redact":                    true,
		"log.file":                      "",
		"log.file_max_size_mb":          100,
		"log.file_max_backups":          5,
		"metrics.listen":                "",
		"log.explain_slow":              false,
		"log.explain_analyze":           false,
		"routing.health_check_interval": "2s",
		"routing.read_your_writes":      RYWTable,
		"routing.read_your_writes_wait": "10ms",
		"routing.max_replica_lag":       "10s",
		"routing.max_replica_lag_bytes": 0,
		"admin.users":                   []any{},
		"shutdown_timeout":              "30s",
		// See DefaultLimits.
		"limits.max_message_size":            64 << 20,
		"limits.max_client_statements":       1000,
		"limits.max_client_statement_bytes":  16 << 20,
		"limits.max_batch_bytes":             1 << 20,
		"limits.startup_timeout":             "15s",
		"limits.client_idle_timeout":         "0s",
		"limits.idle_in_transaction_timeout": "0s",
		"limits.max_connections_per_ip":      0,
		"limits.max_parse_depth":             1000,
		"limits.max_parse_bytes":             1 << 20,
		"tls.mode":                           TLSDisable,
		"tls.cert_file":                      "",
		"tls.key_file":                       "",
		"tls.client_ca_file":                 "",
		"server_tls.mode":                    SSLPrefer,
		"server_tls.ca_file":                 "",
		"server_tls.cert_file":               "",
		"server_tls.key_file":                "",
	}
}

// DefaultRouting is the routing section's defaults, for configurations
// built in code.
func DefaultRouting() Routing {
	return Routing{ReadFrom: ReadFromReplicas, Transactions: TxSplit, LoadBalance: BalanceLeastConn, HealthCheckInterval: 2 * time.Second,
		ReadYourWrites: RYWTable, ReadYourWritesWait: 10 * time.Millisecond, MaxReplicaLag: 10 * time.Second}
}

// DefaultLog is the log section's defaults, for configurations built in
// code.
func DefaultLog() Log {
	return Log{Level: "info", Format: "json", Queries: QueriesSlow, SlowQueryThreshold: time.Second, SampleRate: 1,
		Redact: true, FileMaxSizeMB: 100, FileMaxBackups: 5}
}

// Keys lists every configuration key in dotted form, sorted.
func Keys() []string {
	d := defaults()
	keys := make([]string, 0, len(d))
	for k := range d {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// EnvName returns the environment variable that overrides a dotted key.
func EnvName(key string) string {
	return EnvPrefix + strings.ToUpper(strings.ReplaceAll(key, ".", "_"))
}

// Load reads the file at path (may be "" for defaults plus environment),
// applies environment overrides from environ (os.Environ() form), and
// validates the result. A returned error lists one problem per line.
func Load(path string, environ []string) (*Config, error) {
	v := viper.New()
	for k, val := range defaults() {
		v.SetDefault(k, val)
	}
	if path != "" {
		v.SetConfigFile(path)
		v.SetConfigType("yaml")
		if err := v.ReadInConfig(); err != nil {
			return nil, fmt.Errorf("config file %s: %w", path, err)
		}
	}

	var problems []string
	env := map[string]string{}
	for _, kv := range environ {
		name, val, ok := strings.Cut(kv, "=")
		if ok && strings.HasPrefix(name, EnvPrefix) {
			env[name] = val
		}
	}
	known := map[string]string{}
	for _, k := range Keys() {
		known[EnvName(k)] = k
	}
	for name, val := range env {
		key, ok := known[name]
		if !ok {
			problems = append(problems, fmt.Sprintf("%s: unknown environment variable (allowed: %s)", name, strings.Join(envNames(), ", ")))
			continue
		}
		switch key {
		case "servers":
			servers, err := parseServersEnv(val)
			if err != nil {
				problems = append(problems, fmt.Sprintf("%s=%q: %v", name, val, err))
				continue
			}
			v.Set(key, servers)
		case "auth.users", "admin.users":
			users, err := parseUsersEnv(val)
			if err != nil {
				problems = append(problems, fmt.Sprintf("%s: %v", name, err))
				continue
			}
			v.Set(key, users)
		default:
			v.Set(key, val)
		}
	}

	var cfg Config
	err := v.UnmarshalExact(&cfg, viper.DecodeHook(mapstructure.ComposeDecodeHookFunc(durationHook, boolHook, mapstructure.StringToSliceHookFunc(","))))
	if err != nil {
		problems = append(problems, decodeProblems(err, v)...)
	}
	defaultWeights(&cfg, v)
	applyProfile(&cfg, v, env)
	problems = append(problems, cfg.ResolveSecrets(environ)...)
	// Validate even after a decode problem, so one run lists every problem;
	// a key that failed to decode is not reported a second time.
	for _, vp := range cfg.Validate() {
		key, _, _ := strings.Cut(vp, ":")
		dup := false
		for _, q := range problems {
			if strings.HasPrefix(q, key+":") {
				dup = true
			}
		}
		if !dup {
			problems = append(problems, vp)
		}
	}
	if len(problems) > 0 {
		sort.Strings(problems)
		return nil, &Error{Problems: problems}
	}
	return &cfg, nil
}

// defaultWeights gives weight 1 to servers whose entry has no weight key, so
// that weight: 0 can still take a replica out of read rotation.
func defaultWeights(cfg *Config, v *viper.Viper) {
	raw, _ := v.Get("servers").([]any)
	for i := range cfg.Servers {
		if i >= len(raw) {
			break
		}
		if m, ok := raw[i].(map[string]any); ok {
			if _, has := m["weight"]; !has {
				cfg.Servers[i].Weight = 1
			}
		}
	}
}

// Error is a configuration refused at load time. Each problem names the key,
// the bad value and what is allowed.
type Error struct{ Problems []string }

func (e *Error) Error() string {
	return "invalid configuration:\n  " + strings.Join(e.Problems, "\n  ")
}

func envNames() []string {
	var names []string
	for _, k := range Keys() {
		names = append(names, EnvName(k))
	}
	return names
}

// durationHook accepts Go durations ("30s", "1h") and plain numbers, which
// mean seconds as in SQLAlchemy's pool_timeout=30.
func durationHook(from, to reflect.Type, data any) (any, error) {
	if to != reflect.TypeOf(time.Duration(0)) {
		return data, nil
	}
	switch d := data.(type) {
	case string:
		s := strings.TrimSpace(d)
		if n, err := strconv.ParseFloat(s, 64); err == nil {
			return time.Duration(n * float64(time.Second)), nil
		}
		dur, err := time.ParseDuration(s)
		if err != nil {
			return nil, fmt.Errorf("%q is not a duration (use e.g. 30s, 500ms, 1h, or a number of seconds)", d)
		}
		return dur, nil
	case int:
		return time.Duration(d) * time.Second, nil
	case int64:
		return time.Duration(d) * time.Second, nil
	case float64:
		return time.Duration(d * float64(time.Second)), nil
	}
	return data, nil
}

// boolHook accepts the spellings PostgreSQL accepts for booleans.
func boolHook(from, to reflect.Type, data any) (any, error) {
	if to.Kind() != reflect.Bool {
		return data, nil
	}
	s, ok := data.(string)
	if !ok {
		return data, nil
	}
	if b, ok := ParseBool(s); ok {
		return b, nil
	}
	return nil, fmt.Errorf("%q is not a boolean (use true or false)", s)
}

// ParseBool reads the spellings PostgreSQL accepts for a boolean (true,
// on, yes, 1 and their opposites, any case); ok is false for anything else.
func ParseBool(s string) (v, ok bool) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "true", "on", "yes", "1":
		return true, true
	case "false", "off", "no", "0":
		return false, true
	}
	return false, false
}

// decodeProblems turns mapstructure's joined error into one line per problem.
func decodeProblems(err error, v *viper.Viper) []string {
	var out []string
	var merr interface{ Unwrap() []error }
	if errors.As(err, &merr) {
		for _, e := range merr.Unwrap() {
			out = append(out, decodeProblems(e, v)...)
		}
		return out
	}
	msg := err.Error()
	for _, line := range strings.Split(msg, "\n") {
		line = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(line), "*"))
		if line == "" || strings.HasPrefix(line, "decoding failed") || strings.HasSuffix(line, "error(s) decoding:") {
			continue
		}
		if m := invalidKeysRE.FindStringSubmatch(line); m != nil {
			for _, k := range strings.Split(m[2], ",") {
				k = strings.TrimSpace(k)
				if m[1] != "" {
					k = m[1] + "." + k
				}
				out = append(out, fmt.Sprintf("%s: unknown key (allowed keys: %s)", k, strings.Join(Keys(), ", ")))
			}
			continue
		}
		if m := cannotParseRE.FindStringSubmatch(line); m != nil {
			out = append(out, fmt.Sprintf("%s: %q is not allowed: must be %s", m[1], fmt.Sprint(v.Get(m[1])), typeWords(m[2])))
			continue
		}
		if m := quotedKeyRE.FindStringSubmatch(line); m != nil {
			line = m[1] + ": " + m[2] // "'pool.x' msg" → "pool.x: msg", like Validate's lines
		}
		out = append(out, line)
	}
	if len(out) == 0 {
		out = append(out, msg)
	}
	return out
}

var (
	invalidKeysRE = regexp.MustCompile(`^'?([^' ]*)'? has invalid keys: (.*)$`)
	cannotParseRE = regexp.MustCompile(`^'([^']+)' cannot parse value as '(\w+)'`)
	quotedKeyRE   = regexp.MustCompile(`^'([^']+)' (.*)$`)
)

func typeWords(t string) string {
	switch {
	case strings.HasPrefix(t, "int"), strings.HasPrefix(t, "uint"):
		return "a whole number"
	case t == "bool":
		return "true or false"
	}
	return "of type " + t
}

// parseServersEnv reads PGSPLIT_SERVERS: comma-separated host:port/role[/weight]
// entries, e.g. "127.0.0.1:5432/primary,127.0.0.1:5433/replica/2".
func parseServersEnv(s string) ([]any, error) {
	var out []any
	for _, item := range strings.Split(s, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		parts := strings.Split(item, "/")
		if len(parts) < 2 || len(parts) > 3 {
			return nil, fmt.Errorf("entry %q must be host:port/role[/weight]", item)
		}
		host, portText, err := net.SplitHostPort(parts[0])
		if err != nil || host == "" {
			return nil, fmt.Errorf("entry %q must be host:port/role[/weight] ([::1]:5432 for an IPv6 address)", item)
		}
		port, err := strconv.Atoi(portText)
		if err != nil {
			return nil, fmt.Errorf("entry %q: port %q is not a number", item, portText)
		}
		m := map[string]any{"host": host, "port": port, "role": parts[1]}
		if len(parts) == 3 {
			w, err := strconv.Atoi(parts[2])
			if err != nil {
				return nil, fmt.Errorf("entry %q: weight %q is not a number", item, parts[2])
			}
			m["weight"] = w
		}
		out = append(out, m)
	}
	return out, nil
}

// parseUsersEnv reads PGSPLIT_AUTH_USERS: comma-separated name:password.
// The password is everything after the first colon, so an md5 hash or a
// SCRAM verifier (which hold ':' and '$' but never ',') fits as it is.
// The value is never echoed back in errors because it holds passwords.
func parseUsersEnv(s string) ([]any, error) {
	var out []any
	for n, item := range strings.Split(s, ",") {
		name, pw, ok := strings.Cut(item, ":")
		if !ok || strings.TrimSpace(name) == "" {
			return nil, fmt.Errorf("entry %d must be name:password (value not shown: it holds passwords)", n+1)
		}
		out = append(out, map[string]any{"name": strings.TrimSpace(name), "password": pw})
	}
	return out, nil
}

// applyProfile fills pool_size and max_overflow from pool.profile where the
// file and the environment leave them unset: explicit keys win.
func applyProfile(cfg *Config, v *viper.Viper, env map[string]string) {
	size, overflow, ok := ProfileSizes(cfg.Pool.Profile)
	if !ok {
		return // Validate reports the profile
	}
	explicit := func(key string) bool {
		_, inEnv := env[EnvName(key)]
		return v.InConfig(key) || inEnv
	}
	if !explicit("pool.pool_size") {
		cfg.Pool.PoolSize = size
	}
	if !explicit("pool.max_overflow") {
		cfg.Pool.MaxOverflow = overflow
	}
}
