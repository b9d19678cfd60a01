#!/usr/bin/env bash
# build-deb.sh OUTDIR: builds the Debian package of this checkout into
# OUTDIR (bin/ by default) and prints its path. Needs go, git and dpkg-deb.
#
# The package holds /usr/bin/pgsplit, /etc/pgsplit/config.yaml (a conffile:
# upgrades keep your edits), the hardened unit
# /lib/systemd/system/pgsplit.service and the README; installing it creates
# the pgsplit system user and enables (does not start) the service.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-bin}
for tool in go dpkg-deb git; do
	command -v "$tool" >/dev/null || { echo "build-deb: $tool is missing (Debian: apt-get install dpkg git; Go from go.dev)" >&2; exit 1; }
done
arch=$(dpkg --print-architecture)
# A Debian version must start with a digit: 0.0~gitYYYYMMDD.COMMIT, ordered by
# commit date (with +dirty for uncommitted changes).
commit=$(git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)
date=$(git log -1 --format=%cd --date=format:%Y%m%d%H%M%S 2>/dev/null || date -u +%Y%m%d%H%M%S)
dirty=""
if [ -n "$(git status --porcelain 2>/dev/null)" ]; then dirty="+dirty"; fi
version="0.0~git${date}.${commit}${dirty}"

stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
root="$stage/pgsplit"
install -d "$root/DEBIAN" "$root/usr/bin" "$root/etc/pgsplit" "$root/lib/systemd/system" "$root/usr/share/doc/pgsplit"
go build -buildvcs=auto -trimpath -o "$stage/pgsplit.bin" ./cmd/pgsplit
install -m 0755 "$stage/pgsplit.bin" "$root/usr/bin/pgsplit" # whatever the builder's umask
install -m 0644 config.yaml "$root/etc/pgsplit/config.yaml"
install -m 0644 packaging/deb/pgsplit.service "$root/lib/systemd/system/pgsplit.service"
install -m 0644 README.md "$root/usr/share/doc/pgsplit/README.md"
install -m 0755 packaging/deb/postinst packaging/deb/prerm packaging/deb/postrm "$root/DEBIAN/"
echo /etc/pgsplit/config.yaml > "$root/DEBIAN/conffiles"
size=$(du -sk "$root" | cut -f1)
cat > "$root/DEBIAN/control" <<CONTROL
Package: pgsplit
Version: $version
Architecture: $arch
Maintainer: pgsplit developers <pgsplit@localhost>
Installed-Size: $size
Depends: libc6, adduser
Section: database
Priority: optional
Homepage: https://github.com/pgsplit/pgsplit
Description: PostgreSQL proxy: pooling, read/write splitting, query timing
 pgsplit speaks the PostgreSQL wire protocol. It pools server connections,
 sends reads to streaming replicas and writes to the primary, and logs every
 statement's timing, flagging the slow ones.
CONTROL
mkdir -p "$out"
deb="$out/pgsplit_${version}_${arch}.deb"
dpkg-deb --root-owner-group --build -Zxz "$root" "$deb" >/dev/null
echo "$deb"
