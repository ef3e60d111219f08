"""Measure what expiry costs the task path, and how fast it clears a backlog.

Loads a backlog of finished tasks past DALC_TASK_RETENTION straight in SQL (a few million by default),
starts gunicorn and the dramatiq CLI as bench_service.py does (with fewer threads), then runs single submissions in
interleaved pairs of runs: one with no purge, one while `dalc purge` (default settings) removes the
backlog. Prints each run's throughput, their ratio, the purge's rate while the task path was busy,
and finally how fast the rest of the backlog went with no load. Asserts nothing.
"""
from __future__ import annotations

import argparse
import os
import signal
import statistics
import sys
import threading
import time
from pathlib import Path

import psycopg2

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_service import AMQP_URL, BenchDatabase, log_dir, run_load, wait_final  # noqa: E402

from support import BIN, Process, dalc_env, free_port, wait_for_http  # noqa: E402

# Finished eight days ago, one every millisecond, 2% FAILED and 0.2% CANCELLED, as a busy week leaves them.
BACKLOG = """
INSERT INTO task (expression, status, result, error_code, created_at, started_at, finished_at, attempts,
                  published_at, publish_count)
SELECT '1 + 1', s, CASE WHEN s = 'COMPLETED' THEN '2' END, CASE WHEN s = 'FAILED' THEN 'syntax_error' END,
       t, t, t + interval '3 ms', 1, t, 1
FROM (SELECT now() AT TIME ZONE 'utc' - interval '8 days' + i * interval '1 ms' AS t,
             CASE WHEN mod(i, 50) = 0 THEN 'FAILED' WHEN mod(i, 500) = 1 THEN 'CANCELLED' ELSE 'COMPLETED' END AS s
      FROM generate_series(1, %s) AS i) AS g
"""


def settings() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backlog", type=int, default=int(os.environ.get("BENCH_PURGE_BACKLOG", 2_000_000)))
    parser.add_argument("--tasks", type=int, default=int(os.environ.get("BENCH_PURGE_TASKS", 3_000)),
                        help="single submissions per run")
    parser.add_argument("--pairs", type=int, default=int(os.environ.get("BENCH_PURGE_PAIRS", 6)))
    parser.add_argument("--steady-seconds", type=int, default=int(os.environ.get("BENCH_PURGE_STEADY_SECONDS", 90)),
                        help="how long the steady ingest runs")
    parser.add_argument("--steady-rate", type=int, default=int(os.environ.get("BENCH_PURGE_STEADY_RATE", 1_000)),
                        help="tasks per second of the steady ingest, in batches of 100")
    parser.add_argument("--purge-pause", default=os.environ.get("BENCH_PURGE_PAUSE"),
                        help="DALC_PURGE_PAUSE_SECONDS for the purge (default: dalc's)")
    parser.add_argument("--quick", action="store_true", help="small counts, for a smoke run")
    args = parser.parse_args()
    if args.quick:
        args.backlog, args.tasks, args.pairs, args.steady_seconds = 50_000, 300, 1, 20
    return args


