package nodes

import (
	"testing"

	"github.com/pgsplit/pgsplit/config"
)

// A function qualified by its schema is that schema's; unqualified, the
// search_path picks, so it is volatile if any schema's is.
func TestVolatilityMapUnqualifiedIsVolatileIfAnySchemasIs(t *testing.T) {
	row := func(schema, name, volatile string) [][]byte {
		return [][]byte{[]byte(schema), []byte(name), []byte(volatile)}
	}
	m := volatilityMap([][][]byte{row("public", "f", "f"), row("app", "f", "t"), row("app", "g", "f")})
	for name, want := range map[string]bool{"public.f": false, "app.f": true, "f": true, "app.g": false, "g": false} {
		if got, ok := m[name]; !ok || got != want {
			t.Errorf("%s: %v, %v; want %v", name, got, ok, want)
		}
	}
	if len(m) != 5 {
		t.Errorf("unexpected entries: %v", m)
	}
}

// Until the catalog is loaded, a user function is unknown (it goes to the
// primary) and every write may write any table; a DDL commit makes the
// relations unknown again until the next load.
func TestCatalogKnowsNothingUntilLoadedAndForgetsRelationsOnDDL(t *testing.T) {
	d := NewCatalog(&config.Config{})
	if _, known := d.lookup("f"); known {
		t.Fatal("a function is known before the catalog is loaded")
	}
	if !d.WritesAny([]string{"t"}) || !d.ReadsAny([]string{"t"}) {
		t.Fatal("before the load a write or read of t counts as of t alone")
	}
	vol := map[string]bool{"f": true}
	rels := map[string]relInfo{"t": {}, "v": {view: true, indirect: true}, "trig": {indirect: true}}
	d.volatile.Store(&vol)
	d.rels.Store(&rels)
	if v, known := d.lookup("f"); !v || !known {
		t.Fatalf("lookup(f) after the load = %v, %v", v, known)
	}
	for _, tc := range []struct {
		names         []string
		writes, reads bool
	}{
		{[]string{"t"}, false, false},
		{[]string{"t", "trig"}, true, false},
		{[]string{"v"}, true, true},
		{[]string{"new"}, false, false}, // not in the catalog: a plain name
	} {
		if w, r := d.WritesAny(tc.names), d.ReadsAny(tc.names); w != tc.writes || r != tc.reads {
			t.Errorf("%v: WritesAny %v, ReadsAny %v; want %v, %v", tc.names, w, r, tc.writes, tc.reads)
		}
	}
	d.changed.Add(1) // a DDL commit
	if !d.WritesAny([]string{"t"}) {
		t.Error("after a DDL commit a write of t counts as of t alone")
	}
	d.loaded.Store(1)
	if d.WritesAny([]string{"t"}) {
		t.Error("after the next load a write of t still counts as of every table")
	}
}

// Each database has one Catalog, read once when first used, again after a
// DDL commit and on Refresh; a load that fails leaves functions unknown.
func TestCatalogsLoadOncePerDatabaseAndAgainOnDDLOrRefresh(t *testing.T) {
	h := &fakeHost{cfg: &config.Config{}}
	cs := NewCatalogs(h, nil)
	u := config.User{Name: "app"}
	a := cs.For("a", u)
	if cs.For("a", u) != a || cs.For("b", u) == a {
		t.Fatal("For does not keep one Catalog per database")
	}
	cs.Wait()
	if h.count("WithPrimaryConn a") != 1 || h.count("WithPrimaryConn b") != 1 {
		t.Fatalf("first use: %v", h.calls)
	}
	if _, known := a.lookup("f"); known {
		t.Fatal("a failed load made a function known")
	}
	cs.DDLCommitted(a, "a", u)
	cs.Wait()
	if h.count("WithPrimaryConn a") != 2 || !a.WritesAny([]string{"t"}) {
		t.Fatalf("after a DDL commit: %v", h.calls)
	}
	cs.Refresh(u)
	cs.Wait()
	if h.count("WithPrimaryConn a") != 3 || h.count("WithPrimaryConn b") != 2 {
		t.Fatalf("after Refresh: %v", h.calls)
	}
}
