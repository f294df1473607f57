# The two commands a newcomer needs: `make run` and `make test`.
SHELL := /bin/bash

# The superuser: only for maintenance of this machine's server (clean-test-dbs,
# the benchmark's own database). The service never connects as it.
PGHOST_URL   ?= postgres://postgres@127.0.0.1:5432
# The service's roles (scripts/ensure-services.sh makes them; the passwords
# are development defaults, set LEDGER_*_PASSWORD there and here elsewhere).
PG_ADDR      ?= 127.0.0.1:5432
DB_NAME      ?= ledger
OWNER_URL    ?= postgres://ledger_owner:$(or $(LEDGER_OWNER_PASSWORD),ledger_owner)@$(PG_ADDR)/$(DB_NAME)
API_DATABASE_URL     ?= postgres://ledger_api:$(or $(LEDGER_API_PASSWORD),ledger_api)@$(PG_ADDR)/$(DB_NAME)
WORKERS_DATABASE_URL ?= postgres://ledger_worker:$(or $(LEDGER_WORKER_PASSWORD),ledger_worker)@$(PG_ADDR)/$(DB_NAME)
AMQP_URL     ?= amqp://guest:guest@127.0.0.1:5672/%2f?heartbeat=10
HTTP_ADDR    ?= 127.0.0.1:8080
# where `make run`'s API and workers serve their metrics (not exported: the
# tests' processes must not all take these ports)
API_METRICS_ADDR     ?= 127.0.0.1:9186
WORKERS_METRICS_ADDR ?= 127.0.0.1:9187
export AMQP_URL HTTP_ADDR

CARGO ?= cargo
API     := target/debug/ledger-api
WORKERS := target/debug/ledger-workers
FAKE_PROVIDER := target/debug/fake-provider
# The local fake payment provider `make run` starts (the service's GATEWAY_* defaults point at it).
PROVIDER_ADDR ?= 127.0.0.1:12111

.PHONY: ops-graphs ha-up ha-down ha-status chaos-ha bench run test chaos test-rust test-contract fuzz services build db openapi openapi-check fmt fmt-check lint clean-test-dbs model

## Start PostgreSQL and RabbitMQ if they are not running (installing them if absent).
services:
	@scripts/ensure-services.sh

## The binaries without crash points (the tests crate turns them on in a workspace build),
## and the fake payment provider.
build:
	$(CARGO) build -p api -p workers -p gateway --bins

## Create the database when missing (owned by ledger_owner) and migrate it as the owner.
db: services build
	@psql "$(dir $(OWNER_URL))postgres" -Atqc "SELECT 1 FROM pg_database WHERE datname = '$(DB_NAME)'" | grep -q 1 \
	  || psql "$(dir $(OWNER_URL))postgres" -qc "CREATE DATABASE \"$(DB_NAME)\""
	@owner=$$(psql "$(dir $(OWNER_URL))postgres" -Atqc "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = '$(DB_NAME)'"); \
	  [ "$$owner" = ledger_owner ] || { echo "database $(DB_NAME) belongs to $$owner, not ledger_owner (made before the service roles):" \
	    "drop it, or run with DB_NAME=another" >&2; exit 1; }
	@DATABASE_URL="$(OWNER_URL)" $(API) migrate

