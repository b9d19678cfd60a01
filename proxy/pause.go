package proxy

import (
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pgsplit/pgsplit/internal/pgmsg"
)

// pauseGate holds new transactions while an admin has run PAUSE: a session
// that is idle (no transaction open, no answer owed) waits at the gate
// before its next message until RESUME, for at most pool_timeout, and then
// gets SQLSTATE 53300 and keeps its session. Transactions already running
// go on; PAUSE returns once they have all finished.
//
// Ownership: the Server owns it; any goroutine may use it.
type pauseGate struct {
	on     atomic.Bool // read without the lock on every client message
	mu     sync.Mutex
	gen    uint64        // counts pauses, so a canceled PAUSE opens only its own
	opened chan struct{} // closed by RESUME; nil while not paused
}

func (g *pauseGate) paused() bool { return g.on.Load() }

// pause closes the gate and returns its generation; ok is false if it was
// closed already.
func (g *pauseGate) pause() (gen uint64, ok bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.on.Load() {
		return 0, false
	}
	g.gen++
	g.opened = make(chan struct{})
	g.on.Store(true)
	return g.gen, true
}

// open opens the gate if it is closed and, when gen is not 0, still the
// pause of that generation; it reports whether it did.
func (g *pauseGate) open(gen uint64) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if !g.on.Load() || (gen != 0 && g.gen != gen) {
		return false
	}
	close(g.opened)
	g.opened = nil
	g.on.Store(false)
	return true
}

// wait blocks until the gate opens or timeout passes (an ERROR for the
// client, who keeps its session).
func (g *pauseGate) wait(s *session, timeout time.Duration) *pgmsg.Error {
	g.mu.Lock()
	ch := g.opened
	g.mu.Unlock()
	if ch == nil {
		return nil
	}
	s.waitingFrom.Store(time.Now().UnixNano())
	s.heldAtGate.Store(true)
	defer func() {
		s.heldAtGate.Store(false)
		s.waitingFrom.Store(0)
	}()
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-ch:
		return nil
	case <-t.C:
		return pgmsg.Err(pgmsg.CodeTooManyConnections,
			fmt.Sprintf("pgsplit is paused (PAUSE by an admin): no new transaction may start; waited %s (pool_timeout)", timeout))
	}
}