def steady_ingest(args, port: int, env: dict, logs: Path, cur) -> None:
    """Ingest at a steady rate with a 30 s retention and the sweeper purging; sample what the table keeps."""
    retention, sampled, stop = 30, [], threading.Event()
    sweeper = Process([str(BIN / "dalc"), "sweep"], dict(
        env, DALC_TASK_RETENTION=f"{retention}s", DALC_PURGE_INTERVAL_SECONDS="5", DALC_LOG_LEVEL="INFO",
    ), logs / "sweeper.log")
    cur.execute("SELECT coalesce(max(id), 0) FROM task")
    first = cur.fetchone()[0]
    cur.execute("SELECT tasks_expired FROM purge_state WHERE id = 1")
    expired_before = cur.fetchone()[0]

    def sample():
        conn = psycopg2.connect(cur.connection.dsn)
        conn.autocommit = True
        began = time.time()
        with conn.cursor() as c:
            while not stop.wait(10):
                c.execute("SELECT count(*) FILTER (WHERE finished_at IS NOT NULL), count(*), "
                          "coalesce(max(id), %s) - %s FROM task WHERE id > %s", (first, first, first))
                kept, rows, issued = c.fetchone()
                c.execute("SELECT tasks_expired, oldest_final_finished_at, last_round_at "
                          "FROM purge_state WHERE id = 1")
                expired, oldest, last = c.fetchone()
                expired -= expired_before
                age = (last - oldest).total_seconds() if oldest and last else float("nan")
                sampled.append((time.time() - began, issued, rows, kept, expired, age))
                print(f"  t={time.time() - began:4.0f} s: {issued:7,} tasks submitted, {rows:7,} rows kept "
                      f"({kept:,} final), {expired:7,} expired; at the last round the oldest final task "
                      f"kept was {age:5.1f} s old", flush=True)
        conn.close()

    print(f"steady ingest: {args.steady_rate:,} tasks/s in batches of 100 for {args.steady_seconds} s, "
          f"DALC_TASK_RETENTION={retention}s, the sweeper purging every 5 s", flush=True)
    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        batches = [[{"expression": f"{i} + {j}"} for j in range(100)]
                   for i in range(args.steady_rate * args.steady_seconds // 100)]
        run_load(port, batches, 8, pace=args.steady_rate / 100)
    finally:
        stop.set()
        sampler.join()
        sweeper.stop()


def main() -> None:
    args = settings()
    database = BenchDatabase.create("dalc-bench-purge")
    dsn = database.dsn
    port = free_port()
    env = dalc_env(
        DALC_DATABASE_URL=database.url,
        DALC_BROKER_URL=AMQP_URL,
        DALC_QUEUE_NAME=database.queue,
        DALC_PORT=str(port),
        DALC_LOG_LEVEL="WARNING",
        # Fewer connections than bench_service.py's shape: the machine's PostgreSQL (100 at most) is shared.
        DALC_WEB_THREADS="8",
        DALC_DB_POOL_SIZE="12",
    )
    purge_env = dict(env, DALC_LOG_LEVEL="INFO")
    if args.purge_pause is not None:
        purge_env["DALC_PURGE_PAUSE_SECONDS"] = args.purge_pause
    with log_dir("dalc-bench-purge") as logs:
        processes: list[Process] = []
        conn = None
        try:
            migrate = Process([str(BIN / "dalc"), "migrate"], env, logs / "migrate.log")
            if migrate.popen.wait(120) != 0:
                raise SystemExit(migrate.output())
            migrate.stop()
            conn = psycopg2.connect(dsn)
            conn.autocommit = True
            cur = conn.cursor()
            started = time.time()
            cur.execute(BACKLOG, (args.backlog,))
            cur.execute("VACUUM ANALYZE task")
            cur.execute("SELECT max(id), pg_size_pretty(pg_total_relation_size('task')) FROM task")
            top, size = cur.fetchone()
            print(f"purge benchmark: {os.cpu_count()} cores, shared with other work (figures are noisy); "
                  f"a backlog of {args.backlog:,} finished tasks 8 days old ({size}) loaded in "
                  f"{time.time() - started:.0f} s; web 2x8 threads, workers 1x8; retention 7d; "
                  f"`dalc purge` with DALC_PURGE_PAUSE_SECONDS="
                  f"{args.purge_pause or 'default'}",
                  flush=True)

            def backlog_left() -> int:
                cur.execute("SELECT count(*) FROM task WHERE id <= %s", (top,))
                return cur.fetchone()[0]

            web = Process([str(BIN / "gunicorn"), "--config", "python:app.gunicorn_conf", "app:create_app()"],
                          env, logs / "web.log")
            processes.append(web)
            wait_for_http(f"http://127.0.0.1:{port}/readyz", web)
            processes.append(Process([str(BIN / "dramatiq"), "app.worker", "--processes", "1", "--threads", "8"],
                                     env, logs / "worker.log"))
            time.sleep(2)
            wait_final(dsn, run_load(port, [{"expression": "1 + 1"}] * 300, 8))  # warm-up

            # One purge for the whole benchmark, stopped (SIGSTOP) outside the runs that measure it: a
            # process started per run would charge Python's start-up to the purge.
            purger = Process([str(BIN / "dalc"), "purge"], purge_env, logs / "purge.log")
            processes.append(purger)
            time.sleep(3)
            purger.signal(signal.SIGSTOP)

            def single_run(purging: bool) -> tuple[float, int, float]:
                """One run of single submissions; return (tasks/s, backlog rows deleted, seconds)."""
                before, began = backlog_left(), time.time()
                if purging:
                    purger.signal(signal.SIGCONT)
                bodies = [{"expression": f"{i} * 3 + (2 ** 8) / 4"} for i in range(args.tasks)]
                sent = time.time()
                submitted = run_load(port, bodies, 16)
                finished = wait_final(dsn, submitted)
                rate = len(submitted) / (max(finished.values()) - sent)
                if purging:
                    purger.signal(signal.SIGSTOP)
                if purger.popen.poll() is not None:
                    raise SystemExit(f"the purge ended early:\n{purger.output()[-3000:]}")
                return rate, before - backlog_left(), time.time() - began

            ratios, purge_rates = [], []
            for pair in range(args.pairs):
                order = (False, True) if pair % 2 == 0 else (True, False)  # ABBA, so drift cancels out
                results = {purging: single_run(purging) for purging in order}
                (plain, _, _), (purged, deleted, seconds) = results[False], results[True]
                ratios.append(purged / plain)
                purge_rates.append(deleted / seconds)
                print(f"pair {pair + 1}: single submissions end to end {plain:6.0f} tasks/s without purging, "
                      f"{purged:6.0f} tasks/s while purging ({purged / plain:.3f}); the purge deleted "
                      f"{deleted:,} tasks in {seconds:.1f} s ({deleted / seconds:,.0f}/s)", flush=True)
            print(f"with purging / without: median {statistics.median(ratios):.3f} over {len(ratios)} pairs "
                  f"(cost {100 * (1 - statistics.median(ratios)):.1f}%); purge rate under load: median "
                  f"{statistics.median(purge_rates):,.0f} tasks/s", flush=True)

            purger.signal(signal.SIGCONT)
            purger.stop()
            left, began = backlog_left(), time.time()
            # As fast as one purger goes: no rest between batches.
            drain = Process([str(BIN / "dalc"), "purge"], dict(purge_env, DALC_PURGE_PAUSE_SECONDS="0"),
                            logs / "purge-drain.log")
            if drain.popen.wait(3600) != 0:
                raise SystemExit(drain.output())
            drain.stop()
            seconds, gone = time.time() - began, left - backlog_left()
            print(f"the rest of the backlog, {gone:,} tasks, went in {seconds:.1f} s with no other load and no rest "
                  f"between batches ({gone / seconds:,.0f} tasks/s, including the command's start)", flush=True)
            steady_ingest(args, port, env, logs, cur)
        finally:
            for process in reversed(processes):
                process.stop()
            if conn is not None:
                conn.close()
            database.drop()


if __name__ == "__main__":
    main()
