package proxy

import (
	"fmt"
	"time"

	"github.com/pgsplit/pgsplit/internal/pgmsg"

	"go.uber.org/zap"
)

// Knobs are hooks for tests, set with SetKnobs before Listen and read-only
// afterwards. They let a test make one session fail in ways no client can
// (a Go panic) to show that the others go on. Production code leaves them
// nil.
type Knobs struct {
	// OnQuery is called with the text of every simple-protocol Query a
	// client session relays, on the session's goroutine.
	OnQuery func(sql string)
	// OnServerMessage is called with the type and body length of every
	// message a pump reads from a server, before it relays it, on the
	// pump's goroutine.
	OnServerMessage func(typ byte, n int)
	// NoUpgradeBarrier turns off read-your-writes across an upgrade's two
	// processes (the barriers while both run, the marks when the old one
	// ends), to show what they guard.
	NoUpgradeBarrier bool
}

// SetKnobs installs test hooks; call it before Listen.
func (s *Server) SetKnobs(k Knobs) { s.knobs = k }

// Panics is how many client sessions and server-connection pumps ended in a
// Go panic that pgsplit caught (the process went on).
func (s *Server) Panics() int64 { return s.panics.Load() }

// recoverSession ends a session whose goroutine panicked, instead of the
// process: it logs the panic with its stack, tells the client (FATAL
// XX000), and closes the session's server connections, whose state is
// unknown. Deferred by serve, so that it runs before serve's other defers
// close the client connection.
func (s *session) recoverSession() {
	r := recover()
	if r == nil {
		return
	}
	s.srv.panics.Add(1)
	log := s.log
	if log == nil {
		log = s.srv.log
	}
	log.Error("client session failed with an internal error; only this client is disconnected",
		zap.String("panic", fmt.Sprint(r)), zap.Stack("stack"))
	s.fatalAfterPanic()
	if s.finished {
		return
	}
	defer func() {
		if r := recover(); r != nil {
			log.Error("cleanup after an internal error failed; this client's server connections are abandoned",
				zap.String("panic", fmt.Sprint(r)))
		}
	}()
	s.abandonUpstreams()
}

// abandonUpstreams closes every server connection the session holds, as
// finish would release them, but without trusting their state: each is
// stopped and discarded, never returned to a pool.
func (s *session) abandonUpstreams() {
	s.claim()
	for _, u := range s.ups {
		if u == nil {
			continue
		}
		select {
		case <-u.exited:
		default:
			u.stopping.Store(true)
			_ = u.conn.Raw().Close()
			<-u.exited
		}
		s.discard(u)
	}
}

// runPump runs the pump and turns a panic in it into an error, so the pump
// goroutine's ordinary failure path closes the client and the connection.
func (s *session) runPump(u *upstream) (err error) {
	defer func() {
		if r := recover(); r != nil {
			s.srv.panics.Add(1)
			s.log.Error("server-connection reader failed with an internal error; only this client is disconnected",
				zap.String("panic", fmt.Sprint(r)), zap.Stack("stack"))
			_ = u.conn.Raw().Close()
			err = &internalError{what: fmt.Sprint(r)}
		}
	}()
	return s.pump(u, s.zSignal)
}

// internalError is a pump's panic turned into its result.
type internalError struct{ what string }

func (e *internalError) Error() string { return "internal error in pgsplit: " + e.what }

// fatalAfterPanic tells the client about an internal error, unless the
// goroutine that panicked held the client's write lock (a Go mutex is not
// reentrant, and a panicking pump may have held it): then, after a second,
// the client connection is closed without a word rather than waited on
// forever.
func (s *session) fatalAfterPanic() {
	if s.out == nil || !s.out.lockWithin(time.Second) { // nil: before the startup packet
		_ = s.conn.Close()
		return
	}
	s.out.fatal(pgmsg.Fatal(pgmsg.CodeInternalError, "pgsplit internal error; the connection was closed"))
}
