package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/pgsplit/pgsplit/internal/handoff"
	"github.com/pgsplit/pgsplit/proxy"
)

// The zero-downtime upgrade (SIGUSR2): the running process starts its
// binary again (the file at the path it was started from, which now holds
// the new version) with the same arguments and --takeover, handing it the
// listening sockets and one end of a control socket as inherited
// descriptors. The new process loads the configuration, listens on the
// inherited sockets and says Ready; the old one then stops accepting,
// moves its clients over (see proxy/handoff.go) and exits when it holds
// nobody. If the new process fails to start, the old one goes on serving.

// takeoverFlag names the descriptors a new process inherits:
// --takeover=LISTEN,CONTROL[,METRICS].
const takeoverFlag = "takeover"

// upgradeReadyTimeout bounds the new process's start (configuration,
// finding the primary, the limits check).
const upgradeReadyTimeout = 60 * time.Second

// startUpgrade starts the new process and, once it serves, hands this
// one's clients to it; the channel receives true when none is left here
// (exit), false if the new process failed after it took over (this one
// serves again; see Server.HandOver).
// If ctx ends first (a stop signal), it stops the new process and returns
// an error.
func startUpgrade(ctx context.Context, srv *proxy.Server, self string, args []string, log *zap.Logger) (<-chan bool, error) {
	if self == "" {
		return nil, errors.New("the path of pgsplit's binary is not known")
	}
	lnF, mF, err := srv.ListenerFiles()
	if err != nil {
		return nil, err
	}
	link, theirs, err := handoff.Pair()
	if err != nil {
		_ = lnF.Close()
		if mF != nil {
			_ = mF.Close()
		}
		return nil, err
	}
	files := []*os.File{lnF, theirs} // descriptors 3 and 4 in the new process
	fds := "3,4"
	if mF != nil {
		files = append(files, mF)
		fds += ",5"
	}
	cmd := exec.Command(self, append(withoutTakeover(args), "--"+takeoverFlag+"="+fds)...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = nil, os.Stdout, os.Stderr
	cmd.ExtraFiles = files
	err = cmd.Start()
	for _, f := range files {
		_ = f.Close() // the new process has its own copies
	}
	if err != nil {
		_ = link.Close()
		return nil, fmt.Errorf("start %s: %w", self, err)
	}
	log.Info("upgrade: new process started", zap.String("binary", self), zap.Int("pid", cmd.Process.Pid))
	exited := make(chan error, 1)
	gone := make(chan struct{})
	go func() { // reaps it if it ends while this process runs
		err := cmd.Wait()
		if err != nil {
			log.Warn("upgrade: the new process exited", zap.Int("pid", cmd.Process.Pid), zap.Error(err))
		}
		exited <- err
		close(gone)
	}()
	ready := make(chan error, 1)
	go func() {
		typ, _, fd, err := link.Recv()
		if fd >= 0 {
			_ = os.NewFile(uintptr(fd), "").Close()
		}
		if err == nil && typ != handoff.Ready {
			err = fmt.Errorf("unexpected frame %q", typ)
		}
		ready <- err
	}()
	t := time.NewTimer(upgradeReadyTimeout)
	defer t.Stop()
	select {
	case err = <-ready:
		if err != nil {
			// The link closed: most likely the process is exiting.
			select {
			case werr := <-exited:
				err = fmt.Errorf("the new process exited before it served: %v (its log says why)", werr)
			case <-time.After(2 * time.Second):
				err = fmt.Errorf("the new process closed the control link before it served: %w; stopped it", err)
				_ = cmd.Process.Kill() // by PID: the process this one started
			}
		}
	case err = <-exited:
		err = fmt.Errorf("the new process exited before it served: %v (its log says why)", err)
	case <-t.C:
		err = fmt.Errorf("the new process did not serve within %s; stopped it", upgradeReadyTimeout)
		_ = cmd.Process.Kill() // by PID: the process this one started
	case <-ctx.Done():
		select {
		case err = <-ready: // it serves already: it goes on, this one drains
		default:
			err = errors.New("this process is stopping: stopped the new process, which did not serve yet")
			_ = cmd.Process.Kill() // by PID: the process this one started
		}
	}
	if err != nil {
		_ = link.Close()
		return nil, err
	}
	return srv.HandOver(link, gone), nil
}

// parentGone closes when the process that started this one has exited
// (this process is then the child of another): the old process of the
// upgrade that started this one.
func parentGone() <-chan struct{} {
	ppid := os.Getppid()
	gone := make(chan struct{})
	go func() {
		for os.Getppid() == ppid {
			time.Sleep(100 * time.Millisecond)
		}
		close(gone)
	}()
	return gone
}

// upgradeStart is how startUpgrade went.
type upgradeStart struct {
	done <-chan bool
	err  error
}

// withoutTakeover is args without a --takeover flag (this process's own,
// if it came from an upgrade itself).
func withoutTakeover(args []string) []string {
	out := make([]string, 0, len(args))
	for i := 0; i < len(args); i++ {
		a := args[i]
		name := strings.TrimLeft(a, "-")
		if len(name) < len(a) && (name == takeoverFlag || strings.HasPrefix(name, takeoverFlag+"=")) {
			if name == takeoverFlag {
				i++ // its value is the next argument
			}
			continue
		}
		out = append(out, a)
	}
	return out
}

// inherited is what a new process of an upgrade inherits.
type inherited struct {
	client, metrics net.Listener
	link            *handoff.Link
	parentGone      <-chan struct{} // the old process has exited
}

// inherit opens the descriptors --takeover names (LISTEN,CONTROL[,METRICS]).
func inherit(spec string) (*inherited, error) {
	parts := strings.Split(spec, ",")
	if len(parts) < 2 || len(parts) > 3 {
		return nil, fmt.Errorf("--%s %q: want LISTEN,CONTROL[,METRICS] descriptor numbers", takeoverFlag, spec)
	}
	var fds []int
	for _, p := range parts {
		fd, err := strconv.Atoi(p)
		if err != nil || fd < 3 {
			return nil, fmt.Errorf("--%s %q: %q is not an inherited descriptor number (3 or more)", takeoverFlag, spec, p)
		}
		fds = append(fds, fd)
	}
	listener := func(fd int, what string) (net.Listener, error) {
		f := os.NewFile(uintptr(fd), what)
		defer f.Close()
		ln, err := net.FileListener(f)
		if err != nil {
			return nil, fmt.Errorf("--%s: descriptor %d (%s): %w", takeoverFlag, fd, what, err)
		}
		return ln, nil
	}
	in := &inherited{parentGone: parentGone()}
	var err error
	if in.client, err = listener(fds[0], "listen"); err != nil {
		return nil, err
	}
	if in.link, err = handoff.FromFile(os.NewFile(uintptr(fds[1]), "control")); err != nil {
		_ = in.client.Close()
		return nil, err
	}
	if len(fds) == 3 {
		if in.metrics, err = listener(fds[2], "metrics"); err != nil {
			_ = in.client.Close()
			_ = in.link.Close()
			return nil, err
		}
	}
	return in, nil
}

// sameAddr reports whether the inherited listener ln serves the
// configured address want (host:port): an upgrade cannot move pgsplit to
// another address.
func sameAddr(ln net.Listener, want string) error {
	got, ok := ln.Addr().(*net.TCPAddr)
	if !ok {
		return fmt.Errorf("inherited listener %s is not TCP", ln.Addr())
	}
	w, err := net.ResolveTCPAddr("tcp", want)
	if err != nil {
		return fmt.Errorf("listen %q: %w", want, err)
	}
	if w.Port != 0 && w.Port != got.Port || (w.IP != nil && !w.IP.IsUnspecified() && !w.IP.Equal(got.IP)) {
		return fmt.Errorf("the configuration says listen %s but the running pgsplit listens on %s: an upgrade keeps the address; restart pgsplit to change it", want, got)
	}
	return nil
}
