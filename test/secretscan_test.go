package test

import (
	"fmt"
	"strings"
	"sync"
)

// The logs of every pgsplit the tests started, and the secrets that must
// never appear in them. Written by launchProxy and registerSecret from any
// test, read once by scanLogsForSecrets after the last test.
var (
	logsMu    sync.Mutex
	allLogs   []*logBuffer
	secretSet = map[string]string{auditorPassword: "the auditor's password"}
)

// keepLog adds a proxy's log to the end-of-run scan.
func keepLog(b *logBuffer) {
	logsMu.Lock()
	allLogs = append(allLogs, b)
	logsMu.Unlock()
}

// registerSecret adds a value (a password, a SCRAM verifier or key, a
// private key, a literal a redacting log must not show) to the end-of-run
// scan; what names it in the report.
func registerSecret(value, what string) {
	if len(value) < 6 {
		panic("registerSecret: " + what + " is too short to scan for")
	}
	logsMu.Lock()
	secretSet[value] = what
	logsMu.Unlock()
}

// scanLogsForSecrets looks for every registered secret in every log the
// test run's pgsplit instances wrote (process log and query log, which
// the tests send to the same buffer) and returns one line per find.
func scanLogsForSecrets() []string {
	logsMu.Lock()
	defer logsMu.Unlock()
	var found []string
	for i, b := range allLogs {
		text := b.String()
		for value, what := range secretSet {
			if at := strings.Index(text, value); at >= 0 {
				start := strings.LastIndexByte(text[:at], '\n') + 1
				line := text[start:]
				if end := strings.IndexByte(line, '\n'); end >= 0 {
					line = line[:end]
				}
				found = append(found, fmt.Sprintf("pgsplit #%d logged %s: %s", i+1, what, strings.ReplaceAll(line, value, "<"+what+">")))
			}
		}
	}
	return found
}
