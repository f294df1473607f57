#!/usr/bin/env bash
# `make ha-status`: the PostgreSQL leader and synchronous standby as Patroni
# sees them, HAProxy's view of every server, and the RabbitMQ cluster.
set -uo pipefail
. "$(dirname "$0")/lib.sh"
need_root "$@"

[ -d "$HA_DIR" ] || die "no stack: $HA_DIR does not exist (make ha-up)"

echo "== PostgreSQL (patronictl list)"
if ! patronictl_ list 2>&1; then
  echo "(patronictl failed: is etcd running?)"
fi
for m in "${PG_MEMBERS[@]}"; do
  pid=$(pid_of "patroni-$m") || pid="-"
  pm=$(postmaster_pid "$m") || pm="-"
  echo "  $m: patroni PID $pid, postmaster PID $pm"
done

echo
echo "== HAProxy (127.0.0.1:$PORT_HAPROXY_STATS)"
if csv=$(curl -sf --max-time 2 "http://127.0.0.1:$PORT_HAPROXY_STATS/;csv"); then
  # pxname, svname, status, check_status, current sessions.
  awk -F, 'NR > 1 && $2 != "FRONTEND" && $2 != "BACKEND" && $1 != "stats" {
             printf "  %-12s %-5s %-6s %-8s sessions %s\n", $1, $2, $18, $37, $5 }' <<<"$csv"
else
  echo "  (HAProxy does not answer)"
fi

echo
echo "== RabbitMQ"
for i in 0 1 2; do
  pid=$(rabbit_pid "$i") || pid="-"
  echo "  ${RABBIT_NODES[$i]}: AMQP 127.0.0.1:${AMQP_PORTS[$i]}, beam PID $pid"
done
if node=$(rabbit_live_node); then
  rabbitmqctl_ -q -n "$node" cluster_status 2>&1 | sed 's/\x1b\[[0-9;]*m//g' |
    awk '/^(Running Nodes|Network Partitions|Alarms)$/ { p = 1; print "  " $0 ":"; next }
         /^[A-Z][A-Za-z ]+$/ { p = 0 }
         p && NF { print "    " $0 }'
  rabbitmqctl_ -q -n "$node" list_queues name type leader members messages 2>/dev/null |
    awk -F'\t' 'NR == 1 || $2 == "quorum"' | sed 's/^/  /'
else
  echo "  (no node answers)"
fi

echo
echo "== Memory (proportional set size)"
# Every process of the stack: recorded PIDs, the postmasters and their
# children, the beams and theirs.
declare -A part seen
add() {
  local pid
  for pid in "$2" $(ps -o pid= --ppid "$2" 2>/dev/null); do
    [ -z "${seen[$pid]:-}" ] || continue
    seen[$pid]=1
    part[$1]="${part[$1]:-} $pid"
  done
}
for f in "$RUN"/*.pid; do
  [ -e "$f" ] || continue
  n=$(basename "$f" .pid)
  pid=$(pid_of "$n") || continue
  case $n in
    patroni-*) add patroni "$pid" ;;
    rabbit-*) add rabbitmq "$pid" ;;
    *) add "$n" "$pid" ;;
  esac
done
for m in "${PG_MEMBERS[@]}"; do
  pid=$(postmaster_pid "$m") && add postgresql "$pid"
done
total=0
for k in postgresql patroni rabbitmq etcd haproxy epmd; do
  kib=0
  for pid in ${part[$k]:-}; do
    v=$(awk '/^Pss:/ { print $2 }' "/proc/$pid/smaps_rollup" 2>/dev/null) && kib=$((kib + ${v:-0}))
  done
  total=$((total + kib))
  printf '  %-10s %6d MiB\n' "$k" $((kib / 1024))
done
printf '  %-10s %6d MiB\n' total $((total / 1024))
