package nodes

import (
	"fmt"
	"strconv"
	"strings"
)

// ParseLSN reads a WAL position written as PostgreSQL's pg_lsn ("16/B374D848").
func ParseLSN(s string) (uint64, error) {
	hi, lo, ok := strings.Cut(s, "/")
	if !ok {
		return 0, fmt.Errorf("bad WAL position %q", s)
	}
	h, err1 := strconv.ParseUint(hi, 16, 32)
	l, err2 := strconv.ParseUint(lo, 16, 32)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("bad WAL position %q", s)
	}
	return h<<32 | l, nil
}

// FormatLSN writes a WAL position as PostgreSQL's pg_lsn does.
func FormatLSN(l uint64) string { return fmt.Sprintf("%X/%X", l>>32, uint32(l)) }
