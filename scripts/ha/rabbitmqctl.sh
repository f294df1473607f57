#!/usr/bin/env bash
# rabbitmqctl for the stack's nodes (their epmd, cookie and CLI ports), e.g.
# `scripts/ha/rabbitmqctl.sh -n ha2@localhost list_queues name leader members`.
# The same goes for rabbitmq-queues: `scripts/ha/rabbitmqctl.sh queues quorum_status -n ha1@localhost Q`.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
need_root "$@"
[ -d "$HA_DIR/rabbit/home" ] || die "no stack: run make ha-up first"
if [ "${1:-}" = queues ]; then
  shift
  rabbitmq_queues_ "$@"
else
  rabbitmqctl_ "$@"
fi