## The whole stack, ready for requests: the fake payment provider, the API and the workers. Ctrl-C stops it.
## The service is given the fake's published development secrets explicitly: it refuses them
## against any provider that is not on this machine.
run: db
	@set -u; \
	key=$$(DATABASE_URL="$(OWNER_URL)" $(API) create-tenant dev 2>/dev/null) || { echo "could not create the dev tenant" >&2; exit 1; }; \
	echo ""; \
	echo "  API:      http://$(HTTP_ADDR)/v1"; \
	echo "  Docs:     http://$(HTTP_ADDR)/docs/"; \
	echo "  Spec:     http://$(HTTP_ADDR)/openapi.json"; \
	echo "  API key:  $$key   (tenant \"dev\")"; \
	echo "  Workers:  relay, inventory, email, completer, expirer (emails go to $${EMAIL_DIR:-target/emails}/ unless SMTP_URL is set)"; \
	echo "  Provider: http://$(PROVIDER_ADDR) (the fake; cards pm_card_visa, pm_card_chargeDeclined; state in target/fake-provider)"; \
	echo "  Metrics:  http://$(API_METRICS_ADDR)/metrics and http://$(WORKERS_METRICS_ADDR)/metrics (ops/prometheus)"; \
	echo ""; \
	echo "  export KEY=$$key"; \
	echo ""; \
	$(FAKE_PROVIDER) --listen $(PROVIDER_ADDR) --state-dir target/fake-provider \
	  --webhook-url http://$(HTTP_ADDR)/v1/provider/webhooks >/dev/null & provider=$$!; \
	export GATEWAY_URL=http://$(PROVIDER_ADDR); \
	export GATEWAY_SECRET_KEY=sk_test_ledger_local GATEWAY_WEBHOOK_SECRET=whsec_ledger_local \
	  GATEWAY_KEY_SECRET=ledger-local-provider-key-secret; \
	export WEBHOOK_ALLOW_PRIVATE=true; \
	DATABASE_URL="$(API_DATABASE_URL)" METRICS_ADDR="$(API_METRICS_ADDR)" $(API) serve & api=$$!; \
	DATABASE_URL="$(WORKERS_DATABASE_URL)" WORKERS_METRICS_ADDR="$(WORKERS_METRICS_ADDR)" $(WORKERS) all & workers=$$!; \
	trap 'kill -TERM $$api $$workers $$provider 2>/dev/null' INT TERM; \
	wait -n $$api $$workers $$provider; \
	kill -TERM $$api $$workers $$provider 2>/dev/null; \
	wait

## Every test, against real PostgreSQL and RabbitMQ: the Rust suite, then the API contract.
test: services test-rust test-contract

## Tests run by cargo-nextest, side by side (.config/nextest.toml); installed
## from crates.io when it is missing.
test-rust: services
	@command -v cargo-nextest >/dev/null || $(CARGO) install --locked cargo-nextest
	$(CARGO) build --workspace --bins --features ledger/crash-points
	TEST_DATABASE_URL=$$(scripts/test-postgres.sh) $(CARGO) nextest run --workspace --features ledger/crash-points

## The committed spec, proven against a live server: generated Python and TypeScript
## clients run the walkthrough's purchase (docs/walkthrough.md), a bounded schemathesis run, the docs page in
## headless Chromium (tests/contract/run.sh; tools are cached in .tools/). The binaries are
## the ones test-rust builds (crash points compiled in, inert unless armed), so that
## `make test` builds once.
test-contract: services
	$(CARGO) build --workspace --bins --features ledger/crash-points
	tests/contract/run.sh quick

## The payment protocol's model (docs/model.md), checked exhaustively in a release
## build: the bounded checks `make test` runs, then the deep ones; prints the states
## explored and each counterexample's trace. Then the real service against the
## model of its contract (tests/tests/model_based.rs), MODEL_CASES random sequences
## from a random seed, printed; `make model LEDGER_MODEL_SEED=<64 hex digits>` replays one.
MODEL_CASES ?= 300
model: services
	$(CARGO) test -p ledger-model --release -- --include-ignored --nocapture --test-threads 1
	@command -v cargo-nextest >/dev/null || $(CARGO) install --locked cargo-nextest
	$(CARGO) build --workspace --bins --features ledger/crash-points
	seed=$${LEDGER_MODEL_SEED:-$$(od -An -N32 -tx1 /dev/urandom | tr -d ' \n')}; \
	echo "model-based run: $(MODEL_CASES) cases, seed $$seed (replay: make model LEDGER_MODEL_SEED=$$seed)"; \
	LEDGER_MODEL_SEED=$$seed LEDGER_MODEL_CASES=$(MODEL_CASES) TEST_DATABASE_URL=$$(scripts/test-postgres.sh) \
	  $(CARGO) nextest run --workspace --features ledger/crash-points --no-capture -E 'binary(model_based)'

