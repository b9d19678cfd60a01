package proxy

import (
	"fmt"
	"net"
	"sync/atomic"
	"time"

	"github.com/pgsplit/pgsplit/internal/pgmsg"

	"go.uber.org/zap"

	"github.com/pgsplit/pgsplit/config"
	"github.com/pgsplit/pgsplit/internal/wire"
	"github.com/pgsplit/pgsplit/router"
)

// This file is the limits section: what one client can make pgsplit hold
// (connection slots, prepared statements, batch books) or wait for (a login,
// an idle session). Each hit is logged once, with the limit's name and the
// client's address but never statement text, and counted in
// pgsplit_limit_hits_total{limit}.

// Names of the limits as the log and the metric label give them.
const (
	limitMaxClientConn        = "max_client_conn"
	limitConnectionsPerIP     = "max_connections_per_ip"
	limitStartupTimeout       = "startup_timeout"
	limitStartupPacket        = "startup_packet_size"
	limitMessageSize          = "max_message_size"
	limitClientStatements     = "max_client_statements"
	limitClientStatementBytes = "max_client_statement_bytes"
	limitBatchBytes           = "max_batch_bytes"
	limitClientIdle           = "client_idle_timeout"
	limitIdleInTransaction    = "idle_in_transaction_timeout"
	limitParseDepth           = "max_parse_depth"
	limitParseBytes           = "max_parse_bytes"
)

// limitNames lists every limit, so the metric shows each at 0 before its
// first hit.
func limitNames() []string {
	return []string{limitMaxClientConn, limitConnectionsPerIP, limitStartupTimeout, limitStartupPacket,
		limitMessageSize, limitClientStatements, limitClientStatementBytes, limitBatchBytes, limitClientIdle, limitIdleInTransaction,
		limitParseDepth, limitParseBytes}
}

// idleBusy is idleWait's word for a session with a statement running.
const idleBusy = "busy"

// limitHit logs and counts a hit of limit; log is the session's, which
// names the client's address (and user and database once known).
func (srv *Server) limitHit(log *zap.Logger, limit string, fields ...zap.Field) {
	srv.metrics.limitHits.WithLabelValues(limit).Inc()
	log.Warn("limit reached", append([]zap.Field{zap.String("limit", limit)}, fields...)...)
}

// noteUnparsed logs and counts a statement the parser guard kept from
// libpg_query (router.Parsable): it goes to the primary unparsed.
func (s *session) noteUnparsed(st router.Statement, size int) {
	s.srv.unparsed.Add(1)
	limit := limitParseDepth
	if st.Reason == router.ReasonTooLarge {
		limit = limitParseBytes
	}
	s.srv.limitHit(s.log, limit, zap.Int("bytes", size), zap.String("route", "primary, unparsed"))
}

// seat is what a client connection holds against the connection limits,
// from accept until it ends: a place in max_client_conn (or in the
// overflow reserved for admin logins, or an admin login's place) and one
// in its address's count. Owned by the session's goroutine; release gives
// back whatever it holds and may be called any number of times.
type seat struct {
	srv     *Server
	ip      string        // counted in srv.ipConns while not ""
	counter *atomic.Int64 // the count this connection is in now, nil after release
	// cancelOnly: the connection is over max_connections_per_ip and may
	// only be a cancel request.
	cancelOnly bool
}

func errTooManyFromIP() *pgmsg.Error {
	return pgmsg.Fatal(pgmsg.CodeTooManyConnections, "too many connections from this address")
}

// takeSeat counts a connection just accepted. A connection over
// max_client_conn may still be an admin console login, which does not
// count there: it gets one of maxAdminConns overflow places until its
// startup packet says which it is (see seatFor). A refusal is FATAL 53300.
func (srv *Server) takeSeat(from net.Addr, log *zap.Logger) (*seat, *pgmsg.Error) {
	cfg := srv.cfg.Load()
	ip := clientIP(from)
	srv.ipMu.Lock()
	n := srv.ipConns[ip]
	max := cfg.Limits.MaxConnectionsPerIP
	if max > 0 && n > max {
		srv.ipMu.Unlock()
		srv.limitHit(log, limitConnectionsPerIP, zap.Int("max", max))
		return nil, errTooManyFromIP()
	}
	srv.ipConns[ip] = n + 1
	srv.ipMu.Unlock()
	// One connection over the address's cap may still be a cancel
	// request (drivers send them on a new connection): seatFor refuses it
	// unless it is.
	st := &seat{srv: srv, ip: ip, cancelOnly: max > 0 && n == max}
	if srv.clients.Add(1) <= int64(cfg.MaxClientConn) {
		st.counter = &srv.clients
		return st, nil
	}
	srv.clients.Add(-1)
	if srv.overflow.Add(1) <= maxAdminConns {
		st.counter = &srv.overflow
		return st, nil
	}
	srv.overflow.Add(-1)
	st.release()
	srv.limitHit(log, limitMaxClientConn, zap.Int("max", cfg.MaxClientConn))
	return nil, pgmsg.Fatal(pgmsg.CodeTooManyConnections, "sorry, too many clients already (max_client_conn)")
}

