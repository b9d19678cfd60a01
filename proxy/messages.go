package proxy

import (
	"bufio"

	"github.com/jackc/pgx/v5/pgproto3"
)

// writeMsgs encodes msgs into w (not flushed).
func writeMsgs(w *bufio.Writer, msgs ...pgproto3.BackendMessage) error {
	var buf []byte
	for _, m := range msgs {
		var err error
		buf, err = m.Encode(buf[:0])
		if err != nil {
			return err
		}
		if _, err := w.Write(buf); err != nil {
			return err
		}
	}
	return nil
}