## The seeded fault campaign against real processes; any audit violation fails it and prints the seed.
## `make chaos CHAOS_SEED=42 CHAOS_SECS=60` replays seed 42 for a minute (the seed defaults to the clock).
CHAOS_SECS    ?= 600
CHAOS_CLIENTS ?= 8
CHAOS_APIS    ?= 3
chaos: services
	$(CARGO) build --workspace --bins --features ledger/crash-points
	CHAOS_SECS=$(CHAOS_SECS) CHAOS_CLIENTS=$(CHAOS_CLIENTS) CHAOS_APIS=$(CHAOS_APIS) target/debug/chaos

## The fault campaign against the highly available stack (`make ha-up` first when it
## is not running; the stack is left running): kills the PostgreSQL primary, the
## RabbitMQ node leading a queue, API and worker processes, one at a time, and prints
## each failover's unavailability. `make chaos-ha CHAOS_SEED=42 CHAOS_SECS=120` replays.
chaos-ha: services
	$(CARGO) build --workspace --bins --features ledger/crash-points
	CHAOS_SECS=$(CHAOS_SECS) CHAOS_CLIENTS=$(CHAOS_CLIENTS) target/debug/chaos-ha

## The long schemathesis run: many more examples per operation, plus stateful sequences.
fuzz: services build
	tests/contract/run.sh fuzz

## Regenerate the committed OpenAPI document from the code.
openapi: build
	@$(API) openapi > openapi/openapi.json
	@echo "openapi/openapi.json regenerated"

openapi-check: build
	@$(API) openapi --check openapi/openapi.json

fmt:
	$(CARGO) fmt --all

fmt-check:
	$(CARGO) fmt --all -- --check

## Clippy with warnings denied, no import circle between the modules of any
## crate (crate roots included), Idempotency-Key rows reached only by the API's
## idempotency engine, and the Prometheus configuration and alerting rules valid and
## passing their unit tests.
lint:
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	@scripts/check-module-cycles.py
	@scripts/check-key-protocol.sh
	@command -v promtool >/dev/null || { echo "promtool is missing: run \`make services\`" >&2; exit 1; }
	@cd ops/prometheus && promtool check config --syntax-only prometheus.yml >/dev/null && promtool check rules rules.yml >/dev/null && promtool test rules rules.test.yml >/dev/null

## Drop test databases left by interrupted test runs.
clean-test-dbs: services
	@psql "$(PGHOST_URL)/postgres" -Atqc "SELECT datname FROM pg_database WHERE datname LIKE 'ledger\_t\_%' OR datname LIKE 'ledger\_tpl\_%'" \
	  | while read -r db; do psql "$(PGHOST_URL)/postgres" -qc "DROP DATABASE \"$$db\" WITH (FORCE)"; done

## Throughput and latency over HTTP (release build), beside pgbench running the
## same SQL, the growth figure (new charges before and after seeding
## BENCH_GROWTH_ENTRIES ledger entries, default 10000000, 0 skips it) and the
## messaging pipeline (relay, inventory worker, end-to-end lag, workers' memory);
## prints a table, writes bench/results/latest.json and latest.svg.
## BENCH_DURATION=N seconds per workload (default 10), BENCH_CONCURRENCY=16,64,128.
bench: services
	$(CARGO) build --release -p api -p workers -p gateway -p ledger-bench
	target/release/ledger-bench --pg $(PGHOST_URL)

## docs/ops/graphs.png, the operator graphs of docs/operations.md, from a real Prometheus
## scrape of a real run (scripts/ops-graphs.sh; about two minutes).
ops-graphs: services build
	@OWNER_URL="$(OWNER_URL)" API_DATABASE_URL="$(API_DATABASE_URL)" WORKERS_DATABASE_URL="$(WORKERS_DATABASE_URL)" \
	  scripts/ops-graphs.sh

## The highly available stack on this machine (docs/ha.md): etcd, three PostgreSQL
## members under Patroni behind HAProxy, a three-node RabbitMQ cluster, all in .ha/
## on their own ports. Prints the settings to use and writes them to .ha/env.
ha-up:
	@scripts/ha/up.sh

## Stops everything `ha-up` started and removes .ha/.
ha-down:
	@scripts/ha/down.sh

## The PostgreSQL leader and sync standby, HAProxy's view, the RabbitMQ cluster.
ha-status:
	@scripts/ha/status.sh
