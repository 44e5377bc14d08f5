#!/usr/bin/env bash
# Start a throwaway PostgreSQL cluster on loopback for the test suite.
#   source .ci/postgres.sh   → exports TEST_DATABASE_URL and stops the server on exit
# Installs Debian's postgresql if its server binaries are missing.
set -euo pipefail

PG_PORT="${PG_PORT:-55432}"
if ! ls -d /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq postgresql >/dev/null
fi
PG_BIN="$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)"
PG_DATA="$(mktemp -d /tmp/rationale-audit-pg.XXXXXX)"

as_pg() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}
[ "$(id -u)" = 0 ] && chown postgres: "$PG_DATA"
as_pg "$PG_BIN/initdb" -D "$PG_DATA" -A trust -U postgres >/dev/null
as_pg "$PG_BIN/pg_ctl" -D "$PG_DATA" -l "$PG_DATA/server.log" -w \
  -o "-p $PG_PORT -k $PG_DATA -c listen_addresses=127.0.0.1 -c fsync=off" start >/dev/null

stop_postgres() { as_pg "$PG_BIN/pg_ctl" -D "$PG_DATA" -m fast stop >/dev/null 2>&1 || true; rm -rf "$PG_DATA"; }
trap stop_postgres EXIT

export TEST_DATABASE_URL="postgresql+psycopg://postgres@127.0.0.1:${PG_PORT}/postgres"
echo "PostgreSQL $("$PG_BIN/postgres" --version | awk '{print $3}') on 127.0.0.1:${PG_PORT}"
