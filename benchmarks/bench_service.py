"""Measure dalc's production shape on the real services: submit rate, end-to-end rate and latency.

Starts gunicorn and the dramatiq CLI against this machine's PostgreSQL and RabbitMQ (a database and
queue of its own, removed afterwards), drives them over HTTP from threads in this process, and
prints figures, with the memory the web's and the workers' processes hold after each scenario.
Settings come from BENCH_* variables (see `Settings`); nothing here asserts a speed.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime as dt
import http.client
import json
import os
import shutil
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg2

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
from support import BIN, Process, dalc_env, delete_queues, free_port, wait_for_http  # noqa: E402

PG_ADMIN_DSN = os.environ.get("BENCH_PG_ADMIN_DSN", "host=127.0.0.1 port=5432 user=postgres dbname=postgres")
AMQP_URL = os.environ.get("BENCH_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2F")


@dataclasses.dataclass
class Settings:
    single_tasks: int = 6000
    single_concurrency: int = 16
    batch_tasks: int = 100_000
    batch_size: int = 1000
    batch_concurrency: int = 4
    paced_rate: int = 200
    paced_seconds: float = 10.0
    web_workers: int = 2
    web_threads: int = 16
    worker_processes: int = 2
    worker_threads: int = 8


@dataclasses.dataclass(frozen=True)
class BenchDatabase:
    """A database and a queue of one benchmark run's own, on this machine's PostgreSQL and RabbitMQ."""

    admin: object  # an autocommit connection to the server, for CREATE/DROP DATABASE and statistics
    name: str
    queue: str

    @classmethod
    def create(cls, prefix: str) -> BenchDatabase:
        """Create `<prefix>_<run id>` (dashes as underscores) and name the queue `<prefix>-<run id>`."""
        run_id = uuid.uuid4().hex[:8]
        admin = psycopg2.connect(PG_ADMIN_DSN)
        admin.autocommit = True
        created = cls(admin, f"{prefix.replace('-', '_')}_{run_id}", f"{prefix}-{run_id}")
        with admin.cursor() as cur:
            cur.execute(f'CREATE DATABASE "{created.name}"')
        return created

    @property
    def dsn(self) -> str:
        return f"host=127.0.0.1 port=5432 user=postgres dbname={self.name}"

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:5432/{self.name}"

    def drop(self) -> None:
        """Drop the database and the queues, whatever the run left in them."""
        with self.admin.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')
        self.admin.close()
        delete_queues(AMQP_URL, self.queue)


class Client:
    """One keep-alive HTTP connection per thread: lighter than requests, so the generator steals less CPU."""

    def __init__(self, port: int):
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)

    def post(self, body) -> tuple[int, object]:
        self.conn.request("POST", "/tasks", json.dumps(body), {"Content-Type": "application/json"})
        response = self.conn.getresponse()
        return response.status, json.loads(response.read())


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def run_load(port: int, bodies: list, concurrency: int, pace: float | None = None) -> dict[int, float]:
    """Send every body, `concurrency` at a time (or paced `pace` per second); return id -> submit time."""
    submitted: dict[int, float] = {}
    lock = threading.Lock()
    cursor = iter(enumerate(bodies))
    start = time.time()
    errors = []

    def loop():
        client = Client(port)
        while True:
            with lock:
                item = next(cursor, None)
            if item is None:
                return
            index, body = item
            if pace:
                delay = start + index / pace - time.time()
                if delay > 0:
                    time.sleep(delay)
            sent = time.time()
            status, answer = client.post(body)
            if status != 202:
                errors.append((status, answer))
                continue
            tasks = answer if isinstance(answer, list) else [answer]
            with lock:
                for task in tasks:
                    submitted[task["id"]] = sent

    threads = [threading.Thread(target=loop) for _ in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise SystemExit(f"{len(errors)} submissions failed, first: {errors[0]}")
    return submitted


def wait_final(dsn: str, ids: dict[int, float], timeout: float = 300) -> dict[int, float]:
    """Wait until every task is final; return id -> finished_at as a UNIX time."""
    low, high = min(ids), max(ids)
    conn = psycopg2.connect(dsn)
    conn.autocommit = True
    deadline = time.time() + timeout
    with conn.cursor() as cur:
        while True:
            cur.execute("SELECT count(*) FROM task WHERE id BETWEEN %s AND %s AND finished_at IS NOT NULL",
                        (low, high))
            if cur.fetchone()[0] >= len(ids) or time.time() > deadline:
                break
            time.sleep(0.1)
        cur.execute("SELECT id, finished_at, status FROM task WHERE id BETWEEN %s AND %s", (low, high))
        rows = cur.fetchall()
    conn.close()
    bad = [r for r in rows if r[2] != "COMPLETED"]
    if bad:
        raise SystemExit(f"{len(bad)} tasks did not complete, first: {bad[0]}")
    return {r[0]: r[1].replace(tzinfo=dt.UTC).timestamp() for r in rows}


def report(name: str, submitted: dict[int, float], finished: dict[int, float], submit_seconds: float) -> None:
    latencies = [(finished[i] - submitted[i]) * 1000 for i in submitted]
    span = max(finished.values()) - min(submitted.values())
    print(
        f"{name:<22} tasks={len(submitted):>7}  submit={len(submitted) / submit_seconds:>9.0f}/s  "
        f"end-to-end={len(submitted) / span:>8.0f} tasks/s  latency ms p50={percentile(latencies, 50):>7.1f} "
        f"p95={percentile(latencies, 95):>7.1f} p99={percentile(latencies, 99):>7.1f}",
        flush=True,
    )


def process_tree(root: int) -> list[int]:
    """Return `root` and every process below it (from /proc)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            # The command name (field 2) may hold spaces; the parent's pid is the second field after ")".
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(stat.parent.name))
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo += children.get(pid, [])
    return sorted(tree)


