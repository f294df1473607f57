#!/usr/bin/env bash
# Kills a RabbitMQ node's beam with SIGKILL: `kill-rabbit-node.sh N` (1, 2, 3
# or ha1..ha3), or `kill-rabbit-node.sh leader-of QUEUE [VHOST]` for the node
# that leads that quorum queue. Prints the killed node's name on stdout;
# start-rabbit-node.sh brings it back.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
need_root "$@"

usage="usage: kill-rabbit-node.sh N | leader-of QUEUE [VHOST]"
[ $# -ge 1 ] || die "$usage"
if [ "$1" = leader-of ]; then
  queue=${2:?$usage}
  vhost=${3:-/}
  live=$(rabbit_live_node) || die "no RabbitMQ node answers"
  node=$(rabbitmqctl_ -q -n "$live" list_queues -p "$vhost" name leader --no-table-headers |
    awk -F'\t' -v q="$queue" '$1 == q { print $2 }')
  [ -n "$node" ] || die "queue $queue in vhost $vhost not found or has no leader"
else
  node=$1
fi
i=$(node_index "$node")
node=${RABBIT_NODES[$i]}

if ! pid=$(rabbit_pid "$i"); then
  # The pid file can be gone (see start-rabbit-node.sh): ask the node.
  pid=$(rabbitmqctl_ -q -n "$node" eval 'list_to_integer(os:getpid()).' 2>/dev/null) ||
    die "$node is not running"
fi
kill -KILL "$pid"
log "$node: killed beam (PID $pid)"
echo "$node"
