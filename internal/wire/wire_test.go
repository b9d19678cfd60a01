package wire

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"math"
	"net"
	"runtime"
	"testing"
	"testing/iotest"

	"go.uber.org/goleak"
)

func msg(typ byte, body string) []byte {
	b := []byte{typ, 0, 0, 0, 0}
	binary.BigEndian.PutUint32(b[1:], uint32(4+len(body)))
	return append(b, body...)
}

// TestFramingOverPipe writes messages through net.Pipe one byte at a time
// and in one burst: frames must come out whole either way, because framing
// follows length headers, not Read boundaries.
func TestFramingOverPipe(t *testing.T) {
	defer goleak.VerifyNone(t)
	want := [][]byte{msg('Q', "SELECT 1\x00"), msg('S', ""), msg('d', string(bytes.Repeat([]byte("x"), 100000))), msg('X', "")}
	var all []byte
	for _, m := range want {
		all = append(all, m...)
	}
	for _, chunk := range []int{1, 7, len(all)} {
		client, server := net.Pipe()
		go func() {
			defer client.Close()
			for i := 0; i < len(all); i += chunk {
				end := min(i+chunk, len(all))
				if _, err := client.Write(all[i:end]); err != nil {
					return
				}
			}
		}()
		r := NewReader(bufio.NewReaderSize(server, 4096), 0)
		var out bytes.Buffer
		w := bufio.NewWriter(&out)
		for i := range want {
			typ, n, err := r.Next()
			if err != nil {
				t.Fatalf("chunk %d msg %d: %v", chunk, i, err)
			}
			if typ != want[i][0] || n != len(want[i])-5 {
				t.Fatalf("chunk %d msg %d: got %q/%d", chunk, i, typ, n)
			}
			if i == 0 {
				b, err := r.Body()
				if err != nil || string(b) != "SELECT 1\x00" {
					t.Fatalf("body %q %v", b, err)
				}
				if err := r.WriteBodyAfterHeader(w, b); err != nil {
					t.Fatal(err)
				}
				continue
			}
			if err := r.Forward(w); err != nil {
				t.Fatal(err)
			}
		}
		_ = w.Flush()
		if !bytes.Equal(out.Bytes(), all) {
			t.Fatalf("chunk %d: forwarded bytes differ (%d vs %d)", chunk, out.Len(), len(all))
		}
		if _, _, err := r.Next(); !errors.Is(err, io.EOF) {
			t.Fatalf("want EOF at the end, got %v", err)
		}
		server.Close()
	}
}

func TestNextSkipsUnreadBody(t *testing.T) {
	in := append(msg('D', "abcdef"), msg('Z', "I")...)
	r := NewReader(bufio.NewReader(bytes.NewReader(in)), 0)
	if typ, _, _ := r.Next(); typ != 'D' {
		t.Fatal("want D")
	}
	typ, n, err := r.Next()
	if err != nil || typ != 'Z' || n != 1 {
		t.Fatalf("got %q %d %v", typ, n, err)
	}
}

func TestBadLengths(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   []byte
		max  int
	}{
		{"length below 4", []byte{'Q', 0, 0, 0, 3}, 0},
		{"over limit", []byte{'Q', 0, 0, 0x10, 0}, 100},
		{"negative", []byte{'Q', 0xff, 0xff, 0xff, 0xff}, 0},
	} {
		r := NewReader(bufio.NewReader(bytes.NewReader(tc.in)), tc.max)
		_, _, err := r.Next()
		var fe *FrameError
		if !errors.As(err, &fe) {
			t.Fatalf("%s: want FrameError, got %v", tc.name, err)
		}
		if _, _, err := r.Next(); !errors.Is(err, ErrBroken) {
			t.Fatalf("%s: reader must stay broken, got %v", tc.name, err)
		}
	}
}

// A truncated body marks the stream broken: the connection must not be reused.
func TestTruncatedBodyBreaks(t *testing.T) {
	in := msg('D', "abcdef")[:8]
	r := NewReader(bufio.NewReader(bytes.NewReader(in)), 0)
	if _, _, err := r.Next(); err != nil {
		t.Fatal(err)
	}
	if err := r.Forward(bufio.NewWriter(io.Discard)); err == nil || !r.Broken() {
		t.Fatalf("want broken, got %v", err)
	}
}

func TestReadStartup(t *testing.T) {
	good := []byte{0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f}
	body, err := ReadStartup(bufio.NewReader(bytes.NewReader(good)))
	if err != nil || len(body) != 4 {
		t.Fatalf("%v %v", body, err)
	}
	for _, bad := range [][]byte{{0, 0, 0, 2}, {0, 1, 0, 0}, {0x47, 0x45, 0x54, 0x20}} { // too short, too long, "GET "
		_, err := ReadStartup(bufio.NewReader(bytes.NewReader(bad)))
		var fe *FrameError
		if !errors.As(err, &fe) {
			t.Fatalf("%q: want FrameError, got %v", bad, err)
		}
	}
}

