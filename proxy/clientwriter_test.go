package proxy

import (
	"bytes"
	"errors"
	"io"
	"net"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/pgsplit/pgsplit/internal/pgmsg"
)

// pipeWriter is a clientWriter over one end of net.Pipe; the other end's
// bytes are collected until it closes.
func pipeWriter(t *testing.T) (*clientWriter, <-chan []byte) {
	t.Helper()
	a, b := net.Pipe()
	got := make(chan []byte, 1)
	go func() {
		all, _ := io.ReadAll(b)
		got <- all
	}()
	t.Cleanup(func() { _ = a.Close() })
	return newClientWriter(a, a, &writerPool{size: 64}), got
}

// Answers written at once by the session and by pumps never interleave:
// the client reads each whole answer, in some order.
func TestClientWriterKeepsConcurrentAnswersWhole(t *testing.T) {
	c, got := pipeWriter(t)
	var wg sync.WaitGroup
	for i := range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tag := bytes.Repeat([]byte{'a' + byte(i)}, 100)
			if err := c.answer(pgmsg.TxIdle, &pgproto3.CommandComplete{CommandTag: tag}); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	c.fatal(pgmsg.Fatal(pgmsg.CodeAdminShutdown, "bye"))
	out := <-got
	n := 0
	var prev byte
	for typ, body := range pgmsg.Frames(out) {
		switch typ {
		case pgmsg.CommandComplete:
			if prev == pgmsg.CommandComplete || len(body) != 101 || bytes.Count(body, body[:1]) != 100 {
				t.Fatalf("answer %d interleaved with another: %q", n, body)
			}
			n++
		case pgmsg.ReadyForQuery:
			if prev != pgmsg.CommandComplete {
				t.Fatal("ReadyForQuery without its CommandComplete")
			}
		}
		prev = typ
	}
	if n != 20 {
		t.Fatalf("client read %d answers, want 20", n)
	}
}

// After fatal the connection is closed: later writes return net.ErrClosed
// and nothing more reaches the client; a second fatal does nothing.
func TestClientWriterFatalClosesOnce(t *testing.T) {
	c, got := pipeWriter(t)
	if err := c.refuse(pgmsg.Err(pgmsg.CodeTooManyConnections, "busy"), true, pgmsg.TxIdle); err != nil {
		t.Fatal(err)
	}
	c.fatal(pgmsg.Fatal(pgmsg.CodeAdminShutdown, "bye"))
	c.fatal(pgmsg.Fatal(pgmsg.CodeInternalError, "again"))
	select {
	case <-c.goneCh():
	default:
		t.Fatal("goneCh not closed by fatal")
	}
	if err := c.send(pgmsg.AppendReadyForQuery(nil, pgmsg.TxIdle)); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("send after fatal: %v, want net.ErrClosed", err)
	}
	if err := c.answer(pgmsg.TxIdle); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("answer after fatal: %v, want net.ErrClosed", err)
	}
	var types []byte
	for typ := range pgmsg.Frames(<-got) {
		types = append(types, typ)
	}
	if string(types) != "EZE" {
		t.Fatalf("client read %q, want ERROR, ReadyForQuery, FATAL", types)
	}
}

// refuse inside a batch writes the error alone: the batch's Sync gets the
// ReadyForQuery.
func TestClientWriterRefuseInBatchWithholdsReadyForQuery(t *testing.T) {
	c, got := pipeWriter(t)
	if err := c.refuse(pgmsg.Err(pgmsg.CodeTooManyConnections, "busy"), false, pgmsg.TxIdle); err != nil {
		t.Fatal(err)
	}
	if err := c.answer(pgmsg.TxIdle); err != nil {
		t.Fatal(err)
	}
	c.fatal(pgmsg.Fatal(pgmsg.CodeAdminShutdown, "bye"))
	var types []byte
	for typ := range pgmsg.Frames(<-got) {
		types = append(types, typ)
	}
	if string(types) != "EZE" {
		t.Fatalf("client read %q, want ERROR, then the Sync's ReadyForQuery, then FATAL", types)
	}
}
