package test

import (
	"path/filepath"
	"testing"
)

// compatPythonCells are the matrix's Python cells, test/compat/python/
// cell.py run by the system Python with Debian 12's packages
// (scripts/deps/python.sh): psycopg2, psycopg 3 (with its pool) and
// SQLAlchemy 1.4 over psycopg2 with the team guide's QueuePool settings.
func compatPythonCells() []compatCell {
	return []compatCell{
		externalCell("psycopg2", []string{"server_cursor", "copy"}, pythonCellArgv("psycopg2", "psycopg2")),
		externalCell("psycopg3", []string{"pipeline", "server_cursor", "copy", "prepared"}, pythonCellArgv("psycopg3", "psycopg", "psycopg_pool")),
		externalCell("sqlalchemy", []string{"orm", "pool_reuse"}, pythonCellArgv("sqlalchemy", "sqlalchemy", "psycopg2")),
	}
}

// pythonCellArgv runs cell.py for driver, failing t saying what to install
// unless the system Python has mods.
func pythonCellArgv(driver string, mods ...string) func(t *testing.T) []string {
	return func(t *testing.T) []string {
		t.Helper()
		requirePython(t, mods...)
		script, err := filepath.Abs(filepath.Join("compat", "python", "cell.py"))
		if err != nil {
			t.Fatal(err)
		}
		return []string{systemPython, script, driver}
	}
}
