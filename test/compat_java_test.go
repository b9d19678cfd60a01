package test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// compatJavaJars are the Debian packages' jars a Java cell runs with
// (scripts/deps/java.sh installs them): the PostgreSQL JDBC driver 42.5.x,
// HikariCP 2.7.9 and slf4j (its no-op binding keeps Hikari quiet).
var compatJavaJars = []string{
	"/usr/share/java/postgresql.jar",
	"/usr/share/java/HikariCP.jar",
	"/usr/share/java/slf4j-api.jar",
	"/usr/share/java/slf4j-nop.jar",
}

// compatJavaCells are the matrix's java cells: the PostgreSQL JDBC driver
// with its defaults (extended protocol, prepareThreshold=5) and with
// preferQueryMode=simple, both run from test/compat/java/Cell.java by the
// JDK's single-file source launcher, one JVM per target.
func compatJavaCells() []compatCell {
	return []compatCell{
		externalCell("jdbc", []string{"prepare_threshold", "batch_insert", "fetch_size", "hikari"}, compatJavaArgv("jdbc")),
		externalCell("jdbc-simple", nil, compatJavaArgv("jdbc-simple")),
	}
}

// compatJavaArgv is the command that runs Cell.java in mode, or fails t
// saying what to install.
func compatJavaArgv(mode string) func(t *testing.T) []string {
	return func(t *testing.T) []string {
		t.Helper()
		java, err := exec.LookPath("java")
		if err != nil {
			t.Fatalf("java is not installed: run scripts/ensure-test-deps.sh (it installs a JDK, libpostgresql-jdbc-java and libhikaricp-java)")
		}
		for _, jar := range compatJavaJars {
			if _, err := os.Stat(jar); err != nil {
				t.Fatalf("%s is missing: run scripts/ensure-test-deps.sh (it installs libpostgresql-jdbc-java, libhikaricp-java and libslf4j-java)", jar)
			}
		}
		src, err := filepath.Abs(filepath.Join("compat", "java", "Cell.java"))
		if err != nil {
			t.Fatal(err)
		}
		return []string{java, "-XX:+UseSerialGC", "-Xmx1g", "-cp", strings.Join(compatJavaJars, ":"), src, mode}
	}
}
