package proxy

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"
	"go.uber.org/zap"

	"github.com/pgsplit/pgsplit/config"
	"github.com/pgsplit/pgsplit/internal/handoff"
	"github.com/pgsplit/pgsplit/internal/pgmsg"
)

// This file is the zero-downtime upgrade, between two processes: the old
// one (HandOver) and the new one that takes over from it (TakeOver). The
// new process inherits the listening sockets and answers every new
// connection; the old one stops accepting and moves each client to the
// new one, with its socket (SCM_RIGHTS) and what serving it needs
// (movedSession), as soon as the client is idle between transactions and
// holds no server connection. Clients that cannot move stay with the old
// process until they leave: TLS clients (their TLS state lives in the old
// process's memory), admin console sessions, sessions holding their
// server connection (pool.mode session, or pinned). The old process exits
// when it holds nobody.
//
// While both run, commits are made by two processes, so neither's
// read-your-writes marks know all of them: reads take barriers, as in
// linearizable mode. When the old process is gone, the new one marks
// every table the old one wrote as written at a barrier (table mode) and
// goes back to the configured mode.

// inheritedListeners are the sockets an upgrade hands to the new process.
type inheritedListeners struct{ client, metrics net.Listener }

// UseListeners makes Listen serve on client (and the metrics endpoint on
// metrics, if not nil) instead of binding the configured addresses: the
// sockets an upgrade's new process inherits. Call it before Listen.
func (s *Server) UseListeners(client, metrics net.Listener) {
	s.inherited = inheritedListeners{client: client, metrics: metrics}
	// Its first clients may read before TakeOver: barriers from the start.
	s.upgrading.Store(true)
}

// ListenerFiles returns duplicates of the listening sockets (the metrics
// one nil when off), for the process an upgrade starts. The caller closes
// them.
func (s *Server) ListenerFiles() (client, metrics *os.File, err error) {
	file := func(ln net.Listener) (*os.File, error) {
		fl, ok := ln.(interface{ File() (*os.File, error) })
		if !ok {
			return nil, fmt.Errorf("upgrade: listener %s cannot be handed over", ln.Addr())
		}
		return fl.File()
	}
	if client, err = file(s.ln); err != nil {
		return nil, nil, err
	}
	if mln := s.metrics.listener(); mln != nil {
		if metrics, err = file(mln); err != nil {
			_ = client.Close()
			return nil, nil, err
		}
	}
	return client, metrics, nil
}

// movedSession is what the new process needs to go on serving a client:
// the body of a handoff.Session frame (JSON).
type movedSession struct {
	PID         uint32            `json:"pid"`
	Secret      []byte            `json:"secret"`
	User        config.User       `json:"user"` // as logged in (auth_query users are in no file)
	Database    string            `json:"database"`
	AppName     string            `json:"application_name"`
	Startup     map[string]string `json:"startup"`  // clientState.startup
	Settings    map[string]string `json:"settings"` // clientState.settings
	Stmts       []movedStmt       `json:"statements"`
	Route       int               `json:"route"` // router.Session.Override (SET pgsplit.route)
	MinLSN      uint64            `json:"min_lsn"`
	ReportLSN   bool              `json:"report_commit_lsn"`
	ConnectedAt time.Time         `json:"connected_at"`
}

// movedStmt is one of the client's prepared statements (clientStmt).
type movedStmt struct {
	Name      string `json:"name"`
	SQL       string `json:"sql"`
	Server    string `json:"server"`
	Parse     []byte `json:"parse"`
	Confirmed bool   `json:"confirmed"`
}

// encodeMoved is a Session frame's body.
func encodeMoved(m *movedSession) ([]byte, error) { return json.Marshal(m) }

