package proxy

import (
	"bufio"
	"net"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/pgsplit/pgsplit/internal/pgmsg"
)

// clientWriter is the only way bytes reach the client. The session owns it
// and creates it once the startup phase settled the link (TLS or not); the
// session goroutine and the pumps of its server connections write through
// it concurrently, each call holding the lock for one whole answer so that
// answers never interleave. fatal closes the client connection; later
// writes return net.ErrClosed and write nothing.
type clientWriter struct {
	conn net.Conn // closed by fatal

	mu     sync.Mutex // guards w, closed and scratch
	w      *bufio.Writer
	closed bool
	// scratch encodes pgsplit's own answers, reused under mu.
	scratch []byte
	gone    chan struct{} // closed by fatal
}

func newClientWriter(conn net.Conn, w *bufio.Writer) *clientWriter {
	return &clientWriter{conn: conn, w: w, gone: make(chan struct{})}
}

// goneCh is closed once fatal closed the client connection.
func (c *clientWriter) goneCh() <-chan struct{} { return c.gone }

// send writes out (whole messages) and flushes.
func (c *clientWriter) send(out []byte) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return net.ErrClosed
	}
	if len(out) > 0 {
		if _, err := c.w.Write(out); err != nil {
			return err
		}
	}
	return c.w.Flush()
}

// answer writes msgs, then ReadyForQuery with status, and flushes: a
// statement pgsplit answered itself, as a server would.
func (c *clientWriter) answer(status byte, msgs ...pgproto3.BackendMessage) error {
	return c.encodeAndSend(msgs, true, status)
}

// sendMsgs writes msgs and flushes (a batch's answers up to its
// ReadyForQuery, which is among them).
func (c *clientWriter) sendMsgs(msgs ...pgproto3.BackendMessage) error {
	return c.encodeAndSend(msgs, false, 0)
}

// encodeAndSend encodes msgs (and ReadyForQuery with status when ready)
// into the scratch buffer, writes and flushes them.
func (c *clientWriter) encodeAndSend(msgs []pgproto3.BackendMessage, ready bool, status byte) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return net.ErrClosed
	}
	b := c.scratch[:0]
	for _, m := range msgs {
		var err error
		if b, err = m.Encode(b); err != nil {
			return err
		}
	}
	if ready {
		b = pgmsg.AppendReadyForQuery(b, status)
	}
	c.scratch = b[:0]
	if _, err := c.w.Write(b); err != nil {
		return err
	}
	return c.w.Flush()
}

// refuse writes the ERROR pe, then ReadyForQuery with status when ready
// (a simple Query, or the Sync of a batch), and flushes; the session goes on.
func (c *clientWriter) refuse(pe *pgmsg.Error, ready bool, status byte) error {
	return c.encodeAndSend([]pgproto3.BackendMessage{pe.Response()}, ready, status)
}

// fatal writes pe (best effort, for a second at most) and closes the
// client connection, which ends the session's read loop. Only the first
// call does anything.
func (c *clientWriter) fatal(pe *pgmsg.Error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return
	}
	c.closed = true
	close(c.gone)
	_ = c.conn.SetWriteDeadline(time.Now().Add(time.Second))
	_, _ = c.w.Write(pe.Append(nil))
	_ = c.w.Flush()
	_ = c.conn.Close()
}

// flush sends what a relay left buffered (unless the connection closed).
func (c *clientWriter) flush() {
	c.mu.Lock()
	if !c.closed {
		_ = c.w.Flush() // a client gone is the session's to notice
	}
	c.mu.Unlock()
}

// relay is for a pump relaying a server's answer: it locks the writer and
// returns the buffer to copy into; the caller must call done, and flushes
// through done(true).
func (c *clientWriter) relay() *bufio.Writer {
	c.mu.Lock()
	return c.w
}

// done ends relay, flushing first when flush is set; it returns the
// flush's error.
func (c *clientWriter) done(flush bool) error {
	var err error
	if flush {
		err = c.w.Flush()
	}
	c.mu.Unlock()
	return err
}

// lockWithin reports whether the writer could be locked within d (and
// unlocks it again): false when the goroutine that panicked held it.
func (c *clientWriter) lockWithin(d time.Duration) bool {
	deadline := time.Now().Add(d)
	for !c.mu.TryLock() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(time.Millisecond)
	}
	c.mu.Unlock()
	return true
}

// loginWriter is the buffer the login phase (startup answers,
// authentication) writes to: before the greeting, serve's goroutine is
// the only writer, and no pump exists.
func (c *clientWriter) loginWriter() *bufio.Writer { return c.w }
