"""Time what one /stats computation costs the database: the first in a process, then the incremental ones.

Fills a database of its own on this machine's PostgreSQL with BENCH_TASKS tasks submitted over the last
20 minutes (every twentieth FAILED), then times stats.Tracker.activity(): the first call reads the whole
window, the next ones only the buckets completed since (and the minute before them). Prints figures;
nothing asserts a speed.
"""
from __future__ import annotations

import datetime as dt
import os
import sys
import time
import uuid
from pathlib import Path

import psycopg2

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_service import PG_ADMIN_DSN  # noqa: E402

from app.config import Config  # noqa: E402
from app.store import migrations, stats  # noqa: E402
from app.store.database import db, init_db  # noqa: E402
from app.store.models import utcnow  # noqa: E402

TASKS = int(os.environ.get("BENCH_TASKS", "600000"))
SPAN_SECONDS = 20 * 60


def main() -> None:
    name = f"dalc_bench_stats_{uuid.uuid4().hex[:8]}"
    admin = psycopg2.connect(PG_ADMIN_DSN)
    admin.autocommit = True
    admin.cursor().execute(f'CREATE DATABASE "{name}"')
    try:
        init_db(Config(database_url=f"postgresql://postgres@127.0.0.1:5432/{name}"))
        migrations.migrate()
        now = utcnow()
        step_ms = SPAN_SECONDS * 1000 / TASKS
        db.execute_sql(
            "INSERT INTO task (expression, status, error_code, created_at, published_at, started_at, finished_at, "
            "attempts, publish_count, result) "
            "SELECT '1 + 1', CASE WHEN g %% 20 = 0 THEN 'FAILED' ELSE 'COMPLETED' END, "
            "CASE WHEN g %% 20 = 0 THEN 'division_by_zero' END, t, t, t, t + interval '20 ms', 1, 1, '2' "
            "FROM (SELECT g, %s - (%s - g) * %s * interval '1 ms' AS t FROM generate_series(1, %s) g) AS s",
            [now, TASKS, step_ms, TASKS],
        )
        db.execute_sql("ANALYZE task")
        print(f"{TASKS} tasks over the last {SPAN_SECONDS // 60} minutes "
              f"({TASKS / SPAN_SECONDS:.0f}/s); window {stats.WINDOW_SECONDS} s, buckets {stats.BUCKET_SECONDS} s, "
              f"lookback {stats.LOOKBACK_SECONDS} s", flush=True)
        tracker = stats.Tracker()
        for i in range(4):
            at = now + dt.timedelta(seconds=i * stats.BUCKET_SECONDS)
            started = time.perf_counter()
            activity = tracker.activity(now=at)
            elapsed = (time.perf_counter() - started) * 1000
            kind = "first (whole window)" if i == 0 else "next (new buckets)"
            print(f"{kind:<22} {elapsed:7.1f} ms   tasks submitted in the window: "
                  f"{sum(b.submitted for b in activity.buckets)}", flush=True)
    finally:
        if db.obj is not None:
            db.obj.close_all()
        admin.cursor().execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


if __name__ == "__main__":
    main()
