package handoff

import (
	"bytes"
	"os"
	"syscall"
	"testing"
)

// TestFramesCarryBodiesAndDescriptorsInOrder sends frames with and without
// descriptors and checks each arrives whole, with its own descriptor.
func TestFramesCarryBodiesAndDescriptorsInOrder(t *testing.T) {
	a, bf, err := Pair()
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	b, err := FromFile(bf)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	big := bytes.Repeat([]byte("x"), 1<<20)
	go func() {
		_ = a.Send(Ready, nil, -1)
		_ = a.Send(Session, big, int(w.Fd()))
		_ = a.Send(Cancel, []byte("abc"), -1)
	}()
	typ, body, fd, err := b.Recv()
	if err != nil || typ != Ready || len(body) != 0 || fd != -1 {
		t.Fatalf("first frame: %q %d bytes fd %d err %v", typ, len(body), fd, err)
	}
	typ, body, fd, err = b.Recv()
	if err != nil || typ != Session || !bytes.Equal(body, big) || fd < 0 {
		t.Fatalf("second frame: %q %d bytes fd %d err %v", typ, len(body), fd, err)
	}
	// The descriptor is the pipe's write end: what is written there comes
	// out of r.
	if _, err := syscall.Write(fd, []byte("hi")); err != nil {
		t.Fatal(err)
	}
	_ = syscall.Close(fd)
	got := make([]byte, 2)
	if _, err := r.Read(got); err != nil || string(got) != "hi" {
		t.Fatalf("passed descriptor: read %q, %v", got, err)
	}
	typ, body, fd, err = b.Recv()
	if err != nil || typ != Cancel || string(body) != "abc" || fd != -1 {
		t.Fatalf("third frame: %q %q fd %d err %v", typ, body, fd, err)
	}
	_ = a.Close()
	if _, _, _, err := b.Recv(); err == nil {
		t.Fatal("Recv after the other side closed: no error")
	}
}

// TestHeaderOverTheLimitIsRefused guards MaxBody.
func TestHeaderOverTheLimitIsRefused(t *testing.T) {
	if _, _, err := ParseHeader([]byte{'S', 0xff, 0xff, 0xff, 0xff}); err == nil {
		t.Fatal("a 4 GB frame was accepted")
	}
	if typ, n, err := ParseHeader([]byte{'S', 0, 0, 1, 0}); err != nil || typ != 'S' || n != 256 {
		t.Fatalf("ParseHeader: %q %d %v", typ, n, err)
	}
}

func FuzzParseHeader(f *testing.F) {
	f.Add([]byte{'S', 0, 0, 0, 4})
	f.Add([]byte{'R'})
	f.Fuzz(func(t *testing.T, h []byte) {
		_, n, err := ParseHeader(h)
		if err == nil && (n < 0 || n > MaxBody) {
			t.Fatalf("length %d accepted", n)
		}
	})
}
