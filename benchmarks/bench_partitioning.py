"""Compare the two ways of expiring tasks: batched DELETEs on one table, or dropping whole partitions.

Builds two databases on this machine's PostgreSQL: dalc's schema as it is, and the same task table
partitioned by ranges of ids (ids grow with time, so an id range is a time range, and a read by id
still finds its one partition). On each it runs the task path as dalc runs it (app.store: one INSERT,
the claim, the outcome, a read by id), in interleaved rounds, and then expires the same number of
tasks: with app.store.retention's batched DELETE on the first, with DETACH + DROP on the second.
Prints figures; asserts nothing.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import uuid
from pathlib import Path

import psycopg2

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench_service import cpu_seconds  # noqa: E402

from app.config import Config  # noqa: E402
from app.store import claim, finish, get_task, insert_rows, migrations, retention  # noqa: E402
from app.store.database import db, make_database  # noqa: E402
from app.store.models import COMPLETED, utcnow  # noqa: E402
from app.store.tasks import Outcome  # noqa: E402

PG_ADMIN_DSN = os.environ.get("BENCH_PG_ADMIN_DSN", "host=127.0.0.1 port=5432 user=postgres dbname=postgres")
PARTITION_IDS = 100_000

PARTITIONED = """
DROP TABLE task;
CREATE SEQUENCE task_id_seq;
CREATE TABLE task (
    id BIGINT NOT NULL DEFAULT nextval('task_id_seq'), expression TEXT NOT NULL, status VARCHAR(16) NOT NULL,
    result TEXT, error_code VARCHAR(64), error_message TEXT, created_at TIMESTAMP NOT NULL,
    started_at TIMESTAMP, finished_at TIMESTAMP, attempts INTEGER NOT NULL, published_at TIMESTAMP NOT NULL,
    publish_count INTEGER NOT NULL, trace_id VARCHAR(32), owner_id BIGINT NOT NULL DEFAULT 0, PRIMARY KEY (id)
) PARTITION BY RANGE (id);
CREATE INDEX task_status_id ON task (status, id);
CREATE INDEX task_owner_id ON task (owner_id, id) WHERE owner_id <> 0;
"""

FILL = """
INSERT INTO task (expression, status, result, created_at, started_at, finished_at, attempts, published_at,
                  publish_count)
SELECT '1 + 1', 'COMPLETED', '2', t, t, t, 1, t, 1
FROM (SELECT now() AT TIME ZONE 'utc' - interval '30 days' + i * interval '1 ms' AS t
      FROM generate_series(1, %s) AS i) AS g
"""


def cycle_cost(database, cycles: int) -> tuple[float, float]:
    """Run the task path `cycles` times (insert, claim, finish, read); return (wall, server CPU) per task.

    The server's CPU time is what the table's layout changes; wall time on a shared machine mostly
    measures the neighbours.
    """
    db.initialize(database)
    with db.connection_context():
        pid = db.execute_sql("SELECT pg_backend_pid()").fetchone()[0]
        cpu, started = cpu_seconds(pid), time.perf_counter()
        for _ in range(cycles):
            [(task_id, _)] = insert_rows([("6 * 7", None, 0)])
            claim([task_id])
            finish([Outcome(task_id, COMPLETED, "42")])
            get_task(task_id)
        return (time.perf_counter() - started) / cycles, (cpu_seconds(pid) - cpu) / cycles


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=int(os.environ.get("BENCH_PARTITION_ROWS", 500_000)))
    parser.add_argument("--cycles", type=int, default=int(os.environ.get("BENCH_PARTITION_CYCLES", 1_500)))
    parser.add_argument("--rounds", type=int, default=6)
    args = parser.parse_args()
    run = uuid.uuid4().hex[:8]
    names = {"plain": f"dalc_bench_plain_{run}", "partitioned": f"dalc_bench_part_{run}"}
    admin = psycopg2.connect(PG_ADMIN_DSN)
    admin.autocommit = True
    databases = {}
    try:
        for kind, name in names.items():
            with admin.cursor() as cur:
                cur.execute(f'CREATE DATABASE "{name}"')
            database = make_database(Config(database_url=f"postgresql://postgres@127.0.0.1:5432/{name}"))
            db.initialize(database)
            migrations.migrate()
            with db.connection_context():
                if kind == "partitioned":
                    for statement in filter(str.strip, PARTITIONED.split(";")):
                        db.execute_sql(statement)
                    top = args.rows + args.rounds * args.cycles * 2 + PARTITION_IDS
                    for low in range(1, top, PARTITION_IDS):
                        db.execute_sql(f"CREATE TABLE task_{low} PARTITION OF task "
                                       f"FOR VALUES FROM ({low}) TO ({low + PARTITION_IDS})")
                db.execute_sql(FILL, [args.rows])
                db.execute_sql("VACUUM ANALYZE task")
            databases[kind] = database
        print(f"partitioning benchmark: {os.cpu_count()} cores, shared; {args.rows} finished tasks in each "
              f"table, partitions of {PARTITION_IDS} ids; task path = INSERT, claim, finish, read by id",
              flush=True)
        costs: dict[str, list[tuple[float, float]]] = {"plain": [], "partitioned": []}
        for _ in range(args.rounds):  # interleaved, so both see the same machine load
            for kind, database in databases.items():
                costs[kind].append(cycle_cost(database, args.cycles))
        for kind, values in costs.items():
            print(f"  {kind:<12} task path: wall {statistics.median(v[0] for v in values) * 1e6:6.0f} us, "
                  f"PostgreSQL CPU {statistics.median(v[1] for v in values) * 1e6:5.0f} us per task "
                  f"(median of {len(values)} rounds)", flush=True)
        for name, at in (("wall", 0), ("PostgreSQL CPU", 1)):
            ratios = [b[at] / a[at] for a, b in zip(costs["plain"], costs["partitioned"], strict=True)]
            print(f"  partitioned / plain, {name}: median {statistics.median(ratios):.2f} "
                  f"(pairs: {', '.join(f'{r:.2f}' for r in ratios)})", flush=True)

        expire = PARTITION_IDS - 1  # the first partition holds ids 1 .. PARTITION_IDS - 1
        db.initialize(databases["plain"])
        with db.connection_context():
            started = time.perf_counter()
            deleted, after = 0, 0
            while True:
                n, last = retention.delete_expired_tasks(COMPLETED, utcnow(), below=PARTITION_IDS, after=after,
                                                         limit=1000)
                deleted, after = deleted + n, last or after
                if n < 1000:
                    break
            seconds = time.perf_counter() - started
        print(f"  plain        batched DELETE of {deleted} tasks: {seconds:.2f} s ({deleted / seconds:,.0f} tasks/s)")
        db.initialize(databases["partitioned"])
        with db.connection_context():
            started = time.perf_counter()
            db.execute_sql("ALTER TABLE task DETACH PARTITION task_1")
            db.execute_sql("DROP TABLE task_1")
            seconds = time.perf_counter() - started
        print(f"  partitioned  DETACH + DROP of {expire} tasks: {seconds:.3f} s", flush=True)
    finally:
        for database in databases.values():
            database.close_all()
        for name in names.values():
            with admin.cursor() as cur:
                cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


if __name__ == "__main__":
    main()