// FuzzReader claims only that arbitrary bytes never make the reader panic
// or loop, and that forwarded output is a prefix of the input.
func FuzzReader(f *testing.F) {
	f.Add(append(msg('Q', "SELECT 1\x00"), msg('Z', "I")...))
	f.Add([]byte{'Q', 0, 0, 0, 3})
	f.Add([]byte{'D', 0, 0, 0, 9, 1})
	f.Fuzz(func(t *testing.T, in []byte) {
		r := NewReader(bufio.NewReaderSize(bytes.NewReader(in), 16), 1<<16)
		var out bytes.Buffer
		w := bufio.NewWriter(&out)
		for i := 0; i < 1000; i++ {
			typ, _, err := r.Next()
			if err != nil {
				break
			}
			if typ%2 == 0 {
				b, err := r.Body()
				if err != nil {
					break
				}
				if err := r.WriteBodyAfterHeader(w, b); err != nil {
					break
				}
			} else if err := r.Forward(w); err != nil {
				break
			}
		}
		_ = w.Flush()
		if !bytes.HasPrefix(in, out.Bytes()) {
			t.Fatalf("output is not a prefix of the input:\n in  %q\n out %q", in, out.Bytes())
		}
		_, _ = ReadStartup(bufio.NewReader(bytes.NewReader(in)))
	})
}

func BenchmarkForward(b *testing.B) {
	one := msg('D', string(bytes.Repeat([]byte("r"), 120)))
	var in []byte
	for len(in) < 1<<20 {
		in = append(in, one...)
	}
	per := len(in) / len(one)
	src := bytes.NewReader(in)
	br := bufio.NewReaderSize(src, 32<<10)
	w := bufio.NewWriterSize(io.Discard, 32<<10)
	b.SetBytes(int64(len(one)))
	b.ReportAllocs()
	b.ResetTimer()
	r := NewReader(br, 0)
	for i := 0; i < b.N; i++ {
		if i%per == 0 {
			src.Reset(in)
			br.Reset(src)
			r = NewReader(br, 0)
		}
		if _, _, err := r.Next(); err != nil {
			b.Fatal(err)
		}
		if err := r.Forward(w); err != nil {
			b.Fatal(err)
		}
	}
}

// TestBodyAllocatesWhatArrives: a header that claims 2^31−1 bytes (a
// Reader whose limit lets it through) followed by 10 bytes costs kilobytes,
// not the gigabytes the length field promises; the old Body allocated the
// whole claimed length before reading a byte.
func TestBodyAllocatesWhatArrives(t *testing.T) {
	for _, claim := range []uint32{1<<31 - 1, MaxMessageLen + 4} {
		in := binary.BigEndian.AppendUint32([]byte{'P'}, claim)
		in = append(in, "0123456789"...)
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		r := NewReader(bufio.NewReader(bytes.NewReader(in)), math.MaxInt32)
		if _, n, err := r.Next(); err != nil || n != int(claim-4) {
			t.Fatalf("claim %d: Next = %d, %v", claim, n, err)
		}
		if _, err := r.Body(); !errors.Is(err, ErrBroken) {
			t.Fatalf("claim %d: want ErrBroken for a body that never arrives, got %v", claim, err)
		}
		runtime.ReadMemStats(&after)
		if got := after.TotalAlloc - before.TotalAlloc; got > 1<<20 {
			t.Fatalf("claim %d: Body allocated %d bytes for 10 bytes received", claim, got)
		} else {
			t.Logf("claim %d bytes, 10 received: %d bytes allocated", claim, got)
		}
	}
}

// TestBodyGrowsAcrossChunks reads bodies around the chunk sizes whole and
// unchanged, through a reader that hands out a few bytes at a time.
func TestBodyGrowsAcrossChunks(t *testing.T) {
	for _, n := range []int{0, 1, bodyChunk - 1, bodyChunk, bodyChunk + 1, 3*bodyChunk + 17, 1 << 20} {
		body := make([]byte, n)
		for i := range body {
			body[i] = byte(i * 7)
		}
		in := append(msg('Q', string(body)), msg('S', "")...)
		r := NewReader(bufio.NewReaderSize(iotest.HalfReader(bytes.NewReader(in)), 16), 0)
		if _, _, err := r.Next(); err != nil {
			t.Fatal(err)
		}
		got, err := r.Body()
		if err != nil || !bytes.Equal(got, body) {
			t.Fatalf("%d bytes: body differs (%d bytes, %v)", n, len(got), err)
		}
		if typ, _, err := r.Next(); err != nil || typ != 'S' {
			t.Fatalf("%d bytes: next message %q, %v", n, typ, err)
		}
	}
}

// FuzzReaderLimit claims only that no input makes a Reader with a small
// limit panic, return a body over its limit, or allocate far beyond the
// input's size.
func FuzzReaderLimit(f *testing.F) {
	f.Add([]byte{'P', 0x7f, 0xff, 0xff, 0xff, 1, 2, 3}, 100)
	f.Add(append(msg('Q', "SELECT 1\x00"), 'Q', 0, 0, 0, 0), 4)
	f.Add([]byte{'Q', 0, 0, 0, 3}, 1000)
	f.Fuzz(func(t *testing.T, in []byte, limit int) {
		limit = 1 + abs(limit)%(1<<20)
		r := NewReader(bufio.NewReaderSize(bytes.NewReader(in), 16), limit)
		for range 100 {
			_, n, err := r.Next()
			if err != nil {
				return
			}
			if n > limit {
				t.Fatalf("Next returned %d bytes over the limit %d", n, limit)
			}
			b, err := r.Body()
			if err != nil {
				return
			}
			if len(b) != n || cap(b) > max(2*len(in), bodyChunk) {
				t.Fatalf("body of %d bytes (cap %d) for a header of %d and %d input bytes", len(b), cap(b), n, len(in))
			}
		}
	})
}

func abs(n int) int {
	if n < 0 {
		return -n
	}
	return n
}
