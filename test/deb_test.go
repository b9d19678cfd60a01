package test

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pgsplit/pgsplit/internal/pgcluster"
)

// TestDebianPackageInstallsAndServesAsItsSystemUser builds the package with
// scripts/build-deb.sh (what `make deb` runs), installs it with dpkg on
// this machine, and checks what it promises: the pgsplit system user with
// no login, /etc/pgsplit/config.yaml readable by that user only (and kept
// as a conffile), a systemd unit that `systemd-analyze verify` passes with
// nothing to say and whose offline security exposure is low. Then it starts
// pgsplit the way the unit does (its ExecStart, as its User and Group: this
// machine has no systemd running) against the test cluster, queries through
// it, stops it with the unit's KillSignal, and purges the package: the user,
// the config and the binary are gone.
func TestDebianPackageInstallsAndServesAsItsSystemUser(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("installing the Debian package needs root (dpkg -i); run the tests as root, as CI does")
	}
	for _, tool := range []string{"dpkg", "dpkg-deb", "systemd-analyze", "git"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s is needed for the package test: apt-get install dpkg systemd git", tool)
		}
	}
	ctx := testCtx(t, 5*time.Minute)
	run := func(name string, args ...string) string {
		t.Helper()
		out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
		if err != nil {
			t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	// A development build left installed by an interrupted run is ours to
	// remove; any other pgsplit package is the machine owner's.
	if out, err := exec.Command("dpkg-query", "-W", "-f", "${Status} ${Version}", "pgsplit").Output(); err == nil && strings.Contains(string(out), "installed") {
		if !strings.Contains(string(out), "~git") {
			t.Fatalf("a pgsplit package (%s) is installed on this machine: the test installs and purges its own, so remove it first (dpkg --purge pgsplit)", out)
		}
		run("dpkg", "--purge", "pgsplit")
	}

	_, file, _, _ := runtime.Caller(0)
	root := filepath.Dir(filepath.Dir(file))
	out := strings.TrimSpace(run(filepath.Join(root, "scripts", "build-deb.sh"), t.TempDir()))
	deb := out[strings.LastIndex(out, "\n")+1:]
	if !regexp.MustCompile(`/pgsplit_0\.0~git\d{14}\.[0-9a-f]{12}(\+dirty)?_[a-z0-9]+\.deb$`).MatchString(deb) {
		t.Fatalf("build-deb.sh printed %q: want the package's path", out)
	}
	contents := run("dpkg-deb", "--contents", deb)
	for _, f := range []string{"./usr/bin/pgsplit", "./etc/pgsplit/config.yaml", "./lib/systemd/system/pgsplit.service", "./usr/share/doc/pgsplit/README.md"} {
		if !strings.Contains(contents, " "+f+"\n") {
			t.Errorf("the package does not hold %s:\n%s", f, contents)
		}
	}
	if conf := run("dpkg-deb", "--info", deb, "conffiles"); strings.TrimSpace(conf) != "/etc/pgsplit/config.yaml" {
		t.Errorf("conffiles = %q: want /etc/pgsplit/config.yaml (an upgrade keeps the DBA's edits)", conf)
	}

	run("dpkg", "-i", deb)
	purged := false
	t.Cleanup(func() {
		if !purged {
			_ = exec.Command("dpkg", "--purge", "pgsplit").Run()
		}
	})
	u, err := user.Lookup("pgsplit")
	if err != nil {
		t.Fatalf("after dpkg -i: no pgsplit user: %v", err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	if uid == 0 || uid >= 1000 {
		t.Errorf("pgsplit's uid %d: want a system user (1–999)", uid)
	}
	if pw := run("getent", "passwd", "pgsplit"); !strings.HasSuffix(strings.TrimSpace(pw), ":/usr/sbin/nologin") {
		t.Errorf("pgsplit's passwd entry %q: want the shell /usr/sbin/nologin", pw)
	}
	if g, err := user.LookupGroupId(u.Gid); err != nil || g.Name != "pgsplit" {
		t.Errorf("pgsplit's group: %v, %v", g, err)
	}
	const confPath = "/etc/pgsplit/config.yaml"
	st, err := os.Stat(confPath)
	if err != nil {
		t.Fatal(err)
	}
	if sys := st.Sys().(*syscall.Stat_t); st.Mode().Perm() != 0o640 || sys.Uid != 0 || int(sys.Gid) != gid {
		t.Errorf("%s: mode %v, owner %d:%d; want 0640 root:pgsplit (it may hold passwords)", confPath, st.Mode().Perm(), sys.Uid, sys.Gid)
	}
	if v := run("/usr/bin/pgsplit", "version"); !strings.HasPrefix(v, "pgsplit ") {
		t.Errorf("/usr/bin/pgsplit version printed %q", v)
	}

	const unit = "/lib/systemd/system/pgsplit.service"
	// verify loads the units ours refers to, and warns about theirs too
	// (another package's obsolete setting): only what it says of ours counts.
	for _, line := range strings.Split(strings.TrimSpace(run("systemd-analyze", "verify", unit)), "\n") {
		if strings.Contains(line, "pgsplit") {
			t.Errorf("systemd-analyze verify %s is not clean: %s", unit, line)
		} else if line != "" {
			t.Logf("systemd-analyze verify, about another unit: %s", line)
		}
	}
	sec := run("systemd-analyze", "security", "--offline=yes", unit)
	m := regexp.MustCompile(`Overall exposure level for pgsplit\.service: ([0-9.]+)`).FindStringSubmatch(sec)
	if m == nil {
		t.Fatalf("systemd-analyze security printed no exposure level:\n%s", sec)
	}
	if lvl, _ := strconv.ParseFloat(m[1], 64); lvl > 2.0 {
		t.Errorf("the unit's exposure level is %s: want at most 2.0 (hardened)\n%s", m[1], sec)
	}
	t.Logf("systemd-analyze security --offline=yes: exposure %s", m[1])
	keys := unitKeys(t, unit)
	if keys["User"] != "pgsplit" || keys["Group"] != "pgsplit" || keys["KillSignal"] != "SIGTERM" {
		t.Errorf("unit User=%q Group=%q KillSignal=%q: want pgsplit, pgsplit, SIGTERM", keys["User"], keys["Group"], keys["KillSignal"])
	}

	// Serve as the unit would, with a config for the test cluster in the
	// package's place (root:pgsplit 0640, as installed).
	port, err := pgcluster.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	conf := fmt.Sprintf(`listen: "127.0.0.1:%d"
servers:
  - { host: %s, port: %d, role: primary }
  - { host: %s, port: %d, role: replica, weight: 1 }
auth:
  method: scram-sha-256
  users:
    - { name: %s, password: %s }
pool:
  mode: transaction
  pool_size: 5
  max_overflow: 5
`, port, cluster.Primary.Host, cluster.Primary.Port, cluster.Replicas[0].Host, cluster.Replicas[0].Port, appUser, appPassword)
	if err := os.WriteFile(confPath, []byte(conf), 0o640); err != nil {
		t.Fatal(err)
	}
	argv := strings.Fields(keys["ExecStart"])
	if len(argv) == 0 || argv[0] != "/usr/bin/pgsplit" {
		t.Fatalf("ExecStart=%q: want /usr/bin/pgsplit …", keys["ExecStart"])
	}
	// As systemd starts it: the unit's User and Group, no other groups.
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), Groups: []uint32{}}}
	var logs strings.Builder
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	stopped := false
	defer func() {
		if !stopped {
			_ = cmd.Process.Kill()
			<-exited
		}
	}()
	waitFor(t, 20*time.Second, "the packaged pgsplit listening", func() (bool, string) {
		c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), time.Second)
		if err == nil {
			c.Close()
			return true, ""
		}
		select {
		case err := <-exited:
			t.Fatalf("the packaged pgsplit exited: %v\n%s", err, logs.String())
		default:
		}
		return false, err.Error()
	})
	c := connect(t, fmt.Sprintf("host=127.0.0.1 port=%d user=%s password=%s dbname=%s sslmode=disable", port, appUser, appPassword, appDatabase))
	var who string
	if err := c.QueryRow(ctx, "SELECT current_user || ' on ' || (SELECT CASE WHEN pg_is_in_recovery() THEN 'a replica' ELSE 'the primary' END)").Scan(&who); err != nil {
		t.Fatalf("query through the packaged pgsplit: %v\n%s", err, logs.String())
	}
	t.Logf("through the packaged pgsplit (running as uid %d): %s", uid, who)
	closeConn(c)
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		stopped = true
		if err != nil {
			t.Errorf("the packaged pgsplit did not exit cleanly on SIGTERM: %v\n%s", err, logs.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("the packaged pgsplit did not stop within 30 s of SIGTERM\n%s", logs.String())
	}

	run("dpkg", "--purge", "pgsplit")
	purged = true
	if _, err := user.Lookup("pgsplit"); err == nil {
		t.Error("after dpkg --purge the pgsplit user is still there")
	}
	for _, p := range []string{"/usr/bin/pgsplit", confPath, unit} {
		if _, err := os.Stat(p); err == nil {
			t.Errorf("after dpkg --purge %s is still there", p)
		}
	}
}

// unitKeys reads a systemd unit's Key=Value lines (the last of each key).
func unitKeys(t *testing.T, path string) map[string]string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	keys := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if k, v, ok := strings.Cut(line, "="); ok && !strings.HasPrefix(line, "#") {
			keys[k] = v
		}
	}
	return keys
}
