#!/usr/bin/env bash
# Starts the RabbitMQ node haN (1, 2, 3, ha1..ha3 or ha1@localhost) when it is
# not running, for instance after kill-rabbit-node.sh, and waits until it
# has booted. A node that was in the cluster rejoins it from its own data.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
need_root "$@"

[ $# -ge 1 ] || die "usage: start-rabbit-node.sh N"
i=$(node_index "$1")
node=${RABBIT_NODES[$i]}
short=ha$((i + 1))
base=$HA_DIR/rabbit
[ -f "$base/$short.conf" ] || die "$node has no configuration: run make ha-up first"

# Starting a node name twice fails with dist_port_already_used and deletes
# the running node's pid file: look at its ports, not only at its pid.
if rabbit_pid "$i" >/dev/null || port_open "${DIST_PORTS[$i]}" || port_open "${AMQP_PORTS[$i]}"; then
  log "$node: already runs"
else
  rabbit_env
  export RABBITMQ_NODENAME=$node
  export RABBITMQ_NODE_IP_ADDRESS=127.0.0.1 RABBITMQ_NODE_PORT=${AMQP_PORTS[$i]}
  export RABBITMQ_DIST_PORT=${DIST_PORTS[$i]}
  export RABBITMQ_CONFIG_FILE=$base/$short.conf
  export RABBITMQ_ENABLED_PLUGINS_FILE=$base/enabled_plugins
  export RABBITMQ_MNESIA_BASE=$base/mnesia RABBITMQ_LOG_BASE=$base/log
  export RABBITMQ_PID_FILE=$RUN/rabbit-$short.pid
  rm -f "$RABBITMQ_PID_FILE"
  # The server script stays as the beam's parent and the node writes its own
  # PID (the beam's) to RABBITMQ_PID_FILE; the script's PID is kept apart.
  start_daemon "rabbit-$short-script" "$base/log/$short.out" "$RABBIT_LIB/rabbitmq-server"
  log "$node: starting"
fi

# await_startup fails at once while the node is not reachable yet: retry it.
booted() { rabbitmqctl_ -q -n "$node" await_startup --timeout 5; }
wait_until 120 "$node to boot" booted
log "$node: running (PID $(rabbit_pid "$i" || echo '?'))"
