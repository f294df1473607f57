#!/usr/bin/env bash
# Starts the Patroni member pgN (1, 2, 3 or pg1..pg3) when it is not running,
# for instance after kill-pg-primary.sh. A member that was the primary comes
# back as a replica: Patroni rewinds it (pg_rewind) onto the new timeline, or
# clones it afresh when rewinding fails. Returns once Patroni runs; pass
# --wait to return only once the member streams from the leader again.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
need_root "$@"

[ $# -ge 1 ] || die "usage: start-member.sh pgN [--wait]"
i=$(member_index "$1")
name=${PG_MEMBERS[$i]}
dir=$(member_dir "$name")
[ -f "$dir/patroni.yml" ] || die "$name has no configuration: run make ha-up first"

if pid=$(pid_of "patroni-$name"); then
  log "$name: Patroni already runs (PID $pid)"
else
  # Patroni must start from a folder the postgres user can read: from one it
  # cannot, it hangs in "bootstrap in progress" and ignores SIGTERM. setpriv
  # execs (runuser would fork), so the recorded PID is Patroni's own.
  cd "$dir"
  start_daemon "patroni-$name" "$dir/patroni.log" \
    setpriv --reuid=postgres --regid=postgres --init-groups \
    env HOME=/var/lib/postgresql USER=postgres LOGNAME=postgres PATH=/usr/bin:/bin \
    patroni "$dir/patroni.yml"
  log "$name: Patroni started (PID $(cat "$RUN/patroni-$name.pid"))"
fi

if [ "${2:-}" = --wait ]; then
  member_streams() {
    patroni_cluster | "$PY" -c '
import json, sys
ok = any(m["name"] == sys.argv[1] and m["state"] in ("running", "streaming")
         for m in json.load(sys.stdin)["members"])
sys.exit(0 if ok else 1)
' "$name"
  }
  wait_until 120 "$name to run" member_streams
  log "$name: running"
fi
