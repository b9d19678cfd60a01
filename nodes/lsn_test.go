package nodes

import "testing"

func TestParseLSNReadsPgLSNTextAndRefusesMalformed(t *testing.T) {
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

func TestFormatLSNWritesWhatPostgreSQLWritesAndParsesBack(t *testing.T) {
	for _, tc := range []struct {
		lsn  uint64
		text string
	}{
		{0, "0/0"},
		{0x16_B374D848, "16/B374D848"},
		{0x1_00000000, "1/0"},
		{1<<64 - 1, "FFFFFFFF/FFFFFFFF"},
	} {
		if got := FormatLSN(tc.lsn); got != tc.text {
			t.Errorf("FormatLSN(%x) = %q, want %q", tc.lsn, got, tc.text)
		}
		if back, err := ParseLSN(tc.text); err != nil || back != tc.lsn {
			t.Errorf("ParseLSN(%q) = %x, %v; want %x", tc.text, back, err, tc.lsn)
		}
	}
}
