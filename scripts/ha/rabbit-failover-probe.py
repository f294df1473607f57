#!/usr/bin/python3
"""Measures the loss of a quorum queue's leader node in the highly available stack.

A fresh quorum queue is declared (replicated on the three nodes). Two
publishers send numbered persistent messages with publisher confirms, one at a
time, opening a new channel after a nack: "moving" is connected to the node that leads the queue and must move to
another node when it dies (it walks the AMQP_URL list), "staying" is connected
to another node and keeps its connection. After --before seconds the leader
node's beam is killed (scripts/ha/kill-rabbit-node.sh leader-of QUEUE). The
run reports, for each publisher, the seconds from the kill to its first
confirm afterwards, then restarts the killed node, drains the queue and
checks that every confirmed message is in it. Messages present without a
confirm are allowed only among the publishes that failed (at-least-once:
a publisher republishes those); duplicates are counted.

Uses Debian's python3-pika: run with /usr/bin/python3. Exits non-zero if a
confirmed message is missing.
"""

import argparse
import json
import os
import subprocess
import sys
import threading
import time

import pika
import pika.exceptions

HERE = os.path.dirname(os.path.abspath(__file__))


def urls():
    return [u for u in os.environ["AMQP_URL"].split(",") if u]


def params(url):
    p = pika.URLParameters(url)
    p.connection_attempts = 1
    p.socket_timeout = 2
    p.blocked_connection_timeout = 10
    p.heartbeat = 10
    return p


def node_url(node):
    """The URL in AMQP_URL of a node named haN@localhost (listed in order)."""
    return urls()[int(node.split("@")[0][2:]) - 1]


def ctl(*args):
    env_nodes = os.environ["HA_RABBIT_NODES"].split()
    last = None
    for node in env_nodes:
        out = subprocess.run([os.path.join(HERE, "rabbitmqctl.sh"), "-q", "-n", node, *args],
                             capture_output=True, text=True)
        if out.returncode == 0:
            return out.stdout
        last = out.stderr
    raise RuntimeError(f"rabbitmqctl {' '.join(args)}: {last}")


def queue_row(queue):
    for line in ctl("list_queues", "name", "leader", "members", "--no-table-headers").splitlines():
        cols = line.split("\t")
        if cols[0] == queue:
            return cols[1], cols[2]
    raise RuntimeError(f"queue {queue} not found")


class Publisher(threading.Thread):
    def __init__(self, name, queue, first_url, stop, reopen_on_nack):
        super().__init__(daemon=True)
        self.reopen_on_nack = reopen_on_nack
        self.reopened = 0
        self.name_, self.queue, self.stop = name, queue, stop
        order = urls()
        k = order.index(first_url)
        self.order = order[k:] + order[:k]
        self.confirmed, self.uncertain = set(), set()
        self.events = []  # (time, ok, node index)
        self.reconnects = 0
        self.errors = {}

    def failed(self, k, err):
        self.events.append((time.monotonic(), False, k))
        name = type(err).__name__
        self.errors[name] = self.errors.get(name, 0) + 1

    def run(self):
        conn, ch, n, k = None, None, 0, 0
        while not self.stop.is_set():
            if ch is None:
                url = self.order[k % len(self.order)]
                try:
                    conn = pika.BlockingConnection(params(url))
                    ch = conn.channel()
                    ch.confirm_delivery()
                except pika.exceptions.AMQPError as err:
                    self.failed(k, err)
                    k += 1  # the next node in the list
                    self.reconnects += 1
                    time.sleep(0.05)
                    continue
            mid = f"{self.name_}-{n}"
            n += 1
            try:
                ch.basic_publish("", self.queue, mid.encode(), mandatory=True,
                                 properties=pika.BasicProperties(delivery_mode=2, message_id=mid))
                self.confirmed.add(mid)
                self.events.append((time.monotonic(), True, k))
            except (pika.exceptions.NackError, pika.exceptions.UnroutableError) as err:
                self.uncertain.add(mid)
                self.failed(k, err)
                time.sleep(0.05)
                if self.reopen_on_nack:
                    # A channel opened while the queue had no leader keeps
                    # nacking every publish (RabbitMQ 3.10): open another.
                    try:
                        ch.close()
                        ch = conn.channel()
                        ch.confirm_delivery()
                        self.reopened += 1
                    except pika.exceptions.AMQPError:
                        ch = None
            except pika.exceptions.AMQPError as err:
                self.uncertain.add(mid)
                self.failed(k, err)
                try:
                    conn.close()
                except Exception:
                    pass
                conn, ch = None, None
                k += 1
                self.reconnects += 1
                time.sleep(0.05)
        if conn is not None and conn.is_open:
            conn.close()

    def after(self, t):
        """Seconds from t to the first confirm after t that follows a failure
        (or after t at all, when this publisher saw no failure), and the
        longest gap between two confirms around t."""
        fail = next((e for e in self.events if e[0] > t and not e[1]), None)
        since = fail[0] if fail else t
        ok = next((e for e in self.events if e[0] > since and e[1]), None)
        oks = [e[0] for e in self.events if e[1]]
        gap = max((b - a for a, b in zip(oks, oks[1:]) if b > t - 1 and a < t + 30), default=None)
        return (round(ok[0] - t, 2) if ok else None, round(gap, 2) if gap else None, fail is not None)


