#!/usr/bin/env bash
# Fetches another Debian release's PgBouncer, with the libraries it links,
# into a directory of its own, without installing anything on this machine:
# a second pooler version for the tests (pgtest.NewPgBouncer runs the
# binary PGFALLBACK_TEST_PGBOUNCER names). Debian 12 ships PgBouncer 1.18,
# which keeps no prepared statements; Debian 13 ships 1.24, which keeps
# them by default (max_prepared_statements).
#
#   SUITE=trixie integration/pgtest/pgbouncer/fetch.sh /opt/pgbouncer-trixie
#   PGFALLBACK_TEST_PGBOUNCER=/opt/pgbouncer-trixie/pgbouncer go test -run 'PgBouncer|Pooler' ./pgstore/
#
# The binary runs through that release's own dynamic loader and libraries
# (its C library is newer than this machine's), from a wrapper script
# named pgbouncer. Needs apt-get and dpkg-deb (any Debian or Ubuntu), and
# the suite's signing key in the system's keyring (Debian 12's has 13's).
set -euo pipefail
suite=${SUITE:-trixie}
out=${1:?usage: $0 <directory>}
mirror=${MIRROR:-http://deb.debian.org/debian}
packages=(pgbouncer libc6 libgcc-s1 libcares2 libevent-2.1-7t64 libssl3t64 libsystemd0 libpam0g libcap2
	libaudit1 libcap-ng0 libzstd1)

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/lists/partial" "$work/archives/partial" "$work/etc/preferences.d"
touch "$work/status"
echo "deb $mirror $suite main" >"$work/sources.list"
apt_opts=(-o "Dir::Etc::sourcelist=$work/sources.list" -o "Dir::Etc::sourceparts=-"
	-o "Dir::Etc::preferencesparts=$work/etc/preferences.d"
	-o "Dir::State::lists=$work/lists" -o "Dir::State::status=$work/status"
	-o "Dir::Cache::archives=$work/archives" -o "Dir::Cache=$work" -o "APT::Architecture=amd64"
	-o "Debug::NoLocking=1" -o "APT::Sandbox::User=root")
apt-get "${apt_opts[@]}" -qq update
(cd "$work/archives" && apt-get "${apt_opts[@]}" -qq download "${packages[@]}")

rm -rf "$out/root" "$out/pgbouncer" # what an earlier run put there, nothing else
mkdir -p "$out/root"
for deb in "$work"/archives/*.deb; do
	dpkg-deb -x "$deb" "$out/root"
done
root=$(cd "$out/root" && pwd)
libs="$root/usr/lib/x86_64-linux-gnu:$root/lib/x86_64-linux-gnu"
cat >"$out/pgbouncer" <<WRAPPER
#!/bin/sh
exec "$root/usr/lib64/ld-linux-x86-64.so.2" --library-path "$libs" "$root/usr/sbin/pgbouncer" "\$@"
WRAPPER
[ -e "$root/usr/lib64/ld-linux-x86-64.so.2" ] || sed -i "s#$root/usr/lib64/#$root/lib64/#" "$out/pgbouncer"
chmod 755 "$out/pgbouncer"
chmod -R a+rX "$out"
"$out/pgbouncer" --version | head -1
