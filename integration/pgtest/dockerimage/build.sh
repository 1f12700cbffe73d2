#!/usr/bin/env bash
# Builds a PostgreSQL image for pgtest's Docker mode on a Debian machine
# whose Docker engine cannot pull (no registry reachable): the root
# filesystem comes from Debian's packages (debootstrap), the entrypoint is
# docker-entrypoint.sh beside this script (the official image's, as far as
# testcontainers-go's postgres module uses it), and the image is made with
# `docker import`. Then:
#
#   PGFALLBACK_TEST_MODE=docker PGFALLBACK_TEST_IMAGE=pgfallback-local/postgres:15 go test ./...
#
# Needs root, a running Docker engine, and Debian's mirror. Environment:
#   SUITE   the Debian release, which decides PostgreSQL's major version:
#           bullseye 13, bookworm 15 (the default), trixie 17
#   TAG     the image's name (default pgfallback-local/postgres:<major>)
#   ROOTFS  where the root filesystem is built (default /var/tmp/pgtest-rootfs-<suite>);
#           an existing one is reused, FRESH=1 builds it again
#   MIRROR  the Debian mirror (default http://deb.debian.org/debian)
set -Eeuo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
suite="${SUITE:-bookworm}"
case "$suite" in
bullseye) major=13 ;;
bookworm) major=15 ;;
trixie) major=17 ;;
*) echo "build.sh: SUITE=$suite: want bullseye, bookworm or trixie" >&2; exit 1 ;;
esac
tag="${TAG:-pgfallback-local/postgres:$major}"
rootfs="${ROOTFS:-/var/tmp/pgtest-rootfs-$suite}"
mirror="${MIRROR:-http://deb.debian.org/debian}"
export DEBIAN_FRONTEND=noninteractive

[ "$(id -u)" = 0 ] || { echo "build.sh: run as root (debootstrap, chroot)" >&2; exit 1; }
docker info >/dev/null 2>&1 || { echo "build.sh: no Docker engine answers (start dockerd)" >&2; exit 1; }
command -v debootstrap >/dev/null || { apt-get update -qq && apt-get install -y -qq debootstrap; }

if [ "${FRESH:-0}" = 1 ] || [ ! -x "$rootfs/usr/lib/postgresql/$major/bin/postgres" ]; then
	rm -rf "$rootfs"
	debootstrap --variant=minbase --include="postgresql-$major,netcat-openbsd,procps,locales" "$suite" "$rootfs" "$mirror"
fi

# The package's own cluster goes: the entrypoint makes one in $PGDATA.
rm -rf "$rootfs/var/lib/postgresql/$major" "$rootfs/etc/postgresql/$major"
mkdir -p "$rootfs/var/lib/postgresql/data"
chroot "$rootfs" chown postgres:postgres /var/lib/postgresql/data
chmod 700 "$rootfs/var/lib/postgresql/data"

# UTF-8 databases, as in the official image (LANG=en_US.utf8).
if ! chroot "$rootfs" locale -a 2>/dev/null | grep -qi '^en_US\.utf8$'; then
	chroot "$rootfs" localedef -i en_US -c -f UTF-8 -A /usr/share/locale/locale.alias en_US.UTF-8
fi

chroot "$rootfs" apt-get clean
rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin "$rootfs"/usr/share/doc/* \
	"$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/* "$rootfs"/var/log/*.log "$rootfs"/tmp/*
: >"$rootfs/etc/resolv.conf" # Docker mounts its own

install -D -m 0755 "$here/docker-entrypoint.sh" "$rootfs/usr/local/bin/docker-entrypoint.sh"
mkdir -p "$rootfs/docker-entrypoint-initdb.d"

tar --numeric-owner -C "$rootfs" --exclude='./proc/*' --exclude='./sys/*' --exclude='./dev/*' -c . |
	docker import \
		--change 'ENTRYPOINT ["/usr/local/bin/docker-entrypoint.sh"]' \
		--change 'CMD ["postgres"]' \
		--change 'ENV PGDATA=/var/lib/postgresql/data' \
		--change 'ENV LANG=en_US.utf8' \
		--change "ENV PG_MAJOR=$major" \
		--change "ENV PATH=/usr/lib/postgresql/$major/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" \
		--change 'EXPOSE 5432/tcp' \
		- "$tag-base"

# Older engines refuse STOPSIGNAL in `docker import --change`: a one-line
# build on the local image adds it (PostgreSQL's fast shutdown on
# `docker stop`, as the official image).
ctx="$(mktemp -d)"
trap 'rm -rf "$ctx"' EXIT
printf 'FROM %s\nSTOPSIGNAL SIGINT\n' "$tag-base" >"$ctx/Dockerfile"
DOCKER_BUILDKIT=0 docker build -q -t "$tag" "$ctx"
echo "build.sh: $tag is ready; use it with PGFALLBACK_TEST_IMAGE=$tag"
