// Package test holds pgsplit's end-to-end tests. They run against a real
// PostgreSQL 15 primary with two streaming replicas (started once for the
// package by internal/pgcluster), with pgsplit started in-process (and, for
// signal handling, as the built binary), and with real clients: pgx and the
// psql binary.
//
// The tests fail, never skip, when the PostgreSQL server binaries are
// missing: run `apt-get install postgresql` (or set PGSPLIT_PG_BINDIR).
//
// When a test fails it prints the tail of the proxy's log; set
// PGSPLIT_TEST_LOGDIR to a folder to get the whole log there as well.
//
// Tests in this package do not run in parallel: several of them count
// upstream backends or goroutines and need the rest of the package to be
// quiet while they do.
package test
