#!/usr/bin/env bash
# Minimal re-implementation of the official postgres image's docker-entrypoint.sh
# (docker-library/postgres), enough for testcontainers-go's postgres module.
#
# Env: POSTGRES_USER (default postgres), POSTGRES_PASSWORD (required unless
# POSTGRES_HOST_AUTH_METHOD=trust), POSTGRES_DB (default = POSTGRES_USER),
# POSTGRES_INITDB_ARGS, POSTGRES_INITDB_WALDIR, POSTGRES_HOST_AUTH_METHOD
# (default scram-sha-256), PGDATA (default /var/lib/postgresql/data).
# *_FILE variants (e.g. POSTGRES_PASSWORD_FILE) are honoured.
# Scripts in /docker-entrypoint-initdb.d (*.sh, *.sql, *.sql.gz, *.sql.xz,
# *.sql.zst) are run once, on first initialisation.
set -Eeo pipefail

PG_BIN=/usr/lib/postgresql/${PG_MAJOR:-15}/bin
case ":$PATH:" in *":$PG_BIN:"*) ;; *) export PATH="$PG_BIN:$PATH" ;; esac
export PGDATA="${PGDATA:-/var/lib/postgresql/data}"

# file_env VAR [DEFAULT]: allow VAR_FILE to provide VAR's value
file_env() {
	local var="$1" fileVar="${1}_FILE" def="${2:-}"
	if [ "${!var:-}" ] && [ "${!fileVar:-}" ]; then
		echo >&2 "error: both $var and $fileVar are set (but are exclusive)"
		exit 1
	fi
	local val="$def"
	if [ "${!var:-}" ]; then
		val="${!var}"
	elif [ "${!fileVar:-}" ]; then
		val="$(< "${!fileVar}")"
	fi
	export "$var"="$val"
	unset "$fileVar"
}

# first arg is `-f` or `--some-option`: run postgres with these options
if [ "${1:0:1}" = '-' ]; then
	set -- postgres "$@"
fi

if [ "$1" != 'postgres' ]; then
	exec "$@"
fi

# ---- running as root: prepare directories, then re-exec as postgres ----
if [ "$(id -u)" = '0' ]; then
	mkdir -p "$PGDATA"
	chown postgres:postgres "$PGDATA" || :
	chmod 00700 "$PGDATA" || :
	mkdir -p /var/run/postgresql
	chown postgres:postgres /var/run/postgresql || :
	chmod 03775 /var/run/postgresql || :
	if [ -n "${POSTGRES_INITDB_WALDIR:-}" ]; then
		mkdir -p "$POSTGRES_INITDB_WALDIR"
		chown postgres:postgres "$POSTGRES_INITDB_WALDIR" || :
		chmod 700 "$POSTGRES_INITDB_WALDIR" || :
	fi
	exec setpriv --reuid=postgres --regid=postgres --init-groups -- "$BASH_SOURCE" "$@"
fi

