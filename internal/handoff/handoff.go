// Package handoff is the control link between a running pgsplit and the
// pgsplit that takes over from it during an upgrade: a Unix socket pair
// carrying framed messages, some with a file descriptor attached
// (SCM_RIGHTS).
//
// A frame is a type byte, a 4-byte big-endian body length and the body.
// The header travels in a sendmsg of its own, with the descriptor if the
// frame has one, so that the receiver reads it with a recvmsg of exactly
// HeaderLen bytes and never mixes two frames' descriptors; the body
// follows in plain writes.
package handoff

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"syscall"
)

// Frame types.
const (
	// Ready (new → old): the new process listens and serves; the old one
	// may stop accepting and hand its clients over.
	Ready byte = 'R'
	// Keys (old → new): SCRAM ClientKeys learnt from logins, for
	// pass-through to the servers.
	Keys byte = 'K'
	// Session (old → new, with the client's socket): one idle client and
	// what serving it needs.
	Session byte = 'S'
	// Cancel (new → old): a CancelRequest with a key the new process does
	// not know, for a client the old process still serves.
	Cancel byte = 'C'
	// End (old → new): every client moved or left; the body lists the
	// databases the old process registered writes in (JSON).
	End byte = 'E'
)

// HeaderLen is the size of a frame header.
const HeaderLen = 5

// MaxBody bounds a frame's body: a session's state with its prepared
// statements stays far below it.
const MaxBody = 256 << 20

// ParseHeader returns a header's type and body length, refusing a length
// over MaxBody.
func ParseHeader(h []byte) (typ byte, n int, err error) {
	if len(h) != HeaderLen {
		return 0, 0, fmt.Errorf("handoff: header of %d bytes, want %d", len(h), HeaderLen)
	}
	l := binary.BigEndian.Uint32(h[1:])
	if l > MaxBody {
		return h[0], 0, fmt.Errorf("handoff: frame %q of %d bytes is over the limit of %d", h[0], l, MaxBody)
	}
	return h[0], int(l), nil
}

// Link is one end of the control socket. Send may be called from several
// goroutines; Recv from one at a time.
type Link struct {
	c  *net.UnixConn
	mu sync.Mutex // one frame at a time on the wire
}

// Pair returns a connected socket pair: the Link for this process and the
// file to give the other process (which opens it with FromFile).
func Pair() (*Link, *os.File, error) {
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("handoff: socketpair: %w", err)
	}
	mine := os.NewFile(uintptr(fds[0]), "pgsplit-handoff")
	theirs := os.NewFile(uintptr(fds[1]), "pgsplit-handoff")
	l, err := FromFile(mine)
	if err != nil {
		_ = theirs.Close()
		return nil, nil, err
	}
	return l, theirs, nil
}

// FromFile makes a Link of an inherited socket; f is closed (the Link
// holds a duplicate).
func FromFile(f *os.File) (*Link, error) {
	defer f.Close()
	c, err := net.FileConn(f)
	if err != nil {
		return nil, fmt.Errorf("handoff: control socket: %w", err)
	}
	uc, ok := c.(*net.UnixConn)
	if !ok {
		_ = c.Close()
		return nil, errors.New("handoff: the control descriptor is not a Unix socket")
	}
	return &Link{c: uc}, nil
}

// Close closes the link; the other side's Recv then fails with io.EOF.
func (l *Link) Close() error { return l.c.Close() }

// Send writes one frame; fd, if not negative, travels with it (the
// caller keeps its own descriptor and may close it once Send returns).
func (l *Link) Send(typ byte, body []byte, fd int) error {
	if len(body) > MaxBody {
		return fmt.Errorf("handoff: frame %q of %d bytes is over the limit of %d", typ, len(body), MaxBody)
	}
	var h [HeaderLen]byte
	h[0] = typ
	binary.BigEndian.PutUint32(h[1:], uint32(len(body)))
	var oob []byte
	if fd >= 0 {
		oob = syscall.UnixRights(fd)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	n, _, err := l.c.WriteMsgUnix(h[:], oob, nil)
	if err == nil && n != HeaderLen {
		err = io.ErrShortWrite
	}
	if err == nil && len(body) > 0 {
		_, err = l.c.Write(body)
	}
	if err != nil {
		return fmt.Errorf("handoff: send %q: %w", typ, err)
	}
	return nil
}

// Recv reads the next frame. fd is the descriptor that came with it, or
// -1; the caller owns it.
func (l *Link) Recv() (typ byte, body []byte, fd int, err error) {
	var h [HeaderLen]byte
	oob := make([]byte, syscall.CmsgSpace(4*4))
	n, oobn, _, _, err := l.c.ReadMsgUnix(h[:], oob)
	fd = -1
	if oobn > 0 {
		fds, perr := rights(oob[:oobn])
		if perr != nil && err == nil {
			err = perr
		}
		for i, f := range fds {
			if i == 0 {
				fd = f
			} else {
				_ = syscall.Close(f) // one descriptor per frame: close extras
			}
		}
	}
	if err == nil && n > 0 && n < HeaderLen {
		_, err = io.ReadFull(l.c, h[n:])
	} else if err == nil && n == 0 {
		err = io.EOF
	}
	if err == nil {
		typ, n, err = ParseHeader(h[:])
		if err == nil {
			body = make([]byte, n)
			_, err = io.ReadFull(l.c, body)
		}
	}
	if err != nil {
		if fd >= 0 {
			_ = syscall.Close(fd)
		}
		return 0, nil, -1, err
	}
	return typ, body, fd, nil
}

// rights returns the descriptors in a control message.
func rights(oob []byte) ([]int, error) {
	msgs, err := syscall.ParseSocketControlMessage(oob)
	if err != nil {
		return nil, fmt.Errorf("handoff: control message: %w", err)
	}
	var fds []int
	for _, m := range msgs {
		f, err := syscall.ParseUnixRights(&m)
		if err != nil {
			continue
		}
		fds = append(fds, f...)
	}
	return fds, nil
}
