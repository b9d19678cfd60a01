package proxy

import (
	"bufio"
	"cmp"
	"io"
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
// writes return net.ErrClosed and write nothing. Its buffer is borrowed
// from the Server's pool while bytes wait in it and given back at each
// flush, so an idle client holds none.
type clientWriter struct {
	conn net.Conn  // closed by fatal
	dst  io.Writer // conn, or the TLS connection over it
	bufs *writerPool

	mu     sync.Mutex    // guards w, closed and scratch
	w      *bufio.Writer // borrowed while it holds bytes (see buf), else nil
	closed bool
	// scratch encodes pgsplit's own answers, reused under mu.
	scratch []byte
	gone    chan struct{} // closed by fatal
}

func newClientWriter(conn net.Conn, dst io.Writer, bufs *writerPool) *clientWriter {
	return &clientWriter{conn: conn, dst: dst, bufs: bufs, gone: make(chan struct{})}
}

// clientWriteBufSize is the size of a client writer's buffer: results are
// copied into it and leave in writes of up to this size.
const clientWriteBufSize = 32 << 10

// maxScratch is the largest scratch buffer a client writer keeps between
// answers.
const maxScratch = 256

// writerPool lends client writers their buffers. Its zero value is ready.
type writerPool struct {
	p    sync.Pool
	size int // of the buffers; 0: clientWriteBufSize
}

func (wp *writerPool) get(dst io.Writer) *bufio.Writer {
	if w, ok := wp.p.Get().(*bufio.Writer); ok {
		w.Reset(dst)
		return w
	}
	return bufio.NewWriterSize(dst, cmp.Or(wp.size, clientWriteBufSize))
}

func (wp *writerPool) put(w *bufio.Writer) {
	w.Reset(nil)
	wp.p.Put(w)
}

// buf returns the buffer, borrowing one if none is held; c.mu is held.
func (c *clientWriter) buf() *bufio.Writer {
	if c.w == nil {
		c.w = c.bufs.get(c.dst)
	}
	return c.w
}

// flushLocked sends what is buffered and gives the buffer back; c.mu is
// held. After a failed write the buffer is kept: the connection is lost.
func (c *clientWriter) flushLocked() error {
	if c.w == nil {
		return nil
	}
	if err := c.w.Flush(); err != nil {
		return err
	}
	c.bufs.put(c.w)
	c.w = nil
	return nil
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
		if _, err := c.buf().Write(out); err != nil {
			return err
		}
	}
	return c.flushLocked()
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
	if cap(b) <= maxScratch {
		c.scratch = b[:0]
	} else {
		c.scratch = nil // a greeting or a large local answer: not kept for the session's life
	}
	if _, err := c.buf().Write(b); err != nil {
		return err
	}
	return c.flushLocked()
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
	_, _ = c.buf().Write(pe.Append(nil))
	_ = c.w.Flush()
	_ = c.conn.Close()
	c.bufs.put(c.w)
	c.w = nil
}

// flush sends what a relay left buffered (unless the connection closed).
func (c *clientWriter) flush() {
	c.mu.Lock()
	if !c.closed {
		_ = c.flushLocked() // a client gone is the session's to notice
	}
	c.mu.Unlock()
}

// relay is for a pump relaying a server's answer: it locks the writer and
// returns the buffer to copy into; the caller must call done, and flushes
// through done(true).
func (c *clientWriter) relay() *bufio.Writer {
	c.mu.Lock()
	return c.buf()
}

// done ends relay, flushing first when flush is set; it returns the
// flush's error.
func (c *clientWriter) done(flush bool) error {
	var err error
	if flush {
		err = c.flushLocked()
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
