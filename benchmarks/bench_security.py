"""Measure what tokens, rate limits and the request-buffering worker cost on the task path, as A/B ratios.

Starts the production web (gunicorn, as `make run` does) on this machine's PostgreSQL and RabbitMQ in
each configuration in turn, round after round (interleaved, each round starting with another one, so
a busy machine weighs on all alike),
submits single tasks from 16 keep-alive connections, and prints each configuration's submit rate and
its median ratio to the baseline. Nothing here asserts a speed.
"""
from __future__ import annotations

import argparse
import http.client
import json
import statistics
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import psycopg2

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
from support import (  # noqa: E402
    AMQP_URL,
    BIN,
    PG_ADMIN_DSN,
    PG_HOST,
    Process,
    dalc_env,
    delete_queues,
    free_port,
    wait_for_http,  # noqa: E402
)

# name -> (DALC_* settings, extra gunicorn arguments); the first is the baseline.
CONFIGURATIONS = {
    "auth off, no limit": ({}, []),
    "auth required": ({"DALC_AUTH": "required"}, []),
    "auth + rate limit (PostgreSQL)": ({"DALC_AUTH": "required", "DALC_RATE_LIMIT": "1000000/second"}, []),
    "plain gthread worker": ({}, ["--worker-class", "gthread"]),
}


def admin(sql: str) -> None:
    connection = psycopg2.connect(PG_ADMIN_DSN)
    connection.autocommit = True
    with connection.cursor() as cursor:
        cursor.execute(sql)
    connection.close()


def submit_rate(port: int, tasks: int, concurrency: int, headers: dict) -> float:
    """Send `tasks` single POSTs from `concurrency` keep-alive connections; return tasks per second."""
    remaining = iter(range(tasks))
    lock = threading.Lock()
    errors = []

    def loop():
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        while True:
            with lock:
                n = next(remaining, None)
            if n is None:
                return
            conn.request("POST", "/tasks", json.dumps({"expression": f"{n} + 1"}),
                         {"Content-Type": "application/json", **headers})
            response = conn.getresponse()
            response.read()
            if response.status != 202:
                errors.append(response.status)

    threads = [threading.Thread(target=loop) for _ in range(concurrency)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise SystemExit(f"{len(errors)} requests failed: {sorted(set(errors))}")
    return tasks / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--tasks", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()
    database, queue = f"dalc_bench_{uuid.uuid4().hex[:8]}", f"dalc-bench-{uuid.uuid4().hex[:8]}"
    admin(f'CREATE DATABASE "{database}"')
    url = f"postgresql://postgres@{PG_HOST}/{database}"
    base_env = dalc_env(DALC_DATABASE_URL=url, DALC_BROKER_URL=AMQP_URL, DALC_QUEUE_NAME=queue,
                        DALC_LOG_LEVEL="WARNING")
    token = subprocess.run([str(BIN / "dalc"), "tokens", "create", "bench"], env=base_env, check=True,
                           capture_output=True, text=True).stdout.strip()
    rates: dict[str, list[float]] = {name: [] for name in CONFIGURATIONS}
    try:
        for round_number in range(args.rounds):
            # Each round starts with another configuration, so that none always runs first or last.
            names = list(CONFIGURATIONS)
            order = names[round_number % len(names):] + names[:round_number % len(names)]
            for name in order:
                settings, gunicorn_args = CONFIGURATIONS[name]
                port = free_port()
                env = {**base_env, **settings, "DALC_PORT": str(port)}
                log = Path(f"/tmp/dalc-bench-security-{port}.log")
                web = Process([str(BIN / "gunicorn"), "--config", "python:app.gunicorn_conf", *gunicorn_args,
                               "app:create_app()"], env, log)
                try:
                    wait_for_http(f"http://127.0.0.1:{port}/readyz", web)
                    headers = {"Authorization": f"Bearer {token}"} if settings.get("DALC_AUTH") else {}
                    submit_rate(port, 300, args.concurrency, headers)  # warm up
                    rate = submit_rate(port, args.tasks, args.concurrency, headers)
                finally:
                    web.stop()
                    log.unlink(missing_ok=True)
                rates[name].append(rate)
                print(f"round {round_number + 1}: {name:<32} {rate:7.0f} tasks/s", flush=True)
    finally:
        delete_queues(AMQP_URL, queue)
        admin(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
    baseline = list(CONFIGURATIONS)[0]
    print(f"\n{'configuration':<32} {'median tasks/s':>15} {'ratio to baseline (per round)':>32}")
    for name, values in rates.items():
        ratios = [v / b for v, b in zip(values, rates[baseline], strict=True)]
        print(f"{name:<32} {statistics.median(values):15.0f} "
              f"{statistics.median(ratios):8.2f} ({', '.join(f'{r:.2f}' for r in ratios)})")


if __name__ == "__main__":
    main()