// seatFor settles the seat once the startup packet is read (and is not a
// cancel request): an admin login moves to the admin logins' count; a
// client that came in over max_client_conn, or over
// max_connections_per_ip, is refused.
func (st *seat) seatFor(admin bool, log *zap.Logger) *pgmsg.Error {
	srv := st.srv
	if st.cancelOnly {
		st.move(nil)
		max := srv.cfg.Load().Limits.MaxConnectionsPerIP
		srv.limitHit(log, limitConnectionsPerIP, zap.Int("max", max))
		return errTooManyFromIP()
	}
	if admin {
		st.move(nil)
		if srv.adminLogins.Add(1) > maxAdminConns {
			srv.adminLogins.Add(-1)
			return pgmsg.Fatal(pgmsg.CodeTooManyConnections, fmt.Sprintf("sorry, too many admin console logins in progress already (%d)", maxAdminConns))
		}
		st.counter = &srv.adminLogins
		return nil
	}
	if st.counter == &srv.overflow {
		st.move(nil)
		max := srv.cfg.Load().MaxClientConn
		srv.limitHit(log, limitMaxClientConn, zap.Int("max", max))
		return pgmsg.Fatal(pgmsg.CodeTooManyConnections, "sorry, too many clients already (max_client_conn)")
	}
	return nil
}

// move leaves the seat's count for to (nil: none).
func (st *seat) move(to *atomic.Int64) {
	if st.counter != nil {
		st.counter.Add(-1)
	}
	st.counter = to
}

// release gives back everything the seat holds.
func (st *seat) release() {
	st.move(nil)
	if st.ip == "" {
		return
	}
	st.srv.ipMu.Lock()
	if n := st.srv.ipConns[st.ip] - 1; n > 0 {
		st.srv.ipConns[st.ip] = n
	} else {
		delete(st.srv.ipConns, st.ip)
	}
	st.srv.ipMu.Unlock()
	st.ip = ""
}

// refuseEarly tells a connection refused at accept why, and closes it. The
// client may have sent its first packet already: closing with it unread
// would reset the connection and could lose the error, so pgsplit closes
// its side for writing and reads what comes for a moment first.
func refuseEarly(c net.Conn, pe *pgmsg.Error) {
	_ = c.SetDeadline(time.Now().Add(200 * time.Millisecond))
	_, _ = c.Write(pe.Append(nil))
	if tc, ok := c.(interface{ CloseWrite() error }); ok {
		_ = tc.CloseWrite()
		var buf [512]byte
		for {
			if _, err := c.Read(buf[:]); err != nil {
				break
			}
		}
	}
	_ = c.Close()
}

// idleWait is the idle limit that applies to the session now and when it
// runs out: client_idle_timeout outside a transaction,
// idle_in_transaction_timeout inside one, measured from the later of the
// client's last message and the last ReadyForQuery it was sent. While a
// statement runs neither applies, but the session looks again after the
// shorter one (the statement may end meanwhile). limit is "" when no
// limit is set.
func (s *session) idleWait(l config.Limits) (limit string, at time.Time) {
	if l.ClientIdleTimeout <= 0 && l.IdleInTransactionTimeout <= 0 {
		return "", time.Time{}
	}
	now := time.Now()
	if !s.quietUpstreams() {
		shortest := l.ClientIdleTimeout
		if shortest <= 0 || (l.IdleInTransactionTimeout > 0 && l.IdleInTransactionTimeout < shortest) {
			shortest = l.IdleInTransactionTimeout
		}
		return idleBusy, now.Add(shortest)
	}
	limit, d := limitClientIdle, l.ClientIdleTimeout
	if byte(s.txStatus.Load()) != pgmsg.TxIdle {
		limit, d = limitIdleInTransaction, l.IdleInTransactionTimeout
	}
	if d <= 0 {
		// This state has no limit; look again when the other's could
		// start counting (the state changes only with a client message,
		// which ends the wait anyway).
		return idleBusy, now.Add(time.Hour)
	}
	since := max(s.lastRequest.Load(), s.readyAt.Load())
	return limit, time.Unix(0, since).Add(d)
}