def one_run(args, run):
    queue = f"ha-probe-{run}"
    conn = pika.BlockingConnection(params(urls()[0]))
    ch = conn.channel()
    ch.queue_declare(queue, durable=True, arguments={"x-queue-type": "quorum"})
    conn.close()
    leader, members = queue_row(queue)
    other = next(n for n in os.environ["HA_RABBIT_NODES"].split() if n != leader)

    stop = threading.Event()
    reopen = not args.keep_channel_on_nack
    moving = Publisher("moving", queue, node_url(leader), stop, reopen)
    staying = Publisher("staying", queue, node_url(other), stop, reopen)
    moving.start()
    staying.start()
    time.sleep(args.before)
    out = subprocess.run([os.path.join(HERE, "kill-rabbit-node.sh"), "leader-of", queue],
                         capture_output=True, text=True)
    t_kill = time.monotonic()
    if out.returncode != 0:
        stop.set()
        sys.exit(f"rabbit-failover-probe: kill-rabbit-node.sh failed: {out.stderr}")
    killed = out.stdout.strip()
    time.sleep(args.after)
    stop.set()
    moving.join(30)
    staying.join(30)
    new_leader, _ = queue_row(queue)

    t0 = time.monotonic()
    subprocess.run([os.path.join(HERE, "start-rabbit-node.sh"), killed], check=True,
                   stderr=subprocess.DEVNULL)
    back = time.monotonic() - t0

    # Drain through a node that was never killed.
    seen, duplicates = set(), 0
    conn = pika.BlockingConnection(params(node_url(other)))
    ch = conn.channel()
    while True:
        method, props, body = ch.basic_get(queue, auto_ack=True)
        if method is None:
            break
        mid = props.message_id
        if mid in seen:
            duplicates += 1
        seen.add(mid)
    ch.queue_delete(queue)
    conn.close()

    confirmed = moving.confirmed | staying.confirmed
    uncertain = moving.uncertain | staying.uncertain
    lost = confirmed - seen
    unconfirmed_present = seen - confirmed
    phantom = unconfirmed_present - uncertain
    m_first, m_gap, _ = moving.after(t_kill)
    s_first, s_gap, s_failed = staying.after(t_kill)
    result = {
        "run": run,
        "queue_members": members,
        "killed_leader": killed,
        "new_leader": new_leader,
        "confirmed": len(confirmed),
        "publishes_failed": len(uncertain),
        "moving_s_kill_to_first_confirm": m_first,
        "moving_reconnects": moving.reconnects,
        "moving_errors": moving.errors,
        "moving_channels_reopened": moving.reopened,
        "staying_errors": staying.errors,
        "staying_s_kill_to_first_confirm_after_failure": s_first if s_failed else None,
        "staying_longest_gap_between_confirms_s": s_gap,
        "confirmed_lost": len(lost),
        "present_without_confirm": len(unconfirmed_present),
        "present_never_failed": len(phantom),
        "duplicates": duplicates,
        "s_killed_node_back": round(back, 1),
    }
    print(json.dumps(result), flush=True)
    return not lost and not phantom


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--before", type=float, default=3, help="seconds of publishing before the kill")
    p.add_argument("--after", type=float, default=5, help="seconds of publishing after the kill")
    p.add_argument("--keep-channel-on-nack", action="store_true",
                   help="publish on after a nack on the same channel (shows it staying stuck)")
    args = p.parse_args()
    if "AMQP_URL" not in os.environ or "HA_RABBIT_NODES" not in os.environ:
        sys.exit("rabbit-failover-probe: source .ha/env first (make ha-up writes it)")
    run0 = int(time.time())
    ok = all([one_run(args, run0 + k) for k in range(args.runs)])
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
