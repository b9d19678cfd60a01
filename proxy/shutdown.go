package proxy

import (
	"context"
	"time"

	"go.uber.org/zap"
)

// ShutdownRequested is closed when an admin runs SHUTDOWN; the owner of the
// Server then calls Shutdown.
func (s *Server) ShutdownRequested() <-chan struct{} { return s.shutdownReq }

// Shutdown stops accepting clients, tells idle clients the server is going
// away (57P01 admin_shutdown), lets clients inside a transaction or a
// running statement finish for up to shutdown_timeout, then tells and
// disconnects the rest. It returns when every session has ended.
func (s *Server) Shutdown(ctx context.Context) {
	if !s.draining.CompareAndSwap(false, true) {
		return
	}
	timeout := s.cfg.Load().ShutdownTimeout
	s.pause.open(0) // held clients wake up, see the drain and end with 57P01
	close(s.drained)
	s.wakeAccept()
	if s.ln != nil {
		_ = s.ln.Close()
	}
	if l := s.peer.Load(); l != nil {
		_ = l.Close() // ends the upgrade's goroutines on this side
	}
	s.log.Info("shutting down: waiting for running transactions", zap.Duration("shutdown_timeout", timeout))
	for _, sess := range s.snapshot() {
		sess.drain()
	}
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-done:
	case <-t.C:
		left := s.snapshot()
		s.log.Warn("shutdown_timeout reached: disconnecting clients still in a transaction", zap.Int("clients", len(left)))
		for _, sess := range left {
			sess.kill()
		}
		<-done
	case <-ctx.Done():
		for _, sess := range s.snapshot() {
			sess.kill()
		}
		<-done
	}
	s.pumps.stop() // every session, and so every pump, has ended
	// Every session has ended, so no more query records: write the last
	// ones (and let a running EXPLAIN finish) before the pools close.
	if s.qlogOn {
		s.qlog.stop() // no more offers to the explainer
		s.qlog.explain.stop()
	}
	s.mu.Lock()
	for _, p := range s.pools {
		p.Close()
	}
	s.mu.Unlock()
	// The health checks first: a role change they see starts catalog
	// loads, which must not begin while Wait waits.
	s.nodes.Stop()
	s.catalogs.Wait()
	s.lsn.stop()
	s.metrics.stop()
	s.log.Info("shutdown complete")
}

func (s *Server) snapshot() []*session {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]*session, 0, len(s.sessions))
	for _, sess := range s.sessions {
		out = append(out, sess)
	}
	return out
}
