package router

import "testing"

func TestShape(t *testing.T) {
	same := [][2]string{
		{"SELECT * FROM t WHERE id = 1", "select *  from T where ID = 42"},
		{"SELECT * FROM t WHERE name = 'bob'", "SELECT * FROM t /* c */ WHERE name = $1"},
		{"SELECT $$x$$, E'y'", "SELECT 'a', 'b'"},
		{"INSERT INTO t VALUES (1.5e3, -2)", "INSERT INTO t VALUES (0, -7)"},
	}
	for _, p := range same {
		if Shape(p[0]) != Shape(p[1]) {
			t.Errorf("Shape(%q) != Shape(%q)", p[0], p[1])
		}
	}
	differ := [][2]string{
		{"SELECT * FROM t WHERE id = 1", "SELECT * FROM u WHERE id = 1"},
		{"SELECT * FROM t WHERE id = 1", "SELECT * FROM t WHERE id > 1"},
		{`SELECT "A" FROM t`, `SELECT "a" FROM t`},
		{"SELECT 'unterminated", "SELECT 'other"},
		{"SELECT a, b", "SELECT ab"},
	}
	for _, p := range differ {
		if Shape(p[0]) == Shape(p[1]) {
			t.Errorf("Shape(%q) == Shape(%q)", p[0], p[1])
		}
	}
}

func BenchmarkShape(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		Shape("SELECT abalance FROM pgbench_accounts WHERE aid = 123456")
	}
}
