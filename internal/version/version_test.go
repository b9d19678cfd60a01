package version

import (
	"runtime/debug"
	"strings"
	"testing"
)

// The build information a binary carries becomes the version line: the
// module version, the commit (short, marked when modified), Go, and the
// two libraries' versions (a replaced module's replacement).
func TestInfoFromBuildInfo(t *testing.T) {
	bi := &debug.BuildInfo{
		GoVersion: "go1.26.8",
		Main:      debug.Module{Path: "github.com/pgsplit/pgsplit", Version: "v0.3.0"},
		Deps: []*debug.Module{
			{Path: pgQueryModule, Version: "v6.1.0"},
			{Path: pgxModule, Version: "v5.7.1", Replace: &debug.Module{Path: "../pgx", Version: "v5.7.2-fork"}},
			{Path: "go.uber.org/zap", Version: "v1.27.0"},
		},
		Settings: []debug.BuildSetting{{Key: "vcs.revision", Value: "0123456789abcdef0123"}, {Key: "vcs.modified", Value: "true"}},
	}
	got := fromBuildInfo(bi, Info{Version: "(devel)", Commit: "unknown", PgQuery: "unknown", Pgx: "unknown"}).String()
	want := "pgsplit v0.3.0 (commit 0123456789ab+dirty, go1.26.8, pg_query_go v6.1.0, pgx v5.7.2-fork)"
	if got != want {
		t.Fatalf("got  %q\nwant %q", got, want)
	}
}

// The test binary itself depends on neither library, so Get says unknown
// for them but knows Go.
func TestGetNamesTheGoToolchain(t *testing.T) {
	if i := Get(); !strings.HasPrefix(i.Go, "go1.") || i.Version == "" {
		t.Fatalf("Get() = %+v", i)
	}
}
