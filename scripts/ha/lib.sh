# shellcheck shell=bash disable=SC2034
# Shared by the scripts of the highly available stack (sourced, not run).
#
# Everything lives in one folder of the project's own ($HA_DIR, `.ha/` at the
# repository root by default) and listens on 127.0.0.1 on the fixed ports
# below, none of which the machine's default PostgreSQL (5432) or RabbitMQ
# (5672, 25672, epmd 4369, CLI 35672-35682) uses. docs/ha.md lists them.

HA_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
HA_DIR=$(realpath -m "${HA_DIR:-$HA_ROOT/.ha}")
HA_SCRIPTS=$HA_ROOT/scripts/ha
RUN=$HA_DIR/run

# HAProxy: PostgreSQL primary, PostgreSQL replicas, HTTP, stats page.
PORT_PG_PRIMARY=17000
PORT_PG_REPLICAS=17001
PORT_HTTP=17080
API_PORTS=(17081 17082 17083)
PORT_HAPROXY_STATS=17090

# Patroni members pg1..pg3: PostgreSQL and Patroni REST ports.
PG_MEMBERS=(pg1 pg2 pg3)
PG_PORTS=(17101 17102 17103)
PATRONI_PORTS=(17111 17112 17113)
PG_BIN=/usr/lib/postgresql/15/bin
PATRONI_SCOPE=ledger-ha

# etcd, the store Patroni elects its leader in (one member).
PORT_ETCD_CLIENT=17201
PORT_ETCD_PEER=17202

# RabbitMQ nodes ha1..ha3: AMQP and Erlang distribution ports, their epmd,
# and the port range rabbitmqctl's own short-lived node may listen on.
RABBIT_NODES=(ha1@localhost ha2@localhost ha3@localhost)
AMQP_PORTS=(17301 17302 17303)
DIST_PORTS=(17311 17312 17313)
PORT_EPMD=17300
CTL_DIST_MIN=17320
CTL_DIST_MAX=17339
RABBIT_MEMORY_LIMIT=${HA_RABBIT_MEMORY:-512MiB}
RABBIT_LIB=/usr/lib/rabbitmq/bin

# Python with Debian's psycopg2 and pika, whatever python3 comes first in PATH.
PY=/usr/bin/python3

log() { printf '%s ha: %s\n' "$(date +%T.%3N)" "$*" >&2; }
die() { log "$*"; exit 1; }

# Every part runs as root, PostgreSQL and Patroni as the postgres user.
need_root() {
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || die "run as root (sudo is not installed)"
    exec sudo -E HA_DIR="$HA_DIR" "$0" "$@"
  fi
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# Whether PID runs (a zombie waiting to be reaped does not).
alive() {
  local stat
  [ -n "${1:-}" ] && stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
  stat=${stat##*) }
  [[ ${stat:0:1} != [ZX] ]]
}

# pid_of NAME: the PID recorded in $RUN/NAME.pid when that process still
# runs and is the program it was (a PID can be reused after a reboot).
pid_of() {
  local f=$RUN/$1.pid pid comm
  [ -s "$f" ] || return 1
  pid=$(head -n 1 "$f")
  case $1 in
    patroni-*) comm=patroni ;;
    rabbit-*-script) comm=rabbitmq-server ;;
    rabbit-*) comm=beam.smp ;;
    *) comm=$1 ;;
  esac
  alive "$pid" && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$comm" ] && echo "$pid"
}

# wait_until SECONDS DESCRIPTION COMMAND...: polls every 0.2 s.
wait_until() {
  local secs=$1 what=$2 deadline
  shift 2
  deadline=$(($(date +%s%N) + secs * 1000000000))
  until "$@" >/dev/null 2>&1; do
    [ "$(date +%s%N)" -lt "$deadline" ] || { log "timed out after ${secs}s waiting for $what"; return 1; }
    sleep 0.2
  done
}

# Starts a daemon in its own session (so a `timeout` or Ctrl-C aimed at the
# caller's process group cannot reach it), output appended to LOGFILE, its
# PID recorded as NAME. The command must exec into the daemon so $! is its PID.
start_daemon() {
  local name=$1 logfile=$2
  shift 2
  setsid "$@" >>"$logfile" 2>&1 </dev/null &
  echo $! >"$RUN/$name.pid"
}

# --- PostgreSQL and Patroni -------------------------------------------------

member_index() { # pg2 or 2 -> 1
  local m=${1#pg}
  [[ $m =~ ^[1-3]$ ]] || die "no member $1 (pg1, pg2 or pg3)"
  echo $((m - 1))
}

member_dir() { echo "$HA_DIR/pg/$1"; }

# The postmaster outlives a killed Patroni and is re-parented to PID 1; its
# PID is the first line of postmaster.pid.
postmaster_pid() {
  local f pid
  f=$(member_dir "$1")/data/postmaster.pid
  [ -r "$f" ] || return 1
  pid=$(head -n 1 "$f")
  alive "$pid" && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = postgres ] && echo "$pid"
}

patronictl_() { patronictl -c "$(member_dir pg1)/patroni.yml" "$@"; }

# The cluster as one live member's Patroni REST API sees it (JSON).
patroni_cluster() {
  local p
  for p in "${PATRONI_PORTS[@]}"; do
    curl -sf --max-time 2 "http://127.0.0.1:$p/cluster" && return 0
  done
  return 1
}

# Prints "leader", "sync" or "replica" member names from the REST API.
patroni_members_with_role() {
  patroni_cluster | "$PY" -c '
import json, sys
role = {"leader": "leader", "sync": "sync_standby", "replica": "replica"}[sys.argv[1]]
for m in json.load(sys.stdin)["members"]:
    if m["role"] == role and m["state"] in ("running", "streaming"):
        print(m["name"])
' "$1"
}

# --- RabbitMQ ---------------------------------------------------------------

node_index() { # ha2@localhost, ha2 or 2 -> 1
  local n=${1%@*}
  n=${n#ha}
  [[ $n =~ ^[1-3]$ ]] || die "no RabbitMQ node $1 (1, 2, 3 or ha1..ha3)"
  echo $((n - 1))
}

# The environment every node and every rabbitmqctl call shares: a private
# epmd, a private HOME holding the cluster's cookie, and none of Debian's
# /etc/rabbitmq files (they fix the node name).
rabbit_env() {
  export HOME=$HA_DIR/rabbit/home
  export ERL_EPMD_PORT=$PORT_EPMD ERL_EPMD_ADDRESS=127.0.0.1
  export RABBITMQ_CONF_ENV_FILE=$HA_DIR/rabbit/rabbitmq-env.conf
  export RABBITMQ_CTL_DIST_PORT_MIN=$CTL_DIST_MIN RABBITMQ_CTL_DIST_PORT_MAX=$CTL_DIST_MAX
  export ERL_FLAGS="-kernel inet_dist_use_interface {127,0,0,1}"
}

rabbitmqctl_() { (rabbit_env && "$RABBIT_LIB/rabbitmqctl" "$@"); }
rabbitmq_queues_() { (rabbit_env && "$RABBIT_LIB/rabbitmq-queues" "$@"); }

# The beam of node index I, when it runs.
rabbit_pid() { pid_of "rabbit-ha$(($1 + 1))"; }

# The first node that answers, as ha1@localhost.
rabbit_live_node() {
  local i
  for i in 0 1 2; do
    if rabbit_pid "$i" >/dev/null && port_open "${AMQP_PORTS[$i]}"; then
      echo "${RABBIT_NODES[$i]}"
      return 0
    fi
  done
  return 1
}
