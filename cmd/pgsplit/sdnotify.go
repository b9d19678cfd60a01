package main

import (
	"net"
	"os"
	"strconv"
)

// notifySystemd tells systemd (Type=notify units) that this process serves
// and is the service's main process: at start, and in the new process of
// an upgrade, so that systemd follows it when the old one exits (the unit
// needs NotifyAccess=all). Without NOTIFY_SOCKET it does nothing.
func notifySystemd() error {
	path := os.Getenv("NOTIFY_SOCKET")
	if path == "" {
		return nil
	}
	if path[0] == '@' {
		path = "\x00" + path[1:] // an abstract socket
	}
	c, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		return err
	}
	defer c.Close()
	_, err = c.Write([]byte("READY=1\nMAINPID=" + strconv.Itoa(os.Getpid()) + "\n"))
	return err
}
