package proxy

import (
	"bytes"
	"strings"
)

// cut splits a NUL-terminated string off the front of b.
func cut(b []byte) (string, []byte, bool) {
	i := bytes.IndexByte(b, 0)
	if i < 0 {
		return "", nil, false
	}
	return string(b[:i]), b[i+1:], true
}

func cstring(b []byte) string {
	s, _, _ := cut(b)
	return s
}

func quoteIdent(s string) string {
	return `"` + strings.ReplaceAll(s, `"`, `""`) + `"`
}
