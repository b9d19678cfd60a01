//go:build unix

package pool

import (
	"errors"
	"io"
	"net"
	"syscall"
)

// socketCheck looks, without blocking, at the socket of a connection that
// sat idle in the pool. Nothing may be waiting on it: a server that ends a
// session (pg_terminate_backend, idle_session_timeout, a restart) first
// sends a FATAL ErrorResponse, then closes. It returns io.EOF for a closed
// socket, errUnexpectedData when bytes are waiting, nil otherwise (also for
// connections that are not plain sockets, which it cannot check).
func socketCheck(nc net.Conn) error {
	sc, ok := nc.(syscall.Conn)
	if !ok {
		return nil
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return err
	}
	var checkErr error
	err = rc.Read(func(fd uintptr) bool {
		var b [1]byte
		// Go's sockets are non-blocking: an empty socket answers EAGAIN.
		n, err := syscall.Read(int(fd), b[:])
		switch {
		case n == 0 && err == nil:
			checkErr = io.EOF
		case n > 0:
			checkErr = errUnexpectedData
		case errors.Is(err, syscall.EAGAIN), errors.Is(err, syscall.EWOULDBLOCK):
		default:
			checkErr = err
		}
		return true // never wait for readiness
	})
	if err != nil {
		return err
	}
	return checkErr
}