// decodeMoved parses a Session frame's body, refusing what could not
// have come from movedState.
func decodeMoved(body []byte) (*movedSession, error) {
	var m movedSession
	if err := json.Unmarshal(body, &m); err != nil {
		return nil, fmt.Errorf("upgrade: session state: %w", err)
	}
	switch {
	case m.PID == 0 || len(m.Secret) != 4:
		return nil, errors.New("upgrade: session state without a cancel key")
	case m.User.Name == "" || m.Database == "":
		return nil, errors.New("upgrade: session state without a user or database")
	}
	for _, st := range m.Stmts {
		if st.Server != "" && len(st.Parse) == 0 {
			return nil, fmt.Errorf("upgrade: prepared statement %q without its Parse", st.Name)
		}
	}
	return &m, nil
}

// movedState is the session's state for the new process (session
// goroutine, the session idle and holding no server connection).
func (s *session) movedState() *movedSession {
	m := &movedSession{PID: s.pid, Secret: s.secret[:], User: s.user, Database: s.database, AppName: s.appName,
		Startup: s.state.startup, Settings: s.state.settings, Route: int(s.route.Override), MinLSN: s.minLSN,
		ReportLSN: s.reportLSN, ConnectedAt: s.connectedAt}
	for name, cs := range s.stmts {
		m.Stmts = append(m.Stmts, movedStmt{Name: name, SQL: cs.sql, Server: cs.server, Parse: cs.parse, Confirmed: cs.confirmed.Load()})
	}
	return m
}

// HandOver makes this process the old one of an upgrade, once the new
// process at the other end of l has sent Ready (it serves the listening
// socket now): it stops accepting (keeping the socket), stops its metrics
// endpoint (keeping a duplicate of that socket), gives the new process the
// SCRAM keys it learnt, and moves each client there as soon as the client
// can move. peerGone closes when the new process has exited.
//
// The channel receives true when no session is left here and the new
// process was told so: the caller then calls Shutdown and exits. It
// receives false if the control link failed first (the new process died
// or is stopping): this process accepts and serves its metrics endpoint
// again, so that the port stays served, and a later upgrade may be tried
// once the new process has exited.
func (s *Server) HandOver(l *handoff.Link, peerGone <-chan struct{}) <-chan bool {
	s.upgrading.Store(true) // before the first client moves
	s.peer.Store(l)
	if err := s.sendKeys(l); err != nil {
		s.log.Warn("upgrade: could not pass the SCRAM keys on", zap.Error(err))
	}
	s.handingOver.Store(true)
	if dl, ok := s.ln.(interface{ SetDeadline(time.Time) error }); ok {
		_ = dl.SetDeadline(time.Now()) // Serve pauses: the new process accepts
	}
	mf := s.metrics.pause()
	s.log.Info("upgrade: the new process serves; moving idle clients to it", zap.Int("clients", len(s.snapshot())))
	done := make(chan bool, 1)
	s.wg.Add(2)
	go s.cancelsFromNew(l)
	go func() {
		defer s.wg.Done()
		moved := s.moveSessions(l)
		if !moved {
			_ = l.Close()
		}
		if !moved && !s.draining.Load() {
			s.serveAgain(mf, peerGone)
		} else if mf != nil {
			_ = mf.Close()
		}
		done <- moved
	}()
	return done
}

// serveAgain undoes HandOver after the control link failed: accepting,
// the metrics endpoint (on mf), reads with barriers until the new process
// has exited (its clients' commits are unknown here), then every database
// marked as written.
func (s *Server) serveAgain(mf *os.File, peerGone <-chan struct{}) {
	if dl, ok := s.ln.(interface{ SetDeadline(time.Time) error }); ok {
		_ = dl.SetDeadline(time.Time{})
	}
	s.handingOver.Store(false)
	s.wakeAccept()
	for _, sess := range s.snapshot() {
		sess.handing.Store(false)
	}
	if err := s.metrics.resume(mf); err != nil {
		s.log.Error("upgrade: could not serve the metrics endpoint again", zap.Error(err))
	}
	s.log.Error("upgrade failed after the new process took over (it died or is stopping): this process accepts again; clients it had moved are lost")
	go s.endBarriersWhenGone(peerGone, "the new process")
}

