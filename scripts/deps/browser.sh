# Headless Chromium for the status page test (test/status_test.go), sourced
# by scripts/ensure-test-deps.sh: Debian's chromium, run with --headless.
apt_install chromium
