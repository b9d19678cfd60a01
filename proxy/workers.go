package proxy

import (
	"sync"
	"sync/atomic"
	"time"
)

// workerIdle is how long a worker goroutine waits for its next job before
// it exits.
const workerIdle = 10 * time.Second

// workers runs pumps on goroutines that outlive them. Under transaction
// pooling a server connection gets a new pump at every checkout; a fresh
// goroutine for each would start on a small stack and grow it (copying it
// twice or three times) every transaction, about a tenth of pgsplit's CPU.
// A worker that finished a job waits, with the stack it grew, for the next
// one, and exits after workerIdle without one or when stop is called.
//
// Ownership: the Server owns it; run is called by sessions, stop by
// Shutdown. A job's own goroutine rules (what a pump may touch) are the
// job's: workers only lends it a goroutine.
type workers struct {
	jobs    chan func() // unbuffered: a send succeeds only if a worker waits
	quit    chan struct{}
	once    sync.Once
	started atomic.Int64 // goroutines started
}

func newWorkers() *workers {
	return &workers{jobs: make(chan func()), quit: make(chan struct{})}
}

// run runs f on a waiting worker, or on a new one.
func (w *workers) run(f func()) {
	select {
	case w.jobs <- f:
	default:
		w.started.Add(1)
		go w.loop(f)
	}
}

func (w *workers) loop(f func()) {
	t := time.NewTimer(workerIdle)
	defer t.Stop()
	for {
		f()
		f = nil // let the job's closure go while waiting
		t.Reset(workerIdle)
		select {
		case f = <-w.jobs:
		case <-t.C:
			return
		case <-w.quit:
			return
		}
	}
}

// stop ends the waiting workers; a job running now ends on its own, and
// its worker exits after it.
func (w *workers) stop() { w.once.Do(func() { close(w.quit) }) }
