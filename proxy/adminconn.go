package proxy

import (
	"errors"
	"fmt"
	"net"
	"time"

	"go.uber.org/zap"

	"github.com/pgsplit/pgsplit/admin"
	"github.com/pgsplit/pgsplit/config"
	"github.com/pgsplit/pgsplit/internal/pgmsg"
)

// A session whose client logged in to database "pgsplit" as one of
// admin.users is an admin console session: package admin answers it,
// reading the Server through admin.Source (adminsource.go) and the client
// through a consoleConn.

// maxAdminConns bounds the admin console's connections; they do not count
// against max_client_conn, so an admin gets in when clients fill it.
const maxAdminConns = 50

// serveAdmin runs an admin console session of u, who has logged in, to its
// end.
func (s *session) serveAdmin(u config.User) {
	if n := s.srv.adminConns.Add(1); n > maxAdminConns {
		s.srv.adminConns.Add(-1)
		s.failStartup(pgmsg.Fatal(pgmsg.CodeTooManyConnections, fmt.Sprintf("sorry, too many admin console connections already (%d)", maxAdminConns)), u.Name, config.AdminDatabase)
		return
	}
	defer s.srv.adminConns.Add(-1)
	s.user, s.database = u, config.AdminDatabase
	s.admin = admin.NewSession(s.srv, consoleConn{s}, s.log)
	if err := s.greet(map[string]string{
		"server_version": "15.0 (pgsplit admin console)", "server_encoding": "UTF8", "client_encoding": "UTF8",
		"DateStyle": "ISO, MDY", "TimeZone": "UTC", "integer_datetimes": "on", "standard_conforming_strings": "on",
		"IntervalStyle": "postgres", "is_superuser": "off", "session_authorization": u.Name,
		"application_name": s.appName,
	}); err != nil {
		return
	}
	_ = s.conn.SetDeadline(time.Time{})
	s.log.Info("admin console connected")
	s.ready.Store(true)
	if s.draining.Load() {
		s.drain()
	}
	reason := s.admin.Serve()
	s.ready.Store(false)
	s.log.Info("admin console disconnected", zap.String("reason", reason))
}

// consoleConn is an admin console session's client connection as the
// console uses it (admin.Client). Its reads run on serve's goroutine, which
// owns the client reader; its writes take the session's write lock (drain
// and kill write from other goroutines).
type consoleConn struct{ s *session }

// Next reads the client's next message under the session's limits (idle
// timeouts, message size) and notes when it arrived, for SHOW CLIENTS.
func (c consoleConn) Next() (byte, []byte, error) {
	typ, err := c.s.nextMessage()
	if err != nil {
		return 0, nil, err
	}
	body, err := c.s.cr.Body()
	if err != nil {
		return 0, nil, errors.New("client connection closed")
	}
	c.s.lastRequest.Store(time.Now().UnixNano())
	return typ, body, nil
}

// Send writes out and flushes.
func (c consoleConn) Send(out []byte) error { return c.s.out.send(out) }

// Fatal tells the client e and closes the connection.
func (c consoleConn) Fatal(e *pgmsg.Error) { c.s.out.fatal(e) }

// Gone reports whether the admin client closed its connection (a look at
// the socket with a 1 ms deadline; data it sent stays buffered).
func (c consoleConn) Gone() bool {
	s := c.s
	if s.br.Buffered() > 0 {
		return false
	}
	_ = s.conn.SetReadDeadline(time.Now().Add(time.Millisecond))
	_, err := s.br.Peek(1)
	_ = s.conn.SetReadDeadline(time.Time{})
	var ne net.Error
	return err != nil && !(errors.As(err, &ne) && ne.Timeout())
}
