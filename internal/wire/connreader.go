package wire

import (
	"bufio"
	"io"
	"sync"
)

// Source is what a Reader frames messages from: a *bufio.Reader, or a
// ConnReader for a connection that is idle most of the time.
type Source interface {
	io.Reader
	Peek(n int) ([]byte, error)
	Discard(n int) (int, error)
	Buffered() int
}

// LargeBufSize is the size of the buffers a ConnReader borrows while bytes
// stream in, and the largest Peek it serves.
const LargeBufSize = 32 << 10

// smallBufSize is the buffer a ConnReader waits with: one Query or one
// extended-protocol batch of a typical driver fits in it.
const smallBufSize = 512

// BufPool lends the large read buffers of the ConnReaders of one server
// process. Its zero value is ready to use.
type BufPool struct{ p sync.Pool }

func (bp *BufPool) get() *[LargeBufSize]byte {
	if b, ok := bp.p.Get().(*[LargeBufSize]byte); ok {
		return b
	}
	return new([LargeBufSize]byte)
}

func (bp *BufPool) put(b *[LargeBufSize]byte) { bp.p.Put(b) }

// ConnReader is a buffered reader (as bufio.Reader) for a connection that
// spends most of its life waiting: it waits for the next bytes with a
// small buffer of its own, and borrows a large one from its pool only
// while bytes arrive faster than they are consumed (a read filled all the
// room it was given); the large buffer goes back as soon as it is empty.
// An idle connection therefore holds smallBufSize bytes, not
// LargeBufSize. It is owned by one goroutine at a time.
type ConnReader struct {
	src   io.Reader
	pool  *BufPool
	large *[LargeBufSize]byte // borrowed while buf is its array
	buf   []byte              // small[:] or large[:]
	r, w  int                 // buf[r:w] is buffered
	hot   bool                // the last read filled all the room given: more is likely waiting
	small [smallBufSize]byte
}

// NewConnReader reads src, borrowing large buffers from pool.
func NewConnReader(src io.Reader, pool *BufPool) *ConnReader {
	c := &ConnReader{src: src, pool: pool}
	c.buf = c.small[:]
	return c
}

// Buffered returns how many bytes can be read without a read from src.
func (c *ConnReader) Buffered() int { return c.w - c.r }

// Peek returns the next n bytes without consuming them, reading from src
// as needed; with fewer than n bytes it returns what it has and the
// error. The bytes are valid until the next call on c. n may be at most
// LargeBufSize (bufio.ErrBufferFull otherwise).
func (c *ConnReader) Peek(n int) ([]byte, error) {
	if n < 0 {
		return nil, bufio.ErrNegativeCount
	}
	if n > LargeBufSize {
		return c.buf[c.r:c.w], bufio.ErrBufferFull
	}
	for c.w-c.r < n {
		if err := c.fill(n); err != nil {
			return c.buf[c.r:c.w], err
		}
	}
	return c.buf[c.r : c.r+n], nil
}

// Discard skips the next n bytes, reading from src as needed, and returns
// how many it skipped.
func (c *ConnReader) Discard(n int) (int, error) {
	if n < 0 {
		return 0, bufio.ErrNegativeCount
	}
	done := 0
	for {
		k := min(n-done, c.w-c.r)
		c.consume(k)
		done += k
		if done == n {
			return done, nil
		}
		if err := c.fill(1); err != nil {
			return done, err
		}
	}
}

// Read reads up to len(p) bytes: what is buffered, else one read from src
// (straight into p when p is at least as large as the small buffer).
func (c *ConnReader) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	if c.r == c.w {
		if len(p) >= smallBufSize {
			n, err := c.src.Read(p)
			c.hot = n == len(p)
			return n, err
		}
		if err := c.fill(1); err != nil {
			return 0, err
		}
	}
	n := copy(p, c.buf[c.r:c.w])
	c.consume(n)
	return n, nil
}

// consume marks n buffered bytes read; an emptied large buffer goes back
// to the pool unless more bytes are likely waiting.
func (c *ConnReader) consume(n int) {
	c.r += n
	if c.r < c.w {
		return
	}
	c.r, c.w = 0, 0
	if c.large != nil && !c.hot {
		c.pool.put(c.large)
		c.large = nil
		c.buf = c.small[:]
	}
}

// fill makes room for want buffered bytes (at most LargeBufSize) and reads
// from src once. A read that returns nothing and no error is retried, as
// bufio does, a bounded number of times.
func (c *ConnReader) fill(want int) error {
	if c.r > 0 {
		copy(c.buf, c.buf[c.r:c.w])
		c.w -= c.r
		c.r = 0
	}
	if c.large == nil && (c.hot || want > len(c.small)) {
		c.large = c.pool.get()
		copy(c.large[:], c.buf[:c.w])
		c.buf = c.large[:]
	}
	for range 100 {
		n, err := c.src.Read(c.buf[c.w:])
		if n < 0 || n > len(c.buf)-c.w {
			panic("wire: source returned an invalid count")
		}
		c.w += n
		c.hot = c.w == len(c.buf)
		if err != nil {
			if c.r == c.w {
				c.consume(0) // an empty large buffer goes back
			}
			return err
		}
		if n > 0 {
			return nil
		}
	}
	return io.ErrNoProgress
}
