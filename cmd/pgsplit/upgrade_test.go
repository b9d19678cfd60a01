package main

import (
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"testing"
)

func TestWithoutTakeoverDropsOnlyTheInheritedDescriptorsFlag(t *testing.T) {
	for _, c := range []struct{ in, want []string }{
		{[]string{"serve", "--config", "a.yaml"}, []string{"serve", "--config", "a.yaml"}},
		{[]string{"serve", "--config", "a.yaml", "--takeover=3,4,5"}, []string{"serve", "--config", "a.yaml"}},
		{[]string{"serve", "-takeover", "3,4", "--config", "a.yaml"}, []string{"serve", "--config", "a.yaml"}},
		{[]string{"serve", "--takeoverx=1"}, []string{"serve", "--takeoverx=1"}},
	} {
		if got := withoutTakeover(c.in); !slices.Equal(got, c.want) {
			t.Errorf("withoutTakeover(%q) = %q, want %q", c.in, got, c.want)
		}
	}
}

func TestUpgradeRefusesAChangedListenAddress(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	port := ln.Addr().(*net.TCPAddr).Port
	for addr, ok := range map[string]bool{
		ln.Addr().String():                  true,
		"127.0.0.1:0":                       true, // any port (tests)
		"0.0.0.0:" + strconv.Itoa(port):     true,
		"127.0.0.1:" + strconv.Itoa(port+1): false,
		"127.0.0.2:" + strconv.Itoa(port):   false,
	} {
		if err := sameAddr(ln, addr); (err == nil) != ok {
			t.Errorf("sameAddr(%s, %q): %v", ln.Addr(), addr, err)
		}
	}
}

func TestInheritRefusesBadDescriptorLists(t *testing.T) {
	for _, spec := range []string{"", "3", "3,x", "1,2", "3,4,5,6"} {
		if _, err := inherit(spec); err == nil {
			t.Errorf("inherit(%q) accepted", spec)
		}
	}
}

func TestNotifySystemdSendsReadyAndMainPID(t *testing.T) {
	path := filepath.Join(t.TempDir(), "notify")
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	t.Setenv("NOTIFY_SOCKET", path)
	if err := notifySystemd(); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 256)
	n, err := c.Read(buf)
	if err != nil {
		t.Fatal(err)
	}
	want := "READY=1\nMAINPID=" + strconv.Itoa(os.Getpid()) + "\n"
	if string(buf[:n]) != want {
		t.Fatalf("notify message %q, want %q", buf[:n], want)
	}
}