// endBarriersWhenGone waits until the other process of a failed upgrade
// has exited (or this one drains), then marks every database as written
// at the primary's next position, which is past all that process
// committed, and ends the upgrade's barriers.
func (s *Server) endBarriersWhenGone(peerGone <-chan struct{}, who string) {
	select {
	case <-peerGone:
	case <-s.drained:
		return
	}
	s.lsn.markEverything()
	s.upgrading.Store(false)
	s.log.Info("upgrade: "+who+" has exited; reads are back to the configured read_your_writes", zap.String("read_your_writes", s.cfg.Load().Routing.RYWMode()))
}

// wakeAccept wakes a paused Serve.
func (s *Server) wakeAccept() {
	select {
	case s.acceptWake <- struct{}{}:
	default:
	}
}

// sendKeys passes the SCRAM ClientKeys this process learnt to the new one.
func (s *Server) sendKeys(l *handoff.Link) error {
	keys, err := json.Marshal(s.keys.Export())
	if err != nil {
		return err
	}
	return l.Send(handoff.Keys, keys, -1)
}

// Upgrading reports whether an upgrade involves this process now: it is
// handing its clients over, or still taking them over (a new upgrade
// must wait until it is done).
func (s *Server) Upgrading() bool { return s.peer.Load() != nil || s.upgrading.Load() }

// moveSessions asks every session to move, again every 100 ms (a session
// in a transaction moves when it is idle again), until none is left; then
// it tells the new process which databases this one wrote to. It reports
// whether it did; false: the control link failed first.
func (s *Server) moveSessions(l *handoff.Link) bool {
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	reported := false
	for {
		if s.peer.Load() != l {
			return false // the link failed (or Shutdown closed it)
		}
		left := s.snapshot()
		if len(left) == 0 {
			break
		}
		stay := 0
		for _, sess := range left {
			if !sess.askToMove() {
				stay++
			}
		}
		if stay > 0 && !reported {
			reported = true
			s.log.Info("upgrade: clients that cannot move stay on this process until they leave (TLS, admin console)", zap.Int("clients", stay))
		}
		if stay == 0 {
			// Every client left will move: the idle server connections
			// would only count twice against the servers' limits, beside
			// the new process's pools.
			s.closeIdleConns()
		}
		<-t.C
	}
	names, err := json.Marshal(s.lsn.writtenDatabases())
	if err == nil {
		err = l.Send(handoff.End, names, -1)
	}
	if err != nil {
		if s.peer.CompareAndSwap(l, nil) {
			s.log.Error("upgrade: could not tell the new process this one is done", zap.Error(err))
		}
		return false
	}
	s.peer.CompareAndSwap(l, nil) // the new process closes the link now: no error
	s.log.Info("upgrade: every client moved or left")
	return true
}

// closeIdleConns closes every pool's idle server connections.
func (s *Server) closeIdleConns() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, p := range s.pools {
		p.CloseIdle()
	}
}

// cancelsFromNew serves the cancel requests the new process passes on
// for clients still here, until the link closes.
func (s *Server) cancelsFromNew(l *handoff.Link) {
	defer s.wg.Done()
	for {
		typ, body, fd, err := l.Recv()
		if err != nil {
			if s.peer.CompareAndSwap(l, nil) && !s.draining.Load() {
				s.log.Error("upgrade: the new process closed the control link; clients not moved yet stay here", zap.Error(err))
			}
			return
		}
		if fd >= 0 {
			_ = syscall.Close(fd)
		}
		if typ == handoff.Cancel && len(body) == 8 {
			s.cancel(&pgproto3.CancelRequest{ProcessID: binary.BigEndian.Uint32(body), SecretKey: body[4:]}, peerAddr{})
		}
	}
}

// peerAddr is where a forwarded cancel request came from, for the log.
type peerAddr struct{}

func (peerAddr) Network() string { return "unix" }
func (peerAddr) String() string  { return "the new pgsplit process" }

