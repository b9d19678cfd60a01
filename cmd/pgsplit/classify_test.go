package main

import (
	"io"
	"strings"
	"testing"
)

func TestClassifyCommand(t *testing.T) {
	in := strings.Join([]string{
		`SELECT * FROM users WHERE id = $1`,
		`BEGIN`,
		`SELECT 1`,
		`COMMIT`,
		`SELECT\n  1 -- a comment with \\ backslash`,
		`UPDATE t SET x = 1`,
	}, "\n")
	var fresh, session strings.Builder
	if err := classify("", "", false, strings.NewReader(in), &fresh, io.Discard); err != nil {
		t.Fatal(err)
	}
	if err := classify("", "", true, strings.NewReader(in), &session, io.Discard); err != nil {
		t.Fatal(err)
	}
	want := map[*strings.Builder][]string{
		&fresh:   {"replica", "primary", "replica", "primary", "replica", "primary"},
		&session: {"replica", "primary", "primary", "primary", "replica", "primary"},
	}
	for b, targets := range want {
		lines := strings.Split(strings.TrimSpace(b.String()), "\n")
		if len(lines) != len(targets) {
			t.Fatalf("got %d lines:\n%s", len(lines), b.String())
		}
		for i, l := range lines {
			target, reason, ok := strings.Cut(l, "\t")
			if !ok || target != targets[i] || reason == "" {
				t.Errorf("line %d: %q, want target %s and a reason", i, l, targets[i])
			}
		}
	}
}

func TestUnescapeLine(t *testing.T) {
	if got := unescapeLine(`a\nb\tc\\n\x`); got != "a\nb\tc\\n\\x" {
		t.Fatalf("%q", got)
	}
}
