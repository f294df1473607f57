#!/usr/bin/env bash
# Renders docs/ops/graphs.png from a real run (scripts/ops-graphs.py): a
# database and broker names of its own, the API and the workers built by
# `make build` connecting as their roles, a private Prometheus scraping both
# every second, all removed afterwards. `make ops-graphs` passes OWNER_URL,
# API_DATABASE_URL and WORKERS_DATABASE_URL (their database name is replaced
# by the run's own). Needs Debian's prometheus, python3-matplotlib and
# amqp-tools.
set -euo pipefail
cd "$(dirname "$0")/.."

owner_url=${OWNER_URL:?run it through make ops-graphs}
api_url=${API_DATABASE_URL:?run it through make ops-graphs}
workers_url=${WORKERS_DATABASE_URL:?run it through make ops-graphs}
AMQP=${AMQP_URL:-amqp://guest:guest@127.0.0.1:5672/%2f}
# Debian's python3, where python3-matplotlib is installed
PY=${PYTHON:-/usr/bin/python3}
for tool in prometheus amqp-publish "$PY"; do
  command -v "$tool" >/dev/null || { echo "ops-graphs: $tool is missing" >&2; exit 1; }
done
"$PY" -c 'import matplotlib' 2>/dev/null || { echo "ops-graphs: python3-matplotlib is missing" >&2; exit 1; }

free_port() { "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
dir=$(mktemp -d)
db=ledger_ops_graphs
prefix=ops-graphs-$RANDOM
api_port=$(free_port); api_metrics_port=$(free_port); prom_port=$(free_port)
declare -A port=([relay]=$(free_port) [inventory]=$(free_port) [email]=$(free_port))
export AMQP_URL=$AMQP AMQP_PREFIX=$prefix EMAIL_DIR=$dir/emails RUST_LOG=warn
export HTTP_ADDR=127.0.0.1:$api_port RELAY_POLL_MS=200

cleanup() {
  for role in relay inventory email; do
    [ -f "$dir/$role.pid" ] && kill "$(cat "$dir/$role.pid")" 2>/dev/null || true
  done
  kill "${api:-}" "${prom:-}" 2>/dev/null || true
  wait 2>/dev/null || true
  psql "${owner_url%/*}/postgres" -qc "DROP DATABASE IF EXISTS $db" >/dev/null 2>&1 || true
  rm -rf "$dir"
}
trap cleanup EXIT

psql "${owner_url%/*}/postgres" -qc "DROP DATABASE IF EXISTS $db" >/dev/null
psql "${owner_url%/*}/postgres" -qc "CREATE DATABASE $db" >/dev/null
DATABASE_URL="${owner_url%/*}/$db" target/debug/ledger-api migrate >/dev/null
key=$(DATABASE_URL="${api_url%/*}/$db" target/debug/ledger-api create-tenant ops-graphs 2>/dev/null)
DATABASE_URL="${api_url%/*}/$db" RATE_LIMIT_PER_SEC=0 METRICS_ADDR=127.0.0.1:$api_metrics_port target/debug/ledger-api serve & api=$!

# One process per role, each with its metrics, so that one can be stopped
# while the others still report the outbox and the queues.
cat > "$dir/start.sh" <<SH
#!/usr/bin/env bash
set -e; declare -A port=([relay]=${port[relay]} [inventory]=${port[inventory]} [email]=${port[email]})
DATABASE_URL="${workers_url%/*}/$db" WORKERS_METRICS_ADDR=127.0.0.1:\${port[\$1]} target/debug/ledger-workers "\$1" & echo \$! > "$dir/\$1.pid"
SH
cat > "$dir/stop.sh" <<SH
#!/usr/bin/env bash
pid=\$(cat "$dir/\$1.pid"); kill -TERM "\$pid"; while kill -0 "\$pid" 2>/dev/null; do sleep 0.1; done
SH
chmod +x "$dir"/*.sh
for role in relay inventory email; do "$dir/start.sh" "$role"; done

cat > "$dir/prometheus.yml" <<YML
global: { scrape_interval: 1s, evaluation_interval: 1s }
scrape_configs:
  - job_name: ledger-api
    static_configs: [{ targets: ["127.0.0.1:$api_metrics_port"] }]
  - job_name: ledger-workers
    static_configs: [{ targets: ["127.0.0.1:${port[relay]}", "127.0.0.1:${port[inventory]}", "127.0.0.1:${port[email]}"] }]
YML
prometheus --config.file="$dir/prometheus.yml" --storage.tsdb.path="$dir/data" \
  --web.listen-address="127.0.0.1:$prom_port" >"$dir/prometheus.log" 2>&1 & prom=$!

for _ in $(seq 100); do
  curl -sf "http://127.0.0.1:$api_port/healthz" >/dev/null && curl -sf "http://127.0.0.1:${port[relay]}/metrics" >/dev/null \
    && curl -sf "http://127.0.0.1:$prom_port/-/ready" >/dev/null && break
  sleep 0.2
done

API=http://127.0.0.1:$api_port KEY=$key PROM=http://127.0.0.1:$prom_port \
STOP="$dir/stop.sh" START="$dir/start.sh" \
POISON="amqp-publish --url='$AMQP' -r '$prefix.inventory.v2' -b 'not json'" \
OUT=${OUT:-docs/ops/graphs.png} "$PY" scripts/ops-graphs.py

# the run's queues go with it
for q in inventory.v2 email.v2 dead-letter; do
  amqp-delete-queue --url="$AMQP" -q "$prefix.$q" >/dev/null 2>&1 || true
done
