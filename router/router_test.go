package router

import "testing"

func TestTargetString(t *testing.T) {
	for tg, want := range map[Target]string{Primary: "primary", Replica: "replica", HintNone: "none", Target(9): "unknown"} {
		if got := tg.String(); got != want {
			t.Errorf("%d: got %q want %q", tg, got, want)
		}
	}
	var st Statement
	if st.Target != Primary {
		t.Fatal("the zero Statement must route to the primary")
	}
}

func TestKindString(t *testing.T) {
	seen := map[string]Kind{}
	for k := KindOther; k <= KindDo; k++ {
		s := k.String()
		if s == "Unknown" {
			t.Errorf("Kind %d has no name", k)
		}
		if prev, dup := seen[s]; dup {
			t.Errorf("Kinds %d and %d are both %q", prev, k, s)
		}
		seen[s] = k
	}
	if Kind(-1).String() != "Unknown" || (KindDo+1).String() != "Unknown" {
		t.Error("out-of-range kinds must be Unknown")
	}
}
