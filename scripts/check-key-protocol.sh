#!/usr/bin/env bash
# Fails when code in `api` outside its idempotency engine (api/src/idempotency/)
# claims an Idempotency-Key, stores or reads back an answer, or passes a key's
# crash points: the protocol is written once, and every handler reaches it
# through one call (`run`, `run_batched`, `run_two_phase`). A stored answer's
# type (`ledger::idempotency::Answer`) may be named anywhere.
set -euo pipefail
cd "$(dirname "$0")/.."

found=$(grep -rnE 'ledger::idempotency::([a-z_]+|\{)|"api-after-' api/src --include='*.rs' \
  | grep -v '^api/src/idempotency/' \
  | grep -vE 'ledger::idempotency::Answer\b[^:]' || true)
if [ -n "$found" ]; then
  echo "$found"
  echo "check-key-protocol: the lines above reach Idempotency-Key rows or a key's crash points outside api/src/idempotency/" >&2
  exit 1
fi
