// Package version says which pgsplit this is: its version, the commit it
// was built from, and the Go toolchain and library versions whose
// behaviour shows on the wire (the PostgreSQL parser, pgx). It reads the
// build information the Go toolchain embeds; nothing is set by hand.
package version

import (
	"fmt"
	"runtime"
	"runtime/debug"
)

// Info is one build's identity.
type Info struct {
	Version string // the module version; "(devel)" for a build from a checkout
	Commit  string // the VCS revision (12 characters, "+dirty" if modified); "unknown" without one
	Go      string // the Go toolchain
	PgQuery string // github.com/pganalyze/pg_query_go/v6
	Pgx     string // github.com/jackc/pgx/v5
}

// Modules whose versions Info names.
const (
	pgQueryModule = "github.com/pganalyze/pg_query_go/v6"
	pgxModule     = "github.com/jackc/pgx/v5"
)

// Get returns the running binary's Info.
func Get() Info {
	i := Info{Version: "(devel)", Commit: "unknown", Go: runtime.Version(), PgQuery: "unknown", Pgx: "unknown"}
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return i
	}
	return fromBuildInfo(bi, i)
}

func fromBuildInfo(bi *debug.BuildInfo, i Info) Info {
	if bi.Main.Version != "" {
		i.Version = bi.Main.Version
	}
	if bi.GoVersion != "" {
		i.Go = bi.GoVersion
	}
	var rev, dirty string
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			if s.Value == "true" {
				dirty = "+dirty"
			}
		}
	}
	if rev != "" {
		i.Commit = rev[:min(12, len(rev))] + dirty
	}
	for _, m := range bi.Deps {
		v := m.Version
		if m.Replace != nil {
			v = m.Replace.Version
		}
		switch m.Path {
		case pgQueryModule:
			i.PgQuery = v
		case pgxModule:
			i.Pgx = v
		}
	}
	return i
}

// String is the one line `pgsplit version` prints and SHOW VERSION returns.
func (i Info) String() string {
	return fmt.Sprintf("pgsplit %s (commit %s, %s, pg_query_go %s, pgx %s)", i.Version, i.Commit, i.Go, i.PgQuery, i.Pgx)
}
