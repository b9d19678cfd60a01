package router

import "testing"

func TestTargetString(t *testing.T) {
	for tg, want := range map[Target]string{Primary: "primary", Replica: "replica", Target(9): "unknown"} {
		if got := tg.String(); got != want {
			t.Errorf("%d: got %q want %q", tg, got, want)
		}
	}
	if SessionTarget() != Primary {
		t.Fatal("a session-mode client must be attached to the primary: a session can always write")
	}
}
