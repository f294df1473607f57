#!/usr/bin/env bash
# `make ha-down`: stops every process of the highly available stack (Patroni,
# the postmasters, etcd, HAProxy, the RabbitMQ nodes and their epmd) and
# removes $HA_DIR. The machine's default PostgreSQL and RabbitMQ are not
# touched: only PIDs recorded under $HA_DIR, or whose command line or working
# folder lies in it, are signalled.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
need_root "$@"

if [ ! -d "$HA_DIR" ]; then
  log "nothing to stop: $HA_DIR does not exist"
  exit 0
fi
started=$(date +%s%N)

# stop SECONDS SIGNAL PID...: sends SIGNAL, waits, then SIGKILLs survivors.
stop() {
  local secs=$1 sig=$2 pid left deadline
  shift 2
  [ $# -gt 0 ] || return 0
  kill "-$sig" "$@" 2>/dev/null || true
  deadline=$(($(date +%s%N) + secs * 1000000000))
  while :; do
    left=()
    for pid in "$@"; do alive "$pid" && left+=("$pid"); done
    [ ${#left[@]} -gt 0 ] || return 0
    [ "$(date +%s%N)" -lt "$deadline" ] || break
    sleep 0.2
  done
  log "still running after ${secs}s, killing: ${left[*]}"
  kill -KILL "${left[@]}" 2>/dev/null || true
}

# The data is removed below, so nothing needs a clean shutdown: Patroni is
# killed first (so that none restarts its postmaster), then each postmaster
# (re-parented to PID 1 once its Patroni is gone) gets an immediate shutdown,
# which also stops its backends and releases its shared memory.
patronis=() postmasters=()
for m in "${PG_MEMBERS[@]}"; do
  pid=$(pid_of "patroni-$m") && patronis+=("$pid")
  pid=$(postmaster_pid "$m") && postmasters+=("$pid")
done
stop 5 KILL "${patronis[@]}"
for m in "${PG_MEMBERS[@]}"; do
  # A postmaster started by a Patroni that was just killed mid-start.
  pid=$(postmaster_pid "$m") && [[ " ${postmasters[*]} " != *" $pid "* ]] && postmasters+=("$pid")
done
stop 10 QUIT "${postmasters[@]}"
log "patroni and postgresql stopped"

# The RabbitMQ nodes and their server scripts, then the rest.
procs=()
for i in 0 1 2; do
  pid=$(rabbit_pid "$i") && procs+=("$pid")
  pid=$(pid_of "rabbit-ha$((i + 1))-script") && procs+=("$pid")
done
for name in haproxy etcd epmd; do
  pid=$(pid_of "$name") && procs+=("$pid")
done
stop 5 KILL "${procs[@]}"
log "rabbitmq, haproxy, etcd, epmd stopped"

# Whatever else still runs from this folder (a process whose PID file was
# lost): matched on its command line or working folder, signalled by PID.
strays=()
for f in $(grep -lsF -- "$HA_DIR/" /proc/[0-9]*/cmdline) $(find /proc/[0-9]*/cwd -maxdepth 0 -lname "$HA_DIR*" 2>/dev/null); do
  pid=${f#/proc/}
  pid=${pid%%/*}
  if [ "$pid" = $$ ] || [ "$pid" = "$BASHPID" ]; then continue; fi
  case $(cat "/proc/$pid/comm" 2>/dev/null) in
    postgres | patroni | python3 | beam.smp | erl_child_setup | epmd | haproxy | etcd | sh) strays+=("$pid") ;;
  esac
done
if [ ${#strays[@]} -gt 0 ]; then
  log "stray processes under $HA_DIR: ${strays[*]}"
  stop 5 TERM "${strays[@]}"
fi

log "no stray process left"
rm -rf "$HA_DIR"
elapsed=$((($(date +%s%N) - started) / 1000000))
log "stopped and removed $HA_DIR in $((elapsed / 1000)).$(printf %03d $((elapsed % 1000))) s"
