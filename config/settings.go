package config

import (
	"fmt"
	"reflect"
	"sort"
	"strings"
	"time"
)

// Setting is one configuration key as the admin console's SHOW CONFIG
// lists it: the running value, the default, and whether a reload applies
// a change (else it needs a restart). Passwords are masked.
type Setting struct {
	Key, Value, Default string
	Changeable          bool
}

// needsRestart reports the keys a reload does not change.
func needsRestart(key string) bool {
	switch key {
	case "listen", "servers", "log.format", "log.file", "log.file_max_size_mb", "log.file_max_backups", "metrics.listen",
		"server_tls.mode", "server_tls.ca_file", "server_tls.cert_file", "server_tls.key_file":
		return true
	}
	return false
}

// Settings lists every key of c, sorted, with passwords masked.
func (c *Config) Settings() []Setting {
	d := defaults()
	var out []Setting
	var walk func(prefix string, v reflect.Value)
	walk = func(prefix string, v reflect.Value) {
		t := v.Type()
		for i := 0; i < t.NumField(); i++ {
			tag := t.Field(i).Tag.Get("mapstructure")
			if tag == "" {
				continue
			}
			key := prefix + tag
			f := v.Field(i)
			if f.Kind() == reflect.Struct && f.Type() != reflect.TypeOf(time.Time{}) {
				walk(key+".", f)
				continue
			}
			out = append(out, Setting{Key: key, Value: settingValue(f.Interface()), Default: settingValue(d[key]), Changeable: !needsRestart(key)})
		}
	}
	walk("", reflect.ValueOf(*c))
	sort.Slice(out, func(i, j int) bool { return out[i].Key < out[j].Key })
	return out
}

// settingValue formats a value for SHOW CONFIG.
func settingValue(v any) string {
	switch x := v.(type) {
	case nil:
		return ""
	case time.Duration:
		return x.String()
	case []User:
		names := make([]string, len(x))
		for i, u := range x {
			names[i] = u.Name + ":****"
		}
		return strings.Join(names, ",")
	case []Server:
		parts := make([]string, len(x))
		for i, s := range x {
			parts[i] = fmt.Sprintf("%s/%s/%d", s.Addr(), s.Role, s.Weight)
		}
		return strings.Join(parts, ",")
	case []string:
		return strings.Join(x, ",")
	case []any:
		return ""
	}
	return fmt.Sprint(v)
}
