#!/usr/bin/env bash
# Renders docs/ops/graphs.png from a real run (scripts/ops-graphs.py): a
# database and broker names of its own, the API and the workers built by
# `make build`, a private Prometheus scraping both every second, all removed
# afterwards. Needs Debian's prometheus, python3-matplotlib and amqp-tools.
set -euo pipefail
cd "$(dirname "$0")/.."

PGHOST_URL=${PGHOST_URL:-postgres://postgres@127.0.0.1:5432}
AMQP=${AMQP_URL:-amqp://guest:guest@127.0.0.1:5672/%2f}
for tool in prometheus amqp-publish python3; do
  command -v "$tool" >/dev/null || { echo "ops-graphs: $tool is missing" >&2; exit 1; }
done
python3 -c 'import matplotlib' 2>/dev/null || { echo "ops-graphs: python3-matplotlib is missing" >&2; exit 1; }

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
dir=$(mktemp -d)
db=ledger_ops_graphs
prefix=ops-graphs-$RANDOM
api_port=$(free_port); workers_port=$(free_port); prom_port=$(free_port)
export DATABASE_URL=$PGHOST_URL/$db AMQP_URL=$AMQP AMQP_PREFIX=$prefix EMAIL_DIR=$dir/emails RUST_LOG=warn
export HTTP_ADDR=127.0.0.1:$api_port WORKERS_METRICS_ADDR=127.0.0.1:$workers_port RELAY_POLL_MS=200

cleanup() {
  [ -f "$dir/workers.pid" ] && kill "$(cat "$dir/workers.pid")" 2>/dev/null || true
  kill "${api:-}" "${prom:-}" 2>/dev/null || true
  wait 2>/dev/null || true
  psql "$PGHOST_URL/postgres" -qc "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null 2>&1 || true
  rm -rf "$dir"
}
trap cleanup EXIT

psql "$PGHOST_URL/postgres" -qc "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null
psql "$PGHOST_URL/postgres" -qc "CREATE DATABASE $db" >/dev/null
target/debug/ledger-api migrate >/dev/null
key=$(target/debug/ledger-api create-tenant ops-graphs 2>/dev/null)
RATE_LIMIT_PER_SEC=0 target/debug/ledger-api serve & api=$!

cat > "$dir/start-workers.sh" <<SH
#!/usr/bin/env bash
target/debug/ledger-workers all & echo \$! > "$dir/workers.pid"
SH
cat > "$dir/stop-workers.sh" <<SH
#!/usr/bin/env bash
kill -TERM "\$(cat "$dir/workers.pid")"; while kill -0 "\$(cat "$dir/workers.pid")" 2>/dev/null; do sleep 0.1; done
SH
chmod +x "$dir"/*.sh
"$dir/start-workers.sh"

cat > "$dir/prometheus.yml" <<YML
global: { scrape_interval: 1s, evaluation_interval: 1s }
scrape_configs:
  - job_name: ledger-api
    static_configs: [{ targets: ["127.0.0.1:$api_port"] }]
  - job_name: ledger-workers
    static_configs: [{ targets: ["127.0.0.1:$workers_port"] }]
YML
prometheus --config.file="$dir/prometheus.yml" --storage.tsdb.path="$dir/data" \
  --web.listen-address="127.0.0.1:$prom_port" >"$dir/prometheus.log" 2>&1 & prom=$!

for _ in $(seq 100); do
  curl -sf "http://127.0.0.1:$api_port/healthz" >/dev/null && curl -sf "http://127.0.0.1:$workers_port/metrics" >/dev/null \
    && curl -sf "http://127.0.0.1:$prom_port/-/ready" >/dev/null && break
  sleep 0.2
done

API=http://127.0.0.1:$api_port KEY=$key PROM=http://127.0.0.1:$prom_port \
WORKERS_STOP="$dir/stop-workers.sh" WORKERS_START="$dir/start-workers.sh" \
POISON="amqp-publish --url='$AMQP' -r '$prefix.inventory.v2' -b 'not json'" \
OUT=${OUT:-docs/ops/graphs.png} python3 scripts/ops-graphs.py

# the run's queues go with it
for q in inventory.v2 email.v2 dead-letter; do
  amqp-delete-queue --url="$AMQP" -q "$prefix.$q" >/dev/null 2>&1 || true
done