def cpu_seconds(pid: int) -> float:
    """Return the CPU time (user + system) the process has used so far; 0 if it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime: fields 14, 15


def tree_cpu(root: int) -> dict[int, float]:
    """Return the CPU seconds used so far by `root` and each process below it, by pid."""
    return {pid: cpu_seconds(pid) for pid in process_tree(root)}


def spent(before: dict[int, float], after: dict[int, float]) -> float:
    """CPU seconds spent between two readings by processes alive at the second (new ones: all of theirs)."""
    return sum(cpu - before.get(pid, 0.0) for pid, cpu in after.items())


def memory_kib(pid: int) -> tuple[int, int]:
    """Return the process's resident memory (RSS) and proportional share (PSS) in KiB; (0, 0) if gone."""
    fields = {}
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
            key, value = line.split(":", 1)
            fields[key] = int(value.split()[0])
    except (OSError, ValueError):
        return 0, 0
    return fields.get("Rss", 0), fields.get("Pss", 0)


def memory_line(kinds: dict[str, int]) -> str:
    """Describe the resident memory of each kind of process (its whole tree): RSS each, PSS summed.

    RSS counts pages that forked processes share once per process; PSS divides them among the sharers,
    so the PSS sum is what the tree really holds.
    """
    parts = []
    for kind, root in kinds.items():
        sizes = [memory_kib(pid) for pid in process_tree(root)]
        sizes = [size for size in sizes if size[0]]
        rss = ", ".join(f"{r / 1024:.0f}" for r, _ in sizes)
        parts.append(f"{kind} {sum(p for _, p in sizes) / 1024:.0f} MiB PSS in {len(sizes)} processes "
                     f"(RSS {rss} MiB)")
    return "  memory: " + "; ".join(parts)


def scenario(port: int, dsn: str, name: str, bodies: list, concurrency: int, pace: float | None = None,
             processes: dict[str, int] | None = None) -> None:
    started = time.time()
    submitted = run_load(port, bodies, concurrency, pace)
    submit_seconds = time.time() - started
    report(name, submitted, wait_final(dsn, submitted), submit_seconds)
    if processes:
        print(memory_line(processes), flush=True)


