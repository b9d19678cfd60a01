package proxy

import (
	"testing"

	"github.com/pgsplit/pgsplit/router"
)

// TestAwaitVerdictAfterPumpEnded: a watched read whose replica went away
// before answering; the pump took the watch, sent its verdict (run it
// again) and ended, all before the session began to wait (the session was
// still writing the batch, or descheduled). Both the verdict and the pump's
// end are ready then, and the session must take the verdict every time: a
// read it does not run again elsewhere gets no answer at all, since the
// pump stays silent about a read the session reruns.
func TestAwaitVerdictAfterPumpEnded(t *testing.T) {
	s := &session{out: newClientWriter(nil, nil, nil)}
	for i := range 500 {
		u := newUpstream(router.Replica, nil, nil, endpoint{})
		u.watch.Store(watchWaiting)
		// The pump's read-error path (see pump), then its end (startPump).
		if !u.watch.CompareAndSwap(watchWaiting, watchOff) {
			t.Fatal("watch not waiting")
		}
		u.rerun.Store(true)
		u.lost.Store(true)
		u.verdict <- true
		close(u.exited)

		if !s.awaitVerdict(u) {
			t.Fatalf("attempt %d: awaitVerdict said the read needs no rerun; the pump's verdict was to run it again", i)
		}
	}
}
