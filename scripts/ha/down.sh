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

# Patroni first, so that none restarts a postmaster; each stops its own.
patronis=() postmasters=()
for m in "${PG_MEMBERS[@]}"; do
  pid=$(pid_of "patroni-$m") && patronis+=("$pid")
done
stop 20 TERM "${patronis[@]}"
# A postmaster whose Patroni was killed was re-parented to PID 1 and still runs.
for m in "${PG_MEMBERS[@]}"; do
  pid=$(postmaster_pid "$m") && postmasters+=("$pid")
done
stop 15 INT "${postmasters[@]}"

# The RabbitMQ nodes stop cleanly on SIGTERM; their server scripts follow.
beams=()
for i in 0 1 2; do
  pid=$(rabbit_pid "$i") && beams+=("$pid")
  pid=$(pid_of "rabbit-ha$((i + 1))-script") && beams+=("$pid")
done
stop 30 TERM "${beams[@]}"

others=()
for name in haproxy etcd epmd; do
  pid=$(pid_of "$name") && others+=("$pid")
done
stop 10 TERM "${others[@]}"

# Whatever else still runs from this folder (a process whose PID file was
# lost): matched on its command line or working folder, signalled by PID.
strays=()
for p in /proc/[0-9]*; do
  pid=${p#/proc/}
  [ "$pid" != $$ ] || continue
  case $(cat "$p/comm" 2>/dev/null) in
    postgres | patroni | python3 | beam.smp | erl_child_setup | epmd | haproxy | etcd | sh) ;;
    *) continue ;;
  esac
  cmd=$(tr '\0' ' ' <"$p/cmdline" 2>/dev/null) || continue
  cwd=$(readlink "$p/cwd" 2>/dev/null) || cwd=
  if [[ $cmd == *"$HA_DIR/"* || $cwd == "$HA_DIR" || $cwd == "$HA_DIR/"* ]]; then
    strays+=("$pid")
  fi
done
if [ ${#strays[@]} -gt 0 ]; then
  log "stray processes under $HA_DIR: ${strays[*]}"
  stop 5 TERM "${strays[@]}"
fi

rm -rf "$HA_DIR"
elapsed=$((($(date +%s%N) - started) / 1000000))
log "stopped and removed $HA_DIR in $((elapsed / 1000)).$(printf %03d $((elapsed % 1000))) s"
