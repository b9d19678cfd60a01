package proxy

import (
	"testing"
	"time"

	"go.uber.org/goleak"
)

// Jobs run one after another reuse the goroutine (and the stack) the first
// one started instead of starting one each, and stop ends the waiting
// worker.
func TestWorkersReuseAGoroutineAcrossJobs(t *testing.T) {
	defer goleak.VerifyNone(t)
	w := newWorkers()
	done := make(chan struct{})
	for range 100 {
		w.run(func() { done <- struct{}{} })
		<-done
		time.Sleep(time.Millisecond) // the worker goes back to waiting
	}
	if n := w.started.Load(); n > 10 {
		t.Fatalf("100 jobs one after another started %d goroutines, want a few", n)
	}
	w.stop()
	w.run(func() { done <- struct{}{} }) // after stop a job still runs, on a worker that then exits
	<-done
}
