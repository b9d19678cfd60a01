package wire

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net"
	"testing"
	"time"
)

// chunked returns data in reads of the given sizes, cycling through them.
type chunked struct {
	data  []byte
	sizes []int
	i     int
}

func (c *chunked) Read(p []byte) (int, error) {
	if len(c.data) == 0 {
		return 0, io.EOF
	}
	n := 1
	if len(c.sizes) > 0 {
		n = max(1, c.sizes[c.i%len(c.sizes)])
		c.i++
	}
	n = min(n, len(p), len(c.data))
	copy(p, c.data[:n])
	c.data = c.data[n:]
	return n, nil
}

// TestConnReaderFramesAsBufio frames the same messages through a
// ConnReader and a bufio.Reader, over sources that return them in reads of
// many sizes: the messages must come out the same.
func TestConnReaderFramesAsBufio(t *testing.T) {
	var all []byte
	for _, m := range [][]byte{msg('Q', "SELECT 1\x00"), msg('d', string(bytes.Repeat([]byte("y"), 70000))), msg('S', ""), msg('P', string(bytes.Repeat([]byte("p"), 511))), msg('X', "")} {
		all = append(all, m...)
	}
	for _, sizes := range [][]int{{1}, {5}, {511, 1}, {512}, {513}, {40000}, {len(all)}, {3, 1000, 7, 65536}} {
		var pool BufPool
		got := frames(t, NewReader(NewConnReader(&chunked{data: all, sizes: sizes}, &pool), 0))
		want := frames(t, NewReader(bufio.NewReaderSize(&chunked{data: all, sizes: sizes}, LargeBufSize), 0))
		if !bytes.Equal(got, want) || !bytes.Equal(got, all) {
			t.Fatalf("reads of %v: framed %d bytes, bufio %d, sent %d", sizes, len(got), len(want), len(all))
		}
	}
}

// frames reads messages until EOF, re-encoding each (Forward for bodies
// over 100 bytes, Body otherwise).
func frames(t *testing.T, r *Reader) []byte {
	t.Helper()
	var out bytes.Buffer
	w := bufio.NewWriter(&out)
	for {
		typ, n, err := r.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if n > 100 {
			err = r.Forward(w)
		} else {
			var b []byte
			if b, err = r.Body(); err == nil {
				err = r.WriteBodyAfterHeader(w, b)
			}
		}
		if err != nil {
			t.Fatalf("message %q: %v", typ, err)
		}
	}
	_ = w.Flush()
	return out.Bytes()
}

// TestIdleConnReaderHoldsNoLargeBuffer: after a message too large for the
// small buffer has been read, the reader waits for the next one without a
// large buffer, and the pool gets it back.
func TestIdleConnReaderHoldsNoLargeBuffer(t *testing.T) {
	client, server := net.Pipe()
	defer client.Close()
	defer server.Close()
	var pool BufPool
	cr := NewConnReader(server, &pool)
	r := NewReader(cr, 0)
	big := msg('d', string(bytes.Repeat([]byte("z"), 20000)))
	go func() { _, _ = client.Write(big) }()
	if _, n, err := r.Next(); err != nil || n != 20000-0 {
		t.Fatalf("Next: %d %v", n, err)
	}
	if _, err := r.Body(); err != nil {
		t.Fatal(err)
	}
	// net.Pipe hands over at most what each Read asks for, so the last
	// read of the body did not fill the room it had.
	if cr.large != nil {
		t.Fatal("the reader keeps its large buffer after the message was consumed")
	}
	// Waiting for the next message: a read deadline ends the wait.
	_ = server.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
	if _, _, err := r.Next(); err == nil {
		t.Fatal("Next returned without a message")
	}
	if cr.large != nil || cr.Buffered() != 0 {
		t.Fatalf("an idle reader holds a large buffer (%v) or bytes (%d)", cr.large != nil, cr.Buffered())
	}
	_ = server.SetReadDeadline(time.Time{})
	go func() { _, _ = client.Write(msg('Q', "SELECT 1\x00")) }()
	if typ, _, err := r.Next(); err != nil || typ != 'Q' {
		t.Fatalf("after the wait: %q %v", typ, err)
	}
}

// TestConnReaderPeekLimit: Peek serves up to LargeBufSize and refuses
// more, as bufio does.
func TestConnReaderPeekLimit(t *testing.T) {
	data := bytes.Repeat([]byte("a"), LargeBufSize+10)
	var pool BufPool
	cr := NewConnReader(&chunked{data: data, sizes: []int{700}}, &pool)
	if p, err := cr.Peek(LargeBufSize); err != nil || len(p) != LargeBufSize {
		t.Fatalf("Peek(LargeBufSize): %d %v", len(p), err)
	}
	if _, err := cr.Peek(LargeBufSize + 1); !errors.Is(err, bufio.ErrBufferFull) {
		t.Fatalf("Peek over the limit: %v", err)
	}
	if n, err := cr.Discard(len(data)); n != len(data) || err != nil {
		t.Fatalf("Discard: %d %v", n, err)
	}
	if _, err := cr.Peek(1); !errors.Is(err, io.EOF) {
		t.Fatalf("Peek at the end: %v", err)
	}
}

// FuzzConnReader runs the same operations (Peek, Discard, ReadFull of
// sizes from the input) on a ConnReader and a bufio.Reader over the same
// bytes returned in reads of the same sizes: results must agree.
func FuzzConnReader(f *testing.F) {
	f.Add([]byte("hello, world"), []byte{5, 1, 200, 3}, []byte{0, 5, 1, 3, 2, 7})
	f.Add(bytes.Repeat([]byte("x"), 3000), []byte{255, 255, 1}, []byte{2, 200, 0, 250, 1, 255})
	f.Fuzz(func(t *testing.T, data, sizes, ops []byte) {
		sz := make([]int, len(sizes))
		for i, s := range sizes {
			sz[i] = int(s) * 9 // up to 2,295: both sides of the small buffer
		}
		var pool BufPool
		a := NewConnReader(&chunked{data: data, sizes: sz}, &pool)
		b := bufio.NewReaderSize(&chunked{data: data, sizes: sz}, LargeBufSize)
		for i := 0; i+1 < len(ops); i += 2 {
			n := int(ops[i+1]) * 5
			switch ops[i] % 3 {
			case 0:
				pa, ea := a.Peek(n)
				pb, eb := b.Peek(n)
				if !bytes.Equal(pa, pb) || (ea == nil) != (eb == nil) {
					t.Fatalf("Peek(%d): %q %v, bufio %q %v", n, pa, ea, pb, eb)
				}
			case 1:
				na, ea := a.Discard(n)
				nb, eb := b.Discard(n)
				if na != nb || (ea == nil) != (eb == nil) {
					t.Fatalf("Discard(%d): %d %v, bufio %d %v", n, na, ea, nb, eb)
				}
			case 2:
				pa, pb := make([]byte, n), make([]byte, n)
				na, ea := io.ReadFull(a, pa)
				nb, eb := io.ReadFull(b, pb)
				if na != nb || !bytes.Equal(pa[:na], pb[:nb]) || (ea == nil) != (eb == nil) {
					t.Fatalf("ReadFull(%d): %d %v, bufio %d %v", n, na, ea, nb, eb)
				}
			}
		}
	})
}
