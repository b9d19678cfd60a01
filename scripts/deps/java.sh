# Java drivers for the compatibility matrix (sourced by
# scripts/ensure-test-deps.sh): Debian's PostgreSQL JDBC driver (42.5.x),
# HikariCP (2.7.9, with slf4j) and a JDK (17) for the cells in
# test/compat/java/, run with the JDK's single-file source launcher.
java_deps() {
  local pkgs=(libpostgresql-jdbc-java libhikaricp-java libslf4j-java)
  command -v javac >/dev/null 2>&1 || pkgs+=(default-jdk-headless)
  apt_install "${pkgs[@]}" || return 1
  # The versions the matrix was written against (Debian 12's).
  local v
  v=$(dpkg-query -W -f='${Version}' libpostgresql-jdbc-java)
  case "$v" in 42.5.*) ;; *) echo "ensure-test-deps: libpostgresql-jdbc-java is $v, the matrix expects 42.5.x" >&2; return 1 ;; esac
  v=$(dpkg-query -W -f='${Version}' libhikaricp-java)
  case "$v" in 2.7.9*) ;; *) echo "ensure-test-deps: libhikaricp-java is $v, the matrix expects 2.7.9" >&2; return 1 ;; esac
}
java_deps