# ---- from here on we are the postgres user ----
if [ ! -s "$PGDATA/PG_VERSION" ]; then
	file_env POSTGRES_PASSWORD
	file_env POSTGRES_USER 'postgres'
	file_env POSTGRES_DB "$POSTGRES_USER"
	file_env POSTGRES_INITDB_ARGS
	# As the official image: md5 before PostgreSQL 14, whose initdb stores
	# the password as md5 (password_encryption's default then), which a
	# scram-sha-256 rule would refuse.
	if [ -z "${POSTGRES_HOST_AUTH_METHOD:-}" ] && [ "${PG_MAJOR:-15}" -lt 14 ]; then
		POSTGRES_HOST_AUTH_METHOD=md5
	fi
	: "${POSTGRES_HOST_AUTH_METHOD:=scram-sha-256}"

	if [ -z "$POSTGRES_PASSWORD" ] && [ "$POSTGRES_HOST_AUTH_METHOD" != 'trust' ]; then
		cat >&2 <<-'EOE'
			Error: Database is uninitialized and superuser password is not specified.
			       You must specify POSTGRES_PASSWORD to a non-empty value for the
			       superuser. For example, "-e POSTGRES_PASSWORD=password" on "docker run".

			       You may also use "POSTGRES_HOST_AUTH_METHOD=trust" to allow all
			       connections without a password. This is *not* recommended.
		EOE
		exit 1
	fi

	# --- initdb ---
	initdb_args=(--username="$POSTGRES_USER")
	pwfile=
	if [ -n "$POSTGRES_PASSWORD" ]; then
		# a private temp file rather than <(...): bash closes a process
		# substitution's fd as soon as the command that created it ends
		pwfile="$(umask 077; mktemp)"
		printf '%s\n' "$POSTGRES_PASSWORD" > "$pwfile"
		initdb_args+=(--pwfile="$pwfile")
	fi
	if [ -n "${POSTGRES_INITDB_WALDIR:-}" ]; then
		initdb_args+=(--waldir "$POSTGRES_INITDB_WALDIR")
	fi
	# shellcheck disable=SC2086
	initdb "${initdb_args[@]}" $POSTGRES_INITDB_ARGS
	[ -z "$pwfile" ] || rm -f "$pwfile"

	# listen on all interfaces (the official image patches postgresql.conf.sample)
	printf "\nlisten_addresses = '*'\n" >> "$PGDATA/postgresql.conf"

	# allow password (scram-sha-256 by default) connections from anywhere
	printf '\nhost all all all %s\n' "$POSTGRES_HOST_AUTH_METHOD" >> "$PGDATA/pg_hba.conf"

	# --- temporary server, reachable only on the unix socket ---
	temp_args=("${@:2}" -c "listen_addresses=" -p "${PGPORT:-5432}")
	PGUSER="${PGUSER:-$POSTGRES_USER}" \
		pg_ctl -D "$PGDATA" -o "$(printf '%q ' "${temp_args[@]}")" -w start

	export PGPASSWORD="${PGPASSWORD:-$POSTGRES_PASSWORD}"
	psql_cmd=(psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --no-password --no-psqlrc)

	if [ "$POSTGRES_DB" != 'postgres' ]; then
		exists="$("${psql_cmd[@]}" --dbname postgres --set db="$POSTGRES_DB" --tuples-only -A <<-'EOSQL'
			SELECT 1 FROM pg_database WHERE datname = :'db' ;
		EOSQL
		)"
		if [ -z "$exists" ]; then
			"${psql_cmd[@]}" --dbname postgres --set db="$POSTGRES_DB" <<-'EOSQL'
				CREATE DATABASE :"db" ;
			EOSQL
			echo
		fi
	fi

	# --- init scripts ---
	psql_db=("${psql_cmd[@]}" --dbname "$POSTGRES_DB")
	if [ -d /docker-entrypoint-initdb.d ]; then
		for f in /docker-entrypoint-initdb.d/*; do
			[ -e "$f" ] || continue
			case "$f" in
				*.sh)
					if [ -x "$f" ]; then
						echo "$0: running $f"; "$f"
					else
						echo "$0: sourcing $f"; . "$f"
					fi
					;;
				*.sql)     echo "$0: running $f"; "${psql_db[@]}" -f "$f"; echo ;;
				*.sql.gz)  echo "$0: running $f"; gunzip -c "$f" | "${psql_db[@]}"; echo ;;
				*.sql.xz)  echo "$0: running $f"; xzcat "$f" | "${psql_db[@]}"; echo ;;
				*.sql.zst) echo "$0: running $f"; zstd -dc "$f" | "${psql_db[@]}"; echo ;;
				*)         echo "$0: ignoring $f" ;;
			esac
			echo
		done
	fi

	unset PGPASSWORD
	pg_ctl -D "$PGDATA" -m fast -w stop

	echo
	echo 'PostgreSQL init process complete; ready for start up.'
	echo
else
	echo
	echo 'PostgreSQL Database directory appears to contain a database; Skipping initialization'
	echo
fi

exec "$@"
