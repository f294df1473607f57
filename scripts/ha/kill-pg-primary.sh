#!/usr/bin/env bash
# Kills the PostgreSQL primary: SIGKILL to the leader's Patroni and to its
# postmaster at once. Both must die: a killed postmaster alone is restarted
# in place by its Patroni (no failover), and a killed Patroni alone leaves a
# primary that waits forever for its synchronous standby.
# Prints the killed member's name (pg1..pg3) on stdout. With --back-after N it
# then waits for a new leader, N seconds more, and brings the killed member
# back as a replica (start-member.sh does the same when called later).
# Refuses, unless --force, while no synchronous standby runs.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
need_root "$@"

usage="usage: kill-pg-primary.sh [--force] [--back-after SECONDS]"
back_after="" force=""
while [ $# -gt 0 ]; do
  case $1 in
    --back-after) back_after=${2:?$usage}; shift 2 ;;
    --force) force=1; shift ;;
    *) die "$usage" ;;
  esac
done

leader=$(patroni_members_with_role leader) || die "no Patroni member answers"
[ -n "$leader" ] || die "the cluster has no running leader"
# Only the synchronous standby may be promoted: without one running, killing
# the primary is an outage until it returns, not a failover.
[ -n "$force" ] || [ -n "$(patroni_members_with_role sync)" ] ||
  die "no synchronous standby is running (wait for one, or pass --force)"
patroni=$(pid_of "patroni-$leader") || die "$leader: Patroni is not running"
postmaster=$(postmaster_pid "$leader") || die "$leader: no postmaster"
kill -KILL "$patroni" "$postmaster"
log "$leader: killed Patroni (PID $patroni) and postmaster (PID $postmaster)"
echo "$leader"

if [ -n "$back_after" ]; then
  # Back before its leader key expires (ttl), the member would simply resume
  # as the primary: wait for another leader first.
  new_leader() { local l; l=$(patroni_members_with_role leader) && [ -n "$l" ] && [ "$l" != "$leader" ]; }
  wait_until 60 "a new leader" new_leader
  log "new leader: $(patroni_members_with_role leader)"
  sleep "$back_after"
  "$HA_SCRIPTS/start-member.sh" "$leader" --wait >&2
fi
