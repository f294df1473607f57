#!/usr/bin/env bash
# Prints the superuser URL the test suite creates its databases with.
#
# The tests plant corrupt rows to prove the audit finds them, which needs a
# superuser. Where the machine's superuser may log in over loopback (as on CI),
# that server is used. Where it may not (a fresh Debian cluster asks for a
# password), the suite gets a private cluster of its own instead, made with
# initdb in a temporary folder on port 55432 and reused by later runs, so the
# machine's own authentication rules are never loosened.
set -euo pipefail

# LEDGER_TEST_PRIVATE_PG=1 asks for the private cluster even where the
# machine's superuser would do.
if [ "${LEDGER_TEST_PRIVATE_PG:-0}" != 1 ] && psql -h 127.0.0.1 -U postgres -d postgres -Atqc 'SELECT 1' >/dev/null 2>&1; then
  echo "postgres://postgres@127.0.0.1:5432/postgres"
  exit 0
fi

port=${LEDGER_TEST_PG_PORT:-55432}
dir=${TMPDIR:-/tmp}/ledger-test-pg-$port
bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
as_postgres() { if [ "$(id -u)" -eq 0 ]; then (cd / && runuser -u postgres -- "$@"); else "$@"; fi; }

if ! psql -h 127.0.0.1 -p "$port" -U postgres -d postgres -Atqc 'SELECT 1' >/dev/null 2>&1; then
  if [ ! -f "$dir/PG_VERSION" ]; then
    mkdir -p "$dir"
    [ "$(id -u)" -ne 0 ] || chown postgres: "$dir"
    as_postgres "$bin/initdb" -D "$dir" -U postgres --auth=trust >/dev/null
  fi
  echo "test-postgres: starting a private cluster for the tests on port $port ($dir)" >&2
  as_postgres "$bin/pg_ctl" -D "$dir" -l "$dir/server.log" -w \
    -o "-p $port -k $dir -c listen_addresses=127.0.0.1 -c max_connections=300" start >/dev/null
fi
echo "postgres://postgres@127.0.0.1:$port/postgres"
