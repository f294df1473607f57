#!/usr/bin/env python3
"""Renders docs/ops/graphs.png, the graphs an operator watches, from a real
Prometheus scrape of a real stack under load.

Run by `make ops-graphs` (scripts/ops-graphs.sh starts the API, the workers
and a private Prometheus scraping them every second, then runs this). The
run: steady purchases; the workers stopped for a while (the outbox backlog
and its oldest event's age grow; the API keeps taking orders), started again
(the backlog drains); one poison message (the dead-letter queue); a burst
of retries (idempotent replays). Then one range query per panel.

Environment: API (base URL), KEY (an API key), PROM (Prometheus base URL),
WORKERS_STOP / WORKERS_START (shell commands), POISON (a shell command that
publishes one unparseable message), OUT (the PNG's path).
"""

import json
import os
import subprocess
import threading
import time
import urllib.parse
import urllib.request
import uuid

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

API = os.environ["API"]
KEY = os.environ["KEY"]
PROM = os.environ["PROM"]
OUT = os.environ.get("OUT", "docs/ops/graphs.png")


def call(method, path, body=None, idem=None):
    headers = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
    if idem:
        headers["Idempotency-Key"] = idem
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(API + path, data=data, headers=headers, method=method)
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")


def setup():
    run = uuid.uuid4().hex[:8]
    s, buyer = call("POST", "/v1/accounts", {"reference": f"buyer-{run}", "currency": "USD"}, f"acct-b-{run}")
    assert s in (200, 201), buyer
    s, seller = call("POST", "/v1/accounts", {"reference": f"seller-{run}", "currency": "USD"}, f"acct-s-{run}")
    assert s in (200, 201), seller
    s, ext = call(
        "POST", "/v1/accounts",
        {"reference": f"external-{run}", "currency": "USD", "allow_negative": True}, f"acct-e-{run}",
    )
    assert s in (200, 201), ext
    s, t = call(
        "POST", "/v1/transfers",
        {"source_account_id": ext["id"], "destination_account_id": buyer["id"], "amount": "1000000.00", "currency": "USD"},
        f"fund-{run}",
    )
    assert s == 201, t
    s, r = call("POST", f"/v1/skus/mug-{run}/restocks", {"quantity": 1000000}, f"restock-{run}")
    assert s == 201, r
    return run, buyer["id"], seller["id"]


def purchase(run, buyer, seller, n):
    order = f"{run}-{n}"
    call("POST", "/v1/reservations", {"order_id": order, "sku": f"mug-{run}", "quantity": 1}, f"{order}:mug")
    charge = {"order_id": order, "attempt": 1, "buyer_account_id": buyer, "seller_account_id": seller,
              "amount": "12.00", "currency": "USD", "receipt_email": f"{order}@example.com"}
    call("POST", "/v1/charges", charge, f"{order}:1")
    return charge, f"{order}:1"


def load(run, buyer, seller, stop, retries, clients=4):
    counter = iter(range(10**9))
    lock = threading.Lock()

    def client():
        while not stop.is_set():
            with lock:
                n = next(counter)
            charge, idem = purchase(run, buyer, seller, n)
            if retries.is_set():
                for _ in range(3):
                    call("POST", "/v1/charges", charge, idem)

    threads = [threading.Thread(target=client, daemon=True) for _ in range(clients)]
    for t in threads:
        t.start()
    return threads


def query_range(q, start, end, step=1):
    params = urllib.parse.urlencode({"query": q, "start": start, "end": end, "step": step})
    with urllib.request.urlopen(f"{PROM}/api/v1/query_range?{params}", timeout=30) as r:
        body = json.load(r)
    assert body["status"] == "success", body
    return body["data"]["result"]


def main():
    run, buyer, seller = setup()
    stop, retries = threading.Event(), threading.Event()
    start = time.time()
    marks = []
    threads = load(run, buyer, seller, stop, retries)
    time.sleep(25)
    marks.append((time.time(), "workers stopped"))
    subprocess.run(os.environ["WORKERS_STOP"], shell=True, check=True)
    time.sleep(25)
    marks.append((time.time(), "workers started"))
    subprocess.run(os.environ["WORKERS_START"], shell=True, check=True)
    time.sleep(20)
    marks.append((time.time(), "poison message"))
    subprocess.run(os.environ["POISON"], shell=True, check=True)
    time.sleep(10)
    marks.append((time.time(), "clients retry"))
    retries.set()
    time.sleep(20)
    stop.set()
    for t in threads:
        t.join()
    time.sleep(5)
    end = time.time()

    panels = [
        ("API requests per second, by route (2xx)",
         [('sum by (route) (rate(ledger_http_requests_total{route=~"/v1/.*",status=~"2.."}[5s]))', "{route}")],
         "req/s"),
        ("API latency, p50 and p99 (POST /v1/charges)",
         [('histogram_quantile(0.5, sum by (le) (rate(ledger_http_request_duration_seconds_bucket{route="/v1/charges"}[10s])))', "p50"),
          ('histogram_quantile(0.99, sum by (le) (rate(ledger_http_request_duration_seconds_bucket{route="/v1/charges"}[10s])))', "p99")],
         "seconds"),
        ("Outbox: unpublished events",
         [("max(ledger_outbox_unpublished)", "unpublished")], "events"),
        ("Outbox: age of the oldest unpublished event",
         [("max(ledger_outbox_oldest_unpublished_age_seconds)", "age")], "seconds"),
        ("Consumers: messages per second, by outcome",
         [('sum by (consumer, outcome) (rate(ledger_consumer_messages_total[5s]))', "{consumer} {outcome}")], "msg/s"),
        ("Queues: waiting messages (dead letters included)",
         [("max by (queue) (ledger_queue_messages)", "{queue}")], "messages"),
        ("Idempotent replays per second",
         [("sum(rate(ledger_idempotent_replays_total[5s]))", "replays")], "req/s"),
        ("Database pool: connections in use (API)",
         [('max(ledger_db_pool_connections{pool="api"}) - max(ledger_db_pool_idle_connections{pool="api"})', "in use"),
          ('max(ledger_db_pool_waiting{pool="api"})', "waiting")], "connections"),
    ]
    fig, axes = plt.subplots(4, 2, figsize=(14, 14), sharex=True)
    for ax, (title, queries, unit) in zip(axes.flat, panels):
        for q, legend in queries:
            for series in query_range(q, start, end):
                xs = [float(t) - start for t, _ in series["values"]]
                ys = [float(v) for _, v in series["values"]]
                label = legend.format(**series["metric"]) if "{" in legend else legend
                ax.plot(xs, ys, label=label, linewidth=1.2)
        for t, what in marks:
            ax.axvline(t - start, color="grey", linestyle=":", linewidth=0.8)
        ax.set_title(title, fontsize=10)
        ax.set_ylabel(unit, fontsize=9)
        ax.grid(True, alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7, loc="upper left")
    for ax in axes[-1]:
        ax.set_xlabel("seconds since the start of the run")
    notes = ", ".join(f"{what} at {t - start:.0f} s" for t, what in marks)
    fig.suptitle(f"Ledger under purchases, from a real Prometheus scrape (1 s): {notes}", fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    fig.savefig(OUT, dpi=90)
    print(f"wrote {OUT} ({end - start:.0f} s of metrics)")


if __name__ == "__main__":
    main()
