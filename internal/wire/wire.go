// Package wire frames PostgreSQL protocol messages on a byte stream without
// decoding them. A message is a type byte, a big-endian int32 length that
// counts itself, and a body; messages are always found by that header, never
// by what one Read returned.
//
// The relay moves most messages as raw frames (Forward) and decodes only the
// few that a decision needs (Body, then pgproto3's Decode). Neither path
// allocates per message: Forward copies through the bufio buffers, Body
// reuses one buffer.
package wire

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"slices"
)

// MaxMessageLen is the largest message body accepted by default: PostgreSQL
// itself caps messages at 1 GB.
const MaxMessageLen = 1 << 30

// bodyChunk is how much of a body Body reads into a buffer before it has
// seen more bytes arrive: a buffer grows with what was received, so a
// length field that promises a gigabyte and sends nothing costs this much.
const bodyChunk = 64 << 10

// MaxStartupLen is PostgreSQL's limit for a startup packet (MAX_STARTUP_PACKET_LENGTH).
const MaxStartupLen = 10000

// ErrBroken is returned after a read failed in the middle of a message: the
// stream position is lost and the connection cannot be reused.
var ErrBroken = errors.New("wire: stream broken mid-message")

// FrameError reports a message header that cannot be right.
type FrameError struct {
	Type byte
	Len  int64 // the length field as sent
	Min  int64 // the smallest length allowed
	Max  int   // the largest body allowed
}

func (e *FrameError) Error() string {
	if e.Len < e.Min {
		if e.Type == 0 {
			return fmt.Sprintf("invalid startup packet length %d", e.Len)
		}
		return fmt.Sprintf("invalid message length %d for message type %q", e.Len, e.Type)
	}
	return fmt.Sprintf("message type %q of %d bytes exceeds the limit of %d bytes", e.Type, e.Len, e.Max)
}

// TooLarge reports whether the header was refused for its size (rather
// than for a length too small to be a message).
func (e *FrameError) TooLarge() bool { return e.Len >= e.Min }

// Reader reads framed messages from a Source. It is owned by one
// goroutine at a time; a body returned by Body is valid only until the next
// call on the Reader.
type Reader struct {
	br      Source
	maxLen  int
	hdr     [5]byte
	left    int  // body bytes of the current message not yet consumed
	broken  bool // a read failed mid-message
	buf     []byte
	bufKeep int // Body buffers larger than this are not kept between calls
}

// NewReader frames messages from br. maxLen caps one message body (0 means
// MaxMessageLen).
func NewReader(br Source, maxLen int) *Reader {
	if maxLen <= 0 {
		maxLen = MaxMessageLen
	}
	return &Reader{br: br, maxLen: maxLen, bufKeep: 64 << 10}
}

// Buffered returns how many bytes can be read without blocking. The relay
// flushes its writer when this is zero, so pipelined messages go out in one
// write and a lone message is never held back.
func (r *Reader) Buffered() int { return r.br.Buffered() }

// Broken reports whether a read failed mid-message.
func (r *Reader) Broken() bool { return r.broken }

// Next discards what is left of the current message and reads the next
// header, returning the message type and body length. A failure while no
// header byte was consumed leaves the stream usable (a read deadline can stop
// a Reader between messages safely).
func (r *Reader) Next() (typ byte, n int, err error) {
	if r.broken {
		return 0, 0, ErrBroken
	}
	if r.left > 0 {
		if _, err := r.br.Discard(r.left); err != nil {
			r.broken = true
			return 0, 0, fmt.Errorf("%w: %w", ErrBroken, err)
		}
		r.left = 0
	}
	h, err := r.br.Peek(5)
	if err != nil {
		if len(h) > 0 && errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return 0, 0, err
	}
	copy(r.hdr[:], h)
	_, _ = r.br.Discard(5) // cannot fail: Peek returned 5 bytes
	l := int64(binary.BigEndian.Uint32(r.hdr[1:5]))
	if l < 4 || l-4 > int64(r.maxLen) {
		r.broken = true
		return r.hdr[0], 0, &FrameError{Type: r.hdr[0], Len: l, Min: 4, Max: r.maxLen}
	}
	r.left = int(l - 4)
	return r.hdr[0], r.left, nil
}

// Body reads the rest of the current message into a buffer that is valid
// until the next call on r. The buffer grows as the bytes arrive (doubling
// from bodyChunk), so memory follows what the peer sent, not what its
// length field claimed.
func (r *Reader) Body() ([]byte, error) {
	n := r.left
	b := r.buf[:0]
	if cap(b) < min(n, bodyChunk) {
		b = make([]byte, 0, min(n, bodyChunk))
	}
	for len(b) < n {
		if len(b) == cap(b) {
			b = slices.Grow(b, min(n, 2*cap(b))-len(b))
		}
		m, err := io.ReadFull(r.br, b[len(b):min(n, cap(b))])
		b = b[:len(b)+m]
		r.left -= m
		if err != nil {
			r.broken = true
			r.buf = nil
			return nil, fmt.Errorf("%w: %w", ErrBroken, err)
		}
	}
	r.buf = b
	if cap(r.buf) > r.bufKeep {
		r.buf = nil // do not pin a huge buffer for the connection's life
	}
	return b, nil
}

// Forward writes the current message (header and the rest of its body) to
// w. Bodies of any size stream through the bufio buffers without being held
// whole in memory.
func (r *Reader) Forward(w *bufio.Writer) error {
	if _, err := w.Write(r.hdr[:]); err != nil {
		return err
	}
	for r.left > 0 {
		if r.br.Buffered() == 0 {
			if _, err := r.br.Peek(1); err != nil { // blocks, then fills the buffer
				r.broken = true
				return fmt.Errorf("%w: %w", ErrBroken, err)
			}
		}
		p, _ := r.br.Peek(min(r.br.Buffered(), r.left))
		if _, err := w.Write(p); err != nil {
			r.broken = true
			return err
		}
		_, _ = r.br.Discard(len(p))
		r.left -= len(p)
	}
	return nil
}

// WriteBodyAfterHeader writes the already-read body b of the current message,
// preceded by its header, to w; for messages a caller decoded with Body and
// still wants to forward unchanged.
func (r *Reader) WriteBodyAfterHeader(w *bufio.Writer, b []byte) error {
	if _, err := w.Write(r.hdr[:]); err != nil {
		return err
	}
	_, err := w.Write(b)
	return err
}

// ReadStartup reads one startup-phase packet (no type byte: int32 length
// including itself, then the body) and returns its body, at most
// MaxStartupLen bytes. The returned slice is freshly allocated.
func ReadStartup(br io.Reader) ([]byte, error) {
	var h [4]byte
	if _, err := io.ReadFull(br, h[:]); err != nil {
		return nil, err
	}
	l := int64(binary.BigEndian.Uint32(h[:]))
	if l < 8 || l > MaxStartupLen {
		return nil, &FrameError{Type: 0, Len: l, Min: 8, Max: MaxStartupLen}
	}
	body := make([]byte, l-4)
	if _, err := io.ReadFull(br, body); err != nil {
		return nil, err
	}
	return body, nil
}
