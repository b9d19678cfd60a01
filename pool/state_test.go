package pool

import (
	"reflect"
	"testing"
)

// Statements keeps least-recently-used order: Has and Add mark a name used,
// Evict takes the oldest names the caller does not keep.
func TestStatementsLRU(t *testing.T) {
	s := NewStatements()
	for _, n := range []string{"a", "b", "c", "d"} {
		s.Add(n)
	}
	if !s.Has("a") { // a is now the most recently used
		t.Fatal("a missing")
	}
	s.Add("b") // so is b, after a
	got := s.Evict(2, func(n string) bool { return n == "c" })
	if want := []string{"d", "a"}; !reflect.DeepEqual(got, want) {
		t.Fatalf("evicted %v, want %v (c kept, then least recently used first)", got, want)
	}
	if s.Len() != 2 || !s.Has("b") || !s.Has("c") || s.Has("a") {
		t.Fatalf("left: len %d", s.Len())
	}
	if got := s.Evict(5, func(string) bool { return false }); len(got) != 2 || s.Len() != 0 {
		t.Fatalf("evict more than there is: %v, %d left", got, s.Len())
	}
	if got := s.Evict(-1, func(string) bool { return false }); len(got) != 0 {
		t.Fatalf("evict a negative count: %v", got)
	}
	s.Add("x")
	s.Remove("x")
	s.Remove("never")
	if s.Has("x") || s.Len() != 0 {
		t.Fatalf("after Remove: has x %v, len %d", s.Has("x"), s.Len())
	}
	st := newState()
	st.Settings["a"] = "SET a TO 1"
	st.Unnamed = []byte("P")
	st.Prepared.Add("s")
	st.Clear()
	if len(st.Settings) != 0 || st.Unnamed != nil || st.Prepared.Len() != 0 {
		t.Fatalf("Clear left %+v", st)
	}
}
