package nodes

import (
	"errors"
	"fmt"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"
)

func TestParseLSN(t *testing.T) {
	for in, want := range map[string]uint64{"0/0": 0, "16/B374D848": 0x16_B374D848, "FFFFFFFF/FFFFFFFF": 1<<64 - 1} {
		if got, err := ParseLSN(in); err != nil || got != want {
			t.Errorf("ParseLSN(%q) = %x, %v; want %x", in, got, err, want)
		}
	}
	for _, in := range []string{"", "16", "x/1", "1/", "100000000/0"} {
		if _, err := ParseLSN(in); err == nil {
			t.Errorf("ParseLSN(%q): no error", in)
		}
	}
}

func TestLoginRefused(t *testing.T) {
	for code, want := range map[string]bool{"28P01": true, "28000": true, "3D000": true, "42501": true, "57P03": false, "53300": false} {
		err := fmt.Errorf("connect: %w", &pgconn.PgError{Code: code})
		if got := loginRefused(err); got != want {
			t.Errorf("loginRefused(%s) = %v", code, got)
		}
	}
	if loginRefused(errors.New("dial tcp: connection refused")) {
		t.Error("a network error is not a refused login")
	}
}
