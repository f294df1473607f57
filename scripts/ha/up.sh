#!/usr/bin/env bash
# `make ha-up`: the highly available stack on this machine, in $HA_DIR, on
# 127.0.0.1 only: etcd, three PostgreSQL 15 members under Patroni with a
# synchronous standby, HAProxy in front of them (and of the API processes
# started later), and a three-node RabbitMQ cluster. Idempotent: what already
# runs is reused. Ends by printing the settings the service should use and
# writing them to $HA_DIR/env for `source`.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
need_root "$@"

started=$(date +%s%N)

# --- packages ---------------------------------------------------------------
# apt starts none of these; no system service is enabled or started here.
missing=()
command -v patroni >/dev/null || missing+=(patroni)
command -v etcd >/dev/null || missing+=(etcd-server)
command -v etcdctl >/dev/null || missing+=(etcd-client)
command -v haproxy >/dev/null || missing+=(haproxy)
[ -x "$PG_BIN/postgres" ] || missing+=(postgresql-15)
[ -x "$RABBIT_LIB/rabbitmq-server" ] || missing+=(rabbitmq-server)
command -v curl >/dev/null || missing+=(curl)
"$PY" -c 'import psycopg2' 2>/dev/null || missing+=(python3-psycopg2)
"$PY" -c 'import etcd' 2>/dev/null || missing+=(python3-etcd)
# For scripts/ha/rabbit-failover-probe.py.
"$PY" -c 'import pika' 2>/dev/null || missing+=(python3-pika)
if [ ${#missing[@]} -gt 0 ]; then
  log "installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# --- folders and configuration (written once, kept while the stack lives) ---
mkdir -p "$RUN" "$HA_DIR/etcd" "$HA_DIR/haproxy" "$HA_DIR/pg" \
  "$HA_DIR/rabbit/home" "$HA_DIR/rabbit/mnesia" "$HA_DIR/rabbit/log"
chmod 755 "$HA_DIR" "$HA_DIR/pg"
# Patroni and PostgreSQL run as postgres: every folder above theirs must be
# searchable by that user, or the member hangs at start-up.
setpriv --reuid=postgres --regid=postgres --init-groups test -x "$HA_DIR/pg" ||
  die "the postgres user cannot reach $HA_DIR/pg; set HA_DIR to a folder it can (e.g. under /var/tmp)"

for i in 0 1 2; do
  name=${PG_MEMBERS[$i]}
  dir=$(member_dir "$name")
  [ -f "$dir/patroni.yml" ] && continue
  mkdir -p "$dir"
  cat >"$dir/patroni.yml" <<EOF
# Patroni member $name of the local highly available stack (scripts/ha/up.sh).
scope: $PATRONI_SCOPE
namespace: /$PATRONI_SCOPE/
name: $name
restapi:
  listen: 127.0.0.1:${PATRONI_PORTS[$i]}
  connect_address: 127.0.0.1:${PATRONI_PORTS[$i]}
etcd3:
  hosts: 127.0.0.1:$PORT_ETCD_CLIENT
bootstrap:
  dcs:
    # A lost leader key expires after ttl; Patroni wakes every loop_wait.
    # These make a failover take seconds (the defaults, 30/10, about 30 s).
    ttl: 10
    loop_wait: 2
    retry_timeout: 3
    maximum_lag_on_failover: 1048576
    # A commit returns only once a standby has it, and only that standby may
    # be promoted: an acknowledged commit survives the failover.
    synchronous_mode: true
    synchronous_node_count: 1
    postgresql:
      use_pg_rewind: true
      use_slots: true
      parameters:
        max_connections: 300
        max_wal_senders: 10
        max_replication_slots: 10
        wal_log_hints: "on"
        hot_standby: "on"
  initdb:
    - encoding: UTF8
    - locale: C.UTF-8
postgresql:
  listen: 127.0.0.1:${PG_PORTS[$i]}
  connect_address: 127.0.0.1:${PG_PORTS[$i]}
  data_dir: $dir/data
  bin_dir: $PG_BIN
  pgpass: $dir/pgpass
  # A former primary that cannot be rewound is cloned again: this stack
  # holds test data only.
  remove_data_directory_on_rewind_failure: true
  remove_data_directory_on_diverged_timelines: true
  authentication:
    superuser:
      username: postgres
      password: postgres
    replication:
      username: replicator
      password: replicator
  # Loopback only, no passwords: a local test stack.
  pg_hba:
    - local all all trust
    - host all all 127.0.0.1/32 trust
    - host replication all 127.0.0.1/32 trust
  parameters:
    unix_socket_directories: $dir
    logging_collector: "on"
    log_directory: log
watchdog:
  mode: "off"
EOF
  chown -R postgres:postgres "$dir"
done

hacfg=$HA_DIR/haproxy/haproxy.cfg
if [ ! -f "$hacfg" ]; then
  {
    cat <<EOF
# HAProxy of the local highly available stack (scripts/ha/up.sh).
global
    maxconn 4000
    stats socket $RUN/haproxy.sock mode 600 level admin
    log stdout format raw local0 info

defaults
    log global
    option dontlog-normal
    timeout connect 2s
    timeout check 2s

# PostgreSQL clients to the current primary: Patroni answers 200 to
# OPTIONS /primary on the leader only. A primary marked down has its
# sessions cut, so no client keeps writing to a demoted server.
listen pg_primary
    mode tcp
    bind 127.0.0.1:$PORT_PG_PRIMARY
    timeout client 1h
    timeout server 1h
    option httpchk OPTIONS /primary
    http-check expect status 200
    default-server inter 1s fall 2 rise 1 on-marked-down shutdown-sessions
EOF
    for i in 0 1 2; do
      echo "    server ${PG_MEMBERS[$i]} 127.0.0.1:${PG_PORTS[$i]} check port ${PATRONI_PORTS[$i]}"
    done
    cat <<EOF

# Read-only clients to the running replicas.
listen pg_replicas
    mode tcp
    bind 127.0.0.1:$PORT_PG_REPLICAS
    balance roundrobin
    timeout client 1h
    timeout server 1h
    option httpchk OPTIONS /replica
    http-check expect status 200
    default-server inter 1s fall 2 rise 1 on-marked-down shutdown-sessions
EOF
    for i in 0 1 2; do
      echo "    server ${PG_MEMBERS[$i]} 127.0.0.1:${PG_PORTS[$i]} check port ${PATRONI_PORTS[$i]}"
    done
    cat <<EOF

# HTTP across the API processes (started separately; any may be down).
# A refused connection is retried on another process; nothing is retried
# once the request has been sent.
listen api
    mode http
    bind 127.0.0.1:$PORT_HTTP
    balance roundrobin
    timeout client 30s
    timeout server 30s
    timeout http-request 10s
    option httpchk GET /healthz
    http-check expect status 200
    retries 2
    option redispatch
    retry-on conn-failure
    default-server inter 1s fall 2 rise 1
EOF
    for i in 0 1 2; do
      echo "    server api$((i + 1)) 127.0.0.1:${API_PORTS[$i]} check"
    done
    cat <<EOF

listen stats
    mode http
    bind 127.0.0.1:$PORT_HAPROXY_STATS
    timeout client 30s
    stats enable
    stats uri /
    stats refresh 2s
EOF
  } >"$hacfg"
  haproxy -c -q -f "$hacfg" || die "invalid $hacfg"
fi

rb=$HA_DIR/rabbit
if [ ! -f "$rb/home/.erlang.cookie" ]; then
  # One cookie for the three nodes and the CLI: they share this HOME.
  "$PY" -c 'import secrets, string; print("".join(secrets.choice(string.ascii_uppercase) for _ in range(20)), end="")' \
    >"$rb/home/.erlang.cookie"
  chmod 400 "$rb/home/.erlang.cookie"
fi
# Empty on purpose: Debian's /etc/rabbitmq/rabbitmq-env.conf sets the node name.
[ -f "$rb/rabbitmq-env.conf" ] || : >"$rb/rabbitmq-env.conf"
[ -f "$rb/enabled_plugins" ] || echo '[].' >"$rb/enabled_plugins"
for i in 0 1 2; do
  conf=$rb/ha$((i + 1)).conf
  [ -f "$conf" ] && continue
  cat >"$conf" <<EOF
# RabbitMQ node ${RABBIT_NODES[$i]} of the local highly available stack.
listeners.tcp.1 = 127.0.0.1:${AMQP_PORTS[$i]}
cluster_name = $PATRONI_SCOPE
# Quorum queue leaders spread over the nodes instead of all landing on the
# node the declaring client is connected to.
queue_leader_locator = balanced
# By default a node allows itself 0.4 x the machine's RAM, three times over.
vm_memory_high_watermark.absolute = $RABBIT_MEMORY_LIMIT
# The side of a partition without a majority pauses instead of diverging.
cluster_partition_handling = pause_minority
log.file.level = info
log.console = false
EOF
done

# --- etcd ---------------------------------------------------------------------
if pid_of etcd >/dev/null; then
  log "etcd: already runs"
else
  start_daemon etcd "$HA_DIR/etcd/etcd.log" etcd --name ha-etcd --data-dir "$HA_DIR/etcd/data" \
    --listen-client-urls "http://127.0.0.1:$PORT_ETCD_CLIENT" \
    --advertise-client-urls "http://127.0.0.1:$PORT_ETCD_CLIENT" \
    --listen-peer-urls "http://127.0.0.1:$PORT_ETCD_PEER" \
    --initial-advertise-peer-urls "http://127.0.0.1:$PORT_ETCD_PEER" \
    --initial-cluster "ha-etcd=http://127.0.0.1:$PORT_ETCD_PEER"
  log "etcd: started"
fi
etcd_healthy() { curl -sf --max-time 1 "http://127.0.0.1:$PORT_ETCD_CLIENT/health" | grep -q '"true"'; }
wait_until 30 etcd etcd_healthy

# --- RabbitMQ: a private epmd, then the three nodes booting in the background ---
if pid_of epmd >/dev/null; then
  log "epmd: already runs"
else
  start_daemon epmd "$rb/log/epmd.log" epmd -port "$PORT_EPMD" -address 127.0.0.1
  wait_until 10 epmd port_open "$PORT_EPMD"
fi
rabbit_jobs=()
for i in 0 1 2; do
  "$HA_SCRIPTS/start-rabbit-node.sh" "$((i + 1))" &
  rabbit_jobs+=($!)
done

# --- HAProxy ------------------------------------------------------------------
if pid_of haproxy >/dev/null; then
  log "haproxy: already runs"
else
  start_daemon haproxy "$HA_DIR/haproxy/haproxy.log" haproxy -db -f "$hacfg"
  wait_until 10 haproxy port_open "$PORT_PG_PRIMARY"
  log "haproxy: started"
fi

# --- Patroni members ------------------------------------------------------------
for name in "${PG_MEMBERS[@]}"; do
  "$HA_SCRIPTS/start-member.sh" "$name"
done

# --- the RabbitMQ cluster: ha2 and ha3 join ha1 -----------------------------------
# Joined one after the other once all three have booted: peer discovery at
# boot (classic_config) saved those seconds but, with the three booting at
# once, sometimes left nodes waiting on one another past two minutes.
for j in "${rabbit_jobs[@]}"; do
  wait "$j" || die "a RabbitMQ node did not boot (see $rb/log/)"
done
for i in 1 2; do
  node=${RABBIT_NODES[$i]}
  if rabbitmqctl_ -q -n "$node" eval 'rabbit_mnesia:cluster_nodes(all).' | grep -q "${RABBIT_NODES[0]}"; then
    continue
  fi
  log "$node: joining ${RABBIT_NODES[0]}"
  rabbitmqctl_ -q -n "$node" stop_app
  rabbitmqctl_ -q -n "$node" join_cluster "${RABBIT_NODES[0]}"
  rabbitmqctl_ -q -n "$node" start_app
done
rabbit_clustered() {
  local running
  running=$(rabbitmqctl_ -q -n "${RABBIT_NODES[0]}" eval 'rabbit_nodes:all_running().')
  for n in "${RABBIT_NODES[@]}"; do grep -q "$n" <<<"$running" || return 1; done
}
wait_until 60 "the RabbitMQ cluster" rabbit_clustered
log "rabbitmq: ${RABBIT_NODES[*]} running as one cluster"

# --- PostgreSQL: a leader, a synchronous standby, another replica ----------------
pg_ready() {
  patroni_cluster | "$PY" -c '
import json, sys
ms = [m for m in json.load(sys.stdin)["members"] if m["state"] in ("running", "streaming")]
roles = sorted(m["role"] for m in ms)
sys.exit(0 if roles == ["leader", "replica", "sync_standby"] else 1)
'
}
wait_until 180 "the Patroni cluster (leader, sync standby, replica)" pg_ready
primary_via_haproxy() {
  [ "$(psql -h 127.0.0.1 -p "$PORT_PG_PRIMARY" -U postgres -d postgres -Atqc 'SELECT pg_is_in_recovery()')" = f ]
}
wait_until 30 "the primary through HAProxy" primary_via_haproxy
psql -h 127.0.0.1 -p "$PORT_PG_PRIMARY" -U postgres -d postgres -Atqc \
  "SELECT 1 FROM pg_database WHERE datname = 'ledger'" | grep -q 1 ||
  psql -h 127.0.0.1 -p "$PORT_PG_PRIMARY" -U postgres -d postgres -qc 'CREATE DATABASE ledger'
log "postgresql: leader $(patroni_members_with_role leader), sync standby $(patroni_members_with_role sync)"

# --- the settings for the service ---------------------------------------------------
amqp=()
for p in "${AMQP_PORTS[@]}"; do amqp+=("amqp://guest:guest@127.0.0.1:$p/%2f?heartbeat=10"); done
api_addrs=()
for p in "${API_PORTS[@]}"; do api_addrs+=("127.0.0.1:$p"); done
cat >"$HA_DIR/env.tmp" <<EOF
# The highly available stack's settings, written by make ha-up: source this file.
export HA_DIR='$HA_DIR'
export PGHOST_URL='postgres://postgres@127.0.0.1:$PORT_PG_PRIMARY'
export DATABASE_URL='postgres://postgres@127.0.0.1:$PORT_PG_PRIMARY/ledger'
export DATABASE_REPLICAS_URL='postgres://postgres@127.0.0.1:$PORT_PG_REPLICAS/ledger'
export AMQP_URL='$(IFS=,; echo "${amqp[*]}")'
export HA_HTTP_URL='http://127.0.0.1:$PORT_HTTP'
export HA_API_ADDRS='${api_addrs[*]}'
export HA_HAPROXY_STATS='http://127.0.0.1:$PORT_HAPROXY_STATS/'
export HA_RABBIT_NODES='${RABBIT_NODES[*]}'
export HA_PATRONI_CONFIG='$(member_dir pg1)/patroni.yml'
EOF
mv "$HA_DIR/env.tmp" "$HA_DIR/env"

elapsed=$((($(date +%s%N) - started) / 1000000))
echo
echo "  Highly available stack up in $((elapsed / 1000)).$(printf %03d $((elapsed % 1000))) s ($HA_DIR)"
echo
sed -n 's/^export /  /p' "$HA_DIR/env"
echo
echo "  source $HA_DIR/env     # then start API processes with HTTP_ADDR set to each of HA_API_ADDRS"
