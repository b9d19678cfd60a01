package config

import (
	"fmt"
	"os"
	"strings"
)

// ResolveSecrets reads each user's password_file or password_env into
// Password, checking that each user sets at most one of password,
// password_file and password_env. environ is the process environment in
// os.Environ() form (Load passes its own). It returns one problem per
// line, naming the key; no problem ever includes a secret. Validate then
// checks the secrets themselves.
func (c *Config) ResolveSecrets(environ []string) []string {
	env := map[string]string{}
	for _, kv := range environ {
		if name, val, ok := strings.Cut(kv, "="); ok {
			env[name] = val
		}
	}
	var p []string
	resolve := func(list string, us []User) {
		for i := range us {
			u := &us[i]
			key := fmt.Sprintf("%s[%d]", list, i)
			var set []string
			for _, s := range []struct{ name, val string }{{"password", u.Password}, {"password_file", u.PasswordFile}, {"password_env", u.PasswordEnv}} {
				if s.val != "" {
					set = append(set, s.name)
				}
			}
			if len(set) > 1 {
				p = append(p, fmt.Sprintf("%s.%s: only one of password, password_file and password_env may be set (%s are)", key, set[1], strings.Join(set, " and ")))
				continue
			}
			switch {
			case u.PasswordFile != "":
				val, err := readSecretFile(u.PasswordFile)
				if err != nil {
					p = append(p, fmt.Sprintf("%s.password_file: %v", key, err))
					continue
				}
				u.Password = val
			case u.PasswordEnv != "":
				val, ok := env[u.PasswordEnv]
				switch {
				case !ok:
					p = append(p, fmt.Sprintf("%s.password_env: environment variable %q is not set", key, u.PasswordEnv))
				case strings.TrimRight(val, "\r\n") == "":
					p = append(p, fmt.Sprintf("%s.password_env: environment variable %q is empty", key, u.PasswordEnv))
				default:
					u.Password = strings.TrimRight(val, "\r\n")
				}
			}
		}
	}
	resolve("auth.users", c.Auth.Users)
	resolve("admin.users", c.Admin.Users)
	return p
}

// readSecretFile reads a password_file: it must be a regular file that
// other users cannot read or write (as PostgreSQL demands of .pgpass and
// of its key files), and hold something besides trailing newlines, which
// are dropped. Errors name the path, never the contents.
func readSecretFile(path string) (string, error) {
	st, err := os.Stat(path)
	if err != nil {
		return "", fmt.Errorf("cannot read %s: %w", path, unwrapPath(err))
	}
	if !st.Mode().IsRegular() {
		return "", fmt.Errorf("%s is not a regular file", path)
	}
	if perm := st.Mode().Perm(); perm&0o006 != 0 {
		return "", fmt.Errorf("%s is accessible to every user on the machine (mode %04o): allow its owner (and group) only, e.g. chmod 0600", path, perm)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("cannot read %s: %w", path, unwrapPath(err))
	}
	val := strings.TrimRight(string(b), "\r\n")
	if val == "" {
		return "", fmt.Errorf("%s is empty", path)
	}
	return val, nil
}

// unwrapPath drops the path os puts in its errors (the caller names it).
func unwrapPath(err error) error {
	if pe, ok := err.(*os.PathError); ok {
		return pe.Err
	}
	return err
}
