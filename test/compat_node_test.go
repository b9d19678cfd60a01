package test

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// compatNodeCells are the matrix's node cells: node-postgres (pg with
// pg-pool, pg-copy-streams, pg-cursor; pinned in test/compat/node's
// package-lock.json, installed by scripts/deps/node.sh).
func compatNodeCells() []compatCell {
	return []compatCell{
		externalCell("node-pg", []string{"named_prepared", "copy", "cursor", "pool_reuse"}, nodeArgv("compat.js")),
	}
}

// nodeArgv runs script from test/compat/node with the system Node.js, or
// fails t saying how to install what is missing.
func nodeArgv(script string) func(t *testing.T) []string {
	return func(t *testing.T) []string {
		t.Helper()
		node, err := exec.LookPath("node")
		if err != nil {
			t.Fatalf("node-pg: no node on PATH: run scripts/ensure-test-deps.sh (apt-get install nodejs npm)")
		}
		dir, err := filepath.Abs(filepath.Join("compat", "node"))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := os.Stat(filepath.Join(dir, "node_modules", "pg", "package.json")); err != nil {
			t.Fatalf("node-pg: %s has no node_modules/pg: run scripts/ensure-test-deps.sh (npm ci there)", dir)
		}
		return []string{node, filepath.Join(dir, script)}
	}
}