// quietUpstreams reports whether no server connection of the session owes
// the client anything.
func (s *session) quietUpstreams() bool {
	s.upMu.Lock()
	defer s.upMu.Unlock()
	for _, u := range s.ups {
		if u != nil && !u.quiet() {
			return false
		}
	}
	return true
}

// idleExpired is the FATAL that ends a session whose idle wait for limit
// ran out, or nil if it has not (the session was busy, or a ReadyForQuery
// moved the start).
func (s *session) idleExpired(l config.Limits) *pgmsg.Error {
	limit, at := s.idleWait(l)
	if limit == idleBusy || limit == "" || time.Now().Before(at) {
		return nil
	}
	if limit == limitIdleInTransaction {
		s.srv.limitHit(s.log, limit, zap.Duration("timeout", l.IdleInTransactionTimeout))
		return pgmsg.Fatal(pgmsg.CodeIdleInTransactionSessionTimeout, "terminating connection due to idle-in-transaction timeout")
	}
	s.srv.limitHit(s.log, limit, zap.Duration("timeout", l.ClientIdleTimeout))
	return pgmsg.Fatal(pgmsg.CodeIdleSessionTimeout, "terminating connection due to idle-session timeout")
}

// messageTooLarge is the FATAL for a client message over max_message_size.
func (s *session) messageTooLarge(fe *wire.FrameError) *pgmsg.Error {
	s.srv.limitHit(s.log, limitMessageSize, zap.Int("max", fe.Max))
	return pgmsg.Fatal(pgmsg.CodeProgramLimitExceeded, fmt.Sprintf("%s (limits.max_message_size)", fe.Error()))
}

// maxBatch is how many bytes of an extended-protocol batch the session
// holds back to route it whole.
func (s *session) maxBatch() int {
	if s.limits.MaxBatchBytes > 0 {
		return s.limits.MaxBatchBytes
	}
	return defaultMaxBatch
}

// roomForStatement checks that the client may keep one more prepared
// statement, name, from a Parse of size bytes: max_client_statements and
// max_client_statement_bytes (0: no cap, in sessions built by unit tests).
// Past either it is FATAL: pgsplit cannot answer the part of the batch
// before the Parse faithfully without sending it (ParseComplete for Parses
// it holds back, the answers of what streamed to a server already), and a
// client that keeps this many statements leaks them; its pool reconnects.
func (s *session) roomForStatement(name string, size int) error {
	l := s.limits
	if _, ok := s.stmts[name]; !ok && l.MaxClientStatements > 0 && len(s.stmts) >= l.MaxClientStatements {
		s.srv.limitHit(s.log, limitClientStatements, zap.Int("max", l.MaxClientStatements))
		return pgmsg.Fatal(pgmsg.CodeProgramLimitExceeded, fmt.Sprintf("too many prepared statements: this client has %d (limits.max_client_statements); close some first", len(s.stmts)))
	}
	if l.MaxClientStatementBytes <= 0 || s.stmtBytes+2*size <= l.MaxClientStatementBytes {
		return nil
	}
	// stmtBytes only grows (a statement closed is not subtracted):
	// count exactly before refusing.
	s.stmtBytes = 0
	for n, cs := range s.stmts {
		if n != name {
			s.stmtBytes += stmtSize(n, cs)
		}
	}
	if s.stmtBytes+2*size <= l.MaxClientStatementBytes {
		return nil
	}
	s.srv.limitHit(s.log, limitClientStatementBytes, zap.Int("max", l.MaxClientStatementBytes))
	return pgmsg.Fatal(pgmsg.CodeProgramLimitExceeded, fmt.Sprintf("prepared statements too large: this client keeps %d bytes of them (limits.max_client_statement_bytes %d); close some first",
		s.stmtBytes, l.MaxClientStatementBytes))
}

// keepStatement registers the client's statement name.
func (s *session) keepStatement(name string, cs *clientStmt) {
	s.stmts[name] = cs
	s.stmtBytes += stmtSize(name, cs)
}

func stmtSize(name string, cs *clientStmt) int { return len(name) + len(cs.sql) + len(cs.parse) }

// checkBooks ends a streaming batch whose books (the statement and portal
// names it used, kept until its Sync) outgrow limits.max_batch_bytes.
func (s *session) checkBooks() error {
	if s.batch.books <= s.maxBatch() {
		return nil
	}
	s.srv.limitHit(s.log, limitBatchBytes, zap.Int("max", s.maxBatch()))
	return pgmsg.Fatal(pgmsg.CodeProgramLimitExceeded, fmt.Sprintf("extended-protocol batch keeps over %d bytes of statement and portal names before its Sync (limits.max_batch_bytes)", s.maxBatch()))
}
