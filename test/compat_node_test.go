package test

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// compatNodeCells are the matrix's Node cells: node-postgres (pg with its
// pool, pg-copy-streams, pg-cursor; pinned in test/compat/node's
// package-lock.json, installed by scripts/deps/node.sh) run by
// test/compat/node/cell.js.
func compatNodeCells() []compatCell {
	return []compatCell{
		externalCell("node-pg", []string{"named_prepared", "copy", "cursor", "pool_reuse"}, func(t *testing.T) []string {
			t.Helper()
			node, err := exec.LookPath("node")
			if err != nil {
				t.Fatal("node is not installed: run scripts/ensure-test-deps.sh (it installs nodejs and npm, then the pinned node-postgres)")
			}
			dir, err := filepath.Abs(filepath.Join("compat", "node"))
			if err != nil {
				t.Fatal(err)
			}
			if _, err := os.Stat(filepath.Join(dir, "node_modules", "pg")); err != nil {
				t.Fatalf("node-postgres is not installed in %s: run scripts/ensure-test-deps.sh (npm ci there)", dir)
			}
			return []string{node, filepath.Join(dir, "cell.js")}
		}),
	}
}
