//go:build !unix

package pool

import "net"

// socketCheck cannot look at a socket without blocking on this platform;
// pool_pre_ping still checks connections that sat idle for PingAfter.
func socketCheck(net.Conn) error { return nil }