@contextlib.contextmanager
def log_dir(prefix: str) -> Iterator[Path]:
    """A directory for the started processes' logs: removed after a run that ends well, kept after one that fails.

    Leave the block only once the processes are stopped, so none is still writing into it.
    """
    path = Path(tempfile.mkdtemp(prefix=f"{prefix}-"))
    try:
        yield path
    except BaseException:
        print(f"the processes' logs are kept in {path}", file=sys.stderr)
        raise
    shutil.rmtree(path, ignore_errors=True)


@contextlib.contextmanager
def running_dalc(s: Settings, prefix: str, env_overrides: dict[str, str | None] | None = None,
                 ) -> Iterator[tuple[int, BenchDatabase, dict[str, int]]]:
    """Run gunicorn and the dramatiq CLI on a database and queue of their own; yield (port, database, processes).

    `processes` maps "web" and "workers" to the pid at the root of each kind's process tree. The
    processes get this one's environment (OTEL_* included, DALC_* replaced), then `env_overrides`, where
    a value of None removes the variable.
    """
    database = BenchDatabase.create(prefix)
    port = free_port()
    env = dalc_env(
        DALC_DATABASE_URL=database.url,
        DALC_BROKER_URL=AMQP_URL,
        DALC_QUEUE_NAME=database.queue,
        DALC_PORT=str(port),
        DALC_WEB_WORKERS=str(s.web_workers),
        DALC_WEB_THREADS=str(s.web_threads),
        DALC_LOG_LEVEL="WARNING",
    )
    for name, value in (env_overrides or {}).items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    web = worker = None
    with log_dir(prefix) as logs:
        try:
            web = Process([str(BIN / "gunicorn"), "--config", "python:app.gunicorn_conf", "app:create_app()"],
                          env, logs / "web.log")
            wait_for_http(f"http://127.0.0.1:{port}/readyz", web)
            worker = Process([str(BIN / "dramatiq"), "app.worker", "--processes", str(s.worker_processes),
                              "--threads", str(s.worker_threads)], env, logs / "worker.log")
            time.sleep(2)
            yield port, database, {"web": web.popen.pid, "workers": worker.popen.pid}
        finally:
            if worker is not None:
                worker.stop()
            if web is not None:
                web.stop()
            database.drop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small counts, for a smoke run")
    args = parser.parse_args()
    s = Settings()
    if args.quick:
        s.single_tasks, s.batch_tasks, s.paced_seconds = 500, 5000, 2
    for field in dataclasses.fields(Settings):
        raw = os.environ.get(f"BENCH_{field.name.upper()}")
        if raw and field.type in ("int", "float"):
            setattr(s, field.name, type(getattr(s, field.name))(raw))

    with running_dalc(s, "dalc-bench") as (port, database, processes):
        dsn = database.dsn
        print(f"dalc benchmark: {os.cpu_count()} cores; web {s.web_workers}x{s.web_threads} gthread, "
              f"workers {s.worker_processes}x{s.worker_threads}; PostgreSQL, RabbitMQ and this load "
              f"generator share the machine", flush=True)
        # The first tasks after a start: what a rollout's first second looks like (docs/performance.md).
        first = [{"expression": f"{i} + 1"} for i in range(300)]
        scenario(port, dsn, f"paced {s.paced_rate}/s, the first 300 after start", first, 8, pace=s.paced_rate)
        scenario(port, dsn, "warm-up", [{"expression": "1 + 1"}] * 300, 8, processes=processes)
        scenario(port, dsn, "single submissions", [{"expression": f"{i} * 3 + (2 ** 8) / 4"}
                                                   for i in range(s.single_tasks)], s.single_concurrency,
                 processes=processes)
        batches = [[{"expression": f"{i}+{j}*2"} for j in range(s.batch_size)]
                   for i in range(s.batch_tasks // s.batch_size)]
        scenario(port, dsn, f"batches of {s.batch_size}", batches, s.batch_concurrency, processes=processes)
        paced = [{"expression": f"{i} - 1"} for i in range(int(s.paced_rate * s.paced_seconds))]
        scenario(port, dsn, f"paced {s.paced_rate}/s single", paced, 8, pace=s.paced_rate, processes=processes)


if __name__ == "__main__":
    main()
