#!/usr/bin/python3
"""Measures a PostgreSQL failover of the highly available stack, as a client sees it.

A writer inserts numbered rows one transaction at a time through HAProxy's
primary port (synchronous commit), reconnecting after any error. After
--before seconds the primary is killed (scripts/ha/kill-pg-primary.sh: its
Patroni and postmaster together). The run reports the seconds from the kill
to the first acknowledged write on the new primary and from the first failed
write to it, then checks that every acknowledged row is present; rows present
without an acknowledgement are allowed only among the writes that failed
mid-commit. The killed member is then brought back as a replica and the
next run waits for a synchronous standby again.

Uses Debian's python3-psycopg2: run with /usr/bin/python3 (make ha-up
installs it). Exits non-zero if an acknowledged row is missing.
"""

import argparse
import json
import os
import subprocess
import sys
import threading
import time

import psycopg2

HERE = os.path.dirname(os.path.abspath(__file__))


def connect(args, dbname):
    return psycopg2.connect(
        host="127.0.0.1", port=args.port, user="postgres", dbname=dbname,
        connect_timeout=2, keepalives=1, keepalives_idle=2, keepalives_interval=1,
        keepalives_count=2, application_name="pg-failover-probe",
        options="-c synchronous_commit=on")


def cluster():
    out = subprocess.run(["patronictl", "-c", os.environ["HA_PATRONI_CONFIG"], "list", "-f", "json"],
                         capture_output=True, text=True, check=True).stdout
    return json.loads(out)


def healthy():
    try:
        roles = sorted(m["Role"] for m in cluster() if m["State"] in ("running", "streaming"))
    except (subprocess.CalledProcessError, ValueError):
        return False
    return roles == ["Leader", "Replica", "Sync Standby"]


def wait_healthy(timeout=180):
    deadline = time.monotonic() + timeout
    while not healthy():
        if time.monotonic() > deadline:
            sys.exit("pg-failover-probe: the cluster did not get a leader, a sync standby and a replica")
        time.sleep(0.5)


def setup(args):
    conn = connect(args, "postgres")
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("SELECT 1 FROM pg_database WHERE datname = 'ha_probe'")
        if cur.fetchone() is None:
            cur.execute("CREATE DATABASE ha_probe")
    conn.close()
    conn = connect(args, "ha_probe")
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("CREATE TABLE IF NOT EXISTS probe (run bigint, id bigint, at timestamptz DEFAULT now(),"
                    " PRIMARY KEY (run, id))")
        cur.execute("SHOW synchronous_standby_names")
        sync = cur.fetchone()[0]
    conn.close()
    if not sync:
        sys.exit("pg-failover-probe: synchronous_standby_names is empty: commits are not synchronous")
    return sync


def one_run(args, run):
    sync = setup(args)
    acked, uncertain = set(), set()
    kill = {}
    failures = 0
    first_fail_after_kill = None
    first_ok_after_kill = None
    last_progress = [time.monotonic()]

    def killer():
        time.sleep(args.before)
        kill["at"] = time.monotonic()
        out = subprocess.run([os.path.join(HERE, "kill-pg-primary.sh")], capture_output=True, text=True)
        kill["member"] = out.stdout.strip()
        kill["done"] = time.monotonic()
        if out.returncode != 0:
            kill["error"] = out.stderr.strip()

    def watchdog():
        while "end" not in kill:
            if time.monotonic() - last_progress[0] > 60:
                print("pg-failover-probe: no write succeeded for 60 s", file=sys.stderr)
                os._exit(2)
            time.sleep(1)

    threading.Thread(target=killer, daemon=True).start()
    threading.Thread(target=watchdog, daemon=True).start()
    conn = None
    next_id = 0
    started = time.monotonic()
    while True:
        now = time.monotonic()
        if "at" in kill and now - kill["at"] > args.after and first_ok_after_kill is not None:
            break
        if "error" in kill:
            sys.exit(f"pg-failover-probe: kill-pg-primary.sh failed: {kill['error']}")
        if conn is None:
            try:
                conn = connect(args, "ha_probe")
                conn.autocommit = True
            except psycopg2.Error:
                failures += 1
                if "at" in kill and first_fail_after_kill is None:
                    first_fail_after_kill = time.monotonic()
                time.sleep(0.05)
                continue
        i = next_id
        next_id += 1
        try:
            with conn.cursor() as cur:
                cur.execute("INSERT INTO probe (run, id) VALUES (%s, %s)", (run, i))
            acked.add(i)
            t = time.monotonic()
            last_progress[0] = t
            if first_fail_after_kill is not None and first_ok_after_kill is None:
                first_ok_after_kill = t
        except psycopg2.Error:
            # The commit may have happened without its acknowledgement reaching us.
            uncertain.add(i)
            failures += 1
            if "at" in kill and first_fail_after_kill is None:
                first_fail_after_kill = time.monotonic()
            try:
                conn.close()
            except psycopg2.Error:
                pass
            conn = None
            time.sleep(0.05)
    kill["end"] = True
    if conn is not None:
        conn.close()
    elapsed = time.monotonic() - started

    conn = connect(args, "ha_probe")
    with conn.cursor() as cur:
        cur.execute("SELECT id FROM probe WHERE run = %s", (run,))
        present = {r[0] for r in cur.fetchall()}
    conn.close()
    lost = acked - present
    unacked_present = present - acked
    phantom = unacked_present - uncertain

    member = kill["member"]
    t0 = time.monotonic()
    subprocess.run([os.path.join(HERE, "start-member.sh"), member, "--wait"], check=True,
                   stderr=subprocess.DEVNULL)
    wait_healthy()
    rejoin = time.monotonic() - t0

    result = {
        "run": run,
        "killed": member,
        "sync_standby_before": sync,
        "writes_acknowledged": len(acked),
        "writes_per_s": round(len(acked) / elapsed, 1),
        "failed_attempts": failures,
        "s_kill_to_first_ok": round(first_ok_after_kill - kill["done"], 2),
        "s_first_fail_to_first_ok": round(first_ok_after_kill - first_fail_after_kill, 2),
        "acknowledged_lost": len(lost),
        "committed_without_ack": len(unacked_present),
        "present_never_attempted_or_failed_cleanly": len(phantom),
        "s_old_primary_back_and_cluster_healthy": round(rejoin, 1),
        "new_leader": [m["Member"] for m in cluster() if m["Role"] == "Leader"][0],
    }
    print(json.dumps(result), flush=True)
    return not lost and not phantom


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--before", type=float, default=5, help="seconds of writes before the kill")
    p.add_argument("--after", type=float, default=10, help="seconds of writes after the kill")
    p.add_argument("--port", type=int, default=17000, help="HAProxy's PostgreSQL primary port")
    args = p.parse_args()
    if "HA_PATRONI_CONFIG" not in os.environ:
        sys.exit("pg-failover-probe: source .ha/env first (make ha-up writes it)")
    wait_healthy()
    run0 = int(time.time())
    ok = all([one_run(args, run0 + k) for k in range(args.runs)])
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
