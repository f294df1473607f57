#!/usr/bin/env bash
# Makes sure PostgreSQL and RabbitMQ are installed, running and reachable at
# the addresses the service uses by default. Installs them from Debian's
# packages when absent, starts them when stopped, and reuses them otherwise.
set -euo pipefail

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_for() { # name, tries, command...
  local name=$1 tries=$2; shift 2
  for _ in $(seq "$tries"); do
    if "$@"; then return 0; fi
    sleep 1
  done
  echo "ensure-services: $name did not come up" >&2
  return 1
}

missing=()
command -v pg_ctlcluster >/dev/null 2>&1 || missing+=(postgresql postgresql-client)
command -v rabbitmq-server >/dev/null 2>&1 || missing+=(rabbitmq-server)
# Prometheus and promtool: the tests run a real server against the stack and
# check the shipped rules (ops/prometheus). Only the binaries are used; the
# package's own service is not needed.
command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
if [ ${#missing[@]} -gt 0 ]; then
  echo "ensure-services: installing ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# PostgreSQL
if ! port_open 5432; then
  version=$(ls /etc/postgresql | sort -V | tail -n 1)
  echo "ensure-services: starting PostgreSQL $version"
  $SUDO pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
  wait_for PostgreSQL 30 port_open 5432
fi
# The service's roles (migrations/*_service_roles): the owner runs the
# migrations, the API and the workers connect as their own roles with only
# row grants. They are made with passwords; the machine's authentication rules
# are left as they are. When the superuser cannot log in over TCP (a fresh
# Debian cluster asks for a password), the roles are made over the local
# socket as the postgres system user (peer authentication).
if psql -h 127.0.0.1 -U postgres -d postgres -Atqc 'SELECT 1' >/dev/null 2>&1; then
  superuser_psql() { psql -h 127.0.0.1 -U postgres -d postgres "$@"; }
elif [ "$(id -u)" -eq 0 ]; then
  superuser_psql() { (cd / && runuser -u postgres -- psql -d postgres "$@"); }
else
  superuser_psql() { (cd / && sudo -u postgres psql -d postgres "$@"); }
fi
superuser_psql -v ON_ERROR_STOP=1 -q \
  -v owner_pw="${LEDGER_OWNER_PASSWORD:-ledger_owner}" \
  -v api_pw="${LEDGER_API_PASSWORD:-ledger_api}" \
  -v worker_pw="${LEDGER_WORKER_PASSWORD:-ledger_worker}" <<'SQL'
SELECT format('CREATE ROLE %I', r) FROM unnest(ARRAY['ledger_owner', 'ledger_api', 'ledger_worker']) r
 WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r) \gexec
ALTER ROLE ledger_owner LOGIN CREATEDB PASSWORD :'owner_pw';
ALTER ROLE ledger_api LOGIN PASSWORD :'api_pw';
ALTER ROLE ledger_worker LOGIN PASSWORD :'worker_pw';
SQL

# RabbitMQ
if ! port_open 5672; then
  echo "ensure-services: starting RabbitMQ"
  $SUDO rabbitmq-server -detached || true
  wait_for RabbitMQ 60 port_open 5672
  $SUDO rabbitmqctl -q await_startup >/dev/null 2>&1 || true
fi