// forwardCancel passes a cancel request with a key this process does not
// know to the old process of an upgrade, which may serve that client. It
// reports whether there was one.
func (s *Server) forwardCancel(cr *pgproto3.CancelRequest) bool {
	l := s.peer.Load()
	if l == nil || s.handingOver.Load() || len(cr.SecretKey) != 4 {
		return false
	}
	var b [8]byte
	binary.BigEndian.PutUint32(b[:4], cr.ProcessID)
	copy(b[4:], cr.SecretKey)
	if err := l.Send(handoff.Cancel, b[:], -1); err != nil {
		s.log.Warn("upgrade: could not pass a cancel request to the previous process", zap.Error(err))
	}
	return true
}

// TakeOver makes this process the new one of an upgrade, serving already
// (after Listen, with Serve running): it tells the old process at the
// other end of l, and adopts the clients it hands over until it says End.
// peerGone closes when the old process has exited.
func (s *Server) TakeOver(l *handoff.Link, peerGone <-chan struct{}) error {
	s.upgrading.Store(true)
	s.peer.Store(l)
	if err := l.Send(handoff.Ready, nil, -1); err != nil {
		s.peer.Store(nil)
		s.upgrading.Store(false)
		return err
	}
	s.wg.Add(1)
	go s.adoptFrom(l, peerGone)
	return nil
}

// adoptFrom receives the old process's clients until it says End (it
// holds nobody and exits) or the link fails.
func (s *Server) adoptFrom(l *handoff.Link, peerGone <-chan struct{}) {
	defer s.wg.Done()
	var written []string
	moved := 0
	end := false
	for !end {
		typ, body, fd, err := l.Recv()
		if err != nil {
			if !errors.Is(err, io.EOF) && !s.draining.Load() {
				s.log.Warn("upgrade: control link to the previous process failed", zap.Error(err))
			}
			break
		}
		switch typ {
		case handoff.Keys:
			var keys [][]byte
			if json.Unmarshal(body, &keys) == nil {
				s.keys.Import(keys)
			}
		case handoff.Session:
			if s.adopt(body, fd) {
				moved++
			}
			continue
		case handoff.End:
			_ = json.Unmarshal(body, &written)
			end = true // it holds nobody: it exits now
		}
		if fd >= 0 {
			_ = syscall.Close(fd)
		}
	}
	s.peer.CompareAndSwap(l, nil)
	_ = l.Close()
	if !end {
		// The old process stopped (SIGTERM: its running transactions
		// may still commit) or died before End: which databases it wrote
		// is unknown, and it may not be done.
		if !s.draining.Load() {
			s.log.Warn("upgrade: the previous process closed the control link before it was done; reads keep barriers until it has exited", zap.Int("clients_moved", moved))
		}
		go s.endBarriersWhenGone(peerGone, "the previous process")
		return
	}
	// The old process has ended: what it committed is in the past of
	// every read from now on, once a barrier is past it.
	s.lsn.markWritten(written)
	s.upgrading.Store(false)
	s.log.Info("upgrade complete: the previous process has ended", zap.Int("clients_moved", moved))
}

// adopt serves a client the old process handed over; it reports whether
// the client is served.
func (s *Server) adopt(body []byte, fd int) bool {
	if fd < 0 {
		// The kernel drops a descriptor this process cannot take (its
		// RLIMIT_NOFILE reached); the client's connection is lost.
		s.log.Error("upgrade: a session came without its socket (is this process at its open-files limit?); that client is disconnected")
		return false
	}
	f := os.NewFile(uintptr(fd), "client")
	c, err := net.FileConn(f)
	_ = f.Close()
	if err != nil {
		s.log.Error("upgrade: could not take a client's socket", zap.Error(err))
		return false
	}
	m, err := decodeMoved(body)
	if err != nil {
		s.log.Error("upgrade: could not take a client over", zap.Error(err))
		cw := newClientWriter(c, c, &s.writeBufs)
		cw.fatal(pgmsg.Fatal(pgmsg.CodeInternalError, "pgsplit could not take this connection over during an upgrade; please reconnect"))
		_ = c.Close()
		return false
	}
	s.adoptSession(c, m)
	return true
}
