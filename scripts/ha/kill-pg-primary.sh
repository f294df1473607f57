#!/usr/bin/env bash
# Kills the PostgreSQL primary: SIGKILL to the leader's Patroni and to its
# postmaster at once. Both must die: a killed postmaster alone is restarted
# in place by its Patroni (no failover), and a killed Patroni alone leaves a
# primary that waits forever for its synchronous standby.
# Prints the killed member's name (pg1..pg3) on stdout. With --back-after N it
# then waits N seconds and brings that member back as a replica.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
need_root "$@"

back_after=
if [ "${1:-}" = --back-after ]; then
  back_after=${2:?usage: kill-pg-primary.sh [--back-after SECONDS]}
fi

leader=$(patroni_members_with_role leader) || die "no Patroni member answers"
[ -n "$leader" ] || die "the cluster has no running leader"
patroni=$(pid_of "patroni-$leader") || die "$leader: Patroni is not running"
postmaster=$(postmaster_pid "$leader") || die "$leader: no postmaster"
kill -KILL "$patroni" "$postmaster"
log "$leader: killed Patroni (PID $patroni) and postmaster (PID $postmaster)"
echo "$leader"

if [ -n "$back_after" ]; then
  sleep "$back_after"
  "$HA_SCRIPTS/start-member.sh" "$leader" --wait >&2
fi
